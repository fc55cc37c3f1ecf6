"""saliencylab's gradient methods give Captum 0.9's answers (relative error <= 1e-4).

Relative error = ||ours - captum|| / ||captum|| over the whole batch. Models: the ImageNet
EfficientNet-Lite0 (ReLU6, one ReLU6 module reused inside each block) on two photos at 96x96,
and random-weight torchvision VGG11, AlexNet (in-place ReLUs) and ResNet18 (an in-place ReLU
module called twice per block) on the same photos at 64x64. Each batch has one image explained
for its predicted class and one for another class.

How the two sides are made comparable:
* Guided backprop / DeconvNet / Guided Grad-CAM: Captum only hooks ``nn.ReLU``, so on Lite0 it
  silently returns plain gradients. Captum runs on a copy of Lite0 whose ``ReLU6`` modules are
  replaced by an ``nn.ReLU`` subclass computing ``relu6``: Captum then applies its rule
  (``relu(grad_input)`` / ``relu(grad_output)``) to the real ReLU6 backward.
* Grad-CAM: ``LayerGradCam(relu_attributions=True)`` upsampled by
  ``LayerAttribution.interpolate(..., "bilinear")``; Guided Grad-CAM with
  ``interpolate_mode="bilinear"`` and ``reduce=None`` (Captum returns ``[B, 3, H, W]``).
* Integrated Gradients: Captum's ``method="riemann_middle"`` and ``"gausslegendre"`` with the
  same steps. Both put the path points at the same float32 positions; that matters on Lite0, whose gradient
  jumps at ReLU6 kinks: path points 1e-8 apart (float64 midpoints) moved the result by 2e-4.
* SmoothGrad: NoiseTunnel's ``stdevs`` is absolute, so it gets ``noise_level * (max - min)``;
  both draw their noise from torch's global RNG in the same order and chunks (one image,
  ``nt_samples_batch_size`` = our ``batch_size``), so after the same ``torch.manual_seed``
  the noise is bit-identical.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    GuidedGradCam,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Saliency,
)
from torch import nn

from saliencylab.attribution import (
    deconvnet,
    gradcam,
    guided_backprop,
    guided_gradcam,
    integrated_gradients,
    saliency,
    smoothgrad,
)
from saliencylab.images import sample_image, to_tensor
from saliencylab.models import default_layer, load_model

pytestmark = [
    pytest.mark.filterwarnings("ignore:Setting backward hooks:UserWarning"),
    pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require:UserWarning"),
]

TOLERANCE = 1e-4
MODEL_NAMES = ("efficientnet_lite0", "vgg11", "alexnet", "resnet18")
IMAGE_SIZE = {"efficientnet_lite0": 96, "vgg11": 64, "alexnet": 64, "resnet18": 64}
# Uneven on purpose, so that the last mini-batch is a short one.
STEPS, IG_BATCH_SIZE = 5, 4
SAMPLES, NOISE_BATCH_SIZE, NOISE_LEVEL = 3, 2, 0.15


class CaptumVisibleReLU6(nn.ReLU):
    """ReLU6 that Captum recognises (it hooks ``isinstance(module, nn.ReLU)`` only)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x, inplace=self.inplace)


def with_relu6_visible_to_captum(model: nn.Module) -> nn.Module:
    copied = copy.deepcopy(model)
    for parent in copied.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU6):
                setattr(parent, name, CaptumVisibleReLU6(inplace=child.inplace))
    return copied


@dataclass
class Setup:
    """A model, its Captum twin, a batch, per-image targets and the Grad-CAM layers to try."""

    model: nn.Module
    captum_model: nn.Module
    images: torch.Tensor
    targets: list[int]
    layer_names: list[str] = field(default_factory=list)

    def layers(self, name: str) -> tuple[nn.Module, nn.Module]:
        return self.model.get_submodule(name), self.captum_model.get_submodule(name)


def photos(size: int) -> torch.Tensor:
    """Chelsea the cat and a coffee cup, ``[2, 3, size, size]``."""
    full = torch.cat([to_tensor(sample_image(name)) for name in ("chelsea", "coffee")])
    return F.interpolate(full, size=size, mode="bilinear", antialias=True).clamp(0, 1)


def module_name(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, candidate in model.named_modules() if candidate is module)


def last_conv_before_an_in_place_relu(model: nn.Module) -> str | None:
    modules = list(model.named_modules())
    pairs = zip(modules, modules[1:])
    found = [
        name
        for (name, module), (_, following) in pairs
        if isinstance(module, nn.Conv2d) and isinstance(following, nn.ReLU) and following.inplace
    ]
    return found[-1] if found else None


@pytest.fixture(scope="module", params=MODEL_NAMES)
def setup(request: pytest.FixtureRequest) -> Setup:
    name = request.param
    if name == "efficientnet_lite0":
        model = request.getfixturevalue("lite0")
    else:
        model = load_model(name, pretrained=False, seed=0)
    images = photos(IMAGE_SIZE[name])
    with torch.no_grad():
        predicted = model(images).argmax(dim=1).tolist()
    targets = [predicted[0], (predicted[1] + 1) % 1000]
    layer_names = [module_name(model, default_layer(model))]
    conv = last_conv_before_an_in_place_relu(model)
    if conv is not None and name != "resnet18":  # VGG/AlexNet: the in-place overwrite trap
        layer_names.append(conv)
    return Setup(model, with_relu6_visible_to_captum(model), images, targets, layer_names)


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    assert ours.shape == theirs.shape
    assert theirs.norm() > 0, "the reference is all zeros: the comparison would prove nothing"
    return ((ours.double() - theirs.double()).norm() / theirs.double().norm()).item()


