"""Plotting attribution maps: normalise, overlay on the image, compare methods side by side.

Every function accepts torch tensors or numpy arrays: images as ``[3, H, W]``,
``[1, 3, H, W]`` or ``H x W x 3``; maps as ``[H, W]``, ``[1, H, W]``, ``[1, 1, H, W]`` or
``[3, H, W]`` / ``[1, 3, H, W]`` (reduced over channels with the max of |value|, as
Simonyan et al. do). Nothing here modifies its inputs. Colours come from matplotlib
colormaps.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Union

import matplotlib.pyplot as plt
import numpy as np
import PIL.Image
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from saliencylab import _validate as validate
from saliencylab._core import SaliencyLabError

ArrayLike = Union[torch.Tensor, np.ndarray, PIL.Image.Image]


def normalize_map(
    saliency_map: ArrayLike,
    percentile: float | None = None,
    symmetric: bool = False,
) -> ArrayLike:
    """Rescale a map to ``[0, 1]`` (or ``[-1, 1]``), returning a NEW tensor/array of the same type.

    Args:
        saliency_map: any shape, tensor or array; it is never modified.
        percentile: ``None`` uses the min and max; e.g. ``99`` clips at the 1st and 99th
            percentiles first (``symmetric``: at the 99th percentile of |value|), so a few
            extreme pixels do not wash out the rest.
        symmetric: keep the sign: divide by the largest |value| and return ``[-1, 1]``,
            with 0 staying 0 (useful for signed maps such as occlusion or IG).
    Returns:
        Same type, shape and device as the input, float. A constant map gives zeros, never
        NaN (with ``symmetric``: its sign, so an all-zero map stays zeros). NaN pixels are
        ignored when finding the range. Min-max scaling hides absolute magnitudes: compare
        raw values when comparing maps of different images or models.
    """
    values = _as_float_numpy(saliency_map)
    scaled = _scale_to_unit(values, percentile, symmetric)
    if isinstance(saliency_map, torch.Tensor):
        dtype = saliency_map.dtype if saliency_map.is_floating_point() else torch.float32
        return torch.from_numpy(scaled).to(saliency_map.device, dtype)
    return scaled


def _scale_to_unit(values: np.ndarray, percentile: float | None, symmetric: bool) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros_like(values)
    if percentile is not None and not 50 < percentile <= 100:
        raise SaliencyLabError(f"percentile must be in (50, 100], got {percentile}.")
    if symmetric:
        magnitudes = np.abs(finite)
        top = np.percentile(magnitudes, percentile) if percentile else magnitudes.max()
        if top <= 0:
            return np.zeros_like(values)
        return np.clip(values / top, -1.0, 1.0)
    if percentile:
        low, high = np.percentile(finite, [100 - percentile, percentile])
    else:
        low, high = finite.min(), finite.max()
    if high <= low:
        return np.zeros_like(values)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def overlay(
    image: ArrayLike,
    heatmap: ArrayLike,
    alpha: float = 0.5,
    cmap: str = "jet",
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Draw ``image`` with ``heatmap`` (min-max normalised, coloured by ``cmap``) on top.

    The heatmap is upsampled (bilinear) to the image size when the sizes differ, e.g. a
    7x7 Grad-CAM map on a 224x224 image. Returns the axes drawn on (a new figure when
    ``ax`` is ``None``).
    """
    alpha = validate.fraction(alpha, "alpha")
    picture = to_display_image(image)
    height, width = picture.shape[:2]
    values = normalize_map(_resize_map(to_display_map(heatmap), (height, width)))
    colors = colormaps[cmap](values)[..., :3]
    ax = ax if ax is not None else plt.subplots()[1]
    ax.imshow((1 - alpha) * picture + alpha * colors)
    _tidy(ax, title)
    return ax


