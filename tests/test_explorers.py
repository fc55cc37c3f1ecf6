"""The interactive explorers, without a browser: their pure update functions, their widgets'
wiring, their static fallback, and that nbconvert shows that fallback.

Images are tiny (the digits CNN's 32 px, Lite0 at 64 px) so the file runs in seconds; the
speed of the real sizes is bench/bench_explorers.py's business.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from torch import nn

from saliencylab import SaliencyLabError
from saliencylab import explorers
from saliencylab.attribution import (
    class_visualization,
    gradcam,
    integrated_gradients,
    occlusion,
    smoothgrad,
)
from saliencylab.explorers import (
    Explorer,
    explore_class_visualization,
    explore_gradcam,
    explore_integrated_gradients,
    explore_occlusion,
    explore_smoothgrad,
)
from saliencylab.images import sample_image, to_tensor
from saliencylab.models import target_logits

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cat32() -> torch.Tensor:
    """Chelsea at the digits CNN's size, ``[3, 32, 32]`` (explorers get ``size=None``)."""
    return to_tensor(sample_image("chelsea"), size=32)[0]


@pytest.fixture(scope="module")
def cat64() -> torch.Tensor:
    return to_tensor(sample_image("chelsea"), size=64)[0]


@pytest.fixture(scope="module")
def smoothgrad_explorer(digits_cnn: nn.Module, cat32: torch.Tensor) -> Explorer:
    return explore_smoothgrad(digits_cnn, cat32, 3, noise_levels=(0.1, 0.3), max_samples=6, size=None)


def assert_model_untouched(model: nn.Module) -> None:
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())


# ---------------------------------------------------------------- SmoothGrad


def test_smoothgrad_same_parameters_same_picture_and_map(smoothgrad_explorer, digits_cnn, cat32) -> None:
    first = smoothgrad_explorer.update(noise_level=0.3, samples=4)
    assert smoothgrad_explorer.update(noise_level=0.3, samples=4) is first  # cached
    fresh = explore_smoothgrad(digits_cnn, cat32, 3, noise_levels=(0.1, 0.3), max_samples=6, size=None)
    again = fresh.update(noise_level=0.3, samples=4)  # recomputed from scratch: seeded
    assert again.png == first.png and torch.equal(again.maps["smoothgrad"], first.maps["smoothgrad"])
    assert first.png.startswith(PNG_SIGNATURE)


@pytest.mark.parametrize("change", [dict(noise_level=0.1), dict(samples=2)])
def test_smoothgrad_changes_with_noise_level_and_samples(smoothgrad_explorer, change) -> None:
    base = smoothgrad_explorer.update(noise_level=0.3, samples=6)
    other = smoothgrad_explorer.update(**{"noise_level": 0.3, "samples": 6, **change})
    assert other.png != base.png
    assert not torch.allclose(other.maps["smoothgrad"], base.maps["smoothgrad"])


@pytest.mark.parametrize("samples", [1, 4, 6])
def test_smoothgrad_map_is_the_library_map(smoothgrad_explorer, digits_cnn, cat32, samples) -> None:
    shown = smoothgrad_explorer.update(noise_level=0.3, samples=samples).maps["smoothgrad"]
    expected = smoothgrad(digits_cnn, cat32, 3, samples=samples, noise_level=0.3, seed=0, batch_size=1)
    torch.testing.assert_close(shown, expected, rtol=1e-4, atol=1e-6 * expected.abs().max().item())
    # 32 x 32 is a multiple of 16 pixels, so the library draws the same noise in any batch size
    batched = smoothgrad(digits_cnn, cat32, 3, samples=samples, noise_level=0.3, seed=0, batch_size=4)
    torch.testing.assert_close(shown, batched, rtol=1e-4, atol=1e-6 * expected.abs().max().item())


# ---------------------------------------------------------------- occlusion


@pytest.fixture(scope="module")
def occlusion_explorer(digits_cnn, cat32) -> Explorer:
    return explore_occlusion(digits_cnn, cat32, 3, windows=(8, 16), strides=(4, 8, 16), size=None)


