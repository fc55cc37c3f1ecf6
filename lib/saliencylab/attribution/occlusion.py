"""Occlusion (Zeiler & Fergus 2013): how much does the class score drop when a window is masked?

A window of ``baseline`` pixels slides over the image; for each position the model is run on
the occluded image, and the drop of the target logit, ``f(x) - f(x with the window masked)``,
is credited to every pixel under the window. A pixel's attribution is the mean drop over the
windows that cover it. This is exactly Captum's ``Occlusion`` with
``sliding_window_shapes=(3, wh, ww)`` and ``strides=(3, sh, sw)``, including its edge rule:
window starts are ``0, s, 2s, ...`` and, when ``(H - wh)`` is not a multiple of ``s``, one
more window starts past ``H - wh`` and is clipped at the image border.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from saliencylab import _validate as validate
from saliencylab._core import (
    SaliencyLabError,
    TargetLike,
    auto_batch_size,
    batch_slices,
    select_logits,
)
from saliencylab.attribution._base import explain

Pair = tuple[int, int]


def occlusion(
    model: nn.Module,
    images: torch.Tensor,
    target: TargetLike = None,
    window: int | Pair = 32,
    stride: int | Pair = 8,
    baseline: float | torch.Tensor = 0.0,
    batch_size: int | None = None,
    progress: bool = False,
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
            :func:`~saliencylab._core.auto_batch_size` (8 for Lite0 at 224x224).
        progress: show a tqdm progress bar (useful in notebooks for small strides).
    Returns:
        ``[B, H, W]`` (``[H, W]`` for a single image) on the images' device: positive where
        masking lowers the target logit.
    """
    window_hw = validate.int_pair(window, "window")
    stride_hw = validate.int_pair(stride, "stride")
    validate.batch_size(batch_size)

    def compute(batch: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        size = (batch.shape[-2], batch.shape[-1])
        _check_window(window_hw, stride_hw, size)
        images_per_forward = batch_size or auto_batch_size(model, batch)
        fill = validate.fill_value(baseline, batch, "baseline")
        starts = _window_starts(size, window_hw, stride_hw)
        with torch.inference_mode():
            clean_scores = select_logits(model(batch), targets)
            drops = _occluded_drops(
                model, batch, fill, targets, clean_scores, starts, window_hw,
                images_per_forward, progress,
            )
            maps = _spread_over_windows(drops, starts, window_hw, size)
        return maps.clone()  # an ordinary tensor: inference tensors refuse later autograd use

    return explain(model, images, target, compute)


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
    chunks = _progress(batch_slices(drops.numel(), batch_size), drops.numel(), batch_size, progress)
    for chunk in chunks:
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


def _progress(
    chunks: Iterator[slice], total: int, batch_size: int, enabled: bool
) -> Iterator[slice]:
    if not enabled:
        return chunks
    from tqdm.auto import tqdm

    return tqdm(chunks, total=math.ceil(total / batch_size), desc="occlusion", unit="batch")
