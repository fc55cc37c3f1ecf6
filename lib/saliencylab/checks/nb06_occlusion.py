"""Checks for notebook 06_occlusion:
``occlusion_map(model, image, target, window, stride, baseline, batch_size) -> [H, W]``.

The check wraps the model in a recorder that counts forward passes, their batch sizes and
whether autograd was on, runs the student's function on a small seeded CNN and a non-square
image, compares with the library's ``occlusion`` on the same settings and, when the maps
differ, recomputes what each usual mistake would give from the same window scores to name it.

Window positions: ``0, stride, 2*stride, ...`` while the window fits (``y + window <= H``).
The check only uses settings where ``stride`` divides ``H - window`` (and ``W - window``),
so every pixel is covered and this rule and the library's give the same windows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from saliencylab._core import batch_slices, select_logits
from saliencylab.attribution.occlusion import occlusion
from saliencylab.checks._common import close, diagnose, fail, passed, require_shape, require_tensor
from saliencylab.checks._integrity import exercise_check
from saliencylab.checks._running import Batching, require_batched
from saliencylab.checks._promises import Promises, batch_sizes_to_try
from saliencylab.checks._fixtures import ForwardCall, ForwardRecorder, fixed_occlusion_model, smooth_random_images

__all__ = ["check_occlusion_map"]

OcclusionFn = Callable[[nn.Module, torch.Tensor, int, int, int, float, int], torch.Tensor]

# read from the exercise's docstring (tests/test_promises.py): batch_size = at most this many images
PROMISES = {"occlusion_map": Promises(chunked_by_batch_size=True)}
# one pass more than the windows need: the clean image's, that the drops are measured from
OCCLUDED_IMAGES = Batching(item="occluded image", items="occluded images", count="len(windows)",
                           extra_passes=1, exact_total=False, gradients=False)

NUM_CLASSES = 5
IMAGE_SIZE = (20, 28)  # non-square: a swapped (H, W) shows up; 4 x 6 window positions below
FIXED_TARGET = 3
_MISTAKE_BATCH_SIZE = 8  # occluded copies per forward pass when recomputing the mistakes




def fixed_occlusion_image(seed: int = 8) -> torch.Tensor:
    """One image ``[3, 20, 28]`` in ``[0, 1]``."""
    return smooth_random_images(1, IMAGE_SIZE, seed)[0]


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start of every window along one axis: ``0, stride, ...`` while ``start + window <= size``."""
    return list(range(0, size - window + 1, stride))


