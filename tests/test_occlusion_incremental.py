"""Incremental occlusion: the same maps as the full recomputation, on every model it walks.

``occlusion(..., incremental=True)`` recomputes only the part of each layer a window can
change (saliencylab.attribution._incremental); ``incremental=False`` runs every occluded image
through the whole model. The two must agree within 1e-4 relative (max |difference| / max |map|)
for any window, stride, fill, image shape, batch and targets; a model the incremental path
cannot walk gets a clear error with ``True`` and the ordinary path with ``None``.
Speed is not tested here (bench/bench_occlusion.py measures it).
"""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from saliencylab import SaliencyLabError
from saliencylab.attribution import _incremental as incremental_pass
from saliencylab.attribution import occlusion, recompute_profile
from saliencylab.attribution.occlusion import AUTO_MAX_WORK_FRACTION
from saliencylab.digits import load_digits_images
from saliencylab.models import Normalize, load_model

# the module (``saliencylab.attribution.occlusion`` as an attribute is the function)
occlusion_module = importlib.import_module("saliencylab.attribution.occlusion")
TOLERANCE = 1e-4


def relative_difference(ours: torch.Tensor, reference: torch.Tensor) -> float:
    assert ours.shape == reference.shape
    assert reference.abs().max() > 0, "an all-zero reference would prove nothing"
    return ((ours - reference).abs().max() / reference.abs().max()).item()


def assert_incremental_matches(model, images, target, **options) -> torch.Tensor:
    full = occlusion(model, images, target, incremental=False, **options)
    fast = occlusion(model, images, target, incremental=True, **options)
    assert relative_difference(fast, full) <= TOLERANCE
    return fast


def resized(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(image, size=size, mode="bilinear", antialias=True).clamp(0, 1)


def random_images(count: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 3, *size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- the course's models


@pytest.mark.parametrize(
    "size, window, stride, baseline",
    [
        ((96, 80), (16, 20), (12, 8), 0.0),  # non-square; the last windows are clipped
        ((64, 64), 16, 16, 0.5),
        ((72, 56), 24, 8, "blurred"),  # an image baseline, one per image
    ],
)
def test_lite0_incremental_equals_the_full_recomputation(lite0, chelsea, size, window, stride, baseline):
    images = torch.cat([resized(chelsea, size), resized(chelsea.flip(-1), size)])
    if baseline == "blurred":
        baseline = F.avg_pool2d(images, 9, stride=1, padding=4, count_include_pad=False)
    assert_incremental_matches(
        lite0, images, [281, 7], window=window, stride=stride, baseline=baseline
    )


def test_lite0_at_its_own_size_and_the_default_window(lite0, chelsea):
    """224x224, window 32: a box that grows to the whole map in the middle of the network."""
    image = chelsea[0]
    full = occlusion(lite0, image, 281, stride=32, incremental=False)
    fast = occlusion(lite0, image, 281, stride=32, incremental=True)
    assert fast.shape == (224, 224)
    assert relative_difference(fast, full) <= TOLERANCE


def test_digits_cnn_incremental_equals_the_full_recomputation(digits_cnn):
    images = random_images(3, (32, 32))
    assert_incremental_matches(
        digits_cnn, images, [0, 4, 9], window=(6, 10), stride=(3, 4),
        baseline=torch.rand(3, 1, 1),  # a colour
    )


@pytest.mark.parametrize("name", ["vgg11", "resnet18", "alexnet"])
def test_random_torchvision_models_incremental_equals_the_full_recomputation(name):
    model = load_model(name, pretrained=False)  # in-place ReLUs; ResNet's reused in a block
    size = (80, 72) if name == "alexnet" else (64, 48)
    images = random_images(2, size, seed=3)
    assert_incremental_matches(
        model, images, [3, 917], window=(12, 16), stride=(5, 7), baseline=random_images(1, size)
    )


# ---------------------------------------------------------------- any layer geometry


class Shift(nn.Module):
    """An unknown layer (a hand-written forward): the incremental walk stops before it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.roll(1, dims=-1)


class SqueezeExcitation(nn.Module):
    """Channel weights from the whole map: a change anywhere changes every position."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc(F.adaptive_avg_pool2d(x, 1)))


def geometry_zoo() -> dict[str, nn.Sequential]:
    """Small CNNs with every padding, stride, dilation and pooling the walk handles."""
    torch.manual_seed(0)
    relu = nn.ReLU(inplace=True)  # one in-place module, used three times
    bn = nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)]
    return {
        "strides, dilation, 'same', even kernels": nn.Sequential(
            Normalize((0.4, 0.5, 0.6), (0.2, 0.3, 0.25)),
            nn.Conv2d(3, 6, 4, stride=2, padding=1), bn, relu,
            nn.Conv2d(6, 6, 3, padding="same", dilation=2), nn.ReLU6(),
            nn.Conv2d(6, 8, (3, 5), stride=(1, 2), padding=(0, 2), groups=2), relu,
            nn.Conv2d(8, 8, 1, stride=3), nn.Hardswish(), *head,
        ),
        "max-pool with padding and ceil_mode, average pool": nn.Sequential(
            nn.Conv2d(3, 6, 3), relu,
            nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
            nn.Conv2d(6, 8, 3, padding=1), nn.SiLU(),
            nn.AvgPool2d(2), nn.MaxPool2d(2, dilation=2), nn.Dropout(0.3), *head,
        ),
        "an unknown layer in the middle": nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), relu, Shift(), nn.Conv2d(8, 8, 3, padding=1), *head,
        ),
        "squeeze-excitation": nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), SqueezeExcitation(8),
            nn.Conv2d(8, 8, 3, stride=2), *head,
        ),
        "flattened map, no global pooling": nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2), nn.Flatten(), nn.LazyLinear(5),
        ),
    }