def test_occlusion_map_is_the_library_map_and_changes_with_each_parameter(
    occlusion_explorer, digits_cnn, cat32
) -> None:
    shown = occlusion_explorer.update(window=8, stride=4, fill="black 0")
    expected = occlusion(digits_cnn, cat32, 3, window=8, stride=4, baseline=0.0)
    torch.testing.assert_close(shown.maps["occlusion"], expected, rtol=1e-4, atol=1e-5)
    assert shown.numbers["windows"] == 7 * 7
    assert occlusion_explorer.update(window=8, stride=4, fill="black 0").png == shown.png
    for change in (dict(window=16), dict(stride=8), dict(fill="grey 0.5")):
        other = occlusion_explorer.update(**{"window": 8, "stride": 4, "fill": "black 0", **change})
        assert other.png != shown.png
        assert not torch.allclose(other.maps["occlusion"], shown.maps["occlusion"])


def test_occlusion_stride_larger_than_window_explains_instead_of_failing(occlusion_explorer) -> None:
    rendered = occlusion_explorer.update(window=8, stride=16)
    assert rendered.maps == {} and "stride" in rendered.caption
    assert rendered.png.startswith(PNG_SIGNATURE)


def test_occlusion_fill_may_be_an_image_of_the_original_size(digits_cnn, cat64) -> None:
    explorer = explore_occlusion(digits_cnn, cat64, 3, windows=(16,), strides=(8,), size=32,
                                 fills={"noise": torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))})
    assert explorer.update().maps["occlusion"].shape == (32, 32)


# ---------------------------------------------------------------- Grad-CAM


def test_gradcam_default_layers_and_classes_on_lite0(lite0, cat64) -> None:
    explorer = explore_gradcam(lite0, cat64)
    layer_control = explorer.controls["layer"]
    assert [label for label, _ in layer_control.options] == [
        "features.blocks.4", "features.blocks.10", "features.head"]
    assert layer_control.value == "features.head"  # the library's default layer
    top3 = lite0(cat64[None])[0].topk(3).indices.tolist()
    assert [value for _, value in explorer.controls["target_class"].options] == [
        f"{lite0.class_names[i]} ({i})" for i in top3]
    assert explorer.update().numbers == {"map_height": 2, "map_width": 2}


def test_gradcam_maps_are_the_library_maps_and_change_with_class_and_layer(digits_cnn, cat32) -> None:
    layers = {"block 1": digits_cnn.features.block1, "block 3": digits_cnn.features.block3}
    explorer = explore_gradcam(digits_cnn, cat32, classes=[3, 8], layers=layers)
    shown = explorer.update(target_class="class 8", layer="block 1")
    torch.testing.assert_close(shown.maps["gradcam"], gradcam(digits_cnn, cat32, 8, layer=layers["block 1"]))
    assert shown.numbers == {"map_height": 16, "map_width": 16}
    for change in (dict(target_class="class 3"), dict(layer="block 3")):
        other = explorer.update(**{"target_class": "class 8", "layer": "block 1", **change})
        assert other.png != shown.png and not torch.allclose(other.maps["gradcam"], shown.maps["gradcam"])


# ---------------------------------------------------------------- Integrated Gradients


def test_integrated_gradients_shows_the_library_completeness_error(digits_cnn, cat32) -> None:
    explorer = explore_integrated_gradients(digits_cnn, cat32, 3, steps=(2, 8), size=None)
    grey = torch.full_like(cat32, 0.5)
    shown = explorer.update(baseline="grey 0.5", steps=2)
    attributions, error = integrated_gradients(
        digits_cnn, cat32, 3, baseline=grey, steps=2, return_error=True, reduce="sum")
    torch.testing.assert_close(shown.maps["integrated_gradients"], attributions)
    change = (target_logits(digits_cnn, cat32, 3) - target_logits(digits_cnn, grey, 3)).item()
    assert shown.numbers["completeness_error"] == pytest.approx(error.item(), rel=1e-5, abs=1e-5)
    assert shown.numbers["completeness_error"] == pytest.approx(attributions.sum().item() - change, rel=1e-4, abs=1e-4)
    assert shown.numbers["logit_change"] == pytest.approx(change, rel=1e-4, abs=1e-4)
    assert f"{shown.numbers['completeness_error']:+.3g}" in shown.caption
    more_steps = explorer.update(baseline="grey 0.5", steps=8)
    assert more_steps.numbers["completeness_error"] != shown.numbers["completeness_error"]
    assert more_steps.png != shown.png
    assert explorer.update(baseline="black", steps=2).png != shown.png


# ---------------------------------------------------------------- class visualisation


