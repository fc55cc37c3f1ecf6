"""The checks of notebooks 01_linear_models and 02_saliency: the reference solutions (taken from
the solution notebooks) pass, and every wrong answer in tests/wrong_answers/ is caught with the
explanation of *its* mistake, not just any failure."""

from __future__ import annotations

import pytest
import torch
from exercise_cells import cell_source, define, wrong_answer, wrong_answers
from torch import nn

from saliencylab.checks import (
    CheckFailed,
    check_gradient_times_input,
    check_input_gradient,
    check_saliency_map,
)
from saliencylab.checks.nb01_linear_models import fixed_image, fixed_linear_model, fixed_two_layer_model
from saliencylab.checks.nb02_saliency import fixed_cnn, fixed_images

CHECKS = {
    "input_gradient": check_input_gradient,
    "gradient_times_input": check_gradient_times_input,
    "saliency_map": check_saliency_map,
}
ASSIGNMENT_OF = {
    "input_gradient": "01_linear_models",
    "gradient_times_input": "01_linear_models",
    "saliency_map": "02_saliency",
}

# wrong answer -> a phrase of the explanation the check must give for that mistake
EXPECTED_EXPLANATION = {
    "input_gradient/softmax_probability": "softmax probability",
    "input_gradient/sum_of_all_logits": "sum of all logits",
    "input_gradient/backward_touches_param_grads": "changed the parameters' .grad",
    "input_gradient/backward_accumulates": "twice the first answer",
    "input_gradient/gradient_wrt_weights": "shape of a weight",
    "input_gradient/returned_weight_row": "two-layer ReLU network raised AttributeError",
    "input_gradient/used_predicted_class": "instead of the requested target",
    "gradient_times_input/forgot_times_input": "gradient alone",
    "gradient_times_input/abs_gradient_times_input": "absolute value",
    "gradient_times_input/softmax_probability": "softmax probability",
    "gradient_times_input/summed_to_scalar": "single number",
    "gradient_times_input/used_predicted_class": "instead of the requested target",
    "saliency_map/forgot_abs": "forgot the absolute value",
    "saliency_map/sum_over_channels": "summed |gradient| over the colour channels",
    "saliency_map/mean_over_channels": "averaged |gradient| over the colour channels",
    "saliency_map/softmax_probabilities": "softmax probabilities",
    "saliency_map/backward_touches_param_grads": "changed the parameters' .grad",
    "saliency_map/kept_channel_dim": "kept the colour channels",
    "saliency_map/ignored_target_used_argmax": "explained the predicted class (argmax)",
    "saliency_map/mean_of_scores_over_batch": "averaged the target logits over the batch",
    "saliency_map/squeezed_batch_of_one": "even for a batch of one",
}


def wrong_answer_keys() -> list[str]:
    """``exercise/name`` of every wrong answer of these exercises."""
    return sorted(
        f"{w.exercise}/{w.name}" for exercise in CHECKS for w in wrong_answers(ASSIGNMENT_OF[exercise], exercise)
    )


def reference_source(exercise: str) -> str:
    """The solution cell of ``exercise`` in its solution notebook."""
    return cell_source(ASSIGNMENT_OF[exercise], exercise)


@pytest.fixture(scope="module")
def references():
    return {exercise: define(reference_source(exercise), exercise) for exercise in CHECKS}


@pytest.mark.parametrize("exercise", sorted(CHECKS))
def test_reference_solution_passes_and_says_what_it_compared(exercise, references, capsys):
    CHECKS[exercise](references[exercise])
    out = capsys.readouterr().out
    assert f"✓ check_{exercise} passed: " in out
    assert "expected" in out and "got" in out


def test_every_wrong_answer_has_an_expected_explanation_and_three_per_exercise():
    found = set(wrong_answer_keys())
    assert found == set(EXPECTED_EXPLANATION), "add the new wrong answers to EXPECTED_EXPLANATION"
    for exercise in CHECKS:
        assert sum(k.startswith(f"{exercise}/") for k in found) >= 3


@pytest.mark.parametrize("key", wrong_answer_keys(), ids=str)
def test_wrong_answer_is_caught_with_its_explanation(key):
    exercise, name = key.split("/")
    student_fn = wrong_answer(ASSIGNMENT_OF[exercise], exercise, name)
    with pytest.raises(CheckFailed) as caught:
        CHECKS[exercise](student_fn)
    assert EXPECTED_EXPLANATION[key] in str(caught.value)


