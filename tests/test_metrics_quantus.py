"""saliencylab.metrics against Quantus 0.6 where the two define the same thing.

Quantus (Hedström et al. 2023) implements the metrics the course uses under other names:
pixel flipping (our deletion curve), the pointing game, and the model parameter randomisation
test (MPRT). Each test states the settings under which both definitions coincide, and where
they cannot, what differs and what is compared instead.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from saliencylab.attribution import saliency
from saliencylab.metrics import deletion_curve, pointing_game, randomization_test
from test_metrics import small_cnn

quantus = pytest.importorskip("quantus")

SIZE = 6  # 36 pixels: Quantus flips features_in_step values at a time and wants H*W divisible by it




def seeded(*shape: int, seed: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def predicted(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(images).argmax(dim=1)


# ------------------------------------------------------------------ deletion = pixel flipping


@pytest.mark.parametrize("baseline, score", [(0.0, "prob"), (0.5, "prob"), (0.0, "logit")])
def test_deletion_curve_is_quantus_pixel_flipping_one_pixel_per_step(baseline, score):
    """Our ``deletion_curve(steps=H*W, baseline=b)`` after step 0 is Quantus'
    ``PixelFlipping(features_in_step=3, perturb_baseline=b, normalise=False, abs=False)`` on the
    map broadcast to ``[B, 1, H, W]``, called with ``softmax=True`` for ``score="prob"`` and
    ``softmax=False`` for ``score="logit"``.

    Why these settings: Quantus flips single channel values ranked by the map broadcast over
    the channels, so one pixel's three channels share one value and are adjacent in its order:
    three features per step delete one pixel, all channels, as we do. Its curve starts after
    the first flip (we also report the untouched image, step 0). ``perturb_baseline`` must be a
    number: Quantus' ``"black"`` is the image's minimum, not 0. ``normalise`` and ``abs`` off
    keep the ranking of the map as it is. The maps are continuous random values, so no two
    pixels tie: Quantus ranks with NumPy's unstable ``argsort``, we break ties in raster order.
    """
    model = small_cnn()
    images = seeded(3, 3, SIZE, SIZE, seed=1)
    maps = seeded(3, SIZE, SIZE, seed=2)
    targets = predicted(model, images)

    ours = deletion_curve(model, images, maps, targets, steps=SIZE * SIZE, baseline=baseline, score=score)
    flipping = quantus.PixelFlipping(
        features_in_step=3, perturb_baseline=baseline, normalise=False, abs=False, disable_warnings=True
    )
    theirs = flipping(
        model=model, x_batch=images.numpy(), y_batch=targets.numpy(), a_batch=maps[:, None].numpy(),
        device="cpu", softmax=score == "prob",
    )
    np.testing.assert_allclose(ours[:, 1:].numpy(), np.array(theirs), rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------- pointing game


def box_masks() -> torch.Tensor:
    masks = torch.zeros(3, SIZE, SIZE, dtype=torch.bool)
    masks[0, :3, :3] = True
    masks[1, 2:, 2:] = True
    masks[2, :, :2] = True
    return masks


def quantus_pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> list[bool]:
    game = quantus.PointingGame(normalise=False, abs=False, disable_warnings=True)
    hits = game(
        model=None, x_batch=np.zeros((len(maps), 3, SIZE, SIZE), dtype=np.float32),
        y_batch=np.zeros(len(maps), dtype=int), a_batch=maps[:, None].numpy(),
        s_batch=masks[:, None].numpy().astype(np.float32),
    )
    return [bool(hit) for hit in hits]


def test_pointing_game_is_quantus_pointing_game_when_the_maximum_is_unique():
    """``pointing_game(maps, masks)`` (tolerance 0) is Quantus'
    ``PointingGame(weighted=False, normalise=False, abs=False)`` with the masks as ``s_batch``
    ``[B, 1, H, W]``, for maps whose maximum is one pixel (continuous random maps). Quantus has
    no tolerance, hence 0; normalising by the maximum would not move it, but is off to compare
    the maps as they are."""
    masks = box_masks()
    for seed in range(5):
        maps = seeded(3, SIZE, SIZE, seed=10 + seed)
        assert pointing_game(maps, masks).tolist() == quantus_pointing_game(maps, masks)


def test_pointing_game_ties_differ_from_quantus_on_purpose():
    """Where several pixels share the maximum, the definitions cannot coincide: Quantus counts a
    hit when *any* of them is inside the region, we only when *all* are (a map that points
    everywhere points nowhere). So what is compared is each rule: ours is Quantus' rule applied
    to every tied pixel on its own and combined with ``all``."""
    masks = box_masks()
    maps = seeded(3, SIZE, SIZE, seed=3) * 0.5
    maps[0, 0, 0] = maps[0, 5, 5] = 1.0  # one peak inside the box, one outside
    maps[1] = 0.0  # constant: every pixel is a peak
    maps[2, 0, 0] = maps[2, 1, 1] = 1.0  # both peaks inside
    assert quantus_pointing_game(maps, masks) == [True, True, True]
    assert pointing_game(maps, masks).tolist() == [False, False, True]
    for image in range(3):
        peaks = (maps[image] == maps[image].max()).nonzero().tolist()
        one_peak_each = []
        for y, x in peaks:
            alone = torch.full((1, SIZE, SIZE), -1.0)
            alone[0, y, x] = 1.0
            one_peak_each += quantus_pointing_game(alone, masks[image : image + 1])
        assert all(one_peak_each) == bool(pointing_game(maps[image], masks[image]))


# ----------------------------------------------------------------- randomisation = MPRT


class FixedReset(nn.Module):
    """Mixin: ``reset_parameters()`` draws from the layer's own seeded generator.

    Quantus re-seeds torch's global RNG with ``seed + 1`` before every layer; we draw one seed
    per step from ``seed``. With PyTorch's ordinary initialisers the randomised weights therefore
    differ between the two libraries whatever seeds are chosen, and so do the maps. A reset that
    ignores the global RNG gives both the same randomised model at every step, which is what
    lets the definitions be compared exactly.
    """

    reset_seed = 0

    def reset_parameters(self) -> None:
        generator = torch.Generator().manual_seed(self.reset_seed)
        with torch.no_grad():
            for parameter in self.parameters(recurse=False):
                fan_in = parameter[0].numel() if parameter.dim() > 1 else 1
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / math.sqrt(fan_in))


class FixedResetConv(FixedReset, nn.Conv2d):
    pass


class FixedResetLinear(FixedReset, nn.Linear):
    pass


def fixed_reset_cnn() -> nn.Module:
    layers = [FixedResetConv(3, 6, 3, padding=1), FixedResetConv(6, 8, 3, padding=1), FixedResetLinear(8, 4)]
    for index, layer in enumerate(layers):
        layer.reset_seed = 100 + index
    model = nn.Sequential(
        layers[0], nn.ReLU(), layers[1], nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), layers[2],
    )
    generator = torch.Generator().manual_seed(0)  # the "trained" weights: not what a reset draws
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
        model[3].running_mean.copy_(torch.randn(8, generator=generator) * 0.1)
        model[3].running_var.copy_(torch.rand(8, generator=generator) + 0.5)
    return model.eval()


def quantus_explain(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: object) -> np.ndarray:
    """Quantus' ``explain_func``: our saliency, ``[B, 1, H, W]`` numpy."""
    return saliency(model, torch.as_tensor(inputs), target=[int(t) for t in targets])[:, None].numpy()


