"""Localisation: does the map point at the object (or at the region you suspect)?

The pointing game (Zhang et al. 2016) asks where the map's maximum is; the mask share (the
relevance mass accuracy of Arras, Osman & Samek 2022; for non-negative maps the "energy-based
pointing game" of Wang et al. 2020) asks how much of the map's mass lies in the region.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np
import torch

from saliencylab import _validate as validate
from saliencylab._core import SaliencyLabError

__all__ = ["Boxes", "mask_share", "pointing_game", "share_inside"]

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


def mask_share(
    saliency_maps: torch.Tensor,
    boxes_or_masks: Boxes,
    absolute: bool = False,
) -> torch.Tensor | float:
    """The share of each map's mass that lies inside a region.

    ``share = mass inside the region / mass of the whole map``, in ``[0, 1]``, where the
    mass is the map's **positive part**, ``max(map, 0)``: the evidence *for* the explained
    class (Arras, Osman & Samek 2022, CLEVR-XAI's "relevance mass accuracy"). Unsigned maps
    (``|gradient|``, Grad-CAM) are all mass; of a signed map (Integrated Gradients, occlusion)
    the parts that speak against the class are left out. ``absolute=True`` counts ``|map|``
    instead: how much the region matters, whichever way. A map spread evenly over the image
    scores the region's share of the pixels (its *chance level*); a map entirely inside it, 1.

    Args:
        saliency_maps: ``[B, H, W]`` (or one ``[H, W]``).
        boxes_or_masks: bool masks ``[B, H, W]`` (or one ``[H, W]``), e.g. where a planted
            mark is (:func:`saliencylab.shortcut.plant_mark`), or boxes ``[B, 4]`` as
            ``(y0, x0, y1, x1)`` in pixels, end exclusive (as :func:`pointing_game`).
        absolute: count ``|map|`` instead of its positive part.
    Returns:
        ``[B]`` float64 shares on the maps' device (a Python float for one ``[H, W]`` map).
    Raises:
        SaliencyLabError: maps that are not ``[B, H, W]`` / ``[H, W]`` or contain NaN; regions
            of another shape or that cover no pixel; a map without mass (all values
            ``<= 0``, or all zero with ``absolute=True``): its share is undefined, and the
            message names the images (a blank Grad-CAM, a map of the wrong sign).
    """
    maps, single = validate.map_batch(saliency_maps)
    regions = _region_masks(boxes_or_masks, maps)
    values = maps.double()
    mass = values.abs() if absolute else values.clamp(min=0)
    total = mass.flatten(1).sum(dim=1)
    empty = (total == 0).nonzero().flatten().tolist()
    if empty:
        what = "is zero everywhere" if absolute else "has no positive value"
        hint = (
            "" if absolute else " If the map's sign is arbitrary (or you ask how much the region matters "
            "either way), pass absolute=True."
        )
        raise SaliencyLabError(
            f"{_images(empty, len(total))}: the map {what}, so it has no mass to share out and "
            f"its share inside the region is undefined. Leave those images out (a blank map says "
            f"nothing about where the evidence is).{hint}"
        )
    share = (mass * regions).flatten(1).sum(dim=1) / total
    return share[0].item() if single else share


def _images(indices: list[int], batch: int, shown: int = 8) -> str:
    """``image(s) [0, 3]``, or for a long list ``60 of 64 images ([0, 1, ..., 7, ...])``."""
    if len(indices) <= shown:
        return f"image(s) {indices}"
    listed = ", ".join(map(str, indices[:shown]))
    return f"{len(indices)} of {batch} images ([{listed}, ...])"


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
    maps, _ = validate.map_batch(saliency_maps)
    if (maps < 0).any():
        raise SaliencyLabError(
            "share_inside needs non-negative maps: take maps.abs() (how much) or "
            "maps.clamp(min=0) (only the evidence for the class) first."
        )
    shares = mask_share(saliency_maps, boxes_or_masks, absolute=True)  # the same share: these maps are all mass
    return shares if isinstance(shares, float) else shares.to(maps.dtype)


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
