"""ImageNet class names and top-k predictions.

The 1000 class names come from torchvision's bundled metadata (no download). Look classes up
by name (``ImageNetIndex()["great grey owl"] -> 24``) instead of remembering indices, and read
what a model sees with ``predict(model, images)``.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Sequence

import torch
from torch import nn

from saliencylab import _validate as validate
from saliencylab._core import SaliencyLabError, eval_mode
from saliencylab._validate import NameLookupError, unknown_name_error

__all__ = ["ImageNetIndex", "AmbiguousNameError", "imagenet_class_names", "predict", "top_class"]

Prediction = list[tuple[str, float]]


class AmbiguousNameError(NameLookupError):
    """A partial class name that matches several classes; the message lists them."""


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order (torchvision's metadata)."""
    from torchvision.models import ResNet18_Weights

    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def _normalize(name: str) -> str:
    """Case-, ``_``/``-``- and spacing-insensitive form of a class name."""
    return " ".join(re.sub(r"[_\-]", " ", name).casefold().split())


class ImageNetIndex:
    """Class name <-> index lookup.

    ``idx["great grey owl"] -> 24``: an exact name first (case, ``_`` and ``-`` ignored),
    else a part of a name that matches exactly one class (``idx["grey owl"] -> 24``).
    A part that matches several classes raises :class:`AmbiguousNameError` listing them;
    an unknown name raises ``UnknownNameError`` with close suggestions (both are
    ``KeyError`` and ``SaliencyLabError``). ``idx.name(24) -> "great grey owl"``.

    Args:
        names: class names in index order; default the 1000 ImageNet classes.
    """

    def __init__(self, names: Sequence[str] | None = None) -> None:
        self._names = tuple(names) if names is not None else imagenet_class_names()
        self._keys = tuple(_normalize(name) for name in self._names)

    @property
    def names(self) -> tuple[str, ...]:
        """All class names, in index order."""
        return self._names

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"ImageNetIndex({len(self)} classes)"

    def __contains__(self, name: object) -> bool:
        try:
            self[name]  # type: ignore[index]
        except (NameLookupError, SaliencyLabError):
            return False
        return True

    def __getitem__(self, name: str) -> int:
        if not isinstance(name, str):
            raise SaliencyLabError(
                f"look classes up by name (a str), got {name!r}; use idx.name({name!r}) to "
                "get the name of a class index."
            )
        verbatim = [index for index, candidate in enumerate(self._names) if candidate == name]
        if len(verbatim) == 1:  # 'Cardigan' (the corgi) and 'cardigan' differ only in case
            return verbatim[0]
        key = _normalize(name)
        exact = [index for index, candidate in enumerate(self._keys) if candidate == key]
        matches = exact or [index for index, _ in self.search(name)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            listed = ", ".join(f"{self._names[i]!r} ({i})" for i in matches[:20])
            more = f" and {len(matches) - 20} more" if len(matches) > 20 else ""
            raise AmbiguousNameError(
                f"{name!r} matches {len(matches)} classes: {listed}{more}. Use the full name "
                "(or the index)."
            )
        raise unknown_name_error("class name", name, self._names)

    def search(self, text: str) -> list[tuple[int, str]]:
        """Every ``(index, name)`` whose name contains ``text`` (case-insensitive)."""
        key = _normalize(text)
        return [(i, self._names[i]) for i, candidate in enumerate(self._keys) if key in candidate]

    def name(self, index: int) -> str:
        """The name of class ``index`` (an int, or a 0-d tensor / numpy integer)."""
        try:
            position = operator.index(index)
        except TypeError:
            whole = isinstance(index, torch.Tensor) and not index.is_floating_point()
            if whole and index.numel() == 1:
                position = int(index.item())
            else:
                raise SaliencyLabError(f"a class index must be an int, got {index!r}.") from None
        if not 0 <= position < len(self._names):
            raise SaliencyLabError(
                f"class index {position} is out of range: there are {len(self._names)} "
                f"classes (0..{len(self._names) - 1})."
            )
        return self._names[position]


def predict(
    model: nn.Module,
    images: torch.Tensor,
    top: int = 5,
    labels: Sequence[str] | None = None,
) -> list[Prediction] | Prediction:
    """The ``top`` most probable classes of each image, as ``(name, probability)`` pairs.

    Args:
        model: a classifier returning logits ``[B, C]`` (softmax is applied here).
        images: ``[B, 3, H, W]`` in ``[0, 1]``, or one ``[3, H, W]`` image.
        top: how many classes per image (at most ``C``).
        labels: ``C`` class names; default the model's ``class_names`` attribute (set by
            ``load_model``), else the ImageNet names for 1000 classes, else ``"0".."C-1"``.
    Returns:
        For a batch, one list per image, most probable first; for one ``[3, H, W]`` image,
        its list alone.
    """
    batch, single = validate.image_batch(images)
    top = validate.positive_int(top, "top")
    with eval_mode(model, batch), torch.no_grad():
        logits = model(batch)
    if logits.dim() != 2:
        raise SaliencyLabError(
            f"predict needs a classifier returning logits [B, classes], got shape "
            f"{list(logits.shape)}."
        )
    names = _class_names(model, logits.shape[1], labels)
    probabilities, indices = logits.softmax(dim=1).topk(min(top, logits.shape[1]), dim=1)
    predictions = [
        [(names[i], p) for i, p in zip(row_indices.tolist(), row_probabilities.tolist())]
        for row_indices, row_probabilities in zip(indices, probabilities)
    ]
    return predictions[0] if single else predictions


def top_class(
    model: nn.Module, image: torch.Tensor, labels: Sequence[str] | None = None
) -> tuple[str, float]:
    """``(name, probability)`` of the most probable class of ONE image, ``[3, H, W]`` or ``[1, 3, H, W]``.

    ``labels`` as in :func:`predict`. A batch of several images raises: use
    ``predict(model, images, top=1)`` for those.
    """
    if isinstance(image, torch.Tensor) and image.dim() == 4 and image.shape[0] != 1:
        raise SaliencyLabError(
            f"top_class takes one image, got a batch of {image.shape[0]}: pass images[i], or "
            "use predict(model, images, top=1) for the whole batch."
        )
    batch, _ = validate.image_batch(image)
    return predict(model, batch, top=1, labels=labels)[0][0]


def _class_names(model: nn.Module, classes: int, labels: Sequence[str] | None) -> Sequence[str]:
    if labels is not None:
        if len(labels) != classes:
            raise SaliencyLabError(
                f"labels has {len(labels)} names but the model has {classes} classes."
            )
        return labels
    own = getattr(model, "class_names", None)
    if own is not None and len(own) == classes:
        return own
    if classes == len(imagenet_class_names()):
        return imagenet_class_names()
    return [str(i) for i in range(classes)]
