"""Class visualisation (Simonyan et al. 2013; Yosinski et al. 2015): the image a class wants.

Gradient ascent on the target logit starting from noise, in plain pixel space, with the
regularisers of Yosinski et al. that keep the picture natural-looking: an L2 penalty pulling
pixels towards mid-grey (the model's zero after its built-in normalisation), a random
jitter (the image is rolled by a few pixels before each step and rolled back after), and a
periodic Gaussian blur. The image is clamped to ``[0, 1]`` after every step.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from saliencylab import _validate as validate
from saliencylab._core import class_count, eval_mode

GREY = 0.5


def class_visualization(
    model: nn.Module,
    target: int,
    size: int | tuple[int, int] | None = None,
    steps: int = 100,
    lr: float = 0.03,
    l2_reg: float = 1e-4,
    blur_every: int = 4,
    blur_sigma: float | None = None,
    jitter: int | None = None,
    seed: int = 0,
    progress: bool = True,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Synthesise an image that ``model`` classifies as ``target``.

    Each step: roll the image by a random ``(dy, dx)`` in ``[-jitter, jitter]``, compute
    ``score = logit[target] - l2_reg * ||image - 0.5||^2``, move ``lr`` along the gradient
    divided by its root-mean-square (so ``lr`` is the typical change of one pixel per step,
    whatever the model's gradient scale), roll back and clamp to ``[0, 1]``; every
    ``blur_every`` steps blur with ``blur_sigma`` (pixels).

    Args:
        model: classifier taking ``[N, 3, H, W]`` images in ``[0, 1]``, returning ``[N, C]``.
        target: the class index to visualise.
        size: ``int`` or ``(height, width)`` of the image to synthesise; ``None``: the
            model's ``input_size`` (set by ``load_model``: 224, or 32 for the digits CNN),
            else 224. Ignored with ``init``.
        steps: number of gradient steps.
        lr: step length, as the RMS change per pixel (pixel values in ``[0, 1]``).
        l2_reg: weight of the L2 penalty on ``image - 0.5``.
        blur_every: blur every this many steps (``0`` never blurs).
        blur_sigma: standard deviation of the blur in pixels; ``None``: 1 pixel per 224 of
            the shorter side (1.0 at 224x224), so small images are not washed out.
        jitter: largest random shift in pixels (``0`` disables it); ``None``: 1/14 of the
            shorter side (16 at 224x224, 2 at 32x32).
        seed: seeds the initial noise and the jitter: the same seed gives the same image.
        progress: show a tqdm progress bar.
        init: optional start image ``[3, H, W]`` or ``[1, 3, H, W]`` in ``[0, 1]`` instead of noise.
    Returns:
        ``[1, 3, H, W]`` in ``[0, 1]``, on the model's device.
    """
    target = validate.class_index(target, "target")
    steps = validate.positive_int(steps, "steps", minimum=0)
    lr = validate.positive_number(lr, "lr")
    l2_reg = validate.non_negative_number(l2_reg, "l2_reg")
    blur_every = validate.positive_int(blur_every, "blur_every", minimum=0)
    if blur_sigma is not None:
        blur_sigma = validate.positive_number(blur_sigma, "blur_sigma")
    if jitter is not None:
        jitter = validate.positive_int(jitter, "jitter", minimum=0)
    device = _model_device(model)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    if size is None:
        size = getattr(model, "input_size", None) or 224
    image = _start_image(init, size, generator, device)
    shorter_side = min(image.shape[-2:])
    blur_sigma = shorter_side / 224 if blur_sigma is None else blur_sigma
    jitter = round(shorter_side / 14) if jitter is None else jitter
    with eval_mode(model, image):
        validate.class_index(target, "target", classes=class_count(model, image))
        for step in _steps(steps, progress):
            shift = _random_shift(jitter, generator)
            image = _ascent_step(model, image, target, shift, lr, l2_reg)
            if blur_every and (step + 1) % blur_every == 0:
                image = _blur(image, blur_sigma)
    return image


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _start_image(
    init: torch.Tensor | None,
    size: int | tuple[int, int] | None,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """``init`` as a fresh ``[1, 3, H, W]`` tensor, or low-contrast noise around mid-grey."""
    if init is not None:
        batch, _ = validate.one_image(init, "init")
        return batch.detach().clone().clamp(0.0, 1.0).to(device)
    height, width = validate.int_pair(size, "size")
    # drawn on the CPU so a seed gives the same image on every device
    noise = torch.rand((1, 3, height, width), generator=generator)
    return (GREY + 0.2 * (noise - 0.5)).to(device)


def _steps(steps: int, progress: bool) -> range:
    if not progress:
        return range(steps)
    from tqdm.auto import tqdm

    return tqdm(range(steps), desc="class visualisation", unit="step")


def _random_shift(jitter: int, generator: torch.Generator) -> tuple[int, int]:
    if jitter == 0:
        return (0, 0)
    dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
    return (dy, dx)


def _ascent_step(
    model: nn.Module,
    image: torch.Tensor,
    target: int,
    shift: tuple[int, int],
    lr: float,
    l2_reg: float,
) -> torch.Tensor:
    """One regularised, RMS-normalised gradient step on the jittered image, ``[1, 3, H, W]``."""
    shifted = image.roll(shift, dims=(2, 3)).requires_grad_(True)
    with torch.enable_grad():
        score = model(shifted)[0, target] - l2_reg * (shifted - GREY).square().sum()
        (grad,) = torch.autograd.grad(score, shifted)
    rms = grad.square().mean().sqrt().clamp_min(1e-12)
    stepped = shifted.detach() + lr * grad / rms
    unshifted = stepped.roll((-shift[0], -shift[1]), dims=(2, 3))
    return unshifted.clamp(0.0, 1.0)


def _blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = min(math.ceil(3 * sigma), (min(image.shape[-2:]) - 1) // 2)
    if radius < 1:
        return image
    kernel = 2 * radius + 1
    return gaussian_blur(image, [kernel, kernel], [sigma, sigma])
