"""The check of notebook 13 (find the shortcut) accepts the reference solution and the library's
own metric, and rejects every wrong answer in tests/wrong_answers/13_find_the_shortcut with the
explanation that names its mistake."""

from __future__ import annotations

import pytest
import torch
from exercise_cells import cell_source, define, wrong_answer, wrong_answer_cases, wrong_answer_stems

from saliencylab.attribution import saliency
from saliencylab.checks import CheckFailed, ReferenceImplementationCalled, check_mark_share
from saliencylab.checks._common import close, non_predicted_targets
from saliencylab.checks._fixtures import fixed_occlusion_model, smooth_random_images
from saliencylab.checks.nb13_find_the_shortcut import (
    IMAGE_SIZE,
    MASK_BOXES,
    SIGNED_GRADIENT,
    _mark_share_mistakes,
    fixed_masks,
)
from saliencylab.digits import load_digits_images
from saliencylab.metrics import mask_share
from saliencylab.models import load_model
from saliencylab.shortcut import plant_mark

ASSIGNMENT, EXERCISE = "13_find_the_shortcut", "mark_share"

# wrong answer file -> a phrase its explanation must contain
EXPECTED_EXPLANATIONS = {
    (ASSIGNMENT, EXERCISE): {
        "absolute_value": "you took |map|",
        "counts_pixels": "you counted pixels",
        "mass_outside_the_mark": "divided by the mass OUTSIDE the mark",
        "means_instead_of_sums": "divided the MEAN on the mark",
        "min_max_normalised": "min-max normalised",
        "one_call_per_image": "call it ONCE on all the images",
        "signed_sums": "you summed the signed map",
        "target_not_passed": "without a target",
        "whole_batch_denominator": "mass of the whole BATCH",
    },
}


def reference():
    return define(cell_source(ASSIGNMENT, EXERCISE), EXERCISE)


def test_reference_solution_passes(capsys):
    check_mark_share(reference())
    check_mark_share(reference(), seed=3)
    out = capsys.readouterr().out
    assert out.count("✓ check_mark_share passed") == 2 and "images (1, 3, 10, 14)" in out


def test_every_wrong_answer_file_has_an_expected_explanation():
    assert wrong_answer_stems(ASSIGNMENT, EXERCISE) == set(EXPECTED_EXPLANATIONS[ASSIGNMENT, EXERCISE])


@pytest.mark.parametrize("assignment, exercise, stem, phrase", wrong_answer_cases(EXPECTED_EXPLANATIONS))
def test_wrong_answer_is_caught_with_its_explanation(assignment, exercise, stem, phrase):
    with pytest.raises(CheckFailed) as failure:
        check_mark_share(wrong_answer(assignment, exercise, stem))
    assert phrase in str(failure.value)


def test_the_check_compares_with_the_library_and_flags_a_call_of_it():
    def library_share(model, images, masks, method, target):
        return mask_share(method(model, images, target=target), masks)

    check_mark_share.__wrapped__(library_share)
    with pytest.raises(ReferenceImplementationCalled, match="mask_share"):
        check_mark_share(library_share)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_named_mistake_coincides_with_the_right_answer(seed):
    """Every explanation the check can give must be told apart from a correct result on its own
    inputs (else a right answer could be failed with it), and from the other explanations."""
    model = fixed_occlusion_model(seed + 7)
    images = smooth_random_images(len(MASK_BOXES), IMAGE_SIZE, seed + 11)
    masks = fixed_masks()
    targets = non_predicted_targets(model, images)
    expected = mask_share(SIGNED_GRADIENT(model, images, target=targets), masks)
    mistakes = list(_mark_share_mistakes(model, images, masks, SIGNED_GRADIENT, targets).items())
    for index, (explanation, result) in enumerate(mistakes):
        assert not close(result, expected, 1e-3), explanation
        for other, other_result in mistakes[index + 1:]:
            assert not close(result, other_result, 1e-3), (explanation, other)


def test_the_check_runs_on_the_lesson_s_models_and_marks(capsys):
    images, labels = load_digits_images("test")
    marked, masks = plant_mark(images[:4], labels[:4])
    for name in ("digits_cnn_shortcut", "digits_cnn_shortcut_twin"):
        check_mark_share(reference(), model=load_model(name), images=marked, masks=masks, method=saliency,
                         target=labels[:4])
    assert capsys.readouterr().out.count("passed") == 2


def test_inputs_are_given_together_or_not_at_all():
    with pytest.raises(ValueError, match="together"):
        check_mark_share(reference(), model=fixed_occlusion_model(), images=torch.rand(2, 3, 10, 14))
