"""Plotting: normalisation never divides by zero or edits its input; figures keep their layout."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from saliencylab import SaliencyLabError  # noqa: E402
from saliencylab.plotting import (  # noqa: E402
    normalize_map,
    overlay,
    show_grid,
    show_images,
    show_maps,
    to_display_image,
    to_display_map,
    visualize,
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("constant", [torch.full((5, 7), 3.0), np.full((4, 4), -2.0), torch.zeros(1, 6, 6)])
@pytest.mark.parametrize("options", [{}, {"percentile": 99}])
def test_a_constant_map_normalises_to_zeros_not_nan(constant, options) -> None:
    result = normalize_map(constant, **options)
    assert type(result) is type(constant) and result.shape == constant.shape
    assert (np.asarray(result) == 0).all()


def test_symmetric_scaling_keeps_the_sign_of_a_constant_map_and_zeros_stay_zeros() -> None:
    assert (normalize_map(torch.full((3, 3), -4.0), symmetric=True) == -1).all()
    assert (normalize_map(np.zeros((3, 3)), symmetric=True, percentile=99) == 0).all()


@pytest.mark.parametrize("options", [{}, {"percentile": 90}, {"symmetric": True}])
def test_normalising_never_modifies_its_input(options) -> None:
    tensor = torch.randn(8, 8) * 5
    array = tensor.numpy().copy()
    tensor_before, array_before = tensor.clone(), array.copy()
    tensor_result, array_result = normalize_map(tensor, **options), normalize_map(array, **options)
    assert torch.equal(tensor, tensor_before) and np.array_equal(array, array_before)
    assert tensor_result.data_ptr() != tensor.data_ptr() and not np.shares_memory(array_result, array)
    tensor_result.fill_(7)  # writing into the result cannot reach the input either
    assert torch.equal(tensor, tensor_before)


def test_min_max_and_symmetric_scaling_values() -> None:
    values = torch.tensor([[-2.0, 0.0], [2.0, 6.0]])
    torch.testing.assert_close(normalize_map(values), torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    torch.testing.assert_close(normalize_map(values, symmetric=True), torch.tensor([[-1 / 3, 0.0], [1 / 3, 1.0]]))
    assert normalize_map(values).dtype == torch.float32


def test_percentile_clipping_ignores_one_outlier() -> None:
    values = torch.linspace(0, 1, 1000)
    values[0] = -1000.0  # one extreme pixel
    clipped = normalize_map(values, percentile=99)
    plain = normalize_map(values)
    assert clipped[500] == pytest.approx(0.5, abs=0.02)  # the middle stays mid-range
    assert plain[500] > 0.99  # min-max scaling is washed out by the outlier
    assert clipped.min() == 0 and clipped.max() == 1


def test_nan_pixels_do_not_poison_the_rest() -> None:
    values = torch.tensor([0.0, 1.0, float("nan"), 2.0])
    result = normalize_map(values)
    torch.testing.assert_close(result[[0, 1, 3]], torch.tensor([0.0, 0.5, 1.0]))


def test_on_the_inputs_device_and_float_dtype() -> None:
    assert normalize_map(torch.arange(6).view(2, 3)).dtype == torch.float32
    assert normalize_map(torch.rand(3, 3, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize(
    "image",
    [
        torch.rand(3, 20, 30),
        torch.rand(1, 3, 20, 30),
        np.random.rand(20, 30, 3),
        (np.random.rand(20, 30, 3) * 255).astype(np.uint8),
        torch.rand(20, 30),
        PIL.Image.fromarray((np.random.rand(20, 30, 4) * 255).astype(np.uint8), "RGBA"),
    ],
    ids=["chw", "bchw", "hwc", "uint8", "grey", "pil-rgba"],
)
def test_images_in_every_layout_display_as_h_w_3(image) -> None:
    shown = to_display_image(image)
    assert shown.shape == (20, 30, 3) and 0 <= shown.min() and shown.max() <= 1


@pytest.mark.parametrize(
    "saliency_map", [torch.rand(20, 30), torch.rand(1, 20, 30), torch.rand(1, 1, 20, 30), torch.rand(3, 20, 30)]
)
def test_maps_in_every_layout_display_as_h_w(saliency_map) -> None:
    assert to_display_map(saliency_map).shape == (20, 30)


def test_three_channel_maps_use_max_abs_over_channels() -> None:
    grads = torch.zeros(3, 2, 2)
    grads[1, 0, 0] = -5.0
    grads[2, 1, 1] = 2.0
    np.testing.assert_array_equal(to_display_map(grads), [[5.0, 0.0], [0.0, 2.0]])


def test_show_maps_has_the_image_then_one_axis_per_method_non_square() -> None:
    image = torch.rand(1, 3, 20, 30)
    maps = {"saliency": torch.rand(1, 20, 30), "gradcam": torch.rand(20, 30), "occlusion": torch.zeros(20, 30)}
    figure = show_maps(image, maps)
    axes = figure.axes
    assert len(axes) == 1 + len(maps)
    assert [ax.get_title() for ax in axes] == ["image", "saliency", "gradcam", "occlusion"]
    for ax in axes:  # 20 rows, 30 columns: not transposed
        assert ax.get_images()[0].get_array().shape[:2] == (20, 30)
    assert np.isfinite(axes[3].get_images()[0].get_array()).all()  # constant map: zeros, no NaN


def test_show_maps_of_a_batch_has_one_row_per_image() -> None:
    images, maps = torch.rand(2, 3, 20, 30), {"a": torch.rand(2, 20, 30), "b": torch.rand(2, 3, 20, 30)}
    figure = show_maps(images, maps)
    assert [ax.get_title() for ax in figure.axes] == ["image", "a", "b"] * 2
    shown = figure.axes[4].get_images()[0].get_array()  # row 2, map "a"
    np.testing.assert_allclose(shown, normalize_map(maps["a"][1]).numpy(), rtol=1e-6)
    with pytest.raises(SaliencyLabError, match="batch of 2"):
        show_maps(images, {"a": torch.rand(20, 30)})


def test_show_maps_can_overlay_and_refuses_an_empty_dict() -> None:
    figure = show_maps(torch.rand(3, 20, 30), {"a": torch.rand(20, 30)}, alpha=0.4)
    assert len(figure.axes) == 2
    with pytest.raises(SaliencyLabError, match="maps is empty"):
        show_maps(torch.rand(3, 20, 30), {})


def test_overlay_upsamples_a_small_map_keeping_orientation() -> None:
    image = torch.zeros(3, 40, 60)
    heatmap = torch.zeros(2, 3)
    heatmap[0, 2] = 1.0  # top-right cell hot
    ax = overlay(image, heatmap, alpha=1.0, cmap="gray")
    shown = ax.get_images()[0].get_array()
    assert shown.shape[:2] == (40, 60)
    assert shown[0, 59].mean() > 0.9 and shown[39, 0].mean() < 0.1  # hot top-right, cold bottom-left


def test_overlay_draws_on_the_given_axes_and_checks_alpha() -> None:
    figure, ax = plt.subplots()
    assert overlay(torch.rand(3, 8, 8), torch.rand(8, 8), ax=ax) is ax
    assert len(figure.axes) == 1
    with pytest.raises(SaliencyLabError, match="alpha"):
        overlay(torch.rand(3, 8, 8), torch.rand(8, 8), alpha=2)


@pytest.mark.parametrize("max_grads", [True, False])
def test_visualize_shows_image_gradients_and_overlay(max_grads: bool) -> None:
    image = torch.rand(3, 24, 16)
    grads = torch.randn(3, 24, 16)
    grads_before = grads.clone()
    figure = visualize(image, grads, max_grads=max_grads)
    assert len(figure.axes) == 3
    assert figure.axes[0].get_title() == "input image" and figure.axes[2].get_title() == "overlay"
    for ax in figure.axes:
        assert ax.get_images()[0].get_array().shape[:2] == (24, 16)
    assert torch.equal(grads, grads_before)


def test_non_arrays_are_clear_errors() -> None:
    with pytest.raises(SaliencyLabError, match="torch.Tensor or numpy"):
        normalize_map([[1, 2], [3, 4]])
    with pytest.raises(SaliencyLabError, match="one image"):
        to_display_map(torch.rand(2, 5, 5, 5))


def test_show_maps_signed_keeps_the_sign_with_zero_in_the_middle() -> None:
    signed_map = torch.tensor([[-2.0, 0.0], [1.0, 4.0]])
    per_channel = torch.stack([signed_map, signed_map, -signed_map])  # sums to signed_map
    figure = show_maps(torch.rand(3, 2, 2), {"occlusion": signed_map, "IG": per_channel}, signed=True)
    for ax in figure.axes[1:]:
        shown = ax.get_images()[0]
        np.testing.assert_allclose(shown.get_array(), [[-0.5, 0.0], [0.25, 1.0]])
        assert shown.get_clim() == (-1.0, 1.0) and shown.get_cmap().name == "bwr"
    with pytest.raises(SaliencyLabError, match="drawn alone"):
        show_maps(torch.rand(3, 2, 2), {"occlusion": signed_map}, signed=True, alpha=0.5)


def _shown(ax) -> tuple[np.ndarray, str]:
    image = ax.get_images()[0]
    return np.asarray(image.get_array()), image.get_cmap().name


def test_show_grid_draws_pictures_as_pictures_and_maps_with_the_colormap() -> None:
    photo = torch.rand(3, 6, 8)
    rows = [[photo, photo[None], to_display_image(photo), torch.arange(48.0).view(6, 8)]]
    figure = show_grid(rows, ["a", "b", "c", "map"], row_titles=["row"], cmap="gray")
    axes = figure.axes
    assert len(axes) == 4 and [ax.get_title() for ax in axes] == ["a", "b", "c", "map"]
    for ax in axes[:3]:
        picture, _ = _shown(ax)
        np.testing.assert_allclose(picture, to_display_image(photo))
    values, cmap = _shown(axes[3])
    assert cmap == "gray" and values.shape == (6, 8) and values.min() == 0 and values.max() == 1
    assert axes[0].get_ylabel() == "row"


def test_show_grid_signed_columns_keep_the_sign_and_others_do_not() -> None:
    signed = torch.tensor([[-2.0, 0.0], [1.0, 0.5]])
    figure = show_grid([[signed, signed]], signed=[1], percentile=None)
    plain, plain_cmap = _shown(figure.axes[0])
    kept, kept_cmap = _shown(figure.axes[1])
    assert plain_cmap == "inferno" and plain.min() == 0 and plain.max() == 1
    assert kept_cmap == "bwr"
    np.testing.assert_allclose(kept, [[-1.0, 0.0], [0.5, 0.25]])  # divided by max |value|, 0 stays 0
    assert figure.axes[1].get_images()[0].get_clim() == (-1.0, 1.0)


def test_show_grid_lays_a_flat_list_out_in_columns_with_one_title_per_panel() -> None:
    maps = list(torch.rand(5, 4, 4))
    figure = show_grid(maps, columns=2, titles=[f"m{i}" for i in range(5)], title="five maps")
    assert len(figure.axes) == 6  # 3 rows of 2, the last cell left empty
    assert [ax.get_title() for ax in figure.axes] == ["m0", "m1", "m2", "m3", "m4", ""]
    assert not figure.axes[5].get_images() and not figure.axes[5].axison
    assert figure._suptitle.get_text() == "five maps"


def test_show_grid_never_modifies_its_panels_and_refuses_nothing_to_show() -> None:
    panel = torch.randn(5, 5)
    copy = panel.clone()
    show_grid([[panel]], signed=True)
    assert torch.equal(panel, copy)
    with pytest.raises(SaliencyLabError, match="nothing to show"):
        show_grid([])
    with pytest.raises(SaliencyLabError, match="columns"):
        show_grid([panel], columns=0)


def test_show_images_stretch_magnifies_pale_images_each_or_all_alike() -> None:
    faint, fainter = torch.full((3, 4, 4), 0.6), torch.full((3, 4, 4), 0.55)  # grey + 0.1, grey + 0.05
    batch = torch.stack([faint, fainter])
    as_is = show_images(batch, ["faint", "fainter"])
    assert [ax.get_title() for ax in as_is.axes] == ["faint", "fainter"]
    assert _shown(as_is.axes[0])[0][0, 0, 0] == pytest.approx(0.6)
    each = show_images(batch, ["faint", "fainter"], stretch=True)
    assert [_shown(ax)[0][0, 0, 0] for ax in each.axes] == pytest.approx([1.0, 1.0])
    alike = show_images(batch, ["faint", "fainter"], stretch=True, same_stretch=True)
    assert [_shown(ax)[0][0, 0, 0] for ax in alike.axes] == pytest.approx([1.0, 0.75])
    assert torch.equal(batch[0], faint)
