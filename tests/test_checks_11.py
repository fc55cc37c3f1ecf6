"""The check of notebook 11 (the deletion curve, exercise 2 of notebook 10 before the split)
accepts the reference solution and the library's own curve, and rejects every wrong answer in
tests/wrong_answers/11_faithfulness with the explanation that names its mistake."""

from __future__ import annotations

import pytest
import torch
from exercise_cells import cell_source, check_module_tests, define

from saliencylab.checks import ReferenceImplementationCalled, check_deletion_scores
from saliencylab.checks.nb11_faithfulness import DELETION_IMAGE_SIZE
from saliencylab.metrics import deletion_curve

# wrong answer file -> a phrase its explanation must contain
EXPECTED_EXPLANATIONS = {
    ("11_faithfulness", "deletion_scores"): {
        "autograd_left_on": "autograd on",
        "increasing_order": "LEAST salient pixels first",
        "logits_instead_of_probabilities": "tracked the target LOGIT",
        "missing_full_point": "100 % point is missing",
        "missing_zero_point": "0 % point is missing",
        "modifies_image_in_place": "changed the image it was given",
        "not_cumulative": "not cumulative",
        "one_image_per_pass": "not batched",
        "ranks_by_absolute_value": "ranked the pixels by |map|",
        "rounded_pixel_counts": "rounded",
    },
}
CHECKS = {"deletion_scores": check_deletion_scores}


def reference(assignment: str, exercise: str):
    return define(cell_source(assignment, exercise), exercise)


(test_reference_solution_passes, test_every_wrong_answer_file_has_an_expected_explanation,
 test_wrong_answer_is_caught_with_its_explanation) = check_module_tests(EXPECTED_EXPLANATIONS, CHECKS)


def test_deletion_check_image_makes_rounding_visible():
    pixels = DELETION_IMAGE_SIZE[0] * DELETION_IMAGE_SIZE[1]
    assert any((k * pixels) // 10 != round(k * pixels / 10) for k in range(11))


def test_deletion_check_accepts_the_library_itself():
    """The check's comparison accepts the library's own curve (run without the integrity layer: in
    a notebook, calling the reference inside the exercise is flagged, as the last call shows)."""
    def library_curve(model, image, saliency_map, target, steps=16, baseline=0.0, batch_size=8):
        return deletion_curve(model, image, saliency_map, target, steps=steps, baseline=baseline, batch_size=batch_size)

    check_deletion_scores.__wrapped__(library_curve)
    check_deletion_scores.__wrapped__(library_curve, seed=3, steps=5, batch_size=6, baseline=0.0)
    with pytest.raises(ReferenceImplementationCalled):
        check_deletion_scores(library_curve)


def test_deletion_solution_breaks_ties_like_the_library():
    """A stable sort: pixels with equal saliency are deleted in raster order, as the library does."""
    from saliencylab.checks.nb06_occlusion import fixed_occlusion_model

    deletion_scores = reference("11_faithfulness", "deletion_scores")
    model = fixed_occlusion_model(3)
    image = torch.rand(3, 8, 10, generator=torch.Generator().manual_seed(1))
    tied = torch.zeros(8, 10)
    tied[2:5, 3:7] = 1.0  # a plateau and a flat background, like a clamped Grad-CAM map
    ours = deletion_scores(model, image, tied, 2, steps=7, baseline=0.2, batch_size=3)
    torch.testing.assert_close(ours, deletion_curve(model, image, tied, 2, steps=7, baseline=0.2))
