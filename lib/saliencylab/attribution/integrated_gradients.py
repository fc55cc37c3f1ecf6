"""Integrated Gradients (Sundararajan, Taly & Yan 2017).

A gradient says what matters *at* the image; a saturated network can have a tiny gradient
at a pixel it relies on. Integrated Gradients walks a straight path from a baseline ``x'``
(a black image by default) to the image ``x`` and accumulates the gradient along it::

    IG(x) = (x - x') * integral over a in [0, 1] of  d f(x' + a (x - x')) / dx  da

Completeness: the attributions sum to ``f(x) - f(x')`` for the target logit ``f``. The
integral is a sum over ``steps`` points, so the sum is only approximately right;
``return_error=True`` reports how far off it is, image by image.

Attributions are signed and per channel (``reduce=None``) by default, unlike the other
gradient maps: completeness needs the signed sum, and ``reduce="max_abs"`` would throw it
away. Pass ``reduce="sum"`` for a signed per-pixel map that still sums to the same total.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from saliencylab import _validate as validate
from saliencylab._core import (
    SaliencyLabError,
    TargetLike,
    auto_batch_size,
    batch_slices,
    reduce_channels,
    select_logits,
)
from saliencylab.attribution._base import explain, variant_gradients

METHODS = ("riemann_middle", "riemann_trapezoid", "riemann_left", "riemann_right", "gausslegendre")


def integrated_gradients(
    model: nn.Module,
    images: torch.Tensor,
    target: TargetLike = None,
    baseline: float | torch.Tensor | None = None,
    steps: int = 50,
    batch_size: int | None = None,
    method: str = "riemann_middle",
    return_error: bool = False,
    reduce: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Integrated Gradients from ``baseline`` to each image, for the target logit.

    Args:
        model: classifier taking ``[N, 3, H, W]`` images in ``[0, 1]``, returning logits ``[N, C]``.
        images: ``[B, 3, H, W]`` (or one ``[3, H, W]`` image) in ``[0, 1]``.
        target: ``None`` (each image's top class), an ``int``, or one class per image.
        baseline: ``None`` (black, all zeros), a number (a grey level in ``[0, 1]``), or an
            image ``[3, H, W]`` / ``[B, 3, H, W]``.
        steps: points on the path (gradient evaluations per image).
        batch_size: path points per forward/backward pass; bounds the memory. ``None``:
            chosen for the model and image size by
            :func:`~saliencylab._core.auto_batch_size` (8 for Lite0 at 224x224).
        method: ``"riemann_middle"`` (midpoints ``(k + 0.5) / steps``, the default; Captum's
            ``method="riemann_middle"``), ``"riemann_left"``, ``"riemann_right"``, or
            ``"riemann_trapezoid"`` (the trapezoid rule on ``steps`` points including both
            ends; Captum's variant of that name weights the points by ``1 / steps`` instead
            of ``1 / (steps - 1)``), or ``"gausslegendre"`` (Gauss-Legendre quadrature:
            the ``steps`` roots of the Legendre polynomial mapped to ``[0, 1]``, with their
            weights; exact for polynomials of degree ``2 * steps - 1``; Captum's default
            ``method="gausslegendre"``, same points and weights).
        return_error: also return the completeness error.
        reduce: ``None`` (default, signed ``[B, 3, H, W]``), ``"sum"``, ``"max_abs"``, ...
    Returns:
        attributions ``[B, 3, H, W]`` (or ``[B, H, W]`` when reduced) on the images' device;
        with ``return_error=True`` a tuple ``(attributions, error [B])`` where
        ``error = attributions.sum() - (f(x) - f(baseline))`` per image, before ``reduce``.
    """
    validate.positive_int(steps, "steps", minimum=2 if method == "riemann_trapezoid" else 1)
    validate.batch_size(batch_size)
    validate.one_of(method, "method", METHODS)
    validate.reduce_option(reduce)

    def compute(
        batch: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        per_pass = batch_size or auto_batch_size(model, batch)
        start = _baseline_like(baseline, batch)
        alphas, weights = _path_points(method, steps, batch)
        path = batch - start
        integral = torch.zeros_like(batch)
        for chunk in batch_slices(steps, per_pass):
            alpha, weight = alphas[chunk].view(1, -1, 1, 1, 1), weights[chunk].view(1, -1, 1, 1, 1)
            points = start.unsqueeze(1) + alpha * path.unsqueeze(1)  # [B, chunk, 3, H, W]
            gradients = variant_gradients(model, points, targets, per_pass)
            integral += (weight * gradients).sum(dim=1)
        attributions = path * integral
        if not return_error:
            return reduce_channels(attributions, reduce)
        logit_change = _target_logits(model, batch, targets, per_pass) - _target_logits(
            model, start, targets, per_pass
        )
        error = attributions.flatten(1).sum(dim=1) - logit_change
        return reduce_channels(attributions, reduce), error

    return explain(model, images, target, compute)


def _path_points(
    method: str, steps: int, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions ``a_k`` in ``[0, 1]`` and quadrature weights ``w_k``, both ``[steps]``.

    The positions are float32 values exactly as Captum computes them (``linspace`` for the
    Riemann rules; numpy's ``leggauss`` rescaled to ``[0, 1]`` for Gauss-Legendre), so both
    libraries evaluate the gradient at bit-identical points (the gradient of a ReLU network
    jumps at kinks: points 1e-8 apart can move the sum by 1e-4).
    """
    if method == "gausslegendre":
        roots, weights_2 = np.polynomial.legendre.leggauss(steps)  # on [-1, 1], float64
        alphas = torch.tensor(0.5 * (1 + roots), dtype=torch.float32)
        weights = torch.tensor(0.5 * weights_2, dtype=torch.float32)
    elif method == "riemann_trapezoid":
        alphas = torch.linspace(0, 1, steps)
        weights = torch.full((steps,), 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
    else:
        offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[method]
        alphas = torch.linspace(offset / steps, (steps - 1 + offset) / steps, steps)
        weights = torch.full((steps,), 1.0 / steps)
    return alphas.to(like), weights.to(like)


def _baseline_like(baseline: float | torch.Tensor | None, batch: torch.Tensor) -> torch.Tensor:
    """The baseline as a ``[B, 3, H, W]`` tensor like ``batch``."""
    if baseline is None:
        return torch.zeros_like(batch)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(batch, float(baseline))
    image_shapes = (batch.shape, batch.shape[1:], (1, *batch.shape[1:]))
    if isinstance(baseline, torch.Tensor) and baseline.shape in image_shapes:
        return baseline.detach().to(batch).expand_as(batch)
    shape = list(baseline.shape) if isinstance(baseline, torch.Tensor) else type(baseline).__name__
    raise SaliencyLabError(
        f"baseline must be None (black), a number, or an image of shape {list(batch.shape[1:])} "
        f"or {list(batch.shape)} like the images; got {shape}."
    )


def _target_logits(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """Each image's target logit, ``[B]``, computed in mini-batches."""
    with torch.no_grad():
        return torch.cat([
            select_logits(model(images[part]), targets[part])
            for part in batch_slices(len(images), batch_size)
        ])