def test_class_visualization_image_is_the_library_image(digits_cnn) -> None:
    explorer = explore_class_visualization(digits_cnn, 3, l2_regs=(0.01, 1.0), blur_sigmas=(0.0, 0.7),
                                           jitters=(0, 2), steps=10)
    shown = explorer.update(l2_reg=1.0, blur_sigma=0.0, jitter=2)
    expected = class_visualization(digits_cnn, 3, size=32, steps=10, lr=0.05, l2_reg=1.0, blur_every=0,
                                   jitter=2, seed=0, progress=False)[0]
    assert torch.equal(shown.maps["image"], expected)
    default = explorer.update()
    assert default.params == {"l2_reg": 0.01, "blur_sigma": 0.7, "jitter": 2}
    for change in (dict(l2_reg=1.0), dict(blur_sigma=0.0), dict(jitter=0)):
        assert explorer.update(**change).png != default.png


# ---------------------------------------------------------------- widgets and display


def test_moving_a_control_updates_the_figure_widget(smoothgrad_explorer) -> None:
    explorer = smoothgrad_explorer
    assert explorer.values == explorer.defaults == {"noise_level": 0.1, "samples": 6}
    before = bytes(explorer.figure.value)
    assert before == explorer.update().png
    explorer.controls["noise_level"].value = 0.3
    assert bytes(explorer.figure.value) != before
    assert bytes(explorer.figure.value) == explorer.update(noise_level=0.3, samples=6).png
    assert explorer.status.value == ""
    explorer.controls["noise_level"].value = 0.1
    assert bytes(explorer.figure.value) == before


def test_widgets_carry_stable_css_classes_and_labels(smoothgrad_explorer) -> None:
    explorer = smoothgrad_explorer
    assert {"saliencylab-explorer", "saliencylab-explorer-smoothgrad"} <= set(explorer.widget._dom_classes)
    assert "saliencylab-explorer-figure" in explorer.figure._dom_classes
    assert "saliencylab-explorer-status" in explorer.status._dom_classes
    slider = explorer.controls["noise_level"]
    assert "saliencylab-explorer-control-noise_level" in slider._dom_classes
    assert slider.description == "noise" and slider.continuous_update is False


def test_static_bundle_is_the_default_figure(smoothgrad_explorer) -> None:
    bundle = smoothgrad_explorer.static_bundle()
    png = base64.b64decode(bundle["image/png"])
    assert png.startswith(PNG_SIGNATURE) and png == smoothgrad_explorer.update().png
    assert "SmoothGrad" in bundle["text/plain"]


