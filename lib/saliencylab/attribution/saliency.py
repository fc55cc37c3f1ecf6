"""Vanilla gradient saliency (Simonyan, Vedaldi & Zisserman 2013).

How much would the class score change if this pixel changed a little? That is the gradient
of the target's logit (before the softmax, so other classes do not leak in) with respect to
the input pixels. Simonyan et al. show the maximum of its absolute value over the colour
channels; CS231n does the same.
"""

from __future__ import annotations

import torch
from torch import nn

from saliencylab import _validate as validate
from saliencylab._core import TargetLike, input_gradients, reduce_channels
from saliencylab.attribution._base import explain


def saliency(
    model: nn.Module,
    images: torch.Tensor,
    target: TargetLike = None,
    reduce: str | None = "max_abs",
) -> torch.Tensor:
    """Gradient of the target logit w.r.t. the input pixels.

    Args:
        model: classifier taking ``[N, 3, H, W]`` images in ``[0, 1]``, returning logits ``[N, C]``.
        images: ``[B, 3, H, W]`` (or one ``[3, H, W]`` image) in ``[0, 1]``.
        target: ``None`` (each image's top class), an ``int``, or one class per image.
        reduce: ``"max_abs"`` (max over channels of ``|gradient|``, the paper's map),
            ``"sum_abs"``, ``"sum"``, ``"abs_sum"``, or ``None`` for the signed gradient.
    Returns:
        ``[B, H, W]`` maps, or ``[B, 3, H, W]`` with ``reduce=None`` (no batch dim for a
        single image), on the images' device.
    """
    validate.reduce_option(reduce)
    return explain(
        model,
        images,
        target,
        lambda batch, targets: reduce_channels(input_gradients(model, batch, targets), reduce),
    )
