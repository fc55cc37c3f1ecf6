"""Argument checks: one function per kind of argument, each with one signature.

Every public function of saliencylab checks what it was given before any expensive work, and
they all check it here, so one mistake gets one message wherever it is made. A check takes the
value first, then the name the user knows it by (the keyword argument), and returns the value
in the form the caller goes on with (an ``int``, a ``float``, a batch tensor). A wrong value
raises :class:`SaliencyLabError` with a message that says what to do.

This is the bottom of the package: it imports nothing from saliencylab. ``_core`` re-exports
the error classes, and :data:`REDUCERS` is the one table of channel reductions
(``_core.reduce_channels`` applies it).
"""

from __future__ import annotations

import difflib
import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import Optional, TypeVar

import numpy as np
import torch
from torch import nn

__all__ = [
    "SaliencyLabError",
    "NameLookupError",
    "UnknownNameError",
    "REDUCERS",
    "batch_size",
    "class_index",
    "fill_value",
    "fraction",
    "image_batch",
    "int_pair",
    "known_name",
    "map_batch",
    "maps_match_images",
    "nn_module",
    "non_negative_number",
    "one_image",
    "one_of",
    "optional_flag",
    "positive_int",
    "positive_number",
    "reduce_option",
    "same_device",
    "targets_in_range",
    "unknown_name_error",
]


class SaliencyLabError(ValueError):
    """A mistake in how a saliencylab function was called; the message says how to fix it."""


class NameLookupError(SaliencyLabError, KeyError):
    """A name (of a model, sample image or class) that does not pick exactly one thing."""

    def __str__(self) -> str:  # KeyError would show the message quoted, on one line
        return str(self.args[0]) if self.args else ""


class UnknownNameError(NameLookupError):
    """A name that is not known; the message suggests close ones and lists the valid ones."""


Choice = TypeVar("Choice")

# --------------------------------------------------------------------------- numbers


def positive_int(value: object, name: str, minimum: int = 1) -> int:
    """``value`` as an ``int >= minimum`` (a Python or numpy integer; ``True`` is not a count)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SaliencyLabError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return int(value)


def batch_size(value: object, name: str = "batch_size") -> int | None:
    """``None`` (the caller chooses, e.g. with ``_core.auto_batch_size``) or an ``int >= 1``."""
    return None if value is None else positive_int(value, name)


def _real(value: object, name: str, requirement: str, hint: str) -> float:
    """``value`` as a float when it is a real number (not a bool, not NaN), else an error."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or math.isnan(float(value))  # type: ignore[arg-type]
    ):
        raise SaliencyLabError(f"{name} must be a number {requirement}, got {value!r}.{_then(hint)}")
    return float(value)  # type: ignore[arg-type]


def _then(hint: str) -> str:
    """An optional sentence after an error message."""
    return f" {hint}" if hint else ""


def positive_number(value: object, name: str, hint: str = "") -> float:
    """``value`` as a float ``> 0``; ``hint`` (a sentence) is added to the error message."""
    number = _real(value, name, f"({name} > 0)", hint)
    if not number > 0:
        raise SaliencyLabError(
            f"{name} must be a positive number ({name} > 0), got {value!r}.{_then(hint)}"
        )
    return number


def non_negative_number(value: object, name: str, hint: str = "") -> float:
    """``value`` as a float ``>= 0``; ``hint`` (a sentence) is added to the error message."""
    number = _real(value, name, ">= 0", hint)
    if not number >= 0:
        raise SaliencyLabError(f"{name} must be a number >= 0, got {value!r}.{_then(hint)}")
    return number


def fraction(value: object, name: str, hint: str = "") -> float:
    """``value`` as a float in ``[0, 1]`` (a probability, an opacity, a share of pixels)."""
    number = _real(value, name, "in [0, 1]", hint)
    if not 0.0 <= number <= 1.0:
        raise SaliencyLabError(f"{name} must be in [0, 1], got {value!r}.{_then(hint)}")
    return number


