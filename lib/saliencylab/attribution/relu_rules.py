"""Guided backpropagation and DeconvNet: the gradient with a different rule at every ReLU.

Let ``g`` be the gradient arriving at a ReLU's output and ``x`` its input. The three rules
differ only in what is passed back to ``x``::

    plain gradient     1[x > 0] * g
    DeconvNet          1[g > 0] * g               (Zeiler & Fergus 2013)
    guided backprop    1[x > 0] * 1[g > 0] * g    (Springenberg et al. 2014)

One machinery does both. A forward hook registers a tensor hook on each ReLU output that
rectifies ``g``; autograd's own ReLU backward then multiplies by the forward mask, which gives
guided backprop. DeconvNet must not apply the forward mask, so a hook on the ReLU's input adds
back exactly the part the mask removed, ``(1 - mask) * relu(g)``.

Why tensor hooks: ``register_full_backward_hook`` fails on in-place ReLUs (pytorch #61519,
"BackwardHookFunction is a view and is being modified inplace"), while a hook registered on
the input before the in-place op and on the output after it sees exactly the gradients of
the values before and after. Every call of a module gets its own hooks, so a ReLU module used
several times in one forward (EfficientNet-Lite's ``_swish``, ResNet's ``relu``) gets one mask
per call.

ReLU6 (EfficientNet-Lite, MobileNet): its local gradient is ``1[0 < x < 6]``, so guided
backprop passes ``1[0 < x < 6] * 1[g > 0] * g`` and DeconvNet ``1[g > 0] * g``. That is what
Captum's rule gives if it hooks a ReLU6 (guided: ``relu(grad_input)``; deconvnet:
``relu(grad_output)``). Captum itself only hooks ``nn.ReLU``, so on Lite0 it silently returns
the plain gradient. Activations written as ``F.relu`` in ``forward`` cannot be hooked: a model
with no ReLU/ReLU6 module call raises an error rather than returning the plain gradient.
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional

import torch
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

# Where each supported activation lets the gradient through, computed from its output
# (for in-place modules the input is gone by then); these match autograd's own masks.
ForwardMask = Callable[[torch.Tensor], torch.Tensor]
_FORWARD_MASKS: tuple[tuple[type[nn.Module], ForwardMask], ...] = (
    (nn.ReLU, lambda output: output > 0),
    (nn.ReLU6, lambda output: (output > 0) & (output < 6)),
)
_UNTOUCHED_ACTIVATIONS = (nn.SiLU, nn.GELU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Mish)


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
    activations = [(m, mask) for m in model.modules() if (mask := _forward_mask(m)) is not None]
    if not activations:
        raise _no_relu_error(model)
    _warn_about_untouched_activations(model)
    relu_calls = [0]  # how many ReLU calls the forward made
    with HookSet() as hooks:
        for module, mask in activations:
            _hook_activation(module, mask, hooks, deconvnet, relu_calls)
        gradients = input_gradients(model, batch, targets)
    if relu_calls[0] == 0:
        raise _no_relu_error(model)
    return gradients


def _hook_activation(
    module: nn.Module,
    forward_mask: ForwardMask,
    hooks: HookSet,
    deconvnet: bool,
    relu_calls: list[int],
) -> None:
    """Make every call of ``module`` apply the rectifying rule on the backward pass."""
    open_calls: list[dict[str, torch.Tensor]] = []  # one per call that has not returned yet

    def before(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        call: dict[str, torch.Tensor] = {}
        open_calls.append(call)
        if inputs[0].requires_grad:
            # Adds (1 - mask) * relu(g): together with what the masked backward passed, relu(g).
            inputs[0].register_hook(lambda grad: (grad + call["masked_out"]) if call else None)

    def after(_module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        call = open_calls.pop() if deconvnet else {}
        relu_calls[0] += 1
        if not output.requires_grad:
            return
        blocked = ~forward_mask(output) if deconvnet else None

        def rectify(grad: torch.Tensor) -> torch.Tensor:
            rectified = grad.clamp(min=0)
            if blocked is not None:
                call["masked_out"] = rectified * blocked
            return rectified

        output.register_hook(rectify)

    if deconvnet:
        hooks.add(module.register_forward_pre_hook(before))
    hooks.add(module.register_forward_hook(after))


def _forward_mask(module: nn.Module) -> Optional[ForwardMask]:
    for activation_type, mask in _FORWARD_MASKS:
        if isinstance(module, activation_type):
            return mask
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
