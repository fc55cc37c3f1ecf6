"""Incremental occlusion: recompute only what a window changes (Nakandala, Kumar &
Papakonstantinou, SIGMOD 2019, "Incremental and Approximate Inference for Faster
Occlusion-based Deep CNN Explanations"). Exact: the same logits as the full forward pass.

An occluded image differs from the clean one only inside its window, so in every layer only
the positions whose receptive field touches the window can differ from the clean activations.
The clean image runs once, and each layer's input is cached. Then a batch of occluded copies
travels through the network as a :class:`Patch`: per copy, a box of the layer's map and the
activations inside it (everything outside the box is the clean activation).

* An elementwise layer (ReLU, batch-norm in eval mode, ``Normalize``) acts on the patch alone.
* A convolution or pooling layer (:class:`Window`) computes only the outputs whose receptive
  field touches the box, from a crop of its cached input with the patch pasted in, padded as
  the layer pads.
* A residual block adds its two paths' patches over their common box.

Once a box covers the whole map, the patch *is* the full activation and the same code runs on
it. Where the spatial part of the network ends (global pooling, a flatten, or any layer this
module does not know, e.g. squeeze-excitation or attention, which mix the whole map) each patch
is pasted into its clean map and the rest of the model runs as usual::

    plan = build_plan(model)                # None + the reason for a model it cannot walk
    logits, cache = plan.run_clean(image)   # [1, 3, H, W]
    patch = occluded_patch(image, fill, corners, window)
    logits = plan.run_patched(cache, patch) # [n, classes], one row per occluded copy

The model is walked as a chain of modules: ``nn.Sequential`` (EfficientNet-Lite0 as
``saliencylab.models`` exposes it, the digits CNN, VGG's ``features``), torchvision's VGG,
AlexNet and ResNet (their ``forward`` is such a chain), ResNet's basic/bottleneck blocks and
Lite0's MBConv blocks (without squeeze-excitation) as residual units.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from saliencylab._core import HookSet

Pair = tuple[int, int]
Cache = dict


# ------------------------------------------------------------------------------ the patch


@dataclass
class Patch:
    """``n`` occluded copies of one image at one layer: its clean map, except inside a box.

    values: ``[n, C, h, w]``, each copy's activations inside its box (all boxes ``h x w``).
    tops, lefts: ``n`` ints each, the boxes' corners in the layer's map.
    size: ``(H, W)`` of the layer's map.
    """

    values: torch.Tensor
    tops: list[int]
    lefts: list[int]
    size: Pair

    @property
    def box(self) -> Pair:
        return self.values.shape[-2], self.values.shape[-1]

    @property
    def covers_map(self) -> bool:
        return self.box == tuple(self.size)


def occluded_patch(
    image: torch.Tensor, fill: torch.Tensor, corners: list[Pair], window: Pair
) -> Patch:
    """The input patch of ``image [1, 3, H, W]`` with one window per copy set to ``fill``.

    A window clipped at the border (Captum's last window) gets a full-size box moved back
    inside the image; the part of the box outside the window keeps the clean pixels.
    """
    (height, width), (wh, ww) = image.shape[-2:], window
    tops = [min(y, height - wh) for y, _ in corners]
    lefts = [min(x, width - ww) for _, x in corners]
    values = torch.stack([image[0, :, t : t + wh, l : l + ww] for t, l in zip(tops, lefts)])
    for row, ((y, x), t, l) in enumerate(zip(corners, tops, lefts)):
        values[row, :, y - t :, x - l :] = fill[0, :, y : y + wh, x : x + ww]
    return Patch(values, tops, lefts, (height, width))


def _crop(
    source: torch.Tensor,
    patch: Patch,
    tops: list[int],
    lefts: list[int],
    box: Pair,
    offset: Pair = (0, 0),
    fill: float = 0.0,
) -> torch.Tensor:
    """Boxes of a clean map with the patch pasted in: ``[n, C, h, w]``.

    source: ``[1, C, H + pads, W + pads]``, the clean map, padded with ``fill`` by ``offset``
        at the top and left (and by what the layer needs at the bottom and right).
    tops, lefts: each copy's box corner in ``source``'s coordinates; ``box``: ``(h, w)``.
    """
    (h, w), (oy, ox) = box, offset
    if patch.covers_map and len(set(tops)) == len(set(lefts)) == 1:
        # the patch is the full map: pad it as the source was padded, no clean pixels needed
        below, right = source.shape[-2] - patch.size[0] - oy, source.shape[-1] - patch.size[1] - ox
        canvas = F.pad(patch.values, (ox, right, oy, below), value=fill)
        return canvas[:, :, tops[0] : tops[0] + h, lefts[0] : lefts[0] + w]
    crops = torch.empty((len(tops), source.shape[1], h, w), dtype=source.dtype,
                        device=source.device, memory_format=_layout(source))
    for row, (t, l) in enumerate(zip(tops, lefts)):
        crops[row] = source[0, :, t : t + h, l : l + w]
    (ph, pw) = patch.box
    for row, (t, l, pt, pl) in enumerate(zip(tops, lefts, patch.tops, patch.lefts)):
        y0, y1 = max(t, pt + oy), min(t + h, pt + oy + ph)
        x0, x1 = max(l, pl + ox), min(l + w, pl + ox + pw)
        if y0 < y1 and x0 < x1:
            crops[row, :, y0 - t : y1 - t, x0 - l : x1 - l] = patch.values[
                row, :, y0 - pt - oy : y1 - pt - oy, x0 - pl - ox : x1 - pl - ox
            ]
    return crops


def _layout(x: torch.Tensor) -> torch.memory_format:
    """channels_last for a channels_last map (the faster layout for CPU convolutions)."""
    if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return torch.contiguous_format
    return torch.channels_last


# ------------------------------------------------------------------------------ geometry


def _affected(
    starts: list[int], length: int, kernel: int, stride: int, pad: int, dilation: int, size: int
) -> tuple[list[int], int]:
    """Along one axis: the outputs of a window layer whose receptive field touches each copy's
    input span ``[start, start + length)``, as each copy's first output and one common count."""
    reach = dilation * (kernel - 1)
    firsts = [max(0, -((reach - pad - start) // stride)) for start in starts]
    lasts = [min(size - 1, (start + length - 1 + pad) // stride) for start in starts]
    return _common_box(firsts, lasts, size)


def _common_box(firsts: list[int], lasts: list[int], size: int) -> tuple[list[int], int]:
    """One length for all copies (the longest span), spans moved back inside ``[0, size)``."""
    count = max(1, max(last - first + 1 for first, last in zip(firsts, lasts)))
    return [min(first, size - count) for first in firsts], count


# ------------------------------------------------------------------------------ the layers


@dataclass(eq=False)
class Pointwise:
    """An elementwise layer: each output position depends on the same input position only."""

    name: str
    layer: nn.Module

    def clean(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        return self.layer(x)

    def patched(self, patch: Patch, cache: Cache, trace: Optional[list]) -> Patch:
        return replace(patch, values=self.layer(patch.values))


@dataclass(eq=False)
class Window:
    """A convolution or pooling layer: each output reads a (strided, dilated) kernel window.

    ``on_crop`` is the layer without its own padding: the crops arrive padded with ``fill``.
    """

    name: str
    layer: Callable[[torch.Tensor], torch.Tensor]
    on_crop: Callable[[torch.Tensor], torch.Tensor]
    kernel: Pair
    stride: Pair
    padding: Pair  # before (top, left); the bottom/right padding follows from the output size
    dilation: Pair
    fill: float
    macs_per_output: int  # multiply-adds per output position (0 for pooling)

    def clean(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        """``x [1, C, H, W]`` -> the layer's output; caches ``x`` padded for later crops."""
        out = self.layer(x)
        after = [
            max(0, (n_out - 1) * s - p + d * (k - 1) + 1 - n_in)
            for n_in, n_out, k, s, p, d in zip(
                x.shape[-2:], out.shape[-2:], self.kernel, self.stride, self.padding, self.dilation
            )
        ]
        pads = (self.padding[1], after[1], self.padding[0], after[0])
        cache[self] = (F.pad(x, pads, value=self.fill), tuple(out.shape[-2:]))
        return out

    def patched(self, patch: Patch, cache: Cache, trace: Optional[list]) -> Patch:
        source, size = cache[self]
        geometry = list(zip(self.kernel, self.stride, self.padding, self.dilation, size))
        tops, h = _affected(patch.tops, patch.box[0], *geometry[0])
        lefts, w = _affected(patch.lefts, patch.box[1], *geometry[1])
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        crop_box = ((h - 1) * sh + dh * (kh - 1) + 1, (w - 1) * sw + dw * (kw - 1) + 1)
        crops = _crop(source, patch, [t * sh for t in tops], [l * sw for l in lefts], crop_box,
                      offset=self.padding, fill=self.fill)
        out = self.on_crop(crops)
        if trace is not None:
            largest = max(crops[0].numel(), out[0].numel()) * out.element_size()
            trace.append(Recomputed(self.name, h * w, size[0] * size[1], self.macs_per_output,
                                    largest))
        return Patch(out, tops, lefts, size)


@dataclass(eq=False)
class Residual:
    """``post(main(x) + shortcut(x))``: a ResNet block, or an MBConv block with its skip."""

    name: str
    main: list
    shortcut: list  # empty: the identity
    post: list

    def clean(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        main, shortcut = run_clean(self.main, x, cache), run_clean(self.shortcut, x, cache)
        cache[self] = (main, shortcut)
        return run_clean(self.post, main + shortcut, cache)

    def patched(self, patch: Patch, cache: Cache, trace: Optional[list]) -> Patch:
        main = run_patched(self.main, patch, cache, trace)
        shortcut = run_patched(self.shortcut, patch, cache, trace)
        (tops, h), (lefts, w) = _union(main, shortcut, 0), _union(main, shortcut, 1)
        clean_main, clean_shortcut = cache[self]
        total = _crop(clean_main, main, tops, lefts, (h, w)) + _crop(
            clean_shortcut, shortcut, tops, lefts, (h, w)
        )
        return run_patched(self.post, Patch(total, tops, lefts, main.size), cache, trace)


def _union(a: Patch, b: Patch, axis: int) -> tuple[list[int], int]:
    """Along one axis (0 rows, 1 columns): per copy, the span covering both patches' boxes."""
    starts_a, starts_b = (a.tops, b.tops) if axis == 0 else (a.lefts, b.lefts)
    firsts = [min(p, q) for p, q in zip(starts_a, starts_b)]
    lasts = [max(p + a.box[axis], q + b.box[axis]) - 1 for p, q in zip(starts_a, starts_b)]
    return _common_box(firsts, lasts, a.size[axis])


@dataclass(eq=False)
class Chain:
    """Layers one after the other (a block without a skip connection)."""

    name: str
    nodes: list

    def clean(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        return run_clean(self.nodes, x, cache)

    def patched(self, patch: Patch, cache: Cache, trace: Optional[list]) -> Patch:
        return run_patched(self.nodes, patch, cache, trace)


Node = Union[Pointwise, Window, Residual, Chain]


def run_clean(nodes: list[Node], x: torch.Tensor, cache: Cache) -> torch.Tensor:
    for node in nodes:
        x = node.clean(x, cache)
    return x


def run_patched(nodes: list[Node], patch: Patch, cache: Cache, trace: Optional[list]) -> Patch:
    for node in nodes:
        patch = node.patched(patch, cache, trace)
    return patch


@dataclass(frozen=True)
class Recomputed:
    """What one window layer recomputed for one occluded copy."""

    name: str
    positions: int  # output positions recomputed
    map_positions: int  # output positions of the whole map
    macs_per_output: int
    copy_bytes: int  # the larger of the copy's input crop and recomputed output

    @property
    def fraction(self) -> float:
        return self.positions / self.map_positions


# ------------------------------------------------------------------------------ the plan


@dataclass(eq=False)
class Plan:
    """The model as ``nodes`` (walked incrementally) followed by ``tail`` (run as usual)."""

    nodes: list[Node]
    tail: list[nn.Module]

    def run_clean(self, image: torch.Tensor) -> tuple[torch.Tensor, Cache]:
        """``image [1, 3, H, W]`` -> (logits ``[1, classes]``, the cache of every layer).

        The cache keeps the image's layout: a channels_last image (faster CPU convolutions)
        makes every crop of the incremental pass channels_last too.
        """
        cache: Cache = {}
        spatial = run_clean(self.nodes, image, cache)
        cache[self] = spatial
        return self._run_tail(spatial.contiguous()), cache

    def run_patched(
        self, cache: Cache, patch: Patch, trace: Optional[list] = None
    ) -> torch.Tensor:
        """The logits ``[n, classes]`` of the ``n`` occluded copies that ``patch`` describes.

        ``trace``: a list that gets one :class:`Recomputed` per window layer and copy batch.
        """
        patch = run_patched(self.nodes, patch, cache, trace)
        count = len(patch.tops)
        full = _crop(cache[self], patch, [0] * count, [0] * count, patch.size)
        return self._run_tail(full.contiguous())  # the tail may .view() its input

    def _run_tail(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.tail:
            x = layer(x)
        return x

    def tail_macs(self, cache: Cache) -> int:
        """Multiply-adds of the tail's convolutions and linear layers for one image."""
        macs = [0]

        def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                macs[0] += output[0].numel() * module.weight[0].numel()
            else:
                macs[0] += output[0].numel() * module.in_features

        with HookSet() as hooks:
            for unit in self.tail:
                for module in unit.modules():
                    if isinstance(module, (nn.Conv2d, nn.Linear)):
                        hooks.add(module.register_forward_hook(count))
            self._run_tail(cache[self])
        return macs[0]


def build_plan(model: nn.Module) -> tuple[Optional[Plan], str]:
    """The model as a :class:`Plan`, or ``(None, why not)``."""
    names = {id(module): name for name, module in model.named_modules()}
    if any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        return None, "the model has forward hooks, which a layer-by-layer walk would bypass"
    units = _units(model)
    nodes: list[Node] = []
    for unit in units:
        node = _node(unit, names)
        if node is None:
            break
        nodes.append(node)
    if not any(isinstance(node, (Window, Residual, Chain)) for node in nodes):
        first = type(units[len(nodes)]).__name__
        return None, (
            f"its first layers have no convolution or pooling that the incremental path can "
            f"walk (it stops at a {first}: it knows nn.Sequential chains, torchvision's VGG, "
            "AlexNet and ResNet, EfficientNet-Lite0, and convolution, pooling, batch-norm and "
            "elementwise layers)"
        )
    return Plan(nodes, units[len(nodes) :]), ""


def _units(module: nn.Module) -> list[nn.Module]:
    """The model as a flat chain of modules whose composition is ``module.forward``."""
    children = _chain(module)
    if children is None:
        return [module]
    return [unit for child in children for unit in _units(child)]


def _chain(module: nn.Module) -> Optional[list[nn.Module]]:
    """The modules ``module.forward`` applies one after the other, for the known containers."""
    if type(module) is nn.Sequential:
        return list(module)
    try:
        from torchvision.models import VGG, AlexNet, ResNet
    except ImportError:  # pragma: no cover - torchvision is a course dependency
        return None
    if type(module) in (VGG, AlexNet):
        return [module.features, module.avgpool, nn.Flatten(), module.classifier]
    if type(module) is ResNet:
        m = module
        return [m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4,
                m.avgpool, nn.Flatten(), m.fc]
    return None


# ------------------------------------------------------------------------------ module -> node


def _node(module: nn.Module, names: dict[int, str]) -> Optional[Node]:
    """The node for one module, or ``None`` for a module the incremental path does not know."""
    name = names.get(id(module), type(module).__name__)
    if _is_pointwise(module):
        return Pointwise(name, _out_of_place(module))
    if type(module) is nn.Conv2d or _is_static_same_padding_conv(module):
        return _conv_node(module, name)
    if type(module) in (nn.MaxPool2d, nn.AvgPool2d):
        return _pool_node(module, name)
    return _block_node(module, names)


_POINTWISE_TYPES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid,
    nn.Sigmoid, nn.Tanh, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout2d,
)


def _is_pointwise(module: nn.Module) -> bool:
    from saliencylab.models import Normalize

    if type(module) in _POINTWISE_TYPES or type(module) is Normalize:
        return not (isinstance(module, (nn.Dropout, nn.Dropout2d)) and module.training)
    if type(module) is nn.BatchNorm2d:  # in eval mode with running statistics: per channel
        return not module.training and module.running_mean is not None
    # efficientnet_lite_pytorch's own Identity (the padding of unpadded convolutions)
    return _is_lite_class(module, "Identity")


def _is_lite_class(module: nn.Module, name: str) -> bool:
    """``module`` is efficientnet_lite_pytorch's class ``name`` (the package Lite0 comes from)."""
    return type(module).__name__ == name and type(module).__module__.startswith(
        "efficientnet_lite_pytorch"
    )


def _out_of_place(module: nn.Module) -> nn.Module:
    """An in-place activation as a copy that returns a new tensor (cached maps stay intact)."""
    if getattr(module, "inplace", False):
        module = copy.copy(module)
        module.inplace = False
    return module


def _is_static_same_padding_conv(module: nn.Module) -> bool:
    """efficientnet_lite_pytorch's ``Conv2dStaticSamePadding``: zero padding, then a conv."""
    return (
        _is_lite_class(module, "Conv2dStaticSamePadding")
        and isinstance(module, nn.Conv2d)
        and tuple(module.padding) == (0, 0)
        and (type(module.static_padding) is nn.ZeroPad2d or _is_pointwise(module.static_padding))
    )


def _conv_node(conv: nn.Conv2d, name: str) -> Optional[Window]:
    if conv.padding_mode != "zeros":
        return None
    kernel, stride, dilation = _pair(conv.kernel_size), _pair(conv.stride), _pair(conv.dilation)
    if conv.padding == "same":
        padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    elif conv.padding == "valid":
        padding = (0, 0)
    else:
        padding = _pair(conv.padding)
    static = getattr(conv, "static_padding", None)
    if type(static) is nn.ZeroPad2d:  # (left, right, top, bottom)
        padding = (padding[0] + static.padding[2], padding[1] + static.padding[0])

    def on_crop(crop: torch.Tensor) -> torch.Tensor:
        return F.conv2d(crop, conv.weight, conv.bias, stride, 0, dilation, conv.groups)

    return Window(name, conv, on_crop, kernel, stride, padding, dilation, 0.0,
                  conv.weight[0].numel() * conv.out_channels)


def _pool_node(pool: nn.Module, name: str) -> Optional[Window]:
    kernel, padding = _pair(pool.kernel_size), _pair(pool.padding)
    stride = _pair(pool.stride or pool.kernel_size)
    if isinstance(pool, nn.MaxPool2d):
        if pool.return_indices:
            return None
        dilation = _pair(pool.dilation)

        def on_crop(crop: torch.Tensor) -> torch.Tensor:
            return F.max_pool2d(crop, kernel, stride, 0, dilation)

        return Window(name, pool, on_crop, kernel, stride, padding, dilation, -math.inf, 0)
    if pool.ceil_mode or not pool.count_include_pad or pool.divisor_override is not None:
        return None  # these divide border windows by fewer than kernel positions

    def on_avg_crop(crop: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(crop, kernel, stride, 0)

    return Window(name, pool, on_avg_crop, kernel, stride, padding, (1, 1), 0.0, 0)


def _pair(value: Union[int, tuple, list]) -> Pair:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[-1]))


def _block_node(module: nn.Module, names: dict[int, str]) -> Optional[Node]:
    """A residual block (torchvision ResNet, Lite0 MBConv) with every layer known, else None."""
    layers = _block_layers(module)
    if layers is None:
        return None
    main, shortcut, post = (
        None if part is None else [_node(layer, names) for layer in part] for part in layers
    )
    if any(node is None for part in (main, shortcut or [], post) for node in part):
        return None
    name = names.get(id(module), type(module).__name__)
    if shortcut is None:
        return Chain(name, main + post)
    return Residual(name, main, shortcut, post)


def _block_layers(module: nn.Module) -> Optional[tuple[list, Optional[list], list]]:
    """``(main, shortcut, post)`` layer lists of a known block, else None.

    ``forward(x) = post(main(x) + shortcut(x))``; shortcut ``[]`` is the identity, ``None``
    means no skip connection (``post(main(x))``).
    """
    try:
        from torchvision.models.resnet import BasicBlock, Bottleneck
    except ImportError:  # pragma: no cover
        BasicBlock = Bottleneck = None
    shortcut = [module.downsample] if getattr(module, "downsample", None) is not None else []
    if BasicBlock is not None and type(module) is BasicBlock:
        m = module
        return [m.conv1, m.bn1, m.relu, m.conv2, m.bn2], _flat(shortcut), [m.relu]
    if Bottleneck is not None and type(module) is Bottleneck:
        m = module
        return ([m.conv1, m.bn1, m.relu, m.conv2, m.bn2, m.relu, m.conv3, m.bn3], _flat(shortcut),
                [m.relu])
    if _is_lite_class(module, "MBConvBlock") and not module.has_se:
        return _mbconv_layers(module)
    return None  # squeeze-excitation mixes the whole map: not incremental


def _mbconv_layers(block: nn.Module) -> tuple[list, Optional[list], list]:
    """efficientnet_lite_pytorch's MBConvBlock.forward in eval mode (stochastic depth off), as
    layer lists; the same test for the skip connection as its forward."""
    args = block._block_args
    main = []
    if args.expand_ratio != 1:
        main += [block._expand_conv, block._bn0, block._swish]
    main += [block._depthwise_conv, block._bn1, block._swish, block._project_conv, block._bn2]
    skip = block.id_skip and args.stride == 1 and args.input_filters == args.output_filters
    return main, ([] if skip else None), []


def _flat(modules: list[nn.Module]) -> list[nn.Module]:
    return [unit for module in modules for unit in _units(module)]


# ------------------------------------------------------------------------------ cost


@dataclass(frozen=True)
class Probe:
    """The incremental pass of one occluded copy against a full forward pass of it."""

    work_fraction: float  # multiply-adds of convolutions and linear layers, incremental / full
    copy_bytes: int  # the largest tensor per occluded copy (sets the batch size)
    layers: list[Recomputed]  # what each window layer recomputed


def probe(plan: Plan, cache: Cache, patch: Patch) -> Probe:
    """Run ``patch`` (one copy is enough) with a trace, and count the work per copy."""
    layers: list[Recomputed] = []
    plan.run_patched(cache, patch, layers)
    tail = plan.tail_macs(cache)
    done = sum(layer.positions * layer.macs_per_output for layer in layers) + tail
    full = sum(layer.map_positions * layer.macs_per_output for layer in layers) + tail
    tail_bytes = cache[plan][0].numel() * cache[plan].element_size()
    largest = max([tail_bytes] + [layer.copy_bytes for layer in layers])
    return Probe(done / max(full, 1), largest, layers)
