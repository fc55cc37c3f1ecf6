"""Checks for notebook 12_transfer_learning: how much of a map lies on the object.

``share_of_map_inside(maps [B, H, W], boxes [B, 4]) -> [B]``: each non-negative map's mass
inside its box ``(y0, x0, y1, x1)`` (end exclusive, like slicing) over its total mass, the
measure lesson 12 uses to say how far what the network looks at moves between the ImageNet
model and the fine-tuned one. The check runs it on non-square maps (so a swapped ``y`` and
``x`` shows up), a different box per map that does not touch the border (so an inclusive end
shows up) and maps whose mass is far from uniform (so the box's share of the pixels, or a ratio
of means, shows up), compares with :func:`saliencylab.metrics.share_inside` and, when the
shares differ, names the usual mistake they match.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from saliencylab.checks._common import diagnose, fail, passed, require_shape, require_tensor
from saliencylab.checks._integrity import exercise_check
from saliencylab.checks._promises import Promises
from saliencylab.metrics import share_inside

__all__ = ["check_share_of_map_inside"]

ShareFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# read from the exercise's docstring (tests/test_promises.py): it takes maps, not images, and no
# model; the check still runs a batch of one itself
PROMISES = {"share_of_map_inside": Promises()}

MAP_SIZE = (12, 16)  # non-square on purpose: a swapped (y, x) shows up
FIXED_BOXES = ((2, 3, 7, 10), (5, 1, 11, 6))  # (y0, x0, y1, x1), one per map, away from the border


def fixed_maps(seed: int = 12) -> torch.Tensor:
    """Two non-negative maps ``[2, 12, 16]`` whose mass is far from uniform (squared uniform
    noise plus a bright blob per map), so the box's share of the *pixels* is not its share of
    the *mass*."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(2, *MAP_SIZE, generator=generator) ** 2
    rows = torch.arange(MAP_SIZE[0], dtype=torch.float32).view(-1, 1)
    cols = torch.arange(MAP_SIZE[1], dtype=torch.float32).view(1, -1)
    blobs = torch.stack([torch.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / 8.0) for cy, cx in ((4, 6), (9, 12))])
    return noise + 3 * blobs


def fixed_boxes() -> torch.Tensor:
    """The boxes of :func:`fixed_maps`, a LongTensor ``[2, 4]`` of ``(y0, x0, y1, x1)``."""
    return torch.tensor(FIXED_BOXES)


def _box_masks(boxes: torch.Tensor, height: int, width: int, inclusive: bool = False) -> torch.Tensor:
    """bool ``[B, H, W]``: inside each ``(y0, x0, y1, x1)`` (``inclusive``: the end too)."""
    rows = torch.arange(height).view(1, -1, 1)
    cols = torch.arange(width).view(1, 1, -1)
    y0, x0, y1, x1 = (boxes[:, i].cpu().view(-1, 1, 1) for i in range(4))  # boxes may be on a GPU
    if inclusive:
        return (rows >= y0) & (rows <= y1) & (cols >= x0) & (cols <= x1)
    return (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)


