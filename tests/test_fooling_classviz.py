"""Fooling images and class visualisations: they reach the class, stay in [0, 1], leave the model alone.

The Lite0 settings here were chosen to stay fast on 2 CPU cores: fooling chelsea takes
10-40 Lite0 forward+backward passes per class at 224x224; class visualisations use 160x160
and 20 steps with light regularisation (the defaults, 224x224 and 100 steps, make nicer
pictures for the notebook).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from saliencylab import SaliencyLabError
from saliencylab.attribution import class_visualization, fooling_image

GOLDFISH, TARANTULA, FLAMINGO, SCHOOL_BUS, ESPRESSO = 1, 76, 130, 779, 967
LEVEL = 1 / 255  # one 8-bit grey level


def assert_model_untouched(model: nn.Module) -> None:
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())


@pytest.mark.parametrize("target", [GOLDFISH, SCHOOL_BUS, ESPRESSO])
def test_fooling_chelsea_takes_few_steps_and_an_invisible_change(lite0, chelsea, target: int) -> None:
    image = chelsea[0]
    fooled, steps = fooling_image(lite0, image, target)
    with torch.no_grad():
        assert lite0(fooled[None]).argmax().item() == target
    change = (fooled - image).abs()
    print(f"target {target}: {steps} steps, |delta| max {change.max() / LEVEL:.2f}, "
          f"mean {change.mean() / LEVEL:.3f} 8-bit levels")
    assert 0 < steps <= 100
    # measured 10-13 levels at the most changed pixel, below one level on average
    assert change.mean() < 1 * LEVEL and change.max() < 16 * LEVEL
    assert fooled.shape == image.shape and 0 <= fooled.min() and fooled.max() <= 1
    assert_model_untouched(lite0)


@pytest.fixture
def digits_image(digits_cnn: nn.Module) -> tuple[torch.Tensor, int]:
    """A 32x32 image and the digit the CNN predicts for it."""
    torch.manual_seed(0)
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        return image, digits_cnn(image).argmax().item()


def test_fooling_keeps_the_batch_dim_it_was_given(digits_cnn, digits_image) -> None:
    image, predicted = digits_image
    target = (predicted + 1) % 10
    batched, steps_batched = fooling_image(digits_cnn, image, target, step_size=0.5)
    single, steps_single = fooling_image(digits_cnn, image[0], target, step_size=0.5)
    assert batched.shape == (1, 3, 32, 32) and single.shape == (3, 32, 32)
    assert steps_batched == steps_single and torch.equal(batched[0], single)
    with torch.no_grad():
        assert digits_cnn(batched).argmax().item() == target


def test_fooling_stops_at_the_first_step_that_predicts_the_target(digits_cnn, digits_image) -> None:
    image, predicted = digits_image
    target = (predicted + 3) % 10
    fooled, steps = fooling_image(digits_cnn, image, target, step_size=0.5)
    with pytest.warns(RuntimeWarning, match="did not reach"):
        one_step_less, steps_less = fooling_image(digits_cnn, image, target, step_size=0.5, max_steps=steps - 1)
    # max_steps=steps-1 cannot get there: a warning and the closest image, which is not yet fooled
    assert steps_less == steps - 1
    with torch.no_grad():
        assert digits_cnn(one_step_less).argmax().item() != target


def test_an_image_of_the_target_class_needs_no_step(digits_cnn, digits_image) -> None:
    image, predicted = digits_image
    fooled, steps = fooling_image(digits_cnn, image, predicted)
    assert steps == 0 and torch.equal(fooled, image)


def test_fooling_that_fails_warns_and_returns_the_closest_image(digits_cnn, digits_image) -> None:
    image, predicted = digits_image
    target = (predicted + 1) % 10
    with pytest.warns(RuntimeWarning, match="did not reach class"):
        fooled, steps = fooling_image(digits_cnn, image, target, step_size=1e-6, max_steps=3)
    assert steps == 3 and fooled.shape == image.shape
    with torch.no_grad():
        logits = digits_cnn(torch.cat([image, fooled]))
    margin = logits[:, target] - logits.scatter(1, torch.tensor([[target]] * 2), -1e9).amax(1)
    assert margin[1] >= margin[0]  # the best image is at least as close as the start


def test_fooling_leaves_the_model_and_the_image_alone(digits_cnn, digits_image) -> None:
    image, predicted = digits_image
    original = image.clone()
    model = digits_cnn
    model.train()
    try:
        with pytest.warns(UserWarning, match="train mode"):
            fooling_image(model, image, (predicted + 1) % 10, step_size=0.5)
        assert all(module.training for module in model.modules())
    finally:
        model.eval()
    assert torch.equal(image, original) and not image.requires_grad
    assert_model_untouched(model)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: fooling_image(m, torch.rand(2, 3, 32, 32), 1), "one image at a time"),
        (lambda m: fooling_image(m, torch.rand(3, 32, 32), 10), "out of range"),
        (lambda m: fooling_image(m, torch.rand(3, 32, 32), "three"), "class index"),
        (lambda m: fooling_image(m, torch.rand(3, 32, 32), 1, step_size=0), "step_size"),
        (lambda m: class_visualization(m, 10, size=32, steps=1), "out of range"),
        (lambda m: class_visualization(m, [1], size=32, steps=1), "class index"),
        (lambda m: class_visualization(m, 1, size=32, lr=-1), "lr > 0"),
        (lambda m: class_visualization(m, 1, init=torch.rand(2, 3, 32, 32)), "one image"),
    ],
)
def test_bad_arguments_are_clear_errors(digits_cnn, call, message: str) -> None:
    with pytest.raises(SaliencyLabError, match=message):
        call(digits_cnn)


LITE0_FAST = dict(size=160, steps=20, lr=0.02, blur_every=10, blur_sigma=0.5, jitter=8, progress=False)


@pytest.mark.parametrize("target", [TARANTULA, FLAMINGO, GOLDFISH])
def test_lite0_class_visualization_is_classified_as_its_class(lite0, target: int) -> None:
    image = class_visualization(lite0, target, **LITE0_FAST)
    assert image.shape == (1, 3, 160, 160)
    assert 0 <= image.min() and image.max() <= 1
    with torch.no_grad():
        probability = lite0(image).softmax(1)[0, target].item()
    print(f"class {target}: p = {probability:.4f}")
    assert probability >= 0.9
    assert_model_untouched(lite0)


def test_digits_class_visualization_reaches_each_digit(digits_cnn) -> None:
    images = torch.cat([class_visualization(digits_cnn, d, size=32, steps=20, progress=False) for d in range(10)])
    with torch.no_grad():
        probabilities = digits_cnn(images).softmax(1)
    assert (probabilities.argmax(1) == torch.arange(10)).all()
    assert probabilities.diagonal().min() >= 0.9


def test_same_seed_same_image_other_seed_other_image(digits_cnn) -> None:
    options = dict(size=32, steps=8, progress=False)
    first = class_visualization(digits_cnn, 3, seed=1, **options)
    torch.manual_seed(123)  # the global RNG must not matter
    again = class_visualization(digits_cnn, 3, seed=1, **options)
    other = class_visualization(digits_cnn, 3, seed=2, **options)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_non_square_size_and_init(digits_cnn) -> None:
    start = torch.rand(3, 32, 32)
    original = start.clone()
    assert torch.equal(class_visualization(digits_cnn, 4, init=start, steps=0, progress=False)[0], start)
    moved = class_visualization(digits_cnn, 4, init=start, steps=3, progress=False)
    assert moved.shape == (1, 3, 32, 32) and not torch.equal(moved[0], start)
    assert torch.equal(start, original)
    # the shape follows (height, width); a fully-connected digits CNN only takes 32x32, so use
    # a pooling model for the non-square case
    pooling = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    assert class_visualization(pooling, 1, size=(20, 36), steps=2, progress=False).shape == (1, 3, 20, 36)


def test_class_visualization_shows_progress_and_leaves_the_model_alone(digits_cnn, capsys) -> None:
    class_visualization(digits_cnn, 2, size=32, steps=3, progress=True)
    assert "class visualisation" in capsys.readouterr().err
    assert_model_untouched(digits_cnn)
    assert not digits_cnn.training


def test_default_size_is_the_models_input_size(digits_cnn) -> None:
    assert class_visualization(digits_cnn, 2, steps=1, progress=False).shape == (1, 3, 32, 32)
    pooling = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    assert class_visualization(pooling, 1, steps=0, progress=False).shape == (1, 3, 224, 224)
