"""Rank statistics of saliency maps: Spearman rank correlation and SSIM, image by image.

:func:`rank_correlation` is the public comparison of two maps. :func:`spearman` and :func:`ssim`
are the row-wise statistics it and the randomisation test are built on: they take batches that
are already checked and report an undefined value as NaN instead of raising.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from saliencylab import _validate as validate
from saliencylab._core import SaliencyLabError

__all__ = ["average_ranks", "rank_correlation", "spearman", "ssim", "unit_range"]


def rank_correlation(
    map_a: torch.Tensor, map_b: torch.Tensor, absolute: bool = False
) -> torch.Tensor | float:
    """Spearman rank correlation between two maps, image by image.

    The Pearson correlation of the pixels' ranks, ties sharing their average rank (exactly
    ``scipy.stats.spearmanr``, ``±inf`` included: they rank above and below every finite
    value). 1: same ordering of pixels; -1: reversed; ~0: unrelated. A constant map has no
    ordering, so its correlation is undefined: NaN, with a warning (as scipy does). Maps that
    contain NaN raise a :class:`~saliencylab.SaliencyLabError` (fix the method first).

    Args:
        map_a, map_b: ``[B, H, W]`` (or one ``[H, W]``) maps of the same shape.
        absolute: compare ``|map_a|`` and ``|map_b|`` (importance regardless of sign), as
            Adebayo et al. 2018 do for signed gradients.
    Returns:
        ``[B]`` float64 correlations, or a float for single ``[H, W]`` maps.
    """
    a, single = validate.map_batch(map_a, "map_a")
    b, _ = validate.map_batch(map_b, "map_b")
    if a.shape != b.shape:
        raise SaliencyLabError(
            f"map_a {list(map_a.shape)} and map_b {list(map_b.shape)} must have the same shape."
        )
    correlation = spearman(a.flatten(1), b.to(a.device).flatten(1), absolute)
    undefined = torch.isnan(correlation).nonzero().flatten().tolist()
    if undefined:
        warnings.warn(
            f"rank_correlation: map(s) {undefined} are constant: their rank correlation is "
            "undefined (NaN).",
            stacklevel=2,
        )
    return correlation[0].item() if single else correlation


def spearman(a: torch.Tensor, b: torch.Tensor, absolute: bool = False) -> torch.Tensor:
    """Row-wise Spearman correlation of ``[B, N]`` tensors -> ``[B]`` float64.

    As ``scipy.stats.spearmanr`` on each row: ``±inf`` are ranked like any other value (above
    and below every finite one, tied with each other), a row with NaN gives NaN (scipy's
    ``nan_policy="propagate"``), and so does a constant row (0 / 0).
    """
    a, b = (m.detach() if m.is_floating_point() else m.detach().double() for m in (a, b))
    if absolute:
        a, b = a.abs(), b.abs()
    nan_a, nan_b = torch.isnan(a), torch.isnan(b)
    has_nan = nan_a.any(dim=1) | nan_b.any(dim=1)
    ranks_a = average_ranks(a.masked_fill(nan_a, 0))  # rows with NaN are NaN in the end anyway
    ranks_b = average_ranks(b.masked_fill(nan_b, 0))
    centred_a = ranks_a - ranks_a.mean(dim=1, keepdim=True)
    centred_b = ranks_b - ranks_b.mean(dim=1, keepdim=True)
    norm = (centred_a.square().sum(dim=1) * centred_b.square().sum(dim=1)).sqrt()
    correlation = (centred_a * centred_b).sum(dim=1) / norm  # 0 / 0 = NaN for a constant map
    correlation = correlation.clamp(-1.0, 1.0)
    return correlation.masked_fill(has_nan, float("nan"))


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..N (float64) along dim 1, ties sharing their average rank (scipy's 'average')."""
    count = values.shape[1]
    sorted_values, order = torch.sort(values, dim=1)
    positions = torch.arange(count, device=values.device).expand_as(order)
    starts_tie = torch.ones_like(sorted_values, dtype=torch.bool)
    starts_tie[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]
    ends_tie = torch.ones_like(starts_tie)
    ends_tie[:, :-1] = starts_tie[:, 1:]
    # first and last sorted position of each run of equal values, spread along the run
    first = torch.where(starts_tie, positions, 0).cummax(dim=1).values
    last = torch.where(ends_tie, positions, count - 1).flip(1).cummin(dim=1).values.flip(1)
    sorted_ranks = (first + last).double() / 2 + 1
    return torch.empty_like(sorted_ranks).scatter_(1, order, sorted_ranks)


def ssim(original: torch.Tensor, other: torch.Tensor, absolute: bool = False) -> torch.Tensor:
    """``[B]`` float64 SSIM between two batches of maps ``[B, H, W]`` (or ``[B, C, H, W]``).

    Each map is min-max normalised to ``[0, 1]`` first (a constant map becomes zeros); the
    window is 7 pixels, or the largest odd size that fits. NaN where a map contains NaN or is
    smaller than 3 pixels.
    """
    from skimage.metrics import structural_similarity

    values = []
    for a, b in zip(original, other):
        if torch.isnan(a).any() or torch.isnan(b).any():
            values.append(float("nan"))
            continue
        a, b = (unit_range(m.abs() if absolute else m) for m in (a, b))
        side = min(a.shape[-2:])
        window = min(7, side if side % 2 else side - 1)
        if window < 3:
            values.append(float("nan"))
            continue
        channel_axis = 0 if a.ndim == 3 else None
        values.append(structural_similarity(a, b, data_range=1.0, win_size=window,
                                            channel_axis=channel_axis))
    return torch.tensor(values, dtype=torch.float64)


def unit_range(map_: torch.Tensor) -> np.ndarray:
    """Min-max normalise to ``[0, 1]`` (a constant map becomes zeros), as float64 numpy."""
    values = map_.double().cpu()
    spread = values.max() - values.min()
    scaled = (values - values.min()) / spread if spread > 0 else torch.zeros_like(values)
    return scaled.numpy()
