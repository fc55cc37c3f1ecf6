"""Checks for notebook 05_gradcam: ``gradcam_map(model, images, target, layer) -> [B, H, W]``.

The check runs the student's function on a small seeded CNN (trainable weights, so a
``.backward()`` shows up in their ``.grad``) and a non-square batch of two images with a
different target each, compares with the library's Grad-CAM and, when the maps differ,
recomputes what each usual mistake would give from the same layer activation ``A`` and
gradient ``dy/dA`` to name it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from saliencylab.attribution.gradcam import gradcam, layer_activation_and_gradient
from saliencylab.checks._common import (
    CheckFailed,
    close,
    diagnose,
    fail,
    passed,
    require_shape,
    require_tensor,
    snapshot_side_effects,
)
from saliencylab.checks._integrity import exercise_check
from saliencylab.checks._promises import Promises, image_batches_to_try
from saliencylab.checks._running import require_clean_after_error
from saliencylab.checks._fixtures import kaiming_init_, smooth_random_images

__all__ = ["check_gradcam_map"]

Target = Union[int, Sequence[int], torch.Tensor]
GradCamFn = Callable[[nn.Module, torch.Tensor, Target, nn.Module], torch.Tensor]

# read from the exercise's docstring (tests/test_promises.py): images [B, 3, H, W]; no hook left
PROMISES = {"gradcam_map": Promises(image_batches=True, cleans_up_on_error=True)}

NUM_CLASSES = 5
IMAGE_SIZE = (20, 28)  # non-square on purpose: a swapped (H, W) shows up in the shape
FIXED_TARGETS = (2, 4)  # one class per image: a map that ignores `target` shows up too


def fixed_gradcam_model(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """A small CNN ``[N, 3, H, W] -> [N, 5]`` and the layer to explain (its ``features``).

    After ``features`` (output ``[N, 8, H/2, W/2]``) come a conv, a ReLU and a 2x2 pooling
    grid, so the gradient reaching the layer varies over space (behind a plain global average
    pooling it would be constant, and the max/mean/elementwise mistakes would all agree).
    The weights are trainable, so a ``.backward()`` shows up in their ``.grad``.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # nn.Conv2d / nn.Linear initialise from the global generator
        features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU()
        )
        model = nn.Sequential(
            features,
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(32, NUM_CLASSES),
        )
        kaiming_init_(model)
    return model.eval(), features



def fixed_gradcam_images(seed: int = 6) -> torch.Tensor:
    """Two images ``[2, 3, 20, 28]`` in ``[0, 1]``."""
    return smooth_random_images(2, IMAGE_SIZE, seed)


@exercise_check
def check_gradcam_map(
    student_fn: GradCamFn,
    model: nn.Module | None = None,
    images: torch.Tensor | None = None,
    target: Target | None = None,
    layer: nn.Module | None = None,
    tol: float = 1e-4,
) -> None:
    """Check the student's ``gradcam_map`` (``student_fn``) against the library's ``gradcam`` and name the likely mistake.

    Without arguments it uses :func:`fixed_gradcam_model` on two non-square images with the
    targets (2, 4); ``model``, ``images`` ``[B, 3, H, W]``, ``target`` and ``layer`` give other
    inputs (``model`` and ``layer`` together).
    """
    if (model is None) != (layer is None):
        raise ValueError("give both model= and layer= (a module of that model), or neither")
    if model is None:
        model, layer = fixed_gradcam_model()
    images = fixed_gradcam_images() if images is None else images
    targets = _as_targets(FIXED_TARGETS if target is None else target, images)
    what = "gradcam_map(model, images, target, layer)"

    got, expected = _compare(student_fn, model, images, targets, layer, what, tol,
                             student_target=targets if target is None else target)
    for batch in image_batches_to_try(images)[1:]:  # a batch of one
        _compare(student_fn, model, batch, targets[: len(batch)], layer, what, tol, targets[: len(batch)])
    require_clean_after_error(lambda: student_fn(model, images.clone(), targets, layer), model, what)
    passed(
        f"maps of shape {tuple(got.shape)} and of a batch of one; no hook left behind, also after an "
        f"error inside the model; expected mean per image {_rounded(expected.mean(dim=(1, 2)))}, "
        f"max {_rounded(expected.amax(dim=(1, 2)))}; got mean {_rounded(got.mean(dim=(1, 2)))}, "
        f"max {_rounded(got.amax(dim=(1, 2)))}",
    )


