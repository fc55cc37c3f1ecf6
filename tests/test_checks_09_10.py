"""The checks of notebooks 09 (Integrated Gradients, completeness) and 10 (cascading
randomisation) accept the reference solutions and other correct implementations, and reject
every wrong answer in tests/wrong_answers with the explanation that names its mistake. (The
deletion curve, once notebook 10's second exercise, is notebook 11's: tests/test_checks_11.py.)"""

from __future__ import annotations

import copy

import pytest
import torch
from exercise_cells import cell_source, check_module_tests
from exercise_cells import define as define_in_notebook
from torch import nn

from saliencylab.attribution import integrated_gradients, saliency
from saliencylab.checks import (
    CheckFailed,
    ReferenceImplementationCalled,
    check_cascading_randomization,
    check_completeness_error,
    check_integrated_gradients_map,
)
from saliencylab.checks.nb09_integrated_gradients import fixed_ig_inputs
from saliencylab.checks.nb10_sanity_checks import CASCADE_GROUPS, MethodRecorder, cascade_test_model

# wrong answer file -> a phrase its explanation must contain
EXPECTED_EXPLANATIONS = {
    ("09_integrated_gradients", "integrated_gradients_map"): {
        "backward_touches_parameter_grads": "changed the parameters' .grad",
        "baseline_ignored": "the baseline was ignored",
        "forgot_difference_factor": "forgot to multiply by (image - baseline)",
        "gradient_times_input_at_image": "gradient at the image only",
        "ignores_batch_size": "in one pass although batch_size",
        "left_rule": "left rule",
        "linspace_alphas": "torch.linspace(0, 1, steps)",
        "one_point_per_pass": "one path point at a time",
        "probabilities_instead_of_logits": "softmax probability",
        "sum_instead_of_mean": "summed the gradients over the steps",
    },
    ("09_integrated_gradients", "completeness_error"): {
        "absolute_error": "absolute value of the error",
        "difference_reversed": "the wrong way round",
        "forgot_baseline_score": "forgot f(baseline)",
        "probabilities_instead_of_logits": "softmax probabilities",
        "sum_of_absolute_attributions": "summed |attributions|",
    },
    ("10_sanity_checks", "cascading_randomization"): {
        "bottom_up_order": "bottom up",
        "forgot_trained_map": "map of the TRAINED model",
        "independent_not_cascading": "independently",
        "modifies_model_in_place": "modified the model it was given",
        "restores_the_model_only_at_the_end": "when `method` raised an error halfway",
        "passes_none_target": "without a target",
        "repredicts_target": "re-predicted the target",
    },
}
CHECKS = {
    "integrated_gradients_map": check_integrated_gradients_map,
    "completeness_error": check_completeness_error,
    "cascading_randomization": check_cascading_randomization,
}


def prelude() -> str:
    """Notebook 10's ``reinitialise`` helper cell, which runs before its exercises."""
    return cell_source("10_sanity_checks", "reinitialise_helper")


def define(source: str, name: str, filename: str | None = None):
    """Define ``name`` from ``source`` as the notebook would: notebook 10's ``reinitialise``
    helper cell runs first."""
    return define_in_notebook(source, name, filename, prelude=prelude())


def reference(assignment: str, exercise: str):
    return define(cell_source(assignment, exercise), exercise)


(test_reference_solution_passes, test_every_wrong_answer_file_has_an_expected_explanation,
 test_wrong_answer_is_caught_with_its_explanation) = check_module_tests(EXPECTED_EXPLANATIONS, CHECKS, prelude=prelude)


# --- notebook 09 --------------------------------------------------------------------------------


def test_ig_check_accepts_the_library_itself():
    """The check's comparison accepts the library's own IG (run without the integrity layer: in a
    notebook, calling the reference inside the exercise is flagged, as the last call shows)."""
    def library_ig(model, image, target, baseline, steps=32, batch_size=8):
        return integrated_gradients(model, image, target, baseline=baseline, steps=steps, batch_size=batch_size)

    check_integrated_gradients_map.__wrapped__(library_ig)
    check_integrated_gradients_map.__wrapped__(library_ig, steps=9, batch_size=2, seed=4)
    with pytest.raises(ReferenceImplementationCalled):
        check_integrated_gradients_map(library_ig)


def test_ig_solution_is_nearly_complete_with_many_steps():
    """The reference solution satisfies the axiom the notebook teaches: with many steps on a
    smooth (tanh) network the attributions add up to f(x) - f(x')."""
    from saliencylab.checks.nb04_smoothgrad import tiny_smooth_classifier

    model = tiny_smooth_classifier(0, classes=3)
    image, baseline = fixed_ig_inputs(0)
    ig = reference("09_integrated_gradients", "integrated_gradients_map")
    attributions = ig(model, image, 1, baseline, steps=256, batch_size=64)
    with torch.no_grad():
        logits = model(torch.stack([image, baseline]))[:, 1]
    assert attributions.sum().item() == pytest.approx((logits[0] - logits[1]).item(), abs=1e-3)
    error = reference("09_integrated_gradients", "completeness_error")(model, image, 1, baseline, attributions)
    assert abs(error) < 1e-3


