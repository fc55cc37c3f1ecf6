"""Checks for notebook 02_saliency: Simonyan et al.'s vanilla gradient saliency map.

``saliency_map(model, images [B, 3, H, W], target) -> [B, H, W]``: the maximum over colour
channels of ``|d logit_target / d pixel|``, with ``target`` an int (every image) or one class
per image. The check runs it on a small seeded CNN with trainable parameters (so a
``.backward()`` shows up in their ``.grad``) and non-square images (so swapped axes show up),
with a different requested class per image that is never the predicted one (so a function that
explains the argmax, or the first target only, shows up).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Union

import torch
from torch import nn

from saliencylab._core import reduce_channels, select_logits
from saliencylab.attribution import saliency
from saliencylab.checks._common import as_target_list, close, diagnose, non_predicted_targets, passed, require_shape
from saliencylab.checks._integrity import exercise_check
from saliencylab.checks._promises import Promises, image_batches_to_try
from saliencylab.checks._running import run_student_twice, score_gradient

__all__ = ["check_saliency_map"]

Target = Union[int, Sequence[int], torch.Tensor]
SaliencyFn = Callable[[nn.Module, torch.Tensor, Target], torch.Tensor]

# read from the exercise's docstring (tests/test_promises.py): images [B, 3, H, W]
PROMISES = {"saliency_map": Promises(image_batches=True)}

NUM_CLASSES = 5
WEIGHT_SCALE = 0.25
IMAGE_SHAPE = (2, 3, 12, 16)  # non-square: a height/width swap changes the shape


def fixed_cnn(seed: int = 0) -> nn.Sequential:
    """A small CNN ``[B, 3, H, W] -> [B, 5]`` with seeded weights; parameters trainable.
    Weights are scaled so the gradients are of order 0.1 and the probabilities stay far from
    0 and 1 (logit and probability gradients then differ clearly)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Conv2d(3, 8, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, NUM_CLASSES),
        )
        with torch.no_grad():
            for param in model.parameters():
                param.copy_(WEIGHT_SCALE * torch.randn(param.shape))
    return model.eval()


def fixed_images(seed: int = 3) -> torch.Tensor:
    """Random images ``[2, 3, 12, 16]`` in ``[0, 1]``."""
    return torch.rand(IMAGE_SHAPE, generator=torch.Generator().manual_seed(seed))



