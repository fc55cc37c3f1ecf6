"""How good is a saliency map? Faithfulness, localisation and sanity checks.

* ``deletion_curve`` / ``insertion_curve`` and their areas (Petsiuk et al. 2018, RISE): remove
  (or add) pixels in order of decreasing attribution and watch the class score. A faithful map
  makes the score fall fast when deleting (low AUC) and rise fast when inserting (high AUC);
  compare against a random map of similar smoothness (see :func:`deletion_curve`).
* ``pointing_game`` (Zhang et al. 2016): does the map's maximum fall on the object?
* ``rank_correlation``: Spearman correlation between two maps, per image.
* ``randomization_test`` (Adebayo et al. 2018): re-initialise the model from the logits down;
  a map that explains the *model* must change, a map that only shows edges of the image will not.

Maps are ``[B, H, W]`` (or ``[H, W]`` for one image) with the images' height and width, as
every method of ``saliencylab.attribution`` returns them.
"""

from __future__ import annotations

import copy
import difflib
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from saliencylab import _validate as validate
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
    "RandomizationResult",
    "auc",
    "deletion_auc",
    "deletion_curve",
    "insertion_auc",
    "insertion_curve",
    "pointing_game",
    "randomization_groups",
    "randomization_test",
    "rank_correlation",
]

BaselineLike = Union[float, int, str, torch.Tensor]
Boxes = Union[torch.Tensor, Sequence[float], Sequence[Sequence[float]]]

#: The ``"blur"`` baseline, as in RISE (Petsiuk et al. 2018): Gaussian, 11 px kernel, sigma 5 px.
BLUR_KERNEL_SIZE = 11
BLUR_SIGMA = 5.0
_SCORES = ("prob", "logit")


# ----------------------------------------------------------------- deletion / insertion


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
        saliency_maps: ``[B, H, W]`` (or ``[H, W]``), larger = more important.
        target: the class whose score is tracked; ``None`` = each image's predicted class
            (decided once, on the untouched image). An int, or one class per image.
        steps: number of deletion steps; the curve has ``steps + 1`` points.
        baseline: what deleted pixels become: a number (default ``0.0``, black), ``"blur"``
            (the image blurred with an 11 px Gaussian of sigma 5 px, as in RISE), or a tensor
            broadcastable to ``[B, 3, H, W]`` (e.g. a grey ``[3, 1, 1]`` colour).
        batch_size: perturbed images per forward pass (bounds the memory); ``None``: chosen
            for the model and image size, as in the attribution methods (8 for Lite0 at 224).
        score: ``"prob"`` (softmax probability of the target, default, as in RISE) or
            ``"logit"`` (the raw target logit).
    Returns:
        ``[B, steps + 1]`` scores (``[steps + 1]`` for a single ``[3, H, W]`` image), at the
        fractions of deleted pixels ``torch.linspace(0, 1, steps + 1)``.
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
    Other arguments and the returned shape are those of :func:`deletion_curve`.
    """
    return _perturbation_curve(
        model, images, saliency_maps, target, steps, baseline, batch_size, score, insert=True
    )


def auc(curve: torch.Tensor | Sequence[float]) -> torch.Tensor | float:
    """Area under a curve sampled at evenly spaced points of ``[0, 1]`` (trapezoid rule).

    Args:
        curve: ``[B, N]`` curves (or one ``[N]`` curve), ``N >= 2``, e.g. from
            :func:`deletion_curve`.
    Returns:
        ``[B]`` areas, or a float for a single curve. A constant curve at ``c`` has area ``c``.
    """
    values = curve if isinstance(curve, torch.Tensor) else torch.as_tensor(curve)
    if values.dim() not in (1, 2) or values.shape[-1] < 2:
        raise SaliencyLabError(
            f"curve must have shape [B, N] or [N] with N >= 2 points, got {list(values.shape)}."
        )
    values = values.detach().to(torch.float64 if values.dtype == torch.float64 else torch.float32)
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
    validate.one_of(score, "score", _SCORES)
    batch = batch.detach()
    background = _baseline_images(batch, baseline)
    start, end = (background, batch) if insert else (batch, background)

    order_rank = _pixel_ranks(maps.to(batch.device))  # [B, H*W]: 0 = most salient
    num_pixels = order_rank.shape[1]
    pixels_changed = torch.arange(steps + 1, device=batch.device) * num_pixels // steps

    curve = torch.empty(batch.shape[0] * (steps + 1), device=batch.device)
    with eval_mode(model, batch), torch.inference_mode():
        targets = resolve_targets(model, batch, target)
        for chunk in batch_slices(curve.numel(), batch_size or auto_batch_size(model, batch)):
            pair = torch.arange(chunk.start, chunk.stop, device=batch.device)
            image_index, step_index = pair // (steps + 1), pair % (steps + 1)
            changed = order_rank[image_index] < pixels_changed[step_index, None]
            changed = changed.view(-1, 1, *batch.shape[2:])
            perturbed = torch.where(changed, _rows(end, image_index), _rows(start, image_index))
            curve[chunk] = _target_scores(model(perturbed), targets[image_index], score)
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


def _rows(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` of a ``[B or 1, 3, H, W]`` tensor (a shared baseline has one row)."""
    return images[index] if images.shape[0] > 1 else images.expand(index.numel(), -1, -1, -1)


