"""Checks for notebook 09 (Integrated Gradients, Sundararajan, Taly & Yan 2017).

``check_integrated_gradients_map`` runs the student's
``integrated_gradients_map(model, image, target, baseline, steps, batch_size) -> [3, H, W]`` on a
tiny CNN wrapped in a recorder that keeps every batch of path points it is sent, compares the
attributions with ``saliencylab.attribution.integrated_gradients(method="riemann_middle")`` and,
when they differ, recomputes what each usual slip gives (no ``(x - x')`` factor, gradient x input
at the image only, left/right/linspace points instead of midpoints, a sum instead of a mean,
probabilities, the baseline ignored, ...) to name it. Then it checks the batching from the
recorded passes.

``check_completeness_error`` checks
``completeness_error(model, image, target, baseline, attributions) -> float``, the signed gap
``sum(attributions) - (f(x) - f(x'))`` for the target logit ``f``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from saliencylab._core import input_gradients
from saliencylab.attribution import integrated_gradients
from saliencylab.checks._common import (
    close,
    diagnose,
    fail,
    passed,
    require_shape,
    require_tensor,
    snapshot_side_effects,
)
from saliencylab.checks._integrity import exercise_check
from saliencylab.checks._running import Batching, require_batched
from saliencylab.checks._promises import Promises, batch_sizes_to_try
from saliencylab.checks._fixtures import RecordingModel, tiny_smooth_classifier

__all__ = ["check_completeness_error", "check_integrated_gradients_map", "fixed_ig_inputs"]

IntegratedGradientsFn = Callable[..., torch.Tensor]
CompletenessFn = Callable[..., object]

# read from integrated_gradients_map's docstring (tests/test_promises.py): batch_size = at most
# this many path points
PROMISES = {"integrated_gradients_map": Promises(chunked_by_batch_size=True)}
PATH_POINTS = Batching(item="path point", items="path points", count="steps")

IMAGE_SIZE = (9, 13)  # non-square, so a swapped (H, W) shows
NUM_CLASSES = 3


def fixed_ig_inputs(seed: int = 0, size: tuple[int, int] = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded image ``[3, H, W]`` in ``[0.3, 1]`` and a dark, non-constant baseline in
    ``[0, 0.25]``: a baseline that is not all zeros, so ignoring it changes the answer."""
    generator = torch.Generator().manual_seed(seed + 11)
    image = 0.3 + 0.7 * torch.rand(3, *size, generator=generator)
    baseline = 0.25 * torch.rand(3, *size, generator=generator)
    return image, baseline