def _saliency_map_mistakes(model: nn.Module, images: torch.Tensor, targets: list[int]) -> dict[str, torch.Tensor]:
    """Explanation -> the ``[B, H, W]`` map a usual mistake gives on the same inputs."""
    target_index = torch.tensor(targets, device=images.device)

    def gradient(score: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return score_gradient(model, images, score)

    def logit_of(classes: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda logits: select_logits(logits, classes).sum()

    signed = gradient(logit_of(target_index))
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    max_abs = lambda grads: reduce_channels(grads, "max_abs")  # noqa: E731
    mistakes = {
        "you forgot the absolute value: take |gradient| before the max over channels "
        "(a large negative gradient matters as much as a large positive one).": signed.amax(dim=1),
        "you summed |gradient| over the colour channels: a valid convention (section 3 compares "
        "them), but this exercise asks for Simonyan et al.'s maximum over channels "
        "(.amax(dim=1)).": signed.abs().sum(dim=1),
        "you averaged |gradient| over the colour channels: take the maximum over channels "
        "(.amax(dim=1)).": signed.abs().mean(dim=1),
        "you summed the signed gradient over channels before the absolute value (the "
        "convention of Integrated Gradients, notebook 09): this exercise asks for |gradient| "
        "first, then the maximum over channels.": signed.sum(dim=1).abs(),
        "you averaged the signed gradient over channels before the absolute value: take "
        "|gradient| first, then the maximum over channels.": signed.mean(dim=1).abs(),
        "you differentiated softmax probabilities: differentiate the logit (the model's raw "
        "output); probabilities saturate and mix in every other class.": max_abs(
            gradient(lambda z: select_logits(z.softmax(dim=1), target_index).sum())
        ),
        "you differentiated log-probabilities (log_softmax): differentiate the logit itself.": max_abs(
            gradient(lambda z: select_logits(z.log_softmax(dim=1), target_index).sum())
        ),
        "you ignored `target` and explained the predicted class (argmax): the requested "
        "class must be the one explained, even when the model predicts another.": max_abs(
            gradient(logit_of(predicted))
        ),
        "you differentiated the sum of all logits: select each image's target logit first.": max_abs(
            gradient(lambda z: z.sum())
        ),
        "you averaged the target logits over the batch (mean): that divides every map by the "
        "batch size. Sum them: each image's logit depends only on that image.": max_abs(signed) / len(images),
        "you multiplied the gradient by the input (that is gradient x input from notebook 01, "
        "not the saliency map).": max_abs(signed * images),
    }
    if len(set(targets)) > 1:
        first_only = torch.full_like(target_index, targets[0])
        mistakes[
            f"you used the first target ({targets[0]}) for every image: image b must use its "
            "own class target[b]."
        ] = max_abs(gradient(logit_of(first_only)))
    return mistakes


def _require_map_shape(result: torch.Tensor, images: torch.Tensor, what: str) -> None:
    batch, _, height, width = images.shape
    hints = {
        (batch, 3, height, width): "You kept the colour channels: reduce them with the maximum "
        "over dim=1.",
        (batch, 1, height, width): "A channel dimension of size 1 is left (keepdim=True?): drop it.",
        (batch, width, height): "Height and width are swapped: keep the [B, H, W] order of the images.",
        (3, height, width): "You reduced over the batch dimension (dim=0): reduce over the "
        "colour channels, dim=1, and keep one map per image.",
        (height, width): "Return one map per image, [B, H, W], even for a batch of one.",
        (batch, height): "You reduced over the width as well: reduce over the channels (dim=1) only.",
    }
    require_shape(result, (batch, height, width), what, hints, otherwise="One map per image: [B, H, W].")


def _means(maps: torch.Tensor) -> str:
    # means, not maxima: a mean over many pixels prints the same under any thread count
    return "[" + ", ".join(f"{v:.3g}" for v in maps.flatten(1).mean(dim=1).tolist()) + "]"


@exercise_check
def check_saliency_map(
    student_fn: SaliencyFn,
    model: nn.Module | None = None,
    images: torch.Tensor | None = None,
    target: Target | None = None,
    tol: float = 1e-4,
) -> None:
    """Check ``saliency_map(model, images, target) -> [B, H, W]`` against
    :func:`saliencylab.attribution.saliency`.

    Without arguments it runs on a fixed small CNN, once with one (non-predicted) class per
    image and once with a single int for both images. With ``model`` and ``images`` (e.g.
    EfficientNet-Lite0 on photos) it checks those, with ``target`` (default: for each image a
    class other than its prediction).
    """
    what = "saliency_map"
    if (model is None) != (images is None):
        raise ValueError("give both model= and images= (and optionally target=), or neither")
    model = fixed_cnn() if model is None else model
    images = fixed_images() if images is None else images
    per_image = non_predicted_targets(model, images) if target is None else as_target_list(target, len(images))
    cases: list[tuple[torch.Tensor, Target]] = [(images, per_image)] if target is not None else [
        (images, per_image), (images, per_image[0])
    ]
    cases += [(batch, per_image[: len(batch)]) for batch in image_batches_to_try(images)[1:]]
    lines = []
    for case_images, case_target in cases:
        case = f"images {tuple(case_images.shape)}, target={case_target!r}"
        got = run_student_twice(student_fn, model, case_images, case_target, what, case)
        _require_map_shape(got, case_images, what)
        case_targets = as_target_list(case_target, len(case_images))
        expected = saliency(model, case_images, case_targets)
        if not close(got, expected, tol):  # the mistakes cost a backward pass each: only on failure
            diagnose(got, expected, _saliency_map_mistakes(model, case_images, case_targets), f"{what} with {case}", tol)
        lines.append(f"{case}: mean per image expected {_means(expected)}, got {_means(got)}")
    passed("no parameter gradients touched\n  " + "\n  ".join(lines))