def test_ig_check_fails_a_wrong_target_with_its_explanation():
    ig = reference("09_integrated_gradients", "integrated_gradients_map")

    def explains_the_argmax(model, image, target, baseline, steps=32, batch_size=8):
        with torch.no_grad():
            predicted = int(model(image[None]).argmax())
        return ig(model, image, predicted, baseline, steps, batch_size)

    with pytest.raises(CheckFailed, match="instead of the requested target"):
        check_integrated_gradients_map(explains_the_argmax)


def test_completeness_check_with_given_attributions_and_a_tensor_result():
    completeness_error = reference("09_integrated_gradients", "completeness_error")
    image, baseline = fixed_ig_inputs(1)
    attributions = torch.randn(image.shape, generator=torch.Generator().manual_seed(0))
    check_completeness_error(completeness_error, seed=1, attributions=attributions)
    as_tensor = lambda *args: torch.tensor(completeness_error(*args))  # noqa: E731  a 0-dim tensor is fine
    check_completeness_error(as_tensor)
    with pytest.raises(CheckFailed, match="ONE number"):
        check_completeness_error(lambda model, image, target, baseline, a: a - a.mean())


# --- notebook 10 --------------------------------------------------------------------------------


def test_cascade_model_changes_its_prediction_when_randomised():
    """Otherwise re-predicting the target after randomisation could not be told apart."""
    namespace = {"torch": torch, "nn": nn}
    exec(cell_source("10_sanity_checks", "reinitialise_helper"), namespace)
    model = cascade_test_model(0)
    image = torch.rand(3, 12, 16, generator=torch.Generator().manual_seed(3))
    randomised = copy.deepcopy(model)
    with torch.no_grad():
        predictions = [int(randomised(image[None]).argmax())]
        for step, group in enumerate(CASCADE_GROUPS, start=1):
            namespace["reinitialise"](randomised, list(group), step)
            predictions.append(int(randomised(image[None]).argmax()))
    assert len(set(predictions)) > 1
    for key, value in model.state_dict().items():  # the helper worked on the copy only
        assert torch.equal(value, cascade_test_model(0).state_dict()[key])


def test_method_recorder_sees_which_groups_are_random():
    model = cascade_test_model(1)
    recorder = MethodRecorder(saliency, model, CASCADE_GROUPS)
    image = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(0))
    copy_ = copy.deepcopy(model)
    recorder(copy_, image, target=2)
    copy_.conv2.reset_parameters()
    recorder(copy_, image, target=torch.tensor([2]))
    copy_.fc.reset_parameters()
    recorder(copy_, image[0])
    assert [call.randomized for call in recorder.calls] == [(), (1,), (0, 1)]
    assert [call.target for call in recorder.calls] == [2, 2, None]
    assert all(call.saliency_map.shape == (12, 16) for call in recorder.calls)
    assert not any(call.others_changed for call in recorder.calls)


def test_cascade_check_accepts_the_library_protocol_on_lite0_groups(lite0, chelsea):
    """The check works with the real model and Lite0's module names, as the hidden tests use it."""
    tiny = torch.nn.functional.interpolate(chelsea, size=32, mode="bilinear", antialias=True).clamp(0, 1)[0]
    check_cascading_randomization(
        reference("10_sanity_checks", "cascading_randomization"), model=lite0, image=tiny,
        layer_groups=[["classifier.fc"], ["features.head.0", "features.head.1"]],
    )


def test_cascade_check_accepts_the_trained_map_from_the_original_model():
    """Explaining the caller's model (without changing it) for maps[0] is as good as its copy."""
    solution = cell_source("10_sanity_checks", "cascading_randomization")
    original_line = "    maps = [method(randomised, image[None], target=target)[0]]\n"
    assert original_line in solution
    source = solution.replace(original_line, "    maps = [method(model, image[None], target=target)[0]]\n")
    check_cascading_randomization(define(source, "cascading_randomization"))


def test_confirm_prints_a_claim_that_holds_and_names_what_was_measured_when_not(capsys):
    from saliencylab.lessons import confirm

    confirm("the rise is gained early", True, "alpha = 0.15")
    assert capsys.readouterr().out == "\u2713 the rise is gained early\n"
    with pytest.raises(AssertionError, match=r"not true on this machine: the rise is gained early \(measured: alpha = 0.60\)"):
        confirm("the rise is gained early", False, "alpha = 0.60")
    assert capsys.readouterr().out == ""
