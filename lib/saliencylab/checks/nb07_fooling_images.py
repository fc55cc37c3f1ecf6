"""Checks of notebook 07 (fooling images, Szegedy et al. 2014): one ascent step and the attack loop.

``fooling_step(model, image, target, step_size)`` moves ``image [1, 3, H, W]`` by ``step_size``
along the normalised gradient of the target *logit* and clamps to ``[0, 1]``;
``make_fooling_image(model, image, target, step_size, max_steps, step_fn)`` repeats a step until
the model predicts ``target`` (checking before every step) and returns ``(image, steps_taken)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from saliencylab._core import input_gradients
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
from saliencylab.checks._fixtures import image_with_extremes, tiny_cnn
from saliencylab.checks._running import gradient_of, require_detached, require_untouched_input

__all__ = ["check_fooling_step", "check_make_fooling_image"]

StepFn = Callable[[nn.Module, torch.Tensor, int, float], torch.Tensor]


def reference_fooling_step(model: nn.Module, image: torch.Tensor, target: int, step_size: float) -> torch.Tensor:
    """``image [1, 3, H, W]`` -> ``clamp(image + step_size * g / ||g||, 0, 1)``, g = d logit_target / d image."""
    targets = torch.full((image.shape[0],), int(target), dtype=torch.long, device=image.device)
    return _normalized_ascent(image, input_gradients(model, image, targets), step_size).clamp(0, 1)


def predicted_class(model: nn.Module, image: torch.Tensor) -> int:
    """The model's top class for a single ``[1, 3, H, W]`` image."""
    with torch.no_grad():
        return int(model(image).argmax(dim=1)[0])


def reference_fooling_loop(
    model: nn.Module, image: torch.Tensor, target: int, step_size: float, max_steps: int, step_fn: StepFn
) -> tuple[torch.Tensor, int]:
    """Step until ``model`` predicts ``target`` (checked before each step) or ``max_steps`` steps were taken."""
    fooled = image.detach().clone()
    for steps in range(max_steps):
        if predicted_class(model, fooled) == target:
            return fooled, steps
        fooled = step_fn(model, fooled, target, step_size)
    return fooled, max_steps


def _normalized_ascent(image: torch.Tensor, grad: torch.Tensor, step_size: float) -> torch.Tensor:
    norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return image.detach() + step_size * grad / norms



# ------------------------------------------------------------------ fixed inputs of the checks