def show_maps(
    image: ArrayLike,
    maps: Mapping[str, ArrayLike],
    cmap: str | None = None,
    alpha: float | None = None,
    percentile: float | None = None,
    size: float = 3.0,
    signed: bool = False,
) -> Figure:
    """One row per image: the image first, then each map under its name.

    Args:
        image: one image, or a batch ``[B, 3, H, W]`` (then each map holds ``B`` maps, e.g.
            ``[B, H, W]``, and the figure has ``B`` rows).
        maps: ``{"method name": map}``; each map is shown normalised with ``cmap``
            (default ``"jet"``, or ``"bwr"`` when ``signed``).
        alpha: ``None`` shows each map alone; a number overlays it on the image instead.
        percentile: passed to :func:`normalize_map` (e.g. ``99`` tames outliers).
        size: inches per panel.
        signed: keep the sign of maps such as occlusion, Integrated Gradients or
            ``reduce=None`` gradients (3 channels are summed): each is divided by its largest
            |value| and drawn in ``[-1, 1]`` with 0 in the middle of the colormap (red raises
            the class score, blue lowers it). Signed maps are drawn alone, not overlaid
            (``alpha`` must be ``None``).
    Returns:
        The figure, with ``B x (1 + len(maps))`` axes.
    """
    if not maps:
        raise SaliencyLabError("maps is empty: pass e.g. {'saliency': saliency(model, x)}.")
    if signed and alpha is not None:
        raise SaliencyLabError(
            "signed maps are drawn alone (an overlay cannot show the sign): drop alpha, or "
            "pass signed=False to overlay the min-max normalised maps."
        )
    cmap = cmap or ("bwr" if signed else "jet")
    low = -1.0 if signed else 0.0
    rows = _batch_rows(image, maps)
    panels = 1 + len(maps)
    figure, axes = plt.subplots(
        len(rows), panels, figsize=(size * panels, size * len(rows)), squeeze=False
    )
    for row_axes, (row_image, row_maps) in zip(axes, rows):
        picture = to_display_image(row_image)
        row_axes[0].imshow(picture)
        _tidy(row_axes[0], "image")
        for ax, (name, saliency_map) in zip(row_axes[1:], row_maps.items()):
            values = to_display_map(saliency_map, signed=signed)
            if alpha is None:
                shown = normalize_map(values, percentile, symmetric=signed)
                ax.imshow(shown, cmap=cmap, vmin=low, vmax=1.0)
                _tidy(ax, name)
            else:
                shown = normalize_map(values, percentile)
                overlay(picture, shown, alpha=alpha, cmap=cmap, ax=ax, title=name)
    figure.tight_layout()
    return figure


