"""The checks of notebooks 03 (guided backprop, DeconvNet) and 04 (SmoothGrad) accept the
reference solutions and reject every wrong answer in tests/wrong_answers with the explanation
that names its mistake."""

from __future__ import annotations

import pytest
import torch
from exercise_cells import cell_source, check_module_tests, define

from saliencylab.attribution import deconvnet, guided_backprop, smoothgrad
from saliencylab.checks import CheckFailed, check_deconvnet_map, check_guided_backprop_map, check_smoothgrad_map
from saliencylab.checks.nb03_guided_backprop import (
    RULES,
    fixed_images,
    non_predicted_targets,
    relu_test_net,
    rule_gradients,
)
from saliencylab.checks.nb04_smoothgrad import RecordingModel, tiny_smooth_classifier

# wrong answer file -> a phrase its explanation must contain
EXPECTED_EXPLANATIONS = {
    ("03_guided_backprop", "guided_backprop_map"): {
        "backward_touches_parameter_grads": "changed the parameters' .grad",
        "forward_mask_bypassed_is_deconvnet": "forward mask is missing at the ReLU6",
        "full_backward_hook_breaks_on_inplace_relu": "#61519",
        "hook_returns_nothing_plain_gradient": "this is the plain gradient",
        "hooks_left_behind": "left hooks registered",
        "hooks_not_removed_on_error": "when the computation raised an error",
        "relu6_ignored": "only the nn.ReLU modules got the rule",
        "softmax_probabilities": "softmax probabilities",
        "wrong_sign": "wrong sign",
    },
    ("03_guided_backprop", "deconvnet_map"): {
        "bypass_not_rectified": "went through every ReLU unchanged",
        "bypass_not_returned": "this is the plain gradient",
        "hooks_left_behind": "left hooks registered",
        "no_bypass_is_guided_backprop": "this is guided backprop, not DeconvNet",
        "relu6_ignored": "only the nn.ReLU modules got the rule",
        "wrong_sign": "wrong sign",
    },
    ("04_smoothgrad", "smoothgrad_map"): {
        "abs_before_mean": "|gradient| before averaging",
        "absolute_noise_std": "used noise_level as an absolute std",
        "forgot_abs": "forgot the absolute value",
        "global_rng_instead_of_generator": "from the generator you are given",
        "ignores_batch_size": "in one pass although batch_size",
        "one_sample_at_a_time": "one sample at a time",
        "overwrites_running_sum": "only the last batch's gradients",
        "same_noise_for_all_samples": "exactly the same noise",
        "sum_instead_of_mean": "summed the gradients instead of averaging",
        "uniform_noise": "torch.randn",
    },
}
CHECKS = {
    "guided_backprop_map": check_guided_backprop_map,
    "deconvnet_map": check_deconvnet_map,
    "smoothgrad_map": check_smoothgrad_map,
}


(test_reference_solution_passes, test_every_wrong_answer_file_has_an_expected_explanation,
 test_wrong_answer_is_caught_with_its_explanation) = check_module_tests(EXPECTED_EXPLANATIONS, CHECKS)


# --- notebook 03: the rules engine that names the mistakes -----------------------------------


@pytest.mark.parametrize("inplace", [True, False])
@pytest.mark.parametrize("rule, reference", [("guided", guided_backprop), ("deconvnet", deconvnet)])
def test_rule_engine_reproduces_the_library(rule, reference, inplace):
    model, images = relu_test_net(inplace_relu=inplace), fixed_images()
    targets = non_predicted_targets(model, images)
    score = lambda logits: logits.gather(1, torch.tensor(targets).view(-1, 1)).sum()  # noqa: E731
    got = rule_gradients(model, images, score, RULES[rule], RULES[rule])
    torch.testing.assert_close(got, reference(model, images, targets, reduce=None), rtol=1e-5, atol=1e-6)
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_rule_engine_plain_rule_is_the_gradient():
    model, images = relu_test_net(), fixed_images()
    score = lambda logits: logits[:, 1].sum()  # noqa: E731
    got = rule_gradients(model, images, score, RULES["plain"], RULES["plain"])
    x = images.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(score(model(x)), x)
    torch.testing.assert_close(got, expected)


