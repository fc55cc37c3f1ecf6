"""SmoothGrad (Smilkov et al. 2017): average the gradient over noisy copies of the image.

A raw gradient map is speckled because the gradient changes sharply from one pixel value to
the next. Averaging the gradients at ``samples`` copies ``x + noise``, with Gaussian noise whose
standard deviation is ``noise_level`` times the image's value range (the paper found 10-20 %
best), keeps what is stable and washes the speckle out.

Noise: one draw of ``[samples, 3, H, W]`` standard-normal noise is shared by every image of the
batch (scaled by each image's own range), drawn chunk by chunk in sample order. So a batch
gives exactly the maps of its images one by one with the same seed, and with
``generator=None, seed=None`` the draws come from torch's global RNG in the same order as
Captum's ``NoiseTunnel`` (``torch.manual_seed`` makes both reproducible and, for a single image
with ``nt_samples_batch_size=batch_size``, identical).
"""

from __future__ import annotations

import torch
from torch import nn

from saliencylab import _validate as validate
from saliencylab._core import (
    TargetLike,
    auto_batch_size,
    batch_slices,
    make_generator,
    random_normal,
    reduce_channels,
)
from saliencylab.attribution._base import explain, variant_gradients

VARIANTS = ("mean", "squared", "vargrad")
CAPTUM_VARIANT_NAMES = {"smoothgrad": "mean", "smoothgrad_sq": "squared"}  # NoiseTunnel's nt_type


def smoothgrad(
    model: nn.Module,
    images: torch.Tensor,
    target: TargetLike = None,
    samples: int = 50,
    noise_level: float = 0.15,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    variant: str = "mean",
    reduce: str | None = "max_abs",
) -> torch.Tensor:
    """Gradient averaged over ``samples`` noisy copies of each image.

    Args:
        model: classifier taking ``[N, 3, H, W]`` images in ``[0, 1]``, returning logits ``[N, C]``.
        images: ``[B, 3, H, W]`` (or one ``[3, H, W]`` image) in ``[0, 1]``.
        target: ``None`` (top class of the clean image), an ``int``, or one class per image.
        samples: number of noisy copies per image.
        noise_level: noise standard deviation as a fraction of each image's ``max - min``.
        batch_size: noisy images per forward/backward pass; memory grows with this, not with
            ``samples``. ``None``: chosen for the model and image size by
            :func:`~saliencylab._core.auto_batch_size` (8 for Lite0 at 224x224).
        generator / seed: make the noise reproducible (give at most one); a CPU generator works
            for images on a GPU, and a seed gives the same noise on every machine. Without
            either, the noise comes from torch's global RNG.
        variant: ``"mean"`` (SmoothGrad, E[g]), ``"squared"`` (SmoothGrad-Squared, E[g^2]) or
            ``"vargrad"`` (VarGrad, E[g^2] - E[g]^2), all per pixel and channel. Captum's
            names ``"smoothgrad"`` and ``"smoothgrad_sq"`` are accepted too.
        reduce: applied after the averaging: ``"max_abs"`` (default) gives ``[B, H, W]``;
            ``None`` keeps ``[B, 3, H, W]``.
    Returns:
        ``[B, H, W]`` or ``[B, 3, H, W]`` on the images' device.
    """
    validate.positive_int(samples, "samples")
    validate.batch_size(batch_size)
    validate.non_negative_number(
        noise_level, "noise_level", hint="It is a fraction of the image's value range (0.1-0.2 "
        "is typical)."
    )
    variant = validate.one_of(CAPTUM_VARIANT_NAMES.get(variant, variant), "variant", VARIANTS)
    validate.reduce_option(reduce)

    def compute(batch: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        per_pass = batch_size or auto_batch_size(model, batch)
        noise_std = noise_level * _value_range(batch)
        rng = make_generator(seed, generator)
        grad_sum = torch.zeros_like(batch)
        grad_sq_sum = torch.zeros_like(batch)
        for chunk in batch_slices(samples, per_pass):
            noise = random_normal((chunk.stop - chunk.start, *batch.shape[1:]), rng, like=batch)
            noisy = batch.unsqueeze(1) + noise_std * noise  # [B, chunk, 3, H, W]
            gradients = variant_gradients(model, noisy, targets, per_pass)
            grad_sum += gradients.sum(dim=1)
            grad_sq_sum += gradients.square().sum(dim=1)
        mean, mean_sq = grad_sum / samples, grad_sq_sum / samples
        smoothed = {
            "mean": lambda: mean,
            "squared": lambda: mean_sq,
            "vargrad": lambda: (mean_sq - mean.square()).clamp(min=0),
        }[variant]()
        return reduce_channels(smoothed, reduce)

    return explain(model, images, target, compute)


def _value_range(batch: torch.Tensor) -> torch.Tensor:
    """``max - min`` of each image, ``[B, 1, 1, 1, 1]`` (broadcasts over samples and pixels)."""
    flat = batch.flatten(1)
    return (flat.amax(dim=1) - flat.amin(dim=1)).view(-1, 1, 1, 1, 1)
