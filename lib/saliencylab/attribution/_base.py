"""Plumbing shared by the attribution methods (on top of ``saliencylab._core``).

``explain`` is the one call shape every method goes through: check the images, switch to eval
mode, resolve the targets, compute, and drop the batch dimension again for a single image.
``variant_gradients`` is the batched engine of SmoothGrad and Integrated Gradients: many
variants of each image (noisy copies, points on a path), gradients in mini-batches.
``auto_batch_size`` lives in ``saliencylab._core`` (the metrics use it too) and is re-exported
here, where the benchmarks import it from.
"""

from __future__ import annotations

from typing import Callable, Union

import torch
from torch import nn

from saliencylab import _validate as validate
from saliencylab._core import (
    TargetLike,
    auto_batch_size,
    batch_slices,
    eval_mode,
    input_gradients,
    resolve_targets,
)

__all__ = ["Result", "auto_batch_size", "explain", "variant_gradients"]

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
    batch, single = validate.image_batch(images)
    batch = batch.detach()  # results never join the caller's autograd graph
    validate.same_device(batch, model)
    with eval_mode(model, batch):
        targets = resolve_targets(model, batch, target)
        result = compute(batch, targets)
    if not single:
        return result
    if isinstance(result, tuple):
        return tuple(part[0] for part in result)
    return result[0]


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
