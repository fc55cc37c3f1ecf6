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
    SaliencyLabError,
    TargetLike,
    as_image_batch,
    batch_slices,
    eval_mode,
    input_gradients,
    reduce_channels,
    resolve_targets,
)

# Images per forward+backward pass in SmoothGrad / Integrated Gradients. SmoothGrad on
# EfficientNet-Lite0 224x224, CPU time per sample, 1 thread, without GLIBC_TUNABLES: 134, 124,
# 126, 125, 124 ms at batch 1, 2, 4, 8, 16 (with the tunable: 151, 129, 121, 114, 115 ms).
# Batches above ~8 gain nothing and, on 2 threads, lose to glibc unmapping and re-faulting
# the big activation buffers (NOTES.md); 8 also bounds the memory to ~8 backward graphs.
DEFAULT_BATCH_SIZE = 8

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
    with eval_mode(model):
        targets = resolve_targets(model, batch, target)
        result = compute(batch, targets)
    if not single:
        return result
    if isinstance(result, tuple):
        return tuple(part[0] for part in result)
    return result[0]


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