def int_pair(value: object, name: str) -> tuple[int, int]:
    """``8 -> (8, 8)``; a ``(height, width)`` tuple or list of two ints ``>= 1`` stays."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair: tuple = (int(value), int(value))
    else:
        pair = tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(pair) != 2 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair
    ):
        raise SaliencyLabError(
            f"{name} must be an int or a (height, width) pair of ints, got {value!r}."
        )
    if min(pair) < 1:
        raise SaliencyLabError(f"{name} must be positive, got {value!r}.")
    return int(pair[0]), int(pair[1])


# --------------------------------------------------------------------------- choices


def one_of(value: Choice, name: str, options: Sequence[Choice]) -> Choice:
    """``value`` when it is one of ``options``; the error lists them."""
    try:
        known = not isinstance(value, bool) and value in options
    except (TypeError, RuntimeError):  # e.g. a tensor, which cannot be compared with a str
        known = False
    if not known:
        raise SaliencyLabError(f"{name} must be one of {tuple(options)}, got {value!r}.")
    return value


def optional_flag(value: object, name: str) -> bool | None:
    """``True``, ``False`` or ``None`` (the library decides); ``1``/``"yes"`` are refused."""
    if value is not None and not isinstance(value, bool):
        raise SaliencyLabError(
            f"{name} must be True, False or None (decide automatically), got {value!r}."
        )
    return value


#: How ``reduce=`` turns attributions ``[B, C, H, W]`` into one value per pixel ``[B, H, W]``:
#: ``"max_abs"`` max over channels of ``|a|`` (Simonyan et al.), ``"sum_abs"``, ``"sum"``,
#: ``"abs_sum"`` (``|sum|``); ``None`` keeps ``[B, C, H, W]``.
REDUCERS: dict[Optional[str], Callable[[torch.Tensor], torch.Tensor]] = {
    None: lambda maps: maps,
    "max_abs": lambda maps: maps.abs().amax(dim=1),
    "sum_abs": lambda maps: maps.abs().sum(dim=1),
    "sum": lambda maps: maps.sum(dim=1),
    "abs_sum": lambda maps: maps.sum(dim=1).abs(),
}


def reduce_option(value: object) -> str | None:
    """``value`` when it names a reduction of :data:`REDUCERS` (or is ``None``)."""
    if not isinstance(value, (str, type(None))) or value not in REDUCERS:
        named = sorted(key for key in REDUCERS if key)
        raise SaliencyLabError(f"reduce must be one of {named} or None, got {value!r}.")
    return value


def unknown_name_error(
    kind: str, name: object, valid: Sequence[str], note: str = ""
) -> UnknownNameError:
    """An :class:`UnknownNameError` that suggests the closest valid names and lists them all."""
    by_lower = {v.lower(): v for v in valid}
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=3, cutoff=0.6)
    suggestion = f" Did you mean {', '.join(repr(by_lower[c]) for c in close)}?" if close else ""
    listing = ", ".join(valid) if len(valid) <= 30 else f"{len(valid)} names"
    return UnknownNameError(f"unknown {kind} {name!r}{note}.{suggestion} Valid: {listing}.")


def known_name(value: object, kind: str, valid: Sequence[str], note: str = "") -> str:
    """``value`` when it is one of the names ``valid``; else :class:`UnknownNameError`
    (``"unknown {kind} 'x'{note}. Did you mean ...? Valid: ..."``)."""
    if not isinstance(value, str) or value not in valid:
        raise unknown_name_error(kind, value, valid, note)
    return value


# --------------------------------------------------------------------------- classes


def class_index(value: object, name: str = "target", classes: int | None = None) -> int:
    """One class index (an ``int``), in ``0..classes - 1`` when the class count is given."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SaliencyLabError(
            f"{name} must be one class index (int), got {value!r}. Look names up with "
            "saliencylab.imagenet.ImageNetIndex()['goldfish']."
        )
    if classes is not None:
        targets_in_range(torch.tensor([int(value)]), classes)
    return int(value)


