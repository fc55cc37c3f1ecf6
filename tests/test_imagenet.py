"""saliencylab.imagenet: class names by (partial) name, and top-k predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saliencylab import SaliencyLabError, digits
from saliencylab.imagenet import AmbiguousNameError, ImageNetIndex, predict, top_class
from saliencylab.images import UnknownNameError


@pytest.fixture(scope="module")
def idx() -> ImageNetIndex:
    return ImageNetIndex()


# ---------------------------------------------------------------- ImageNetIndex

@pytest.mark.parametrize(
    "query",
    ["great grey owl", "Great Grey Owl", "great_grey_owl", "  great   grey-owl ", "grey owl"],
)
def test_names_match_ignoring_case_separators_and_partially(idx, query):
    assert idx[query] == 24


def test_an_exact_name_wins_over_longer_names_that_contain_it(idx):
    assert idx["crane"] == 517 and idx.name(517) == "crane"
    assert idx["crane bird"] == 134


def test_names_that_differ_only_in_case_are_told_apart_by_their_exact_spelling(idx):
    assert idx["Cardigan"] == 264 and idx.name(264) == "Cardigan"  # the Welsh corgi
    assert idx["cardigan"] == 474 and idx.name(474) == "cardigan"  # the sweater
    with pytest.raises(AmbiguousNameError, match=r"'Cardigan' \(264\), 'cardigan' \(474\)"):
        idx["CARDIGAN"]


def test_an_ambiguous_part_lists_the_candidates_with_their_indices(idx):
    with pytest.raises(AmbiguousNameError) as caught:
        idx["cat"]
    message = str(caught.value)
    assert "'tiger cat' (282)" in message and "'Persian cat' (283)" in message
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, SaliencyLabError)


def test_an_unknown_name_suggests_close_ones(idx):
    with pytest.raises(UnknownNameError, match="Did you mean 'great grey owl'"):
        idx["great gray owl"]
    with pytest.raises(KeyError):
        idx["xyzzy"]


def test_index_to_name_and_its_range(idx):
    assert idx.name(24) == "great grey owl"
    assert idx.name(torch.tensor(24)) == idx.name(np.int64(24)) == "great grey owl"
    for bad in (1000, -1):
        with pytest.raises(SaliencyLabError, match=r"out of range.*0\.\.999"):
            idx.name(bad)
    with pytest.raises(SaliencyLabError, match="int"):
        idx.name(2.5)


def test_looking_up_by_index_points_to_name(idx):
    with pytest.raises(SaliencyLabError, match=r"idx\.name\(24\)"):
        idx[24]


def test_size_names_membership_and_search(idx):
    assert len(idx) == 1000 and len(idx.names) == 1000
    assert idx.names[24] == "great grey owl" and idx.names[0] == "tench"
    assert "tabby" in idx and "grey owl" in idx and "cat" not in idx and "xyzzy" not in idx
    assert (24, "great grey owl") in idx.search("OWL")


def test_an_index_over_other_names():
    digit_index = ImageNetIndex(digits.DIGITS_CLASS_NAMES)
    assert digit_index["7"] == 7 and len(digit_index) == 10


# ---------------------------------------------------------------- predict

def test_predict_one_image_gives_one_sorted_list_of_name_probability_pairs(lite0, chelsea):
    top = predict(lite0, chelsea[0])
    assert len(top) == 5 and all(isinstance(n, str) and isinstance(p, float) for n, p in top)
    probabilities = [p for _, p in top]
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1 + 1e-6
    assert top[0][0] in {"tabby", "tiger cat", "Egyptian cat"}
    with torch.no_grad():
        expected = lite0(chelsea).softmax(dim=1)[0].max().item()
    assert top[0][1] == pytest.approx(expected, rel=1e-5)


def test_predict_a_batch_gives_one_list_per_image(lite0, chelsea):
    flipped = chelsea.flip(-1)
    results = predict(lite0, torch.cat([chelsea, flipped]), top=3)
    assert len(results) == 2 and all(len(r) == 3 for r in results)
    alone = predict(lite0, chelsea, top=3)[0]
    assert [n for n, _ in results[0]] == [n for n, _ in alone]
    assert [p for _, p in results[0]] == pytest.approx([p for _, p in alone], abs=1e-5)


def test_predict_on_the_digits_cnn_names_digits(digits_cnn):
    images, labels = digits.load_digits_images("test")
    results = predict(digits_cnn, images[:8], top=20)  # more than 10 classes: all 10
    assert all(len(r) == 10 for r in results)
    assert [r[0][0] for r in results] == [str(label) for label in labels[:8].tolist()]


def test_predict_uses_given_labels_and_checks_their_count(digits_cnn):
    images, _ = digits.load_digits_images("test")
    words = [f"digit {d}" for d in range(10)]
    assert predict(digits_cnn, images[0], top=1, labels=words)[0][0].startswith("digit ")
    with pytest.raises(SaliencyLabError, match="labels has 3 names but the model has 10"):
        predict(digits_cnn, images[0], labels=["a", "b", "c"])


def test_predict_restores_train_mode_and_needs_no_gradients(digits_cnn):
    images, _ = digits.load_digits_images("test")
    digits_cnn.train()
    try:
        with pytest.warns(UserWarning, match="train mode"):
            result = predict(digits_cnn, images[:2])
        assert all(m.training for m in digits_cnn.modules())
    finally:
        digits_cnn.eval()
    assert result == predict(digits_cnn, images[:2])  # eval mode was used either way


@pytest.mark.parametrize("top", [0, -1, 2.5, True])
def test_predict_rejects_a_bad_top(digits_cnn, top):
    with pytest.raises(SaliencyLabError, match="top"):
        predict(digits_cnn, torch.zeros(3, 32, 32), top=top)


@pytest.mark.parametrize(
    "shape, message",
    [((32, 32), "dimensions"), ((1, 1, 32, 32), "greyscale"), ((1, 4, 32, 32), "RGBA"),
     ((2, 32, 32, 3), "channels")],
)
def test_predict_explains_wrong_image_shapes(digits_cnn, shape, message):
    with pytest.raises(SaliencyLabError, match=message):
        predict(digits_cnn, torch.zeros(shape))


def test_predict_warns_about_values_outside_0_1(digits_cnn):
    with pytest.warns(UserWarning, match=r"outside \[0, 1\]"):
        predict(digits_cnn, torch.full((3, 32, 32), 255.0))


def test_predict_refuses_integer_images(digits_cnn):
    with pytest.raises(SaliencyLabError, match="float"):
        predict(digits_cnn, torch.zeros(3, 32, 32, dtype=torch.uint8))


def test_top_class_is_predicts_first_pair_for_one_image_in_either_shape(digits_cnn):
    images, labels = digits.load_digits_images("test")
    expected = predict(digits_cnn, images[0], top=1)[0]
    assert top_class(digits_cnn, images[0]) == expected
    assert top_class(digits_cnn, images[:1]) == expected
    assert expected[0] == str(labels[0].item())
    assert top_class(digits_cnn, images[0], labels=[f"d{i}" for i in range(10)])[0] == f"d{labels[0].item()}"


def test_top_class_of_a_batch_points_to_predict(digits_cnn):
    images, _ = digits.load_digits_images("test")
    with pytest.raises(SaliencyLabError, match=r"one image, got a batch of 2.*predict\(model, images, top=1\)"):
        top_class(digits_cnn, images[:2])
