"""Interactive explorers: one figure whose parameters are sliders, for lectures and lessons.

Each ``explore_*`` function computes with the library's own method and returns an
:class:`Explorer`; ending a notebook cell with it shows the controls above the figure::

    from saliencylab.explorers import explore_smoothgrad
    explore_smoothgrad(model, image, target)          # noise level and sample count

=====================================  ====================================================
``explore_smoothgrad``                 noise level, number of samples
``explore_occlusion``                  window, stride, fill of the window
``explore_gradcam``                    class, layer
``explore_integrated_gradients``       baseline, steps; the completeness error shown live
``explore_class_visualization``        L2 penalty, blur, jitter
=====================================  ====================================================

**Pure update functions.** :meth:`Explorer.update` maps parameters to a :class:`Rendered`
result (the maps, the figure as PNG bytes, the numbers shown); the same parameters always
give the same result (everything random is seeded), and results are cached by parameters, so
going back to a setting is instant. The widgets only call it: unit tests need no browser.

**Speed.** Every update aims at about a second on 2 CPU cores: the image is resized (shorter
side ``size``, e.g. 112-128 px) and work is shared between settings where the method allows
(SmoothGrad computes the noisy gradients of a noise level once, for ``max_samples``; any
sample count is the mean of the first ``n``). ``bench/bench_explorers.py`` measures them.

**Static fallback.** Displayed in a notebook, an explorer gives two outputs: a static PNG of
its default setting (``image/png``) and the widget. Where no live widget frontend renders it
(nbval, ``jupyter nbconvert --to html`` or ``--to slides``) the PNG is what shows, so lessons
and slides always have the figure: nbclient stores the widgets' state in the notebook, and
nbconvert then renders the widget view by loading the widget manager from a CDN (nothing
offline), never the view's own ``image/png``, hence the separate output. In a live frontend the
widget reports its first view through ipywidgets' ``_view_count`` (a frontend built on
``@jupyter-widgets/base``: checked in JupyterLab 4 with ipywidgets 8) and the static output is
then emptied, so the figure is not shown twice. The widget output's ``text/plain`` says that the
controls need a running kernel. (An HTML export viewed online, where the CDN loads, also draws
the saved widget, inert, under the static PNG.) Lesson cells start with
``# NBVAL_IGNORE_OUTPUT``.

**Finding the parts in a browser** (stable CSS classes, e.g. for Playwright)::

    .saliencylab-explorer                 the whole explorer (a VBox), also
    .saliencylab-explorer-<kind>          smoothgrad, occlusion, gradcam,
                                          integrated_gradients, class_visualization
    img.saliencylab-explorer-figure       the figure (an ipywidgets.Image; its src changes)
    .saliencylab-explorer-control-<name>  a control, <name> = update()'s keyword, e.g.
                                          noise_level; its description is the label shown
    .saliencylab-explorer-status          "computing ..." while an update runs, else empty

Sliders (``SelectionSlider``, ``continuous_update=False``) update when released; ArrowRight or
ArrowLeft on a focused handle (``.saliencylab-explorer-control-<name> .noUi-handle``) moves it
one option; drop-downs are ``<select>`` elements.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
import textwrap
import warnings
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import ipywidgets
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import display
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from saliencylab import _validate as validate
from saliencylab._core import (
    HookSet,
    SaliencyLabError,
    TargetLike,
    auto_batch_size,
    batch_slices,
    class_count,
    eval_mode,
    make_generator,
    random_normal,
    reduce_channels,
    resolve_targets,
)
from saliencylab.attribution import (
    class_visualization,
    gradcam,
    integrated_gradients,
    occlusion,
    saliency,
)
from saliencylab.models import default_layer
from saliencylab.plotting import normalize_map, overlay, to_display_image, to_display_map

__all__ = [
    "Control",
    "Panel",
    "Scene",
    "Rendered",
    "Explorer",
    "render_png",
    "explore_smoothgrad",
    "explore_occlusion",
    "explore_gradcam",
    "explore_integrated_gradients",
    "explore_class_visualization",
]

CSS_PREFIX = "saliencylab-explorer"
PANEL_INCHES = 2.4
DPI = 100  # 2.4-inch panels of 240 px: sharp on a slide, quick to encode
CAPTION_CHARS_PER_INCH = 14  # at fontsize 9
MAX_FIGURE_INCHES = 10.0  # 1000 px: JupyterLab's default notebook width
Number = Union[int, float]
Fill = Union[float, torch.Tensor]


# =============================================================================== building blocks


@dataclass(frozen=True)
class Control:
    """One parameter of an explorer: a slider over numbers or a drop-down of names.

    Attributes:
        name: the keyword of :meth:`Explorer.update` (and of the CSS class of its widget).
        label: the description shown next to the widget.
        options: ``(text shown, value passed)`` pairs, in display order.
        default: the value the explorer starts with (one of the options' values).
        slider: ``True``: an ``ipywidgets.SelectionSlider``; ``False``: a ``Dropdown``.
    """

    name: str
    label: str
    options: tuple[tuple[str, Hashable], ...]
    default: Hashable
    slider: bool = True

    @property
    def values(self) -> tuple[Hashable, ...]:
        return tuple(value for _, value in self.options)

    def checked(self, value: object) -> Hashable:
        """``value`` when it is one of the options' values, else a clear error."""
        return validate.one_of(value, self.name, self.values)

    def make_widget(self) -> ipywidgets.ValueWidget:
        """The widget, with its stable CSS classes (see the module docstring)."""
        common = dict(options=list(self.options), value=self.default, description=self.label,
                      style={"description_width": "initial"})
        if self.slider:
            widget = ipywidgets.SelectionSlider(**common, continuous_update=False)
        else:
            widget = ipywidgets.Dropdown(**common)
        widget.add_class(f"{CSS_PREFIX}-control")
        widget.add_class(f"{CSS_PREFIX}-control-{self.name}")
        return widget


@dataclass(frozen=True)
class Panel:
    """One picture of an explorer's figure.

    ``image`` alone is drawn as a picture (``stretch``: its deviation from grey magnified until
    99.5 % of it fits, for generated images that stay near grey); ``heatmap`` alone as a map
    (``signed``: blue < 0 < red, else ``inferno``), clipped at its 99th percentile; both: the
    heatmap overlaid on the image. ``note`` instead of a picture: a short text.
    """

    title: str
    image: torch.Tensor | None = None  # [3, H, W] in [0, 1]
    heatmap: torch.Tensor | None = None  # [H, W]
    signed: bool = False
    stretch: bool = False
    note: str | None = None


@dataclass(frozen=True)
class Scene:
    """What an explorer's compute function returns for one setting.

    Attributes:
        panels: the pictures of the figure, left to right.
        maps: the tensors computed (e.g. ``{"smoothgrad": [H, W]}``), for tests and reuse.
        numbers: the numbers shown (e.g. ``{"completeness_error": -0.8}``).
        caption: one line under the figure (numbers rounded to what they mean).
    """

    panels: Sequence[Panel]
    maps: Mapping[str, torch.Tensor] = field(default_factory=dict)
    numbers: Mapping[str, float] = field(default_factory=dict)
    caption: str = ""


@dataclass(frozen=True, eq=False)
class Rendered:
    """The result of :meth:`Explorer.update`: one setting, computed and drawn.

    Attributes:
        params: every parameter, by keyword.
        maps, numbers, caption: as in :class:`Scene`.
        png: the figure, PNG bytes (what the widget and the static fallback show).
    """

    params: Mapping[str, Hashable]
    maps: Mapping[str, torch.Tensor]
    numbers: Mapping[str, float]
    caption: str
    png: bytes


# =============================================================================== the explorer


class Explorer:
    """A figure whose parameters are controls: a pure update function plus its widgets.

    Args:
        kind: short name, used in CSS classes (``saliencylab-explorer-<kind>``).
        title: shown above the figure and in the text fallbacks.
        controls: the parameters, in the order shown.
        compute: ``compute(**params) -> Scene``, deterministic; called once per new setting.

    The default setting is computed when the explorer is made, so a mistake in the arguments
    raises at once, and the figure is ready to show. Attributes: ``controls`` (widgets by
    keyword), ``figure`` (``ipywidgets.Image``), ``status`` (``ipywidgets.HTML``), ``widget``
    (the ``VBox`` holding them).
    """

    def __init__(
        self, kind: str, title: str, controls: Sequence[Control], compute: Callable[..., Scene]
    ) -> None:
        self.kind, self.title = kind, title
        self._controls = {control.name: control for control in controls}
        self._compute = compute
        self._cache: dict[tuple[Hashable, ...], Rendered] = {}
        self._static_outputs: list[Any] = []  # display handles to empty once the widget is seen
        first = self.update()
        self.controls = {name: control.make_widget() for name, control in self._controls.items()}
        # its own pixel size (a VBox would stretch it to the output's width, blurred)
        self.figure = ipywidgets.Image(value=first.png, format="png",
                                       layout={"align_self": "flex-start", "max_width": "100%"})
        self.figure.add_class(f"{CSS_PREFIX}-figure")
        self.status = ipywidgets.HTML(value="")
        self.status.add_class(f"{CSS_PREFIX}-status")
        self.widget = ipywidgets.VBox([
            ipywidgets.HTML(value=f"<b>{html.escape(title)}</b>"),
            ipywidgets.HBox(list(self.controls.values()), layout={"flex_flow": "row wrap"}),
            self.figure,
            self.status,
        ])
        for css_class in (CSS_PREFIX, f"{CSS_PREFIX}-{kind}"):
            self.widget.add_class(css_class)
        for widget in self.controls.values():
            widget.observe(self._on_control_change, names="value")
        self.widget._view_count = 0  # ask the frontend to count the views it shows
        self.widget.observe(self._on_view_count, names="_view_count")

    # ------------------------------------------------------------------ the pure part

    @property
    def defaults(self) -> dict[str, Hashable]:
        """The setting the explorer starts with (and the static figure shows)."""
        return {name: control.default for name, control in self._controls.items()}

    def update(self, **params: Hashable) -> Rendered:
        """The explorer's result for ``params`` (missing ones: the defaults), cached.

        Raises:
            SaliencyLabError: an unknown parameter, or a value that is not one of its options.
        """
        unknown = sorted(set(params) - set(self._controls))
        if unknown:
            raise SaliencyLabError(
                f"{self.title} has no parameter {unknown[0]!r}; its parameters are "
                f"{list(self._controls)}."
            )
        setting = {**self.defaults, **params}
        setting = {name: self._controls[name].checked(value) for name, value in setting.items()}
        key = tuple(setting.values())
        if key not in self._cache:
            scene = self._compute(**setting)
            png = render_png(scene.panels, scene.caption)
            self._cache[key] = Rendered(setting, scene.maps, scene.numbers, scene.caption, png)
        return self._cache[key]

    # ------------------------------------------------------------------ the widgets

    @property
    def values(self) -> dict[str, Hashable]:
        """The setting the controls show now."""
        return {name: widget.value for name, widget in self.controls.items()}

    def _on_control_change(self, _change: Mapping[str, Any]) -> None:
        self.status.value = "computing ..."
        try:
            self.figure.value = self.update(**self.values).png
            self.status.value = ""
        except Exception as error:  # shown where the student looks, not in a log console
            self.status.value = (f"<span style='color: #b00'>{type(error).__name__}: "
                                 f"{html.escape(str(error))}</span>")
            raise

    # ------------------------------------------------------------------ display

    def static_bundle(self) -> dict[str, str]:
        """The static fallback: the default setting's figure as a display bundle.

        ``{"image/png": base64 PNG, "text/plain": a description}``, deterministic.
        """
        default = self.update()
        return {
            "image/png": base64.b64encode(default.png).decode("ascii"),
            "text/plain": f"<{self.title}: {default.caption or 'default setting'}>",
        }

    def _ipython_display_(self) -> None:
        """Show the static figure, then the widget; the first live view empties the former."""
        self._static_outputs.append(display(self.static_bundle(), raw=True, display_id=True))
        bundle = self.widget._repr_mimebundle_()
        bundle["text/plain"] = (
            f"<{self.title}: its controls need a running kernel; run the notebook in Jupyter>"
        )
        display(bundle, raw=True)

    def _on_view_count(self, change: Mapping[str, Any]) -> None:
        if (change["new"] or 0) > 0:
            while self._static_outputs:
                handle = self._static_outputs.pop()
                if handle is not None:
                    handle.update({"text/plain": ""}, raw=True)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind}: {self.values}>"