def _baseline_images(images: torch.Tensor, baseline: BaselineLike) -> torch.Tensor:
    """The baseline as a ``[B or 1, 3, H, W]`` tensor on the images' device and dtype."""
    if isinstance(baseline, str):
        if baseline != "blur":
            raise SaliencyLabError(
                f"baseline must be a number, 'blur' or an image tensor, got {baseline!r}."
            )
        return _blurred(images)
    if isinstance(baseline, bool):
        raise SaliencyLabError(f"baseline must be a number or a tensor, got {baseline!r}.")
    if isinstance(baseline, (int, float)):
        return torch.full((1, *images.shape[1:]), float(baseline), dtype=images.dtype,
                          device=images.device)
    if not isinstance(baseline, torch.Tensor):
        raise SaliencyLabError(
            f"baseline must be a number, 'blur' or a tensor, got {type(baseline).__name__}."
        )
    if baseline.dim() == 3:
        baseline = baseline.unsqueeze(0)
    try:
        shape = torch.broadcast_shapes(baseline.shape, images.shape)
    except RuntimeError:
        shape = None
    if shape != images.shape or baseline.dim() != 4:
        raise SaliencyLabError(
            f"baseline of shape {list(baseline.shape)} does not fit images of shape "
            f"{list(images.shape)}: give [3, H, W], [B, 3, H, W] or a colour [3, 1, 1]."
        )
    rows = baseline.shape[0]
    expanded = baseline.detach().to(images.device, images.dtype).expand(rows, *images.shape[1:])
    return expanded.contiguous()


def _blurred(images: torch.Tensor) -> torch.Tensor:
    if min(images.shape[-2:]) <= BLUR_KERNEL_SIZE // 2:
        raise SaliencyLabError(
            f"baseline='blur' needs images larger than {BLUR_KERNEL_SIZE // 2} px, got "
            f"{list(images.shape[-2:])}: pass baseline=0.0 or an image instead."
        )
    return gaussian_blur(images, [BLUR_KERNEL_SIZE] * 2, [BLUR_SIGMA] * 2)


def _target_scores(logits: torch.Tensor, targets: torch.Tensor, score: str) -> torch.Tensor:
    if logits.dim() != 2:
        raise SaliencyLabError(
            f"the model must return logits [N, classes], got shape {list(logits.shape)}."
        )
    if score == "prob":
        return select_logits(torch.softmax(logits.float(), dim=1), targets)
    return select_logits(logits.float(), targets)


# ------------------------------------------------------------------------- pointing game


