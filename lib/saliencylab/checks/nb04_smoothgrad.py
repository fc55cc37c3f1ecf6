"""Checks for notebook 04 (SmoothGrad, Smilkov et al. 2017).

SmoothGrad is random, so its result cannot be compared with a fixed reference value. Instead
the check runs the student's function on a tiny model wrapped in a recorder that keeps every
noisy batch the function sends through it. From the recorded batches it can tell, exactly:
how the work was batched, how large the noise was, whether the copies got different noise,
and what the map must be *given that noise* (mean of the gradients, then |.|, max over
channels), so every slip gets its own explanation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from saliencylab._core import input_gradients
from saliencylab.checks._common import diagnose, fail, passed, require_shape, require_tensor, snapshot_side_effects
from saliencylab.checks._integrity import exercise_check
from saliencylab.checks._running import Batching, require_batched
from saliencylab.checks._promises import Promises, batch_sizes_to_try
from saliencylab.checks._fixtures import RecordingModel, tiny_smooth_classifier

__all__ = ["check_smoothgrad_map"]

SmoothGradFn = Callable[..., torch.Tensor]


# read from the exercise's docstring (tests/test_promises.py): batch_size = at most this many copies
PROMISES = {"smoothgrad_map": Promises(chunked_by_batch_size=True)}
NOISY_COPIES = Batching(item="sample", items="noisy copies", count="samples")


def _check_image(size: tuple[int, int], seed: int) -> torch.Tensor:
    """A fixed ``[3, H, W]`` image with values in [0.2, 0.7]: its range (0.5) is not 1, so
    noise scaled by the range and noise with an absolute std differ by a factor of 2."""
    generator = torch.Generator().manual_seed(seed + 1)
    image = torch.rand(3, *size, generator=generator)
    image = 0.2 + 0.5 * (image - image.min()) / (image.max() - image.min())
    return image


def _run(student_fn: SmoothGradFn, model: nn.Module, image: torch.Tensor, target: int,
         samples: int, noise_level: float, batch_size: int, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Call the student's function with a fresh recorder and a seeded generator."""
    recorder = RecordingModel(model)
    generator = torch.Generator().manual_seed(seed)
    verify = snapshot_side_effects(recorder)
    result = student_fn(recorder, image.clone(), target, samples=samples, noise_level=noise_level,
                        batch_size=batch_size, generator=generator)
    verify("smoothgrad_map")
    result = require_tensor(result, "smoothgrad_map")
    return result.detach(), recorder.batches


def _check_noise(noise: torch.Tensor, image: torch.Tensor, noise_level: float) -> float:
    """Check the recorded ``noise [n, 3, H, W]``; return its measured std."""
    value_range = (image.max() - image.min()).item()
    sigma = noise_level * value_range
    measured = noise.std().item()
    if measured < 1e-6:
        fail("smoothgrad_map sent the unchanged image to the model: no noise was added.")
    if abs(noise.mean().item()) > 0.2 * sigma:
        fail(
            f"the noise has mean {noise.mean().item():.3f}, expected about 0: draw Gaussian noise "
            "with torch.randn (torch.rand is uniform on [0, 1), which shifts the image)."
        )
    flat = noise.flatten(1)
    if flat.shape[0] > 1 and torch.cdist(flat, flat).add(torch.eye(flat.shape[0]) * 1e9).min() < 1e-6:
        fail(
            "several noisy copies got exactly the same noise: draw fresh noise for every sample "
            "(torch.randn(n, 3, H, W, generator=generator) per batch), and do not re-seed the "
            "generator inside the loop."
        )
    if abs(measured / noise_level - 1) < 0.15 and abs(measured / sigma - 1) > 0.3:
        fail(
            f"the noise std is {measured:.3f} = noise_level: you used noise_level as an absolute "
            f"std. SmoothGrad scales it by the image's value range: sigma = noise_level * "
            f"(image.max() - image.min()) = {sigma:.3f} here, so the same noise_level means the "
            "same relative noise whatever the input's scale."
        )
    if abs(measured / sigma - 1) > 0.15:
        fail(
            f"the noise std is {measured:.3f}, expected sigma = noise_level * (image.max() - "
            f"image.min()) = {sigma:.3f}."
        )
    return measured


