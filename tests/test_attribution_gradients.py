"""Rules every attribution method keeps, and hand-checkable answers of the gradient methods.

The rules run over every method: hooks removed, parameter gradients, the input and training
flags untouched, and the same answer whatever ran before (``EVERY_METHOD``); the requested
target explained, a batch = its images one by one, results on the input's device (the map
methods, ``MAP_METHODS``). Add a method to one of the two lists, with cheap options, to hold it
to them. Agreement with Captum is in test_captum_agreement.py.
"""

from __future__ import annotations

import copy
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from saliencylab import SaliencyLabError
from saliencylab.attribution import (
    class_visualization,
    deconvnet,
    fooling_image,
    gradcam,
    guided_backprop,
    guided_gradcam,
    integrated_gradients,
    occlusion,
    saliency,
    smoothgrad,
)
from saliencylab.attribution._base import auto_batch_size
from saliencylab.images import UnknownNameError

MapMethod = Callable[..., torch.Tensor]

# Two steps rarely fool the tiny net; the rules hold either way.
pytestmark = pytest.mark.filterwarnings("ignore:fooling_image did not reach:RuntimeWarning")

# name -> method(model, images, target) with options cheap enough for a tiny CNN.
MAP_METHODS: dict[str, MapMethod] = {
    "saliency": lambda model, images, target=None: saliency(model, images, target),
    "guided_backprop": lambda model, images, target=None: guided_backprop(model, images, target),
    "deconvnet": lambda model, images, target=None: deconvnet(model, images, target),
    "smoothgrad": lambda model, images, target=None: smoothgrad(
        model, images, target, samples=5, batch_size=2, seed=0
    ),
    "gradcam": lambda model, images, target=None: gradcam(model, images, target),
    "guided_gradcam": lambda model, images, target=None: guided_gradcam(model, images, target),
    "integrated_gradients": lambda model, images, target=None: integrated_gradients(
        model, images, target, steps=6, batch_size=4
    ),
    "occlusion": lambda model, images, target=None: occlusion(
        model, images, target, window=8, stride=6, batch_size=4
    ),
}
# name -> method(model, images, target) for the methods that make images, not maps.
IMAGE_METHODS: dict[str, MapMethod] = {
    "fooling_image": lambda model, images, target=1: fooling_image(
        model, images[0], target, max_steps=2
    )[0],
    "class_visualization": lambda model, images, target=1: class_visualization(
        model, target, size=(20, 28), steps=2, progress=False
    ),
}
EVERY_METHOD = {**MAP_METHODS, **IMAGE_METHODS}
GRADIENT_METHODS = [name for name in EVERY_METHOD if name != "occlusion"]
CLASSES = 5


class TinyNet(nn.Module):
    """A small CNN with every ReLU case the methods must handle.

    One in-place ``nn.ReLU`` module called twice (the second time right after ``conv3``, whose
    output it overwrites), an ``nn.ReLU6``, BatchNorm and Dropout (so train mode would change
    the answer).
    """

    def __init__(self, inplace: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.relu = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu6 = nn.ReLU6()
        self.conv3 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv1(x)))
        x = self.relu6(3 * self.conv2(x))  # x3 so that some units saturate at 6
        x = self.relu(self.conv3(x))
        return self.fc(self.dropout(self.pool(x).flatten(1)))


def tiny_net(inplace: bool = True) -> TinyNet:
    torch.manual_seed(0)
    model = TinyNet(inplace)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval and train differ
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture
def tiny() -> TinyNet:
    return tiny_net()


@pytest.fixture
def images() -> torch.Tensor:
    """Three non-square ``[3, 3, 20, 28]`` images in ``[0, 1]``."""
    return torch.rand(3, 3, 20, 28, generator=torch.Generator().manual_seed(1))


HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def assert_no_hooks(model: nn.Module, *tensors: torch.Tensor) -> None:
    for name, module in model.named_modules():
        for hooks in HOOK_DICTS:
            assert not getattr(module, hooks), f"module {name!r} still has {hooks}"
    for tensor in (*tensors, *model.parameters()):
        assert not tensor._backward_hooks, "a tensor hook was left behind"
    global_hooks = torch.nn.modules.module
    assert not global_hooks._global_forward_hooks and not global_hooks._global_backward_hooks


class ExplodeWhenDifferentiating(nn.Module):
    """Raises during any forward pass that builds a graph (after the ReLUs ran)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError("boom")
        return x


method_params = pytest.mark.parametrize("method", MAP_METHODS.values(), ids=MAP_METHODS.keys())
every_method_params = pytest.mark.parametrize(
    "method", EVERY_METHOD.values(), ids=EVERY_METHOD.keys()
)
gradient_method_params = pytest.mark.parametrize(
    "method", [EVERY_METHOD[name] for name in GRADIENT_METHODS], ids=GRADIENT_METHODS
)


# ---------------------------------------------------------------- rule 1: no hooks left


@every_method_params
def test_no_hooks_left_after_a_call(method: MapMethod, tiny: TinyNet, images: torch.Tensor) -> None:
    method(tiny, images, 1)
    assert_no_hooks(tiny, images)


@every_method_params
def test_no_hooks_left_after_a_bad_target(
    method: MapMethod, tiny: TinyNet, images: torch.Tensor
) -> None:
    with pytest.raises(SaliencyLabError, match="out of range"):
        method(tiny, images, CLASSES)
    assert_no_hooks(tiny, images)


@gradient_method_params
def test_no_hooks_left_when_the_forward_raises(method: MapMethod, images: torch.Tensor) -> None:
    model = nn.Sequential(tiny_net(), ExplodeWhenDifferentiating()).eval()
    with pytest.raises(RuntimeError, match="boom"):
        method(model, images, 1)
    assert_no_hooks(model, images)


def test_no_hooks_left_when_the_layer_is_not_in_the_forward(
    tiny: TinyNet, images: torch.Tensor
) -> None:
    unused = nn.Conv2d(8, 8, 1)
    tiny.unused = unused
    for method in (gradcam, guided_gradcam):
        with pytest.raises(SaliencyLabError, match="did not run"):
            method(tiny, images, 1, layer=unused)
    assert_no_hooks(tiny, images)


# ---------------------------------------------------------------- rule 2: nothing else changes


@every_method_params
def test_grads_input_and_training_flags_are_left_as_they_were(
    method: MapMethod, images: torch.Tensor
) -> None:
    model = tiny_net()
    expected = method(model, images, 2)  # in eval mode
    model.train()
    model.bn.eval()  # mixed flags must come back exactly
    model.conv1.weight.grad = torch.full_like(model.conv1.weight, 7.0)
    set_grad = model.conv1.weight.grad
    images.requires_grad_(True)
    images.grad = torch.ones_like(images)

    with pytest.warns(UserWarning, match="train mode"):
        result = method(model, images, 2)

    torch.testing.assert_close(result, expected)  # computed in eval mode: no Dropout
    assert not result.requires_grad
    assert model.conv1.weight.grad is set_grad and bool((set_grad == 7).all())
    assert all(p.grad is None for name, p in model.named_parameters() if name != "conv1.weight")
    assert images.requires_grad and bool((images.grad == 1).all())
    assert [m.training for m in model.modules()] == [m is not model.bn for m in model.modules()]


@every_method_params
def test_input_that_does_not_require_grad_stays_so(
    method: MapMethod, tiny: TinyNet, images: torch.Tensor
) -> None:
    method(tiny, images, 2)
    assert not images.requires_grad and images.grad is None


# ---------------------------------------------------------------- rule 3: order does not matter


@every_method_params
def test_result_does_not_depend_on_what_ran_before(
    method: MapMethod, tiny: TinyNet, images: torch.Tensor
) -> None:
    fresh = method(tiny, images, 3)
    for other in EVERY_METHOD.values():
        other(tiny, images, 1)
    with pytest.raises(RuntimeError, match="boom"):
        guided_backprop(nn.Sequential(tiny, ExplodeWhenDifferentiating()).eval(), images, 1)
    torch.testing.assert_close(method(tiny, images, 3), fresh, rtol=0, atol=0)


def test_saliency_after_guided_backprop_equals_saliency_on_a_fresh_model(
    lite0: nn.Module, chelsea: torch.Tensor
) -> None:
    small = F.interpolate(chelsea, size=96, mode="bilinear", antialias=True)
    fresh = saliency(copy.deepcopy(lite0), small)
    guided_backprop(lite0, small)
    torch.testing.assert_close(saliency(lite0, small), fresh, rtol=0, atol=0)


# ---------------------------------------------------------------- rule 4: the requested target


@method_params
def test_the_requested_target_is_explained(
    method: MapMethod, tiny: TinyNet, images: torch.Tensor
) -> None:
    predicted = tiny(images).argmax(dim=1)
    other = (predicted + 1) % CLASSES
    torch.testing.assert_close(method(tiny, images), method(tiny, images, predicted))
    for_other = method(tiny, images, other)
    assert not torch.allclose(for_other, method(tiny, images, predicted), rtol=1e-3, atol=0)
    for index in range(len(images)):  # an int target explains that class for every image
        alone = method(tiny, images[index : index + 1], int(other[index]))
        torch.testing.assert_close(for_other[index : index + 1], alone, rtol=1e-4, atol=1e-6)


def test_saliency_is_the_gradient_of_the_requested_logit(
    tiny: TinyNet, images: torch.Tensor
) -> None:
    predicted = tiny(images).argmax(dim=1)
    other = (predicted + 2) % CLASSES
    inputs = images.clone().requires_grad_(True)
    tiny(inputs).gather(1, other.view(-1, 1)).sum().backward()
    expected = inputs.grad
    torch.testing.assert_close(saliency(tiny, images, other, reduce=None), expected)
    torch.testing.assert_close(saliency(tiny, images, other), expected.abs().amax(dim=1))


# ---------------------------------------------------------------- rule 5: batch = one by one


@method_params
def test_a_batch_gives_the_maps_of_its_images_one_by_one(
    method: MapMethod, tiny: TinyNet, images: torch.Tensor
) -> None:
    targets = [4, 0, 2]
    batch_maps = method(tiny, images, targets)
    singles = [method(tiny, image, target) for image, target in zip(images, targets)]
    torch.testing.assert_close(batch_maps, torch.stack(singles), rtol=1e-4, atol=1e-6)


@method_params
def test_maps_keep_height_and_width_of_non_square_images(
    method: MapMethod, tiny: TinyNet, images: torch.Tensor
) -> None:
    maps = method(tiny, images)
    assert maps.shape[0] == 3 and maps.shape[-2:] == (20, 28)
    assert maps.dim() == (4 if method is MAP_METHODS["integrated_gradients"] else 3)
    assert maps.dtype == images.dtype and torch.isfinite(maps).all()


# ---------------------------------------------------------------- rule 6: the input's device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@method_params
def test_results_are_on_the_inputs_device(
    method: MapMethod, tiny: TinyNet, images: torch.Tensor
) -> None:
    on_cpu = method(tiny, images, 1)
    on_gpu = method(tiny.cuda(), images.cuda(), 1)
    assert on_gpu.device == images.cuda().device
    if method is not MAP_METHODS["smoothgrad"]:  # a CUDA generator draws other noise
        torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-3, atol=1e-5)


def test_model_and_images_on_different_devices_is_a_clear_error(tiny: TinyNet) -> None:
    with pytest.raises(SaliencyLabError, match="model is on meta but the images are on cpu"):
        saliency(tiny.to("meta"), torch.rand(1, 3, 8, 8))


# ---------------------------------------------------------------- hand-checkable answers


def linear_model(height: int = 4, width: int = 5) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * height * width, CLASSES)).eval()


def test_saliency_of_a_linear_model_is_the_weights_max_abs_over_channels() -> None:
    model = linear_model()
    images = torch.rand(2, 3, 4, 5)
    weights = model[1].weight.detach().view(CLASSES, 3, 4, 5)
    maps = saliency(model, images, [1, 3])
    torch.testing.assert_close(maps, weights[[1, 3]].abs().amax(dim=1))


@pytest.mark.parametrize(
    "method", ["riemann_middle", "riemann_trapezoid", "riemann_left", "riemann_right"]
)
def test_integrated_gradients_of_a_linear_model_is_exact(method: str) -> None:
    model = linear_model()
    images, baseline = torch.rand(2, 3, 4, 5), torch.rand(3, 4, 5)
    weights = model[1].weight.detach().view(CLASSES, 3, 4, 5)
    attributions, error = integrated_gradients(
        model, images, [0, 2], baseline=baseline, steps=3, method=method, return_error=True
    )
    torch.testing.assert_close(attributions, (images - baseline) * weights[[0, 2]])
    assert error.shape == (2,) and error.abs().max() < 1e-5


# A 6-input, 4-hidden-unit MLP on [1, 3, 1, 2] "images". Hidden pre-activations are
# [2, 1, -1, 8]; the target's weights on them are [1, -2, 3, 0.5]. So unit 0 passes under
# every rule; unit 1 (negative gradient) is cut by guided backprop and DeconvNet; unit 2
# (inactive) is passed only by DeconvNet; unit 3 is above 6, so ReLU passes it but ReLU6
# does not (except under DeconvNet, which ignores the forward pass).
HAND_INPUT = torch.tensor([0.1, 0.9, 0.4, 0.7, 0.2, 0.5]).view(1, 3, 1, 2)
HAND_W1 = torch.tensor(
    [
        [1.0, -1.0, 2.0, 0.5, -0.5, 1.0],
        [0.5, 2.0, -1.0, 1.0, 1.5, -2.0],
        [-1.0, 0.5, 1.0, -1.5, 2.0, 0.5],
        [2.0, 1.0, -0.5, 0.5, 1.0, -1.0],
    ]
)
HAND_PRE_ACTIVATIONS = torch.tensor([2.0, 1.0, -1.0, 8.0])
HAND_TARGET_WEIGHTS = torch.tensor([1.0, -2.0, 3.0, 0.5])
HAND_GRADIENT_AT_HIDDEN = {  # what each rule passes back to the hidden pre-activations
    ("guided", "relu"): [1.0, 0.0, 0.0, 0.5],
    ("guided", "relu6"): [1.0, 0.0, 0.0, 0.0],
    ("deconvnet", "relu"): [1.0, 0.0, 3.0, 0.5],
    ("deconvnet", "relu6"): [1.0, 0.0, 3.0, 0.5],
}


def hand_mlp(activation: nn.Module) -> nn.Sequential:
    first, second = nn.Linear(6, 4), nn.Linear(4, 2)
    with torch.no_grad():
        first.weight.copy_(HAND_W1)
        first.bias.copy_(HAND_PRE_ACTIVATIONS - HAND_W1 @ HAND_INPUT.flatten())
        second.weight.copy_(torch.stack([HAND_TARGET_WEIGHTS, -HAND_TARGET_WEIGHTS]))
        second.bias.zero_()
    return nn.Sequential(nn.Flatten(), first, activation, second).eval()


@pytest.mark.parametrize(
    "activation, kind",
    [(nn.ReLU(), "relu"), (nn.ReLU(inplace=True), "relu"), (nn.ReLU6(), "relu6"),
     (nn.ReLU6(inplace=True), "relu6")],
    ids=["relu", "relu_inplace", "relu6", "relu6_inplace"],
)
@pytest.mark.parametrize("rule, method", [("guided", guided_backprop), ("deconvnet", deconvnet)])
def test_relu_rules_by_hand(activation: nn.Module, kind: str, rule: str, method: MapMethod) -> None:
    model = hand_mlp(activation)
    expected = HAND_W1.T @ torch.tensor(HAND_GRADIENT_AT_HIDDEN[rule, kind])
    maps = method(model, HAND_INPUT, 0, reduce=None)
    torch.testing.assert_close(maps.flatten(), expected)


class SharedReluMLP(nn.Module):
    """Two hidden layers; ``shared=True`` uses one ReLU module for both."""

    def __init__(self, shared: bool) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.layers = nn.ModuleList([nn.Linear(12, 16), nn.Linear(16, 16), nn.Linear(16, 3)])
        self.relu1 = nn.ReLU(inplace=True)
        self.relu2 = self.relu1 if shared else nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.layers[0](x.flatten(1)))
        return self.layers[2](self.relu2(self.layers[1](x)))


@pytest.mark.parametrize("method", [guided_backprop, deconvnet])
def test_a_relu_module_used_twice_gets_one_mask_per_call(method: MapMethod) -> None:
    images = torch.rand(4, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    shared = method(SharedReluMLP(shared=True).eval(), images, 1, reduce=None)
    separate = method(SharedReluMLP(shared=False).eval(), images, 1, reduce=None)
    torch.testing.assert_close(shared, separate)
    plain = saliency(SharedReluMLP(shared=True).eval(), images, 1, reduce=None)
    assert not torch.allclose(shared, plain)


class ReluInputUsedTwice(nn.Module):
    """``out = w2 . relu(h) + w3 . h``: the ReLU's input also feeds a skip connection."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.hidden, self.through_relu = nn.Linear(6, 5), nn.Linear(5, 2)
        self.skip = nn.Linear(5, 2)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hidden(x.flatten(1))
        return self.through_relu(self.relu(h)) + self.skip(h)