@pytest.mark.parametrize("name", list(geometry_zoo()))
@pytest.mark.parametrize("size, window, stride", [((23, 30), (5, 7), (3, 4)), ((24, 24), 8, 8)])
def test_every_layer_geometry_gives_the_full_recomputations_map(name, size, window, stride):
    model = geometry_zoo()[name].eval()
    images = random_images(2, size, seed=5)
    model(images)  # materialise LazyLinear
    assert_incremental_matches(model, images, [1, 3], window=window, stride=stride, baseline=0.3)


def test_the_walk_stops_at_layers_that_mix_the_whole_map():
    zoo = geometry_zoo()
    for name, first_tail in [
        ("an unknown layer in the middle", Shift),
        ("squeeze-excitation", SqueezeExcitation),
        ("strides, dilation, 'same', even kernels", nn.AdaptiveAvgPool2d),
        ("flattened map, no global pooling", nn.Flatten),
    ]:
        model = zoo[name].eval()
        model(torch.rand(1, 3, 24, 24))  # materialise LazyLinear (it hooks itself until then)
        plan, why_not = incremental_pass.build_plan(model)
        assert plan is not None, why_not
        assert type(plan.tail[0]) is first_tail, name


# ---------------------------------------------------------------- what each layer recomputes


def probe_one_black_window(model: nn.Module, image: torch.Tensor, start: tuple[int, int],
                           window: tuple[int, int]) -> incremental_pass.Probe:
    """What the incremental pass recomputes, layer by layer, for one black window on ``image``."""
    plan, _ = incremental_pass.build_plan(model)
    with torch.inference_mode():
        _, cache = plan.run_clean(image)
        patch = incremental_pass.occluded_patch(image, torch.zeros_like(image), [start], window)
        return incremental_pass.probe(plan, cache, patch)