def _path_model() -> nn.Module:
    """A linear 3-class model on ``[N, 3, 2, 2]`` whose logits along the ascent path of class 2,
    starting at a grey image, go: class 0 first, then class 1 (after 7 steps of 0.025), then
    class 2 (after 11). It tells 'stopped when the class changed' from 'stopped at the target'."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0, 1] = 10.0  # class 0: orthogonal to the path
        model[1].weight[1, 0] = 6.0  # class 1: rises at 60% of the target's pace
        model[1].weight[2, 0] = 10.0  # class 2 (the target): the path's direction
        grey = torch.full((12,), 0.5)
        model[1].bias.copy_(torch.tensor([2.0, 1.05, 0.0]) - model[1].weight @ grey)
    return model.eval()


# ------------------------------------------------------------------ check: one step


@exercise_check
def check_fooling_step(
    student_fn: StepFn,
    model: nn.Module | None = None,
    image: torch.Tensor | None = None,
    target: int = 3,
    step_size: float = 0.5,
) -> None:
    """Run ``student_fn(model, image, target, step_size)`` once and compare with the reference step.

    Defaults: a tiny random CNN (5 classes, parameters that require grad) and a ``[1, 3, 6, 6]`` image.
    """
    model = tiny_cnn() if model is None else model
    image = image_with_extremes() if image is None else image
    what = "fooling_step"
    original = image.clone()
    verify_side_effects = snapshot_side_effects(model)
    got = require_tensor(student_fn(model, image, target, step_size), what)
    verify_side_effects(what)
    require_untouched_input(image, original, what)
    require_shape(got, original.shape, what, "Return the new image, the same shape as the input.")
    require_detached(got, what)
    expected = reference_fooling_step(model, original, target, step_size)
    diagnose(got, expected, _fooling_step_mistakes(model, original, target, step_size), what)
    _print_step_summary(model, original, got, expected, target, step_size)



def _fooling_step_mistakes(model: nn.Module, image: torch.Tensor, target: int, step_size: float) -> dict[str, torch.Tensor]:
    logit_grad = gradient_of(model, image, lambda logits: logits[:, target].sum())
    prob_grad = gradient_of(model, image, lambda logits: logits.softmax(dim=1)[:, target].sum())
    loss_grad = gradient_of(
        model, image, lambda logits: F.cross_entropy(logits, torch.tensor([target] * len(logits)))
    )
    predicted = predicted_class(model, image)
    predicted_grad = gradient_of(model, image, lambda logits: logits[:, predicted].sum())
    return {
        "it moves *down* the gradient (image - step), which lowers the target's score. Fooling is "
        "gradient *ascent*: image + step_size * g / ||g||.": _normalized_ascent(image, -logit_grad, step_size).clamp(0, 1),
        "the step is step_size * g, not normalised. Divide the gradient by its L2 norm "
        "(g / g.norm()) so that every step has length step_size, whatever the scale of the logits.": (
            image + step_size * logit_grad
        ).clamp(0, 1),
        "some pixels leave [0, 1]: clamp the new image with .clamp(0, 1) so it stays a valid "
        "image.": _normalized_ascent(image, logit_grad, step_size),
        "it follows the gradient of the softmax probability (or log-probability) of the target. "
        "Use the raw logit model(x)[0, target]: the softmax couples all classes (part of the step "
        "goes into pushing the others down) and the probability's gradient vanishes once the "
        "model is confident.": _normalized_ascent(image, prob_grad, step_size).clamp(0, 1),
        "it *increases* the cross-entropy loss of the target, which pushes the image away from the "
        "target class. Ascend on the target logit (or descend on the loss).": _normalized_ascent(
            image, loss_grad, step_size
        ).clamp(0, 1),
        f"it follows the gradient of the predicted class ({predicted}), not of the target "
        f"({target}). Use model(x)[0, target].": _normalized_ascent(image, predicted_grad, step_size).clamp(0, 1),
    }


def _print_step_summary(
    model: nn.Module, image: torch.Tensor, got: torch.Tensor, expected: torch.Tensor, target: int, step_size: float
) -> None:
    with torch.no_grad():
        before, after, ref_after = (model(x)[0, target].item() for x in (image, got, expected))
    moved = (got - image).norm().item()
    passed(
        f"target logit {before:.3f} -> {after:.3f} (expected {ref_after:.3f}); moved the image by "
        f"||delta|| = {moved:.3f} (step_size {step_size}, less where clamping cut it); pixels in "
        f"[{got.min().item():.2f}, {got.max().item():.2f}].",
    )


# ------------------------------------------------------------------ check: the attack loop


class _RecordingStep:
    """The reference step, counting its calls (to tell 'never stopped' from 'stopped early')."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, model: nn.Module, image: torch.Tensor, target: int, step_size: float) -> torch.Tensor:
        self.calls += 1
        return reference_fooling_step(model, image, target, step_size)


@exercise_check
def check_make_fooling_image(
    student_fn: Callable[..., tuple[torch.Tensor, int]],
    model: nn.Module | None = None,
    image: torch.Tensor | None = None,
    target: int | None = None,
    step_size: float = 0.025,
    max_steps: int = 30,
) -> None:
    """Run ``student_fn(model, image, target, step_size, max_steps, step_fn=...)`` with the
    reference step and compare images and step counts with the reference loop.

    Without ``model``/``image``/``target``, three fixed cases run on a linear 3-class model:
    the target is reached after passing through another class, the image already shows the
    target (0 steps), and ``max_steps`` is too small (the loop must give up).
    """
    if model is None or image is None or target is None:
        path_model, grey = _path_model(), torch.full((1, 3, 2, 2), 0.5)
        cases = [
            (path_model, grey, 2, step_size, max_steps, "target reached after passing through class 1"),
            (path_model, grey, 0, step_size, max_steps, "the image already shows the target"),
            (path_model, grey, 2, step_size, 5, "max_steps=5 is too few to reach the target"),
        ]
    else:
        cases = [(model, image, target, step_size, max_steps, f"target {target}")]
    summaries = [_check_loop_case(student_fn, *case) for case in cases]
    passed("; ".join(summaries))