def pointing_game(
    saliency_maps: torch.Tensor,
    boxes_or_masks: Boxes,
    tolerance: float = 0,
) -> torch.Tensor | bool:
    """Does each map's maximum fall on the object? (Zhang et al. 2016)

    A hit when the map's maximum lies inside the object region, or within ``tolerance`` pixels
    of it (Euclidean distance between pixel centres; Zhang et al. use 15 px at 224 px).
    When several pixels share the maximum value, *all* of them must lie inside: a map that
    points everywhere points nowhere. So a constant map (e.g. all zeros) is a miss, unless
    the region covers the whole image.

    Args:
        saliency_maps: ``[B, H, W]`` (or one ``[H, W]``).
        boxes_or_masks: boxes ``[B, 4]`` (or one ``[4]``) as ``(y0, x0, y1, x1)`` in pixels,
            end exclusive like slicing: pixel ``(i, j)`` is inside when ``y0 <= i < y1`` and
            ``x0 <= j < x1``; or boolean masks ``[B, H, W]`` (or ``[H, W]``), e.g. the union of
            several objects' boxes.
        tolerance: pixels of slack around the region (>= 0).
    Returns:
        bool ``[B]`` hits (a Python bool for a single ``[H, W]`` map); the accuracy of a
        method is ``hits.float().mean()``.
    """
    maps, single = validate.map_batch(saliency_maps)
    tolerance = validate.non_negative_number(
        tolerance, "tolerance", hint="It is a distance in pixels (e.g. 15 at 224 px)."
    )
    regions = _region_masks(boxes_or_masks, maps)
    if tolerance > 0:
        regions = _dilate(regions, tolerance)
    peaks = maps == maps.flatten(1).amax(dim=1).view(-1, 1, 1)
    hits = ~(peaks & ~regions).flatten(1).any(dim=1)
    return bool(hits[0]) if single else hits


