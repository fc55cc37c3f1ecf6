"""Guided backpropagation and DeconvNet: the gradient with a different rule at every ReLU.

Let ``g`` be the gradient arriving at a ReLU's output and ``x`` its input. The three rules
differ only in what is passed back to ``x``::

    plain gradient     1[x > 0] * g
    DeconvNet          1[g > 0] * g               (Zeiler & Fergus 2013)
    guided backprop    1[x > 0] * 1[g > 0] * g    (Springenberg et al. 2014)

Each row is one small ``torch.autograd.Function`` below (:class:`PlainGradientRule`,
:class:`DeconvNetRule`, :class:`GuidedBackpropRule`): its ``forward`` is the activation itself,
its ``backward`` is the row. During one attribution call, a forward hook on every ``nn.ReLU`` /
``nn.ReLU6`` module returns the rule's output in place of the module's, so the backward pass
runs the rule there instead of autograd's own ReLU backward (which is the plain-gradient row).
The hooks are removed when the call ends, also when it raises.

Why forward hooks: ``register_full_backward_hook`` fails on in-place ReLUs (pytorch #61519,
"BackwardHookFunction is a view and is being modified inplace"). An in-place module overwrites
its input, so a forward pre-hook keeps a copy of it for the rule; the module's return value is
then the rule's output (a model that calls an in-place ReLU only for its side effect, ignoring
what it returns, keeps the plain gradient there). Every call of a module applies the rule once,
so a ReLU module used several times in one forward (EfficientNet-Lite's ``_swish``, ResNet's
``relu``) gets one mask per call.

ReLU6 (EfficientNet-Lite, MobileNet): its local gradient is ``1[0 < x < 6]``, which takes the
place of ``1[x > 0]``: guided backprop passes ``1[0 < x < 6] * 1[g > 0] * g`` and DeconvNet
``1[g > 0] * g``. That is what Captum's rule gives if it hooks a ReLU6 (guided:
``relu(grad_input)``; deconvnet: ``relu(grad_output)``). Captum itself only hooks ``nn.ReLU``,
so on Lite0 it silently returns the plain gradient. Activations written as ``F.relu`` in
``forward`` cannot be hooked: a model with no ReLU/ReLU6 module call raises an error rather than
returning the plain gradient.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from saliencylab import _validate as validate
from saliencylab._core import (
    HookSet,
    SaliencyLabError,
    TargetLike,
    input_gradients,
    reduce_channels,
)
from saliencylab.attribution._base import explain


class Activation(NamedTuple):
    """What an activation module computes, and where its own gradient passes (``1[x > 0]``)."""

    function: Callable[[torch.Tensor], torch.Tensor]
    passes: Callable[[torch.Tensor], torch.Tensor]


RELU = Activation(F.relu, lambda x: x > 0)
RELU6 = Activation(F.relu6, lambda x: (x > 0) & (x < 6))
_ACTIVATIONS: tuple[tuple[type[nn.Module], Activation], ...] = ((nn.ReLU, RELU), (nn.ReLU6, RELU6))
_UNTOUCHED_ACTIVATIONS = (nn.SiLU, nn.GELU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Mish)


# ----------------------------------------------------------------------------- the rules


class _ActivationRule(torch.autograd.Function):
    """Forward: the activation, ``y = relu(x)`` (or ``relu6``). Subclasses: backward = a rule.

    It keeps ``1[x > 0]`` as a bool mask, not ``x`` (which a later in-place op may overwrite).
    ``torch.where(c, g, 0)`` is ``1[c] * g``, except that an infinite ``g`` where ``c`` is
    false gives 0 (as autograd's own ReLU backward does) rather than ``0 * inf = nan``.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, activation: Activation) -> torch.Tensor:
        ctx.save_for_backward(activation.passes(x))  # 1[x > 0]; 1[0 < x < 6] for ReLU6
        return activation.function(x)


class PlainGradientRule(_ActivationRule):
    """Autograd's own backward of the activation, written as a rule (for comparison)."""

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x_passes,) = ctx.saved_tensors
        return torch.where(x_passes, g, 0), None  # 1[x > 0] * g


class DeconvNetRule(_ActivationRule):
    """DeconvNet: positive gradients pass, whatever the input was."""

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        return torch.where(g > 0, g, 0), None  # 1[g > 0] * g


class GuidedBackpropRule(_ActivationRule):
    """Guided backprop: positive gradients pass where the input was positive."""

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x_passes,) = ctx.saved_tensors
        return torch.where(x_passes & (g > 0), g, 0), None  # 1[x > 0] * 1[g > 0] * g


# ----------------------------------------------------------------------------- the public API


