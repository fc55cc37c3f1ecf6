"""Checks for notebook 01_linear_models: the input gradient and gradient x input.

Both exercises take ``(model, image, target)`` with ``image`` one un-batched input (``[64]``
for the digits' softmax regression, ``[3, H, W]`` for a CNN) and return a tensor of the same
shape. The checks run the student's function on a small linear model, where the answer is
known by hand (the weight row of the target class), and on a small two-layer network, where
the gradient changes with the image; they compare with the reference and name the mistake.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from saliencylab._core import input_gradients
from saliencylab.checks._common import close, diagnose, passed, require_shape
from saliencylab.checks._integrity import exercise_check
from saliencylab.checks._running import ScoreFn, run_student_twice, score_gradient

__all__ = ["check_input_gradient", "check_gradient_times_input"]

ExerciseFn = Callable[[nn.Module, torch.Tensor, int], torch.Tensor]

NUM_FEATURES = 64
NUM_CLASSES = 10
FIXED_TARGET = 3



def reference_gradient(model: nn.Module, image: torch.Tensor, target: int) -> torch.Tensor:
    """The library's gradient of the target logit w.r.t. one un-batched input (same shape)."""
    return input_gradients(model, image.unsqueeze(0), torch.tensor([target], device=image.device))[0]


def fixed_linear_model(seed: int = 0) -> nn.Linear:
    """A softmax regression ``[N, 64] -> [N, 10]`` with small seeded weights. Its parameters
    are trainable, so a ``.backward()`` shows up in their ``.grad``, and its probabilities are
    far from 0 and 1, so logit and probability gradients differ clearly."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Linear(NUM_FEATURES, NUM_CLASSES)
    with torch.no_grad():
        model.weight.copy_(0.3 * torch.randn(NUM_CLASSES, NUM_FEATURES, generator=generator))
        model.bias.copy_(0.1 * torch.randn(NUM_CLASSES, generator=generator))
    return model


def fixed_two_layer_model(seed: int = 1) -> nn.Sequential:
    """A small ReLU network ``[N, 64] -> [N, 10]``: its input gradient depends on the input."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(NUM_FEATURES, 32), nn.ReLU(), nn.Linear(32, NUM_CLASSES))
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(0.3 * torch.randn(param.shape, generator=generator))
    return model.eval()


def fixed_image(seed: int = 2) -> torch.Tensor:
    """A digit-like input ``[64]`` in ``[0, 1]``."""
    return torch.rand(NUM_FEATURES, generator=torch.Generator().manual_seed(seed))


def _input_gradient_mistakes(model: nn.Module, image: torch.Tensor, target: int) -> dict[str, torch.Tensor]:
    """Explanation -> the gradient a usual mistake gives for one un-batched ``image``."""
    batch = image.unsqueeze(0)
    with torch.no_grad():
        predicted = int(model(batch).argmax(dim=1))

    def grad(score: ScoreFn) -> torch.Tensor:
        return score_gradient(model, batch, score)[0]

    mistakes = {
        "you differentiated the softmax probability of the target class. Use the logit "
        "(the model's raw output, before softmax): probabilities saturate and mix in every "
        "other class.": grad(lambda z: z.softmax(dim=1)[:, target].sum()),
        "you differentiated the log-probability (log_softmax) of the target class. Use the "
        "logit itself, model(x)[0, target].": grad(lambda z: z.log_softmax(dim=1)[:, target].sum()),
        "you differentiated the cross-entropy loss. Differentiate the target logit "
        "model(x)[0, target] instead (the loss also has the opposite sign).": grad(
            lambda z: F.cross_entropy(z, torch.tensor([target], device=z.device))
        ),
        "you differentiated the sum of all logits: select the target class first, "
        "model(x)[0, target].": grad(lambda z: z.sum()),
        "the sign is flipped: differentiate +logit, not -logit.": grad(lambda z: -z[:, target].sum()),
    }
    if predicted != target:
        mistakes[
            f"you explained the predicted class {predicted} instead of the requested target "
            f"{target}: use the `target` argument, never the argmax."
        ] = grad(lambda z: z[:, predicted].sum())
    return mistakes



def _require_input_shape(result: torch.Tensor, image: torch.Tensor, model: nn.Module, what: str) -> None:
    if tuple(result.shape) == tuple(image.shape):
        return
    if result.dim() == 0:
        hint = "You returned a single number: return one contribution per input value (do not sum)."
    elif tuple(result.shape) in {tuple(p.shape) for p in model.parameters()}:
        hint = "That is the shape of a weight: differentiate with respect to the image, not the parameters."
    elif result.dim() == image.dim() + 1 and result.shape[0] == 1:
        hint = "Drop the batch dimension you added (result[0])."
    elif result.numel() < image.numel():
        hint = "That looks like a score or logits: return the gradient with respect to the image."
    else:
        hint = "The gradient has one value per input value: the same shape as `image`."
    require_shape(result, image.shape, what, hint)


