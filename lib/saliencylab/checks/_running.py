"""How the checks call a student's function: once or twice on a copy, with the side effects a
function must not have (parameter gradients, hooks left behind, a changed or switched input)
turned into named mistakes, and the gradients the checks' mistake tables are built from."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Batching:
    """How an exercise must cut its work into passes of at most ``batch_size`` inputs.

    Attributes:
        item / items: one unit of work and several ("noisy copy" / "noisy copies").
        count: the argument that sets how many there are ("samples", "steps", ...).
        extra_passes: passes allowed beyond ``ceil(work / batch_size)`` (e.g. one on the clean
            image that the drops are measured from).
        exact_total: every unit goes through the model exactly once (no extra inputs).
        gradients: the passes need autograd (True) or must run without it (False).
    """

    item: str
    items: str
    count: str
    extra_passes: int = 0
    exact_total: bool = True
    gradients: bool = True


def require_batched(
    sizes: Sequence[int], work: int, batch_size: int, what: str, batching: Batching, autograd_on: bool = False
) -> None:
    """Fail unless the passes (their batch ``sizes``, in order) cover ``work`` units in chunks of
    at most ``batch_size`` and no more passes than needed; ``autograd_on``: some pass of a
    forward-only exercise ran with autograd."""
    if not sizes:
        needs = (f"on {batching.items} that require grad, so no gradient was taken: call "
                 ".requires_grad_(True) on them and use torch.autograd.grad(score, inputs)"
                 if batching.gradients else "it was given")
        fail(f"{what} never ran the model {needs}.")
    if max(sizes) > batch_size:
        fail(
            f"{what} ran {max(sizes)} {batching.items} in one pass although batch_size={batch_size}: "
            "batch_size bounds the memory, so cut them into chunks of at most batch_size "
            f"(for start in range(0, {batching.count}, batch_size): ...)."
        )
    needed = math.ceil(work / batch_size)
    if len(sizes) > needed + batching.extra_passes:
        fail(
            f"{what} is not batched: {len(sizes)} passes (batches of {list(sizes)}) for {work} "
            f"{batching.items}, where {needed} would do with batch_size={batch_size}. Did you send "
            f"one {batching.item} at a time? Stack up to batch_size of them into one batch per pass"
            + (" and take all their gradients at once (sum their target scores, one "
               "torch.autograd.grad call)." if batching.gradients else ".")
        )
    if batching.exact_total and sum(sizes) != work:
        fail(
            f"{what} ran {sum(sizes)} {batching.items} through the model in total (batches of "
            f"{list(sizes)}), expected {batching.count}={work}: each one exactly once."
        )
    if autograd_on:
        fail(
            f"{what} ran the model with autograd on (its outputs require grad); no gradients are "
            "needed here: wrap the forward passes in `with torch.inference_mode():` (or "
            "torch.no_grad()); autograd's bookkeeping costs time and memory on every batch."
        )
