"""Checks for notebook 11 (faithfulness and localisation: deletion, insertion, the pointing game).

``check_deletion_scores`` checks
``deletion_scores(model, image, saliency_map, target, steps, baseline, batch_size) -> [steps + 1]``
against ``saliencylab.metrics.deletion_curve`` (Petsiuk et al. 2018; softmax probability of the
target, most salient pixels first) and names the usual slips (increasing order, logits, a
missing 0 % or 100 % point, |map|, rounding, not cumulative, not batched, autograd on).
(The exercise was exercise 2 of notebook 10 before that lesson was split.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from saliencylab.checks._common import close, diagnose, fail, passed, require_shape, require_tensor
from saliencylab.checks._integrity import exercise_check
from saliencylab.checks._running import Batching, require_batched
from saliencylab.checks._promises import Promises, batch_sizes_to_try
from saliencylab.checks._fixtures import ForwardCall, ForwardRecorder, fixed_occlusion_model, smooth_random_images
from saliencylab.metrics import auc, deletion_curve

__all__ = [
    "DELETION_IMAGE_SIZE",
    "check_deletion_scores",
]

DeletionFn = Callable[..., torch.Tensor]

# read from the exercise's docstring (tests/test_promises.py): deletion_scores' batch_size = at
# most this many images
PROMISES = {
    "deletion_scores": Promises(chunked_by_batch_size=True),
}

# one pass more than the curve needs: e.g. on the untouched image
PERTURBED_IMAGES = Batching(item="perturbed image", items="perturbed images", count="len(perturbed)",
                            extra_passes=1, exact_total=False, gradients=False)

DELETION_IMAGE_SIZE = (9, 13)  # 117 pixels: k * 117 / 10 is not a whole number, so floor != round


# ------------------------------------------------------------------------ deletion curve


def _deletion_image(seed: int) -> torch.Tensor:
    return smooth_random_images(1, DELETION_IMAGE_SIZE, seed + 5)[0]


def _signed_map(seed: int, size: Sequence[int]) -> torch.Tensor:
    """A signed ``[H, W]`` map without ties: ranking by |map| differs from ranking by map."""
    return torch.randn(*size, generator=torch.Generator().manual_seed(seed + 7))


def _probabilities(model: nn.Module, images: torch.Tensor, target: int, score: str = "prob") -> torch.Tensor:
    with torch.no_grad():
        logits = model(images)
    if score == "logit":
        return logits[:, target]
    probabilities = logits.softmax(dim=1)
    return probabilities.amax(dim=1) if score == "top" else probabilities[:, target]


def _ranks(saliency_map: torch.Tensor) -> torch.Tensor:
    """``[H*W]``: position of each pixel in decreasing-saliency order (0 = most salient)."""
    order = torch.argsort(saliency_map.flatten(), descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel())
    return ranks


def _curve_from_masks(
    model: nn.Module, image: torch.Tensor, masks: torch.Tensor, baseline: float, target: int, score: str = "prob"
) -> torch.Tensor:
    """Scores of ``image`` with ``masks [K, H*W]`` (True = deleted) set to ``baseline``, ``[K]``."""
    deleted = masks.view(-1, 1, *image.shape[-2:])
    return _probabilities(model, torch.where(deleted, torch.tensor(baseline, dtype=image.dtype), image), target, score)


def _deletion_scores_mistakes(
    model: nn.Module, image: torch.Tensor, saliency_map: torch.Tensor, target: int, steps: int, baseline: float
) -> dict[str, torch.Tensor]:
    ranks = _ranks(saliency_map)
    pixels = ranks.numel()
    floor_counts = torch.arange(steps + 1) * pixels // steps
    cumulative = ranks[None] < floor_counts[:, None]  # [steps + 1, H*W]
    round_counts = torch.round(torch.arange(steps + 1) * pixels / steps).long()
    chunk = (ranks[None] >= torch.cat([floor_counts[:1], floor_counts[:-1]])[:, None]) & cumulative

    def curve(**options: object) -> torch.Tensor:
        return deletion_curve(model, image, saliency_map, target, steps=steps, baseline=baseline, **options)

    mistakes = {
        "you deleted the LEAST salient pixels first (increasing order). Deletion removes the "
        "pixels the map ranks highest first: sort with descending=True.": deletion_curve(
            model, image, -saliency_map, target, steps=steps, baseline=baseline),
        "you tracked the target LOGIT. The deletion curve (Petsiuk et al., and "
        "saliencylab.metrics.deletion_curve) tracks the softmax PROBABILITY of the target, "
        "which lies in [0, 1], so that areas under the curve compare across images.": curve(score="logit"),
        "you ranked the pixels by |map|. The map says how important each pixel is, larger = "
        "more important, and it may be signed: rank by the values as given (take abs() only if "
        "the method itself does, before calling).": deletion_curve(
            model, image, saliency_map.abs(), target, steps=steps, baseline=baseline),
        "the number of deleted pixels is rounded: at step k delete the first "
        "k * H * W // steps pixels (floor), as saliencylab does.": _curve_from_masks(
            model, image, ranks[None] < round_counts[:, None], baseline, target),
        "the deletion is not cumulative: at step k ALL of the first floor(k * H * W / steps) "
        "pixels must be deleted, not only the ones added at step k.": _curve_from_masks(
            model, image, chunk, baseline, target),
        "you tracked the probability of each perturbed image's TOP class. The curve follows "
        "one class, `target`, all the way down.": _curve_from_masks(
            model, image, cumulative, baseline, target, score="top"),
    }
    if baseline != 0:
        mistakes[
            f"deleted pixels were set to 0 instead of `baseline` ({baseline})."
        ] = deletion_curve(model, image, saliency_map, target, steps=steps, baseline=0.0)
    with torch.no_grad():
        predicted = int(model(image[None])[0].argmax())
    if predicted != target:
        mistakes[
            f"you tracked the predicted class {predicted} instead of the requested target {target}."
        ] = deletion_curve(model, image, saliency_map, predicted, steps=steps, baseline=baseline)
    return mistakes


def _require_curve_shape(got: torch.Tensor, expected: torch.Tensor, steps: int, what: str) -> None:
    shape = tuple(got.shape)
    if shape == (steps,):
        if close(got, expected[1:]):
            hint = "The 0 % point is missing: the curve starts with the untouched image (k = 0)."
        elif close(got, expected[:-1]):
            hint = "The 100 % point is missing: the curve ends with every pixel deleted (k = steps)."
        else:
            hint = "Include both ends: k = 0 (untouched image) to k = steps (all pixels deleted)."
    elif shape == (1, steps + 1):
        hint = "Return the curve of the one image, [steps + 1] (drop the batch dimension)."
    elif shape == (steps + 2,):
        hint = "One point too many: k runs from 0 to steps, both included, range(steps + 1)."
    else:
        hint = "One score per step k = 0, 1, ..., steps."
    require_shape(got, (steps + 1,), what, hint)


@exercise_check
def check_deletion_scores(
    student_fn: DeletionFn,
    *,
    seed: int = 0,
    steps: int = 10,
    baseline: float = 0.3,
    batch_size: int = 4,
    target: int | None = None,
    model: nn.Module | None = None,
    image: torch.Tensor | None = None,
    saliency_map: torch.Tensor | None = None,
    tol: float = 1e-4,
) -> None:
    """Check ``deletion_scores(model, image, saliency_map, target, steps, baseline, batch_size)``.

    Without arguments: a small CNN (5 classes, parameters that require grad), a ``[3, 9, 13]``
    image, a signed ``[9, 13]`` map without ties, a target the model does not predict, 10 steps
    (117 pixels, so rounding shows), grey-ish baseline 0.3, batches of at most 4. ``model``,
    ``image`` ``[3, H, W]``, ``saliency_map`` ``[H, W]``, ``target``, ``steps``, ``baseline``
    and ``batch_size`` give other inputs.
    """
    model = fixed_occlusion_model(seed + 7) if model is None else model
    image = _deletion_image(seed) if image is None else image
    saliency_map = _signed_map(seed, image.shape[-2:]) if saliency_map is None else saliency_map
    if target is None:
        with torch.no_grad():
            logits = model(image[None])[0]
        target = int(logits.argsort()[len(logits) // 2])
    expected = deletion_curve(model, image, saliency_map, target, steps=steps, baseline=baseline)
    calls, got = _run_deletion(student_fn, model, image, saliency_map, target, steps, baseline, batch_size, expected, tol)
    other_sizes = batch_sizes_to_try(steps + 1, batch_size)[1:]
    for size in other_sizes:
        _run_deletion(student_fn, model, image, saliency_map, target, steps, baseline, size, expected, tol)
    passed(
        f"{steps + 1} scores in {len(calls)} forward passes of at most {batch_size} images (batch_size "
        f"{' and '.join(map(str, other_sizes))} give the same scores); expected {_ends(expected)}, "
        f"got {_ends(got)}",
    )


def _run_deletion(
    student_fn: DeletionFn, model: nn.Module, image: torch.Tensor, saliency_map: torch.Tensor,
    target: int, steps: int, baseline: float, batch_size: int, expected: torch.Tensor, tol: float,
) -> tuple[list[ForwardCall], torch.Tensor]:
    """The forward passes the student's function made and its scores ``[steps + 1]``, after
    failing with the likely mistake if they differ from ``expected``."""
    what = "deletion_scores(model, image, saliency_map, target, steps, baseline, batch_size)"
    recorder = ForwardRecorder(model).train(model.training)  # the wrapper mirrors the model's mode
    image_given, map_given = image.clone(), saliency_map.clone()
    got = student_fn(recorder, image_given, map_given, target, steps=steps, baseline=baseline, batch_size=batch_size)
    if not torch.equal(image_given, image):
        fail(
            f"{what} changed the image it was given (pixels set to the baseline in place): make "
            "new perturbed images (torch.where, or image.clone()) and leave the caller's image alone."
        )
    if not torch.equal(map_given, saliency_map):
        fail(f"{what} changed the saliency map it was given: sort a copy, never the caller's map.")
    got = require_tensor(got, "deletion_scores").detach()
    _require_curve_shape(got, expected, steps, what)
    got = got.to(expected.dtype)
    if not close(got, expected, tol):
        diagnose(got, expected, _deletion_scores_mistakes(model, image, saliency_map, target, steps, baseline),
                 f"{what} with batch_size={batch_size}", tol)
    require_batched([c.batch_size for c in recorder.calls], steps + 1, batch_size, "deletion_scores", PERTURBED_IMAGES,
                    autograd_on=any(c.grad_enabled or c.output_requires_grad for c in recorder.calls))
    return recorder.calls, got


def _ends(curve: torch.Tensor) -> str:
    return f"{curve[0].item():.4f} -> {curve[-1].item():.4f} (area {auc(curve):.4f})"