def targets_in_range(targets: torch.Tensor, classes: int) -> None:
    """Every entry of ``targets`` (a LongTensor) is a class index ``0..classes - 1``."""
    bad = targets[(targets < 0) | (targets >= classes)]
    if bad.numel():
        raise SaliencyLabError(
            f"target {bad[0].item()} is out of range: this model has {classes} classes "
            f"(valid targets are 0..{classes - 1})."
        )


# --------------------------------------------------------------------------- models


def nn_module(value: object, name: str = "model") -> nn.Module:
    """``value`` when it is a ``torch.nn.Module``; the error suspects swapped arguments."""
    if not isinstance(value, nn.Module):
        raise SaliencyLabError(
            f"{name} must be a torch.nn.Module (e.g. load_model()), got {type(value).__name__}; "
            "check the argument order: (model, images, ...)."
        )
    return value


def same_device(images: torch.Tensor, model: nn.Module) -> None:
    """The model's weights and the images are on one device (a model without weights fits any)."""
    parameter = next(model.parameters(), None)
    if parameter is not None and parameter.device != images.device:
        raise SaliencyLabError(
            f"the model is on {parameter.device} but the images are on {images.device}: "
            f"move one of them, e.g. images = images.to('{parameter.device}')."
        )


# --------------------------------------------------------------------------- tensors


#: How far outside [0, 1] images may go without a warning: a little noise or a small step past the
#: edge (SmoothGrad's noisy copies, a path through image space) is fine; images normalised with the
#: ImageNet mean and std span about [-2.1, 2.6].
RANGE_SLACK = 0.1


def image_batch(value: object, name: str = "images") -> tuple[torch.Tensor, bool]:
    """Check an image tensor and give it a batch dimension.

    Args:
        value: ``[B, 3, H, W]`` or a single ``[3, H, W]`` float tensor in ``[0, 1]`` (values
            more than :data:`RANGE_SLACK` outside give a warning: models of saliencylab
            normalise internally).
    Returns:
        ``(batch [B, 3, H, W], was_single)``; ``was_single`` tells the caller to drop the
        batch dimension from its result again.
    """
    if not isinstance(value, torch.Tensor):
        raise SaliencyLabError(
            f"{name} must be a torch.Tensor of shape [B, 3, H, W] or [3, H, W], got "
            f"{type(value).__name__}. Use saliencylab.images.to_tensor(image) to turn a PIL "
            "image or a file into one."
        )
    if value.dim() == 3:
        batch, single = value.unsqueeze(0), True
    elif value.dim() == 4:
        batch, single = value, False
    else:
        raise SaliencyLabError(
            f"{name} must have shape [B, 3, H, W] or [3, H, W], got {list(value.shape)} "
            f"({value.dim()} dimensions). Use to_tensor(image) for one image, or "
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
            f"{list(value.shape)}: {hint}."
        )
    if not batch.is_floating_point():
        raise SaliencyLabError(
            f"{name} must be a float tensor with values in [0, 1], got dtype {batch.dtype}. "
            "Divide uint8 images by 255 (or use to_tensor)."
        )
    if batch.numel() and (batch.min() < -RANGE_SLACK or batch.max() > 1 + RANGE_SLACK):
        warnings.warn(
            f"{name} has values in [{batch.min().item():.3g}, {batch.max().item():.3g}], "
            "outside [0, 1]. saliencylab models normalise internally and expect plain RGB in "
            "[0, 1]; do not normalise with the ImageNet mean/std yourself.",
            stacklevel=3,
        )
    return batch, single