def window_corners(image: torch.Tensor, window: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corner ``(y, x)`` of every window on an image ``[..., H, W]``, row by row."""
    height, width = image.shape[-2:]
    rows, cols = window_starts(height, window, stride), window_starts(width, window, stride)
    return [(y, x) for y in rows for x in cols]


@exercise_check
def check_occlusion_map(
    student_fn: OcclusionFn,
    model: nn.Module | None = None,
    image: torch.Tensor | None = None,
    target: int = FIXED_TARGET,
    window: int = 8,
    stride: int = 4,
    baseline: float = 0.5,
    batch_size: int = 5,
    tol: float = 1e-4,
) -> None:
    """Check the student's ``occlusion_map`` (``student_fn``) against the library's ``occlusion`` and name the likely mistake.

    Without arguments: :func:`fixed_occlusion_model` on a ``[3, 20, 28]`` image, target 3,
    window 8, stride 4 (4 x 6 = 24 windows), grey baseline 0.5, batches of 5. ``stride`` must
    divide ``H - window`` and ``W - window``.
    """
    model = fixed_occlusion_model() if model is None else model
    image = fixed_occlusion_image() if image is None else image
    height, width = image.shape[-2:]
    if (height - window) % stride or (width - window) % stride:
        raise ValueError(
            f"check_occlusion_map needs stride ({stride}) to divide H - window ({height - window}) "
            f"and W - window ({width - window}), so every pixel is covered"
        )
    what = "occlusion_map(model, image, target, window, stride, baseline, batch_size)"
    expected = occlusion(model, image, target, window=window, stride=stride, baseline=baseline)
    num_windows = len(window_corners(image, window, stride))
    other_sizes = batch_sizes_to_try(num_windows, batch_size)[1:]
    calls, got = _run_and_compare(student_fn, model, image, target, window, stride, baseline,
                                  batch_size, expected, tol, what)
    for size in other_sizes:
        _run_and_compare(student_fn, model, image, target, window, stride, baseline, size, expected, tol, what)
    passed(
        f"map of shape {tuple(got.shape)} from {num_windows} windows in {len(calls)} "
        f"forward passes of at most {batch_size} images (batch_size "
        f"{' and '.join(map(str, other_sizes))} give the same map); expected min/mean/max "
        f"{_summary(expected)}, got {_summary(got)}",
    )


def _run_and_compare(
    student_fn: OcclusionFn, model: nn.Module, image: torch.Tensor, target: int, window: int,
    stride: int, baseline: float, batch_size: int, expected: torch.Tensor, tol: float, what: str,
) -> tuple[list[ForwardCall], torch.Tensor]:
    """The forward passes the student's function made and its map ``[H, W]``, after failing
    with the likely mistake if the map differs from ``expected`` or the passes break the
    batching rule."""
    recorder = ForwardRecorder(model)
    got = student_fn(recorder, image.clone(), target, window, stride, baseline, batch_size)
    got = require_tensor(got, what)
    _require_map_shape(got, image, what)
    got = got.detach().clone()
    if torch.isnan(got).any():
        _explain_nan(got, window, stride, what)
    if not close(got, expected, tol):
        mistakes = _occlusion_map_mistakes(model, image, target, window, stride, baseline)
        diagnose(got, expected, mistakes, f"{what} with batch_size={batch_size}", tol)
    calls = recorder.calls
    require_batched([c.batch_size for c in calls], len(window_corners(image, window, stride)), batch_size, what,
                    OCCLUDED_IMAGES, autograd_on=any(c.grad_enabled or c.output_requires_grad for c in calls))
    return calls, got


def _summary(values: torch.Tensor) -> str:
    numbers = (values.min(), values.mean(), values.max())
    return "/".join(f"{v.item():.4f}" for v in numbers)


def _require_map_shape(got: torch.Tensor, image: torch.Tensor, what: str) -> None:
    height, width = image.shape[-2:]
    hints = {
        (width, height): "Height and width are swapped: image.shape[-2:] is (H, W).",
        (1, height, width): "Return the map of the one image, [H, W] (drop the batch dimension).",
        (3, height, width): "Occlusion gives one value per pixel, not per colour channel: [H, W].",
    }
    require_shape(got, (height, width), what, hints, otherwise="Return one value per pixel, [H, W]: credit "
                  "each window's drop to the pixels it covers, so the map has the image's size.")


def _explain_nan(got: torch.Tensor, window: int, stride: int, what: str) -> None:
    height, width = got.shape
    rows, cols = torch.isnan(got).nonzero(as_tuple=True)
    if bool(((rows >= height - stride) | (cols >= width - stride)).all()):
        fail(
            f"{what} has NaN in its last rows/columns: no window covered them, and 0 / 0 = NaN. "
            "You probably missed the last window position that fits: window starts go up to "
            "H - window INCLUDED, range(0, H - window + 1, stride)."
        )
    fail(f"{what} contains NaN: did some pixel get no window (a division by a zero count)?")


@dataclass
class _WindowScores:
    """Logits of the clean image ``[C]`` and of each occluded copy ``[P, C]``."""

    clean: torch.Tensor
    occluded: torch.Tensor
    corners: list[tuple[int, int]]


def _window_scores(
    model: nn.Module, image: torch.Tensor, window: int, stride: int, baseline: float
) -> _WindowScores:
    corners = window_corners(image, window, stride)
    with torch.no_grad():
        clean = model(image[None])[0]
        occluded = [
            model(_occluded_copies(image, corners[part], window, baseline))
            for part in batch_slices(len(corners), _MISTAKE_BATCH_SIZE)
        ]
    return _WindowScores(clean, torch.cat(occluded), corners)


def _occluded_copies(
    image: torch.Tensor, corners: list[tuple[int, int]], window: int, baseline: float
) -> torch.Tensor:
    """``[len(corners), 3, H, W]``: one copy of ``image`` per corner, its window set to ``baseline``."""
    copies = image.repeat(len(corners), 1, 1, 1)
    for copy, (y, x) in zip(copies, corners):
        copy[:, y : y + window, x : x + window] = baseline
    return copies


def _spread(
    values: torch.Tensor,
    corners: list[tuple[int, int]],
    window: int,
    size: torch.Size,
    average: bool = True,
) -> torch.Tensor:
    """Credit ``values[p]`` to the pixels under window ``p``: mean (or sum) per pixel, ``[H, W]``;
    pixels no window covers get 0."""
    total = values.new_zeros(size)
    count = values.new_zeros(size)
    for value, (y, x) in zip(values, corners):
        total[y : y + window, x : x + window] += value
        count[y : y + window, x : x + window] += 1
    return total / count.clamp(min=1) if average else total


def _occlusion_map_mistakes(
    model: nn.Module, image: torch.Tensor, target: int, window: int, stride: int, baseline: float
) -> dict[str, torch.Tensor]:
    """What each usual mistake gives on these inputs (explanation -> map ``[H, W]``)."""
    size = image.shape[-2:]
    scores = _window_scores(model, image, window, stride, baseline)

    def drop_map(
        logits: _WindowScores, score: Callable[[torch.Tensor], torch.Tensor], average: bool = True
    ) -> torch.Tensor:
        drops = score(logits.clean[None]) - score(logits.occluded)
        return _spread(drops, logits.corners, window, size, average)

    def logit(logits: torch.Tensor, cls: int = target) -> torch.Tensor:
        classes = torch.full((len(logits),), cls, dtype=torch.long, device=logits.device)
        return select_logits(logits, classes)

    expected = drop_map(scores, logit)
    last_row, last_col = max(y for y, _ in scores.corners), max(x for _, x in scores.corners)
    keep = [i for i, (y, x) in enumerate(scores.corners) if y < last_row and x < last_col]
    without_last = _WindowScores(scores.clean, scores.occluded[keep], [scores.corners[i] for i in keep])
    mistakes = {
        "you used softmax probabilities. Occlusion measures the drop of the target LOGIT "
        "(the model's raw output): probabilities saturate and mix in every other class.": drop_map(
            scores, lambda z: z.softmax(dim=-1)[..., target]
        ),
        "you used log-probabilities (log_softmax). Use the target logit itself.": drop_map(
            scores, lambda z: z.log_softmax(dim=-1)[..., target]
        ),
        "the sign is flipped: you computed occluded score - clean score. The map is the DROP, "
        "f(image) - f(occluded image), positive where hiding the region hurts the "
        "class.": -expected,
        "you recorded the occluded image's score instead of the drop: subtract it from the "
        "clean image's score, f(image) - f(occluded).": _spread(
            logit(scores.occluded), scores.corners, window, size
        ),
        "you summed the drops of overlapping windows instead of averaging them: divide each "
        "pixel's total by the number of windows that cover it.": drop_map(
            scores, logit, average=False
        ),
        "you missed the last window position that fits (an off-by-one): window starts go up "
        "to H - window INCLUDED, range(0, H - window + 1, stride).": drop_map(without_last, logit),
    }
    predicted = int(scores.clean.argmax())
    if predicted != target:
        mistakes[
            f"you explained the predicted class {predicted} instead of the requested target "
            f"{target}: use the `target` argument, never the argmax."
        ] = drop_map(scores, lambda z: logit(z, predicted))
    if baseline != 0:
        mistakes[
            f"you filled the window with 0 (black) instead of `baseline` ({baseline})."
        ] = drop_map(_window_scores(model, image, window, stride, 0.0), logit)
    return mistakes