@pytest.mark.parametrize("exercise", sorted(CHECKS))
def test_forgotten_return_is_named(exercise):
    with pytest.raises(CheckFailed, match="forget the `return`"):
        CHECKS[exercise](lambda model, inputs, target: None)


def test_input_gradient_check_catches_a_changed_caller_tensor(references):
    def sets_requires_grad_on_callers_image(model, image, target):
        image.requires_grad_(True)
        (gradient,) = torch.autograd.grad(model(image.unsqueeze(0))[0, target], image)
        return gradient

    with pytest.raises(CheckFailed, match="requires_grad of the caller's image"):
        check_input_gradient(sets_requires_grad_on_callers_image)


def test_input_gradient_check_takes_other_models_and_images(references, capsys):
    """The hidden tests call the checks on the notebook's own models: a [3, H, W] image here."""
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)).eval()
    image = torch.rand(3, 8, 8)
    check_input_gradient(references["input_gradient"], model=conv, image=image, target=7)
    check_gradient_times_input(references["gradient_times_input"], model=conv, image=image, target=7)
    assert "(3, 8, 8)" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="explained the predicted class"):
        wrong = wrong_answer("01_linear_models", "input_gradient", "used_predicted_class")
        predicted = int(conv(image.unsqueeze(0)).argmax())
        check_input_gradient(wrong, model=conv, image=image, target=(predicted + 1) % 10)


def test_gradient_times_input_prints_completeness_on_the_linear_model(references, capsys):
    check_gradient_times_input(references["gradient_times_input"])
    assert "completeness: sum of contributions" in capsys.readouterr().out


def test_default_inputs_make_the_mistakes_distinguishable():
    """The fixed models are not saturated and their predictions differ from the targets the
    checks request: otherwise softmax/argmax mistakes would look right."""
    for model, inputs in [(fixed_linear_model(), fixed_image().unsqueeze(0)), (fixed_cnn(), fixed_images())]:
        probabilities = model(inputs).softmax(dim=1)
        assert probabilities.max() < 0.9
    assert int(fixed_linear_model()(fixed_image().unsqueeze(0)).argmax()) != 3
    assert fixed_images().shape[-1] != fixed_images().shape[-2], "non-square, so swapped axes show"
    grads = [
        torch.autograd.grad(fixed_two_layer_model()(x.unsqueeze(0))[0, 3], x)[0]
        for x in (fixed_image(2).requires_grad_(), fixed_image(5).requires_grad_())
    ]
    assert not torch.allclose(*grads), "the two-layer network's gradient must depend on the input"


def test_saliency_check_takes_a_given_model_images_and_int_target(references):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    images = torch.rand(3, 3, 10, 7)
    check_saliency_map(references["saliency_map"], model=model, images=images, target=2)
    check_saliency_map(references["saliency_map"], model=model, images=images, target=[0, 1, 2])
    check_saliency_map(references["saliency_map"], model=model, images=images)


@pytest.mark.parametrize(
    "reduce, hint",
    [
        (lambda g: g.abs().amax(dim=1, keepdim=True), "keepdim"),
        (lambda g: g.abs().amax(dim=1).transpose(1, 2), "swapped"),
        (lambda g: g.abs().amax(dim=0), "over the batch dimension"),
    ],
)
def test_saliency_check_names_shape_mistakes(reduce, hint):
    def wrong_shape(model, images, target):
        targets = torch.as_tensor(target).reshape(-1).expand(len(images))
        x = images.detach().clone().requires_grad_(True)
        (gradients,) = torch.autograd.grad(model(x)[torch.arange(len(x)), targets].sum(), x)
        return reduce(gradients)

    with pytest.raises(CheckFailed, match=hint):
        check_saliency_map(wrong_shape)


def test_saliency_check_catches_the_first_target_used_for_every_image():
    def first_target_only(model, images, target):
        first = int(torch.as_tensor(target).reshape(-1)[0])
        x = images.detach().clone().requires_grad_(True)
        (gradients,) = torch.autograd.grad(model(x)[:, first].sum(), x)
        return gradients.abs().amax(dim=1)

    with pytest.raises(CheckFailed, match="first target"):
        check_saliency_map(first_target_only)
