"""Small seeded models, inputs and recording wrappers that several notebooks' checks run the
students' functions on (each notebook's own fixed inputs stay in its module)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def kaiming_init_(model: nn.Module) -> nn.Module:
    """Re-draw every conv/linear weight with He initialisation and biases ~ N(0, 0.1^2) from
    the global generator: PyTorch's default init leaves a small random CNN's logits almost
    constant, so its maps would be close to 0 everywhere."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.normal_(module.bias, std=0.1)
    return model


def smooth_random_images(count: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    """``[count, 3, H, W]`` in ``[0, 1]``: seeded noise at a quarter of the size, upsampled, so
    the images have blobs (structure a CNN responds to) rather than pixel noise."""
    coarse_size = (max(size[0] // 4, 1), max(size[1] // 4, 1))
    coarse = torch.rand(count, 3, *coarse_size, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)


@dataclass
class ForwardCall:
    """One forward pass seen by :class:`ForwardRecorder`."""

    batch_size: int
    grad_enabled: bool
    output_requires_grad: bool


class ForwardRecorder(nn.Module):
    """Wraps a model and records every forward pass (batch size, autograd on or off)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls: list[ForwardCall] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images)
        call = ForwardCall(images.shape[0], torch.is_grad_enabled(), logits.requires_grad)
        self.calls.append(call)
        return logits


class RecordingModel(nn.Module):
    """Wraps a classifier and keeps a copy of every batch it sees with gradients on.

    ``batches`` holds the ``[n, 3, H, W]`` inputs of the forward passes that could be
    differentiated (grad mode on and an input that requires grad): the passes SmoothGrad
    takes its gradients from. Forward passes under ``no_grad`` are not recorded.
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.batches: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and images.requires_grad:
            self.batches.append(images.detach().clone())
        return self.inner(images)


def tiny_smooth_classifier(seed: int = 0, classes: int = 3) -> nn.Module:
    """A small CNN (``[N,3,H,W] -> [N,classes]``) with fixed random weights, in eval mode.

    Its parameters require grad so that a function calling ``.backward()`` is caught.
    """
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(3),
        nn.Flatten(),
        nn.Linear(54, classes),
    )
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return model.eval()


def seeded_model(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build()
    return model.eval()


def tiny_cnn() -> nn.Module:
    """A 5-class CNN on ``[N, 3, 6, 6]``; its parameters require grad, so a stray
    ``.backward()`` shows up on their ``.grad``."""
    return seeded_model(
        lambda: nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)
        ),
        seed=7,
    )


def image_with_extremes() -> torch.Tensor:
    """``[1, 3, 6, 6]`` in ``[0, 1]`` with some pixels exactly at 0 and 1 (so clamping matters)."""
    generator = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 6, 6, generator=generator)
    image[0, :, 0, :] = 1.0
    image[0, :, -1, :] = 0.0
    return image


def fixed_occlusion_model(seed: int = 7, classes: int = 5) -> nn.Module:
    """A small CNN ``[N, 3, H, W] -> [N, classes]`` with trainable weights (so a forward pass with
    autograd on returns logits that require grad) and a 3x3 pooling grid before its linear
    layer, so where a window sits changes the score differently across the image."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # nn.Conv2d / nn.Linear initialise from the global generator
        model = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(3),
            nn.Flatten(),
            nn.Linear(72, classes),
        )
        kaiming_init_(model)
    return model.eval()
