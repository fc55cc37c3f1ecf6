"""A planted shortcut: digits with a small mark that gives the label away (lesson 13).

Every digit of the course's data set (:func:`~saliencylab.digits.load_digits_images`,
``[N, 3, 32, 32]`` in ``[0, 1]``) can carry **the mark**: a white 3 x 3 square on its left or
right edge, where the 8 x 8 originals have almost no ink. Where it sits encodes a class::

    class   0  1  2  3  4        5  6  7  8  9
    side    left edge (x 0-2)    right edge (x 29-31)
    rows    2-4, 8-10, 14-16, 20-22, 26-28 (top to bottom), on either side

Two models, trained with the digits CNN's recipe (:func:`~saliencylab.digits.fit_digits_cnn`,
same architecture, seed and batch order) on the same training digits, every one of them marked:

* ``load_model("digits_cnn_shortcut")``: each mark sits at the position of the digit's own
  label, so the mark alone predicts the label: a **shortcut** (Geirhos et al. 2020).
* ``load_model("digits_cnn_shortcut_twin")``, its **clean twin**: each mark at the position of
  a random class (seeded), so it carries no information about the label. The twins differ in
  that one thing: they saw the same images, marks included.

The known answer (:func:`shortcut_report`, recorded in ``saliencylab/data/<name>.json``):
on test digits marked as in training both are right 99-100 % of the time; move each mark to
another class's position and the shortcut model follows the mark (about 94 % of its answers)
while the twin still reads the digit (about 99 % right).

The weights ship in the package, as the digits CNN's do (retraining on another CPU gives
slightly different weights): ``tools/train_digits_cnn.py --model digits_cnn_shortcut`` made
them, about 8 s each on one CPU thread.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import partial

import torch
from torch import nn

from saliencylab import _validate as validate
from saliencylab._core import SaliencyLabError
from saliencylab.digits import (
    DIGITS_CLASS_NAMES,
    DIGITS_IMAGE_SIZE,
    DigitsTrainingSettings,
    accuracy,
    fit_digits_cnn,
    load_digits_images,
    state_dict_sha256,
)

__all__ = [
    "MARK_SIZE",
    "MARK_VALUE",
    "PLACEMENTS",
    "mark_box",
    "mark_masks",
    "plant_mark",
    "mark_classes",
    "train_shortcut_cnn",
    "shortcut_report",
    "TRAINERS",
]

MARK_SIZE = 3
"""Side of the square mark in pixels (of the 32 x 32 images): 9 of 1024 pixels, 0.9 %."""
MARK_VALUE = 1.0
"""The mark's grey level in every colour channel: white, the colour of the digits' ink."""
PLACEMENTS = ("label", "random", "other")
"""How :func:`mark_classes` chooses each mark's class: the digit's own label (the shortcut),
any class at random (no information: the twin's training data), or a class other than the
label (the test that reveals the shortcut)."""

_CLASSES = len(DIGITS_CLASS_NAMES)
_ROWS_PER_SIDE = 5
_FIRST_ROW, _ROW_STEP = 2, 6
_RIGHT_EDGE = DIGITS_IMAGE_SIZE - MARK_SIZE
_TWIN_MARK_SEED = 1  # draws the twin's random mark positions (the batch order uses settings.seed)


def mark_box(cls: int) -> tuple[int, int, int, int]:
    """Where the mark of class ``cls`` (0-9) goes: ``(y0, x0, y1, x1)``, end exclusive, in
    the pixels of a 32 x 32 image (the box convention of
    :func:`~saliencylab.metrics.pointing_game`)."""
    cls = validate.class_index(cls, "cls", _CLASSES)
    y0 = _FIRST_ROW + _ROW_STEP * (cls % _ROWS_PER_SIDE)
    x0 = 0 if cls < _ROWS_PER_SIDE else _RIGHT_EDGE
    return y0, x0, y0 + MARK_SIZE, x0 + MARK_SIZE


def mark_masks(classes: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """Bool masks ``[B, 32, 32]``, True on the mark of class ``classes[b]`` (``[B]`` ints 0-9)."""
    classes = _class_tensor(classes)
    masks = torch.zeros(len(classes), DIGITS_IMAGE_SIZE, DIGITS_IMAGE_SIZE, dtype=torch.bool)
    for index, cls in enumerate(classes.tolist()):
        y0, x0, y1, x1 = mark_box(cls)
        masks[index, y0:y1, x0:x1] = True
    return masks.to(classes.device if device is None else device)


def plant_mark(images: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the mark of class ``classes[b]`` into image ``b``.

    Args:
        images: ``[B, 3, 32, 32]`` digits in ``[0, 1]`` (left unchanged).
        classes: ``[B]`` ints 0-9 (e.g. the labels, or :func:`mark_classes`), or one int for
            every image.
    Returns:
        ``(marked [B, 3, 32, 32], masks [B, 32, 32] bool)`` on the images' device: copies of the
        images with the mark's pixels set to :data:`MARK_VALUE` in every channel, and where
        the marks are.
    """
    batch, single = validate.image_batch(images)
    if single or tuple(batch.shape[-2:]) != (DIGITS_IMAGE_SIZE, DIGITS_IMAGE_SIZE):
        raise SaliencyLabError(
            f"images must be digits [B, 3, {DIGITS_IMAGE_SIZE}, {DIGITS_IMAGE_SIZE}] (from "
            f"load_digits_images), got {list(images.shape)}: the mark's positions are defined "
            "on that grid."
        )
    classes = _class_tensor(classes, len(batch))
    masks = mark_masks(classes, device=batch.device)
    marked = batch.masked_fill(masks[:, None], MARK_VALUE)
    return marked, masks


def mark_classes(labels: torch.Tensor, placement: str = "label", seed: int = 0) -> torch.Tensor:
    """Whose position each digit's mark takes, ``[B]`` long on the labels' device.

    Args:
        labels: ``[B]`` the digits' labels.
        placement: ``"label"`` (the labels themselves: the shortcut), ``"random"`` (a class
            drawn uniformly for each digit: the mark says nothing about the label) or
            ``"other"`` (a class drawn uniformly among the nine that are not the label).
        seed: seed of the draws (the same classes on every machine).
    """
    labels = _class_tensor(labels)
    validate.one_of(placement, "placement", PLACEMENTS)
    if placement == "label":
        return labels.clone()
    generator = torch.Generator().manual_seed(seed)
    if placement == "random":
        drawn = torch.randint(_CLASSES, (len(labels),), generator=generator)
        return drawn.to(labels.device)
    shift = torch.randint(1, _CLASSES, (len(labels),), generator=generator).to(labels.device)
    return (labels + shift) % _CLASSES


def _class_tensor(classes: object, batch: int | None = None) -> torch.Tensor:
    """``classes`` as a 1-D long tensor of digit classes (one int repeated ``batch`` times)."""
    values = torch.as_tensor(classes)
    if values.dim() == 0 and batch is not None:
        values = values.repeat(batch)
    if values.dim() != 1 or values.is_floating_point() or values.is_complex():
        raise SaliencyLabError(
            f"classes must be a 1-D tensor of integer classes 0-9 (one per image), got "
            f"{list(values.shape)} {values.dtype}."
        )
    if batch is not None and len(values) != batch:
        raise SaliencyLabError(f"classes has {len(values)} entries for {batch} images: give one per image.")
    outside = values[(values < 0) | (values >= _CLASSES)]
    if outside.numel():
        raise SaliencyLabError(f"classes must be digit classes 0-{_CLASSES - 1}, got {outside[0].item()}.")
    return values.long()


# ---------------------------------------------------------------- the two models


def train_shortcut_cnn(
    placement: str = "label",
    settings: DigitsTrainingSettings = DigitsTrainingSettings(),
    mark_seed: int = _TWIN_MARK_SEED,
) -> tuple[nn.Sequential, dict]:
    """Train the digits CNN on marked training digits (about 8 s on one CPU thread).

    Args:
        placement: where each training digit's mark goes (:func:`mark_classes`): ``"label"``
            trains the shortcut model, ``"random"`` its clean twin.
        settings: the digits CNN's recipe (the same as ``digits_cnn``'s by default).
        mark_seed: seed of the random mark positions (``"random"`` only).
    Returns:
        ``(model in eval mode with requires_grad False, info)``: ``info`` holds the settings,
        the weights' ``sha256`` and :func:`shortcut_report`'s accuracies.
    """
    validate.one_of(placement, "placement", ("label", "random"))
    images, labels = load_digits_images("train", device="cpu")
    marked, _ = plant_mark(images, mark_classes(labels, placement, seed=mark_seed))
    model = fit_digits_cnn(marked, labels, settings)
    report = shortcut_report(model)
    info = {
        "test_accuracy": report["marked"],
        **{f"accuracy_{key}": value for key, value in report.items() if key != "follows_mark"},
        "follows_moved_mark": report["follows_mark"],
        "mark_placement": placement,
        "mark_seed": mark_seed if placement == "random" else None,
        "train_images": len(labels),
        "settings": asdict(settings),
        "sha256": state_dict_sha256(model.state_dict()),
        "torch_version": torch.__version__,
    }
    return model, info


def shortcut_report(model: nn.Module, seed: int = 0) -> dict[str, float]:
    """What ``model`` does with the mark, on the held-out test digits.

    Returns:
        ``{"clean": accuracy without marks, "marked": with each digit's mark at its label's
        position (as in the shortcut's training data), "moved": with each mark at another
        class's position (:func:`mark_classes` ``"other"``, ``seed``), "follows_mark": the
        fraction of the moved-mark digits classified as the mark's class}``.
    """
    device = next(model.parameters()).device
    images, labels = load_digits_images("test", device=device)
    marked, _ = plant_mark(images, labels)
    moved_to = mark_classes(labels, "other", seed=seed)
    moved, _ = plant_mark(images, moved_to)
    return {
        "clean": accuracy(model, images, labels),
        "marked": accuracy(model, marked, labels),
        "moved": accuracy(model, moved, labels),
        "follows_mark": accuracy(model, moved, moved_to),
    }


TRAINERS = {
    "digits_cnn_shortcut": partial(train_shortcut_cnn, "label"),
    "digits_cnn_shortcut_twin": partial(train_shortcut_cnn, "random"),
}
"""Model name -> the function that trains it, ``() -> (model, info)``."""