def test_display_shows_static_figure_then_widget_and_empties_the_figure_once_viewed(
    smoothgrad_explorer, monkeypatch
) -> None:
    shown, updates = [], []

    class Handle:
        def update(self, data, raw=False):
            updates.append(data)

    def fake_display(bundle, raw=False, display_id=None):
        shown.append(bundle)
        return Handle() if display_id else None

    monkeypatch.setattr(explorers, "display", fake_display)
    smoothgrad_explorer._ipython_display_()
    static, widget = shown
    assert set(static) == {"image/png", "text/plain"}
    view = widget["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == smoothgrad_explorer.widget.model_id
    assert "running kernel" in widget["text/plain"]
    assert updates == []
    smoothgrad_explorer.widget._view_count = 1  # what a live frontend reports
    assert updates == [{"text/plain": ""}]


# ---------------------------------------------------------------- mistakes


def test_one_image_with_or_without_batch_dimension(digits_cnn, cat32) -> None:
    with_batch = explore_occlusion(digits_cnn, cat32[None], 3, windows=(16,), strides=(16,), size=None)
    without = explore_occlusion(digits_cnn, cat32, 3, windows=(16,), strides=(16,), size=None)
    assert with_batch.update().png == without.update().png


@pytest.mark.parametrize("call, message", [
    (lambda m, x: explore_smoothgrad(m, x.expand(2, -1, -1, -1), size=None), "one image"),
    (lambda m, x: explore_smoothgrad(m, x[0], size=None), "shape"),
    (lambda m, x: explore_smoothgrad(m, x, 10, size=None), "out of range"),
    (lambda m, x: explore_smoothgrad(m, x, "cat", size=None), "one class index"),
    (lambda m, x: explore_smoothgrad(m, x, noise_levels=[], size=None), "noise_levels is empty"),
    (lambda m, x: explore_smoothgrad(m, x, noise_levels=[-0.1], size=None), "noise_levels[0]"),
    (lambda m, x: explore_smoothgrad(m, x, max_samples=0, size=None), "max_samples"),
    (lambda m, x: explore_smoothgrad(x, m, size=None), "torch.nn.Module"),
    (lambda m, x: explore_occlusion(m, x, windows=(64,), size=None), "windows must fit the 32x32 image"),
    (lambda m, x: explore_occlusion(m, x, windows=(16,), fills={}, size=None), "fills is empty"),
    (lambda m, x: explore_gradcam(m, x, classes=[]), "classes is empty"),
    (lambda m, x: explore_gradcam(m, x, classes=[12]), "out of range"),
    (lambda m, x: explore_gradcam(m, x, layers={"conv": nn.Conv2d(3, 3, 3)}), "not a module of this model"),
    (lambda m, x: explore_gradcam(m, x, layers={"fc": m.classifier.fc}), "[N, C, h, w]"),
    (lambda m, x: explore_integrated_gradients(m, x, steps=(0,), size=None), "steps[0]"),
    (lambda m, x: explore_integrated_gradients(m, x, baselines={"small": torch.zeros(3, 8, 8)}, size=None),
     "broadcast"),
    (lambda m, x: explore_class_visualization(m, 10), "out of range"),
    (lambda m, x: explore_class_visualization(m, 3, jitters=[]), "jitters is empty"),
])
def test_mistakes_raise_clear_errors(digits_cnn, cat32, call, message) -> None:
    with pytest.raises(SaliencyLabError, match=message.replace("[", r"\[").replace("]", r"\]")):
        call(digits_cnn, cat32)
    assert_model_untouched(digits_cnn)


def test_update_refuses_unknown_parameters_and_values(smoothgrad_explorer) -> None:
    with pytest.raises(SaliencyLabError, match="no parameter 'noise'"):
        smoothgrad_explorer.update(noise=0.1)
    with pytest.raises(SaliencyLabError, match=r"noise_level must be one of \(0.1, 0.3\)"):
        smoothgrad_explorer.update(noise_level=0.2)


def test_explorers_leave_the_model_as_they_found_it(digits_cnn, cat32) -> None:
    explore_smoothgrad(digits_cnn, cat32, max_samples=2, size=None)
    explore_occlusion(digits_cnn, cat32, windows=(16,), strides=(16,), size=None)
    explore_gradcam(digits_cnn, cat32)
    explore_integrated_gradients(digits_cnn, cat32, steps=(2,), size=None)
    explore_class_visualization(digits_cnn, 3, steps=2)
    assert_model_untouched(digits_cnn)


# ---------------------------------------------------------------- the static fallback, end to end


@pytest.mark.notebooks
def test_nbconvert_html_and_slides_show_the_static_figure(tmp_path: Path) -> None:
    """Executed by nbclient (which stores the widget state, as tools/nbtools.py execute does),
    the notebook converts to HTML and to reveal.js slides with the PNG inline."""
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell(
        "# NBVAL_IGNORE_OUTPUT\n"
        "from saliencylab.models import load_model\n"
        "from saliencylab.explorers import explore_class_visualization\n"
        "explore_class_visualization(load_model('digits_cnn'), 3, steps=5)"
    )]
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    outputs = notebook.cells[0].outputs
    assert [sorted(output.data) for output in outputs] == [
        ["image/png", "text/plain"], ["application/vnd.jupyter.widget-view+json", "text/plain"]]
    assert "widgets" in notebook.metadata  # nbconvert would prefer the widget view if it could
    path = tmp_path / "explorer.ipynb"
    nbformat.write(notebook, str(path))
    for target, suffix in (("html", ".html"), ("slides", ".slides.html")):
        subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", target, str(path)],
                       check=True, capture_output=True, timeout=120)
        html = path.with_suffix(suffix).read_text()
        static_png = outputs[0].data["image/png"][:200]
        assert f"data:image/png;base64,{static_png}" in html, target


# ---------------------------------------------------------------- the benchmark


def test_benchmark_quick_run_times_every_explorer() -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "bench_explorers.py"
    spec = importlib.util.spec_from_file_location("bench_explorers", path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up while the file runs
    spec.loader.exec_module(bench)
    rows = bench.run(quick=True, repeats=1)
    assert [row.name for row in rows] == [
        "smoothgrad", "occlusion", "gradcam", "integrated_gradients",
        "class_visualization (digits CNN)", "class_visualization (Lite0)"]
    for row in rows:
        assert row.reference_ms > 0 and row.open_s > 0 and row.first_s > row.cached_s >= 0
    assert rows[0].reuse_s is not None and rows[0].reuse_s < rows[0].first_s  # no new gradients
    assert "First updates above" in bench.table(rows)
