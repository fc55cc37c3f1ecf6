"""Lesson 13's planted shortcut: the mark, the two models that ship with the package, and the
metric that measures how much of a map falls on the mark (``saliencylab.metrics.mask_share``).

The models' known answer is what the lesson grades attribution methods against, so it is
tested here on the shipped weights: the shortcut model follows a moved mark, its twin does not.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from saliencylab import SaliencyLabError, digits, shortcut
from saliencylab.digits import DigitsTrainingSettings, load_digits_images
from saliencylab.metrics import mask_share
from saliencylab.models import load_model
from saliencylab.shortcut import MARK_SIZE, mark_box, mark_classes, mark_masks, plant_mark, shortcut_report

SHIPPED = digits.PACKAGED_DATA_DIR
MODELS = ("digits_cnn_shortcut", "digits_cnn_shortcut_twin")


@pytest.fixture(scope="module")
def test_digits() -> tuple[torch.Tensor, torch.Tensor]:
    return load_digits_images("test", device="cpu")


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    return {name: load_model(name).cpu() for name in MODELS}


# ---------------------------------------------------------------- the mark


def test_each_class_has_its_own_square_on_the_left_or_right_edge():
    boxes = [mark_box(cls) for cls in range(10)]
    assert len(set(boxes)) == 10
    for cls, (y0, x0, y1, x1) in enumerate(boxes):
        assert (y1 - y0, x1 - x0) == (MARK_SIZE, MARK_SIZE)
        assert x0 == (0 if cls < 5 else 32 - MARK_SIZE) and 0 <= y0 and y1 <= 32
    masks = mark_masks(torch.arange(10))
    assert masks.shape == (10, 32, 32) and masks.sum().item() == 10 * MARK_SIZE**2
    assert masks.any(dim=0).sum().item() == 10 * MARK_SIZE**2, "no two marks overlap"


def test_the_marks_sit_where_the_digits_have_almost_no_ink(test_digits):
    images, _ = test_digits
    every_mark = mark_masks(torch.arange(10)).any(dim=0)  # [32, 32]
    ink_there = images.mean(dim=1)[:, every_mark]  # [N, 90]
    assert ink_there.mean() < 0.01 and (ink_there > 0.5).float().mean() < 0.01


def test_plant_mark_draws_a_white_square_on_a_copy(test_digits):
    images, labels = test_digits[0][:6], test_digits[1][:6]
    original = images.clone()
    marked, masks = plant_mark(images, labels)
    assert torch.equal(images, original), "the caller's images are left alone"
    assert marked.shape == images.shape and masks.shape == (6, 32, 32) and masks.dtype == torch.bool
    assert torch.equal(masks, mark_masks(labels))
    assert (marked.permute(1, 0, 2, 3)[:, masks] == shortcut.MARK_VALUE).all()
    assert torch.equal(marked.permute(1, 0, 2, 3)[:, ~masks], images.permute(1, 0, 2, 3)[:, ~masks])
    one_class, one_masks = plant_mark(images, 7)
    assert torch.equal(one_masks, mark_masks(torch.full((6,), 7)))


@pytest.mark.parametrize("images, classes, message", [
    (torch.rand(2, 3, 28, 28), [0, 1], r"\[B, 3, 32, 32\]"),
    (torch.rand(3, 32, 32), [0], r"\[B, 3, 32, 32\]"),
    (torch.rand(2, 3, 32, 32), [0, 10], "classes 0-9, got 10"),
    (torch.rand(2, 3, 32, 32), [0, 1, 2], "3 entries for 2 images"),
    (torch.rand(2, 3, 32, 32), [0.0, 1.0], "integer classes"),
])
def test_plant_mark_refuses_what_it_cannot_mark(images, classes, message):
    with pytest.raises(SaliencyLabError, match=message):
        plant_mark(images, torch.tensor(classes))


def test_mark_classes_are_seeded_and_never_the_label_when_moved():
    labels = torch.arange(10).repeat(50)
    assert torch.equal(mark_classes(labels, "label"), labels)
    moved = mark_classes(labels, "other", seed=3)
    assert not (moved == labels).any() and torch.equal(moved, mark_classes(labels, "other", seed=3))
    assert not torch.equal(moved, mark_classes(labels, "other", seed=4))
    drawn = mark_classes(labels, "random", seed=1)
    assert set(drawn.tolist()) == set(range(10)) and 0.03 < (drawn == labels).float().mean() < 0.2
    with pytest.raises(SaliencyLabError, match="placement must be one of"):
        mark_classes(labels, "elsewhere")


# ---------------------------------------------------------------- the two models and the known answer


@pytest.mark.parametrize("name", MODELS)
def test_the_shipped_weights_match_their_record(name, models):
    stored = json.loads((SHIPPED / f"{name}.json").read_text())
    assert digits.state_dict_sha256(torch.load(SHIPPED / f"{name}.pt", weights_only=True)) == stored["sha256"]
    model = models[name]
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.class_names == tuple("0123456789") and model.input_size == 32
    report = shortcut_report(model)
    assert report["marked"] == stored["accuracy_marked"] and report["moved"] == stored["accuracy_moved"]
    assert report["follows_mark"] == stored["follows_moved_mark"] and report["clean"] == stored["accuracy_clean"]


def test_the_shortcut_model_follows_the_mark_and_its_twin_reads_the_digit(models):
    """The known answer lesson 13 grades attribution against, with margins well inside the
    measured values (shortcut: 100 % / 83 % / 4.9 % right, follows 94 %; twin: 98.7 / 98.7 / 98.9 %)."""
    shortcut_model, twin = (shortcut_report(models[name]) for name in MODELS)
    assert shortcut_model["marked"] > 0.98 and twin["marked"] > 0.97, "both look right on the test set as collected"
    assert shortcut_model["moved"] < 0.15 and shortcut_model["follows_mark"] > 0.85, "a moved mark takes the shortcut along"
    assert twin["moved"] > 0.97 and twin["follows_mark"] < 0.02, "the twin ignores where the mark is"
    assert shortcut_model["clean"] < twin["clean"] - 0.1, "without its mark the shortcut model is worse at digits"


def test_shortcut_training_is_deterministic_and_missing_weights_are_retrained(monkeypatch, tmp_path, capsys):
    one_epoch = DigitsTrainingSettings(epochs=1)
    first, info = shortcut.train_shortcut_cnn("label", one_epoch)
    second, _ = shortcut.train_shortcut_cnn("label", one_epoch)
    for (name, tensor), other in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(tensor, other), name
    assert info["mark_placement"] == "label" and info["settings"]["epochs"] == 1
    # As in a package without its data folder: the (here one-epoch) recipe runs and is cached.
    monkeypatch.delenv("SALIENCYLAB_DATA", raising=False)
    monkeypatch.setattr(digits, "PACKAGED_DATA_DIR", tmp_path / "no_package_data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(shortcut.TRAINERS, "digits_cnn_shortcut", lambda: (first, info))
    retrained = load_model("digits_cnn_shortcut")
    assert "training it now" in capsys.readouterr().err
    assert (tmp_path / "cache" / "saliencylab" / "digits_cnn_shortcut.pt").is_file()
    assert torch.equal(retrained.classifier.fc.weight.cpu(), first.classifier.fc.weight)


def test_a_twin_is_trained_with_random_marks():
    with pytest.raises(SaliencyLabError, match="placement must be one of"):
        shortcut.train_shortcut_cnn("other")
    assert set(shortcut.TRAINERS) == set(MODELS) and set(MODELS) < set(digits.TRAINED_MODEL_NAMES)


# ---------------------------------------------------------------- mask_share


def test_mask_share_is_the_positive_mass_inside_over_all_positive_mass():
    maps = torch.tensor([[[1.0, 2.0], [-3.0, 4.0]], [[0.0, 1.0], [1.0, 2.0]]])
    masks = torch.tensor([[[True, False], [False, True]], [[False, False], [True, True]]])
    assert mask_share(maps, masks).tolist() == pytest.approx([5 / 7, 3 / 4])
    assert mask_share(maps, masks, absolute=True).tolist() == pytest.approx([5 / 10, 3 / 4])
    assert mask_share(maps[0], masks[0]) == pytest.approx(5 / 7)
    boxes = torch.tensor([[0, 0, 1, 2], [1, 0, 2, 2]])  # top row, bottom row
    assert mask_share(maps, boxes).tolist() == pytest.approx([3 / 7, 3 / 4])


def test_an_even_map_scores_the_region_s_area_and_scale_does_not_matter():
    masks = mark_masks(torch.tensor([0, 9]))
    even = torch.ones(2, 32, 32)
    assert mask_share(even, masks).tolist() == pytest.approx([9 / 1024] * 2)
    maps = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(mask_share(1000 * maps, masks), mask_share(maps, masks))


@pytest.mark.parametrize("maps, masks, kwargs, message", [
    (-torch.rand(2, 4, 4), torch.ones(2, 4, 4, dtype=torch.bool), {}, r"image\(s\) \[0, 1\]: the map has no positive value"),
    (torch.zeros(1, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool), {"absolute": True}, "is zero everywhere"),
    (torch.zeros(20, 4, 4), torch.ones(20, 4, 4, dtype=torch.bool), {}, r"20 of 20 images \(\[0, 1, 2, 3, 4, 5, 6, 7, \.\.\.\]\)"),
    (torch.rand(2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.bool), {}, "covers no pixel"),
    (torch.rand(2, 4, 4), torch.ones(3, 4, 4, dtype=torch.bool), {}, "masks have shape"),
    (torch.rand(2, 4, 4), torch.ones(2, 4, 4), {}, "bool"),
    (torch.rand(2, 3, 4, 4), torch.ones(2, 4, 4, dtype=torch.bool), {}, "per-channel attributions"),
    (torch.full((1, 4, 4), float("nan")), torch.ones(1, 4, 4, dtype=torch.bool), {}, "NaN"),
])
def test_mask_share_refuses_what_has_no_share(maps, masks, kwargs, message):
    with pytest.raises(SaliencyLabError, match=message):
        mask_share(maps, masks, **kwargs)


def test_mask_share_is_quantus_relevance_mass_accuracy_for_unsigned_maps():
    """Quantus' ``RelevanceMassAccuracy(normalise=False)`` sums the map as given: for maps
    without negative values that is our positive mass, and with ``abs=True`` it is our
    ``absolute=True``. (For signed maps without ``abs`` Quantus sums signed values, so negative
    evidence outside the region can push its share above 1; we keep the positive part, as Arras
    et al. define the relevance mass.)"""
    quantus = pytest.importorskip("quantus")
    generator = torch.Generator().manual_seed(0)
    signed = torch.randn(3, 8, 8, generator=generator)
    masks = torch.rand(3, 8, 8, generator=generator) > 0.7
    for maps, absolute in ((signed.abs(), False), (signed, True)):
        metric = quantus.RelevanceMassAccuracy(normalise=False, abs=absolute, disable_warnings=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = metric(model=None, x_batch=np.zeros((3, 1, 8, 8), dtype=np.float32),
                            y_batch=np.zeros(3, dtype=int), a_batch=maps[:, None].numpy(),
                            s_batch=masks[:, None].numpy().astype(np.float32))
        assert mask_share(maps, masks, absolute=absolute).tolist() == pytest.approx(list(theirs), rel=1e-6)