@pytest.mark.parametrize("rule, method", [("guided", guided_backprop), ("deconvnet", deconvnet)])
def test_the_rule_leaves_other_paths_from_the_relu_input_alone(
    rule: str, method: MapMethod
) -> None:
    model = ReluInputUsedTwice().eval()
    h = model.hidden(HAND_INPUT.flatten(1))[0].detach()
    through = model.through_relu.weight[0].detach().clamp(min=0)
    if rule == "guided":
        through = through * (h > 0)
    expected = model.hidden.weight.detach().T @ (through + model.skip.weight[0].detach())
    torch.testing.assert_close(method(model, HAND_INPUT, 0, reduce=None).flatten(), expected)


class FunctionalRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize("method", [guided_backprop, deconvnet])
def test_relu_rules_refuse_models_without_relu_modules(method: MapMethod) -> None:
    model = FunctionalRelu().eval()
    with pytest.raises(SaliencyLabError, match="F.relu"):
        method(model, torch.rand(1, 3, 8, 8), 0)
    model.unused = nn.ReLU()  # defined but never called: still no ReLU whose rule applies
    with pytest.raises(SaliencyLabError, match="F.relu"):
        method(model, torch.rand(1, 3, 8, 8), 0)
    assert_no_hooks(model)


def test_relu_rules_warn_that_other_activations_keep_their_gradient() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.SiLU(), nn.Linear(4, 2))
    with pytest.warns(UserWarning, match="SiLU: their gradient is passed back unchanged"):
        guided_backprop(model.eval(), HAND_INPUT, 0)


