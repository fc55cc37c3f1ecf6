"""saliencylab.metrics on hand-checkable cases: linear models, tiny CNNs, scipy as reference."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from saliencylab import SaliencyLabError
from saliencylab._core import input_gradients, reduce_channels, resolve_targets
from saliencylab.metrics import (
    auc,
    deletion_auc,
    deletion_curve,
    insertion_auc,
    insertion_curve,
    pointing_game,
    randomization_groups,
    randomization_test,
    rank_correlation,
)

SIZE = 6  # 6x6 images: 36 pixels, so one pixel per step is cheap


def linear_model(classes: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, classes)).eval()


def random_images(count: int, seed: int = 1, size: int = SIZE) -> torch.Tensor:
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def contribution_map(model: nn.Module, images: torch.Tensor, target: int, other: int | None = None):
    """Exact per-pixel contribution of a linear model: sum over channels of w * x.

    With ``other``, the contribution to ``logit[target] - logit[other]``, which decides the
    softmax probability of a two-class model.
    """
    weight = model[1].weight[target] - (model[1].weight[other] if other is not None else 0)
    return (weight.view(1, 3, SIZE, SIZE) * images).sum(dim=1).detach()


def reference_deletion(model, images, maps, target, steps, baseline=0.0):
    """Step-by-step deletion curve of logits, written as plainly as possible."""
    curves = []
    for image, map_ in zip(images, maps):
        order = torch.sort(map_.flatten(), descending=True, stable=True).indices
        values = []
        for k in range(steps + 1):
            count = k * order.numel() // steps
            flat = image.reshape(3, -1).clone()
            flat[:, order[:count]] = baseline
            values.append(model(flat.view(1, *image.shape))[0, target].item())
        curves.append(values)
    return torch.tensor(curves)


# ------------------------------------------------------------------ deletion / insertion


@pytest.mark.parametrize("steps", [36, 5])
def test_deletion_curve_matches_a_step_by_step_reference(steps):
    model, images = linear_model(), random_images(3)
    maps = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    curve = deletion_curve(model, images, maps, target=0, steps=steps, score="logit")
    expected = reference_deletion(model, images, maps, target=0, steps=steps)
    assert curve.shape == (3, steps + 1)
    torch.testing.assert_close(curve, expected, rtol=1e-5, atol=1e-5)


def test_perfect_map_beats_random_and_reversed_maps():
    model, images = linear_model(), random_images(4)
    perfect = contribution_map(model, images, target=0, other=1)
    random_map = torch.rand(4, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    options = dict(target=0, steps=36, baseline=0.0)
    deletion = {name: deletion_auc(model, images, m, **options)
                for name, m in [("perfect", perfect), ("random", random_map), ("reversed", -perfect)]}
    insertion = {name: insertion_auc(model, images, m, **options)
                 for name, m in [("perfect", perfect), ("random", random_map), ("reversed", -perfect)]}
    assert (deletion["perfect"] < deletion["random"]).all()
    assert (deletion["random"] < deletion["reversed"]).all()
    assert (insertion["perfect"] > insertion["random"]).all()
    assert (insertion["random"] > insertion["reversed"]).all()


def test_perfect_map_gives_the_lowest_possible_logit_at_every_step():
    model, images = linear_model(), random_images(2)
    perfect = contribution_map(model, images, target=1)
    options = dict(target=1, steps=36, baseline=0.0, score="logit")
    best = deletion_curve(model, images, perfect, **options)
    for seed in range(5):
        other = torch.rand(2, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
        assert (best <= deletion_curve(model, images, other, **options) + 1e-5).all()


def test_curves_start_and_end_at_the_image_and_the_baseline():
    model, images = linear_model(), random_images(2)
    maps = torch.rand(2, SIZE, SIZE)
    grey = torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)
    probs = lambda x: torch.softmax(model(x), dim=1)[:, 0].detach()  # noqa: E731
    deletion = deletion_curve(model, images, maps, target=0, steps=4, baseline=grey)
    insertion = insertion_curve(model, images, maps, target=0, steps=4, baseline=grey)
    grey_images = grey.expand_as(images)
    torch.testing.assert_close(deletion[:, 0], probs(images))
    torch.testing.assert_close(deletion[:, -1], probs(grey_images))
    torch.testing.assert_close(insertion[:, 0], probs(grey_images))
    torch.testing.assert_close(insertion[:, -1], probs(images))


def test_insertion_defaults_to_a_blurred_baseline():
    from torchvision.transforms.functional import gaussian_blur

    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3)).eval()
    images = random_images(2, size=16)
    curve = insertion_curve(model, images, torch.rand(2, 16, 16), target=2, steps=3)
    blurred = gaussian_blur(images, [11, 11], [5.0, 5.0])
    expected_start = torch.softmax(model(blurred), dim=1)[:, 2].detach()
    torch.testing.assert_close(curve[:, 0], expected_start)
    assert not torch.allclose(curve[:, 0], curve[:, -1])
    tiny_model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3)).eval()
    with pytest.raises(SaliencyLabError, match="blur"):
        insertion_curve(tiny_model, random_images(1, size=4), torch.rand(1, 4, 4), steps=3)


def test_constant_map_is_defined_and_deletes_in_raster_order():
    model, images = linear_model(), random_images(2)
    raster = -torch.arange(SIZE * SIZE, dtype=torch.float32).view(1, SIZE, SIZE).expand(2, -1, -1)
    for constant in (torch.zeros(2, SIZE, SIZE), torch.full((2, SIZE, SIZE), 3.0)):
        curve = deletion_curve(model, images, constant, target=0, steps=12)
        assert not torch.isnan(curve).any()
        torch.testing.assert_close(curve, deletion_curve(model, images, raster, target=0, steps=12))


def test_batch_size_and_single_image_do_not_change_the_curve():
    model, images = linear_model(), random_images(3)
    maps = torch.rand(3, SIZE, SIZE)
    one_at_a_time = deletion_curve(model, images, maps, steps=7, batch_size=1)
    all_at_once = deletion_curve(model, images, maps, steps=7, batch_size=1000)
    torch.testing.assert_close(one_at_a_time, all_at_once)
    single = deletion_curve(model, images[1], maps[1], steps=7)
    assert single.shape == (8,)
    torch.testing.assert_close(single, all_at_once[1])
    assert isinstance(deletion_auc(model, images[1], maps[1], steps=7), float)


def test_auc_helpers_take_the_target_in_the_curves_position():
    model, images = linear_model(), random_images(2)
    maps = torch.rand(2, SIZE, SIZE)
    for curve, area in ((deletion_curve, deletion_auc), (insertion_curve, insertion_auc)):
        expected = auc(curve(model, images, maps, 1, steps=5))
        torch.testing.assert_close(area(model, images, maps, 1, steps=5), expected)
        torch.testing.assert_close(area(model, images, maps, target=1, steps=5), expected)


def test_target_is_the_requested_class_not_the_prediction():
    model, images = linear_model(), random_images(3)
    maps = torch.rand(3, SIZE, SIZE)
    class_0 = deletion_curve(model, images, maps, target=0, steps=5)
    class_1 = deletion_curve(model, images, maps, target=[1, 1, 1], steps=5)
    torch.testing.assert_close(class_0 + class_1, torch.ones_like(class_0))
    predicted = model(images).argmax(1)
    default = deletion_curve(model, images, maps, steps=5)
    torch.testing.assert_close(default[:, 0], torch.maximum(class_0, class_1)[:, 0])
    torch.testing.assert_close(default, torch.where(predicted[:, None] == 0, class_0, class_1))


def test_curves_leave_the_model_as_they_found_it():
    model, images = linear_model(), random_images(2)
    model.train()
    before = copy.deepcopy(model.state_dict())
    with pytest.warns(UserWarning, match="train mode"):
        deletion_curve(model, images, torch.rand(2, SIZE, SIZE), steps=3)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_curve_errors_say_what_to_fix():
    model, images = linear_model(), random_images(2)
    maps = torch.rand(2, SIZE, SIZE)
    with pytest.raises(SaliencyLabError, match="height and width"):
        deletion_curve(model, images, torch.rand(2, SIZE, SIZE + 1))
    with pytest.raises(SaliencyLabError, match="height and width"):
        deletion_curve(model, images, torch.rand(3, SIZE, SIZE))
    with pytest.raises(SaliencyLabError, match="amax"):
        deletion_curve(model, images, torch.rand(2, 3, SIZE, SIZE))
    with pytest.raises(SaliencyLabError, match="NaN"):
        deletion_curve(model, images, torch.full((2, SIZE, SIZE), float("nan")))
    with pytest.raises(SaliencyLabError, match="torch.Tensor"):
        deletion_curve(model, images, maps.numpy())
    with pytest.raises(SaliencyLabError, match="score"):
        deletion_curve(model, images, maps, score="probability")
    with pytest.raises(SaliencyLabError, match="steps"):
        deletion_curve(model, images, maps, steps=0)
    with pytest.raises(SaliencyLabError, match="batch_size"):
        insertion_curve(model, images, maps, batch_size=0, baseline=0.0)
    with pytest.raises(SaliencyLabError, match="baseline"):
        deletion_curve(model, images, maps, baseline=torch.zeros(3, SIZE, SIZE + 2))
    with pytest.raises(SaliencyLabError, match="baseline"):
        deletion_curve(model, images, maps, baseline="grey")
    with pytest.raises(SaliencyLabError, match="out of range"):
        deletion_curve(model, images, maps, target=5)
    with pytest.raises(SaliencyLabError, match="argument order"):
        deletion_curve(images, model, maps)


def test_auc_is_the_trapezoid_area_over_zero_to_one():
    assert auc(torch.tensor([1.0, 1.0, 1.0])) == pytest.approx(1.0)
    assert auc([1.0, 0.0]) == pytest.approx(0.5)
    assert auc(torch.tensor([0.0, 1.0, 0.0])) == pytest.approx(0.5)
    torch.testing.assert_close(
        auc(torch.tensor([[0.0, 0.5, 1.0], [1.0, 1.0, 0.0]])), torch.tensor([0.5, 0.75])
    )
    with pytest.raises(SaliencyLabError, match="N >= 2"):
        auc(torch.tensor([0.3]))


# ------------------------------------------------------------------------- pointing game


def peak_map(y: int, x: int, size: int = 10) -> torch.Tensor:
    map_ = torch.rand(size, size, generator=torch.Generator().manual_seed(y * size + x)) * 0.5
    map_[y, x] = 1.0
    return map_


def test_pointing_game_hits_inside_the_box_and_misses_outside():
    box = (2, 3, 5, 7)  # rows 2..4, columns 3..6
    assert pointing_game(peak_map(2, 3), box) is True
    assert pointing_game(peak_map(4, 6), box) is True
    assert pointing_game(peak_map(5, 6), box) is False  # y1 is exclusive
    assert pointing_game(peak_map(4, 7), box) is False  # x1 is exclusive
    assert pointing_game(peak_map(0, 0), box) is False
    maps = torch.stack([peak_map(3, 4), peak_map(8, 8)])
    hits = pointing_game(maps, torch.tensor([box, box]))
    assert hits.dtype == torch.bool and hits.tolist() == [True, False]


def test_pointing_game_tolerance_is_a_euclidean_distance():
    box = (2, 2, 4, 4)  # pixels (2..3, 2..3)
    straight = peak_map(3, 6)  # 3 px right of the box
    diagonal = peak_map(5, 5)  # (2, 2) px from the corner: 2.83 px away
    assert [pointing_game(straight, box, tolerance=t) for t in (2, 2.9, 3)] == [False, False, True]
    assert [pointing_game(diagonal, box, tolerance=t) for t in (2, 2.8, 2.9)] == [False, False, True]


def test_pointing_game_accepts_boolean_masks():
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[1, 1] = mask[7, 8] = True  # two small objects
    assert pointing_game(peak_map(7, 8), mask) is True
    assert pointing_game(peak_map(7, 7), mask) is False
    assert pointing_game(peak_map(7, 7), mask, tolerance=1) is True


def test_pointing_game_constant_map_misses_and_ties_must_all_be_inside():
    box = (0, 0, 5, 5)
    assert pointing_game(torch.zeros(10, 10), box) is False
    assert pointing_game(torch.zeros(10, 10), (0, 0, 10, 10)) is True  # the region is everything
    two_peaks = peak_map(1, 1)
    two_peaks[8, 8] = 1.0
    assert pointing_game(two_peaks, box) is False
    assert pointing_game(two_peaks, box, tolerance=6) is True


def test_pointing_game_errors_say_what_to_fix():
    with pytest.raises(SaliencyLabError, match="covers no pixel"):
        pointing_game(peak_map(1, 1), (20, 20, 30, 30))
    with pytest.raises(SaliencyLabError, match="reversed"):
        pointing_game(peak_map(1, 1), (5, 5, 2, 8))
    with pytest.raises(SaliencyLabError, match=r"\[2, 4\]"):
        pointing_game(torch.stack([peak_map(1, 1)] * 2), (0, 0, 3, 3))
    with pytest.raises(SaliencyLabError, match="bool"):
        pointing_game(torch.rand(2, 10, 10), torch.ones(2, 10, 10))
    with pytest.raises(SaliencyLabError, match="one bool"):
        pointing_game(torch.rand(2, 10, 10), torch.ones(2, 10, 9, dtype=torch.bool))
    with pytest.raises(SaliencyLabError, match="tolerance"):
        pointing_game(peak_map(1, 1), (0, 0, 3, 3), tolerance=-1)


# ---------------------------------------------------------------------- rank correlation


def test_rank_correlation_equals_scipy_spearman_with_ties():
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 6, (4, 9, 7), generator=generator).float()  # many ties
    b = a + torch.randint(-3, 4, (4, 9, 7), generator=generator).float()
    ours = rank_correlation(a, b)
    theirs = [scipy.stats.spearmanr(a[i].flatten(), b[i].flatten()).statistic for i in range(4)]
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-12)
    signed = torch.randn(4, 9, 7, generator=generator)
    ours_abs = rank_correlation(signed, a, absolute=True)
    theirs_abs = [scipy.stats.spearmanr(signed[i].abs().flatten(), a[i].flatten()).statistic
                  for i in range(4)]
    np.testing.assert_allclose(ours_abs.numpy(), theirs_abs, rtol=1e-12)


def test_rank_correlation_identical_reversed_and_absolute():
    a = torch.randn(3, 8, 8)
    torch.testing.assert_close(rank_correlation(a, a * 2 + 1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(rank_correlation(a, -a), -torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(rank_correlation(a, -a, absolute=True), torch.ones(3, dtype=torch.float64))
    assert rank_correlation(a[0], a[0].exp()) == pytest.approx(1.0)


def test_rank_correlation_of_a_constant_map_is_nan_with_a_warning():
    with pytest.warns(UserWarning, match="constant"):
        values = rank_correlation(torch.zeros(2, 5, 5), torch.rand(2, 5, 5))
    assert torch.isnan(values).all()
    with pytest.raises(SaliencyLabError, match="same shape"):
        rank_correlation(torch.rand(2, 5, 5), torch.rand(2, 5, 4))


# --------------------------------------------------------------------- randomization test


def small_cnn(seed: int = 0, classes: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes),
    ).eval()


def gradient_map(model: nn.Module, images: torch.Tensor, target=None) -> torch.Tensor:
    """Plain input-gradient saliency (Simonyan et al.), [B, H, W]."""
    targets = resolve_targets(model, images, target)
    return reduce_channels(input_gradients(model, images, targets), "max_abs")


def edge_map(model: nn.Module, images: torch.Tensor, target=None) -> torch.Tensor:
    """A 'method' that ignores the model: exactly what the randomization test should expose."""
    grey = images.mean(dim=1)
    return (grey[:, 1:, 1:] - grey[:, :-1, :-1]).abs()


@pytest.fixture(scope="module")
def cnn_images():
    return random_images(3, seed=5, size=16)


def test_default_groups_are_layers_top_down_with_conv_and_bn_together():
    assert randomization_groups(small_cnn()) == [("7",), ("2", "3"), ("0",)]


def test_default_groups_give_lite0_ten_steps_by_stage(lite0):
    groups = randomization_groups(lite0)
    assert groups[0] == ("classifier.fc",)
    assert groups[1] == ("features.head.0", "features.head.1")  # conv + BatchNorm
    stages = [[int(name.rpartition(".")[2]) for name in group] for group in groups[2:-1]]
    assert stages == [[15], [11, 12, 13, 14], [8, 9, 10], [5, 6, 7], [3, 4], [1, 2], [0]]
    assert groups[-1] == ("features.stem.0", "features.stem.1")


def test_default_groups_open_wrappers_and_module_lists():
    efficientnet = pytest.importorskip("efficientnet_lite_pytorch")
    wrapped = nn.Sequential(nn.Identity(), efficientnet.EfficientNet.from_name("efficientnet-lite0"))
    groups = randomization_groups(wrapped)
    assert len(groups) == 10
    assert groups[0] == ("1._fc",) and groups[-1] == ("1._conv_stem", "1._bn0")
    assert groups[3] == tuple(f"1._blocks.{i}" for i in range(11, 15))


def test_randomization_decorrelates_gradients_but_not_an_edge_detector(cnn_images):
    model = small_cnn()
    result = randomization_test(model, cnn_images, gradient_map)
    assert result.layers == ["7", "2-3", "0"]
    assert result.rank_correlation.shape == (3, 3) and result.ssim.shape == (3, 3)
    assert result.maps.shape == (4, 3, 16, 16)
    assert (result.rank_correlation[-1].abs() < 0.5).all()
    assert (result.ssim[-1] < 0.5).all()
    blind = randomization_test(model, cnn_images, edge_map)
    torch.testing.assert_close(blind.rank_correlation, torch.ones(3, 3, dtype=torch.float64))
    torch.testing.assert_close(blind.ssim, torch.ones(3, 3, dtype=torch.float64))


def test_randomization_leaves_the_model_untouched(cnn_images):
    model = small_cnn()
    model.train()
    state = copy.deepcopy(model.state_dict())
    with pytest.warns(UserWarning, match="train mode"):
        randomization_test(model, cnn_images, gradient_map, ssim=False)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())


def test_randomization_is_reproducible_and_keeps_the_global_random_state(cnn_images):
    model = small_cnn()
    torch.manual_seed(123)
    first = randomization_test(model, cnn_images, gradient_map, seed=7)
    after_first = torch.rand(1)
    torch.manual_seed(123)
    second = randomization_test(model, cnn_images, gradient_map, seed=7)
    assert torch.equal(torch.rand(1), after_first)
    other = randomization_test(model, cnn_images, gradient_map, seed=8)
    torch.testing.assert_close(first.rank_correlation, second.rank_correlation, rtol=0, atol=0)
    torch.testing.assert_close(first.maps, second.maps, rtol=0, atol=0)
    assert not torch.equal(first.maps[1:], other.maps[1:])


def test_randomization_explains_the_original_target_at_every_step(cnn_images):
    model = small_cnn(seed=3, classes=10)
    original = model(cnn_images).argmax(1)
    seen_targets, predictions = [], []

    def recording_method(model, images, target=None):
        seen_targets.append(torch.as_tensor(target).clone())
        predictions.append(model(images).argmax(1))
        return gradient_map(model, images, target)

    result = randomization_test(model, cnn_images, recording_method, ssim=False)
    assert all(torch.equal(t, original) for t in seen_targets)
    assert torch.equal(result.targets, original)
    assert any(not torch.equal(p, original) for p in predictions[1:])  # the test has teeth

    seen_targets.clear()
    randomization_test(model, cnn_images, recording_method, target=2, ssim=False)
    assert all(t.tolist() == [2, 2, 2] for t in seen_targets)


@pytest.mark.parametrize("cascading", [True, False])
def test_randomization_steps_cascade_or_stay_independent(cnn_images, cascading):
    model = small_cnn()
    groups = randomization_groups(model)
    changed_per_call = []

    def recording_method(copy_of_model, images, target=None):
        modules = dict(copy_of_model.named_modules())
        changed_per_call.append([
            any(not torch.equal(modules[n].weight, dict(model.named_modules())[n].weight) for n in g)
            for g in groups
        ])
        return gradient_map(copy_of_model, images, target)

    randomization_test(model, cnn_images, recording_method, cascading=cascading, ssim=False)
    if cascading:
        expected = [[step > i for i in range(3)] for step in range(4)]  # groups 1..step random
    else:
        expected = [[step == i + 1 for i in range(3)] for step in range(4)]
    assert changed_per_call == [[bool(x) for x in row] for row in expected]


def test_randomization_layers_option_and_module_options(cnn_images):
    model = small_cnn()

    def needs_layer(copy_of_model, images, target=None, layer=None):
        assert any(m is layer for m in copy_of_model.modules()), "layer must belong to the copy"
        return gradient_map(copy_of_model, images, target)

    result = randomization_test(
        model, cnn_images, needs_layer, layers=["7", ("2", "3")], layer=model[2], ssim=False
    )
    assert result.layers == ["7", "2-3"] and result.groups == [("7",), ("2", "3")]
    rows = result.to_rows()
    assert len(rows) == 2 * 3 and rows[0]["layer"] == "7" and rows[0]["ssim"] is None
    assert "spearman" in str(result)
    with pytest.raises(SaliencyLabError, match="no module named '9'"):
        randomization_test(model, cnn_images, gradient_map, layers=["9"])
    with pytest.raises(SaliencyLabError, match="no parameters"):
        randomization_test(model, cnn_images, gradient_map, layers=["1"])
    with pytest.raises(SaliencyLabError, match="list of module names"):
        randomization_test(model, cnn_images, gradient_map, layers="7")
    with pytest.raises(SaliencyLabError, match="one map per image"):
        randomization_test(model, cnn_images, lambda m, x, target=None: torch.zeros(2))


def test_randomization_reports_constant_maps_as_nan_with_a_warning(cnn_images):
    calls = []

    def dies_after_randomisation(model, images, target=None):
        calls.append(1)
        return edge_map(model, images) * (len(calls) == 1)

    with pytest.warns(UserWarning, match=r"constant.*\(1, 0\)"):
        result = randomization_test(small_cnn(), cnn_images, dies_after_randomisation)
    assert torch.isnan(result.rank_correlation).all()
    assert not torch.isnan(result.ssim).any()


# ------------------------------------------------ edges mended when metrics became a package


def test_randomization_reports_nan_maps_as_nan_not_as_constant(cnn_images):
    calls = []

    def nan_after_randomisation(model, images, target=None):
        calls.append(1)
        maps = edge_map(model, images)
        if len(calls) == 3:  # step 2: a normalisation divided by zero, say
            maps[0, 0, 0] = float("nan")
        return maps

    with pytest.warns(UserWarning, match=r"contains NaN at \(step, image\) \[\(2, 0\)\]") as caught:
        result = randomization_test(small_cnn(), cnn_images, nan_after_randomisation)
    assert not any("constant" in str(warning.message) for warning in caught)
    expected_nan = torch.zeros(3, 3, dtype=torch.bool)
    expected_nan[1, 0] = True
    assert torch.equal(torch.isnan(result.rank_correlation), expected_nan)
    assert torch.equal(torch.isnan(result.ssim), expected_nan)  # SSIM of a NaN map is NaN too


def test_randomization_refuses_nan_in_the_original_map_and_names_a_constant_original(cnn_images):
    def nan_everywhere(model, images, target=None):
        return torch.full(images.shape[:1] + images.shape[2:], float("nan"))

    with pytest.raises(SaliencyLabError, match=r"contain NaN on the original model \(image\(s\) \[0, 1, 2\]\)"):
        randomization_test(small_cnn(), cnn_images, nan_everywhere)

    def constant_first_image(model, images, target=None):
        maps = gradient_map(model, images, target)
        maps[0] = 1.0
        return maps

    with pytest.warns(UserWarning, match=r"original model's map of image\(s\) \[0\] is constant"):
        result = randomization_test(small_cnn(), cnn_images, constant_first_image, ssim=False)
    assert torch.isnan(result.rank_correlation[:, 0]).all()
    assert not torch.isnan(result.rank_correlation[:, 1:]).any()


def test_nan_maps_raise_in_every_metric_and_their_docstrings_say_so():
    model, images = linear_model(), random_images(1)
    nan_map = torch.rand(SIZE, SIZE)
    nan_map[2, 3] = float("nan")
    for call in (
        lambda: deletion_curve(model, images[0], nan_map),
        lambda: insertion_curve(model, images[0], nan_map, baseline=0.0),
        lambda: pointing_game(nan_map, torch.tensor([0, 0, 3, 3])),
        lambda: rank_correlation(nan_map, torch.rand(SIZE, SIZE)),
    ):
        with pytest.raises(SaliencyLabError, match="NaN"):
            call()
    for function in (deletion_curve, insertion_curve, pointing_game, rank_correlation, randomization_test):
        assert "NaN" in function.__doc__, function.__name__


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rank_correlation_agrees_with_scipy_on_infinities(dtype):
    largest = torch.finfo(dtype).max
    a = torch.tensor([[math.inf, largest, 1.0, 2.0, -math.inf, -largest],
                      [math.inf, math.inf, -math.inf, 0.0, largest, 3.0],
                      [-math.inf, -largest, 0.5, 0.25, math.inf, largest]], dtype=dtype)
    b = torch.tensor([[6.0, 5.0, 3.0, 4.0, 1.0, 2.0],
                      [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                      [2.0, 1.0, 6.0, 5.0, 3.0, 4.0]], dtype=dtype)
    maps_a, maps_b = a.view(3, 2, 3), b.view(3, 2, 3)
    for absolute in (False, True):
        ours = rank_correlation(maps_a, maps_b, absolute=absolute)
        prepare = np.abs if absolute else np.asarray
        theirs = [scipy.stats.spearmanr(prepare(a[i].numpy()), prepare(b[i].numpy())).statistic
                  for i in range(3)]
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-12, atol=1e-15)
    # inf ranks above the largest finite value: with nan_to_num they tied, and this was 0.9429
    assert rank_correlation(a[0].view(2, 3), b[0].view(2, 3)) == pytest.approx(1.0, abs=1e-12)


def test_a_scalar_tensor_baseline_is_a_number():
    model, images = linear_model(), random_images(2)
    maps = torch.rand(2, SIZE, SIZE)
    for curve in (deletion_curve, insertion_curve):
        as_number = curve(model, images, maps, target=0, steps=6, baseline=0.5)
        for baseline in (torch.tensor(0.5), torch.tensor([0.5]), torch.full((1, 1, 1, 1), 0.5, dtype=torch.float64)):
            torch.testing.assert_close(curve(model, images, maps, target=0, steps=6, baseline=baseline), as_number)
    with pytest.raises(SaliencyLabError, match="cannot be broadcast"):
        deletion_curve(model, images, maps, baseline=torch.zeros(3, 3, SIZE, SIZE))


def test_auc_keeps_the_precision_of_its_input():
    area = auc([0.3] * 3)
    assert isinstance(area, float) and abs(area - 0.3) < 1e-12
    assert abs(auc(np.array([0.1, 0.2, 0.4])) - 0.225) < 1e-12
    assert auc(torch.tensor([[0.3, 0.3], [0.1, 0.2]], dtype=torch.float64)).dtype == torch.float64
    assert auc(torch.tensor([[0.3, 0.3]])).dtype == torch.float32
    assert auc(torch.tensor([[0.3, 0.3]], dtype=torch.float16)).dtype == torch.float32
    assert auc(torch.tensor([[1, 0, 1]])).dtype == torch.float64


def test_curves_keep_the_precision_of_a_float64_model():
    model64, images = linear_model().double(), random_images(2).double()
    maps = torch.rand(2, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = torch.stack([model64(torch.stack(_deleted_images(image, map_, 9)))
                              for image, map_ in zip(images, maps)])  # [2, 10, classes], float64
    expected = {"logit": logits[..., 0], "prob": torch.softmax(logits, dim=-1)[..., 0]}
    for score, values in expected.items():
        curve = deletion_curve(model64, images, maps, target=0, steps=9, score=score)
        assert curve.dtype == torch.float64
        torch.testing.assert_close(curve, values, rtol=1e-12, atol=1e-12)
        assert isinstance(auc(curve[0]), float) and auc(curve).dtype == torch.float64
    assert deletion_curve(linear_model(), random_images(2), maps, target=0, steps=9).dtype == torch.float32


def _deleted_images(image: torch.Tensor, map_: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """The ``steps + 1`` images of a deletion curve to black, one by one."""
    order = torch.sort(map_.flatten(), descending=True, stable=True).indices
    images = []
    for k in range(steps + 1):
        flat = image.reshape(3, -1).clone()
        flat[:, order[: k * order.numel() // steps]] = 0.0
        images.append(flat.view(image.shape))
    return images


# ------------------------------------------------------------- the course's Lite0 model


def test_curves_on_lite0_start_at_the_photo_and_end_at_black(lite0, chelsea_session):
    small = torch.nn.functional.interpolate(chelsea_session, size=64, mode="area")
    saliency_map = torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(0))
    curve = deletion_curve(lite0, small, saliency_map, target=285, steps=2)
    probs = torch.softmax(lite0(torch.cat([small, torch.zeros_like(small)])), dim=1)[:, 285]
    torch.testing.assert_close(curve[0, [0, -1]], probs)


def test_randomization_test_on_lite0_leaves_the_shared_model_intact(lite0, chelsea_session):
    small = torch.nn.functional.interpolate(chelsea_session, size=64, mode="area")
    state = {name: value.clone() for name, value in lite0.state_dict().items()}
    result = randomization_test(lite0, small, gradient_map, ssim=False)
    assert len(result.layers) == 10 and result.rank_correlation.shape == (10, 1)
    assert result.rank_correlation[-1, 0] < 0.5
    assert all(torch.equal(state[name], value) for name, value in lite0.state_dict().items())
    assert not any(p.requires_grad for p in lite0.parameters())
    assert not any(m._forward_hooks or m._backward_hooks for m in lite0.modules())


def test_gradcam_beats_a_random_map_on_insertion_with_lite0(lite0):
    """Grad-CAM's blob brings the cat back sooner than random pixels (0.55 vs 0.45 measured).

    Not deletion: there black scattered pixels wreck Lite0's prediction faster than any blob,
    so a random map wins (chelsea at 96 px: 0.025 vs Grad-CAM's 0.357; see deletion_curve).
    """
    from saliencylab.attribution import gradcam
    from saliencylab.images import sample_image, to_tensor

    cat = to_tensor(sample_image("chelsea"), size=96)
    random_map = torch.rand(1, 96, 96, generator=torch.Generator().manual_seed(0))
    options = dict(target=285, steps=20)  # 285: Egyptian cat, Lite0's top class here
    assert lite0(cat).argmax().item() == 285
    gradcam_auc = insertion_auc(lite0, cat, gradcam(lite0, cat, target=285), **options)
    random_auc = insertion_auc(lite0, cat, random_map, **options)
    assert gradcam_auc > random_auc + 0.05


# --- noisy linear imputation (ROAD, Rong et al. 2022) ------------------------------------------


def test_noisy_linear_imputation_on_a_hand_computed_case():
    """3 x 3 image, top row white, the rest black; the centre removed. Its neighbours: up 1/6, the
    two upper diagonals 1/12 each (white), five others black, weights summing to 1: 1/3."""
    from saliencylab.metrics import noisy_linear_imputation

    image = torch.zeros(3, 3, 3)
    image[:, 0, :] = 1.0
    removed = torch.zeros(3, 3, dtype=torch.bool)
    removed[1, 1] = True
    filled = noisy_linear_imputation(image, removed, noise=0.0)
    expected = image.clone()
    expected[:, 1, 1] = 1 / 3
    torch.testing.assert_close(filled, expected)


def test_noisy_linear_imputation_solves_for_removed_neighbours_together():
    """Two removed pixels side by side in a 1 x 4 row [0, ?, ?, 1]: only left/right neighbours
    exist (weight 1/6 each), so each unknown is the mean of its two neighbours: 1/3 and 2/3."""
    from saliencylab.metrics import noisy_linear_imputation

    image = torch.tensor([0.0, 0.5, 0.5, 1.0]).expand(3, 1, 4).clone()
    removed = torch.tensor([[False, True, True, False]])
    filled = noisy_linear_imputation(image[None], removed[None], noise=0.0)[0]
    torch.testing.assert_close(filled[:, 0], torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]).expand(3, 4))


def test_noisy_linear_imputation_keeps_kept_pixels_seeds_its_noise_and_stays_in_range():
    from saliencylab.metrics import noisy_linear_imputation

    images = random_images(2, seed=3, size=12)
    masks = torch.rand(2, 12, 12, generator=torch.Generator().manual_seed(4)) < 0.5
    filled = noisy_linear_imputation(images, masks, noise=0.05, seed=7)
    assert filled.shape == images.shape and filled.dtype == images.dtype
    assert torch.equal(filled[~masks[:, None].expand_as(images)], images[~masks[:, None].expand_as(images)])
    assert torch.equal(filled, noisy_linear_imputation(images, masks, noise=0.05, seed=7))
    assert not torch.equal(filled, noisy_linear_imputation(images, masks, noise=0.05, seed=8))
    assert filled.min() >= 0 and filled.max() <= 1
    smooth = noisy_linear_imputation(images, masks, noise=0.0)
    assert (filled - smooth)[masks[:, None].expand_as(images)].std().item() == pytest.approx(0.05, rel=0.3)
    everything = noisy_linear_imputation(images[0], torch.ones(12, 12, dtype=torch.bool), noise=0.0)
    torch.testing.assert_close(everything, images[0].mean(dim=(1, 2), keepdim=True).expand_as(images[0]))
    with pytest.raises(SaliencyLabError, match="booleans"):
        noisy_linear_imputation(images, masks.float())
    with pytest.raises(SaliencyLabError, match="do not match"):
        noisy_linear_imputation(images, masks[:1])


def test_deletion_curve_with_the_noisy_linear_baseline_imputes_at_every_step():
    """Each point of the "noisy_linear" curve is the model's score on the imputed image (noise of
    step k seeded with k), whatever the batch size; insertion imputes the pixels not yet inserted."""
    from saliencylab.metrics import noisy_linear_imputation
    from saliencylab.metrics.imputation import ROAD_NOISE

    model = linear_model(classes=3)
    images = random_images(2, seed=5)
    maps = torch.randn(2, SIZE, SIZE, generator=torch.Generator().manual_seed(6))
    steps = 4
    curve = deletion_curve(model, images, maps, 1, steps=steps, baseline="noisy_linear", batch_size=3)
    torch.testing.assert_close(curve, deletion_curve(model, images, maps, 1, steps=steps, baseline="noisy_linear"))
    backwards = insertion_curve(model, images, maps, 1, steps=steps, baseline="noisy_linear")
    for b in range(2):
        rank = torch.empty(SIZE * SIZE, dtype=torch.long)
        rank[maps[b].flatten().argsort(descending=True, stable=True)] = torch.arange(SIZE * SIZE)
        for k in range(steps + 1):
            removed = (rank < k * SIZE * SIZE // steps).view(SIZE, SIZE)
            for mask, got in ((removed, curve[b, k]), (~removed, backwards[b, k])):
                imputed = noisy_linear_imputation(images[b], mask, noise=ROAD_NOISE, seed=k)
                with torch.no_grad():
                    expected = model(imputed[None]).softmax(dim=1)[0, 1]
                assert got.item() == pytest.approx(expected.item(), abs=1e-6)
    assert torch.equal(curve[:, 0], deletion_curve(model, images, maps, 1, steps=steps)[:, 0])  # untouched
