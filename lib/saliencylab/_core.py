"""Shared plumbing for every method: targets, eval mode, hooks, batching, channel reduction.

The argument checks themselves (a wrong image shape, a target out of range, an unknown
``reduce``) live in ``saliencylab._validate``, one function per kind of argument; this module
applies them where every method passes (targets, logits, batches) and adds what needs a model:
eval mode with a warning for a model in train mode, and a clear error for the wrong input size.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Union

import torch
from torch import nn

from saliencylab import _validate as validate
from saliencylab._validate import SaliencyLabError

TargetLike = Union[None, int, Sequence[int], torch.Tensor]

# Default images per pass (SmoothGrad, Integrated Gradients, occlusion, deletion/insertion):
# as many as keep the largest single activation tensor of a batch under ACTIVATION_BUDGET.
# glibc returns every buffer above its mmap threshold (32 MB at most) to the OS and page-faults
# it in again on the next pass, so batches whose activations cross it get slower per image.
# Measured on 2 cores, 224x224, seconds for 169 occlusion windows at batch
# 4/8/16/32/64: AlexNet (largest activation 0.74 MB per image) 1.70/1.38/1.21/0.98/0.91;
# ResNet18 (3.1 MB) 3.13/2.73/2.97/3.18/3.19; VGG11 (12.3 MB) flat, 10.2-11.3; Lite0
# (4.7 MB) fastest at 8 (bench/). The budget gives AlexNet 54, ResNet18 13, Lite0 8, VGG11 3,
# and for images smaller than 224 proportionally more. Memory grows with the batch, never
# with samples, steps or window positions.
ACTIVATION_BUDGET = 40 * 2**20
MAX_AUTO_BATCH_SIZE = 64

DEVICE_VARIABLE = "SALIENCYLAB_DEVICE"


def course_device() -> torch.device:
    """The device the course's models and images are put on: ``$SALIENCYLAB_DEVICE``.

    ``"cpu"`` when unset (every lesson runs on a laptop CPU); ``"cuda"`` (or ``"cuda:1"``,
    ``"mps"``) to run the lessons on a GPU, e.g. on Colab with ``%env SALIENCYLAB_DEVICE=cuda``
    before the first import; ``"auto"`` for CUDA where there is one. :func:`load_model`,
    :func:`to_tensor` and :func:`load_digits_images` put what they return there; tensors you
    create yourself go there with ``.to(image.device)``.
    """
    wanted = os.environ.get(DEVICE_VARIABLE, "cpu").strip().lower() or "cpu"
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(wanted)
    except RuntimeError as error:
        raise SaliencyLabError(
            f"{DEVICE_VARIABLE}={wanted!r} is not a device: use cpu, cuda, cuda:N, mps or auto."
        ) from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SaliencyLabError(
            f"{DEVICE_VARIABLE}={wanted!r} but this torch sees no CUDA GPU: unset it (CPU), or "
            "use auto to take a GPU only where there is one (on Colab: Runtime > Change runtime type)."
        )
    return device


def num_classes(logits: torch.Tensor) -> int:
    """Number of classes of a ``[B, C]`` logit tensor."""
    return logits.shape[-1]


def resolve_targets(
    model: nn.Module, images: torch.Tensor, target: TargetLike
) -> torch.Tensor:
    """Turn ``target`` into one class index per image, ``LongTensor [B]`` on the images' device.

    ``None`` means the model's top class for each image; an ``int`` is used for every image;
    a sequence or tensor gives one class per image. The requested class is always the one
    explained: it is never replaced by the predicted class.
    """
    batch_size = images.shape[0]
    if target is None:
        with torch.no_grad():
            return model(images).argmax(dim=1)
    if isinstance(target, bool):
        raise SaliencyLabError(f"target must be a class index (int), got {target!r}.")
    if isinstance(target, int) or (isinstance(target, torch.Tensor) and target.dim() == 0):
        targets = torch.full((batch_size,), int(target), dtype=torch.long, device=images.device)
    else:
        if isinstance(target, str) or any(isinstance(t, str) for t in target):
            raise SaliencyLabError(
                "target must be a class index, not a name: use "
                "saliencylab.imagenet.ImageNetIndex()['tabby'] to look a name up."
            )
        targets = torch.as_tensor(list(map(int, target)), dtype=torch.long, device=images.device)
        if targets.dim() != 1 or targets.numel() != batch_size:
            raise SaliencyLabError(
                f"target has {targets.numel()} entries but there are {batch_size} images: "
                "give one class per image, a single int for all, or None for the predictions."
            )
    validate.targets_in_range(targets, class_count(model, images))
    return targets


def class_count(model: nn.Module, images: torch.Tensor) -> int:
    """How many classes ``model`` tells apart, for a range check of class indices.

    From the ``class_names`` that every model of ``load_model`` carries (no forward pass),
    else from one forward pass on one image of ``images [B, 3, H, W]``.
    """
    if getattr(model, "class_names", None) is not None:
        return len(model.class_names)
    with torch.no_grad():
        return num_classes(model(images[:1]))


@contextlib.contextmanager
def eval_mode(model: nn.Module, images: torch.Tensor | None = None) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode and restore every module's training flag afterwards.

    A model in train mode makes a map depend on the rest of the batch (BatchNorm) and on
    chance (Dropout), so attributions are always computed in eval mode; a warning says so.
    With ``images [B, 3, H, W]``, a shape error from a model built for one input size (its
    ``input_size``, e.g. 32 for the digits CNN) is re-raised saying which size it needs.
    """
    flags = [(module, module.training) for module in model.modules()]
    if model.training:
        warnings.warn(
            "the model is in train mode; computing the attribution in eval mode (BatchNorm "
            "and Dropout would otherwise change the answer) and restoring train mode after. "
            "Call model.eval() to silence this.",
            stacklevel=3,
        )
    model.eval()
    try:
        yield model
    except RuntimeError as error:
        raise _input_size_error(model, images, error) or error
    finally:
        for module, was_training in flags:
            module.training = was_training