# ---------------------------------------------------------------- Grad-CAM


class MeanIntensity(nn.Module):
    """logit 0 = mean of a 4x4-average-pooled grey image; the pooled map is Grad-CAM's layer."""

    def __init__(self) -> None:
        super().__init__()
        self.grey = nn.Conv2d(3, 1, 1, bias=False)
        self.pooled = nn.AvgPool2d(4)
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.grey.weight.fill_(1 / 3)
            self.fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pooled(self.grey(x)).mean(dim=(2, 3)))


def test_gradcam_by_hand_on_a_non_square_image() -> None:
    model = MeanIntensity().eval()
    image = torch.zeros(1, 3, 160, 224)
    image[:, :, 8:40, 150:220] = 1.0  # a bright patch, top right
    # d logit0 / d pooled = 1 / (40 * 56) everywhere, so Grad-CAM = pooled map / (40 * 56).
    pooled = F.avg_pool2d(image.mean(dim=1, keepdim=True), 4) / (40 * 56)
    expected = F.interpolate(pooled, size=(160, 224), mode="bilinear", align_corners=False)[:, 0]
    cam = gradcam(model, image, 0, layer=model.pooled)
    assert cam.shape == (1, 160, 224)
    torch.testing.assert_close(cam, expected)
    assert cam[0, :80, 112:].sum() > 0.99 * cam.sum()  # top right, not transposed
    assert gradcam(model, image, 1, layer=model.pooled).abs().max() == 0  # ReLU of a negative map


