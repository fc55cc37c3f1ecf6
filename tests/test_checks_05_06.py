"""The checks of notebooks 05_gradcam and 06_occlusion: the reference solutions pass, and
every wrong answer in tests/wrong_answers/ is caught with the explanation of its mistake."""

from __future__ import annotations

import pytest
import torch
from exercise_cells import cell_source, define, wrong_answer, wrong_answer_stems

from saliencylab.attribution import gradcam, occlusion
from saliencylab.checks import CheckFailed, ReferenceImplementationCalled, check_gradcam_map, check_occlusion_map
from saliencylab.checks.nb05_gradcam import fixed_gradcam_images, fixed_gradcam_model
from saliencylab.checks.nb06_occlusion import ForwardRecorder, fixed_occlusion_model, window_starts

# What the check must say for each wrong answer (a phrase of its explanation).
GRADCAM_MISTAKES = {
    "forgot_relu": "you forgot the ReLU",
    "nearest_upsampling": "mode='nearest'",
    "max_instead_of_mean": "MAX of its gradient",
    "elementwise_without_averaging": "elementwise without averaging",
    "no_upsampling": "is the size of the layer's activation",
    "swapped_height_width": "Height and width are swapped",
    "hooks_left_behind": "left hooks registered",
    "hook_not_removed_on_error": "when the computation raised an error",
    "backward_touches_param_grads": "changed the parameters' .grad",
}
OCCLUSION_MISTAKES = {
    "probabilities_instead_of_logits": "softmax probabilities",
    "score_instead_of_drop": "the sign is flipped",
    "summed_overlapping_windows": "summed the drops of overlapping windows",
    "off_by_one_last_window": "missed the last window position that fits",
    "off_by_one_divides_by_zero": "missed the last window position that fits",
    "not_batched": "is not batched",
    "grad_enabled": "autograd on",
    "ignored_baseline": "instead of `baseline`",
}


# ---------------------------------------------------------------------------- Grad-CAM


@pytest.fixture(scope="module")
def reference_gradcam_map():
    return define(cell_source("05_gradcam", "gradcam_map"), "gradcam_map")


def test_reference_gradcam_passes_and_says_what_it_compared(reference_gradcam_map, capsys):
    check_gradcam_map(reference_gradcam_map)
    out = capsys.readouterr().out
    assert "check_gradcam_map passed" in out and "(2, 20, 28)" in out


def test_library_gradcam_passes_the_check():
    """The check's comparison accepts the library's own Grad-CAM (run without the integrity layer:
    in a notebook, calling the reference inside the exercise is flagged, as the second call shows)."""
    library_gradcam = lambda model, images, target, layer: gradcam(model, images, target, layer=layer)  # noqa: E731
    check_gradcam_map.__wrapped__(library_gradcam)
    with pytest.raises(ReferenceImplementationCalled):
        check_gradcam_map(library_gradcam)


def test_reference_gradcam_passes_with_an_int_target_and_other_images(reference_gradcam_map):
    images = torch.rand(3, 3, 16, 12, generator=torch.Generator().manual_seed(1))
    model, layer = fixed_gradcam_model(seed=3)
    check_gradcam_map(reference_gradcam_map, model=model, images=images, target=1, layer=layer)


def test_fixed_gradcam_inputs_have_both_signs_before_the_relu():
    """Otherwise 'forgot the ReLU' could not be told apart from the right answer."""
    model, layer = fixed_gradcam_model()
    maps = gradcam(model, fixed_gradcam_images(), [2, 4], layer=layer)
    zero_fraction = (maps == 0).float().mean().item()
    assert 0.1 < zero_fraction < 0.9


@pytest.mark.parametrize("name", sorted(wrong_answer_stems("05_gradcam", "gradcam_map")))
def test_gradcam_wrong_answer_is_named(name):
    assert name in GRADCAM_MISTAKES, f"add the message expected for {name} to GRADCAM_MISTAKES"
    student_fn = wrong_answer("05_gradcam", "gradcam_map", name)
    with pytest.raises(CheckFailed) as caught:
        check_gradcam_map(student_fn)
    assert GRADCAM_MISTAKES[name] in str(caught.value)