# =============================================================================== drawing


def render_png(panels: Sequence[Panel], caption: str = "") -> bytes:
    """Draw ``panels`` side by side (and ``caption`` under them) to PNG bytes.

    Panels are ``PANEL_INCHES`` high and as wide as the first picture's aspect ratio asks,
    the whole figure at most ``MAX_FIGURE_INCHES`` wide. Uses a bare
    ``matplotlib.figure.Figure`` on the Agg canvas, never pyplot: nothing is registered with
    pyplot, so the notebook's inline backend never shows it a second time, and nothing needs
    closing; the figure's artists are cleared after encoding.
    """
    if not panels:
        raise SaliencyLabError("a figure needs at least one panel.")
    panel_width = PANEL_INCHES * _aspect(panels)
    scale = min(1.0, MAX_FIGURE_INCHES / (panel_width * len(panels)))
    panel_width, panel_height = panel_width * scale, PANEL_INCHES * scale
    width = max(panel_width * len(panels), 2 * PANEL_INCHES)  # room for the caption
    lines = textwrap.wrap(caption, width=int(width * CAPTION_CHARS_PER_INCH)) if caption else []
    caption_inches = 0.1 + 0.17 * len(lines) if lines else 0.0
    figure = Figure(figsize=(width, panel_height + 0.3 + caption_inches), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        _draw_panel(ax, panel)
    bottom = caption_inches / figure.get_figheight()
    if lines:
        figure.text(0.5, bottom / 2, "\n".join(lines), ha="center", va="center", fontsize=9)
    figure.tight_layout(rect=(0, bottom, 1, 1), pad=0.6)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    figure.clear()
    return buffer.getvalue()


def _aspect(panels: Sequence[Panel]) -> float:
    """Width over height of the first panel's picture, between 0.5 and 2.5 (1 for text)."""
    for panel in panels:
        picture = panel.image if panel.image is not None else panel.heatmap
        if picture is not None:
            height, width = picture.shape[-2:]
            return min(max(width / height, 0.5), 2.5)
    return 1.0


def _draw_panel(ax: Axes, panel: Panel) -> None:
    ax.set_axis_off()
    ax.set_title(panel.title, fontsize=9)
    if panel.note is not None:
        ax.text(0.5, 0.5, panel.note, ha="center", va="center", wrap=True, fontsize=9,
                transform=ax.transAxes)
    elif panel.image is not None and panel.heatmap is not None:
        overlay(panel.image, panel.heatmap, alpha=0.5, cmap="jet", ax=ax)
    elif panel.image is not None:
        picture = to_display_image(panel.image)
        ax.imshow(_stretched(picture) if panel.stretch else picture, interpolation="nearest")
    elif panel.heatmap is not None:
        values = normalize_map(to_display_map(panel.heatmap), 99.0, symmetric=panel.signed)
        ax.imshow(values, cmap="bwr" if panel.signed else "inferno",
                  vmin=-1.0 if panel.signed else 0.0, vmax=1.0)


def _stretched(picture: np.ndarray) -> np.ndarray:
    """``H x W x 3`` in ``[0, 1]`` with its deviation from grey magnified (as
    ``plotting.show_images(stretch=True)`` does)."""
    spread = max(float(np.quantile(np.abs(picture - 0.5), 0.995)), 1e-6)
    return np.clip(0.5 + 0.5 * (picture - 0.5) / spread, 0.0, 1.0)


# =============================================================================== shared helpers


def _prepared_image(model: nn.Module, image: torch.Tensor, size: int | None) -> torch.Tensor:
    """One image as ``[1, 3, h, w]``, resized (bilinear, antialiased) so that its shorter side
    is ``size`` (``None``: as given). The model is checked first, so a swapped
    ``(image, model)`` gets the error that says so; then that both are on one device."""
    validate.nn_module(model)
    batch, _ = validate.one_image(image, "image")
    validate.same_device(batch, model)
    batch = batch.detach()
    if size is None:
        return batch
    size = validate.positive_int(size, "size")
    height, width = batch.shape[-2:]
    scale = size / min(height, width)
    shape = (round(height * scale), round(width * scale))
    if shape == (height, width):
        return batch
    return F.interpolate(batch, size=shape, mode="bilinear", antialias=True).clamp(0.0, 1.0)


def _one_target(model: nn.Module, batch: torch.Tensor, target: TargetLike) -> int:
    """The class to explain for ``batch [1, 3, h, w]``: ``None`` = the top class."""
    if target is not None and not isinstance(target, (int, np.integer, torch.Tensor)):
        raise SaliencyLabError(f"target must be one class index (int) or None, got {target!r}.")
    with eval_mode(model, batch):
        return int(resolve_targets(model, batch, target)[0])


def _class_name(model: nn.Module, index: int) -> str:
    names = getattr(model, "class_names", None)
    if names is None or names[index] == str(index):
        return f"class {index}"
    return f"{names[index]} ({index})"


def _numbers(
    values: Iterable[Number], name: str, check: Callable[[object, str], Number]
) -> tuple[Number, ...]:
    """The options of a slider: each value checked, duplicates dropped, sorted ascending."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise SaliencyLabError(f"{name} must be a list of numbers, got {values!r}.")
    checked = {check(value, f"{name}[{i}]") for i, value in enumerate(values)}
    if not checked:
        raise SaliencyLabError(f"{name} is empty: give at least one value.")
    return tuple(sorted(checked))


def _named(options: object, name: str) -> dict[str, Any]:
    """The options of a drop-down: a non-empty ``{name: value}`` mapping with ``str`` keys."""
    if not isinstance(options, Mapping):
        raise SaliencyLabError(
            f"{name} must be a dict {{name shown: value}}, got {type(options).__name__}."
        )
    if not options:
        raise SaliencyLabError(f"{name} is empty: give at least one entry.")
    bad = [key for key in options if not isinstance(key, str)]
    if bad:
        raise SaliencyLabError(f"the names in {name} must be strings, got {bad[0]!r}.")
    return dict(options)


def _slider(
    name: str, label: str, values: Sequence[Number], preferred: Number,
    text: Callable[[Number], str] = str,
) -> Control:
    """A slider over ``values``, starting at the one closest to ``preferred``."""
    start = min(values, key=lambda value: (abs(value - preferred), value))
    return Control(name, label, tuple((text(value), value) for value in values), start)


def _dropdown(name: str, label: str, names: Sequence[str], default: str | None = None) -> Control:
    """A drop-down of ``names`` (the value passed is the name), starting at ``default``."""
    return Control(name, label, tuple((n, n) for n in names), default or names[0], slider=False)


def _percent(value: Number) -> str:
    return f"{100 * value:.3g} %"


def _baseline_image(value: Fill, batch: torch.Tensor, original: torch.Tensor, name: str) -> torch.Tensor:
    """A fill or baseline as ``[1, 3, h, w]`` like ``batch``: a number, or an image of the
    explorer's size or of the ``original`` image's size (then resized like the image)."""
    if isinstance(value, torch.Tensor) and value.dim() in (3, 4):
        image, _ = validate.one_image(value, name)
        if image.shape[-2:] == original.shape[-2:] and image.shape[-2:] != batch.shape[-2:]:
            image = F.interpolate(image, size=batch.shape[-2:], mode="bilinear", antialias=True)
        value = image
    return validate.fill_value(value, batch, name).clone()


def _blurred(batch: torch.Tensor) -> torch.Tensor:
    """``batch [1, 3, h, w]`` under a Gaussian blur of sigma 1/16 of its shorter side."""
    sigma = min(batch.shape[-2:]) / 16
    kernel = 2 * math.ceil(3 * sigma) + 1
    kernel = min(kernel, 2 * ((min(batch.shape[-2:]) - 1) // 2) + 1)
    return gaussian_blur(batch, [kernel, kernel], [sigma, sigma])


# =============================================================================== SmoothGrad


def explore_smoothgrad(
    model: nn.Module,
    image: torch.Tensor,
    target: TargetLike = None,
    *,
    noise_levels: Sequence[float] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5),
    max_samples: int = 32,
    size: int | None = 128,
    seed: int = 0,
    batch_size: int | None = None,
) -> Explorer:
    """SmoothGrad with a slider for the noise level and one for the number of samples.

    Sample ``k``'s noise is the ``k``-th ``[1, 3, h, w]`` standard-normal draw of a CPU
    generator seeded with ``seed``: what :func:`~saliencylab.attribution.smoothgrad` draws with
    ``seed=seed`` and ``batch_size=1``, and with any batch size when ``h * w`` is a multiple of
    16. The ``max_samples`` gradients of a noise level are computed once, on its first use, in
    passes of ``batch_size`` copies in sample order; every sample count is then the running mean
    of the first ``n`` (no new passes). So the map for ``n`` samples is ``smoothgrad(model,
    image, target, samples=n, noise_level=level, seed=seed, batch_size=batch_size)`` on the
    resized image, to float rounding. Compare them with the same ``batch_size``: another batch
    size may run other kernels, whose rounding a ReLU network can amplify where an activation
    sits at a kink (measured on Lite0 at 128 px: 2e-3 of the largest gradient for one pass of
    25 copies against passes of 8).

    Args:
        model: classifier taking ``[N, 3, H, W]`` images in ``[0, 1]``.
        image: ``[3, H, W]`` or ``[1, 3, H, W]`` in ``[0, 1]``.
        target: the class explained; ``None``: the model's top class for the image.
        noise_levels: the noise slider's options (fractions of the image's value range).
        max_samples: the sample slider goes from 1 to this.
        size: shorter side the image is resized to (``None``: as given).
        seed: seeds the noise.
        batch_size: noisy images per pass (``None``: the library's choice for the model).
    Returns:
        The explorer; starts at the noise level nearest 15 % and ``max_samples`` samples.
    """
    batch = _prepared_image(model, image, size)
    target = _one_target(model, batch, target)
    levels = _numbers(noise_levels, "noise_levels", validate.non_negative_number)
    max_samples = validate.positive_int(max_samples, "max_samples")
    per_pass = validate.batch_size(batch_size) or auto_batch_size(model, batch)

    @functools.lru_cache(maxsize=None)
    def running_maps(level: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``([max_samples, h, w]``: at ``n - 1`` the map of the first ``n`` samples``,
        one noisy copy [3, h, w])``."""
        generator = make_generator(seed, None)
        noise = torch.cat([random_normal((1, *batch.shape[1:]), generator, like=batch)
                           for _ in range(max_samples)])
        noisy = batch + level * (batch.max() - batch.min()) * noise  # [K, 3, h, w], as smoothgrad
        gradients = torch.cat([_gradients_of_noisy_copies(model, noisy[part], target)
                               for part in batch_slices(max_samples, per_pass)])
        counts = torch.arange(1, max_samples + 1, dtype=batch.dtype, device=batch.device)
        means = gradients.cumsum(dim=0) / counts.view(-1, 1, 1, 1)  # [K, 3, h, w]
        return reduce_channels(means, "max_abs"), noisy[0]

    def compute(noise_level: float, samples: int) -> Scene:
        maps, noisy_copy = running_maps(noise_level)
        smooth = maps[samples - 1]
        return Scene(
            panels=[
                Panel("photo", image=batch[0]),
                Panel(f"one noisy copy ({_percent(noise_level)})", image=noisy_copy),
                Panel(f"SmoothGrad, n = {samples}", heatmap=smooth),
            ],
            maps={"smoothgrad": smooth},
            caption=f"{_class_name(model, target)}: mean |gradient| of {samples} noisy "
                    f"copies, noise {_percent(noise_level)} of the value range",
        )

    controls = [
        _slider("noise_level", "noise", levels, 0.15, _percent),
        _slider("samples", "samples", tuple(range(1, max_samples + 1)), max_samples),
    ]
    return Explorer("smoothgrad", "SmoothGrad: noise level and samples", controls, compute)


def _gradients_of_noisy_copies(model: nn.Module, noisy: torch.Tensor, target: int) -> torch.Tensor:
    """:func:`~saliencylab.attribution.saliency`'s signed gradients ``[N, 3, h, w]`` of noisy
    copies ``[N, 3, h, w]``. Their values leave ``[0, 1]`` on purpose, so saliency's warning
    about images normalised by hand does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*outside \[0, 1\]")
        return saliency(model, noisy, target, reduce=None)


# =============================================================================== occlusion


def explore_occlusion(
    model: nn.Module,
    image: torch.Tensor,
    target: TargetLike = None,
    *,
    windows: Sequence[int] = (16, 24, 32, 48),
    strides: Sequence[int] = (8, 16, 24),
    fills: Mapping[str, Fill] | None = None,
    size: int | None = 112,
    batch_size: int | None = None,
) -> Explorer:
    """Occlusion with sliders for the window and the stride, and a drop-down for the fill.

    The map is :func:`~saliencylab.attribution.occlusion` on the resized image with the same
    window, stride and ``baseline=fills[fill]`` (incremental where the model allows it). A
    stride larger than the window leaves pixels that no window covers: the figure says so
    instead of drawing a map.

    Args:
        model, image, target: as in :func:`explore_smoothgrad`.
        windows, strides: the sliders' options, in pixels of the resized image.
        fills: what a window shows, ``{name: number or image}``; an image may have the
            resized image's size or the original's. Default: grey 0.5, black, and the photo
            blurred (sigma 1/16 of its side).
        size: shorter side the image is resized to (``None``: as given).
        batch_size: occluded images per pass (``None``: the library's choice).
    Returns:
        The explorer; starts at window 32 and stride 16 (or the nearest options).
    """
    batch = _prepared_image(model, image, size)
    target = _one_target(model, batch, target)
    window_options = _numbers(windows, "windows", validate.positive_int)
    stride_options = _numbers(strides, "strides", validate.positive_int)
    if window_options[-1] > min(batch.shape[-2:]):
        resized = f" (resized to size={size})" if size is not None else ""
        raise SaliencyLabError(
            f"windows must fit the {'x'.join(map(str, batch.shape[-2:]))} image{resized}, "
            f"got {window_options[-1]}."
        )
    named = _named(fills, "fills") if fills is not None else {
        "grey 0.5": 0.5, "black 0": 0.0, "blurred photo": _blurred(batch)}
    fill_images = {name: _baseline_image(value, batch, image, f"fills[{name!r}]")
                   for name, value in named.items()}

    def compute(window: int, stride: int, fill: str) -> Scene:
        shown = _with_middle_window(batch, fill_images[fill], window)
        photo = Panel(f"window {window} px, filled with {fill}", image=shown[0])
        if stride > window:
            return Scene([photo, Panel("no map", note=f"stride {stride} > window {window}:\n"
                                                      "some pixels are never covered")],
                         caption="choose a stride no larger than the window")
        drop = occlusion(model, batch, target, window=window, stride=stride,
                         baseline=fill_images[fill], batch_size=batch_size)[0]
        passes = _window_count(batch.shape[-2:], window, stride)
        return Scene(
            panels=[photo, Panel(f"score drop, stride {stride}", heatmap=drop, signed=True)],
            maps={"occlusion": drop},
            numbers={"windows": passes},
            caption=f"{_class_name(model, target)}: {passes} windows, one forward pass each "
                    "(red: hiding it lowers the score)",
        )

    controls = [
        _slider("window", "window", window_options, 32),
        _slider("stride", "stride", stride_options, 16),
        _dropdown("fill", "fill", list(fill_images)),
    ]
    return Explorer("occlusion", "Occlusion: window, stride and fill", controls, compute)


def _with_middle_window(batch: torch.Tensor, fill: torch.Tensor, window: int) -> torch.Tensor:
    """``batch [1, 3, h, w]`` with a ``window`` square in the middle set to ``fill``."""
    height, width = batch.shape[-2:]
    top, left = (height - window) // 2, (width - window) // 2
    shown = batch.clone()
    shown[..., top:top + window, left:left + window] = fill[..., top:top + window, left:left + window]
    return shown


def _window_count(shape: Sequence[int], window: int, stride: int) -> int:
    """Windows occlusion evaluates (Captum's rule: one more, clipped, past an uneven edge)."""
    return math.prod(math.ceil((side - window) / stride) + 1 for side in shape)


# =============================================================================== Grad-CAM


def explore_gradcam(
    model: nn.Module,
    image: torch.Tensor,
    classes: Mapping[str, int] | Sequence[int] | None = None,
    layers: Mapping[str, nn.Module] | None = None,
    *,
    size: int | None = None,
) -> Explorer:
    """Grad-CAM with a drop-down for the class and one for the layer.

    Each map is :func:`~saliencylab.attribution.gradcam` with that class and layer (cheap: one
    forward pass and a backward pass down to the layer), overlaid on the photo.

    Args:
        model, image: as in :func:`explore_smoothgrad`.
        classes: the classes offered: ``{name: index}``, or indices (named from
            ``model.class_names``); default the model's 3 top classes for the image.
        layers: ``{name: module of the model}``; default the last block at each of the three
            coarsest resolutions, the last being ``saliencylab.models.default_layer(model)``
            (for EfficientNet-Lite0 at 224 px: blocks 4, 10 and the head, 28, 14 and 7 px).
        size: shorter side the image is resized to (default ``None``: as given).
    Returns:
        The explorer; starts at the first class and the last layer.
    """
    batch = _prepared_image(model, image, size)
    class_options = _gradcam_classes(model, batch, classes)
    feature_maps = _feature_maps(model, batch)
    layer_options = (_named(layers, "layers") if layers is not None
                     else _default_gradcam_layers(model, feature_maps))
    map_sizes = _layer_sizes(model, feature_maps, layer_options)

    def compute(target_class: str, layer: str) -> Scene:
        cam = gradcam(model, batch, class_options[target_class], layer=layer_options[layer])[0]
        height, width = map_sizes[layer]
        return Scene(
            panels=[Panel(f"{target_class} at {layer}", image=batch[0], heatmap=cam),
                    Panel(f"Grad-CAM ({height} x {width} map, upsampled)", heatmap=cam)],
            maps={"gradcam": cam},
            numbers={"map_height": height, "map_width": width},
            caption=f"layer {layer}: a {height} x {width} map, one cell per "
                    f"{batch.shape[-2] / height:.3g} x {batch.shape[-1] / width:.3g} pixels",
        )

    controls = [
        _dropdown("target_class", "class", list(class_options)),
        _dropdown("layer", "layer", list(layer_options), default=list(layer_options)[-1]),
    ]
    return Explorer("gradcam", "Grad-CAM: class and layer", controls, compute)


def _gradcam_classes(
    model: nn.Module, batch: torch.Tensor, classes: Mapping[str, int] | Sequence[int] | None
) -> dict[str, int]:
    """``{name shown: class index}``, each index checked against the model's class count."""
    count = class_count(model, batch)
    if classes is None:
        with eval_mode(model, batch), torch.no_grad():
            top = model(batch)[0].topk(min(3, count)).indices.tolist()
        return {_class_name(model, index): index for index in top}
    if isinstance(classes, Mapping):
        named = _named(classes, "classes")
        return {name: validate.class_index(index, f"classes[{name!r}]", count)
                for name, index in named.items()}
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Iterable):
        raise SaliencyLabError(f"classes must be a dict or a list of class indices, got {classes!r}.")
    indices = [validate.class_index(index, f"classes[{i}]", count) for i, index in enumerate(classes)]
    if not indices:
        raise SaliencyLabError("classes is empty: give at least one class index.")
    return {_class_name(model, index): index for index in indices}


def _feature_maps(model: nn.Module, batch: torch.Tensor) -> dict[nn.Module, tuple[int, int]]:
    """The ``(h, w)`` of the feature maps the model's blocks output on ``batch[:1]``, in the
    order the modules finish.

    A block is a module containing a convolution, or a shape-keeping layer after one (an
    activation, a batch norm; not a padding or a pooling, which change the grid). Only modules
    called once whose ``[N, C, h, w]`` output nothing modifies in place afterwards count (an
    in-place ReLU after a VGG conv would overwrite what Grad-CAM stores).
    """
    records: list[tuple[nn.Module, torch.Tensor, int]] = []
    calls: Counter[nn.Module] = Counter()
    with_conv = {module for module in model.modules()
                 if any(isinstance(part, nn.Conv2d) for part in module.modules())}

    def record(module: nn.Module, inputs: tuple, output: object) -> None:
        calls[module] += 1
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            return
        keeps_shape = bool(inputs) and isinstance(inputs[0], torch.Tensor) and inputs[0].shape == output.shape
        if module in with_conv or keeps_shape:
            records.append((module, output, output._version))

    with HookSet() as hooks, eval_mode(model, batch), torch.no_grad():
        for module in model.modules():
            if module is not model:
                hooks.add(module.register_forward_hook(record))
        model(batch[:1])
    return {module: tuple(output.shape[-2:]) for module, output, version in records
            if calls[module] == 1 and output._version == version}


def _default_gradcam_layers(
    model: nn.Module, feature_maps: Mapping[nn.Module, tuple[int, int]], count: int = 3
) -> dict[str, nn.Module]:
    """``default_layer(model)`` and, before it, the last block at each coarser resolution.

    "Blocks" are the modules of one nesting depth: the depth whose modules in ``feature_maps``
    (:func:`_feature_maps`) reach the most resolutions, the shallowest on a tie (Lite0:
    ``features.blocks.<i>``; ResNet: ``layer<i>``). Deeper modules are ignored because the
    first convolution of a strided block still outputs the previous resolution, so it would
    stand in for the block before it.
    """
    final = default_layer(model)
    names = {module: name for name, module in model.named_modules()}
    last_at: dict[int, dict[tuple[int, int], nn.Module]] = {}
    for module, size in feature_maps.items():
        if module is final:
            break
        last_at.setdefault(names[module].count("."), {})[size] = module
    final_size = feature_maps.get(final)
    if final_size is None or not last_at:
        return {names[final]: final}
    level = max(last_at, key=lambda depth: (len(last_at[depth]), -depth))
    coarser = [hw for hw in last_at[level]
               if hw[0] >= final_size[0] and hw[1] >= final_size[1] and hw != final_size]
    earlier = sorted(coarser, key=lambda hw: hw[0] * hw[1])[: count - 1]
    return {**{names[last_at[level][hw]]: last_at[level][hw] for hw in reversed(earlier)},
            names[final]: final}


def _layer_sizes(
    model: nn.Module, feature_maps: Mapping[nn.Module, tuple[int, int]], layers: Mapping[str, nn.Module]
) -> dict[str, tuple[int, int]]:
    """Each layer's output ``(h, w)``; a clear error for a layer Grad-CAM cannot explain."""
    modules = list(model.modules())
    for name, layer in layers.items():
        if not any(layer is module for module in modules):
            raise SaliencyLabError(
                f"layers[{name!r}] is not a module of this model: pick one from "
                "model.named_modules(), e.g. model.features[-1]."
            )
        if layer not in feature_maps:
            raise SaliencyLabError(
                f"layers[{name!r}] must run once per forward pass and output a [N, C, h, w] "
                "feature map that nothing changes in place afterwards: pick a convolutional "
                "block (an in-place ReLU after a conv modifies the conv's output)."
            )
    return {name: feature_maps[layer] for name, layer in layers.items()}


# =============================================================================== Integrated Gradients


def explore_integrated_gradients(
    model: nn.Module,
    image: torch.Tensor,
    target: TargetLike = None,
    *,
    baselines: Mapping[str, Fill] | None = None,
    steps: Sequence[int] = (2, 4, 8, 16, 32, 64),
    size: int | None = 128,
    method: str = "riemann_middle",
    batch_size: int | None = None,
    seed: int = 0,
) -> Explorer:
    """Integrated Gradients with a drop-down for the baseline and a slider for the steps; the
    completeness error is shown with every map.

    The map is :func:`~saliencylab.attribution.integrated_gradients` (``reduce="sum"``: signed,
    summed over colours) and the error is its ``return_error=True``:
    ``sum(attributions) - (f(x) - f(baseline))`` for the target logit ``f``.
    ``Rendered.numbers`` holds ``attribution_sum``, ``logit_change``, ``completeness_error``
    and ``relative_error`` (the error over ``|f(x) - f(baseline)|``).

    Args:
        model, image, target: as in :func:`explore_smoothgrad`.
        baselines: ``{name: number or image}``; an image may have the resized image's size or
            the original's. Default: black, grey 0.5, the photo blurred (sigma 1/16 of its
            side), and uniform noise (seeded with ``seed``).
        steps: the slider's options (gradient evaluations per map).
        size: shorter side the image is resized to (``None``: as given).
        method, batch_size: passed to ``integrated_gradients``.
    Returns:
        The explorer; starts at the first baseline and 16 steps (or the nearest option).
    """
    batch = _prepared_image(model, image, size)
    target = _one_target(model, batch, target)
    step_options = _numbers(steps, "steps", validate.positive_int)
    named = _named(baselines, "baselines") if baselines is not None else {
        "black": 0.0, "grey 0.5": 0.5, "blurred photo": _blurred(batch),
        "uniform noise": torch.rand(batch.shape, generator=make_generator(seed, None)).to(batch)}
    starts = {name: _baseline_image(value, batch, image, f"baselines[{name!r}]")
              for name, value in named.items()}

    def compute(baseline: str, steps: int) -> Scene:
        attributions, error = integrated_gradients(
            model, batch, target, baseline=starts[baseline], steps=steps, method=method,
            batch_size=batch_size, return_error=True, reduce="sum")
        total, error = attributions.sum().item(), error.item()
        change = total - error
        relative = error / abs(change) if change else math.inf
        return Scene(
            panels=[Panel("photo", image=batch[0]),
                    Panel(f"baseline: {baseline}", image=starts[baseline][0]),
                    Panel(f"IG, {steps} steps", heatmap=attributions[0], signed=True)],
            maps={"integrated_gradients": attributions[0]},
            numbers={"attribution_sum": total, "logit_change": change,
                     "completeness_error": error, "relative_error": relative},
            caption=f"sum of IG {total:.3g} vs f(x) - f(baseline) {change:.3g}: "
                    f"completeness error {error:+.3g} ({100 * relative:+.0f} %)",
        )

    controls = [
        _dropdown("baseline", "baseline", list(starts)),
        _slider("steps", "steps", step_options, 16),
    ]
    return Explorer("integrated_gradients", "Integrated Gradients: baseline and steps",
                    controls, compute)


# =============================================================================== class visualisation


def explore_class_visualization(
    model: nn.Module,
    target: int,
    *,
    l2_regs: Sequence[float] = (0.0, 0.01, 0.1, 0.3, 1.0),
    blur_sigmas: Sequence[float] = (0.0, 0.5, 0.7, 1.0, 1.5),
    jitters: Sequence[int] = (0, 1, 2, 4, 6),
    size: int | None = None,
    steps: int = 100,
    lr: float = 0.05,
    blur_every: int = 5,
    seed: int = 0,
    stretch: bool = False,
) -> Explorer:
    """Class visualisation with sliders for the three regularisers: L2, blur and jitter.

    Each image is :func:`~saliencylab.attribution.class_visualization` with those settings
    (``blur_sigma=0`` means no blur, ``blur_every=0``), from the same seeded start, so only the
    regulariser moved changes; beside it, the image with all three off. Each setting is a fresh
    ascent of ``steps`` steps, so keep the model or the image small: the defaults suit the
    digits CNN at 32 px (lesson 08's settings, about 0.1 s per image); for EfficientNet-Lite0
    pass e.g. ``size=64, steps=30, stretch=True`` (about a second per image on 2 cores).

    Args:
        model: classifier taking ``[N, 3, H, W]`` images in ``[0, 1]``.
        target: the class index to visualise.
        l2_regs, blur_sigmas, jitters: the sliders' options (``l2_reg``, ``blur_sigma`` in
            pixels, ``jitter`` in pixels).
        size: side of the image; ``None``: the model's ``input_size``, at most 64.
        steps, lr, blur_every, seed: passed to ``class_visualization``.
        stretch: show the images with their deviation from grey magnified (for ImageNet models,
            whose images stay close to grey).
    Returns:
        The explorer; starts at L2 0.01, blur 0.7 and jitter 2 (or the nearest options).
    """
    validate.nn_module(model)
    if size is None:
        size = min(getattr(model, "input_size", None) or 64, 64)
    size = validate.positive_int(size, "size")
    probe = torch.zeros((1, 3, size, size), device=_model_device(model))
    target = validate.class_index(target, "target", class_count(model, probe))
    settings = dict(size=size, steps=validate.positive_int(steps, "steps"),
                    lr=validate.positive_number(lr, "lr"), seed=seed, progress=False)
    blur_every = validate.positive_int(blur_every, "blur_every")

    @functools.lru_cache(maxsize=None)
    def visualisation(l2_reg: float, blur_sigma: float, jitter: int) -> torch.Tensor:
        """The ``[1, 3, size, size]`` image for these regularisers."""
        blur = dict(blur_every=blur_every, blur_sigma=blur_sigma) if blur_sigma else dict(blur_every=0)
        return class_visualization(model, target, l2_reg=l2_reg, jitter=jitter, **blur, **settings)

    def compute(l2_reg: float, blur_sigma: float, jitter: int) -> Scene:
        picture = visualisation(l2_reg, blur_sigma, jitter)
        with eval_mode(model, picture), torch.no_grad():
            logits = model(picture)[0]
        logit, probability = logits[target].item(), logits.softmax(dim=0)[target].item()
        return Scene(
            panels=[Panel(f"L2 {l2_reg:g}, blur {blur_sigma:g}, jitter {jitter}",
                          image=picture[0], stretch=stretch),
                    Panel("all three off", image=visualisation(0.0, 0.0, 0)[0], stretch=stretch)],
            maps={"image": picture[0]},
            numbers={"logit": logit, "probability": probability},
            caption=f"{_class_name(model, target)}: logit {logit:.3g}, p = {probability:.2f} "
                    f"after {steps} steps",
        )

    controls = [
        _slider("l2_reg", "L2", _numbers(l2_regs, "l2_regs", validate.non_negative_number), 0.01,
                lambda value: f"{value:g}"),
        _slider("blur_sigma", "blur sigma",
                _numbers(blur_sigmas, "blur_sigmas", validate.non_negative_number), 0.7),
        _slider("jitter", "jitter", _numbers(
            jitters, "jitters", lambda value, name: validate.positive_int(value, name, minimum=0)), 2),
    ]
    return Explorer("class_visualization", "Class visualisation: L2, blur and jitter",
                    controls, compute)


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