def test_gradcam_ignores_an_in_place_relu_after_its_layer(images: torch.Tensor) -> None:
    in_place, out_of_place = tiny_net(inplace=True), tiny_net(inplace=False)
    for method in (gradcam, guided_gradcam):
        expected = method(out_of_place, images, 2, layer=out_of_place.conv3)
        torch.testing.assert_close(method(in_place, images, 2, layer=in_place.conv3), expected)


class FailingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the backward pass went below Grad-CAM's layer")


class BackwardTrap(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return FailingBackward.apply(x)


def test_gradcam_backward_stops_at_the_layer(tiny: TinyNet, images: torch.Tensor) -> None:
    trapped = nn.Sequential(BackwardTrap(), tiny).eval()
    with pytest.raises(AssertionError, match="below"):
        saliency(trapped, images, 1)
    expected = gradcam(tiny, images, 1, layer=tiny.conv2)
    torch.testing.assert_close(gradcam(trapped, images, 1, layer=tiny.conv2), expected)


def test_gradcam_layer_errors(tiny: TinyNet, images: torch.Tensor) -> None:
    with pytest.raises(SaliencyLabError, match="ran 2 times"):
        gradcam(tiny, images, 1, layer=tiny.relu)
    with pytest.raises(SaliencyLabError, match=r"\[N, C, h, w\]"):
        gradcam(tiny, images, 1, layer=tiny.fc)
    with pytest.raises(SaliencyLabError, match="layer must be a module"):
        gradcam(tiny, images, 1, layer=3)
    with pytest.raises(UnknownNameError, match="Did you mean 'conv3'"):
        gradcam(tiny, images, 1, layer="cnov3")
    assert_no_hooks(tiny, images)


def test_gradcam_layer_by_name_is_the_module_of_that_name(tiny: TinyNet, images: torch.Tensor) -> None:
    by_module = gradcam(tiny, images, 1, layer=tiny.conv3)
    torch.testing.assert_close(gradcam(tiny, images, 1, layer="conv3"), by_module)
    torch.testing.assert_close(
        guided_gradcam(tiny, images, 1, layer="conv3"),
        guided_gradcam(tiny, images, 1, layer=tiny.conv3),
    )


def test_gradcam_at_the_default_layer_of_lite0(lite0: nn.Module, chelsea: torch.Tensor) -> None:
    cam = gradcam(lite0, chelsea)
    assert cam.shape == (1, 224, 224) and cam.max() > 0
    wide = chelsea[:, :, 32:192, :]  # 160 x 224
    cam = gradcam(lite0, wide[0])
    assert cam.shape == (160, 224) and cam.max() > 0


# ---------------------------------------------------------------- SmoothGrad


class RecordingNet(TinyNet):
    """TinyNet that keeps every batch it is run on."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return super().forward(x)


def test_smoothgrad_is_reproducible_with_a_seed_or_a_generator(
    tiny: TinyNet, images: torch.Tensor
) -> None:
    first = smoothgrad(tiny, images, 1, samples=4, seed=5)
    again = smoothgrad(tiny, images, 1, samples=4, seed=5)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    generator = torch.Generator().manual_seed(5)
    torch.testing.assert_close(smoothgrad(tiny, images, 1, samples=4, generator=generator), first)
    assert not torch.allclose(smoothgrad(tiny, images, 1, samples=4, seed=6), first)
    with pytest.raises(SaliencyLabError, match="not both"):
        smoothgrad(tiny, images, 1, seed=1, generator=torch.Generator())


def test_smoothgrad_noise_is_a_fraction_of_each_images_range() -> None:
    model = RecordingNet().eval()
    image = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(2))
    dim = 0.2 + 0.5 * image  # range halved
    smoothgrad(model, torch.cat([image, dim]), 0, samples=8, noise_level=0.1, batch_size=8, seed=0)
    noisy = torch.cat(model.seen[1:])  # seen[0]: the target's range check
    noise_full, noise_half = noisy[:8] - image, noisy[8:] - dim
    expected_std = 0.1 * (image.max() - image.min())
    assert abs(noise_full.std() / expected_std - 1) < 0.02
    torch.testing.assert_close(noise_half, 0.5 * noise_full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "call",
    [
        lambda model, x: smoothgrad(model, x, 0, samples=7, batch_size=3, seed=0),
        lambda model, x: integrated_gradients(model, x, 0, steps=7, batch_size=3),
    ],
    ids=["smoothgrad", "integrated_gradients"],
)
def test_memory_is_bounded_by_batch_size_not_by_samples(call: MapMethod) -> None:
    model = RecordingNet().eval()
    call(model, torch.rand(2, 3, 20, 28))
    sizes = [len(batch) for batch in model.seen]  # sizes[0]: the target's range check
    assert max(sizes[1:]) <= 3 and sum(sizes[1:]) == 2 * 7


def test_smoothgrad_variants(tiny: TinyNet, images: torch.Tensor) -> None:
    options = dict(samples=6, seed=3, reduce=None)
    mean = smoothgrad(tiny, images, 1, variant="mean", **options)
    squared = smoothgrad(tiny, images, 1, variant="squared", **options)
    vargrad = smoothgrad(tiny, images, 1, variant="vargrad", **options)
    torch.testing.assert_close(vargrad, squared - mean.square(), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(smoothgrad(tiny, images, 1, variant="smoothgrad", **options), mean)
    torch.testing.assert_close(smoothgrad(tiny, images, 1, variant="smoothgrad_sq", **options), squared)
    assert (vargrad >= 0).all() and (squared >= mean.square() - 1e-7).all()
    no_noise = smoothgrad(tiny, images, 1, samples=3, noise_level=0.0, reduce=None)
    torch.testing.assert_close(no_noise, saliency(tiny, images, 1, reduce=None))


# ---------------------------------------------------------------- Integrated Gradients


def test_integrated_gradients_reports_its_completeness_error(
    tiny: TinyNet, images: torch.Tensor
) -> None:
    options = dict(steps=8, baseline=0.5, return_error=True)
    attributions, error = integrated_gradients(tiny, images, 1, **options)
    with torch.no_grad():
        change = tiny(images)[:, 1] - tiny(torch.full_like(images, 0.5))[:, 1]
    torch.testing.assert_close(error, attributions.sum(dim=(1, 2, 3)) - change)
    summed = integrated_gradients(tiny, images, 1, steps=8, baseline=0.5, reduce="sum")
    torch.testing.assert_close(summed.sum(dim=(1, 2)), attributions.sum(dim=(1, 2, 3)))
    single, single_error = integrated_gradients(tiny, images[0], 1, **options)
    assert single.shape == (3, 20, 28) and single_error.shape == ()


class SmoothNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.act, self.fc = nn.Conv2d(3, 8, 3), nn.Softplus(), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(4 * self.conv(x)).mean(dim=(2, 3)))


def test_integrated_gradients_error_shrinks_with_more_steps() -> None:
    model, image = SmoothNet().eval(), torch.rand(1, 3, 10, 12)
    errors = [
        integrated_gradients(model, image, 0, steps=steps, return_error=True)[1].abs().item()
        for steps in (2, 8, 32)
    ]
    assert errors[0] > 4 * errors[1] > 16 * errors[2]  # midpoint rule: error ~ 1 / steps^2


def test_integrated_gradients_baselines(tiny: TinyNet, images: torch.Tensor) -> None:
    grey = integrated_gradients(tiny, images, 1, baseline=0.3, steps=4)
    as_image = integrated_gradients(tiny, images, 1, baseline=torch.full((3, 20, 28), 0.3), steps=4)
    torch.testing.assert_close(grey, as_image)
    black = integrated_gradients(tiny, images, 1, steps=4)
    torch.testing.assert_close(black, integrated_gradients(tiny, images, 1, baseline=0, steps=4))
    itself = integrated_gradients(tiny, images, 1, baseline=images, steps=4)
    assert itself.abs().max() == 0
    with pytest.raises(SaliencyLabError, match="baseline must be"):
        integrated_gradients(tiny, images, 1, baseline=torch.zeros(3, 8, 8))


# ---------------------------------------------------------------- argument checks


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, x: saliency(m, x, reduce="mean"), "reduce must be one of"),
        (lambda m, x: smoothgrad(m, x, samples=0), "samples must be an int >= 1"),
        (lambda m, x: smoothgrad(m, x, batch_size=0), "batch_size must be"),
        (lambda m, x: smoothgrad(m, x, noise_level=-0.1), "noise_level"),
        (lambda m, x: smoothgrad(m, x, variant="max"), "variant must be one of"),
        (lambda m, x: integrated_gradients(m, x, steps=0), "steps must be"),
        (
            lambda m, x: integrated_gradients(m, x, steps=1, method="riemann_trapezoid"),
            "steps must be an int >= 2",
        ),
        (lambda m, x: integrated_gradients(m, x, method="simpson"), "method must be one of"),
        (lambda m, x: guided_gradcam(m, x, reduce="median"), "reduce must be one of"),
        (lambda m, x: gradcam(m, x, target=[1, 2]), "entries but there are 3 images"),
    ],
)
def test_bad_options_are_clear_errors(
    call: Callable[[nn.Module, torch.Tensor], object],
    message: str,
    tiny: TinyNet,
    images: torch.Tensor,
) -> None:
    with pytest.raises(SaliencyLabError, match=message):
        call(tiny, images)
    assert_no_hooks(tiny, images)


# ---------------------------------------------------------------- default batch size


def test_default_batch_size_keeps_the_largest_activation_under_the_budget(lite0: nn.Module) -> None:
    alexnet = torchvision.models.alexnet().eval()  # random weights: only the shapes matter
    image = torch.rand(1, 3, 224, 224)
    assert auto_batch_size(lite0, image) == 8  # the fastest batch measured in bench/
    assert auto_batch_size(alexnet, image) == 54  # small activations: big batches pay off
    assert 32 <= auto_batch_size(lite0, torch.rand(1, 3, 112, 112)) <= 34  # a quarter of the pixels
    assert_no_hooks(alexnet, image)
    assert_no_hooks(lite0, image)


def test_the_default_batch_size_gives_the_same_maps_as_an_explicit_one(
    tiny: TinyNet, images: torch.Tensor
) -> None:
    for method, options in ((smoothgrad, dict(samples=10, seed=1)), (integrated_gradients, dict(steps=10))):
        torch.testing.assert_close(
            method(tiny, images, 1, **options), method(tiny, images, 1, batch_size=3, **options)
        )
    with pytest.raises(SaliencyLabError, match="batch_size must be an int >= 1"):
        smoothgrad(tiny, images, 1, samples=4, batch_size=0)
