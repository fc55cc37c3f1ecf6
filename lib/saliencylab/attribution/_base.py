"""Plumbing shared by the gradient-based attribution methods (on top of ``saliencylab._core``).

``explain`` is the one call shape every method goes through: check the images, switch to eval
mode, resolve the targets, compute, and drop the batch dimension again for a single image.
``variant_gradients`` is the batched engine of SmoothGrad and Integrated Gradients: many
variants of each image (noisy copies, points on a path), gradients in mini-batches.
"""

from __future__ import annotations

from typing import Callable, Union

import torch
from torch import nn

from saliencylab._core import (
    HookSet,
    SaliencyLabError,
    TargetLike,
    as_image_batch,
    batch_slices,
    eval_mode,
    input_gradients,
    reduce_channels,
    resolve_targets,
)

# Default images per pass (SmoothGrad, Integrated Gradients, occlusion, deletion/insertion):
# as many as keep the largest single activation tensor of a batch under ACTIVATION_BUDGET.
# glibc returns every buffer above its mmap threshold (32 MB at most) to the OS and page-faults
# it in again on the next pass, so batches whose activations cross it get slower per image
# (NOTES.md). Measured on 2 cores, 224x224, seconds for 169 occlusion windows at batch
# 4/8/16/32/64: AlexNet (largest activation 0.74 MB per image) 1.70/1.38/1.21/0.98/0.91;
# ResNet18 (3.1 MB) 3.13/2.73/2.97/3.18/3.19; VGG11 (12.3 MB) flat, 10.2-11.3; Lite0
# (4.7 MB) fastest at 8 (bench/). The budget gives AlexNet 54, ResNet18 13, Lite0 8, VGG11 3,
# and for images smaller than 224 proportionally more. Memory grows with the batch, never
# with samples, steps or window positions.
ACTIVATION_BUDGET = 40 * 2**20
MAX_AUTO_BATCH_SIZE = 64

Result = Union[torch.Tensor, tuple[torch.Tensor, ...]]


def explain(
    model: nn.Module,
    images: torch.Tensor,
    target: TargetLike,
    compute: Callable[[torch.Tensor, torch.Tensor], Result],
) -> Result:
    """Run ``compute(batch [B,3,H,W], targets LongTensor [B])`` the way every method must.

    The model runs in eval mode (training flags restored after, even on error); ``target``
    is resolved once (``None`` = top class of each image); a single ``[3, H, W]`` image gets
    its batch dimension removed again from every tensor ``compute`` returns.
    """
    batch, single = as_image_batch(images)
    batch = batch.detach()  # results never join the caller's autograd graph
    check_same_device(model, batch)
    with eval_mode(model, batch):
        targets = resolve_targets(model, batch, target)
        result = compute(batch, targets)
    if not single:
        return result
    if isinstance(result, tuple):
        return tuple(part[0] for part in result)
    return result[0]


def auto_batch_size(model: nn.Module, images: torch.Tensor) -> int:
    """Images per pass for ``model`` on images shaped like ``images [B, 3, H, W]``.

    One forward pass of one image (hooks on every leaf module, removed after) finds the largest
    activation; the batch keeps that tensor under ``ACTIVATION_BUDGET`` (1 to 64 images).
    """
    largest = [1]

    def record(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.numel() * output.element_size())

    with HookSet() as hooks, torch.inference_mode():
        for module in model.modules():
            if next(module.children(), None) is None:
                hooks.add(module.register_forward_hook(record))
        model(images[:1])
    return max(1, min(MAX_AUTO_BATCH_SIZE, ACTIVATION_BUDGET // largest[0]))


def check_batch_size(batch_size: int | None) -> int | None:
    """``None`` (choose with :func:`auto_batch_size` later) or an int >= 1; checked up front."""
    return None if batch_size is None else check_positive_int("batch_size", batch_size)


def check_same_device(model: nn.Module, images: torch.Tensor) -> None:
    """Raise a clear error when the model's weights and the images are on different devices."""
    parameter = next(model.parameters(), None)
    if parameter is not None and parameter.device != images.device:
        raise SaliencyLabError(
            f"the model is on {parameter.device} but the images are on {images.device}: "
            f"move one of them, e.g. images = images.to('{parameter.device}')."
        )


def check_reduce(reduce: str | None) -> None:
    """Reject an unknown ``reduce`` before any expensive work (reduce_channels owns the list)."""
    reduce_channels(torch.zeros(1, 3, 1, 1), reduce)


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, or a SaliencyLabError naming the option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SaliencyLabError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return value


def variant_gradients(
    model: nn.Module, variants: torch.Tensor, targets: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """Input gradients of ``K`` variants of each of ``B`` images, in mini-batches.

    Args:
        variants: ``[B, K, 3, H, W]``, variant ``k`` of image ``b`` at ``[b, k]``.
        targets: ``[B]``, the class explained for each image (and all its variants).
        batch_size: images per forward/backward pass; bounds the activation memory.
    Returns:
        ``[B, K, 3, H, W]``: the gradient of the target logit w.r.t. each variant.
    """
    flat = variants.flatten(0, 1)
    flat_targets = targets.repeat_interleave(variants.shape[1])
    gradients = [
        input_gradients(model, flat[part], flat_targets[part])
        for part in batch_slices(len(flat), batch_size)
    ]
    return torch.cat(gradients).unflatten(0, variants.shape[:2])