# ---------------------------------------------------------------- the comparisons

Pair = tuple[torch.Tensor, torch.Tensor]


def compare_saliency(s: Setup) -> list[Pair]:
    theirs = Saliency(s.model).attribute(s.images.clone(), target=s.targets, abs=True)
    return [(saliency(s.model, s.images, s.targets), theirs.amax(dim=1))]


def compare_guided_backprop(s: Setup) -> list[Pair]:
    theirs = GuidedBackprop(s.captum_model).attribute(s.images.clone(), target=s.targets)
    return [(guided_backprop(s.model, s.images, s.targets, reduce=None), theirs)]


def compare_deconvnet(s: Setup) -> list[Pair]:
    theirs = Deconvolution(s.captum_model).attribute(s.images.clone(), target=s.targets)
    return [(deconvnet(s.model, s.images, s.targets, reduce=None), theirs)]


def compare_gradcam(s: Setup) -> list[Pair]:
    pairs = []
    for name in s.layer_names:
        layer, _ = s.layers(name)
        coarse = LayerGradCam(s.model, layer).attribute(
            s.images.clone(), target=s.targets, relu_attributions=True
        )
        theirs = LayerAttribution.interpolate(coarse, s.images.shape[-2:], "bilinear")[:, 0]
        pairs.append((gradcam(s.model, s.images, s.targets, layer=layer), theirs))
    return pairs


def compare_guided_gradcam(s: Setup) -> list[Pair]:
    layer, captum_layer = s.layers(s.layer_names[-1])  # VGG/AlexNet: the in-place trap
    theirs = GuidedGradCam(s.captum_model, captum_layer).attribute(
        s.images.clone(), target=s.targets, interpolate_mode="bilinear"
    )
    return [(guided_gradcam(s.model, s.images, s.targets, layer=layer, reduce=None), theirs)]


def compare_integrated_gradients(s: Setup, method: str = "riemann_middle") -> list[Pair]:
    theirs = IntegratedGradients(s.model).attribute(
        s.images.clone(), target=s.targets, n_steps=STEPS, method=method
    )
    ours = integrated_gradients(
        s.model, s.images, s.targets, steps=STEPS, batch_size=IG_BATCH_SIZE, method=method
    )
    return [(ours, theirs)]


def noise_tunnel_pair(s: Setup, variant: str, nt_type: str) -> Pair:
    image, target = s.images[1:], s.targets[1]
    stdev = float(NOISE_LEVEL * (image.max() - image.min()))
    captum = NoiseTunnel(Saliency(s.model))
    with torch.random.fork_rng(devices=[]):  # the global RNG is left as it was
        torch.manual_seed(7)
        theirs = captum.attribute(
            image.clone(), nt_type=nt_type, nt_samples=SAMPLES,
            nt_samples_batch_size=NOISE_BATCH_SIZE, stdevs=stdev, target=target, abs=False,
        )
        torch.manual_seed(7)
        ours = smoothgrad(
            s.model, image, target, samples=SAMPLES, noise_level=NOISE_LEVEL,
            batch_size=NOISE_BATCH_SIZE, variant=variant, reduce=None,
        )
    return ours, theirs


COMPARISONS: dict[str, Callable[[Setup], list[Pair]]] = {
    "saliency": compare_saliency,
    "guided_backprop": compare_guided_backprop,
    "deconvnet": compare_deconvnet,
    "gradcam": compare_gradcam,
    "guided_gradcam": compare_guided_gradcam,
    "integrated_gradients": compare_integrated_gradients,
    "integrated_gradients_gausslegendre": lambda s: compare_integrated_gradients(s, "gausslegendre"),
    "smoothgrad": lambda s: [noise_tunnel_pair(s, "mean", "smoothgrad")],
    "smoothgrad_squared": lambda s: [noise_tunnel_pair(s, "squared", "smoothgrad_sq")],
    "vargrad": lambda s: [noise_tunnel_pair(s, "vargrad", "vargrad")],
}


@pytest.mark.parametrize("method", COMPARISONS)
def test_agrees_with_captum(setup: Setup, method: str) -> None:
    for ours, theirs in COMPARISONS[method](setup):
        error = relative_error(ours, theirs)
        assert error <= TOLERANCE, f"{method}: relative error {error:.2e} against Captum"


def test_captum_guided_backprop_misses_relu6_but_ours_does_not(lite0: nn.Module) -> None:
    images, targets = photos(96), [281, 967]
    plain = saliency(lite0, images, targets, reduce=None)
    captum_unmodified = GuidedBackprop(lite0).attribute(images.clone(), target=targets)
    assert relative_error(captum_unmodified, plain) < 1e-5  # Captum: just the gradient
    assert relative_error(guided_backprop(lite0, images, targets, reduce=None), plain) > 0.5