@pytest.mark.parametrize("cascading", [True, False])
def test_randomization_test_is_quantus_mprt_layer_by_layer(cascading):
    """``randomization_test(model, images, saliency, layers=L, absolute=True, cascading=c)`` is
    Quantus' ``MPRT(layer_order="top_down" if c else "independent", abs=True, normalise=False)``
    called with the original maps as ``a_batch`` and ``saliency`` as ``explain_func``, where ``L``
    lists, top first, one by one, the modules Quantus randomises (those with a
    ``reset_parameters``: the convs, BatchNorm, the linear layer) and every layer's reset is
    seeded on its own (:class:`FixedReset`; see there why ordinary initialisers cannot
    coincide). Both compare ``|map|`` with Spearman's rank correlation (Quantus with
    ``scipy.stats.spearmanr``); normalising by the maximum would not change ranks, but is off.
    """
    model = fixed_reset_cnn()
    images = seeded(3, 3, SIZE, SIZE, seed=4)
    targets = predicted(model, images)
    layers = [name for name, module in model.named_modules() if hasattr(module, "reset_parameters")][::-1]
    assert layers == ["7", "3", "2", "0"]

    ours = randomization_test(model, images, saliency, target=targets, layers=layers,
                              absolute=True, cascading=cascading, ssim=False)
    mprt = quantus.MPRT(layer_order="top_down" if cascading else "independent", abs=True,
                        normalise=False, disable_warnings=True)
    theirs = mprt(model=model, x_batch=images.numpy(), y_batch=targets.numpy(),
                  a_batch=quantus_explain(model, images.numpy(), targets.numpy()),
                  explain_func=quantus_explain, device="cpu")

    np.testing.assert_allclose(theirs.pop("original"), 1.0)
    assert sorted(theirs) == sorted(layers)  # Quantus goes bottom up when independent: same steps
    expected = np.stack([theirs[name] for name in layers])
    np.testing.assert_allclose(ours.rank_correlation.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert not np.allclose(expected, 1.0)  # the test compares maps that did change


def test_randomization_test_and_mprt_use_different_random_draws_with_ordinary_layers():
    """With PyTorch's own initialisers the two cannot coincide (see :class:`FixedReset`): what is
    compared is what both guarantee. The BatchNorm reset is deterministic in both (weight 1, bias
    0, running statistics 0 and 1), so the correlation does not move at that step in either
    library; and both leave the user's model untouched."""
    model = small_cnn()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    images = seeded(3, 3, SIZE, SIZE, seed=5)
    targets = predicted(model, images)
    layers = ["7", "3", "2", "0"]
    ours = randomization_test(model, images, saliency, target=targets, layers=layers, ssim=False)
    mprt = quantus.MPRT(layer_order="top_down", abs=True, normalise=False, disable_warnings=True)
    theirs = mprt(model=model, x_batch=images.numpy(), y_batch=targets.numpy(),
                  a_batch=quantus_explain(model, images.numpy(), targets.numpy()),
                  explain_func=quantus_explain, device="cpu")
    torch.testing.assert_close(ours.rank_correlation[1], ours.rank_correlation[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(theirs["3"], theirs["7"], rtol=0, atol=1e-12)
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
