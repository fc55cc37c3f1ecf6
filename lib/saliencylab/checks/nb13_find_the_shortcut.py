"""Checks for notebook 13 (find the shortcut: does attribution find the planted mark?).

``mark_share(model, images [B, 3, H, W], masks [B, H, W], method, target) -> [B]``: for each
image, the positive part of ``method``'s map summed over the mask, divided by the positive part
summed over the whole image (``saliencylab.metrics.mask_share`` of the method's maps). The check
hands the student's function a *signed* method (the gradient summed over the colour channels), so
that the positive part, ``|map|`` and the signed map all give different shares, wrapped in a
recorder that notes every call: how many images it got and which class it was asked for. The
images are non-square and every mask is a different rectangle, so swapped axes and a share
computed over the whole batch show up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Union

import torch
from torch import nn

from saliencylab.attribution import saliency
from saliencylab.checks._common import (
    as_target_list,
    close,
    diagnose,
    fail,
    non_predicted_targets,
    passed,
    require_shape,
)
from saliencylab.checks._fixtures import fixed_occlusion_model, smooth_random_images
from saliencylab.checks._integrity import exercise_check
from saliencylab.checks._promises import Promises, image_batches_to_try
from saliencylab.checks._running import run_student_twice
from saliencylab.metrics import mask_share

__all__ = ["SIGNED_GRADIENT", "MethodCalls", "check_mark_share", "fixed_masks"]

Target = Union[int, Sequence[int], torch.Tensor]
MarkShareFn = Callable[..., torch.Tensor]

# read from the exercise's docstring (tests/test_promises.py): images [B, 3, H, W]
PROMISES = {"mark_share": Promises(image_batches=True)}

IMAGE_SIZE = (10, 14)  # non-square: a height/width swap changes the shape
# (y0, x0, y1, x1) of each image's mask: different sizes and places, so a share computed with
# another image's mask, or over the whole batch, differs
MASK_BOXES = ((0, 0, 3, 3), (6, 9, 10, 14), (2, 4, 5, 6))

SIGNED_GRADIENT = partial(saliency, reduce="sum")
"""The gradient summed over the colour channels: a signed map, ``[B, H, W]``."""


def fixed_masks(boxes: Sequence[tuple[int, int, int, int]] = MASK_BOXES, size: tuple[int, int] = IMAGE_SIZE) -> torch.Tensor:
    """Bool masks ``[len(boxes), H, W]``, True inside each ``(y0, x0, y1, x1)`` box."""
    masks = torch.zeros(len(boxes), *size, dtype=torch.bool)
    for mask, (y0, x0, y1, x1) in zip(masks, boxes):
        mask[y0:y1, x0:x1] = True
    return masks


@dataclass
class MethodCall:
    """What :class:`MethodCalls` saw at one call of the method."""

    batch_size: int
    target: list[int] | None


class MethodCalls:
    """An attribution method that records every call (how many images, which target)."""

    def __init__(self, method: Callable[..., torch.Tensor]) -> None:
        self.method = method
        self.calls: list[MethodCall] = []

    def __call__(self, model: nn.Module, images: torch.Tensor, target: object = None, **options: object) -> torch.Tensor:
        batch = images.shape[0] if images.dim() == 4 else 1
        recorded = None if target is None else as_target_list(target, batch)
        self.calls.append(MethodCall(batch, recorded))
        return self.method(model, images, target=target, **options)


def _mark_share_mistakes(
    model: nn.Module, images: torch.Tensor, masks: torch.Tensor, method: Callable, targets: list[int]
) -> dict[str, torch.Tensor]:
    """Explanation -> the ``[B]`` shares a usual mistake gives on the same inputs."""
    maps = method(model, images, target=targets).detach().double()  # [B, H, W]
    inside = masks.to(maps.device)

    def per_image(values: torch.Tensor) -> torch.Tensor:
        return values.flatten(1).sum(dim=1)

    positive = maps.clamp(min=0)
    low, high = maps.flatten(1).amin(dim=1), maps.flatten(1).amax(dim=1)
    rescaled = (maps - low.view(-1, 1, 1)) / (high - low).view(-1, 1, 1)
    with torch.no_grad():
        predicted = model(images).argmax(dim=1).tolist()
    pixels = masks[0].numel()
    mistakes = {
        "you took |map|: a region that argues AGAINST the class (negative values) then counts as "
        "evidence for it. Keep the positive part, map.clamp(min=0), in both sums.": per_image(maps.abs() * inside)
        / per_image(maps.abs()),
        "you summed the signed map: negative values cancel positive ones (and the share can leave "
        "[0, 1]). Take the positive part first, map.clamp(min=0), then sum.": per_image(maps * inside) / per_image(maps),
        "you divided by the sum of the signed map: the denominator must be the positive mass of the "
        "whole map, map.clamp(min=0) summed over all pixels.": per_image(positive * inside) / per_image(maps),
        "you divided the MEAN on the mark by the mean over the image (a density ratio, which is 1 for "
        "an even map): divide the SUMS, mass on the mark / mass of the whole map (an even map then "
        "scores the mark's area fraction).": per_image(positive * inside) / per_image(inside.double())
        / (per_image(positive) / pixels),
        "you divided by the mass OUTSIDE the mark: divide by the mass of the whole map, mark "
        "included.": per_image(positive * inside) / per_image(positive * ~inside),
        "you measured the share OUTSIDE the mark (~masks): the share ON the mark is wanted.": per_image(
            positive * ~inside) / per_image(positive),
        "you counted pixels (how many positive pixels lie on the mark) instead of summing their "
        "values: a pixel's weight is its attribution.": per_image((positive > 0) & inside).double()
        / per_image(positive > 0).double(),
        "you compared maxima (largest value on the mark / largest value overall): the share sums "
        "the values.": (positive * inside).flatten(1).amax(dim=1) / positive.flatten(1).amax(dim=1),
        "you min-max normalised each map first: that moves zero to the most negative pixel, so "
        "evidence AGAINST the class counts as mass. Use the map's values as they are.": per_image(rescaled * inside)
        / per_image(rescaled),
        "you divided by the mass of the whole BATCH: each image's share is its own mass on its mark "
        "over its own total (sum over dims 1 and 2 only).": per_image(positive * inside) / positive.sum(),
        f"you explained the predicted classes {predicted} instead of `target`: pass "
        "target=target to method.": mask_share(method(model, images, target=predicted), masks),
    }
    if len(set(targets)) > 1:
        mistakes[
            f"you explained the first target ({targets[0]}) for every image: image b must use its "
            "own class target[b]."
        ] = mask_share(method(model, images, target=[targets[0]] * len(targets)), masks)
    return mistakes


def _require_share_shape(result: torch.Tensor, images: torch.Tensor, what: str) -> None:
    batch, _, height, width = images.shape
    hints = {
        (): "That is one number for the whole batch: sum each image's map on its own "
        "(.flatten(1).sum(dim=1)) and return one share per image.",
        (batch, height, width): "That is a map per image: sum it, on the mark and over the whole "
        "image, to one share per image.",
        (batch, 1): "A dimension of size 1 is left (keepdim=True?): return [B].",
        (batch, height): "You summed over one axis only: sum over both height and width (dims 1 "
        "and 2 of the [B, H, W] map).",
        (batch, width): "You summed over one axis only: sum over both height and width (dims 1 "
        "and 2 of the [B, H, W] map).",
    }
    require_shape(result, (batch,), what, hints, otherwise="One share per image: [B].")


def _require_one_call_per_batch(calls: list[MethodCall], images: torch.Tensor, targets: list[int], what: str) -> None:
    """One call of ``method`` on the whole batch, asking for the requested classes."""
    if not calls:
        fail(f"{what} never called `method`: compute the maps with method(model, images, target=target).")
    if any(call.target is None for call in calls):
        fail(
            f"{what} called `method` without a target: it then explains each image's PREDICTED "
            "class. Pass the requested class on: method(model, images, target=target)."
        )
    if len(calls) > 1:
        fail(
            f"{what} called `method` {len(calls)} times (on batches of {[c.batch_size for c in calls]}) "
            f"for {len(images)} images: every method of the course takes a batch [B, 3, H, W] and a "
            "target per image, so call it ONCE on all the images."
        )
    if calls[0].target != targets:
        fail(f"{what} asked `method` for classes {calls[0].target}, expected the targets {targets}.")


def _run_mark_share(
    student_fn: MarkShareFn, model: nn.Module, images: torch.Tensor, masks: torch.Tensor,
    method: Callable, target: Target, tol: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's shares and the reference's for one case, after failing with the likely
    mistake when they differ."""
    what = "mark_share"
    case = f"images {tuple(images.shape)}, target={target!r}"
    targets = as_target_list(target, len(images))
    given_masks = masks.clone()
    recorders: list[MethodCalls] = []

    def call(m: nn.Module, x: torch.Tensor, t: Target) -> torch.Tensor:
        recorders.append(MethodCalls(method))  # a fresh record for each of the two calls
        return student_fn(m, x, given_masks, recorders[-1], t)

    got = run_student_twice(call, model, images, target, what, case)
    if not torch.equal(given_masks, masks):
        fail(f"{what} changed the masks it was given: work on a copy (or use them as they are).")
    _require_one_call_per_batch(recorders[-1].calls, images, targets, what)
    _require_share_shape(got, images, what)
    expected = mask_share(method(model, images, target=targets), masks)
    got = got.to(expected.dtype)
    if not close(got, expected, tol):  # each mistake costs a map: only on failure
        diagnose(got, expected, _mark_share_mistakes(model, images, masks, method, targets), f"{what} with {case}", tol)
    return got, expected


