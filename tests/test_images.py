"""saliencylab.images: anything in, RGB out; tensors in the course's [B, 3, H, W] convention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from saliencylab import SaliencyLabError
from saliencylab.images import (
    SAMPLE_IMAGES,
    Box,
    UnknownNameError,
    load_image,
    sample_image,
    side_by_side,
    to_numpy_image,
    to_tensor,
)

PACKAGE_FOLDERS = {"scikit-image": "skimage", "matplotlib": "matplotlib", "scikit-learn": "sklearn"}


# ---------------------------------------------------------------- sample photos

@pytest.mark.parametrize("name", sorted(SAMPLE_IMAGES))
def test_every_sample_image_is_on_disk_inside_its_package_and_loads_as_rgb(name):
    info = SAMPLE_IMAGES[name]
    assert info.path.is_file()
    assert PACKAGE_FOLDERS[info.package] in info.path.parts
    assert info.licence and info.description
    image = sample_image(name)
    assert image.mode == "RGB" and min(image.size) >= 256


def test_the_photos_the_course_relies_on_are_listed():
    expected = {"chelsea", "coffee", "rocket", "astronaut", "motorcycle", "camera",
                "grace_hopper", "china", "flower"}
    assert expected <= set(SAMPLE_IMAGES)


def test_camera_is_greyscale_on_disk_and_comes_back_as_three_equal_channels():
    assert PIL.Image.open(SAMPLE_IMAGES["camera"].path).mode == "L"
    pixels = np.asarray(sample_image("camera"))
    assert pixels.shape[2] == 3
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert pixels.std() > 10  # a photo, not a blank


def test_motorcycle_is_the_left_image_of_the_stereo_pair():
    assert "left" in SAMPLE_IMAGES["motorcycle"].filename
    assert sample_image("motorcycle").size == (741, 500)


def test_a_sample_name_also_works_in_load_image_and_to_tensor():
    assert np.array_equal(np.asarray(load_image("coffee")), np.asarray(sample_image("coffee")))
    assert to_tensor("coffee").shape == (1, 3, 224, 224)


def test_an_unknown_sample_name_suggests_the_closest_and_lists_all():
    with pytest.raises(UnknownNameError) as caught:
        sample_image("chelsee")
    message = str(caught.value)
    assert "Did you mean 'chelsea'" in message and "grace_hopper" in message
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, SaliencyLabError)
    with pytest.raises(UnknownNameError, match="chelsea"):
        load_image("chelsee")


# ---------------------------------------------------------------- files

def _saved(image: PIL.Image.Image, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    image.save(path)
    return path


def test_a_missing_file_says_so_with_its_path(tmp_path):
    missing = tmp_path / "no_such_photo.jpg"
    with pytest.raises(SaliencyLabError, match="does not exist") as caught:
        load_image(missing)
    assert str(missing) in str(caught.value)
    with pytest.raises(SaliencyLabError, match="does not exist"):
        load_image(str(missing))


def test_a_folder_and_a_non_image_file_say_what_they_are(tmp_path):
    with pytest.raises(SaliencyLabError, match="folder"):
        load_image(tmp_path)
    text_file = tmp_path / "notes.png"
    text_file.write_text("this is not a picture")
    with pytest.raises(SaliencyLabError, match="not an image file") as caught:
        load_image(text_file)
    assert str(text_file) in str(caught.value)


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((6, 8, 4), dtype=np.uint8)
    rgba[:, :4] = (255, 0, 0, 255)  # opaque red
    rgba[:, 4:] = (255, 0, 0, 0)  # fully transparent red: must come out white
    image = load_image(_saved(PIL.Image.fromarray(rgba), tmp_path, "rgba.png"))
    pixels = np.asarray(image)
    assert image.mode == "RGB"
    assert (pixels[:, :4] == (255, 0, 0)).all() and (pixels[:, 4:] == 255).all()


def test_half_transparent_black_on_white_is_mid_grey():
    pixels = np.asarray(load_image(PIL.Image.new("LA", (4, 4), (0, 128))))
    assert np.abs(pixels.astype(int) - 127).max() <= 1


def test_palette_images_with_and_without_transparency(tmp_path):
    palette = PIL.Image.new("P", (5, 3))
    palette.putpalette([0, 0, 255, 10, 200, 10] + [0] * 762)
    palette.putpixel((0, 0), 1)
    pixels = np.asarray(load_image(_saved(palette, tmp_path, "palette.png")))
    assert tuple(pixels[0, 0]) == (10, 200, 10) and tuple(pixels[1, 1]) == (0, 0, 255)
    palette.info["transparency"] = 0  # colour 0 (blue) transparent -> white
    pixels = np.asarray(load_image(_saved(palette, tmp_path, "palette_t.png")))
    assert tuple(pixels[1, 1]) == (255, 255, 255) and tuple(pixels[0, 0]) == (10, 200, 10)


def test_16_bit_png_is_scaled_to_8_bit(tmp_path):
    values = np.array([[0, 257 * 100], [65535, 257 * 200]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    PIL.Image.fromarray(values).save(path)
    assert PIL.Image.open(path).mode in ("I;16", "I")
    pixels = np.asarray(load_image(path))
    assert pixels.dtype == np.uint8 and pixels.shape == (2, 2, 3)
    assert pixels[..., 0].tolist() == [[0, 100], [255, 200]]
    assert np.asarray(load_image(PIL.Image.fromarray(values.astype(np.int32), "I")))[1, 0, 0] == 255


@pytest.mark.parametrize("mode", ["1", "L", "CMYK", "RGB", "I;16", "F"])
def test_every_pil_mode_becomes_rgb_and_keeps_its_size(mode):
    image = load_image(PIL.Image.new(mode, (7, 3)))
    assert image.mode == "RGB" and image.size == (7, 3)


def test_tiny_and_non_square_images_keep_rows_and_columns(tmp_path):
    tall = np.zeros((30, 10, 3), dtype=np.uint8)
    tall[:10] = 255  # top third white
    image = load_image(_saved(PIL.Image.fromarray(tall), tmp_path, "tall.png"))
    assert image.size == (10, 30)
    tensor = to_tensor(image, size=None)
    assert tensor.shape == (1, 3, 30, 10)
    assert tensor[0, :, :10].min() == 1 and tensor[0, :, 10:].max() == 0
    assert to_tensor(PIL.Image.new("RGB", (10, 10)), size=224).shape == (1, 3, 224, 224)


# ---------------------------------------------------------------- numpy arrays and tensors

@pytest.mark.parametrize(
    "array, expected",
    [
        (np.full((4, 5), 200, dtype=np.uint8), 200),
        (np.full((4, 5, 1), 200, dtype=np.uint8), 200),
        (np.full((4, 5, 3), 200, dtype=np.uint8), 200),
        (np.dstack([np.full((4, 5, 3), 200, np.uint8), np.full((4, 5), 255, np.uint8)]), 200),
        (np.full((4, 5), 257 * 200, dtype=np.uint16), 200),
        (np.full((4, 5, 3), 200 / 255, dtype=np.float32), 200),
        (np.full((4, 5), 200 / 255, dtype=np.float64), 200),
        (np.ones((4, 5), dtype=bool), 255),
        (np.full((4, 5, 3), 200, dtype=np.int64), 200),
    ],
    ids=["HW", "HW1", "HW3", "HW4", "uint16", "float32", "float64", "bool", "int64"],
)
def test_numpy_arrays_of_every_layout_and_dtype(array, expected):
    image = load_image(array)
    assert image.mode == "RGB" and image.size == (5, 4)
    assert (np.asarray(image) == expected).all()


def test_transparent_numpy_rgba_becomes_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    assert (np.asarray(load_image(rgba)) == 255).all()


def test_float_arrays_outside_0_1_warn_and_are_clipped():
    with pytest.warns(UserWarning, match=r"outside \[0, 1\].*divide by 255"):
        image = load_image(np.full((3, 3, 3), 200.0))
    assert (np.asarray(image) == 255).all()


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((3, 8, 9), dtype=np.uint8), "transpose"),
        (np.zeros((8, 9, 2), dtype=np.uint8), "H x W x 3"),
        (np.zeros((2, 8, 9, 3), dtype=np.uint8), "H x W x 3"),
        (np.full((4, 4), 1000, dtype=np.int64), "uint8"),
        (np.zeros((0, 4), dtype=np.uint8), "empty"),
    ],
    ids=["channels-first", "two-channels", "batch", "int-out-of-range", "empty"],
)
def test_numpy_arrays_that_are_not_images_get_a_clear_error(array, message):
    with pytest.raises(SaliencyLabError, match=message):
        load_image(array)


def test_load_image_refuses_other_types():
    with pytest.raises(SaliencyLabError, match="file path"):
        load_image(42)


def test_load_image_accepts_an_image_tensor(chelsea):
    image = load_image(chelsea)
    assert image.size == (224, 224)
    back = to_tensor(image, size=None)
    assert (back - chelsea).abs().max() <= 0.5 / 255 + 1e-6


# ---------------------------------------------------------------- to_tensor / to_numpy_image

def test_to_tensor_gives_a_float_batch_of_one_in_0_1(chelsea):
    assert chelsea.shape == (1, 3, 224, 224) and chelsea.dtype == torch.float32
    assert chelsea.min() >= 0 and chelsea.max() <= 1 and chelsea.std() > 0.05


def test_to_tensor_resizes_the_shorter_side_and_crops_the_centre():
    # 20 rows x 60 columns: red | blue | red in thirds; the centre square is the blue third.
    strip = np.zeros((20, 60, 3), dtype=np.uint8)
    strip[:, :20, 0] = 255
    strip[:, 20:40, 2] = 255
    strip[:, 40:, 0] = 255
    tensor = to_tensor(strip, size=10)
    assert tensor.shape == (1, 3, 10, 10)
    inner = tensor[0, :, :, 1:-1]  # the edge columns blend a little with the red (antialiasing)
    assert torch.allclose(inner[2], torch.ones(10, 8), atol=0.02) and inner[0].max() < 0.02
    assert tensor[0, 0].max() < 0.2
    assert to_tensor(strip, size=None).shape == (1, 3, 20, 60)


def test_to_tensor_antialiases_when_shrinking():
    stripes = np.zeros((64, 64), dtype=np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes average to grey, not to a sampled colour
    tensor = to_tensor(stripes, size=16)
    assert torch.allclose(tensor, torch.full_like(tensor, 0.5), atol=0.05)


def test_to_tensor_keeps_float_precision_of_a_tensor_input():
    image = torch.full((3, 6, 9), 0.1234)
    assert torch.equal(to_tensor(image, size=None), image.unsqueeze(0))
    assert to_tensor(image.unsqueeze(0), size=4).shape == (1, 3, 4, 4)


@pytest.mark.parametrize("size", [0, -3, 2.5, True, "224"])
def test_to_tensor_rejects_sizes_that_are_not_positive_ints(size):
    with pytest.raises(SaliencyLabError, match="size"):
        to_tensor(np.zeros((8, 8), dtype=np.uint8), size=size)


def test_to_numpy_image_round_trips_with_or_without_the_batch_dimension(chelsea):
    for tensor in (chelsea, chelsea[0]):
        array = to_numpy_image(tensor)
        assert array.shape == (224, 224, 3) and array.dtype == np.float32
        assert np.array_equal(array, chelsea[0].permute(1, 2, 0).numpy())


def test_to_numpy_image_works_on_tensors_that_require_grad(chelsea):
    assert to_numpy_image(chelsea.requires_grad_()).shape == (224, 224, 3)


def test_to_numpy_image_refuses_a_batch_of_several_with_a_hint(chelsea):
    with pytest.raises(SaliencyLabError, match=r"batch of 2.*images\[0\]"):
        to_numpy_image(torch.cat([chelsea, chelsea]))


@pytest.mark.parametrize(
    "shape, message",
    [((1, 1, 8, 8), "greyscale"), ((1, 4, 8, 8), "RGBA"), ((8, 8), "dimensions"),
     ((8, 8, 3), "channels")],
)
def test_wrong_tensor_shapes_get_a_hint(shape, message):
    with pytest.raises(SaliencyLabError, match=message):
        to_numpy_image(torch.zeros(shape))
    with pytest.raises(SaliencyLabError, match=message):
        to_tensor(torch.zeros(shape))


def test_tensor_values_outside_0_1_warn_and_are_clipped_for_display():
    with pytest.warns(UserWarning, match=r"outside \[0, 1\]"):
        array = to_numpy_image(torch.full((3, 2, 2), 2.0))
    assert (array == 1).all()


# ---------------------------------------------------------------- two photos side by side

def test_side_by_side_puts_each_photo_in_its_box():
    image, (left, right) = side_by_side("chelsea", "coffee", size=64)
    assert image.shape == (1, 3, 64, 128)
    assert (left, right) == (Box(0, 0, 64, 64), Box(64, 0, 128, 64))
    assert torch.equal(image[..., left.y0:left.y1, left.x0:left.x1], to_tensor("chelsea", 64))
    assert torch.equal(image[..., right.y0:right.y1, right.x0:right.x1], to_tensor("coffee", 64))
    mask = right.mask(64, 128)
    assert mask.shape == (64, 128) and mask.sum() == 64 * 64 and mask[:, 64:].all()