def guided_backprop(
    model: nn.Module,
    images: torch.Tensor,
    target: TargetLike = None,
    reduce: str | None = "max_abs",
) -> torch.Tensor:
    """Guided backpropagation: only positive gradients through active ReLUs.

    Args:
        model: classifier whose ReLUs are ``nn.ReLU`` / ``nn.ReLU6`` modules (in-place is fine).
        images: ``[B, 3, H, W]`` (or one ``[3, H, W]`` image) in ``[0, 1]``.
        target: ``None`` (each image's top class), an ``int``, or one class per image.
        reduce: ``"max_abs"`` (default), ``"sum_abs"``, ``"sum"``, ``"abs_sum"`` or ``None``.
    Returns:
        ``[B, H, W]``, or ``[B, 3, H, W]`` with ``reduce=None``, on the images' device.
    """
    return _rectified_map(model, images, target, reduce, deconvnet=False)


def deconvnet(
    model: nn.Module,
    images: torch.Tensor,
    target: TargetLike = None,
    reduce: str | None = "max_abs",
) -> torch.Tensor:
    """DeconvNet: positive gradients through every ReLU, whatever its input was.

    Same arguments and shapes as :func:`guided_backprop`.
    """
    return _rectified_map(model, images, target, reduce, deconvnet=True)


def _rectified_map(
    model: nn.Module,
    images: torch.Tensor,
    target: TargetLike,
    reduce: str | None,
    deconvnet: bool,
) -> torch.Tensor:
    validate.reduce_option(reduce)
    return explain(
        model,
        images,
        target,
        lambda batch, targets: reduce_channels(
            rectified_gradients(model, batch, targets, deconvnet), reduce
        ),
    )


def rectified_gradients(
    model: nn.Module, batch: torch.Tensor, targets: torch.Tensor, deconvnet: bool
) -> torch.Tensor:
    """Input gradients ``[B, 3, H, W]`` under the guided (or DeconvNet) ReLU rule.

    ``model`` must already be in eval mode and ``targets`` resolved (``[B]``).
    """
    if all(_activation_of(module) is None for module in model.modules()):
        raise _no_relu_error(model)
    _warn_about_untouched_activations(model)
    rule = DeconvNetRule if deconvnet else GuidedBackpropRule
    with rule_at_every_relu(model, rule) as substitution:
        gradients = input_gradients(model, batch, targets)
    if substitution.calls == 0:
        raise _no_relu_error(model)
    return gradients


# ----------------------------------------------------------------------------- the substitution


class RuleSubstitution:
    """The hooks' state during one attribution call: which rule, and how often it was applied."""

    def __init__(self, rule: type[_ActivationRule]) -> None:
        self.rule = rule
        self.calls = 0  # ReLU / ReLU6 module calls that returned the rule's output
        self.pending: list[torch.Tensor] = []  # the input of each call not yet returned

    def before(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        """Forward pre-hook: keep the input (a copy, if the module is about to overwrite it)."""
        x = inputs[0]
        self.pending.append(x.clone() if module.inplace and x.requires_grad else x)

    def after(
        self, module: nn.Module, inputs: object, output: torch.Tensor
    ) -> Optional[torch.Tensor]:
        """Forward hook: the rule's output, computed from the kept input, replaces the module's."""
        x = self.pending.pop()
        self.calls += 1
        if not x.requires_grad:
            return None
        activation = _activation_of(module)
        assert activation is not None  # only ReLU / ReLU6 modules are hooked
        return self.rule.apply(x, activation)


@contextmanager
def rule_at_every_relu(
    model: nn.Module, rule: type[_ActivationRule]
) -> Iterator[RuleSubstitution]:
    """Inside the ``with``, every ``nn.ReLU`` / ``nn.ReLU6`` call of ``model`` applies ``rule``."""
    substitution = RuleSubstitution(rule)
    with HookSet() as hooks:
        for module in model.modules():
            if _activation_of(module) is not None:
                hooks.add(module.register_forward_pre_hook(substitution.before))
                hooks.add(module.register_forward_hook(substitution.after))
        yield substitution


def _activation_of(module: nn.Module) -> Optional[Activation]:
    for activation_type, activation in _ACTIVATIONS:
        if isinstance(module, activation_type):
            return activation
    return None


def _no_relu_error(model: nn.Module) -> SaliencyLabError:
    return SaliencyLabError(
        f"{type(model).__name__} runs no nn.ReLU or nn.ReLU6 module, so guided backprop and "
        "DeconvNet have no ReLU whose backward rule they could change (ReLUs written as "
        "F.relu / torch.relu inside forward() cannot be hooked). Use nn.ReLU modules in the "
        "model, or use saliency() for the plain gradient."
    )


def _warn_about_untouched_activations(model: nn.Module) -> None:
    untouched = (m for m in model.modules() if isinstance(m, _UNTOUCHED_ACTIVATIONS))
    names = sorted({type(m).__name__ for m in untouched})
    if names:
        warnings.warn(
            f"the model also uses {', '.join(names)}: their gradient is passed back unchanged; "
            "only nn.ReLU and nn.ReLU6 get the guided/DeconvNet rule.",
            stacklevel=2,
        )
