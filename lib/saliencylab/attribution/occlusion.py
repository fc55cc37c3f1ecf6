"""Occlusion (Zeiler & Fergus 2013): how much does the class score drop when a window is masked?

A window of ``baseline`` pixels slides over the image; for each position the model is run on
the occluded image, and the drop of the target logit, ``f(x) - f(x with the window masked)``,
is credited to every pixel under the window. A pixel's attribution is the mean drop over the
windows that cover it. This is exactly Captum's ``Occlusion`` with
``sliding_window_shapes=(3, wh, ww)`` and ``strides=(3, sh, sw)``, including its edge rule:
window starts are ``0, s, 2s, ...`` and, when ``(H - wh)`` is not a multiple of ``s``, one
more window starts past ``H - wh`` and is clipped at the image border.

``incremental=True`` computes the same map faster on convolutional networks: only the part of
each layer that a window can change is recomputed (see :mod:`._incremental`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple, TypeVar

import torch
from torch import nn

from saliencylab import _validate as validate
from saliencylab._core import (
    ACTIVATION_BUDGET,
    MAX_AUTO_BATCH_SIZE,
    SaliencyLabError,
    TargetLike,
    auto_batch_size,
    batch_slices,
    eval_mode,
    select_logits,
)
from saliencylab.attribution import _incremental as incremental_pass
from saliencylab.attribution._base import explain

Pair = tuple[int, int]
Job = TypeVar("Job")


class LayerShare(NamedTuple):
    """One layer as the incremental pass sees an occluded window: what it must recompute."""

    layer: str  # the module's name in the model
    positions: int  # output positions the window changes
    map_positions: int  # output positions of the whole map
    share: float  # positions / map_positions


class RecomputeProfile(NamedTuple):
    """:func:`recompute_profile`'s answer: one :class:`LayerShare` per layer walked, in order,
    and the multiply-adds of the whole incremental pass as a fraction of a full forward pass."""

    layers: list[LayerShare]
    work_fraction: float

#: ``incremental=None`` takes the incremental path when, for the middle window, it makes at
#: most this share of a full forward pass's multiply-adds. Measured on one CPU thread
#: (bench/README.md), incremental vs ordinary: 1.7x faster on Lite0 at 224 px (0.65 of the
#: multiply-adds: its pass also moves far less memory), 1.2x at 0.70 (ResNet18, 128 px), no
#: gain at 0.68 (VGG11, 64x48 px), slower at 0.81 and 0.95 (ResNet18 64x48, AlexNet 80x64).
AUTO_MAX_WORK_FRACTION = 0.8


def occlusion(
    model: nn.Module,
    images: torch.Tensor,
    target: TargetLike = None,
    window: int | Pair = 32,
    stride: int | Pair = 8,
    baseline: float | torch.Tensor = 0.0,
    batch_size: int | None = None,
    progress: bool = False,
    incremental: bool | None = None,
) -> torch.Tensor:
    """Occlusion map: mean drop of the target logit over the windows covering each pixel.

    Args:
        model: classifier taking ``[N, 3, H, W]`` images in ``[0, 1]``, returning ``[N, C]``.
        images: ``[B, 3, H, W]`` or a single ``[3, H, W]``.
        target: ``None`` (each image's top class), an ``int``, or one class per image.
        window: window size, ``int`` or ``(height, width)``; at most the image size.
        stride: step between windows, ``int`` or ``(height, width)``; at most the window size
            (otherwise some pixels would never be occluded).
        baseline: what a masked window shows: a number (``0.0`` black, ``0.5`` grey) or an
            image tensor broadcastable to ``[B, 3, H, W]`` (e.g. a blurred copy).
        batch_size: occluded images per forward pass; peak memory is set by this, not by the
            number of window positions. ``None``: chosen for the model and image size by
            :func:`~saliencylab._core.auto_batch_size` (8 for Lite0 at 224x224); on the
            incremental path, the same budget applied to its (smaller) per-window tensors
            (up to 64 windows per pass).
        progress: show a tqdm progress bar (useful in notebooks for small strides).
        incremental: recompute, in each layer, only the positions a window can change (the
            clean image's activations are computed once and cached): the same map (to float
            rounding, ~1e-6 relative) in a fraction of the time on convolutional networks.
            It walks ``nn.Sequential`` chains (EfficientNet-Lite0 and the digits CNN of
            :func:`~saliencylab.models.load_model`), torchvision's VGG, AlexNet and ResNet,
            through convolutions, pooling, batch-norm, elementwise layers and residual blocks,
            and runs the rest of the model (from global pooling, a flatten or any other layer
            on) as usual. ``None`` (default): incremental where the model allows it and a probe
            window shows it recomputes at most :data:`AUTO_MAX_WORK_FRACTION` (0.8) of the
            multiply-adds of a full pass (e.g. 0.15 for VGG11, 0.62 for Lite0 at 224x224,
            window 32; counted, not timed, so the choice is the same on every run);
            otherwise the ordinary path. ``True``: always incremental; a model it
            cannot walk raises :class:`SaliencyLabError` saying why (e.g. a hand-written
            ``forward``, or forward hooks). ``False``: always the ordinary path (each occluded
            image through the whole model).
    Returns:
        ``[B, H, W]`` (``[H, W]`` for a single image) on the images' device: positive where
        masking lowers the target logit.
    Raises:
        SaliencyLabError: bad options, or ``incremental=True`` on a model it cannot walk.
    """
    window_hw = validate.int_pair(window, "window")
    stride_hw = validate.int_pair(stride, "stride")
    validate.batch_size(batch_size)
    validate.optional_flag(incremental, "incremental")

    def compute(batch: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        size = (batch.shape[-2], batch.shape[-1])
        _check_window(window_hw, stride_hw, size)
        fill = validate.fill_value(baseline, batch, "baseline")
        starts = _window_starts(size, window_hw, stride_hw)
        with torch.inference_mode():
            clean_logits = model(batch)
            clean_scores = select_logits(clean_logits, targets)
            chosen = _incremental_plan(
                model, batch, fill, clean_logits, starts, window_hw, incremental
            )
            if chosen is None:
                drops = _occluded_drops(
                    model, batch, fill, targets, clean_scores, starts, window_hw,
                    batch_size or auto_batch_size(model, batch), progress,
                )
            else:
                plan, windows_per_pass = chosen
                drops = _incremental_drops(
                    plan, batch, fill, targets, clean_scores, starts, window_hw,
                    batch_size or windows_per_pass, progress,
                )
            maps = _spread_over_windows(drops, starts, window_hw, size)
        return maps.clone()  # an ordinary tensor: inference tensors refuse later autograd use

    return explain(model, images, target, compute)


def recompute_profile(
    model: nn.Module, image: torch.Tensor, window: int | Pair = 32, corner: Pair | None = None
) -> RecomputeProfile:
    """Why occlusion costs what it costs: how much of each layer one occluded window changes.

    A window changes only the positions of a layer whose receptive field overlaps it, and
    receptive fields grow with depth, so the changed share grows from a few percent near the
    input to the whole map deep down. The incremental pass of :func:`occlusion` recomputes just
    that share (counted here, not timed, so it is the same on every machine).

    Args:
        model: a model :func:`occlusion` can run incrementally (see its ``incremental``).
        image: one image, ``[3, H, W]`` or ``[1, 3, H, W]``.
        window: window size, ``int`` or ``(height, width)``.
        corner: top-left corner of the window; default the window in the middle of the image.
    Returns:
        :class:`RecomputeProfile`: per layer the positions recomputed, and the work fraction.
    Raises:
        SaliencyLabError: the model cannot be walked layer by layer (the reason is given).
    """
    batch, _ = validate.one_image(image, "image")
    size = (batch.shape[-2], batch.shape[-1])
    window_hw = validate.int_pair(window, "window")
    _check_window(window_hw, window_hw, size)
    corner = corner or ((size[0] - window_hw[0]) // 2, (size[1] - window_hw[1]) // 2)
    with eval_mode(model, batch), torch.inference_mode():
        plan, cache, why_not = _verified_walk(model, batch, model(batch))
        if plan is None:
            raise SaliencyLabError(f"cannot walk this {type(model).__name__} layer by layer: {why_not}.")
        patch = incremental_pass.occluded_patch(batch, torch.zeros_like(batch), [corner], window_hw)
        probe = incremental_pass.probe(plan, cache, patch)
    layers = [LayerShare(l.name, l.positions, l.map_positions, l.fraction) for l in probe.layers]
    return RecomputeProfile(layers, probe.work_fraction)


def _check_window(window: Pair, stride: Pair, size: Pair) -> None:
    for axis, w, s, n in zip(("height", "width"), window, stride, size):
        if w > n:
            raise SaliencyLabError(
                f"the occlusion window {axis} ({w}) is larger than the image {axis} ({n}): "
                f"use a window of at most {list(size)}."
            )
        if s > w and w < n:
            raise SaliencyLabError(
                f"the stride {axis} ({s}) is larger than the window {axis} ({w}), so some pixels "
                "would never be occluded: use stride <= window."
            )


def _axis_starts(size: int, window: int, stride: int) -> list[int]:
    """Captum's window starts along one axis; the last one may run past the border."""
    count = math.ceil((size - window) / stride) + 1
    return [i * stride for i in range(count)]


def _window_starts(size: Pair, window: Pair, stride: Pair) -> list[Pair]:
    """Top-left corners ``(y, x)`` of every window, row by row."""
    rows = _axis_starts(size[0], window[0], stride[0])
    cols = _axis_starts(size[1], window[1], stride[1])
    return [(y, x) for y in rows for x in cols]


def _occluded_drops(
    model: nn.Module,
    batch: torch.Tensor,
    fill: torch.Tensor,
    targets: torch.Tensor,
    clean_scores: torch.Tensor,
    starts: list[Pair],
    window: Pair,
    batch_size: int,
    progress: bool,
) -> torch.Tensor:
    """Score drop for every (image, window) pair, ``[B, P]``, ``batch_size`` forwards at a time.

    Image/window pairs are flattened, so batches stay full even for several small images.
    """
    num_images, num_windows = batch.shape[0], len(starts)
    forward = _ChannelsLastForward(model)
    drops = torch.empty(num_images * num_windows, dtype=batch.dtype, device=batch.device)
    for chunk in _progress(list(batch_slices(drops.numel(), batch_size)), progress):
        jobs = range(chunk.start, chunk.stop)
        image_ids = torch.tensor([job // num_windows for job in jobs], device=batch.device)
        corners = [starts[job % num_windows] for job in jobs]
        occluded = _occluded_batch(batch, fill, image_ids, corners, window)
        scores = select_logits(forward(occluded), targets[image_ids])
        drops[chunk] = clean_scores[image_ids] - scores
    return drops.view(num_images, num_windows)


def _occluded_batch(
    batch: torch.Tensor,
    fill: torch.Tensor,
    image_ids: torch.Tensor,
    corners: list[Pair],
    window: Pair,
) -> torch.Tensor:
    """Copies of ``batch[image_ids]`` with one window each set to the baseline, ``[n, 3, H, W]``.

    Built by slice assignment (no per-window mask tensors).
    """
    occluded = batch.index_select(0, image_ids)
    (wh, ww) = window
    for row, (image_id, (y, x)) in enumerate(zip(image_ids.tolist(), corners)):
        occluded[row, :, y : y + wh, x : x + ww] = fill[image_id, :, y : y + wh, x : x + ww]
    return occluded


def _incremental_plan(
    model: nn.Module,
    batch: torch.Tensor,
    fill: torch.Tensor,
    clean_logits: torch.Tensor,
    starts: list[Pair],
    window: Pair,
    incremental: bool | None,
) -> tuple[incremental_pass.Plan, int] | None:
    """``(plan, windows per pass)`` when ``incremental`` asks for the incremental pass (for
    ``None``: when a probe with the middle window finds it worth it), else ``None``.

    Checked on the first image: walked layer by layer, the model must give ``model(batch)``'s
    logits; otherwise (a module whose ``forward`` does more than its layers) the walk is wrong.
    """
    if incremental is False:
        return None
    plan, cache, why_not = _verified_walk(model, batch[:1], clean_logits[:1])
    if plan is None:
        if incremental:
            raise SaliencyLabError(
                f"incremental=True, but occlusion cannot run this {type(model).__name__} "
                f"incrementally: {why_not}. Use incremental=None (automatic) or False."
            )
        return None
    middle = [starts[len(starts) // 2]]
    patch = incremental_pass.occluded_patch(batch[:1], fill[:1], middle, window)
    probe = incremental_pass.probe(plan, cache, patch)
    if incremental is None and probe.work_fraction > AUTO_MAX_WORK_FRACTION:
        return None
    # as auto_batch_size does for whole images: the largest tensor of a pass under the budget
    return plan, max(1, min(MAX_AUTO_BATCH_SIZE, ACTIVATION_BUDGET // probe.copy_bytes))


def _verified_walk(
    model: nn.Module, image: torch.Tensor, clean_logits: torch.Tensor
) -> tuple[incremental_pass.Plan | None, incremental_pass.Cache | None, str]:
    """``(plan, the clean activations of image [1, 3, H, W], "")``, or ``(None, None, why not)``.

    Walked layer by layer, the model must give ``clean_logits`` (``model(image)``); otherwise
    (a module whose ``forward`` does more than its layers) the walk is wrong.
    """
    plan, why_not = incremental_pass.build_plan(model)
    if plan is None:
        return None, None, why_not
    logits, cache = plan.run_clean(image)
    scale = float(clean_logits.abs().max())
    if not torch.allclose(logits, clean_logits, rtol=1e-4, atol=1e-4 * scale):
        return None, None, "walked layer by layer, it does not give model(images)' logits"
    return plan, cache, ""


def _incremental_drops(
    plan: incremental_pass.Plan,
    batch: torch.Tensor,
    fill: torch.Tensor,
    targets: torch.Tensor,
    clean_scores: torch.Tensor,
    starts: list[Pair],
    window: Pair,
    batch_size: int,
    progress: bool,
) -> torch.Tensor:
    """:func:`_occluded_drops` by the incremental pass, ``[B, P]``: one image at a time (its
    cache holds the clean activations of every layer), ``batch_size`` windows per pass, in the
    channels_last layout (as :class:`_ChannelsLastForward`; the tail gets contiguous maps)."""
    num_images, num_windows = batch.shape[0], len(starts)
    drops = batch.new_empty((num_images, num_windows))
    jobs = [(b, chunk) for b in range(num_images) for chunk in batch_slices(num_windows, batch_size)]
    cache, cached_image = None, None
    for image_id, chunk in _progress(jobs, progress):
        one = slice(image_id, image_id + 1)
        if image_id != cached_image:
            _, cache = plan.run_clean(batch[one].contiguous(memory_format=torch.channels_last))
            cached_image = image_id
        patch = incremental_pass.occluded_patch(batch[one], fill[one], starts[chunk], window)
        logits = plan.run_patched(cache, patch)
        scores = select_logits(logits, targets[one].expand(len(logits)))
        drops[image_id, chunk] = clean_scores[image_id] - scores
    return drops


class _ChannelsLastForward:
    """``model(batch)`` in channels_last layout, which the CPU convolutions run faster on.

    Some models cannot take it: a ``.view()`` after a convolution raises on a channels_last
    tensor. Then the same batch is run again in the ordinary layout, and so are all later ones;
    an error that the ordinary layout raises too is the model's own and is raised unchanged.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.use_channels_last = True

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if self.use_channels_last:
            try:
                return self.model(batch.contiguous(memory_format=torch.channels_last))
            except RuntimeError:
                self.use_channels_last = False
        return self.model(batch.contiguous())


def _spread_over_windows(
    drops: torch.Tensor, starts: list[Pair], window: Pair, size: Pair
) -> torch.Tensor:
    """Average each pixel's drops over the windows covering it: ``[B, P] -> [B, H, W]``."""
    totals = drops.new_zeros((drops.shape[0], *size))
    coverage = drops.new_zeros(size)
    (wh, ww) = window
    for index, (y, x) in enumerate(starts):
        totals[:, y : y + wh, x : x + ww] += drops[:, index, None, None]
        coverage[y : y + wh, x : x + ww] += 1
    return totals / coverage


def _progress(jobs: list[Job], enabled: bool) -> Iterable[Job]:
    if not enabled:
        return jobs
    from tqdm.auto import tqdm

    return tqdm(jobs, desc="occlusion", unit="batch")
