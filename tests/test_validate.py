"""saliencylab._validate: every argument check accepts what it should and says what to do otherwise.

Also the rule that keeps the checks in one place: no module reaches into another module's
private helpers (only ``_core`` and ``_validate`` are shared by all).
"""

from __future__ import annotations

import ast
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from saliencylab import SaliencyLabError
from saliencylab import _validate as validate
from saliencylab._core import reduce_channels

LIBRARY = Path(__file__).resolve().parent.parent / "lib" / "saliencylab"


def raises(message: str):
    return pytest.raises(SaliencyLabError, match=re.escape(message))


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("value, minimum, expected", [
    (1, 1, 1), (50, 1, 50), (np.int64(3), 1, 3), (0, 0, 0), (2, 2, 2),
])
def test_positive_int_accepts_ints_from_the_minimum_up(value, minimum, expected):
    result = validate.positive_int(value, "steps", minimum=minimum)
    assert result == expected and type(result) is int


@pytest.mark.parametrize("value, minimum", [
    (0, 1), (-1, 1), (2.5, 1), (2.0, 1), (True, 1), ("3", 1), (None, 1), (1, 2), (-1, 0),
])
def test_positive_int_rejects_the_rest_naming_the_option_and_the_minimum(value, minimum):
    with raises(f"samples must be an int >= {minimum}, got {value!r}."):
        validate.positive_int(value, "samples", minimum=minimum)


def test_batch_size_is_none_or_a_positive_int():
    assert validate.batch_size(None) is None
    assert validate.batch_size(8) == 8
    with raises("batch_size must be an int >= 1, got 0."):
        validate.batch_size(0)
    with raises("images_per_pass must be an int >= 1, got 1.5."):
        validate.batch_size(1.5, "images_per_pass")


@pytest.mark.parametrize("value", [0.5, 1, np.float32(0.1), math.inf])
def test_positive_number_accepts_numbers_above_zero(value):
    assert validate.positive_number(value, "lr") == float(value)


@pytest.mark.parametrize("value, message", [
    (0, "lr must be a positive number (lr > 0), got 0."),
    (-1, "lr must be a positive number (lr > 0), got -1."),
    (math.nan, "lr must be a number (lr > 0), got nan."),
    (True, "lr must be a number (lr > 0), got True."),
    ("0.1", "lr must be a number (lr > 0), got '0.1'."),
    (None, "lr must be a number (lr > 0), got None."),
])
def test_positive_number_rejects_the_rest(value, message):
    with raises(message):
        validate.positive_number(value, "lr")


@pytest.mark.parametrize("value", [0, 0.0, 2.5, np.float64(0.15), math.inf])
def test_non_negative_number_accepts_zero_and_above(value):
    assert validate.non_negative_number(value, "tolerance") == float(value)


@pytest.mark.parametrize("value, message", [
    (-0.1, "tolerance must be a number >= 0, got -0.1. In pixels."),
    (math.nan, "tolerance must be a number >= 0, got nan. In pixels."),
    (False, "tolerance must be a number >= 0, got False. In pixels."),
    ("15", "tolerance must be a number >= 0, got '15'. In pixels."),
])
def test_non_negative_number_rejects_the_rest_with_the_hint(value, message):
    with raises(message):
        validate.non_negative_number(value, "tolerance", hint="In pixels.")


@pytest.mark.parametrize("value", [0, 0.0, 0.5, 1, 1.0])
def test_fraction_accepts_zero_to_one(value):
    assert validate.fraction(value, "alpha") == float(value)


@pytest.mark.parametrize("value, message", [
    (1.5, "alpha must be in [0, 1], got 1.5."),
    (-0.1, "alpha must be in [0, 1], got -0.1."),
    (math.nan, "alpha must be a number in [0, 1], got nan."),
    ("0.5", "alpha must be a number in [0, 1], got '0.5'."),
])
def test_fraction_rejects_the_rest(value, message):
    with raises(message):
        validate.fraction(value, "alpha")


@pytest.mark.parametrize("value, expected", [
    (8, (8, 8)), ((8, 4), (8, 4)), ([3, 5], (3, 5)), (np.int64(2), (2, 2)),
])
def test_int_pair_takes_an_int_or_a_height_width_pair(value, expected):
    assert validate.int_pair(value, "window") == expected


