"""Localisation: does the map point at the object? The pointing game (Zhang et al. 2016), and
the share of a map's mass inside the object (the "energy-based pointing game" of Wang et al. 2020)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np
import torch

from saliencylab import _validate as validate
from saliencylab._core import SaliencyLabError

__all__ = ["Boxes", "pointing_game", "share_inside"]

Boxes = Union[torch.Tensor, Sequence[float], Sequence[Sequence[float]]]


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
        saliency_maps: ``[B, H, W]`` (or one ``[H, W]``). A map that contains NaN raises a
            :class:`~saliencylab.SaliencyLabError`: it has no maximum.
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


def share_inside(saliency_maps: torch.Tensor, boxes_or_masks: Boxes) -> torch.Tensor | float:
    """How much of each map lies on the object? Its mass inside the region over its total.

    The "energy-based pointing game" of Wang et al. 2020 (Score-CAM): ``sum(map * inside) /
    sum(map)``, per map. 1 when the whole map is inside, the region's share of the pixels for a
    uniform map, 0 when nothing is. Unlike the pointing game it uses the whole map, not only its
    maximum, so it says how far a map *moves* between two models or two classes.

    Args:
        saliency_maps: non-negative ``[B, H, W]`` (or one ``[H, W]``), e.g. Grad-CAM or the
            maximum over channels of ``|gradient|``. Negative values raise a
            :class:`~saliencylab.SaliencyLabError` (take ``.abs()`` or ``.clamp(min=0)`` first:
            which one is part of the question); so does a map that is zero everywhere.
        boxes_or_masks: boxes ``[B, 4]`` (or one ``[4]``) as ``(y0, x0, y1, x1)`` in pixels,
            end exclusive like slicing, or bool masks ``[B, H, W]``, as :func:`pointing_game`.
    Returns:
        ``[B]`` shares in ``[0, 1]`` (a Python float for a single ``[H, W]`` map).
    """
    maps, single = validate.map_batch(saliency_maps)
    if (maps < 0).any():
        raise SaliencyLabError(
            "share_inside needs non-negative maps: take maps.abs() (how much) or "
            "maps.clamp(min=0) (only the evidence for the class) first."
        )
    totals = maps.flatten(1).sum(dim=1)
    if (totals == 0).any():
        raise SaliencyLabError(
            f"the map(s) {(totals == 0).nonzero().flatten().tolist()} are zero everywhere: "
            "a share of nothing is undefined."
        )
    regions = _region_masks(boxes_or_masks, maps)
    shares = (maps * regions).flatten(1).sum(dim=1) / totals
    return float(shares[0]) if single else shares


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