def _expected_maps(
    model: nn.Module, batches: list[torch.Tensor], target: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SmoothGrad of the recorded noisy batches (each ``[n_i, 3, H, W]``), and what common
    slips would give on the same noise."""
    noisy = torch.cat(batches)
    samples, last = noisy.shape[0], batches[-1].shape[0]
    targets = torch.full((samples,), target, dtype=torch.long)
    grads = input_gradients(model, noisy, targets)
    mean = grads.mean(dim=0)
    expected = mean.abs().amax(dim=0)
    mistakes = {
        "you summed the gradients instead of averaging them (divide by the number of samples; "
        "the sum grows with `samples`).": grads.sum(dim=0).abs().amax(dim=0),
        "you took |gradient| before averaging (mean of absolute maps). That is a different "
        "variant (it never lets opposite signs cancel, so it keeps more noise); this exercise "
        "averages the raw gradients first, then takes |.| and the max over channels.": grads.abs().mean(dim=0).amax(dim=0),
        "you forgot the absolute value: take mean_gradient.abs() before the max over "
        "channels.": mean.amax(dim=0),
        "you summed |.| over the colour channels; take the max over channels "
        "(.amax(dim=0)).": mean.abs().sum(dim=0),
        "you averaged |.| over the colour channels; take the max over channels "
        "(.amax(dim=0)).": mean.abs().mean(dim=0),
        "only the last batch's gradients reached the result (the running total was overwritten "
        "with `=` instead of accumulated with `+=`?).": (grads[-last:].sum(dim=0) / samples).abs().amax(dim=0),
        "only the last batch's gradients reached the result (the mean of the last batch instead "
        "of all samples).": grads[-last:].mean(dim=0).abs().amax(dim=0),
    }
    return expected, mistakes


@exercise_check
def check_smoothgrad_map(
    student_fn: SmoothGradFn,
    *,
    samples: int = 8,
    noise_level: float = 0.2,
    batch_size: int = 3,
    image_size: tuple[int, int] = (12, 12),
    target: int = 1,
    seed: int = 0,
    model: nn.Module | None = None,
    image: torch.Tensor | None = None,
) -> None:
    """Check ``smoothgrad_map(model, image, target, samples, noise_level, batch_size, generator)``.

    Runs it on a tiny CNN and a fixed ``[3, H, W]`` image (or the ``model`` and ``image``
    given; ``image_size`` is then the image's); fails with the likely mistake
    (batching, noise scale, repeated noise, generator ignored, sum/abs/channel slips, hooks
    or parameter gradients left behind); prints what it measured on success.
    """
    model = tiny_smooth_classifier(seed) if model is None else model
    image = _check_image(image_size, seed) if image is None else image
    image_size = tuple(image.shape[-2:])
    result, batches = _run(student_fn, model, image, target, samples, noise_level, batch_size, seed)
    require_shape(
        result, image_size, "smoothgrad_map's result",
        hint="One image [3, H, W] gives one map [H, W]: average the gradients over the samples, "
        "then take |.| and the max over the colour channels.",
    )
    require_batched([b.shape[0] for b in batches], samples, batch_size, "smoothgrad_map", NOISY_COPIES)
    measured_std = _check_noise(torch.cat(batches) - image, image, noise_level)
    expected, mistakes = _expected_maps(model, batches, target)
    diagnose(result, expected, mistakes, "smoothgrad_map's result", tol=1e-4)

    torch.manual_seed(seed + 123)  # a different global RNG state must not change the answer
    again, _ = _run(student_fn, model, image, target, samples, noise_level, batch_size, seed)
    if not torch.allclose(again, result, atol=1e-6):
        fail(
            "two calls with identically seeded generators gave different maps: draw the noise "
            "from the generator you are given (torch.randn(..., generator=generator)), not from "
            "the global random number generator, so results are reproducible."
        )
    other, _ = _run(student_fn, model, image, target, samples, noise_level, batch_size, seed + 1)
    if torch.allclose(other, result, atol=1e-6):
        fail(
            "generators with different seeds gave the same map: do not call "
            "generator.manual_seed(...) inside smoothgrad_map; draw from the generator as given."
        )
    other_sizes = batch_sizes_to_try(samples, batch_size)[1:]
    for size in other_sizes:
        _check_other_batch_size(student_fn, model, image, target, samples, noise_level, size, seed)
    sizes = [b.shape[0] for b in batches]
    passed(
        f"{len(batches)} passes of {sizes} noisy copies (samples={samples}, batch_size={batch_size}; "
        f"batch_size {' and '.join(map(str, other_sizes))} give the same map), "
        f"noise std {measured_std:.3f} (expected {noise_level * (image.max() - image.min()).item():.3f}), "
        f"map {tuple(result.shape)}, max {result.max().item():.4f} (expected {expected.max().item():.4f})",
    )


def _check_other_batch_size(
    student_fn: SmoothGradFn, model: nn.Module, image: torch.Tensor, target: int,
    samples: int, noise_level: float, batch_size: int, seed: int,
) -> None:
    """Any batch size gives the SmoothGrad of the copies it drew: 1, or more than ``samples``."""
    result, batches = _run(student_fn, model, image, target, samples, noise_level, batch_size, seed)
    require_batched([b.shape[0] for b in batches], samples, batch_size, "smoothgrad_map", NOISY_COPIES)
    expected, mistakes = _expected_maps(model, batches, target)
    diagnose(result, expected, mistakes, f"smoothgrad_map's result with batch_size={batch_size}", tol=1e-4)