@pytest.mark.parametrize("value, message", [
    ((8,), "window must be an int or a (height, width) pair of ints, got (8,)."),
    ((8, 4.0), "window must be an int or a (height, width) pair of ints, got (8, 4.0)."),
    (4.0, "window must be an int or a (height, width) pair of ints, got 4.0."),
    (True, "window must be an int or a (height, width) pair of ints, got True."),
    ((0, 3), "window must be positive, got (0, 3)."),
    (-2, "window must be positive, got -2."),
])
def test_int_pair_rejects_the_rest(value, message):
    with raises(message):
        validate.int_pair(value, "window")


# --------------------------------------------------------------------------- choices


def test_one_of_returns_the_choice_and_lists_the_options_otherwise():
    assert validate.one_of("prob", "score", ("prob", "logit")) == "prob"
    with raises("score must be one of ('prob', 'logit'), got 'probability'."):
        validate.one_of("probability", "score", ("prob", "logit"))
    with raises("split must be one of ('test', 'train'), got None."):
        validate.one_of(None, "split", ["test", "train"])
    with raises("steps must be one of (1, 2), got True."):  # True == 1, but it is not a count
        validate.one_of(True, "steps", (1, 2))
    with raises("score must be one of ('prob', 'logit'), got tensor(1.)."):
        validate.one_of(torch.tensor(1.0), "score", ("prob", "logit"))


@pytest.mark.parametrize("reduce", [None, "max_abs", "sum_abs", "sum", "abs_sum"])
def test_reduce_option_accepts_the_reducers_and_reduce_channels_applies_the_same_table(reduce):
    assert validate.reduce_option(reduce) == reduce
    maps = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(reduce_channels(maps, reduce), validate.REDUCERS[reduce](maps))


def test_reducers_compute_what_their_names_say():
    maps = torch.tensor([1.0, -3.0, 2.0]).view(1, 3, 1, 1)
    got = {name: validate.REDUCERS[name](maps).flatten().tolist() for name in validate.REDUCERS if name}
    assert got == {"max_abs": [3.0], "sum_abs": [6.0], "sum": [0.0], "abs_sum": [0.0]}
    assert validate.REDUCERS[None](maps) is maps


@pytest.mark.parametrize("value", ["mean", "MAX_ABS", 3, ["max_abs"], True])
def test_reduce_option_rejects_the_rest_listing_the_choices(value):
    with raises(f"reduce must be one of ['abs_sum', 'max_abs', 'sum', 'sum_abs'] or None, got {value!r}."):
        validate.reduce_option(value)


def test_known_name_suggests_close_names_and_lists_them_all():
    assert validate.known_name("conv3", "layer", ["conv1", "conv3"]) == "conv3"
    with pytest.raises(validate.UnknownNameError) as caught:
        validate.known_name("cnv3", "layer", ["conv1", "conv3"], note=" in Net")
    assert str(caught.value) == "unknown layer 'cnv3' in Net. Did you mean 'conv3', 'conv1'? Valid: conv1, conv3."
    assert isinstance(caught.value, (SaliencyLabError, KeyError, validate.NameLookupError))
    with pytest.raises(validate.UnknownNameError, match="unknown layer 3"):
        validate.known_name(3, "layer", ["conv1"])
    many = [f"name{i}" for i in range(40)]
    with pytest.raises(validate.UnknownNameError, match="Valid: 40 names"):
        validate.known_name("zzz", "model", many)


def test_the_error_classes_are_the_ones_the_public_modules_export():
    import saliencylab
    import saliencylab._core
    import saliencylab.images

    assert saliencylab.SaliencyLabError is validate.SaliencyLabError is saliencylab._core.SaliencyLabError
    assert saliencylab.images.UnknownNameError is validate.UnknownNameError
    assert saliencylab.images.NameLookupError is validate.NameLookupError
    assert saliencylab.images.unknown_name_error is validate.unknown_name_error


# --------------------------------------------------------------------------- classes


def test_class_index_is_one_int_in_range_when_the_class_count_is_known():
    assert validate.class_index(3) == 3
    assert validate.class_index(np.int64(9), classes=10) == 9
    with raises("target 10 is out of range: this model has 10 classes (valid targets are 0..9)."):
        validate.class_index(10, classes=10)
    with raises("target -1 is out of range"):
        validate.class_index(-1, classes=10)
    for bad in ("three", [1], True, 1.0, None):
        with raises(f"target must be one class index (int), got {bad!r}. Look names up with "
                    "saliencylab.imagenet.ImageNetIndex()['goldfish']."):
            validate.class_index(bad, classes=10)