def _share_of_map_inside_mistakes(maps: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
    """Explanation -> the ``[B]`` shares a usual mistake gives on the same maps and boxes."""
    batch, height, width = maps.shape
    inside = _box_masks(boxes, height, width).to(maps.device, maps.dtype)
    totals = maps.flatten(1).sum(dim=1)
    mass_inside = (maps * inside).flatten(1).sum(dim=1)
    mistakes = {
        "the box's end is exclusive, like slicing: rows y0 .. y1 - 1 and columns x0 .. x1 - 1 "
        "(maps[b, y0:y1, x0:x1]); you counted row y1 and column x1 too.": (
            maps * _box_masks(boxes, height, width, inclusive=True).to(maps.device)).flatten(1).sum(dim=1) / totals,
        "you read the box as (x0, y0, x1, y1): it is (y0, x0, y1, x1), rows first, like "
        "maps[b, y0:y1, x0:x1].": (
            maps * _box_masks(boxes[:, [1, 0, 3, 2]], height, width).to(maps.device)).flatten(1).sum(dim=1) / totals,
        "you returned the box's share of the pixels (its area over the map's), which ignores "
        "the map: weigh each pixel by the map's value (mass inside / total mass).": inside.flatten(1).mean(dim=1),
        "you divided the mean inside the box by the mean over the whole map (a ratio of "
        "densities, 1 for a uniform map): divide the *sum* inside by the *sum* over the whole "
        "map, so that the share lies in [0, 1].": (mass_inside / inside.flatten(1).sum(dim=1)) / maps.flatten(1).mean(dim=1),
        "you divided by the total of the whole batch: divide each map's mass inside by that "
        "same map's total (sum over dims (1, 2), one total per map).": mass_inside / totals.sum(),
        "you returned the mass inside the box without dividing by the map's total: the share "
        "is mass inside / total mass.": mass_inside,
        "you returned the share *outside* the box: mass inside / total, not 1 minus it.": 1 - mass_inside / totals,
        "you compared maxima (the largest value inside over the largest overall): sum the map "
        "inside and over the whole map.": (maps * inside).flatten(1).amax(dim=1) / maps.flatten(1).amax(dim=1),
    }
    if batch > 1:
        first = boxes[:1].expand(batch, -1)
        mistakes["you used the first box for every map: map b must use its own box boxes[b]."] = (
            maps * _box_masks(first, height, width).to(maps.device)).flatten(1).sum(dim=1) / totals
    return mistakes


def _require_shares_shape(result: torch.Tensor, maps: torch.Tensor, what: str) -> None:
    batch, height, width = maps.shape
    hints = {
        (batch, height, width): "You returned the masked maps: sum each one and divide by its total, one number per map.",
        (): "One share per map, [B], even for a batch of one: do not sum or average over the batch.",
        (batch, 1): "A dimension of size 1 is left (keepdim=True?): drop it.",
        (batch, height): "You summed over one axis only: sum each map over dims (1, 2).",
        (batch, width): "You summed over one axis only: sum each map over dims (1, 2).",
        (1,): "One share per map: [B], not one number for the whole batch.",
    }
    require_shape(result, (batch,), what, hints, otherwise="One share per map: [B].")


@exercise_check
def check_share_of_map_inside(
    student_fn: ShareFn,
    maps: torch.Tensor | None = None,
    boxes: torch.Tensor | None = None,
    tol: float = 1e-4,
) -> None:
    """Check ``share_of_map_inside(maps, boxes) -> [B]`` against
    :func:`saliencylab.metrics.share_inside` and name the likely mistake.

    Without arguments it uses :func:`fixed_maps` and :func:`fixed_boxes` (two non-square maps,
    one box each), then the second map alone. ``maps`` (non-negative ``[B, H, W]``) and
    ``boxes`` (``[B, 4]``) give other inputs, together.
    """
    if (maps is None) != (boxes is None):
        raise ValueError("give both maps= and boxes= (one (y0, x0, y1, x1) per map), or neither")
    maps = fixed_maps() if maps is None else maps
    boxes = fixed_boxes() if boxes is None else torch.as_tensor(boxes).cpu()
    what = "share_of_map_inside(maps, boxes)"
    lines = []
    cases = [(maps, boxes)] + ([(maps[1:], boxes[1:])] if len(maps) > 1 else [])
    for case_maps, case_boxes in cases:
        given = case_maps.clone()
        got = require_tensor(student_fn(given, case_boxes.clone()), what)
        if not torch.equal(given, case_maps):
            fail(f"{what} changed the maps it was given (an in-place operation such as maps *= mask "
                 "or maps[...] = 0?): compute the share on a new tensor and leave the maps as they are.")
        _require_shares_shape(got, case_maps, what)
        got = got.detach().to(case_maps.dtype)
        expected = share_inside(case_maps, case_boxes)
        case = f"maps {tuple(case_maps.shape)}, boxes {case_boxes.tolist()}"
        diagnose(got, expected, _share_of_map_inside_mistakes(case_maps, case_boxes), f"{what} with {case}", tol)
        lines.append(f"{case}: expected {_rounded(expected)}, got {_rounded(got)}")
    passed("the maps left unchanged\n  " + "\n  ".join(lines))


def _rounded(shares: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in shares.tolist()) + "]"