def _default_cases(
    model: nn.Module | None, image: torch.Tensor | None, target: int | None
) -> list[tuple[str, nn.Module, torch.Tensor, int]]:
    """``(description, model, image, target)`` to test on: the given ones, or a linear model
    and a two-layer network on a fixed input."""
    if model is not None or image is not None:
        if model is None or image is None:
            raise ValueError("give both model= and image= (and target=), or neither")
        return [("the given model", model, image, FIXED_TARGET if target is None else int(target))]
    target = FIXED_TARGET if target is None else int(target)
    return [
        ("a linear model (softmax regression)", fixed_linear_model(), fixed_image(), target),
        ("a two-layer ReLU network", fixed_two_layer_model(), fixed_image(), target),
    ]


def _preview(tensor: torch.Tensor, count: int = 4) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in tensor.flatten()[:count].tolist()) + ", ...]"


@exercise_check
def check_input_gradient(
    student_fn: ExerciseFn,
    model: nn.Module | None = None,
    image: torch.Tensor | None = None,
    target: int | None = None,
) -> None:
    """Check ``input_gradient(model, image, target) -> tensor shaped like image``: the gradient
    of the target logit with respect to the input.

    Without ``model``/``image`` it runs on a fixed softmax regression (where the answer is the
    weight row ``W[target]``) and a fixed two-layer network; ``image`` is one un-batched input.
    """
    what = "input_gradient"
    lines = []
    for case, case_model, case_image, case_target in _default_cases(model, image, target):
        got = run_student_twice(student_fn, case_model, case_image, case_target, what, case)
        _require_input_shape(got, case_image, case_model, what)
        expected = reference_gradient(case_model, case_image, case_target)
        if not close(got, expected):  # the mistakes cost a backward pass each: only on failure
            diagnose(got, expected, _input_gradient_mistakes(case_model, case_image, case_target), f"{what} on {case}")
        lines.append(f"{case}: expected {_preview(expected)}, got {_preview(got)}")
    passed(f"shape {tuple(got.shape)}, no parameter gradients touched\n  " + "\n  ".join(lines))


def _gradient_times_input_mistakes(
    model: nn.Module, image: torch.Tensor, target: int, gradient: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Explanation -> what a usual mistake gives for gradient x input."""
    mistakes = {text: wrong * image for text, wrong in _input_gradient_mistakes(model, image, target).items()}
    contributions = gradient * image
    mistakes.update(
        {
            "you returned the gradient alone: multiply it by the input, element by element "
            "(gradient * image).": gradient,
            "you took an absolute value (of the gradient or of the product): keep the sign, a "
            "negative contribution means the pixel pushes the score down.": contributions.abs(),
            "you multiplied |gradient| by the input: keep the gradient's sign.": gradient.abs() * image,
        }
    )
    return mistakes


@exercise_check
def check_gradient_times_input(
    student_fn: ExerciseFn,
    model: nn.Module | None = None,
    image: torch.Tensor | None = None,
    target: int | None = None,
) -> None:
    """Check ``gradient_times_input(model, image, target) -> tensor shaped like image``: the
    gradient of the target logit times the input, element by element.

    On a linear model the contributions add up to the logit minus the bias (completeness);
    the check prints both sums.
    """
    what = "gradient_times_input"
    lines = []
    for case, case_model, case_image, case_target in _default_cases(model, image, target):
        got = run_student_twice(student_fn, case_model, case_image, case_target, what, case)
        _require_input_shape(got, case_image, case_model, what)
        gradient = reference_gradient(case_model, case_image, case_target)
        expected = gradient * case_image
        if not close(got, expected):  # the mistakes cost a backward pass each: only on failure
            mistakes = _gradient_times_input_mistakes(case_model, case_image, case_target, gradient)
            diagnose(got, expected, mistakes, f"{what} on {case}")
        lines.append(f"{case}: expected {_preview(expected)}, got {_preview(got)}")
        if isinstance(case_model, nn.Linear):
            with torch.no_grad():
                logit = case_model(case_image.unsqueeze(0))[0, case_target].item()
            bias = case_model.bias[case_target].item()
            lines.append(f"  completeness: sum of contributions {got.sum().item():.3f} = logit - bias {logit - bias:.3f}")
    passed(f"shape {tuple(got.shape)}, no parameter gradients touched\n  " + "\n  ".join(lines))
