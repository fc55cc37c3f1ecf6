"""Checks of notebook 08 (class visualization, Simonyan et al. 2013): one regularised ascent step.

``class_visualization_step(model, image, target, lr, l2_reg)`` is one step of the library's
``class_visualization`` without jitter and blur: gradient ascent on
``J(x) = s_target(x) - l2_reg * ||x - 0.5||^2`` (the target *logit* minus an L2 penalty that
pulls pixels towards mid-grey), a step of ``lr`` per pixel in root-mean-square, clamped:
``clamp(x + lr * g / rms(g), 0, 1)`` with ``g = dJ/dx`` and ``rms(g) = sqrt(mean(g^2))``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from saliencylab.attribution.class_visualization import GREY, class_visualization
from saliencylab.checks._common import diagnose, passed, require_shape, require_tensor, snapshot_side_effects
from saliencylab.checks._integrity import exercise_check
from saliencylab.checks._fixtures import image_with_extremes, tiny_cnn
from saliencylab.checks._running import gradient_of, require_detached, require_untouched_input

__all__ = ["check_class_visualization_step"]

StepFn = Callable[[nn.Module, torch.Tensor, int, float, float], torch.Tensor]


def reference_class_visualization_step(
    model: nn.Module, image: torch.Tensor, target: int, lr: float, l2_reg: float
) -> torch.Tensor:
    """One step of saliencylab's ``class_visualization`` from ``image [1, 3, H, W]``, no jitter or blur."""
    return class_visualization(
        model, target, steps=1, lr=lr, l2_reg=l2_reg, blur_every=0, jitter=0, progress=False, init=image
    )


def _rms_step(image: torch.Tensor, grad: torch.Tensor, lr: float) -> torch.Tensor:
    """``image + lr * grad / rms(grad)`` (not clamped)."""
    return image.detach() + lr * grad / grad.square().mean().sqrt().clamp_min(1e-12)


@exercise_check
def check_class_visualization_step(
    student_fn: StepFn,
    model: nn.Module | None = None,
    image: torch.Tensor | None = None,
    target: int = 3,
    lr: float = 0.1,
    l2_reg: float = 0.01,
) -> None:
    """Run ``student_fn(model, image, target, lr, l2_reg)`` once and compare with the library's step.

    Defaults: a tiny random CNN (5 classes, parameters that require grad) and a ``[1, 3, 6, 6]``
    image with some pixels at exactly 0 and 1, where the score's gradient and the L2 term are
    of similar size (so that each mistake gives a different result).
    """
    model = tiny_cnn() if model is None else model
    image = image_with_extremes() if image is None else image
    what = "class_visualization_step"
    original = image.clone()
    verify_side_effects = snapshot_side_effects(model)
    got = require_tensor(student_fn(model, image, target, lr, l2_reg), what)
    verify_side_effects(what)
    require_untouched_input(image, original, what)
    require_shape(got, original.shape, what, "Return the new image, the same shape as the input.")
    require_detached(got, what)
    expected = reference_class_visualization_step(model, original, target, lr, l2_reg)
    diagnose(got, expected, _class_visualization_step_mistakes(model, original, target, lr, l2_reg), what)
    _print_summary(model, original, got, expected, target, l2_reg)


def _class_visualization_step_mistakes(model: nn.Module, image: torch.Tensor, target: int, lr: float, l2_reg: float) -> dict[str, torch.Tensor]:
    score_grad = gradient_of(model, image, lambda logits: logits[:, target].sum())
    prob_grad = gradient_of(model, image, lambda logits: logits.softmax(dim=1)[:, target].sum())
    pull = 2 * l2_reg * (image - GREY)  # gradient of the penalty l2_reg * ||x - 0.5||^2
    grad = score_grad - pull
    return {
        "the L2 term is missing: the step uses only the score's gradient. Ascend on "
        "J(x) = score - l2_reg * ||x - 0.5||^2.": _rms_step(image, score_grad, lr).clamp(0, 1),
        "the L2 term has the wrong sign: adding l2_reg * ||x - 0.5||^2 *rewards* pixels far from "
        "grey (saturated colours) instead of penalising them. Subtract the penalty from the "
        "score.": _rms_step(image, score_grad + pull, lr).clamp(0, 1),
        "the penalty is l2_reg * ||x||^2, which pulls every pixel towards black. Penalise the "
        "distance from mid-grey, ||x - 0.5||^2: grey is the model's 'nothing' (its "
        "normalisation maps 0.5 to 0).": _rms_step(image, score_grad - 2 * l2_reg * image, lr).clamp(0, 1),
        "the L2 term's gradient is missing its factor 2: d(l2_reg * ||x - 0.5||^2)/dx = "
        "2 * l2_reg * (x - 0.5).": _rms_step(image, score_grad - pull / 2, lr).clamp(0, 1),
        "it moves *down* the gradient, which lowers the class score. Class visualization is "
        "gradient *ascent*: x + lr * g / rms(g).": _rms_step(image, -grad, lr).clamp(0, 1),
        "some pixels leave [0, 1]: clamp the new image with .clamp(0, 1).": _rms_step(image, grad, lr),
        "the step is lr * g, not normalised. Divide g by its root-mean-square, "
        "g.square().mean().sqrt(), so that lr is the typical change of one pixel per step "
        "whatever the model's gradient scale.": (image + lr * grad).clamp(0, 1),
        "the gradient is divided by its L2 norm (as in notebook 07's fooling step), so the "
        "*whole image* moves by lr and each pixel by far less. Divide by the root-mean-square "
        "g.square().mean().sqrt() instead: then lr is the typical change of one pixel.": (
            image + lr * grad / grad.norm()
        ).clamp(0, 1),
        "it follows the gradient of the softmax probability, not of the raw logit "
        "model(x)[0, target]. The probability's gradient vanishes once the class wins, and it "
        "is partly spent pushing other classes down.": _rms_step(image, prob_grad - pull, lr).clamp(0, 1),
    }


def _print_summary(
    model: nn.Module, image: torch.Tensor, got: torch.Tensor, expected: torch.Tensor, target: int, l2_reg: float
) -> None:
    def objective(x: torch.Tensor) -> float:
        with torch.no_grad():
            return (model(x)[0, target] - l2_reg * (x - GREY).square().sum()).item()

    rms_change = (got - image).square().mean().sqrt().item()
    passed(
        f"J = score - l2_reg * ||x - 0.5||^2 went {objective(image):.3f} -> {objective(got):.3f} "
        f"(expected {objective(expected):.3f}); RMS change per pixel {rms_change:.3f}; pixels in "
        f"[{got.min().item():.2f}, {got.max().item():.2f}].",
    )