def _check_loop_case(
    student_fn: Callable[..., tuple[torch.Tensor, int]],
    model: nn.Module,
    image: torch.Tensor,
    target: int,
    step_size: float,
    max_steps: int,
    label: str,
) -> str:
    what = f"make_fooling_image ({label})"
    expected_image, expected_steps = reference_fooling_loop(
        model, image, target, step_size, max_steps, reference_fooling_step
    )
    original = image.clone()
    recorder = _RecordingStep()
    verify_side_effects = snapshot_side_effects(model)
    result = student_fn(model, image, target, step_size, max_steps, step_fn=recorder)
    verify_side_effects(what)
    require_untouched_input(image, original, what)
    got_image, got_steps = _unpack_loop_result(result, what)
    require_shape(got_image, original.shape, what)
    if recorder.calls > 0 and expected_steps > 0 and close(got_image, original):
        fail(
            f"{what}: the returned image is the original one, so the model was never fooled. "
            "Assign the result of each step (`x = step_fn(model, x, target, step_size)`): "
            "step_fn returns a new image, it does not change x."
        )
    _diagnose_steps(got_steps, expected_steps, recorder.calls, max_steps, model, original, got_image, target, what)
    if not close(got_image, expected_image):
        fail(
            f"{what}: the step count is right ({got_steps}) but the returned image differs from "
            "the image after those steps. Return the image the last step produced."
        )
    prediction = predicted_class(model, got_image)
    return f"{label}: {got_steps} steps (expected {expected_steps}), predicts {prediction}"


def _unpack_loop_result(result: object, what: str) -> tuple[torch.Tensor, int]:
    if not (isinstance(result, tuple) and len(result) == 2):
        fail(f"{what} must return a pair (fooled_image, steps_taken), got {type(result).__name__}.")
    got_image, got_steps = result
    require_tensor(got_image, what)
    if isinstance(got_steps, torch.Tensor) and got_steps.numel() == 1:
        got_steps = got_steps.item()
    if isinstance(got_steps, bool) or not float(got_steps).is_integer():
        fail(f"{what}: steps_taken must be an int (the number of steps), got {got_steps!r}.")
    return got_image, int(got_steps)


def _diagnose_steps(
    got_steps: int,
    expected_steps: int,
    calls: int,
    max_steps: int,
    model: nn.Module,
    image: torch.Tensor,
    got_image: torch.Tensor,
    target: int,
    what: str,
) -> None:
    if calls > max_steps:
        fail(f"{what} called step_fn {calls} times, more than max_steps={max_steps}.")
    if calls > expected_steps and expected_steps < max_steps:
        if expected_steps == 0:
            fail(
                f"{what} took a step although the model already predicted the target. Check the "
                "prediction *before* each step: an image that already fools the model needs 0 steps."
            )
        if calls == max_steps:
            fail(
                f"{what} did not stop when the model was fooled: it kept stepping for all "
                f"max_steps={max_steps} steps, but the model predicted the target after "
                f"{expected_steps}. Check `model(x).argmax(dim=1) == target` before every step and "
                "return as soon as it holds."
            )
        fail(
            f"{what} took {calls} steps, but the model predicted the target after {expected_steps}: "
            "return as soon as the prediction equals the target."
        )
    if calls == 0 and expected_steps > 0 and not close(got_image, image):
        fail(
            f"{what} changed the image without calling step_fn. Take each step with the "
            "step_fn argument (`x = step_fn(model, x, target, step_size)`), which defaults to "
            "your fooling_step."
        )
    if calls < expected_steps:
        original_class = predicted_class(model, image)
        reached = predicted_class(model, got_image)
        if reached not in (target, original_class):
            fail(
                f"{what} stopped after {calls} steps, when the prediction changed from class "
                f"{original_class} to class {reached}, but the target is {target}. A targeted "
                "attack stops only when the model predicts the target."
            )
        fail(
            f"{what} stopped after {calls} steps, before the model predicted the target "
            f"(it takes {expected_steps}). Keep stepping until argmax == target or max_steps is reached."
        )
    if got_steps != calls:
        fail(
            f"{what} returned steps_taken={got_steps}, but it called step_fn {calls} times. "
            "Return the number of steps actually taken (0 when the model was fooled from the start)."
        )