def one_image(value: object, name: str = "image") -> tuple[torch.Tensor, bool]:
    """:func:`image_batch` for functions that take one image: ``[3, H, W]`` or ``[1, 3, H, W]``.

    Returns ``(batch [1, 3, H, W], was_single)``.
    """
    batch, single = image_batch(value, name)
    if batch.shape[0] != 1:
        raise SaliencyLabError(
            f"{name} must be one image ([3, H, W] or [1, 3, H, W]; one image at a time), got a "
            f"batch of {batch.shape[0]} (shape {list(batch.shape)}): pick one, e.g. images[0]."
        )
    return batch, single


def map_batch(value: object, name: str = "saliency_maps") -> tuple[torch.Tensor, bool]:
    """``[B, H, W]`` or one ``[H, W]`` real map -> ``(maps [B, H, W] detached, was_single)``.

    A map containing NaN is refused: its ranking, maximum and correlation are meaningless.
    """
    if not isinstance(value, torch.Tensor):
        raise SaliencyLabError(
            f"{name} must be a torch.Tensor of shape [B, H, W] or [H, W], got "
            f"{type(value).__name__}. Convert it with torch.as_tensor(...)."
        )
    if value.dim() == 2:
        batch, single = value.unsqueeze(0), True
    elif value.dim() == 3:
        batch, single = value, False
    else:
        hint = (
            " It looks like per-channel attributions [B, 3, H, W]: reduce them to one value per "
            "pixel first, e.g. maps.abs().amax(dim=1) (or call the method with reduce='max_abs')."
            if value.dim() == 4
            else ""
        )
        raise SaliencyLabError(
            f"{name} must have shape [B, H, W] or [H, W], got {list(value.shape)}.{hint}"
        )
    if batch.is_complex():
        raise SaliencyLabError(f"{name} must be real-valued, got dtype {batch.dtype}.")
    batch = batch.detach()
    if batch.is_floating_point() and torch.isnan(batch).any():
        bad = torch.isnan(batch).flatten(1).any(1).nonzero().flatten().tolist()
        raise SaliencyLabError(
            f"{name} contain NaN (image(s) {bad}): fix the method that produced them (a "
            "division by zero in a normalisation, say) before evaluating them."
        )
    return batch, single


def maps_match_images(maps: torch.Tensor, images: torch.Tensor) -> None:
    """One ``[H, W]`` map per image of ``images [B, 3, H, W]``, with the images' size."""
    if maps.shape[0] != images.shape[0] or maps.shape[1:] != images.shape[2:]:
        raise SaliencyLabError(
            f"saliency_maps have shape {list(maps.shape)} but the images are "
            f"{list(images.shape)}: give one [H, W] map per image with the images' height and "
            f"width ({images.shape[0]} x {list(images.shape[2:])}). Upsample coarse maps with "
            "F.interpolate(maps[:, None], size=(H, W), mode='bilinear')[:, 0]."
        )


def fill_value(value: object, images: torch.Tensor, name: str = "baseline") -> torch.Tensor:
    """A number or a tensor broadcastable to ``images [B, 3, H, W]`` (a scalar, a colour
    ``[3, 1, 1]``, an image ``[3, H, W]``, a batch ``[B, 3, H, W]``), as a tensor of the images'
    shape, dtype and device (an expanded view: no copy per image)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, torch.Tensor)):
        raise SaliencyLabError(
            f"{name} must be a number (e.g. 0.0 black or 0.5 grey) or an image tensor, got "
            f"{type(value).__name__}."
        )
    if isinstance(value, torch.Tensor):
        fill = value.detach().to(images.device, images.dtype)
    else:
        fill = torch.tensor(float(value), dtype=images.dtype, device=images.device)
    try:
        return torch.broadcast_to(fill, images.shape)
    except RuntimeError:
        raise SaliencyLabError(
            f"{name} of shape {list(fill.shape)} cannot be broadcast to the images' shape "
            f"{list(images.shape)}: give a number, a colour [3, 1, 1], a [3, H, W] image, or a "
            "[B, 3, H, W] batch."
        ) from None