def test_targets_in_range_names_the_first_bad_target():
    validate.targets_in_range(torch.tensor([0, 4, 2]), 5)
    with raises("target 5 is out of range: this model has 5 classes (valid targets are 0..4)."):
        validate.targets_in_range(torch.tensor([0, 5, 7]), 5)


# --------------------------------------------------------------------------- models


def test_nn_module_suspects_swapped_arguments():
    model = nn.Linear(2, 2)
    assert validate.nn_module(model) is model
    with raises("model must be a torch.nn.Module (e.g. load_model()), got Tensor; check the "
                "argument order: (model, images, ...)."):
        validate.nn_module(torch.zeros(2))


def test_same_device_passes_models_on_the_images_device_or_without_weights():
    validate.same_device(torch.zeros(1, 3, 2, 2), nn.Linear(2, 2))
    validate.same_device(torch.zeros(1, 3, 2, 2, device="meta"), nn.ReLU())
    with raises("the model is on meta but the images are on cpu: move one of them, e.g. "
                "images = images.to('meta')."):
        validate.same_device(torch.zeros(1, 3, 2, 2), nn.Linear(2, 2, device="meta"))


# --------------------------------------------------------------------------- tensors


def test_image_batch_adds_the_batch_dimension_to_one_image():
    image = torch.rand(3, 4, 5)
    batch, single = validate.image_batch(image)
    assert single and batch.shape == (1, 3, 4, 5)
    batch, single = validate.image_batch(torch.rand(2, 3, 4, 5))
    assert not single and batch.shape == (2, 3, 4, 5)


@pytest.mark.parametrize("value, message", [
    (np.zeros((3, 4, 4)), "images must be a torch.Tensor of shape [B, 3, H, W] or [3, H, W], got ndarray."),
    (torch.zeros(4, 4), "images must have shape [B, 3, H, W] or [3, H, W], got [4, 4] (2 dimensions)."),
    (torch.zeros(1, 1, 4, 4), "it looks greyscale"),
    (torch.zeros(1, 4, 4, 4), "it looks like RGBA"),
    (torch.zeros(1, 5, 4, 3), "channels must come second"),
    (torch.zeros(1, 3, 4, 4, dtype=torch.uint8), "must be a float tensor with values in [0, 1], got dtype torch.uint8"),
])
def test_image_batch_rejects_what_is_not_an_rgb_float_image(value, message):
    with raises(message):
        validate.image_batch(value)


def test_image_batch_warns_about_values_outside_0_1():
    with pytest.warns(UserWarning, match=r"outside \[0, 1\]"):
        validate.image_batch(torch.full((3, 2, 2), 2.0))
    normalised = (torch.rand(3, 8, 8) - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / 0.229
    with pytest.warns(UserWarning, match="do not normalise with the ImageNet mean/std yourself"):
        validate.image_batch(normalised)


def test_a_little_noise_past_the_edges_is_no_reason_to_warn():
    noisy = (torch.rand(3, 8, 8) + 0.05 * torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(0)))
    assert noisy.min() < 0 and noisy.max() > 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate.image_batch(noisy.clamp(-0.09, 1.09))


def test_one_image_takes_one_image_at_a_time():
    batch, single = validate.one_image(torch.rand(1, 3, 4, 4), "init")
    assert batch.shape == (1, 3, 4, 4) and not single
    with raises("init must be one image ([3, H, W] or [1, 3, H, W]; one image at a time), got a "
                "batch of 2 (shape [2, 3, 4, 4]): pick one, e.g. images[0]."):
        validate.one_image(torch.rand(2, 3, 4, 4), "init")


def test_map_batch_adds_the_batch_dimension_and_detaches():
    leaf = torch.rand(4, 5, requires_grad=True)
    maps, single = validate.map_batch(leaf)
    assert single and maps.shape == (1, 4, 5) and not maps.requires_grad
    maps, single = validate.map_batch(torch.randint(0, 3, (2, 4, 5)))
    assert not single and maps.dtype == torch.int64


@pytest.mark.parametrize("value, message", [
    (np.zeros((4, 4)), "saliency_maps must be a torch.Tensor of shape [B, H, W] or [H, W], got ndarray."),
    (torch.zeros(2, 3, 4, 4), "reduce them to one value per pixel first, e.g. maps.abs().amax(dim=1)"),
    (torch.zeros(4), "saliency_maps must have shape [B, H, W] or [H, W], got [4]."),
    (torch.zeros(4, 4, dtype=torch.complex64), "saliency_maps must be real-valued"),
    (torch.tensor([[[0.0, math.nan]], [[0.0, 1.0]]]), "saliency_maps contain NaN (image(s) [0])"),
])
def test_map_batch_rejects_what_is_not_one_real_value_per_pixel(value, message):
    with raises(message):
        validate.map_batch(value)


