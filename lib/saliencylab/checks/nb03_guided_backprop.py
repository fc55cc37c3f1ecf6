"""Checks for notebook 03: guided backpropagation and DeconvNet as ReLU hooks.

Both exercises return raw gradients ``[B, 3, H, W]`` computed with a modified backward rule at
every ``nn.ReLU`` / ``nn.ReLU6`` module (``g`` = gradient arriving at the activation's output)::

    plain gradient     1[forward mask] * g
    DeconvNet          1[g > 0] * g               (Zeiler & Fergus 2013)
    guided backprop    1[forward mask] * 1[g > 0] * g    (Springenberg et al. 2014)

with forward mask ``x > 0`` for ReLU and ``0 < x < 6`` for ReLU6. The expected values come
from :mod:`saliencylab.attribution` (``guided_backprop`` / ``deconvnet`` with
``reduce=None``). What a mistake gives is computed by :func:`rule_gradients`, which can apply
any rule at each activation type, so a wrong result is matched to the rule it implements.

The default check network has an in-place ReLU (``register_full_backward_hook`` breaks on it,
pytorch #61519), a ReLU6 module called twice per forward (as in EfficientNet-Lite0) and some
ReLU6 units saturated above 6; its parameters are trainable, so ``.backward()`` shows up in
their ``.grad``; the images are non-square and each has its own (non-predicted) target.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Union

import torch
from torch import nn

from saliencylab._core import HookSet, select_logits
from saliencylab.attribution import deconvnet, guided_backprop
from saliencylab.checks._common import (
    CheckFailed,
    as_target_list,
    close,
    diagnose,
    fail,
    non_predicted_targets,
    passed,
    require_shape,
)
from saliencylab.checks._integrity import exercise_check
from saliencylab.checks._promises import Promises, image_batches_to_try
from saliencylab.checks._running import require_clean_after_error, run_student_twice

__all__ = [
    "check_guided_backprop_map",
    "check_deconvnet_map",
    "relu_test_net",
    "rule_gradients",
]

Target = Union[int, Sequence[int], torch.Tensor]
RuleFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (grad, forward_mask) -> grad
ScoreFn = Callable[[torch.Tensor], torch.Tensor]  # logits [B, C] -> scalar

# read from both exercises' docstrings (tests/test_promises.py): images [B, 3, H, W]; hooks removed
PROMISES = {
    exercise: Promises(image_batches=True, cleans_up_on_error=True)
    for exercise in ("guided_backprop_map", "deconvnet_map")
}

NUM_CLASSES = 4
IMAGE_SHAPE = (2, 3, 10, 14)  # non-square: a height/width swap changes the shape

# ----------------------------------------------------------------------------- the test network


class ReluTestNet(nn.Module):
    """conv -> ReLU (in place or not) -> conv -> ReLU6 -> conv -> the same ReLU6 -> pool -> fc."""

    def __init__(self, inplace_relu: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU(inplace=inplace_relu)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.relu6 = nn.ReLU6()  # called twice, like EfficientNet-Lite's shared activation
        self.conv3 = nn.Conv2d(6, 6, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d((2, 2))
        self.fc = nn.Linear(24, NUM_CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(images))
        x = self.relu6(self.conv2(x))
        x = self.relu6(self.conv3(x))
        return self.fc(self.pool(x).flatten(1))


def relu_test_net(inplace_relu: bool = True, seed: int = 0) -> ReluTestNet:
    """The check network with seeded weights, in eval mode, parameters trainable.

    The weights are large enough that some ReLU6 units saturate (output 6), so the ReLU6
    forward mask ``0 < x < 6`` differs from the ReLU mask ``x > 0``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ReluTestNet(inplace_relu)
        with torch.no_grad():
            for name, param in model.named_parameters():
                scale = 1.0 if name.startswith(("conv2", "conv3")) else 0.6
                param.copy_(scale * torch.randn(param.shape))
    return model.eval()


def fixed_images(seed: int = 5) -> torch.Tensor:
    """Random images ``[2, 3, 10, 14]`` in ``[0, 1]``."""
    return torch.rand(IMAGE_SHAPE, generator=torch.Generator().manual_seed(seed))



# ----------------------------------------------------------------------------- rules engine

RELU_MASK: Callable[[torch.Tensor], torch.Tensor] = lambda out: out > 0  # noqa: E731
RELU6_MASK: Callable[[torch.Tensor], torch.Tensor] = lambda out: (out > 0) & (out < 6)  # noqa: E731