def _other_target(model: nn.Module, image: torch.Tensor) -> int:
    """A class the model does NOT predict for ``image``, so explaining the argmax is caught."""
    with torch.no_grad():
        logits = model(image[None])[0]
    return int(logits.argsort()[len(logits) // 2])


def _score_gradients(model: nn.Module, points: torch.Tensor, target: int, probabilities: bool) -> torch.Tensor:
    """``d score / d point`` for each point ``[N, 3, H, W]``: the target logit, or its softmax probability."""
    targets = torch.full((points.shape[0],), target, dtype=torch.long)
    if not probabilities:
        return input_gradients(model, points, targets)
    inputs = points.detach().requires_grad_(True)
    with torch.enable_grad():
        score = model(inputs).softmax(dim=1)[:, target].sum()
        (gradients,) = torch.autograd.grad(score, inputs)
    return gradients


def _weighted_path_gradient(
    model: nn.Module,
    start: torch.Tensor,
    end: torch.Tensor,
    target: int,
    alphas: torch.Tensor,
    weight: float,
    probabilities: bool = False,
) -> torch.Tensor:
    """``weight * sum_k grad f(start + alpha_k (end - start))``, ``[3, H, W]``."""
    points = start + alphas.view(-1, 1, 1, 1) * (end - start)
    return weight * _score_gradients(model, points, target, probabilities).sum(dim=0)


def _midpoints(steps: int) -> torch.Tensor:
    return (torch.arange(steps, dtype=torch.float32) + 0.5) / steps


def _integrated_gradients_map_mistakes(
    model: nn.Module, image: torch.Tensor, baseline: torch.Tensor, target: int, steps: int
) -> dict[str, torch.Tensor]:
    """What each usual slip gives on these inputs (explanation -> attributions ``[3, H, W]``)."""
    difference = image - baseline
    middle = _weighted_path_gradient(model, baseline, image, target, _midpoints(steps), 1 / steps)
    at_image = _score_gradients(model, image[None], target, probabilities=False)[0]
    k = torch.arange(steps, dtype=torch.float32)
    mistakes = {
        "you forgot to multiply by (image - baseline): the average gradient along the path is "
        "only the integral; Integrated Gradients is (x - x') * that average, elementwise.": middle,
        "you multiplied by the image x instead of (x - x'). With a baseline that is not black "
        "the factor is the difference image - baseline.": image * middle,
        "the sign is reversed: multiply by (image - baseline), not (baseline - image); the "
        "attributions must add up to f(x) - f(x').": -difference * middle,
        "you used the gradient at the image only, times (x - x'): that is gradient x input, "
        "one point of the path. Average the gradients at the `steps` midpoints "
        "x' + alpha_k (x - x'), alpha_k = (k + 0.5) / steps.": difference * at_image,
        "you used the gradient at the image only, times the image: that is gradient x input "
        "(notebook 01). Average the gradients along the path from the baseline "
        "instead.": image * at_image,
        "your path points use the left rule, alpha_k = k / steps (k = 0 .. steps-1): the "
        "exercise asks for the midpoint rule, alpha_k = (k + 0.5) / steps.": difference
        * _weighted_path_gradient(model, baseline, image, target, k / steps, 1 / steps),
        "your path points use the right rule, alpha_k = (k + 1) / steps: the exercise asks "
        "for the midpoint rule, alpha_k = (k + 0.5) / steps.": difference
        * _weighted_path_gradient(model, baseline, image, target, (k + 1) / steps, 1 / steps),
        "your path points are torch.linspace(0, 1, steps), which includes both ends: use the "
        "midpoints alpha_k = (k + 0.5) / steps.": difference
        * _weighted_path_gradient(model, baseline, image, target, torch.linspace(0, 1, steps), 1 / steps),
        "you summed the gradients over the steps instead of averaging them (divide by `steps`: "
        "the integral over alpha in [0, 1] is the mean, not the sum).": steps * difference * middle,
        "you integrated the gradient of the softmax probability. Integrated Gradients (and "
        "its completeness check) uses the target LOGIT, model(points)[:, target].": difference
        * _weighted_path_gradient(model, baseline, image, target, _midpoints(steps), 1 / steps, True),
        "the baseline was ignored: these are the attributions for a black baseline (zeros). "
        "Walk from the given `baseline` to the image and multiply by (image - baseline).": image
        * _weighted_path_gradient(model, torch.zeros_like(image), image, target, _midpoints(steps), 1 / steps),
        "your path starts at black (zeros) instead of the given baseline: the points are "
        "baseline + alpha_k * (image - baseline).": difference
        * _weighted_path_gradient(model, torch.zeros_like(image), image, target, _midpoints(steps), 1 / steps),
    }
    with torch.no_grad():
        predicted = int(model(image[None]).argmax())
    if predicted != target:
        mistakes[
            f"you explained the predicted class {predicted} instead of the requested target "
            f"{target}: use the `target` argument, never the argmax."
        ] = difference * _weighted_path_gradient(model, baseline, image, predicted, _midpoints(steps), 1 / steps)
    return mistakes


def _require_attribution_shape(got: torch.Tensor, image: torch.Tensor, what: str) -> None:
    channels, height, width = image.shape
    hints = {
        (1, channels, height, width): "Return the attributions of the one image, [3, H, W] (drop the "
        "batch dimension).",
        (height, width): "Integrated Gradients keeps one signed value per pixel AND colour channel, "
        "[3, H, W]: do not reduce over the channels (completeness needs the signed sum of all of them).",
    }
    many = "It looks like one map per path point: average the gradients over the steps (sum over the " \
        "points of every batch, divide by steps)."
    require_shape(got, (channels, height, width), what, hints, otherwise=many if got.dim() == 4 else
                  "Return (image - baseline) * mean gradient, with the image's shape [3, H, W].")


@exercise_check
def check_integrated_gradients_map(
    student_fn: IntegratedGradientsFn,
    *,
    steps: int = 6,
    batch_size: int = 4,
    target: int | None = None,
    seed: int = 0,
    model: nn.Module | None = None,
    image: torch.Tensor | None = None,
    baseline: torch.Tensor | None = None,
    tol: float = 1e-4,
) -> None:
    """Check ``integrated_gradients_map(model, image, target, baseline, steps, batch_size)``.

    Without arguments: a tiny CNN (3 classes, parameters that require grad, so a
    ``.backward()`` is caught), a ``[3, 9, 13]`` image, a dark non-constant baseline, a target
    the model does not predict, 6 steps in batches of at most 4. ``model``, ``image`` ``[3, H,
    W]``, ``baseline`` (default: zeros for a given image), ``target``, ``steps`` and
    ``batch_size`` give other inputs. Fails naming the likely mistake; prints what it measured.
    """
    if model is None:
        model = tiny_smooth_classifier(seed, classes=NUM_CLASSES)
        model.requires_grad_(True)  # so that a score.backward() shows up in .grad
    if image is None:
        image, default_baseline = fixed_ig_inputs(seed)
        baseline = default_baseline if baseline is None else baseline
    elif baseline is None:
        baseline = torch.zeros_like(image)
    target = _other_target(model, image) if target is None else target
    expected = integrated_gradients(
        model, image, target, baseline=baseline, steps=steps, batch_size=batch_size, method="riemann_middle"
    )
    got, batches = _run_and_compare(student_fn, model, image, target, baseline, steps, batch_size, expected, tol)
    other_sizes = batch_sizes_to_try(steps, batch_size)[1:]
    for size in other_sizes:
        _run_and_compare(student_fn, model, image, target, baseline, steps, size, expected, tol)

    with torch.no_grad():
        logits = model(torch.stack([image, baseline]))[:, target]
    change = (logits[0] - logits[1]).item()
    sizes = [b.shape[0] for b in batches]
    passed(
        f"{len(sizes)} passes of {sizes} path points (steps={steps}, batch_size={batch_size}; "
        f"batch_size {' and '.join(map(str, other_sizes))} give the same attributions), "
        f"attributions {tuple(got.shape)} summing to {got.sum().item():.4f} (expected "
        f"{expected.sum().item():.4f}; f(x) - f(x') = {change:.4f})",
    )


def _run_and_compare(
    student_fn: IntegratedGradientsFn, model: nn.Module, image: torch.Tensor, target: int,
    baseline: torch.Tensor, steps: int, batch_size: int, expected: torch.Tensor, tol: float,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The student's attributions ``[3, H, W]`` and the path batches it sent through the model,
    after failing with the likely mistake if they differ from ``expected``."""
    what = "integrated_gradients_map's result"
    recorder = RecordingModel(model).train(model.training)  # the wrapper mirrors the model's mode
    verify = snapshot_side_effects(recorder)
    image_given, baseline_given = image.clone(), baseline.clone()
    got = student_fn(recorder, image_given, target, baseline_given, steps=steps, batch_size=batch_size)
    verify("integrated_gradients_map")
    if not (torch.equal(image_given, image) and torch.equal(baseline_given, baseline)):
        fail(
            "integrated_gradients_map changed the image or the baseline it was given (an in-place "
            "operation such as +=, mul_ or requires_grad_ on the caller's tensor): build new "
            "tensors for the path points."
        )
    got = require_tensor(got, "integrated_gradients_map").detach()
    _require_attribution_shape(got, image, what)
    if not close(got, expected, tol):
        diagnose(got, expected, _integrated_gradients_map_mistakes(model, image, baseline, target, steps),
                 f"{what} with batch_size={batch_size}", tol)
    require_batched([b.shape[0] for b in recorder.batches], steps, batch_size, "integrated_gradients_map", PATH_POINTS)
    return got, recorder.batches


# --------------------------------------------------------------------------- completeness


def _as_number(result: object, what: str) -> float:
    if result is None:
        fail(f"{what} returned None: did you forget the `return` statement?")
    if isinstance(result, torch.Tensor):
        if result.numel() != 1:
            fail(
                f"{what} returned a tensor of shape {tuple(result.shape)}: it must be ONE number, "
                "the gap between the sum of ALL attributions and f(x) - f(x'). Sum over every "
                "entry (attributions.sum()) and return float(...)."
            )
        return float(result.detach())
    if isinstance(result, bool) or not isinstance(result, (int, float)):
        fail(f"{what} must return a number (a float), got {type(result).__name__}.")
    return float(result)


def _completeness_error_mistakes(
    model: nn.Module,
    image: torch.Tensor,
    baseline: torch.Tensor,
    target: int,
    attributions: torch.Tensor,
    sign_already_tested: bool,
) -> dict[str, float]:
    with torch.no_grad():
        logits = model(torch.stack([image, baseline]))
    probabilities = logits.softmax(dim=1)
    total = attributions.sum().item()
    f_x, f_b = logits[0, target].item(), logits[1, target].item()
    p_x, p_b = probabilities[0, target].item(), probabilities[1, target].item()
    expected = total - (f_x - f_b)
    mistakes = {
        "you compared with softmax probabilities. Completeness holds for the function whose "
        "gradients were integrated: the target LOGIT, model(images)[:, target].": total - (p_x - p_b),
        "you forgot f(baseline): the attributions add up to the CHANGE f(x) - f(x'), not to "
        "f(x) alone.": total - f_x,
        "the difference is the wrong way round: use f(image) - f(baseline) (the path goes from "
        "the baseline to the image).": total - (f_b - f_x),
        "the sign of the error is reversed: return sum(attributions) - (f(x) - f(x')), "
        "positive when the attributions add up to too much.": -expected,
        "you returned a relative error (divided by f(x) - f(x')): return the gap itself, in "
        "logit units.": expected / (f_x - f_b),
        "you summed |attributions|: completeness is about the SIGNED sum (positive and "
        "negative evidence cancel).": attributions.abs().sum().item() - (f_x - f_b),
    }
    absolute = {
        "you returned the absolute value of the error: keep the sign, sum(attributions) - "
        "(f(x) - f(x')), negative here (take abs() only when you print or compare "
        "sizes).": abs(expected)
    }
    # With a negative error, |error| and the reversed sign give the same number; the first case
    # has a positive error and tells them apart, so a later case names the absolute value.
    mistakes = {**absolute, **mistakes} if sign_already_tested else {**mistakes, **absolute}
    predicted = int(logits[0].argmax())
    if predicted != target:
        mistakes[
            f"you used the predicted class {predicted} instead of the requested target {target}."
        ] = total - (logits[0, predicted] - logits[1, predicted]).item()
    return mistakes


@exercise_check
def check_completeness_error(
    student_fn: CompletenessFn,
    *,
    seed: int = 0,
    model: nn.Module | None = None,
    image: torch.Tensor | None = None,
    baseline: torch.Tensor | None = None,
    target: int | None = None,
    attributions: torch.Tensor | None = None,
    tol: float = 1e-4,
) -> None:
    """Check ``completeness_error(model, image, target, baseline, attributions) -> float``.

    Without arguments: the tiny CNN of :func:`check_integrated_gradients_map`, its image and
    baseline, and two sets of attributions (Integrated Gradients with 4 steps, whose error is
    small, and the same scaled by 1.5, whose error is large and of the other sign), so the sign
    and the absolute value are both tested. Given ``attributions``, only those are used.
    """
    model = tiny_smooth_classifier(seed, classes=NUM_CLASSES) if model is None else model
    if image is None:
        image, default_baseline = fixed_ig_inputs(seed)
        baseline = default_baseline if baseline is None else baseline
    elif baseline is None:
        baseline = torch.zeros_like(image)
    target = _other_target(model, image) if target is None else target
    change = _logit_change(model, image, baseline, target)
    if attributions is None:
        ig = integrated_gradients(model, image, target, baseline=baseline, steps=4)
        # errors of opposite signs (about +/- half the change), the positive one first
        cases = sorted([ig * 0.5, ig * 1.5], key=lambda a: change - a.sum().item())
    else:
        cases = [attributions]

    what = "completeness_error(model, image, target, baseline, attributions)"
    reports = []
    sign_tested = False  # has a case with a positive error passed?
    for case in cases:
        got = _as_number(student_fn(model, image.clone(), target, baseline.clone(), case.clone()), what)
        expected = case.sum().item() - change
        mistakes = _completeness_error_mistakes(model, image, baseline, target, case, sign_tested)
        if math.isnan(got):
            fail(f"{what} returned NaN.")
        diagnose(
            torch.tensor([got], dtype=torch.float64),
            torch.tensor([expected], dtype=torch.float64),
            {text: torch.tensor([value], dtype=torch.float64) for text, value in mistakes.items()},
            what,
            tol,
        )
        reports.append(f"expected {expected:+.4f}, got {got:+.4f}")
        sign_tested = sign_tested or expected > 0
    passed("; ".join(reports))


def _logit_change(model: nn.Module, image: torch.Tensor, baseline: torch.Tensor, target: int) -> float:
    with torch.no_grad():
        logits = model(torch.stack([image, baseline]))[:, target]
    return (logits[0] - logits[1]).item()
