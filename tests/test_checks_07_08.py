"""The checks of notebooks 07 (fooling images) and 08 (class visualization).

The reference solutions (taken from the solution notebooks) pass; every wrong answer in
tests/wrong_answers/ fails its check *with the explanation of its mistake*; the checks'
references agree with the library's fooling_image / class_visualization.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from exercise_cells import define, solution_without_markers, wrong_answer, wrong_answers

from saliencylab.checks import CheckFailed
from saliencylab.checks import nb07_fooling_images as nb07

# ---------------------------------------------------------------- notebook 07

FOOLING = "07_fooling_images"

# wrong answer -> a phrase its check failure must contain (the mistake named, not just "wrong")
FOOLING_MISTAKES = {
    ("fooling_step", "descended"): "moves *down* the gradient",
    ("fooling_step", "unnormalised_gradient"): "not normalised",
    ("fooling_step", "forgot_clamp"): "leave [0, 1]",
    ("fooling_step", "softmax_probability"): "softmax probability",
    ("fooling_step", "cross_entropy_ascent"): "*increases* the cross-entropy",
    ("fooling_step", "backward_touches_param_grads"): "changed the parameters' .grad",
    ("fooling_step", "modifies_input_in_place"): "modified the input image in place",
    ("make_fooling_image", "never_stops"): "did not stop when the model was fooled",
    ("make_fooling_image", "stops_on_any_misclassification"): "A targeted attack stops only",
    ("make_fooling_image", "steps_before_checking"): "already predicted the target",
    ("make_fooling_image", "forgot_to_update_image"): "the returned image is the original one",
}
FOOLING_CHECKS = {"fooling_step": nb07.check_fooling_step, "make_fooling_image": nb07.check_make_fooling_image}


@pytest.fixture(scope="module")
def reference_fooling_step():
    return define(solution_without_markers(FOOLING, "fooling_step"), "fooling_step")


@pytest.fixture(scope="module")
def reference_make_fooling_image(reference_fooling_step):
    return define(solution_without_markers(FOOLING, "make_fooling_image"), "make_fooling_image", fooling_step=reference_fooling_step)


@pytest.fixture(scope="module")
def digits(digits_cnn):
    """The digits CNN (conftest) and twelve test digits ``[12, 3, 32, 32]``."""
    from saliencylab.digits import load_digits_images

    images, _ = load_digits_images("test")
    return digits_cnn, images[:12]


def test_every_fooling_wrong_answer_has_an_expected_explanation():
    on_disk = {(w.exercise, w.name) for w in wrong_answers(FOOLING)}
    assert on_disk == set(FOOLING_MISTAKES)


def test_reference_fooling_step_passes_and_reports(reference_fooling_step, capsys):
    nb07.check_fooling_step(reference_fooling_step)
    out = capsys.readouterr().out
    assert "fooling_step passed" in out and "target logit" in out


def test_reference_fooling_loop_passes_all_three_cases(reference_make_fooling_image, capsys):
    nb07.check_make_fooling_image(reference_make_fooling_image)
    out = capsys.readouterr().out
    assert "11 steps (expected 11)" in out and "0 steps (expected 0)" in out and "5 steps (expected 5)" in out


@pytest.mark.parametrize("exercise, mistake", sorted(FOOLING_MISTAKES), ids=lambda v: str(v))
def test_fooling_wrong_answer_is_named(exercise, mistake, reference_fooling_step):
    student_fn = wrong_answer(FOOLING, exercise, mistake, fooling_step=reference_fooling_step)
    with pytest.raises(CheckFailed) as failure:
        FOOLING_CHECKS[exercise](student_fn)
    assert FOOLING_MISTAKES[(exercise, mistake)] in str(failure.value)


def test_fooling_step_that_keeps_the_graph_is_told_to_detach(reference_fooling_step):
    def keeps_graph(model, image, target, step_size):
        x = image.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x)[0, target], x)
        return (x + step_size * grad / grad.norm()).clamp(0, 1)

    with pytest.raises(CheckFailed, match="still attached to the autograd graph"):
        nb07.check_fooling_step(keeps_graph)


def test_loop_that_ignores_step_fn_is_told_to_use_it(reference_fooling_step):
    def own_step(model, image, target, step_size, max_steps, step_fn=None):
        x = image.clone()
        for steps in range(max_steps):
            if int(model(x).argmax()) == target:
                return x, steps
            x = reference_fooling_step(model, x, target, step_size)
        return x, max_steps

    with pytest.raises(CheckFailed, match="without calling step_fn"):
        nb07.check_make_fooling_image(own_step)


def test_loop_returning_a_wrong_step_count_is_caught():
    def counts_from_one(model, image, target, step_size, max_steps, step_fn=None):
        x, steps = nb07.reference_fooling_loop(model, image, target, step_size, max_steps, step_fn)
        return x, steps + 1

    with pytest.raises(CheckFailed, match="returned steps_taken="):
        nb07.check_make_fooling_image(counts_from_one)


def test_fooling_checks_pass_on_the_digits_cnn(reference_fooling_step, reference_make_fooling_image, digits):
    model, images = digits
    nb07.check_fooling_step(reference_fooling_step, model=model, image=images[:1], target=4, step_size=2.0)
    nb07.check_make_fooling_image(reference_make_fooling_image, model=model, image=images[3:4], target=8,
                                  step_size=0.5, max_steps=60)


def test_check_reference_loop_matches_the_library_fooling_image(digits):
    from saliencylab.attribution import fooling_image

    model, images = digits
    for index, target in [(0, 3), (5, 7), (9, 1)]:
        image = images[index : index + 1]
        ours, our_steps = nb07.reference_fooling_loop(model, image, target, 0.5, 80, nb07.reference_fooling_step)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the library must reach the target too
            library, library_steps = fooling_image(model, image, target, step_size=0.5, max_steps=80)
        assert our_steps == library_steps > 0
        assert torch.allclose(ours, library, atol=1e-6)


def test_checks_leave_the_global_rng_alone(reference_fooling_step):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    nb07.check_fooling_step(reference_fooling_step)
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------- notebook 08

from saliencylab.checks import nb08_class_visualization as nb08  # noqa: E402

VISUALIZATION = "08_class_visualization"
STEP = "class_visualization_step"
VISUALIZATION_MISTAKES = {
    "forgot_l2": "the L2 term is missing",
    "l2_wrong_sign": "*rewards* pixels far from grey",
    "l2_towards_black": "pulls every pixel towards black",
    "descended": "moves *down* the gradient",
    "forgot_clamp": "leave [0, 1]",
    "unnormalised_step": "not normalised",
    "normalised_by_l2_norm": "divided by its L2 norm",
    "backward_touches_param_grads": "changed the parameters' .grad",
}


@pytest.fixture(scope="module")
def reference_visualization_step():
    return define(solution_without_markers(VISUALIZATION, STEP), STEP)


def test_every_visualization_wrong_answer_has_an_expected_explanation():
    on_disk = {w.name for w in wrong_answers(VISUALIZATION, STEP)}
    assert on_disk == set(VISUALIZATION_MISTAKES)


def test_reference_visualization_step_passes_and_reports(reference_visualization_step, capsys):
    nb08.check_class_visualization_step(reference_visualization_step)
    out = capsys.readouterr().out
    assert "class_visualization_step passed" in out and re.search(r"RMS change per pixel 0\.(09|10)", out)


@pytest.mark.parametrize("mistake", sorted(VISUALIZATION_MISTAKES))
def test_visualization_wrong_answer_is_named(mistake):
    student_fn = wrong_answer(VISUALIZATION, STEP, mistake)
    with pytest.raises(CheckFailed) as failure:
        nb08.check_class_visualization_step(student_fn)
    assert VISUALIZATION_MISTAKES[mistake] in str(failure.value)


def test_visualization_step_modifying_its_input_is_caught(reference_visualization_step):
    def in_place(model, image, target, lr, l2_reg):
        image.copy_(reference_visualization_step(model, image, target, lr, l2_reg))
        return image

    with pytest.raises(CheckFailed, match="modified the input image in place"):
        nb08.check_class_visualization_step(in_place)


def test_visualization_reference_is_one_library_step_by_the_formula():
    model, image = nb07.tiny_cnn(), nb07.image_with_extremes()
    target, lr, l2_reg = 1, 0.1, 0.01
    grad = nb07.gradient_of(model, image, lambda logits: logits[:, target].sum()) - 2 * l2_reg * (image - 0.5)
    by_hand = (image + lr * grad / grad.square().mean().sqrt()).clamp(0, 1)
    assert torch.allclose(nb08.reference_class_visualization_step(model, image, target, lr, l2_reg), by_hand, atol=1e-6)


def test_visualization_check_passes_on_the_digits_cnn(reference_visualization_step, digits):
    model, images = digits
    nb08.check_class_visualization_step(reference_visualization_step, model=model, image=images[:1], target=6,
                                        lr=0.05, l2_reg=0.01)