def show_grid(
    rows: Sequence[Sequence[ArrayLike]],
    column_titles: Sequence[str] = (),
    row_titles: Sequence[str] = (),
    *,
    titles: Sequence[Sequence[str]] | None = None,
    columns: int | None = None,
    signed: bool | Collection[int] = False,
    cmap: str = "inferno",
    percentile: float | None = 99.0,
    size: float = 2.4,
    title: str | None = None,
) -> Figure:
    """A grid of pictures and maps: one row per image (or per setting), one column per method.

    Args:
        rows: a list of rows, each a list of panels. A panel with 3 colour channels
            (``[3, H, W]``, ``[1, 3, H, W]`` or ``H x W x 3``) is drawn as a picture (values
            clipped to ``[0, 1]``); an ``[H, W]`` panel is a map, drawn with ``cmap`` from its
            lowest to its highest value (:func:`normalize_map` with ``percentile``, so a few
            extreme pixels do not wash out the rest). With ``columns``, ``rows`` is instead one
            flat list of panels, laid out ``columns`` to a row.
        column_titles: shown above the first row; row_titles: at the left of each row.
        titles: one title per panel, nested like ``rows`` (flat with ``columns``), for grids
            whose every panel needs its own name.
        signed: ``True`` draws every map with its sign (``bwr``: blue < 0, white = 0, red > 0,
            divided by its ``percentile`` of |value|); a collection of column indices does so
            for those columns only.
        size: inches per panel; title: above the whole grid.
    Returns:
        The figure (end the notebook line with ``;`` so Jupyter shows it once).
    """
    grid = _grid_rows(rows, columns)
    panel_titles = _grid_rows(titles, columns) if titles is not None else None
    width = max(len(row) for row in grid)
    figure, axes = plt.subplots(
        len(grid), width, squeeze=False, figsize=(size * width, size * len(grid) + 0.3)
    )
    for ax in axes.flat:
        ax.set_axis_off()
    for r, row in enumerate(grid):
        for c, panel in enumerate(row):
            ax = axes[r, c]
            is_signed = signed is True or (not isinstance(signed, bool) and c in signed)
            _draw_panel(ax, panel, is_signed, cmap, percentile)
            label = panel_titles[r][c] if panel_titles is not None else None
            if label is None and r == 0 and c < len(column_titles):
                label = column_titles[c]
            if label:
                ax.set_title(label, fontsize=9)
            if c == 0 and r < len(row_titles):
                ax.set_axis_on()  # the row title is the y label, which needs the axis shown
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_ylabel(row_titles[r], fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def show_images(
    images: Sequence[ArrayLike] | torch.Tensor,
    titles: Sequence[str] = (),
    columns: int | None = None,
    size: float = 2.4,
    stretch: bool = False,
    same_stretch: bool = False,
) -> Figure:
    """Pictures in a grid with their titles: a batch ``[N, 3, H, W]`` or a list of images.

    Args:
        images: each ``[3, H, W]``, ``[1, 3, H, W]`` or ``H x W x 3``, values in ``[0, 1]``.
        columns: pictures per row (default: all in one row).
        stretch: magnify each picture's deviation from grey until 99.5 % of it fits the display
            (for generated images that stay close to grey, e.g. class visualisations);
            ``same_stretch`` uses the first picture's factor for all, so paler ones stay paler.
    Returns:
        The figure.
    """
    pictures = [to_display_image(image) for image in images]
    if stretch:
        spreads = [max(float(np.quantile(np.abs(p - 0.5), 0.995)), 1e-6) for p in pictures]
        if same_stretch:
            spreads = [spreads[0]] * len(pictures)
        pictures = [np.clip(0.5 + 0.5 * (p - 0.5) / spread, 0, 1) for p, spread in zip(pictures, spreads)]
    figure = show_grid(pictures, columns=columns or max(len(pictures), 1),
                       titles=list(titles) + [""] * (len(pictures) - len(titles)), size=size)
    return figure


def _grid_rows(rows: Sequence, columns: int | None) -> list[list]:
    """The panels as a list of rows; a flat list is cut into rows of ``columns``."""
    if columns is None:
        grid = [list(row) for row in rows]
    else:
        columns = validate.positive_int(columns, "columns")
        flat = list(rows)
        grid = [flat[i:i + columns] for i in range(0, len(flat), columns)]
    if not grid or not any(grid):
        raise SaliencyLabError("nothing to show: rows is empty.")
    return grid


def _draw_panel(ax: Axes, panel: ArrayLike, signed: bool, cmap: str, percentile: float | None) -> None:
    shape = tuple(np.shape(panel))
    while len(shape) > 2 and shape[0] == 1:
        shape = shape[1:]
    if not (len(shape) == 3 and 3 in (shape[0], shape[-1])):
        values = to_display_map(panel, signed=signed)
        if signed:
            ax.imshow(normalize_map(values, percentile, symmetric=True), cmap="bwr", vmin=-1, vmax=1)
        else:
            ax.imshow(normalize_map(values, percentile), cmap=cmap, vmin=0, vmax=1)
    else:
        ax.imshow(to_display_image(panel), interpolation="nearest")


def _batch_rows(
    image: ArrayLike, maps: Mapping[str, ArrayLike]
) -> list[tuple[ArrayLike, dict[str, ArrayLike]]]:
    """``[(image, maps)]`` for one image; one pair per image for a ``[B, 3, H, W]`` batch."""
    count = image.shape[0] if isinstance(image, (torch.Tensor, np.ndarray)) and image.ndim == 4 else 1
    if count == 1:
        return [(image, dict(maps))]
    for name, saliency_map in maps.items():
        if np.ndim(saliency_map) < 3 or np.shape(saliency_map)[0] != count:
            raise SaliencyLabError(
                f"image is a batch of {count} but map {name!r} has shape "
                f"{list(np.shape(saliency_map))}: give {count} maps ([{count}, H, W]) or show "
                "one image, image[i], with its maps[i]."
            )
    return [(image[i], {name: m[i] for name, m in maps.items()}) for i in range(count)]


def visualize(
    image: ArrayLike,
    grads: ArrayLike,
    max_grads: bool = True,
    cmap: str = "viridis",
    alpha: float = 0.5,
    size: float = 3.0,
) -> Figure:
    """FlashTorch-style triptych: the input image, the gradients, and the gradients overlaid.

    Args:
        image: the input image.
        grads: input gradients ``[3, H, W]`` (or an already reduced ``[H, W]`` map).
        max_grads: show the max over colour channels of |gradient| (Simonyan et al.);
            ``False`` shows |gradient| as an RGB image (each channel normalised together).
    Returns:
        The figure, with 3 axes.
    """
    picture = to_display_image(image)
    figure, axes = plt.subplots(1, 3, figsize=(3 * size, size), squeeze=False)
    axes[0, 0].imshow(picture)
    _tidy(axes[0, 0], "input image")
    reduced = to_display_map(grads)
    if max_grads or _as_float_numpy(grads).squeeze().ndim == 2:
        axes[0, 1].imshow(normalize_map(reduced), cmap=cmap, vmin=0.0, vmax=1.0)
        _tidy(axes[0, 1], "max gradients" if max_grads else "gradients")
    else:
        axes[0, 1].imshow(to_display_image(normalize_map(abs(grads))))
        _tidy(axes[0, 1], "gradients")
    overlay(picture, reduced, alpha=alpha, cmap=cmap, ax=axes[0, 2], title="overlay")
    figure.tight_layout()
    return figure


def to_display_image(image: ArrayLike) -> np.ndarray:
    """An image as a new ``H x W x 3`` float array in ``[0, 1]`` for ``imshow``.

    Tensors are channels-first (``[3, H, W]`` or ``[1, 3, H, W]``); numpy arrays may be
    ``H x W x 3`` (float in ``[0, 1]`` or uint8) or channels-first; ``[H, W]`` is greyscale;
    PIL images (e.g. from ``load_image``) are converted to RGB.
    """
    if isinstance(image, PIL.Image.Image):
        image = np.asarray(image.convert("RGB"))
    integer = isinstance(image, np.ndarray) and np.issubdtype(image.dtype, np.integer)
    values = _as_float_numpy(image)
    values = values / 255.0 if integer else values
    if values.ndim == 4 and values.shape[0] == 1:
        values = values[0]
    if values.ndim == 2:
        values = np.repeat(values[..., None], 3, axis=2)
    elif values.ndim == 3 and _is_channels_first(image, values):
        values = np.transpose(values, (1, 2, 0))
    if values.ndim != 3 or values.shape[2] != 3:
        raise SaliencyLabError(
            f"image must be [3, H, W], [1, 3, H, W] or H x W x 3, got shape "
            f"{list(np.shape(image))}."
        )
    return np.clip(values, 0.0, 1.0)


def _is_channels_first(original: ArrayLike, values: np.ndarray) -> bool:
    """Tensors follow PyTorch's [C, H, W]; arrays follow imshow's H x W x C unless they can't."""
    if isinstance(original, torch.Tensor):
        return values.shape[0] == 3
    return values.shape[2] != 3 and values.shape[0] == 3


def to_display_map(saliency_map: ArrayLike, signed: bool = False) -> np.ndarray:
    """A map as a new ``[H, W]`` float array: batch/channel dims of size 1 dropped, 3 channels
    reduced with max |value| (``signed``: summed, which keeps the sign and the total, as
    Integrated Gradients' completeness needs)."""
    values = _as_float_numpy(saliency_map)
    while values.ndim > 2 and values.shape[0] == 1:
        values = values[0]
    for axis in (0, 2):
        if values.ndim == 3 and values.shape[axis] == 3:
            values = values.sum(axis=axis) if signed else np.abs(values).max(axis=axis)
            break
    if values.ndim != 2:
        raise SaliencyLabError(
            f"a map must be [H, W], [1, H, W] or [3, H, W] (one image), got shape "
            f"{list(_as_float_numpy(saliency_map).shape)}: index one image of a batch, maps[i]."
        )
    return values


def _as_float_numpy(data: ArrayLike) -> np.ndarray:
    """A float64 numpy COPY of a tensor or array (so callers may modify it freely)."""
    if isinstance(data, torch.Tensor):
        return data.detach().to("cpu", torch.float64).numpy().copy()
    if isinstance(data, np.ndarray):
        return data.astype(np.float64, copy=True)
    raise SaliencyLabError(f"expected a torch.Tensor or numpy array, got {type(data).__name__}.")


def _resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if values.shape == size:
        return values
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(values)[None, None], size=size, mode="bilinear", align_corners=False
    )
    return resized[0, 0].numpy()


def _tidy(ax: Axes, title: str | None) -> None:
    ax.set_axis_off()
    if title:
        ax.set_title(title)