def _region_masks(boxes_or_masks: Boxes, maps: torch.Tensor) -> torch.Tensor:
    """Boxes or masks -> bool ``[B, H, W]`` on the maps' device; empty regions are refused."""
    batch, height, width = maps.shape
    if isinstance(boxes_or_masks, torch.Tensor) and boxes_or_masks.dtype == torch.bool:
        masks = boxes_or_masks if boxes_or_masks.dim() == 3 else boxes_or_masks.unsqueeze(0)
        if masks.shape != maps.shape:
            raise SaliencyLabError(
                f"masks have shape {list(boxes_or_masks.shape)} but the maps are "
                f"{list(maps.shape)}: give one bool [H, W] mask per map."
            )
        masks = masks.to(maps.device)
    else:
        masks = _box_masks(_as_boxes(boxes_or_masks, batch), height, width, maps.device)
    empty = (~masks.flatten(1).any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise SaliencyLabError(
            f"the box or mask of image(s) {empty} covers no pixel of the {height}x{width} map: "
            "check the box order (y0, x0, y1, x1) and that it is in this image's pixel "
            "coordinates (after resizing and cropping)."
        )
    return masks


def _as_boxes(boxes: Boxes, batch: int) -> torch.Tensor:
    if isinstance(boxes, torch.Tensor) and boxes.dim() >= 3:
        raise SaliencyLabError(
            f"masks must be bool tensors, got dtype {boxes.dtype}: use masks > 0 (or "
            "masks.bool())."
        )
    try:
        values = torch.as_tensor(boxes, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as error:
        raise SaliencyLabError(
            "boxes_or_masks must be boxes [B, 4] as (y0, x0, y1, x1) or bool masks [B, H, W]; "
            f"could not read {type(boxes).__name__}: {error}"
        ) from None
    values = (values.unsqueeze(0) if values.dim() == 1 else values).cpu()
    if values.dim() != 2 or values.shape[1] != 4 or values.shape[0] != batch:
        raise SaliencyLabError(
            f"boxes must have shape [{batch}, 4] (one (y0, x0, y1, x1) per map), got "
            f"{list(values.shape)}. For a bool mask per map, pass a torch.bool tensor."
        )
    flipped = ((values[:, 2] <= values[:, 0]) | (values[:, 3] <= values[:, 1])).nonzero()
    if flipped.numel():
        i = flipped[0].item()
        raise SaliencyLabError(
            f"box {values[i].tolist()} of image {i} is empty or reversed: boxes are "
            "(y0, x0, y1, x1) with y1 > y0 and x1 > x0 (end exclusive)."
        )
    return values


def _box_masks(boxes: torch.Tensor, height: int, width: int, device: torch.device) -> torch.Tensor:
    rows = torch.arange(height, dtype=torch.float64).view(1, -1, 1)
    cols = torch.arange(width, dtype=torch.float64).view(1, 1, -1)
    y0, x0, y1, x1 = (boxes[:, i].cpu().view(-1, 1, 1) for i in range(4))  # boxes may be on a GPU
    return ((rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)).to(device)


def _dilate(masks: torch.Tensor, radius: float) -> torch.Tensor:
    """Grow bool ``[B, H, W]`` masks by every pixel within Euclidean ``radius`` of them."""
    from scipy.ndimage import distance_transform_edt

    outside = (~masks).cpu().numpy()
    distance = np.stack([distance_transform_edt(region) for region in outside])
    return torch.from_numpy(distance <= radius).to(masks.device)


# ---------------------------------------------------------------------- rank correlation


def rank_correlation(
    map_a: torch.Tensor, map_b: torch.Tensor, absolute: bool = False
) -> torch.Tensor | float:
    """Spearman rank correlation between two maps, image by image.

    The Pearson correlation of the pixels' ranks, ties sharing their average rank (exactly
    ``scipy.stats.spearmanr``). 1: same ordering of pixels; -1: reversed; ~0: unrelated.
    A constant map has no ordering, so its correlation is undefined: NaN, with a warning
    (as scipy does).

    Args:
        map_a, map_b: ``[B, H, W]`` (or one ``[H, W]``) maps of the same shape.
        absolute: compare ``|map_a|`` and ``|map_b|`` (importance regardless of sign), as
            Adebayo et al. 2018 do for signed gradients.
    Returns:
        ``[B]`` float64 correlations, or a float for single ``[H, W]`` maps.
    """
    a, single = validate.map_batch(map_a, "map_a")
    b, _ = validate.map_batch(map_b, "map_b")
    if a.shape != b.shape:
        raise SaliencyLabError(
            f"map_a {list(map_a.shape)} and map_b {list(map_b.shape)} must have the same shape."
        )
    correlation = _spearman(a.flatten(1), b.to(a.device).flatten(1), absolute)
    _warn_if_undefined(correlation, "rank_correlation: map(s) {} are constant")
    return correlation[0].item() if single else correlation


def _spearman(a: torch.Tensor, b: torch.Tensor, absolute: bool) -> torch.Tensor:
    """Row-wise Spearman correlation of ``[B, N]`` tensors -> ``[B]`` float64 (NaN if undefined)."""
    a, b = (m.detach() if m.is_floating_point() else m.detach().double() for m in (a, b))
    if absolute:
        a, b = a.abs(), b.abs()
    has_nan = torch.isnan(a).any(dim=1) | torch.isnan(b).any(dim=1)
    ranks_a = _average_ranks(torch.nan_to_num(a))
    ranks_b = _average_ranks(torch.nan_to_num(b))
    centred_a = ranks_a - ranks_a.mean(dim=1, keepdim=True)
    centred_b = ranks_b - ranks_b.mean(dim=1, keepdim=True)
    norm = (centred_a.square().sum(dim=1) * centred_b.square().sum(dim=1)).sqrt()
    correlation = (centred_a * centred_b).sum(dim=1) / norm  # 0 / 0 = NaN for a constant map
    correlation = correlation.clamp(-1.0, 1.0)
    return correlation.masked_fill(has_nan, float("nan"))


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..N (float64) along dim 1, ties sharing their average rank (scipy's 'average')."""
    count = values.shape[1]
    sorted_values, order = torch.sort(values, dim=1)
    positions = torch.arange(count, device=values.device).expand_as(order)
    starts_tie = torch.ones_like(sorted_values, dtype=torch.bool)
    starts_tie[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]
    ends_tie = torch.ones_like(starts_tie)
    ends_tie[:, :-1] = starts_tie[:, 1:]
    # first and last sorted position of each run of equal values, spread along the run
    first = torch.where(starts_tie, positions, 0).cummax(dim=1).values
    last = torch.where(ends_tie, positions, count - 1).flip(1).cummin(dim=1).values.flip(1)
    sorted_ranks = (first + last).double() / 2 + 1
    return torch.empty_like(sorted_ranks).scatter_(1, order, sorted_ranks)


def _warn_if_undefined(correlation: torch.Tensor, message: str) -> None:
    undefined = torch.isnan(correlation).nonzero().flatten().tolist()
    if undefined:
        warnings.warn(
            message.format(undefined) + ": their rank correlation is undefined (NaN).",
            stacklevel=3,
        )


# --------------------------------------------------------------------- randomization test


@dataclass(frozen=True)
class RandomizationResult:
    """What :func:`randomization_test` measured; ``L`` steps, ``B`` images.

    Attributes:
        layers: a label per step, in the order randomised (top first by default).
        groups: the module names re-initialised at each step (pass back as ``layers=``).
        rank_correlation: ``[L, B]`` Spearman correlation of each step's map with the
            original map (NaN where a map became constant, e.g. an all-zero Grad-CAM).
        ssim: ``[L, B]`` structural similarity of the min-max normalised maps, or ``None``.
        maps: ``[L + 1, B, ...]`` the maps; ``maps[0]`` is the original model's.
        targets: ``[B]`` the class explained at every step (the original model's).
        cascading: True when the randomisation accumulated from step to step.
        absolute: True when maps were compared by magnitude (``|map|``).
    """

    layers: list[str]
    groups: list[tuple[str, ...]]
    rank_correlation: torch.Tensor
    ssim: torch.Tensor | None
    maps: torch.Tensor
    targets: torch.Tensor
    cascading: bool
    absolute: bool

    def to_rows(self) -> list[dict[str, object]]:
        """One dict per (step, image): ``step, layer, image, target, rank_correlation, ssim``.

        ``pandas.DataFrame(result.to_rows())`` gives a table.
        """
        rows = []
        for step, layer in enumerate(self.layers):
            for image in range(self.rank_correlation.shape[1]):
                rows.append({
                    "step": step + 1,
                    "layer": layer,
                    "image": image,
                    "target": int(self.targets[image]),
                    "rank_correlation": float(self.rank_correlation[step, image]),
                    "ssim": None if self.ssim is None else float(self.ssim[step, image]),
                })
        return rows

    def __str__(self) -> str:
        width = max([len("randomised up to")] + [len(name) for name in self.layers])
        header = f"{'step':>4}  {'randomised up to' if self.cascading else 'randomised':<{width}}"
        header += "  spearman" + ("      ssim" if self.ssim is not None else "")
        lines = [header + "   (mean over images)"]
        for step, layer in enumerate(self.layers):
            line = f"{step + 1:>4}  {layer:<{width}}  {self.rank_correlation[step].mean():8.3f}"
            if self.ssim is not None:
                line += f"  {self.ssim[step].mean():8.3f}"
            lines.append(line)
        return "\n".join(lines)


def randomization_test(
    model: nn.Module,
    images: torch.Tensor,
    method: Callable[..., torch.Tensor],
    target: TargetLike = None,
    layers: Sequence[str | Sequence[str]] | None = None,
    seed: int = 0,
    absolute: bool = True,
    cascading: bool = True,
    ssim: bool = True,
    **method_options: object,
) -> RandomizationResult:
    """Cascading model-parameter randomisation test (Adebayo et al. 2018, "Sanity Checks").

    Re-initialises the model's layers one group at a time from the top (logits) down,
    cumulatively, recomputes the map after every step with ``method``, and compares it with
    the original map. A method that explains the model gives maps that decorrelate as more
    of the model becomes random; a method whose maps barely change is explaining the image
    (edges), not the model.

    The user's model is never modified: everything runs on a deep copy. The target class is
    resolved once on the original model and the same class is explained at every step (the
    randomised model's prediction is never used). Re-initialisation calls each module's
    ``reset_parameters()`` (PyTorch's default init; BatchNorm also resets its running
    statistics), else draws normal weights; it is seeded by ``seed``, and the method sees the
    same random numbers at every step (so SmoothGrad's noise is identical), without
    disturbing the global random state.

    Args:
        model: the classifier (left untouched).
        images: ``[B, 3, H, W]`` (or one ``[3, H, W]``) in ``[0, 1]``.
        method: ``method(model, images, target=targets, **method_options) -> [B, ...]``, e.g.
            ``saliencylab.attribution.saliency``.
        target: ``None`` (the original model's predictions), an int or one class per image.
        layers: the steps, in order: module names (``dict(model.named_modules())`` keys), or
            tuples of names randomised together. Default :func:`randomization_groups`.
        seed: seed of the re-initialisation (same seed, same result).
        absolute: compare ``|map|`` (default, as Adebayo et al. do for gradients).
        cascading: True: step k randomises groups 1..k; False: only group k ("independent").
        ssim: also compute SSIM (scikit-image) between min-max normalised maps.
        method_options: passed to ``method``. A module of ``model`` among them (Grad-CAM's
            ``layer=``) is replaced by the same module of the copy.
    Returns:
        a :class:`RandomizationResult`; ``print(result)`` shows a table, ``result.to_rows()``
        gives one row per step and image.
    """
    validate.nn_module(model)
    if not callable(method):
        raise SaliencyLabError(
            f"method must be callable as method(model, images, target=...), got {method!r}."
        )
    batch, _ = validate.image_batch(images)
    groups = _resolve_groups(model, layers)
    with eval_mode(model, batch):
        targets = resolve_targets(model, batch, target)
    randomised, options = _private_copy(model, method_options)

    def explain() -> torch.Tensor:
        torch.manual_seed(seed)  # the method sees the same random numbers at every step
        return _checked_map(method(randomised, batch, target=targets, **options), batch)

    with torch.random.fork_rng(devices=_cuda_devices(model, batch)):
        maps = [explain()]
        pristine = None if cascading else copy.deepcopy(randomised.state_dict())
        for group, step_seed in zip(groups, _step_seeds(seed, len(groups))):
            if pristine is not None:
                randomised.load_state_dict(pristine)
            torch.manual_seed(step_seed)
            for name in group:
                _reinitialise(randomised.get_submodule(name))
            maps.append(explain())

    stacked = torch.stack(maps)
    correlations = torch.stack([_spearman(stacked[0].flatten(1), m.flatten(1), absolute)
                                for m in stacked[1:]])
    _warn_about_constant_maps(correlations)
    similarity = None
    if ssim:
        similarity = torch.stack([_ssim(stacked[0], m, absolute) for m in stacked[1:]])
    return RandomizationResult(
        layers=[_group_label(group) for group in groups],
        groups=groups,
        rank_correlation=correlations,
        ssim=similarity,
        maps=stacked,
        targets=targets,
        cascading=cascading,
        absolute=absolute,
    )


def _step_seeds(seed: int, steps: int) -> list[int]:
    """One seed per randomisation step, all drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(2**62, (steps,), generator=generator).tolist()


def _warn_about_constant_maps(correlations: torch.Tensor) -> None:
    constant = [(step + 1, image) for step, image in torch.isnan(correlations).nonzero().tolist()]
    if constant:
        warnings.warn(
            f"randomization_test: the map became constant (e.g. an all-zero Grad-CAM) at "
            f"(step, image) {constant}: its rank correlation is undefined, reported as NaN.",
            stacklevel=3,
        )


def randomization_groups(model: nn.Module) -> list[tuple[str, ...]]:
    """The default steps of :func:`randomization_test`: groups of module names, top first.

    How the model is cut: descend through wrappers that hold a single parameterised child
    (such as ``Sequential(normalise, network)``) to the network's body. Its parameterised
    children are the layers, except that containers (``Sequential``, ``ModuleList``,
    ``ModuleDict``) are opened, recursively; any other module (a conv, a residual or MBConv
    block) is one layer. Then consecutive layers of the same container with the same output
    width (the size of their last parameter: channels or features) form one group: a conv and
    its BatchNorm, or the repeated blocks of one stage. EfficientNet-Lite0 gives 10 steps: the
    classifier, the head conv+BN, its 7 stages of MBConv blocks and the stem conv+BN; a ResNet
    gives fc, layer4 ... layer1 and the stem; VGG merges neighbouring convs of equal width.
    Parameters held directly by the body module itself are not randomised.
    """
    prefix, body = _network_body(model)
    groups: list[tuple[str, ...]] = []
    for siblings in _sibling_runs(prefix, body):
        for run in _same_width_runs(siblings):
            groups.append(tuple(name for name, _ in run))
    return groups[::-1]


def _network_body(model: nn.Module) -> tuple[str, nn.Module]:
    name, module = "", model
    while True:
        children = _parameterised_children(module)
        if (
            len(children) != 1
            or any(True for _ in module.parameters(recurse=False))
            or not _parameterised_children(children[0][1])  # a single layer: keep its parent
        ):
            return name, module
        child_name, module = children[0]
        name = _join(name, child_name)


def _sibling_runs(prefix: str, parent: nn.Module) -> list[list[tuple[str, nn.Module]]]:
    """Parameterised layers under ``parent`` in definition order, as runs that share a parent.

    ``Sequential`` / ``ModuleList`` / ``ModuleDict`` children are opened (recursively); any
    other module (a conv, a residual block) is one layer.
    """
    runs: list[list[tuple[str, nn.Module]]] = [[]]
    for child_name, child in _parameterised_children(parent):
        name = _join(prefix, child_name)
        if isinstance(child, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            runs.extend(_sibling_runs(name, child))
            runs.append([])
        else:
            runs[-1].append((name, child))
    return [run for run in runs if run]


def _same_width_runs(layers: list[tuple[str, nn.Module]]) -> list[list[tuple[str, nn.Module]]]:
    runs: list[list[tuple[str, nn.Module]]] = []
    for layer in layers:
        if runs and _output_width(runs[-1][-1][1]) == _output_width(layer[1]):
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return runs


def _output_width(module: nn.Module) -> int:
    last = list(module.parameters())[-1]
    return last.shape[0] if last.dim() else 1


def _parameterised_children(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, c) for n, c in module.named_children() if any(True for _ in c.parameters())]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _group_label(names: tuple[str, ...]) -> str:
    """``("_blocks.4", "_blocks.5", "_blocks.6")`` -> ``"_blocks.4-6"``; else joined by ``+``."""
    parents = {name.rpartition(".")[0] for name in names}
    indices = [name.rpartition(".")[2] for name in names]
    if len(names) > 1 and len(parents) == 1 and all(i.isdigit() for i in indices):
        return f"{names[0]}-{indices[-1]}"  # siblings of one Sequential/ModuleList: a range
    return "+".join(names)


def _resolve_groups(
    model: nn.Module, layers: Sequence[str | Sequence[str]] | None
) -> list[tuple[str, ...]]:
    if layers is None:
        groups = randomization_groups(model)
    elif isinstance(layers, (str, nn.Module)) or not isinstance(layers, Iterable):
        raise SaliencyLabError(
            "layers must be a list of module names (or of tuples of names), top layer first, "
            f"e.g. ['fc', 'layer4']; got {layers!r}."
        )
    else:
        groups = [(item,) if isinstance(item, str) else tuple(item) for item in layers]
    modules = dict(model.named_modules())
    for name in (name for group in groups for name in group):
        if not isinstance(name, str) or name not in modules:
            close = difflib.get_close_matches(str(name), list(modules), n=3)
            raise SaliencyLabError(
                f"layers: the model has no module named {name!r}"
                + (f"; did you mean {close}?" if close else ".")
                + " Names are those of model.named_modules(); see randomization_groups(model)."
            )
        if not any(True for _ in modules[name].parameters()):
            raise SaliencyLabError(f"layers: module {name!r} has no parameters to randomise.")
    if not groups:
        raise SaliencyLabError("the model has no parameters to randomise.")
    return groups


def _private_copy(
    model: nn.Module, options: Mapping[str, object]
) -> tuple[nn.Module, dict[str, object]]:
    """A deep copy of ``model`` in eval mode, and ``options`` with its modules swapped for the
    copy's."""
    memo: dict[int, object] = {}
    try:
        duplicate = copy.deepcopy(model, memo)
    except Exception as error:  # noqa: BLE001 - any failure means the same thing to the user
        raise SaliencyLabError(
            f"randomization_test works on a copy of the model, but copy.deepcopy(model) "
            f"failed ({type(error).__name__}: {error})."
        ) from error
    translated = {
        key: memo.get(id(value), value) if isinstance(value, nn.Module) else value
        for key, value in options.items()
    }
    return duplicate.eval(), translated


def _cuda_devices(model: nn.Module, images: torch.Tensor) -> list[int]:
    tensors = [images, *model.parameters()]
    return sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})


def _checked_map(maps: object, images: torch.Tensor) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor) or maps.dim() < 2 or maps.shape[0] != images.shape[0]:
        shape = list(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise SaliencyLabError(
            f"method must return a tensor [B, ...] with one map per image (B = "
            f"{images.shape[0]}), got {shape}."
        )
    return maps.detach().float()


def _reinitialise(module: nn.Module) -> None:
    """Re-draw every parameter of ``module``: ``reset_parameters()`` where a layer has one."""
    for layer in module.modules():
        own = list(layer.parameters(recurse=False))
        if not own:
            continue
        if callable(getattr(layer, "reset_parameters", None)):
            layer.reset_parameters()
            continue
        with torch.no_grad():
            for parameter in own:
                fan_in = parameter[0].numel() if parameter.dim() > 1 else 1
                parameter.normal_(0.0, 1.0 / math.sqrt(fan_in) if parameter.dim() > 1 else 0.01)


def _ssim(original: torch.Tensor, other: torch.Tensor, absolute: bool) -> torch.Tensor:
    """``[B]`` SSIM between two batches of maps ``[B, H, W]`` (or ``[B, C, H, W]``)."""
    from skimage.metrics import structural_similarity

    values = []
    for a, b in zip(original, other):
        a, b = (_unit_range(m.abs() if absolute else m) for m in (a, b))
        side = min(a.shape[-2:])
        window = min(7, side if side % 2 else side - 1)
        if window < 3:
            values.append(float("nan"))
            continue
        channel_axis = 0 if a.ndim == 3 else None
        values.append(structural_similarity(a, b, data_range=1.0, win_size=window,
                                            channel_axis=channel_axis))
    return torch.tensor(values, dtype=torch.float64)


def _unit_range(map_: torch.Tensor) -> np.ndarray:
    """Min-max normalise to ``[0, 1]`` (a constant map becomes zeros), as float64 numpy."""
    values = map_.double().cpu()
    spread = values.max() - values.min()
    scaled = (values - values.min()) / spread if spread > 0 else torch.zeros_like(values)
    return scaled.numpy()
