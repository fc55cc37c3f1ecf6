"""Faithfulness by perturbation: deletion and insertion curves and their areas.

Petsiuk et al. 2018 (RISE): remove (or add) pixels in order of decreasing attribution and watch
the class score. A faithful map makes the score fall fast when deleting (low AUC) and rise fast
when inserting (high AUC); compare against a random map of similar smoothness (see
:func:`deletion_curve`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np
import torch
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from saliencylab import _validate as validate
from saliencylab.metrics.imputation import ROAD_NOISE, noisy_linear_imputation
from saliencylab._core import (
    SaliencyLabError,
    TargetLike,
    auto_batch_size,
    batch_slices,
    eval_mode,
    resolve_targets,
    select_logits,
)

__all__ = [
    "BLUR_KERNEL_SIZE",
    "BLUR_SIGMA",
    "BaselineLike",
    "NAMED_BASELINES",
    "auc",
    "deletion_auc",
    "deletion_curve",
    "insertion_auc",
    "insertion_curve",
]

BaselineLike = Union[float, int, str, torch.Tensor]

#: The baselines given by name: the image blurred, or each removed pixel imputed from its
#: neighbours (ROAD's noisy linear imputation, :func:`~saliencylab.metrics.noisy_linear_imputation`).
NAMED_BASELINES = ("blur", "noisy_linear")

#: The ``"blur"`` baseline, as in RISE (Petsiuk et al. 2018): Gaussian, 11 px kernel, sigma 5 px.
BLUR_KERNEL_SIZE = 11
BLUR_SIGMA = 5.0
SCORES = ("prob", "logit")


def deletion_curve(
    model: nn.Module,
    images: torch.Tensor,
    saliency_maps: torch.Tensor,
    target: TargetLike = None,
    steps: int = 50,
    baseline: BaselineLike = 0.0,
    batch_size: int | None = None,
    score: str = "prob",
) -> torch.Tensor:
    """Class score as the most salient pixels are deleted first (Petsiuk et al. 2018).

    The pixels are ranked by decreasing attribution (ties keep raster order: the sort is stable,
    so a constant map deletes row by row from the top left). At step ``k`` of ``steps`` the
    first ``floor(k * H * W / steps)`` pixels of that order (all three channels) are set to the
    ``baseline``; step 0 is the untouched image, step ``steps`` is the baseline. A faithful map
    makes the score drop fast, so a *lower* :func:`auc` is better.

    Beware: deleting scattered single pixels wrecks a CNN's prediction much faster than
    deleting one blob of the same area, whatever the pixels were. So pixel-noisy maps, even
    pure noise, get low deletion AUCs: on EfficientNet-Lite0 at 224 px, a random map scores
    0.017 on chelsea and Grad-CAM 0.240. Compare maps of similar smoothness, always include a
    random control, and read the insertion curve (blurred baseline) as well.

    Args:
        model: classifier taking ``[N, 3, H, W]`` images in ``[0, 1]`` to logits ``[N, C]``.
        images: ``[B, 3, H, W]`` (or one ``[3, H, W]``) in ``[0, 1]``.
        saliency_maps: ``[B, H, W]`` (or ``[H, W]``), larger = more important. A map that
            contains NaN raises a :class:`~saliencylab.SaliencyLabError`: it has no ranking.
        target: the class whose score is tracked; ``None`` = each image's predicted class
            (decided once, on the untouched image). An int, or one class per image.
        steps: number of deletion steps; the curve has ``steps + 1`` points.
        baseline: what deleted pixels become: a number (default ``0.0``, black), ``"blur"``
            (the image blurred with an 11 px Gaussian of sigma 5 px, as in RISE),
            ``"noisy_linear"`` (ROAD, Rong et al. 2022: at each step the deleted pixels are
            imputed from their kept neighbours, plus noise of standard deviation 0.01, by
            :func:`~saliencylab.metrics.noisy_linear_imputation`; the noise of step ``k`` is
            seeded with ``k``; one sparse solve per perturbed image, on the CPU, so slower), or
            a tensor broadcastable to ``[B, 3, H, W]`` (a scalar ``torch.tensor(0.5)``, a grey
            ``[3, 1, 1]`` colour, a ``[3, H, W]`` image, one ``[B, 3, H, W]`` per image).
        batch_size: perturbed images per forward pass (bounds the memory); ``None``: chosen
            for the model and image size, as in the attribution methods (8 for Lite0 at 224).
        score: ``"prob"`` (softmax probability of the target, default, as in RISE) or
            ``"logit"`` (the raw target logit).
    Returns:
        ``[B, steps + 1]`` scores (``[steps + 1]`` for a single ``[3, H, W]`` image), at the
        fractions of deleted pixels ``torch.linspace(0, 1, steps + 1)``, in the dtype of the
        model's logits (float64 for a float64 model; at least float32, so a float16 model's
        probabilities are computed in float32).
    """
    return _perturbation_curve(
        model, images, saliency_maps, target, steps, baseline, batch_size, score, insert=False
    )


def insertion_curve(
    model: nn.Module,
    images: torch.Tensor,
    saliency_maps: torch.Tensor,
    target: TargetLike = None,
    steps: int = 50,
    baseline: BaselineLike = "blur",
    batch_size: int | None = None,
    score: str = "prob",
) -> torch.Tensor:
    """Class score as the most salient pixels are inserted first into a baseline image.

    The mirror of :func:`deletion_curve`: step 0 is the ``baseline`` image, and step ``k`` copies
    the first ``floor(k * H * W / steps)`` pixels (in order of decreasing attribution, ties in
    raster order) from the real image; step ``steps`` is the untouched image. A faithful map
    makes the score rise fast, so a *higher* :func:`auc` is better.

    The default baseline is ``"blur"`` (RISE's choice: an 11 px Gaussian of sigma 5 px), because
    inserting sharp pixels into a black image makes out-of-distribution images whose scores
    say more about the black than about the map. ``baseline=0.0`` starts from black.
    Other arguments (a map with NaN raises here too), the returned shape and its dtype are
    those of :func:`deletion_curve`.
    """
    return _perturbation_curve(
        model, images, saliency_maps, target, steps, baseline, batch_size, score, insert=True
    )


def auc(curve: torch.Tensor | Sequence[float]) -> torch.Tensor | float:
    """Area under a curve sampled at evenly spaced points of ``[0, 1]`` (trapezoid rule).

    Args:
        curve: ``[B, N]`` curves (or one ``[N]`` curve), ``N >= 2``, e.g. from
            :func:`deletion_curve`; a tensor, a numpy array or a list of numbers.
    Returns:
        ``[B]`` areas, or a Python float for a single curve. A constant curve at ``c`` has area
        ``c``. Computed in the curve's precision: float64 for a float64 tensor or array and
        for Python numbers (``auc([0.3] * 3)`` is 0.3, not 0.30000001), float32 for float32,
        at least float32 for anything narrower.
    """
    if isinstance(curve, torch.Tensor):
        values = curve.detach()
    elif isinstance(curve, np.ndarray):
        values = torch.from_numpy(np.ascontiguousarray(curve))
    else:
        values = torch.as_tensor(curve, dtype=torch.float64)
    if values.dim() not in (1, 2) or values.shape[-1] < 2:
        raise SaliencyLabError(
            f"curve must have shape [B, N] or [N] with N >= 2 points, got {list(values.shape)}."
        )
    if not values.is_floating_point():
        values = values.double()  # integers are exact numbers, like Python's
    values = values.to(torch.promote_types(values.dtype, torch.float32))
    area = torch.trapezoid(values, dx=1.0 / (values.shape[-1] - 1), dim=-1)
    return area.item() if values.dim() == 1 else area


def deletion_auc(
    model: nn.Module,
    images: torch.Tensor,
    saliency_maps: torch.Tensor,
    target: TargetLike = None,
    **options: object,
) -> torch.Tensor | float:
    """``auc(deletion_curve(model, images, saliency_maps, target, **options))``: lower is better.

    Returns ``[B]`` areas, or a float for a single ``[3, H, W]`` image.
    """
    return auc(deletion_curve(model, images, saliency_maps, target, **options))


def insertion_auc(
    model: nn.Module,
    images: torch.Tensor,
    saliency_maps: torch.Tensor,
    target: TargetLike = None,
    **options: object,
) -> torch.Tensor | float:
    """``auc(insertion_curve(model, images, saliency_maps, target, **options))``: higher is better.

    Returns ``[B]`` areas, or a float for a single ``[3, H, W]`` image.
    """
    return auc(insertion_curve(model, images, saliency_maps, target, **options))


def _perturbation_curve(
    model: nn.Module,
    images: torch.Tensor,
    saliency_maps: torch.Tensor,
    target: TargetLike,
    steps: int,
    baseline: BaselineLike,
    batch_size: int | None,
    score: str,
    insert: bool,
) -> torch.Tensor:
    """Shared body of deletion and insertion: ``[B, steps + 1]`` target scores."""
    validate.nn_module(model)
    batch, single = validate.image_batch(images)
    maps, _ = validate.map_batch(saliency_maps)
    validate.maps_match_images(maps, batch)
    steps = validate.positive_int(steps, "steps")
    batch_size = validate.batch_size(batch_size)
    validate.one_of(score, "score", SCORES)
    batch = batch.detach()
    impute = isinstance(baseline, str) and baseline == "noisy_linear"
    background = batch if impute else _baseline_images(batch, baseline)
    start, end = (background, batch) if insert else (batch, background)

    order_rank = _pixel_ranks(maps.to(batch.device))  # [B, H*W]: 0 = most salient
    num_pixels = order_rank.shape[1]
    pixels_changed = torch.arange(steps + 1, device=batch.device) * num_pixels // steps

    scores = []
    with eval_mode(model, batch), torch.inference_mode():
        targets = resolve_targets(model, batch, target)
        points = batch.shape[0] * (steps + 1)
        for chunk in batch_slices(points, batch_size or auto_batch_size(model, batch)):
            pair = torch.arange(chunk.start, chunk.stop, device=batch.device)
            image_index, step_index = pair // (steps + 1), pair % (steps + 1)
            changed = order_rank[image_index] < pixels_changed[step_index, None]
            changed = changed.view(-1, 1, *batch.shape[2:])
            if impute:  # the removed pixels (deleted so far, or not yet inserted) imputed from the others
                removed = (changed ^ insert)[:, 0]
                perturbed = torch.stack([
                    noisy_linear_imputation(batch[i], removed[n], noise=ROAD_NOISE, seed=int(step_index[n]))
                    for n, i in enumerate(image_index.tolist())])
            else:
                perturbed = torch.where(changed, end[image_index], start[image_index])
            scores.append(_target_scores(model(perturbed), targets[image_index], score))
    # concatenated outside inference mode: a plain tensor, which the caller may modify in place
    curve = torch.cat(scores) if scores else batch.new_empty(0)
    curve = curve.view(batch.shape[0], steps + 1)
    return curve[0] if single else curve


def _pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """``[B, H, W]`` maps -> ``[B, H*W]`` position of each pixel in decreasing-attribution order.

    The sort is stable, so equal values keep raster order and the result never depends on
    the sorting algorithm or the device.
    """
    flat = maps.flatten(1)
    if not flat.is_floating_point():
        flat = flat.double()
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return ranks.scatter_(1, order, positions)


def _baseline_images(images: torch.Tensor, baseline: BaselineLike) -> torch.Tensor:
    """The baseline as a ``[B, 3, H, W]`` tensor (an expanded view where it is shared) on the
    images' device and dtype."""
    if isinstance(baseline, str):
        if baseline not in NAMED_BASELINES:
            raise SaliencyLabError(
                f"baseline must be a number, 'blur', 'noisy_linear' or an image tensor, got {baseline!r}."
            )
        return _blurred(images)
    return validate.fill_value(baseline, images, "baseline")


def _blurred(images: torch.Tensor) -> torch.Tensor:
    if min(images.shape[-2:]) <= BLUR_KERNEL_SIZE // 2:
        raise SaliencyLabError(
            f"baseline='blur' needs images larger than {BLUR_KERNEL_SIZE // 2} px, got "
            f"{list(images.shape[-2:])}: pass baseline=0.0 or an image instead."
        )
    return gaussian_blur(images, [BLUR_KERNEL_SIZE] * 2, [BLUR_SIGMA] * 2)


def _target_scores(logits: torch.Tensor, targets: torch.Tensor, score: str) -> torch.Tensor:
    """``[N]`` target scores in the logits' precision (at least float32)."""
    if logits.dim() != 2:
        raise SaliencyLabError(
            f"the model must return logits [N, classes], got shape {list(logits.shape)}."
        )
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if score == "prob":
        return select_logits(torch.softmax(logits, dim=1), targets)
    return select_logits(logits, targets)