def test_gradcam_check_needs_model_and_layer_together():
    model, _ = fixed_gradcam_model()
    with pytest.raises(ValueError, match="both model= and layer="):
        check_gradcam_map(gradcam, model=model)


def test_gradcam_check_reports_an_unexplained_difference(reference_gradcam_map):
    def slightly_off(model, images, target, layer):
        maps = reference_gradcam_map(model, images, target, layer)
        return maps + 0.05 * maps.max()

    with pytest.raises(CheckFailed, match="differs from the reference"):
        check_gradcam_map(slightly_off)


def test_gradcam_check_leaves_the_global_rng_alone(reference_gradcam_map):
    state = torch.get_rng_state()
    check_gradcam_map(reference_gradcam_map)
    assert torch.equal(state, torch.get_rng_state())


# ---------------------------------------------------------------------------- occlusion


@pytest.fixture(scope="module")
def reference_occlusion_map():
    return define(cell_source("06_occlusion", "occlusion_map"), "occlusion_map")


def test_reference_occlusion_passes_and_says_what_it_compared(reference_occlusion_map, capsys):
    check_occlusion_map(reference_occlusion_map)
    out = capsys.readouterr().out
    assert "check_occlusion_map passed" in out and "24 windows" in out


def test_reference_occlusion_passes_with_other_settings(reference_occlusion_map):
    image = torch.rand(3, 24, 18, generator=torch.Generator().manual_seed(2))
    check_occlusion_map(
        reference_occlusion_map, model=fixed_occlusion_model(seed=1), image=image, target=0,
        window=6, stride=3, baseline=0.0, batch_size=7,
    )


@pytest.mark.parametrize("name", sorted(wrong_answer_stems("06_occlusion", "occlusion_map")))
def test_occlusion_wrong_answer_is_named(name):
    assert name in OCCLUSION_MISTAKES, f"add the message expected for {name} to OCCLUSION_MISTAKES"
    student_fn = wrong_answer("06_occlusion", "occlusion_map", name)
    with pytest.raises(CheckFailed) as caught:
        check_occlusion_map(student_fn)
    assert OCCLUSION_MISTAKES[name] in str(caught.value)


def test_occlusion_check_refuses_settings_that_leave_pixels_uncovered(reference_occlusion_map):
    with pytest.raises(ValueError, match="needs stride"):
        check_occlusion_map(reference_occlusion_map, window=8, stride=5)


def test_occlusion_check_catches_ignoring_batch_size(reference_occlusion_map):
    def all_at_once(model, image, target, window, stride, baseline, batch_size):
        return reference_occlusion_map(model, image, target, window, stride, baseline, 10**6)

    with pytest.raises(CheckFailed, match="more than|in one forward pass|in one pass although"):
        check_occlusion_map(all_at_once)


def test_window_starts_include_the_last_position_that_fits():
    assert window_starts(20, 8, 4) == [0, 4, 8, 12]
    assert window_starts(8, 8, 4) == [0]


def test_library_occlusion_agrees_with_the_exercise_definition(reference_occlusion_map):
    """Where stride divides H - window, the library's (Captum's) windows are the exercise's."""
    model, image = fixed_occlusion_model(), torch.rand(3, 20, 28, generator=torch.Generator().manual_seed(3))
    expected = occlusion(model, image, 2, window=8, stride=4, baseline=0.0)
    assert torch.allclose(reference_occlusion_map(model, image, 2, 8, 4, 0.0, 6), expected, atol=1e-6)


def test_forward_recorder_records_batch_sizes_and_autograd():
    recorder = ForwardRecorder(fixed_occlusion_model())
    recorder(torch.rand(2, 3, 8, 8))
    with torch.inference_mode():
        recorder(torch.rand(3, 3, 8, 8))
    assert [(c.batch_size, c.grad_enabled, c.output_requires_grad) for c in recorder.calls] == [
        (2, True, True), (3, False, False)
    ]
