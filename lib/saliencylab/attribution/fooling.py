"""Fooling images (Szegedy et al. 2014): a change too small to see that flips the prediction.

Gradient ascent on the target logit, in plain pixel space: each step moves the image by
``step_size`` (in L2 norm) along the normalised gradient ``g / ||g||``, clamps it to
``[0, 1]``, and the loop stops as soon as the model predicts the target class.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from saliencylab import _validate as validate
from saliencylab._core import SaliencyLabError, class_count, eval_mode


def fooling_image(
    model: nn.Module,
    image: torch.Tensor,
    target: int,
    step_size: float = 0.1,
    max_steps: int = 100,
) -> tuple[torch.Tensor, int]:
    """Nudge ``image`` until ``model`` classifies it as ``target``.

    Args:
        model: classifier taking ``[N, 3, H, W]`` images in ``[0, 1]``, returning ``[N, C]``.
        image: one image, ``[3, H, W]`` or ``[1, 3, H, W]``, values in ``[0, 1]``.
        target: the class index the fooled image should be classified as.
        step_size: L2 length of each step, in pixel units (``[0, 1]`` scale). On a 224x224
            image the default moves a pixel by 0.07 8-bit levels per step (root mean
            square); Lite0 is fooled in 10-40 steps with a mean change below one 8-bit level.
        max_steps: give up after this many steps.
    Returns:
        ``(fooled, steps_taken)``: ``fooled`` has the shape of ``image``, values in
        ``[0, 1]``; ``steps_taken`` is the number of gradient steps (``0`` when the image
        was already classified as ``target``). If the target is not reached within
        ``max_steps``, a ``RuntimeWarning`` says so and the image closest to being
        fooled (highest target-logit margin) is returned with ``steps_taken = max_steps``:
        check ``predict(model, fooled)`` or raise ``max_steps`` / ``step_size``.
    """
    batch, single = validate.one_image(image, "image")
    target = validate.class_index(target, "target")
    step_size = validate.positive_number(step_size, "step_size")
    max_steps = validate.positive_int(max_steps, "max_steps", minimum=0)
    validate.same_device(batch, model)
    with eval_mode(model, batch):
        validate.class_index(target, "target", classes=class_count(model, batch))
        fooled, steps = _ascend_until_fooled(model, batch.detach(), target, step_size, max_steps)
    return (fooled[0] if single else fooled), steps


def _ascend_until_fooled(
    model: nn.Module, start: torch.Tensor, target: int, step_size: float, max_steps: int
) -> tuple[torch.Tensor, int]:
    """The normalised gradient-ascent loop; returns ``([1, 3, H, W], steps_taken)``."""
    current = start.clone()
    best, best_margin = current, -float("inf")
    for step in range(max_steps + 1):
        current.requires_grad_(True)
        with torch.enable_grad():
            logits = model(current)[0]
            margin = _target_margin(logits.detach(), target)
            if margin > 0:
                return current.detach(), step
            if margin > best_margin:
                best, best_margin = current.detach(), margin
            if step == max_steps:
                break
            (grad,) = torch.autograd.grad(logits[target], current)
        current = _normalized_step(current.detach(), grad, step_size)
    warnings.warn(
        f"fooling_image did not reach class {target} within max_steps={max_steps} "
        f"(best target-logit margin {best_margin:.3g}); returning the closest image. "
        "Increase max_steps or step_size.",
        RuntimeWarning,
        stacklevel=3,
    )
    return best, max_steps


def _target_margin(logits: torch.Tensor, target: int) -> float:
    """Target logit minus the largest other logit: > 0 exactly when the target is predicted."""
    others = torch.cat([logits[:target], logits[target + 1 :]])
    return (logits[target] - others.max()).item()


def _normalized_step(image: torch.Tensor, grad: torch.Tensor, step_size: float) -> torch.Tensor:
    norm = grad.norm()
    if norm == 0:
        raise SaliencyLabError(
            "the gradient of the target logit w.r.t. the image is zero (saturated model or an "
            "image clamped at 0/1 everywhere), so gradient ascent cannot move it."
        )
    return (image + step_size * grad / norm).clamp(0.0, 1.0)