def test_maps_match_images_wants_one_map_per_image_of_its_size():
    images = torch.rand(2, 3, 4, 5)
    validate.maps_match_images(torch.rand(2, 4, 5), images)
    for maps in (torch.rand(2, 4, 4), torch.rand(3, 4, 5)):
        with raises("with the images' height and width (2 x [4, 5])"):
            validate.maps_match_images(maps, images)


@pytest.mark.parametrize("value", [
    0.5, np.float64(0.5), torch.tensor(0.5), torch.full((3, 1, 1), 0.5), torch.full((3, 4, 5), 0.5),
    torch.full((2, 3, 4, 5), 0.5), torch.full((5,), 0.5, dtype=torch.float64),
])
def test_fill_value_broadcasts_numbers_and_tensors_to_the_images(value):
    images = torch.rand(2, 3, 4, 5)
    fill = validate.fill_value(value, images)
    assert fill.shape == images.shape and fill.dtype == images.dtype
    assert torch.equal(fill, torch.full_like(images, 0.5))


@pytest.mark.parametrize("value, message", [
    ("grey", "baseline must be a number (e.g. 0.0 black or 0.5 grey) or an image tensor, got str."),
    (True, "baseline must be a number (e.g. 0.0 black or 0.5 grey) or an image tensor, got bool."),
    (torch.zeros(3, 3, 4, 5), "baseline of shape [3, 3, 4, 5] cannot be broadcast to the images' shape [2, 3, 4, 5]"),
    (torch.zeros(3, 4, 6), "baseline of shape [3, 4, 6] cannot be broadcast"),
])
def test_fill_value_rejects_what_does_not_fit(value, message):
    with raises(message):
        validate.fill_value(value, torch.rand(2, 3, 4, 5))


# --------------------------------------------------------------------------- one place


def _module_name(path: Path) -> str:
    parts = ("saliencylab", *path.relative_to(LIBRARY).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """``from X import _name`` of another module, and imports of another package's private
    module (``saliencylab.attribution._base`` from outside ``saliencylab.attribution``)."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("saliencylab"):
            continue
        parts = node.module.split(".")
        for depth, part in enumerate(parts):
            owner = ".".join(parts[:depth])
            shared = part in ("_core", "_validate") and owner == "saliencylab"
            if part.startswith("_") and not shared and not (package + ".").startswith(owner + "."):
                found.append(f"{module}: from {node.module} import ...")
        for alias in node.names:
            is_submodule = node.module == package  # e.g. ``from saliencylab.checks import _common``
            shared = node.module == "saliencylab" and alias.name in ("_core", "_validate")
            if alias.name.startswith("_") and not is_submodule and not shared:
                found.append(f"{module}: from {node.module} import {alias.name}")
    return found


def test_no_module_imports_another_modules_private_helpers():
    offences = [
        found
        for path in sorted(LIBRARY.rglob("*.py"))
        for found in _private_imports(path.read_text(), _module_name(path), path.name == "__init__.py")
    ]
    assert offences == []


def test_the_rule_sees_private_imports_and_allows_the_shared_modules():
    source = (
        "from saliencylab import _validate as validate\n"
        "from saliencylab._core import SaliencyLabError\n"
        "from saliencylab.metrics.rank import spearman\n"
        "from saliencylab.attribution._base import explain\n"
        "from saliencylab.attribution.occlusion import _window_starts\n"
    )
    assert _private_imports(source, "saliencylab.metrics.probe") == [
        "saliencylab.metrics.probe: from saliencylab.attribution._base import ...",
        "saliencylab.metrics.probe: from saliencylab.attribution.occlusion import _window_starts",
    ]
    inside = "from saliencylab.attribution._base import explain\nfrom saliencylab.checks import _common\n"
    assert _private_imports(inside, "saliencylab.attribution.saliency") == [
        "saliencylab.attribution.saliency: from saliencylab.checks import _common",
    ]
    assert _private_imports("from saliencylab.checks import _common\n", "saliencylab.checks", True) == []


def test_validate_is_the_bottom_of_the_package():
    tree = ast.parse((LIBRARY / "_validate.py").read_text())
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [name for name in imported if name and name.startswith("saliencylab")]