def _shares(shares: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in shares.tolist()) + "]"


@exercise_check
def check_mark_share(
    student_fn: MarkShareFn,
    model: nn.Module | None = None,
    images: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
    method: Callable[..., torch.Tensor] | None = None,
    target: Target | None = None,
    seed: int = 0,
    tol: float = 1e-5,
) -> None:
    """Check ``mark_share(model, images, masks, method, target) -> [B]`` against
    :func:`saliencylab.metrics.mask_share` of ``method``'s maps.

    Without arguments: a small CNN (5 classes), three ``[3, 10, 14]`` images with a rectangle
    each as the mask, the signed gradient :data:`SIGNED_GRADIENT` as the method, a class per
    image that the model does not predict, then one int for every image, then a batch of one.
    ``model``, ``images``, ``masks`` (bool ``[B, H, W]``), ``method`` and ``target`` give other
    inputs (all of ``model``, ``images`` and ``masks`` together); ``seed`` other default ones.
    """
    if not ((model is None) == (images is None) == (masks is None)):
        raise ValueError("give model=, images= and masks= together (and optionally method=, target=), or none")
    model = fixed_occlusion_model(seed + 7) if model is None else model
    images = smooth_random_images(len(MASK_BOXES), IMAGE_SIZE, seed + 11) if images is None else images
    masks = fixed_masks() if masks is None else masks
    method = SIGNED_GRADIENT if method is None else method
    per_image = non_predicted_targets(model, images) if target is None else as_target_list(target, len(images))
    cases: list[tuple[torch.Tensor, torch.Tensor, Target]] = [(images, masks, per_image)]
    if target is None:
        cases.append((images, masks, per_image[0]))
    cases += [(batch, masks[: len(batch)], per_image[: len(batch)]) for batch in image_batches_to_try(images)[1:]]
    lines = []
    for case_images, case_masks, case_target in cases:
        got, expected = _run_mark_share(student_fn, model, case_images, case_masks, method, case_target, tol)
        lines.append(f"images {tuple(case_images.shape)}, target={case_target!r}: expected {_shares(expected)}, "
                     f"got {_shares(got)}")
    passed("one call of `method` per batch, with the requested classes\n  " + "\n  ".join(lines))