def test_the_recomputed_box_grows_by_each_layers_receptive_field():
    """A 4x4 window at (8, 8) of a 32x32 image: conv 3x3 -> a 6x6 box (rows 7..12), max-pool
    2 -> 4x4 (rows 3..6 of 16), conv 3x3 -> 6x6, conv 5x5 -> 10x10 (clipped at the top),
    12x12, 14x14, then the whole 16x16 map."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 5, padding=2), nn.Conv2d(4, 4, 5, padding=2),
        nn.Conv2d(4, 4, 5, padding=2), nn.Conv2d(4, 4, 5, padding=2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    ).eval()
    probe = probe_one_black_window(model, torch.rand(1, 3, 32, 32), start=(8, 8), window=(4, 4))
    sides = [round((layer.positions) ** 0.5) for layer in probe.layers]
    assert sides == [6, 4, 6, 10, 12, 14, 16]
    assert [layer.map_positions for layer in probe.layers] == [1024] + [256] * 6
    assert probe.layers[-1].fraction == 1.0
    assert 0 < probe.work_fraction < 1


def test_vgg11_at_224_recomputes_a_small_share_of_its_multiply_adds():
    model = load_model("vgg11", pretrained=False)
    probe = probe_one_black_window(model, torch.rand(1, 3, 224, 224), start=(96, 96), window=(32, 32))
    first = probe.layers[0]
    assert (first.name, first.positions, first.map_positions) == ("net.features.0", 34 * 34, 224 * 224)
    assert probe.work_fraction < 0.25 < AUTO_MAX_WORK_FRACTION


# ---------------------------------------------------------------- choosing the path


def linear_model(size: int = 8) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, 4)).eval()


class HandWritten(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class DoubledSequential(nn.Sequential):
    """A Sequential subclass whose forward does more than its layers: must not be walked."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


def doubled() -> DoubledSequential:
    torch.manual_seed(0)
    return DoubledSequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()