def _compare(
    student_fn: GradCamFn,
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: nn.Module,
    what: str,
    tol: float,
    student_target: Target,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's maps of ``images`` ``[B, 3, H, W]`` and the library's, after failing with
    the likely mistake if they differ."""
    verify_side_effects = _side_effect_verifier(model)
    got = require_tensor(student_fn(model, images.clone(), student_target, layer), what)
    verify_side_effects(what)
    _require_map_shape(got, model, images, layer, what)
    got = got.detach()
    if torch.isnan(got).any():
        fail(f"{what} contains NaN: the map must be finite (do not divide by a maximum that can be 0).")
    expected = gradcam(model, images, targets, layer=layer)
    if not close(got, expected, tol):
        diagnose(got, expected, _gradcam_map_mistakes(model, images, targets, layer), what, tol)
    return got, expected


def _side_effect_verifier(model: nn.Module) -> Callable[[str], None]:
    """:func:`snapshot_side_effects`, with the Grad-CAM version of the ``.grad`` advice."""
    verify = snapshot_side_effects(model)

    def verify_for_gradcam(what: str) -> None:
        try:
            verify(what)
        except CheckFailed as error:
            if ".grad" not in str(error):
                raise
            fail(
                f"{what} changed the parameters' .grad: score.backward() computes the gradient "
                "of every trainable weight too. Use (gradient,) = torch.autograd.grad(score, "
                "activation): it returns d score / d activation only and touches no .grad."
            )

    return verify_for_gradcam


def _as_targets(target: Target, images: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(target, device=images.device).reshape(-1).expand(images.shape[0])


def _rounded(values: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values.double().tolist()) + "]"


def _require_map_shape(
    got: torch.Tensor, model: nn.Module, images: torch.Tensor, layer: nn.Module, what: str
) -> None:
    batch, _, height, width = images.shape
    expected = (batch, height, width)
    shape = tuple(got.shape)
    if shape == expected:
        return
    activation, _ = layer_activation_and_gradient(model, images[:1], _as_targets(0, images[:1]), layer)
    coarse = tuple(activation.shape[-2:])
    if shape == (batch, width, height):
        hint = (
            "Height and width are swapped: F.interpolate takes size=(H, W) in that order; "
            "use size=images.shape[-2:]."
        )
    elif shape[-2:] == coarse:
        hint = (
            f"{coarse} is the size of the layer's activation: upsample the map to the input size "
            "with F.interpolate(cam, size=images.shape[-2:], mode='bilinear', align_corners=False)."
        )
    elif shape == (batch, 1, height, width):
        hint = "Drop the channel dimension: return cam[:, 0] (or cam.squeeze(1))."
    elif shape == (height, width) or shape[-2:] != (height, width):
        hint = "Return one map per image, [B, H, W], upsampled to the input size with F.interpolate."
    else:
        hint = "Sum the weighted activations over the channel dimension (dim=1)."
    require_shape(got, expected, what, hint)


def _upsample(
    cam: torch.Tensor, size: torch.Size, mode: str = "bilinear", **options: object
) -> torch.Tensor:
    """``[B, h, w] -> [B, H, W]``."""
    return F.interpolate(cam.unsqueeze(1), size=size, mode=mode, **options)[:, 0]


def _gradcam_map_mistakes(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: nn.Module
) -> dict[str, torch.Tensor]:
    """What each usual mistake gives on these inputs (explanation -> map ``[B, H, W]``)."""
    size = images.shape[-2:]
    activation, gradient = layer_activation_and_gradient(model, images, targets, layer)
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    weighted = (weights * activation).sum(dim=1)  # [B, h, w], before the ReLU
    cam = weighted.relu()
    mistakes = {
        "you forgot the ReLU: Grad-CAM keeps only the evidence FOR the class, "
        "torch.relu(weighted sum), before upsampling.": _upsample(weighted, size),
        "you took the absolute value instead of the ReLU: negative evidence must be "
        "cut to 0 (torch.relu), not flipped.": _upsample(weighted.abs(), size),
        "you applied the ReLU after upsampling: the ReLU comes first, on the layer-sized "
        "map, then the upsampling.": _upsample(weighted, size).relu(),
        "you upsampled with mode='nearest' (blocky squares). Use F.interpolate(..., "
        "mode='bilinear', align_corners=False).": _upsample(cam, size, mode="nearest"),
        "you upsampled with align_corners=True. Use mode='bilinear', align_corners=False "
        "(pixel centres, as the library and torchvision resize do).": _upsample(
            cam, size, align_corners=True
        ),
        "you used bicubic upsampling. Use mode='bilinear', align_corners=False.": _upsample(
            cam, size, mode="bicubic", align_corners=False
        ),
        "you weighted each channel by the MAX of its gradient. The weight alpha_k is the "
        "spatial MEAN of the gradient: gradient.mean(dim=(2, 3), keepdim=True).": _upsample(
            (gradient.amax(dim=(2, 3), keepdim=True) * activation).sum(dim=1).relu(), size
        ),
        "you summed the gradients over space instead of averaging them (the map is h*w "
        "times too large): use gradient.mean(dim=(2, 3), keepdim=True).": _upsample(
            (gradient.sum(dim=(2, 3), keepdim=True) * activation).sum(dim=1).relu(), size
        ),
        "you multiplied the activations by the gradients elementwise without averaging the "
        "gradient over space first. Grad-CAM gives each channel ONE weight, "
        "alpha_k = gradient.mean(dim=(2, 3), keepdim=True).": _upsample(
            (gradient * activation).sum(dim=1).relu(), size
        ),
        "you averaged the weighted activations over the channels instead of summing them: "
        "use .sum(dim=1).": _upsample((weights * activation).mean(dim=1).relu(), size),
        "you normalised each map (divided by its maximum). Return the raw Grad-CAM map; "
        "plotting functions normalise for display.": _upsample(cam, size)
        / _upsample(cam, size).amax(dim=(1, 2), keepdim=True).clamp(min=1e-12),
        "you differentiated the softmax probability of the target class. Use the target "
        "logit (the model's raw output).": gradcam(
            _with_softmax(model), images, targets, layer=layer
        ),
    }
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    if not torch.equal(predicted, targets):
        mistakes[
            "you explained each image's predicted class instead of the requested `target`: "
            "use the target argument, never the argmax."
        ] = gradcam(model, images, predicted, layer=layer)
    if targets.unique().numel() > 1:
        mistakes[
            "you used the first target for every image: each image has its own class "
            "in `target` (a LongTensor [B])."
        ] = gradcam(model, images, targets[:1].expand_as(targets), layer=layer)
    return mistakes


def _with_softmax(model: nn.Module) -> nn.Module:
    """``model`` followed by a softmax: its "logits" are the probabilities."""
    wrapped = nn.Sequential(model, nn.Softmax(dim=1))
    wrapped.training = model.training  # leaves the model's own flags alone
    return wrapped
