"""Shared fixtures: the offline EfficientNet-Lite0, the digits CNN and a cat photo.

Models are session-scoped (loaded once per test process) and frozen (eval mode,
``requires_grad=False``); do not modify them in a test. Image fixtures give each test its
own copy, so a test that writes into an image cannot change another test's input.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from saliencylab.images import sample_image, to_tensor
from saliencylab.models import load_model


@pytest.fixture(scope="session")
def lite0() -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights (offline)."""
    return load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def digits_cnn() -> nn.Module:
    """The small CNN on scikit-learn's digits, inputs ``[B, 3, 32, 32]``."""
    return load_model("digits_cnn")


@pytest.fixture(scope="session")
def chelsea_session() -> torch.Tensor:
    """Chelsea the cat, one shared tensor for module- or session-scoped fixtures: read it,
    never write into it (use ``chelsea`` in tests)."""
    return to_tensor(sample_image("chelsea"))


@pytest.fixture
def chelsea(chelsea_session: torch.Tensor) -> torch.Tensor:
    """Chelsea the cat, ``[1, 3, 224, 224]`` in ``[0, 1]`` (a fresh copy per test)."""
    return chelsea_session.clone()