@pytest.mark.parametrize(
    "make_model, reason",
    [
        (linear_model, "no convolution or pooling"),
        (HandWritten, "no convolution or pooling"),
        (doubled, "no convolution or pooling"),
    ],
)
def test_a_model_it_cannot_walk_raises_with_true_and_takes_the_ordinary_path_with_none(make_model, reason):
    model = make_model().eval()
    image = random_images(1, (8, 8))[0]
    with pytest.raises(SaliencyLabError, match=f"incremental=True.*{reason}"):
        occlusion(model, image, 0, window=4, stride=2, incremental=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # None: silently the ordinary path
        automatic = occlusion(model, image, 0, window=4, stride=2)
    assert torch.equal(automatic, occlusion(model, image, 0, window=4, stride=2, incremental=False))


def test_a_model_with_forward_hooks_is_not_walked_and_its_hooks_still_run():
    model = geometry_zoo()["max-pool with padding and ceil_mode, average pool"].eval()
    images_seen = []
    handle = model[0].register_forward_hook(lambda module, inputs, output: images_seen.append(len(output)))
    try:
        with pytest.raises(SaliencyLabError, match="forward hooks"):
            occlusion(model, random_images(1, (16, 16)), 0, window=4, stride=4, incremental=True)
        images_seen.clear()
        occlusion(model, random_images(1, (16, 16)), 0, window=4, stride=4, batch_size=4)
        assert images_seen[-4:] == [4, 4, 4, 4]  # the ordinary path: 16 occluded images
    finally:
        handle.remove()


@pytest.mark.parametrize("value", [1, 0, "yes", 1.0])
def test_incremental_must_be_true_false_or_none(value):
    with pytest.raises(SaliencyLabError, match="incremental must be True, False or None"):
        occlusion(linear_model(), torch.rand(3, 8, 8), 0, window=4, stride=4, incremental=value)


def test_none_is_incremental_where_it_saves_work_and_ordinary_elsewhere(monkeypatch):
    taken = []
    original = occlusion_module._incremental_drops
    monkeypatch.setattr(
        occlusion_module, "_incremental_drops",
        lambda *args: taken.append("incremental") or original(*args),
    )
    vgg_like = geometry_zoo()["max-pool with padding and ceil_mode, average pool"].eval()
    occlusion(vgg_like, random_images(1, (64, 64)), 0, window=8, stride=8)
    assert taken == ["incremental"]  # a small window of a large image: a fraction of the work
    taken.clear()
    # a window as large as the image changes every position of every layer: no saving
    occlusion(vgg_like, random_images(1, (16, 16)), 0, window=16, stride=16)
    assert taken == []


# ---------------------------------------------------------------- the rules every method keeps


def test_no_side_effects_and_the_same_answer_whatever_ran_before():
    model = load_model("alexnet", pretrained=False).train()  # in-place ReLUs; train mode
    model.requires_grad_(True)
    image = torch.rand(3, 72, 72)
    original = image.clone()
    with pytest.warns(UserWarning, match="train mode"):
        first = occlusion(model, image, 5, window=24, stride=12, incremental=True)
    assert all(module.training for module in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert torch.equal(image, original)
    model.eval()
    occlusion(model, torch.rand(2, 3, 80, 64), [1, 2], window=16, stride=16, incremental=True)
    again = occlusion(model, image, 5, window=24, stride=12, incremental=True, batch_size=1)
    torch.testing.assert_close(again, first, rtol=1e-5, atol=1e-5 * float(first.abs().max()))
    assert first.requires_grad is False
    (first * 2).exp()  # an ordinary tensor, usable outside inference mode


def test_a_batch_gives_the_maps_of_its_images_one_by_one(digits_cnn):
    images = random_images(3, (32, 32), seed=9)
    together = occlusion(digits_cnn, images, [1, 2, 3], window=8, stride=4, incremental=True)
    for image, target, result in zip(images, [1, 2, 3], together):
        alone = occlusion(digits_cnn, image, target, window=8, stride=4, incremental=True)
        torch.testing.assert_close(result, alone, rtol=1e-5, atol=1e-6)


def test_progress_bar_counts_the_incremental_batches(digits_cnn, capsys):
    images = random_images(2, (32, 32))
    quiet = occlusion(digits_cnn, images, 0, window=8, stride=8, incremental=True, batch_size=5)
    shown = occlusion(digits_cnn, images, 0, window=8, stride=8, incremental=True, batch_size=5,
                      progress=True)
    assert torch.equal(quiet, shown)
    assert "8/8" in capsys.readouterr().err  # 16 windows of each of 2 images, 5 a pass: 4 + 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_incremental_on_the_gpu_matches_the_cpu():
    model = geometry_zoo()["strides, dilation, 'same', even kernels"].eval()
    images = random_images(2, (23, 30))
    cpu = occlusion(model, images, [0, 1], window=5, stride=3, incremental=True)
    gpu = occlusion(model.cuda(), images.cuda(), [0, 1], window=5, stride=3, incremental=True)
    assert gpu.device.type == "cuda"
    assert relative_difference(gpu.cpu(), cpu) <= TOLERANCE


def test_recompute_profile_grows_with_depth_to_the_whole_map(digits_cnn):
    images, _ = load_digits_images("test")
    profile = recompute_profile(digits_cnn, images[0], window=8)
    assert profile.layers and 0 < profile.work_fraction < 1
    shares = [layer.share for layer in profile.layers]
    assert all(a <= b + 1e-12 for a, b in zip(shares, shares[1:])), shares
    assert shares[0] < 0.5 and shares[-1] == 1.0
    for layer in profile.layers:
        assert layer.share == layer.positions / layer.map_positions and layer.layer in dict(digits_cnn.named_modules())


def test_recompute_profile_of_a_corner_window_and_its_errors(digits_cnn):
    images, _ = load_digits_images("test")
    middle = recompute_profile(digits_cnn, images[0], window=8)
    corner = recompute_profile(digits_cnn, images[:1], window=8, corner=(0, 0))
    assert corner.layers[0].positions < middle.layers[0].positions  # half its neighbourhood is padding
    with pytest.raises(SaliencyLabError, match="cannot walk"):
        recompute_profile(linear_model().eval(), random_images(1, (8, 8))[0], window=4)
    with pytest.raises(SaliencyLabError, match="one image"):
        recompute_profile(digits_cnn, images[:2], window=8)