def test_check_network_saturates_some_relu6_units():
    """Otherwise the ReLU6 mask mistake (output > 0 instead of 0 < x < 6) could not be told apart."""
    model, outputs = relu_test_net(), []
    handle = model.relu6.register_forward_hook(lambda module, inputs, output: outputs.append(output))
    model(fixed_images())
    handle.remove()
    saturated = torch.cat([o.flatten() for o in outputs]) >= 6
    assert 0.05 < saturated.float().mean() < 0.9


def test_guided_check_accepts_a_hook_that_also_applies_the_forward_mask():
    """grad * (output > 0) * (grad > 0) in the output hook is redundant but right."""
    source = cell_source("03_guided_backprop", "guided_backprop_map").replace(
        "    def on_forward(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:\n"
        "        output.register_hook(keep_positive)\n",
        "    def on_forward(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:\n"
        "        mask = (output > 0).detach()\n"
        "        output.register_hook(lambda grad: keep_positive(grad) * mask)\n",
    )
    assert "mask = (output > 0)" in source
    check_guided_backprop_map(define(source, "guided_backprop_map"))


def test_guided_check_on_another_model_and_target():
    check_guided_backprop_map(
        define(cell_source("03_guided_backprop", "guided_backprop_map"), "guided_backprop_map"),
        model=relu_test_net(inplace_relu=False, seed=3),
        images=torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)),
        target=2,
    )


# --- notebook 04 -------------------------------------------------------------------------------


def test_recording_model_keeps_only_differentiable_batches():
    recorder = RecordingModel(tiny_smooth_classifier())
    with torch.no_grad():
        recorder(torch.rand(2, 3, 6, 6))
    recorder(torch.rand(3, 3, 6, 6))
    recorder(torch.rand(4, 3, 6, 6, requires_grad=True))
    assert [b.shape[0] for b in recorder.batches] == [4]


def test_smoothgrad_solution_equals_the_library_on_one_image():
    """The notebook's hidden tests compare with saliencylab's smoothgrad exactly: both draw the
    noise per mini-batch, in sample order, from the generator."""
    smoothgrad_map = define(cell_source("04_smoothgrad", "smoothgrad_map"), "smoothgrad_map")
    model = tiny_smooth_classifier(seed=2)
    image = torch.rand(3, 11, 13, generator=torch.Generator().manual_seed(0))
    ours = smoothgrad_map(model, image, 1, samples=7, noise_level=0.2, batch_size=3,
                          generator=torch.Generator().manual_seed(4))
    reference = smoothgrad(model, image, 1, samples=7, noise_level=0.2, batch_size=3,
                           generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-7)


def test_smoothgrad_check_with_a_given_model_and_image():
    smoothgrad_map = define(cell_source("04_smoothgrad", "smoothgrad_map"), "smoothgrad_map")
    image = 0.1 + 0.3 * torch.rand(3, 7, 9, generator=torch.Generator().manual_seed(2))
    check_smoothgrad_map(smoothgrad_map, model=tiny_smooth_classifier(seed=5), image=image, samples=6, batch_size=4)


def test_smoothgrad_check_names_noise_scaled_by_the_wrong_range():
    smoothgrad_map = define(cell_source("04_smoothgrad", "smoothgrad_map"), "smoothgrad_map")

    def enlarged_noise(model, image, target, samples=25, noise_level=0.15, batch_size=10, generator=None):
        return smoothgrad_map(model, image, target, samples, 1.5 * noise_level, batch_size, generator)

    with pytest.raises(CheckFailed, match="expected sigma"):
        check_smoothgrad_map(enlarged_noise)
