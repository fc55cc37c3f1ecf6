"""Noisy linear imputation (ROAD: Rong, Leemann, Borisov, Kasneci & Kasneci 2022, *A Consistent
and Efficient Evaluation Strategy for Attribution Methods*, ICML, arXiv:2202.00449).

Deleting pixels by setting them to black (or any constant) makes images the network has never
seen: a scatter of black specks destroys the class whatever the pixels were, and the *shape* of
the deleted region leaks which pixels were chosen. ROAD instead fills each removed pixel with the
weighted average of its 8 neighbours (weight 1/6 for the 4 direct ones, 1/12 for the diagonal
ones; removed neighbours count as unknowns, so a hole is filled smoothly from its border: one
sparse linear system per image), then adds a little Gaussian noise, so the network sees a
plausible image and the region's outline carries little information.
"""

from __future__ import annotations

import numpy as np
import torch

from saliencylab import _validate as validate
from saliencylab._core import SaliencyLabError

__all__ = ["NEIGHBOUR_WEIGHTS", "ROAD_NOISE", "noisy_linear_imputation"]

#: (row offset, column offset) -> weight of that neighbour, as in ROAD's ``NoisyLinearImputer``
#: (the weights sum to 1).
NEIGHBOUR_WEIGHTS = {
    (-1, 0): 1 / 6, (1, 0): 1 / 6, (0, -1): 1 / 6, (0, 1): 1 / 6,
    (-1, -1): 1 / 12, (-1, 1): 1 / 12, (1, -1): 1 / 12, (1, 1): 1 / 12,
}
#: Standard deviation of the noise added to imputed pixels, in pixel units of ``[0, 1]`` images.
ROAD_NOISE = 0.01


def noisy_linear_imputation(
    images: torch.Tensor,
    masks: torch.Tensor,
    noise: float = ROAD_NOISE,
    seed: int = 0,
) -> torch.Tensor:
    """Replace the removed pixels of each image by a weighted average of their neighbours + noise.

    For every removed pixel ``i`` the imputed value ``v_i`` (per colour channel) satisfies
    ``v_i = sum_j w_j v_j / sum_j w_j`` over its neighbours ``j`` inside the image (weights
    :data:`NEIGHBOUR_WEIGHTS`: 1/6 direct, 1/12 diagonal), where a kept neighbour's ``v_j`` is its
    pixel value and a removed neighbour's is its own unknown: one sparse linear system per image
    (solved with SciPy's sparse LU, on the CPU). Then ``noise * N(0, 1)`` is added to the imputed
    pixels and the result is clipped to ``[0, 1]``. Kept pixels are returned unchanged.

    An image whose every pixel is removed has nothing to average: its pixels get the image's mean
    colour (plus the noise).

    Args:
        images: ``[B, 3, H, W]`` (or one ``[3, H, W]``) in ``[0, 1]``.
        masks: ``[B, H, W]`` (or ``[H, W]``) booleans, ``True`` = removed (to impute).
        noise: standard deviation of the Gaussian noise added to the imputed pixels (``0`` for
            the plain linear imputation).
        seed: image ``b`` draws its noise from ``torch.Generator().manual_seed(seed + b)`` (on
            the CPU, so every device gives the same numbers).
    Returns:
        ``[B, 3, H, W]`` (``[3, H, W]`` for one image), the images' dtype and device.
    """
    batch, single = validate.image_batch(images)
    masks = torch.as_tensor(masks)
    if masks.dim() == 2:
        masks = masks.unsqueeze(0)
    if masks.dtype != torch.bool:
        raise SaliencyLabError(f"masks must be booleans (True = removed), got dtype {masks.dtype}.")
    if masks.shape != (batch.shape[0], *batch.shape[2:]):
        raise SaliencyLabError(
            f"masks of shape {list(masks.shape)} do not match the images {list(batch.shape)}: "
            "give one [H, W] mask per image."
        )
    if not (isinstance(noise, (int, float)) and noise >= 0):
        raise SaliencyLabError(f"noise must be a number >= 0, got {noise!r}.")
    pixels = batch.detach().cpu().double().numpy()
    removed = masks.cpu().numpy()
    result = pixels.copy()
    for b in range(batch.shape[0]):
        result[b] = _impute(pixels[b], removed[b])
        if noise > 0:
            draw = torch.randn(batch.shape[1:], generator=torch.Generator().manual_seed(seed + b), dtype=torch.float64)
            result[b][:, removed[b]] += noise * draw.numpy()[:, removed[b]]
    out = torch.from_numpy(np.clip(result, 0.0, 1.0)).to(batch.device, batch.dtype)
    out = torch.where(masks.to(batch.device)[:, None], out, batch.detach())  # kept pixels untouched
    return out[0] if single else out


def _impute(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """``image [C, H, W]`` with its ``removed [H, W]`` pixels linearly imputed (no noise)."""
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import spsolve

    channels, height, width = image.shape
    unknown = np.flatnonzero(removed)
    result = image.copy()
    if unknown.size == 0:
        return result
    if unknown.size == height * width:
        result[:] = image.reshape(channels, -1).mean(axis=1)[:, None, None]
        return result
    index = np.full(height * width, -1)
    index[unknown] = np.arange(unknown.size)
    rows, cols = np.divmod(unknown, width)
    flat = image.reshape(channels, -1)
    diagonal = np.zeros(unknown.size)
    right_side = np.zeros((unknown.size, channels))
    entries_i, entries_j, entries_w = [], [], []
    for (dy, dx), weight in NEIGHBOUR_WEIGHTS.items():
        r, c = rows + dy, cols + dx
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        diagonal[inside] += weight
        neighbour = r[inside] * width + c[inside]
        which = np.flatnonzero(inside)
        is_unknown = index[neighbour] >= 0
        entries_i.append(which[is_unknown])
        entries_j.append(index[neighbour[is_unknown]])
        entries_w.append(np.full(int(is_unknown.sum()), -weight))
        np.add.at(right_side, which[~is_unknown], weight * flat[:, neighbour[~is_unknown]].T)
    i = np.concatenate([np.arange(unknown.size)] + entries_i)
    j = np.concatenate([np.arange(unknown.size)] + entries_j)
    w = np.concatenate([diagonal] + entries_w)
    system = csc_matrix((w, (i, j)), shape=(unknown.size, unknown.size))
    solved = spsolve(system, right_side)
    result.reshape(channels, -1)[:, unknown] = np.asarray(solved).reshape(unknown.size, channels).T
    return result