def _input_size_error(
    model: nn.Module, images: torch.Tensor | None, error: RuntimeError
) -> SaliencyLabError | None:
    expected = getattr(model, "input_size", None)
    if images is None or not isinstance(expected, int) or images.shape[-2:] == (expected, expected):
        return None
    height, width = images.shape[-2:]
    message = SaliencyLabError(
        f"the model failed on {height}x{width} images; it was built for {expected}x{expected} "
        f"(model.input_size). Resize them, e.g. to_tensor(image, size={expected}) or "
        f"torch.nn.functional.interpolate(images, size={expected}). The model said: {error}"
    )
    message.__cause__ = error
    return message


class HookSet:
    """Collects hook handles and removes them all, even when the code inside raised.

    Use as ``with HookSet() as hooks: hooks.add(module.register_forward_hook(fn))``.
    """

    def __init__(self) -> None:
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def add(self, handle: torch.utils.hooks.RemovableHandle) -> None:
        self._handles.append(handle)

    def __enter__(self) -> "HookSet":
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def batch_slices(total: int, batch_size: int) -> Iterator[slice]:
    """Slices that cut ``range(total)`` into consecutive chunks of at most ``batch_size``."""
    batch_size = validate.positive_int(batch_size, "batch_size")
    for start in range(0, total, batch_size):
        yield slice(start, min(start + batch_size, total))


def auto_batch_size(model: nn.Module, images: torch.Tensor) -> int:
    """Images per pass for ``model`` on images shaped like ``images [B, 3, H, W]``.

    One forward pass of one image (hooks on every leaf module, removed after) finds the largest
    activation; the batch keeps that tensor under ``ACTIVATION_BUDGET`` (1 to 64 images).
    """
    largest = [1]

    def record(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.numel() * output.element_size())

    with HookSet() as hooks, torch.inference_mode():
        for module in model.modules():
            if next(module.children(), None) is None:
                hooks.add(module.register_forward_hook(record))
        model(images[:1])
    return max(1, min(MAX_AUTO_BATCH_SIZE, ACTIVATION_BUDGET // largest[0]))


def select_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``logits [N, C]`` and ``targets [N]`` -> the target logit of each row, ``[N]``."""
    validate.targets_in_range(targets, num_classes(logits))
    return logits.gather(1, targets.view(-1, 1)).squeeze(1)


def reduce_channels(maps: torch.Tensor, reduce: str | None) -> torch.Tensor:
    """Reduce ``[B, 3, H, W]`` attributions to ``[B, H, W]`` with ``validate.REDUCERS[reduce]``.

    ``"max_abs"``: max over channels of |a| (Simonyan et al.); ``"sum_abs"``; ``"sum"``;
    ``"abs_sum"`` (|sum|); ``None`` keeps ``[B, 3, H, W]``.
    """
    return validate.REDUCERS[validate.reduce_option(reduce)](maps)


def make_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator | None:
    """The generator to draw random numbers from: ``generator``, else one seeded with ``seed``.

    A seeded generator lives on the CPU, so that a seed gives the same draws on every machine,
    GPU or not; :func:`random_normal` moves the draws to the data's device.
    """
    if generator is not None:
        if seed is not None:
            raise SaliencyLabError("give either seed= or generator=, not both.")
        return generator
    if seed is None:
        return None
    return torch.Generator(device="cpu").manual_seed(seed)


def random_normal(
    shape: Sequence[int], generator: torch.Generator | None, like: torch.Tensor
) -> torch.Tensor:
    """Standard-normal noise of ``shape`` with ``like``'s device and dtype.

    Drawn on the generator's own device (a CPU generator works for GPU data, and gives the same
    numbers there as on the CPU); without a generator, from torch's global RNG on ``like``'s
    device.
    """
    device = generator.device if generator is not None else like.device
    noise = torch.randn(tuple(shape), generator=generator, device=device, dtype=like.dtype)
    return noise.to(like.device)


def input_gradients(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Gradient of each image's target logit w.r.t. that image, ``[N, 3, H, W]``.

    One backward pass gives every sample's gradient (the logits of different images do not
    interact in eval mode), and ``torch.autograd.grad`` computes only the input's gradient:
    parameter ``.grad`` is never touched and no weight gradients are computed.
    """
    inputs = images.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(inputs)
        (grads,) = torch.autograd.grad(select_logits(logits, targets).sum(), inputs)
    return grads
