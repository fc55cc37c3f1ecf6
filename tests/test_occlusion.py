"""Occlusion: exact on a linear model, equal to Captum's Occlusion, batched without side effects.

The general rules every method keeps (hooks, flags, device, target) also run over occlusion
in test_attribution_gradients.py; here are the occlusion-specific answers.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from captum.attr import Occlusion
from torch import nn

from saliencylab import SaliencyLabError
from saliencylab.attribution import occlusion
from saliencylab.models import load_model


def linear_model(height: int, width: int, classes: int = 4, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * height * width, classes)).eval()


def patch_sums(model: nn.Sequential, image: torch.Tensor, target: int, window: tuple[int, int]) -> torch.Tensor:
    """Sum of w_target * x over each non-overlapping window, spread over the window: [H, W]."""
    height, width = image.shape[-2:]
    contribution = (model[1].weight[target].view(3, height, width) * image).sum(0)
    sums = F.avg_pool2d(contribution[None, None], window, window) * (window[0] * window[1])
    return sums[0, 0].repeat_interleave(window[0], 0).repeat_interleave(window[1], 1)


@pytest.mark.parametrize("size, window", [((12, 12), (4, 4)), ((8, 12), (4, 3)), ((6, 9), (2, 3))])
def test_occluding_a_patch_of_a_linear_model_drops_the_sum_of_w_x_inside_it(size, window) -> None:
    model = linear_model(*size)
    image = torch.rand(3, *size)
    target = 2
    with torch.no_grad():
        expected = patch_sums(model, image, target, window)
        result = occlusion(model, image, target, window=window, stride=window, baseline=0.0)
    assert result.shape == size  # non-square images are not transposed
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5)


def test_a_grey_baseline_replaces_the_window_with_grey() -> None:
    model = linear_model(8, 8)
    image = torch.rand(3, 8, 8)
    with torch.no_grad():
        expected = patch_sums(model, image - 0.5, 1, (4, 4))
    for baseline in (0.5, torch.full((3, 8, 8), 0.5), torch.full((1, 3, 1, 1), 0.5)):
        result = occlusion(model, image, 1, window=4, stride=4, baseline=baseline)
        torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5)


def test_the_requested_target_is_explained_even_when_another_class_wins() -> None:
    model = linear_model(8, 8)
    image = torch.rand(3, 8, 8)
    with torch.no_grad():
        predicted = model(image[None]).argmax().item()
    other = (predicted + 1) % 4
    with torch.no_grad():
        expected = patch_sums(model, image, other, (4, 4))
    torch.testing.assert_close(occlusion(model, image, other, window=4, stride=4), expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(occlusion(model, image, None, window=4, stride=4), expected)


def captum_occlusion(model, images, targets, window, stride, baseline) -> torch.Tensor:
    maps = Occlusion(model).attribute(
        images,
        sliding_window_shapes=(3, *window),
        strides=(3, *stride),
        baselines=baseline,
        target=targets,
        perturbations_per_eval=16,
    )
    assert torch.equal(maps[:, 0], maps[:, 2])  # Captum repeats the map on every channel
    return maps[:, 0]


def assert_matches_captum(model, images, targets, window, stride, baseline=0.0) -> None:
    ours = occlusion(model, images, targets, window=window, stride=stride, baseline=baseline)
    with torch.no_grad():
        theirs = captum_occlusion(model, images, targets, window, stride, baseline)
    relative_error = (ours - theirs).abs().max() / theirs.abs().max()
    assert relative_error <= 1e-4, f"relative error {relative_error:.2e}"


def resized(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


@pytest.mark.parametrize(
    "size, window, stride",
    [
        ((64, 64), (16, 16), (8, 8)),
        # (56 - 16) / 12 and (72 - 20) / 12 are not whole: Captum adds a last window that runs
        # past the border and is clipped; so must we.
        ((56, 72), (16, 20), (12, 12)),
    ],
)
def test_lite0_matches_captum(lite0, chelsea, size, window, stride) -> None:
    images = resized(chelsea, size)
    second_best = lite0(images).topk(2).indices[0, 1].item()
    assert_matches_captum(lite0, images, [second_best], window, stride, baseline=0.5)


@pytest.mark.parametrize("name, size", [("vgg11", 32), ("alexnet", 64), ("resnet18", 32)])
def test_random_torchvision_models_match_captum(name: str, size: int, chelsea: torch.Tensor) -> None:
    model = load_model(name, pretrained=False)  # VGG and AlexNet use in-place ReLUs
    images = torch.cat([resized(chelsea, (size, size)), torch.rand(1, 3, size, size)])
    window, stride = size // 4, size // 8
    assert_matches_captum(model, images, [3, 917], (window, window), (stride, stride))


def test_a_batch_gives_the_maps_of_its_images_one_by_one(lite0, chelsea) -> None:
    images = torch.cat([resized(chelsea, (32, 48)), resized(chelsea.flip(-1), (32, 48))])
    targets = [281, 1]
    together = occlusion(lite0, images, targets, window=16, stride=8, batch_size=5)
    for image, target, result in zip(images, targets, together):
        alone = occlusion(lite0, image, target, window=16, stride=8, batch_size=5)
        torch.testing.assert_close(result, alone, rtol=1e-4, atol=1e-4)


def test_batch_size_does_not_change_the_answer(lite0, chelsea) -> None:
    image = resized(chelsea, (32, 32))
    one = occlusion(lite0, image, 281, window=16, stride=8, batch_size=1)
    many = occlusion(lite0, image, 281, window=16, stride=8, batch_size=64)
    torch.testing.assert_close(one, many, rtol=1e-4, atol=1e-4)


class RecordingNet(nn.Module):
    """Records the batch size of every forward call."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 5)
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(len(x))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("stride", [4, 2])
def test_forward_batches_are_bounded_by_batch_size_not_by_positions(stride: int) -> None:
    model = RecordingNet().eval()
    occlusion(model, torch.rand(2, 3, 16, 16), 0, window=4, stride=stride, batch_size=7)
    positions = ((16 - 4) // stride + 1) ** 2
    occluded = model.batch_sizes[2:]  # [0]: the target's range check, [1]: the clean images
    assert max(occluded) <= 7 and sum(occluded) == 2 * positions


def test_no_side_effects_on_the_model_or_the_input() -> None:
    model = load_model("alexnet", pretrained=False).train()  # train mode: warned, restored
    model.requires_grad_(True)
    image = torch.rand(3, 64, 64)
    original = image.clone()
    with pytest.warns(UserWarning, match="train mode"):
        result = occlusion(model, image, 5, window=32, stride=32)
    assert all(module.training for module in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())
    assert torch.equal(image, original)
    assert result.requires_grad is False
    result.sum()  # an ordinary tensor, usable outside inference mode (result * 2 works)
    (result * 2).exp()


def test_progress_bar_shows_and_the_answer_is_the_same(capsys) -> None:
    model = linear_model(8, 8)
    image = torch.rand(3, 8, 8)
    quiet = occlusion(model, image, 0, window=4, stride=2)
    shown = occlusion(model, image, 0, window=4, stride=2, progress=True)
    assert torch.equal(quiet, shown)
    assert "occlusion" in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(window=20), "larger than the image"),
        (dict(window=(4, 20)), "larger than the image"),
        (dict(window=4, stride=5), "stride <= window"),
        (dict(window=0), "positive"),
        (dict(window=4.0), "int or a"),
        (dict(baseline=torch.zeros(2, 3, 16, 16)), "cannot be broadcast"),
        (dict(baseline="grey"), "baseline must be a number"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_bad_options_are_clear_errors(options: dict, message: str) -> None:
    with pytest.raises(SaliencyLabError, match=message):
        occlusion(linear_model(16, 16), torch.rand(3, 3, 16, 16), 0, **{"window": 4, "stride": 2, **options})


def test_a_window_as_large_as_the_image_gives_one_position_and_any_stride_is_fine() -> None:
    model = linear_model(8, 8)
    image = torch.rand(3, 8, 8)
    result = occlusion(model, image, 0, window=8, stride=100)
    with torch.no_grad():
        total = model(image[None])[0, 0] - model(torch.zeros(1, 3, 8, 8))[0, 0]
    torch.testing.assert_close(result, total.expand(8, 8), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_masks_and_results_stay_on_the_gpu() -> None:
    model = linear_model(8, 8).cuda()
    image = torch.rand(3, 8, 8, device="cuda")
    result = occlusion(model, image, 0, window=4, stride=2, baseline=torch.full((3, 8, 8), 0.5))
    assert result.device.type == "cuda"
    torch.testing.assert_close(result.cpu(), occlusion(model.cpu(), image.cpu(), 0, window=4, stride=2, baseline=0.5))


class ViewAfterConvNet(nn.Module):
    """A hand-written CNN that flattens with ``.view()``, as many course exercises do."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv(x))
        return self.fc(features.view(features.shape[0], -1))  # raises on channels_last input


def test_a_model_that_calls_view_after_a_conv_works_and_matches_captum() -> None:
    model = ViewAfterConvNet().eval()
    image = torch.rand(1, 3, 8, 8)
    assert_matches_captum(model, image, [2], (4, 4), (2, 2))


def test_an_error_of_the_model_itself_is_raised_unchanged() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(10, 2)).eval()
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        occlusion(model, torch.rand(1, 3, 8, 8), 0, window=4, stride=4)
