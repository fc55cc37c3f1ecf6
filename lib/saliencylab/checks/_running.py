"""How the checks call a student's function: once or twice on a copy, with the side effects a
function must not have (parameter gradients, hooks left behind, a changed or switched input)
turned into named mistakes, and the gradients the checks' mistake tables are built from."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from saliencylab.checks._common import CheckFailed, fail, require_tensor, snapshot_side_effects
from saliencylab.checks._promises import call_expecting_failure, failing_forward

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def score_gradient(model: nn.Module, inputs: torch.Tensor, score: ScoreFn) -> torch.Tensor:
    """Gradient of ``score(model(inputs))`` (a scalar) w.r.t. ``inputs``, same shape as ``inputs``.

    The checks use it to compute what a mistake would give (e.g. ``score`` = a softmax
    probability instead of a logit) on the same inputs as the student's function.
    """
    inputs = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(score(model(inputs)), inputs)
    return grad


def call_student(student_fn: Callable, model: nn.Module, inputs: torch.Tensor, target, case: str):
    """``student_fn(model, inputs, target)``; an error other than the stub's NotImplementedError
    becomes a CheckFailed that says on which model it happened."""
    try:
        return student_fn(model, inputs, target)
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as error:  # the student's own bug
        hint = (
            " Attributes like model.weight exist only for a linear model: use torch.autograd.grad."
            if isinstance(error, AttributeError)
            else ""
        )
        raise CheckFailed(
            f"calling it on {case} raised {type(error).__name__}: {error}. It must work for any "
            f"model that maps a batch of inputs to logits.{hint}"
        ) from error


def run_student_twice(
    student_fn: Callable, model: nn.Module, inputs: torch.Tensor, target, what: str, case: str
) -> torch.Tensor:
    """Call ``student_fn(model, inputs, target)`` twice on the same tensor and return the
    (detached) second result. Fails on side effects: parameter ``.grad`` touched, hooks left
    behind, gradients accumulating from one call to the next, the caller's tensor changed or
    switched to ``requires_grad``."""
    inputs = inputs.detach().clone()
    original = inputs.clone()
    verify_side_effects = snapshot_side_effects(model)
    # a copy: an accumulating .grad may be updated in place by the second call
    first = require_tensor(call_student(student_fn, model, inputs, target, case), what).detach().clone()
    verify_side_effects(what)
    if not torch.equal(inputs.detach(), original):
        fail(f"{what} changed the values of the input image: work on a copy of it.")
    second = require_tensor(call_student(student_fn, model, inputs, target, case), what)
    if first.shape == second.shape and torch.allclose(second.detach(), 2 * first, rtol=1e-4, atol=1e-7):
        fail(
            f"{what} gave twice the first answer when called a second time: with .backward() "
            "gradients accumulate in image.grad. Use torch.autograd.grad(score, x) on a fresh "
            "copy x = image.detach().clone().requires_grad_(True)."
        )
    if inputs.requires_grad:
        fail(
            f"{what} switched on requires_grad of the caller's image. Work on a copy, "
            "x = image.detach().clone().requires_grad_(True), so the caller's tensor is "
            "untouched (its .grad would otherwise fill up with every call)."
        )
    return second.detach()


def require_clean_after_error(call: Callable[[], object], model: nn.Module, what: str) -> None:
    """Run ``call`` (the student's function on the check's inputs) while every forward pass of
    ``model`` raises: it may raise anything, but must leave no hook on the model and no
    parameter ``.grad`` touched, the error path its docstring promises."""
    verify = snapshot_side_effects(model)
    with failing_forward(model):
        call_expecting_failure(call)
    try:
        verify(what)
    except CheckFailed as error:
        fail(
            f"{what} left the model changed when the computation raised an error (an error "
            "injected at the end of the model's forward pass): remove every hook in a "
            "`finally:` block, handle = module.register_forward_hook(...); try: ... finally: "
            f"handle.remove(), so it goes whatever happens.\n({error})"
        )


def gradient_of(model: nn.Module, image: torch.Tensor, objective: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    inputs = image.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(objective(model(inputs)), inputs)
    return grad


def require_untouched_input(image: torch.Tensor, original: torch.Tensor, what: str) -> None:
    if image.requires_grad:
        fail(
            f"{what} switched on requires_grad of the caller's image in place. Work on a copy: "
            "`x = image.detach().clone().requires_grad_(True)`."
        )
    if not torch.equal(image, original):
        fail(
            f"{what} modified the input image in place (e.g. `image += ...`, `image.data.add_` or "
            "`image.clamp_`). Build a new tensor and return it: the caller's image must stay as "
            "it was (e.g. to compare the fooled image with the original)."
        )


def require_detached(result: torch.Tensor, what: str) -> None:
    """Fail when a step returns an image that still carries an autograd graph."""
    if result.requires_grad:
        fail(
            f"{what} returned an image that is still attached to the autograd graph "
            "(requires_grad=True). Return a plain tensor (e.g. `.detach()`): otherwise every "
            "step chains onto the previous step's graph, and memory and time grow with each step."
        )