RULES: dict[str, RuleFn] = {
    "guided": lambda g, mask: g * mask * (g > 0),
    "deconvnet": lambda g, mask: g * (g > 0),
    "plain": lambda g, mask: g * mask,
    "negative guided": lambda g, mask: g * mask * (g < 0),
    "negative deconvnet": lambda g, mask: g * (g < 0),
    "abs guided": lambda g, mask: g.abs() * mask,
    "abs deconvnet": lambda g, mask: g.abs(),
    "identity": lambda g, mask: g,
}


def rule_gradients(
    model: nn.Module,
    images: torch.Tensor,
    score: ScoreFn,
    relu_rule: RuleFn,
    relu6_rule: RuleFn,
    relu6_mask: Callable[[torch.Tensor], torch.Tensor] = RELU6_MASK,
) -> torch.Tensor:
    """Gradient ``[B, 3, H, W]`` of ``score(model(images))`` with ``relu_rule`` at every
    ``nn.ReLU`` call and ``relu6_rule`` at every ``nn.ReLU6`` call.

    Each rule gets the gradient at the activation's output and its forward mask and returns
    the gradient passed to the activation's input (autograd's own activation backward is
    bypassed, so the rule decides everything). Runs on a copy of ``model`` whose ReLUs are
    not in place (same values); ``model`` itself is not touched.
    """
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if isinstance(module, (nn.ReLU, nn.ReLU6)):
            module.inplace = False

    def hook_for(rule: RuleFn, forward_mask: Callable[[torch.Tensor], torch.Tensor]):
        def on_forward(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
            x = inputs[0]
            bypass = x + (output - x).detach()
            mask = forward_mask(output.detach()).to(output.dtype)
            bypass.register_hook(lambda grad: rule(grad, mask))
            return bypass

        return on_forward

    with HookSet() as hooks:
        for module in twin.modules():
            if isinstance(module, nn.ReLU):
                hooks.add(module.register_forward_hook(hook_for(relu_rule, RELU_MASK)))
            elif isinstance(module, nn.ReLU6):
                hooks.add(module.register_forward_hook(hook_for(relu6_rule, relu6_mask)))
        inputs = images.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (grads,) = torch.autograd.grad(score(twin(inputs)), inputs)
    return grads


def _target_logits(targets: torch.Tensor) -> ScoreFn:
    return lambda logits: select_logits(logits, targets).sum()


def _common_mistakes(
    model: nn.Module, images: torch.Tensor, targets: list[int], rule: str
) -> dict[str, torch.Tensor]:
    """Mistakes either exercise can make: the target's score taken wrongly."""
    index = torch.tensor(targets, device=images.device)
    right = RULES[rule]
    mistakes = {
        "you differentiated softmax probabilities: differentiate the target's logit (the "
        "model's raw output).": rule_gradients(
            model, images, lambda z: select_logits(z.softmax(dim=1), index).sum(), right, right
        ),
        "you differentiated the sum of all logits: select each image's target logit first.": rule_gradients(
            model, images, lambda z: z.sum(), right, right
        ),
    }
    if len(set(targets)) > 1:
        mistakes[
            "logits[:, target] picks every image's target for every image: use "
            "logits.gather(1, target.view(-1, 1)) (or logits[torch.arange(B), target])."
        ] = rule_gradients(model, images, lambda z: z[:, index].sum(), right, right)
        mistakes[
            f"you used the first target ({targets[0]}) for every image: image b must use its own "
            "class target[b]."
        ] = rule_gradients(model, images, _target_logits(torch.full_like(index, targets[0])), right, right)
    return mistakes


def _guided_backprop_map_mistakes(model: nn.Module, images: torch.Tensor, targets: list[int]) -> dict[str, torch.Tensor]:
    """Explanation -> the ``[B, 3, H, W]`` result a usual guided-backprop mistake gives."""
    score = _target_logits(torch.tensor(targets, device=images.device))

    def with_rules(relu: str, relu6: str, **options) -> torch.Tensor:
        return rule_gradients(model, images, score, RULES[relu], RULES[relu6], **options)

    return {
        "this is the plain gradient: your hook did not change the gradient. Guided backprop "
        "keeps only the positive gradients at each ReLU output: return grad * (grad > 0) from "
        "the tensor hook (is the hook registered, and does it return the new gradient?).": with_rules("plain", "plain"),
        "this is DeconvNet, not guided backprop: the forward mask 1[x > 0] is missing. Guided "
        "backprop multiplies by both masks; autograd's own ReLU backward applies the forward "
        "one if you register the hook on the output without replacing it.": with_rules("deconvnet", "deconvnet"),
        "wrong sign: you kept the negative gradients (grad < 0 or clamp(max=0)); guided backprop "
        "keeps the positive ones, grad * (grad > 0).": with_rules("negative guided", "negative guided"),
        "you took |grad| at the ReLUs; guided backprop zeroes the negative gradients "
        "(grad * (grad > 0)) instead of flipping their sign.": with_rules("abs guided", "abs guided"),
        "the forward mask is missing at the ReLU6 modules (their rule is DeconvNet's): did a "
        "bypass skip autograd's ReLU6 backward? Register the hook on the output without "
        "replacing it, and autograd applies the mask 1[0 < x < 6] itself.": with_rules("guided", "deconvnet"),
        "only the nn.ReLU modules got the rule: the nn.ReLU6 modules were left with the plain "
        "gradient. EfficientNet-Lite0 uses ReLU6 everywhere; hook isinstance(m, (nn.ReLU, "
        "nn.ReLU6)).": with_rules("guided", "plain"),
        "only the nn.ReLU6 modules got the rule: the nn.ReLU modules were left with the plain "
        "gradient; hook isinstance(m, (nn.ReLU, nn.ReLU6)).": with_rules("plain", "guided"),
        "at ReLU6 you used the mask output > 0, but ReLU6 also blocks the gradient where it "
        "saturates (output = 6): its forward mask is 0 < x < 6. Let autograd's ReLU6 backward "
        "apply it (hook the output without replacing it), or use (output > 0) & (output < 6).": with_rules(
            "guided", "guided", relu6_mask=RELU_MASK
        ),
        **_common_mistakes(model, images, targets, "guided"),
    }


def _deconvnet_map_mistakes(model: nn.Module, images: torch.Tensor, targets: list[int]) -> dict[str, torch.Tensor]:
    """Explanation -> the ``[B, 3, H, W]`` result a usual DeconvNet mistake gives."""
    score = _target_logits(torch.tensor(targets, device=images.device))

    def with_rules(relu: str, relu6: str) -> torch.Tensor:
        return rule_gradients(model, images, score, RULES[relu], RULES[relu6])

    return {
        "this is guided backprop, not DeconvNet: after your hook, autograd's own ReLU backward "
        "still multiplied by the forward mask 1[x > 0]. DeconvNet ignores the forward pass: "
        "return a bypass x + (output - x).detach() from the forward hook and put the tensor hook "
        "on it.": with_rules("guided", "guided"),
        "this is the plain gradient: your hook did not change the gradient (is it registered, "
        "and does the forward hook return the bypass?).": with_rules("plain", "plain"),
        "the gradient went through every ReLU unchanged: the bypass is right, but the tensor "
        "hook must rectify it, return grad * (grad > 0).": with_rules("identity", "identity"),
        "wrong sign: you kept the negative gradients; DeconvNet keeps the positive ones, "
        "grad * (grad > 0).": with_rules("negative deconvnet", "negative deconvnet"),
        "you took |grad| at the ReLUs; DeconvNet zeroes the negative gradients (grad * (grad > 0)) "
        "instead of flipping their sign.": with_rules("abs deconvnet", "abs deconvnet"),
        "only the nn.ReLU modules got the rule: the nn.ReLU6 modules were left with the plain "
        "gradient; hook isinstance(m, (nn.ReLU, nn.ReLU6)).": with_rules("deconvnet", "plain"),
        "only the nn.ReLU6 modules got the rule: the nn.ReLU modules were left with the plain "
        "gradient; hook isinstance(m, (nn.ReLU, nn.ReLU6)).": with_rules("plain", "deconvnet"),
        "the ReLU6 modules applied guided backprop's rule (their forward mask is still there): "
        "give them the same bypass as the ReLUs.": with_rules("deconvnet", "guided"),
        **_common_mistakes(model, images, targets, "deconvnet"),
    }


# ----------------------------------------------------------------------------- the checks


def _require_gradient_shape(result: torch.Tensor, images: torch.Tensor, what: str) -> None:
    batch, _, height, width = images.shape
    hints = {
        (batch, height, width): "Return the raw gradients [B, 3, H, W]: the colour channels are "
        "kept (guided backprop is shown in colour); reduce them only for a heat map.",
        (3, height, width): "Keep the batch dimension: one [3, H, W] gradient per image.",
        (batch, 3, width, height): "Height and width are swapped.",
    }
    require_shape(result, images.shape, what, hints, otherwise="Same shape as the images.")



def _run_and_compare(
    student_fn: Callable,
    what: str,
    reference: Callable,
    mistakes: Callable,
    model: nn.Module | None,
    images: torch.Tensor | None,
    target: Target | None,
    inplace_relu: bool,
    tol: float,
) -> None:
    if (model is None) != (images is None):
        raise ValueError("give both model= and images= (and optionally target=), or neither")
    model = relu_test_net(inplace_relu) if model is None else model
    images = fixed_images() if images is None else images
    targets = non_predicted_targets(model, images) if target is None else as_target_list(target, len(images))
    got, expected = _compare(student_fn, what, reference, mistakes, model, images, targets, tol)
    for batch in image_batches_to_try(images)[1:]:  # a batch of one
        _compare(student_fn, what, reference, mistakes, model, batch, targets[: len(batch)], tol)
    target_tensor = torch.tensor(targets, device=images.device)
    require_clean_after_error(lambda: student_fn(model, images.clone(), target_tensor), model, what)
    passed(
        f"images {tuple(images.shape)} and a batch of one, target={targets}; hooks removed, also "
        "after an error inside the model, no parameter gradients touched; positive share expected "
        f"{(expected > 0).float().mean().item():.3f}, got {(got > 0).float().mean().item():.3f}; "
        f"max |value| expected {expected.abs().max().item():.3g}, got {got.abs().max().item():.3g}",
    )


def _compare(
    student_fn: Callable,
    what: str,
    reference: Callable,
    mistakes: Callable,
    model: nn.Module,
    images: torch.Tensor,
    targets: list[int],
    tol: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's gradients of ``images`` ``[B, 3, H, W]`` and the reference's, after failing
    with the likely mistake if they differ."""
    target_tensor = torch.tensor(targets, device=images.device)
    case = f"images {tuple(images.shape)}, target={targets}"
    try:
        got = run_student_twice(student_fn, model, images, target_tensor, what, case)
    except CheckFailed as error:
        cause = str(error.__cause__ or "")
        if "inplace" in cause or "BackwardHookFunction" in cause:
            fail(
                f"{what} failed on a model with an in-place ReLU ({cause.splitlines()[0][:160]}). "
                "register_full_backward_hook cannot wrap an in-place ReLU (pytorch issue #61519). "
                "Use a forward hook that calls output.register_hook(...) on the activation's output."
            )
        raise
    _require_gradient_shape(got, images, what)
    expected = reference(model, images, targets, reduce=None)
    if not close(got, expected, tol):  # the mistakes cost a backward pass each: only on failure
        diagnose(got, expected, mistakes(model, images, targets), f"{what} with {case}", tol)
    return got, expected


@exercise_check
def check_guided_backprop_map(
    student_fn: Callable,
    model: nn.Module | None = None,
    images: torch.Tensor | None = None,
    target: Target | None = None,
    tol: float = 1e-4,
) -> None:
    """Check ``guided_backprop_map(model, images, target [B]) -> [B, 3, H, W]`` against
    ``saliencylab.attribution.guided_backprop(..., reduce=None)``.

    Default inputs: :func:`relu_test_net` with an in-place ReLU and a ReLU6 used twice, two
    non-square images and a different non-predicted class for each. ``model``/``images``/
    ``target`` check other inputs (e.g. EfficientNet-Lite0 on a photo).
    """
    _run_and_compare(student_fn, "guided_backprop_map", guided_backprop, _guided_backprop_map_mistakes,
                     model, images, target, inplace_relu=True, tol=tol)


@exercise_check
def check_deconvnet_map(
    student_fn: Callable,
    model: nn.Module | None = None,
    images: torch.Tensor | None = None,
    target: Target | None = None,
    tol: float = 1e-4,
) -> None:
    """Check ``deconvnet_map(model, images, target [B]) -> [B, 3, H, W]`` against
    ``saliencylab.attribution.deconvnet(..., reduce=None)``.

    Default inputs as :func:`check_guided_backprop_map`, but every ReLU is out of place (the
    exercise's bypass needs the activation's input).
    """
    _run_and_compare(student_fn, "deconvnet_map", deconvnet, _deconvnet_map_mistakes,
                     model, images, target, inplace_relu=False, tol=tol)
