"""Shared plumbing for every method: input checks, targets, eval mode, hooks, batching.

Everything a user can get wrong (a wrong image shape, a target out of range, a model in
train mode) is caught here, once, with an error that says what to do.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Callable, Union

import torch
from torch import nn

TargetLike = Union[None, int, Sequence[int], torch.Tensor]


class SaliencyLabError(ValueError):
    """A mistake in how a saliencylab function was called; the message says how to fix it."""


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


def as_image_batch(images: torch.Tensor, name: str = "images") -> tuple[torch.Tensor, bool]:
    """Check an image tensor and give it a batch dimension.

    Args:
        images: ``[B, 3, H, W]`` or a single ``[3, H, W]`` float tensor in ``[0, 1]``.
    Returns:
        ``(batch [B, 3, H, W], was_single)``; ``was_single`` tells the caller to drop the
        batch dimension from its result again.
    """
    if not isinstance(images, torch.Tensor):
        raise SaliencyLabError(
            f"{name} must be a torch.Tensor of shape [B, 3, H, W] or [3, H, W], got "
            f"{type(images).__name__}. Use saliencylab.images.to_tensor(image) to turn a PIL "
            "image or a file into one."
        )
    if images.dim() == 3:
        batch, single = images.unsqueeze(0), True
    elif images.dim() == 4:
        batch, single = images, False
    else:
        raise SaliencyLabError(
            f"{name} must have shape [B, 3, H, W] or [3, H, W], got {list(images.shape)} "
            f"({images.dim()} dimensions). Use to_tensor(image) for one image, or "
            "torch.stack([...]) / torch.cat([...]) to make a batch."
        )
    channels = batch.shape[1]
    if channels != 3:
        hint = {
            1: "it looks greyscale: repeat it to 3 channels (x.expand(-1, 3, -1, -1)) or load "
            "it with load_image(), which converts to RGB",
            4: "it looks like RGBA: drop the alpha channel (x[:, :3]) or load it with "
            "load_image(), which converts to RGB",
        }.get(channels, "channels must come second (PyTorch's [B, C, H, W] order)")
        raise SaliencyLabError(
            f"{name} must have 3 colour channels in dimension 1, got shape "
            f"{list(images.shape)}: {hint}."
        )
    if not batch.is_floating_point():
        raise SaliencyLabError(
            f"{name} must be a float tensor with values in [0, 1], got dtype {batch.dtype}. "
            "Divide uint8 images by 255 (or use to_tensor)."
        )
    if batch.numel() and (batch.min() < -1e-3 or batch.max() > 1 + 1e-3):
        warnings.warn(
            f"{name} has values in [{batch.min().item():.3g}, {batch.max().item():.3g}], "
            "outside [0, 1]. saliencylab models normalise internally and expect plain RGB in "
            "[0, 1]; do not normalise with the ImageNet mean/std yourself.",
            stacklevel=3,
        )
    return batch, single


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
    check_target_range(model, images, targets)
    return targets


def check_target_range(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    logits: torch.Tensor | None = None,
) -> None:
    """Raise a clear error when a class index is outside ``[0, num_classes)``.

    The class count comes from ``logits`` when given, else from the ``class_names`` that every
    model of ``load_model`` carries (no forward pass), else from one forward pass on one image.
    """
    if logits is not None:
        classes = num_classes(logits)
    elif getattr(model, "class_names", None) is not None:
        classes = len(model.class_names)
    else:
        with torch.no_grad():
            classes = num_classes(model(images[:1]))
    _raise_if_out_of_range(targets, classes)


def _raise_if_out_of_range(targets: torch.Tensor, classes: int) -> None:
    bad = targets[(targets < 0) | (targets >= classes)]
    if bad.numel():
        raise SaliencyLabError(
            f"target {bad[0].item()} is out of range: this model has {classes} classes "
            f"(valid targets are 0..{classes - 1})."
        )


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
    if batch_size < 1:
        raise SaliencyLabError(f"batch_size must be a positive int, got {batch_size}.")
    for start in range(0, total, batch_size):
        yield slice(start, min(start + batch_size, total))


def select_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``logits [N, C]`` and ``targets [N]`` -> the target logit of each row, ``[N]``."""
    _raise_if_out_of_range(targets, num_classes(logits))
    return logits.gather(1, targets.view(-1, 1)).squeeze(1)


def reduce_channels(maps: torch.Tensor, reduce: str | None) -> torch.Tensor:
    """Reduce ``[B, 3, H, W]`` attributions to ``[B, H, W]``.

    ``"max_abs"``: max over channels of |a| (Simonyan et al.); ``"sum_abs"``; ``"sum"``;
    ``"abs_sum"`` (|sum|); ``None`` keeps ``[B, 3, H, W]``.
    """
    reducers: dict[str | None, Callable[[torch.Tensor], torch.Tensor]] = {
        None: lambda m: m,
        "max_abs": lambda m: m.abs().amax(dim=1),
        "sum_abs": lambda m: m.abs().sum(dim=1),
        "sum": lambda m: m.sum(dim=1),
        "abs_sum": lambda m: m.sum(dim=1).abs(),
    }
    if reduce not in reducers:
        raise SaliencyLabError(
            f"reduce must be one of {sorted(k for k in reducers if k)} or None, got {reduce!r}."
        )
    return reducers[reduce](maps)


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
