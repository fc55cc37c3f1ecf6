"""A small CNN on scikit-learn's bundled handwritten digits, trained in seconds on a CPU.

The digits are 8x8 greyscale with values 0..16. To follow the course convention (RGB float
images ``[B, 3, H, W]`` in ``[0, 1]``) they are scaled to ``[0, 1]``, upsampled bilinearly to
``32 x 32`` and repeated to 3 channels, so every attribution method runs on this model
unchanged. The train/test split is fixed (seeded), the same on every machine.

The trained weights ship inside the package (``saliencylab/data/digits_cnn.pt``, 50 KB), so a
pip install (Colab) uses exactly the model the course's outputs were made with. Retraining is
seeded and deterministic on one machine, but not across machines: another CPU rounds the
convolutions differently, the weights drift apart over the epochs, and the held-out accuracy
lands within about a percentage point of the shipped model's (measured 98.2-98.9 % against
98.4 %).

``load_model("digits_cnn")`` (in :mod:`saliencylab.models`) loads the stored weights; this
module holds the architecture, the data and the training recipe that produced them. The same
recipe trains the two models of lesson 13 on digits with a planted mark
(:mod:`saliencylab.shortcut`); their weights ship and load the same way, by name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from saliencylab import _validate as validate
from saliencylab._core import SaliencyLabError, course_device

__all__ = [
    "DIGITS_IMAGE_SIZE",
    "DIGITS_CLASS_NAMES",
    "WEIGHTS_FILENAME",
    "PACKAGED_DATA_DIR",
    "DigitsTrainingSettings",
    "build_digits_cnn",
    "load_digits_images",
    "fit_digits_cnn",
    "train_digits_cnn",
    "save_digits_cnn",
    "TRAINED_MODEL_NAMES",
    "weights_candidates",
    "trainer",
    "load_trained_state_dict",
    "accuracy",
    "state_dict_sha256",
]

DIGITS_IMAGE_SIZE = 32
"""Side of the square images the digits CNN takes: the 8x8 digits upsampled 4x."""

DIGITS_CLASS_NAMES = tuple(str(digit) for digit in range(10))

WEIGHTS_FILENAME = "digits_cnn.pt"
PACKAGED_DATA_DIR = Path(__file__).resolve().parent / "data"
"""The weights shipped with the package (``saliencylab/data``), in the wheel too."""
_TEST_FRACTION = 0.25
_SPLIT_SEED = 0


@dataclass(frozen=True)
class DigitsTrainingSettings:
    """Everything that determines the trained weights (stored next to them in data/)."""

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-2  # the peak of a one-cycle schedule
    seed: int = 0
    num_threads: int = 1  # one thread: on a given CPU the same summation order, the same weights


def build_digits_cnn() -> nn.Sequential:
    """The digits CNN with fresh (random, from torch's global RNG) weights.

    ``[B, 3, 32, 32]`` in ``[0, 1]`` -> logits ``[B, 10]``. Layout::

        normalize   (x - 0.5) / 0.5
        features    block1 (3x3 conv 8, ReLU, max-pool)   32 -> 16
                    block2 (3x3 conv 16, ReLU, max-pool)  16 -> 8
                    block3 (3x3 conv 32, ReLU)             8 x 8  <- Grad-CAM's default layer
        classifier  max-pool to 4 x 4, flatten, linear 512 -> 10

    (A flattened 4 x 4 map keeps where strokes are; global average pooling lost ~5 points
    of accuracy.)
    Plain ``nn.ReLU`` modules (not in-place), so guided backprop and deconvnet hooks see
    every activation.
    """
    from saliencylab.models import Normalize  # models imports this module lazily too

    def conv_block(channels_in: int, channels_out: int, pool: bool) -> nn.Sequential:
        layers: list[nn.Module] = [
            nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1),
            nn.ReLU(),
        ]
        if pool:
            layers.append(nn.MaxPool2d(2))
        return nn.Sequential(*layers)

    return nn.Sequential(
        OrderedDict(
            normalize=Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
            features=nn.Sequential(
                OrderedDict(
                    block1=conv_block(3, 8, pool=True),
                    block2=conv_block(8, 16, pool=True),
                    block3=conv_block(16, 32, pool=False),
                )
            ),
            classifier=nn.Sequential(
                OrderedDict(
                    pool=nn.MaxPool2d(2),
                    flatten=nn.Flatten(),
                    fc=nn.Linear(32 * 4 * 4, len(DIGITS_CLASS_NAMES)),
                )
            ),
        )
    )


def load_digits_images(
    split: str = "test", device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as course images (bundled with scikit-learn: no download).

    Args:
        split: ``"train"`` (75 %), ``"test"`` (25 %, held out from training) or ``"all"``.
            The split is fixed (a seeded permutation), the same on every machine.
        device: where the tensors go; ``None``: :func:`~saliencylab.models.course_device`
            (the CPU unless ``$SALIENCYLAB_DEVICE`` says otherwise).
    Returns:
        ``(images [N, 3, 32, 32] float in [0, 1], labels [N] long)``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = torch.as_tensor(digits.images, dtype=torch.float32) / 16.0  # [N, 8, 8]
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    indices = _split_indices(len(labels))
    validate.one_of(split, "split", sorted(indices))
    chosen = torch.as_tensor(indices[split])
    device = course_device() if device is None else device
    return _upsample_to_rgb(pixels[chosen]).to(device), labels[chosen].to(device)


def _split_indices(count: int) -> dict[str, np.ndarray]:
    # numpy's legacy RandomState stream is frozen across numpy versions: a stable split.
    order = np.random.RandomState(_SPLIT_SEED).permutation(count)
    test_count = int(round(count * _TEST_FRACTION))
    return {
        "test": np.sort(order[:test_count]),
        "train": np.sort(order[test_count:]),
        "all": np.arange(count),
    }


def _upsample_to_rgb(pixels: torch.Tensor) -> torch.Tensor:
    """``[N, 8, 8]`` in [0, 1] -> ``[N, 3, 32, 32]`` (bilinear, then 3 equal channels)."""
    upsampled = F.interpolate(
        pixels.unsqueeze(1),
        size=(DIGITS_IMAGE_SIZE, DIGITS_IMAGE_SIZE),
        mode="bilinear",
        align_corners=False,
    )
    return upsampled.clamp(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()


def train_digits_cnn(
    settings: DigitsTrainingSettings = DigitsTrainingSettings(),
) -> tuple[nn.Sequential, dict]:
    """Train the digits CNN from scratch, deterministically (a few seconds on a CPU).

    Uses seeded initialisation and batch order, deterministic algorithms and a fixed
    thread count; the global RNG, thread count and determinism flag are restored after.

    Returns:
        ``(model in eval mode with requires_grad False, info)`` where ``info`` holds the
        held-out ``test_accuracy``, the ``settings`` and the weights' ``sha256``.
    """
    # On the CPU whatever the course device: the shipped weights were made there.
    train_images, train_labels = load_digits_images("train", device="cpu")
    test_images, test_labels = load_digits_images("test", device="cpu")
    model = fit_digits_cnn(train_images, train_labels, settings)
    info = {
        "test_accuracy": accuracy(model, test_images, test_labels),
        "test_images": len(test_labels),
        "train_images": len(train_labels),
        "image_size": DIGITS_IMAGE_SIZE,
        "settings": asdict(settings),
        "sha256": state_dict_sha256(model.state_dict()),
        "torch_version": torch.__version__,
    }
    return model, info


def fit_digits_cnn(
    images: torch.Tensor, labels: torch.Tensor, settings: DigitsTrainingSettings = DigitsTrainingSettings()
) -> nn.Sequential:
    """The course's recipe: a fresh digits CNN (seeded) trained on ``images [N, 3, 32, 32]``
    (CPU tensors in ``[0, 1]``) and ``labels [N]``, deterministically on one machine.

    Returns the model in eval mode with ``requires_grad`` False on every parameter.
    """
    with _deterministic_torch(settings.seed, settings.num_threads):
        model = build_digits_cnn()
        _fit(model, images, labels, settings)
    return model.eval().requires_grad_(False)


def _fit(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: DigitsTrainingSettings,
) -> None:
    """Adam with a one-cycle learning-rate schedule; batches drawn by a seeded generator."""
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    steps_per_epoch = -(-len(labels) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.learning_rate, total_steps=settings.epochs * steps_per_epoch
    )
    model.train()
    for _ in range(settings.epochs):
        order = torch.randperm(len(labels), generator=generator)
        for batch in order.split(settings.batch_size):
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()


@contextlib.contextmanager
def _deterministic_torch(seed: int, num_threads: int) -> Iterator[None]:
    """Seed torch, fix the thread count and demand deterministic kernels; undo it all after."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(num_threads)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic)
            torch.set_num_threads(threads)


def accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512
) -> float:
    """Fraction of ``images [N, 3, H, W]`` whose top class equals ``labels [N]``."""
    from saliencylab._core import batch_slices, eval_mode

    correct = 0
    with eval_mode(model), torch.no_grad():
        for part in batch_slices(len(labels), batch_size):
            correct += (model(images[part]).argmax(dim=1) == labels[part]).sum().item()
    return correct / len(labels)


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """A fingerprint of the weights' values (names, shapes, dtypes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- stored weights

def weights_candidates(name: str = "digits_cnn") -> list[Path]:
    """Where the trained weights of model ``name`` (:data:`TRAINED_MODEL_NAMES`) are looked
    for, in order.

    ``$SALIENCYLAB_DATA/<name>.pt``, the weights shipped in the package
    (``saliencylab/data/<name>.pt``), and the cache ``~/.cache/saliencylab/<name>.pt``
    (``$XDG_CACHE_HOME`` is honoured).
    """
    filename = _weights_filename(name)
    folders = [Path(os.environ["SALIENCYLAB_DATA"]).expanduser()] if os.environ.get(
        "SALIENCYLAB_DATA"
    ) else []
    folders += [PACKAGED_DATA_DIR, _cache_dir()]
    return [folder / filename for folder in folders]


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "saliencylab"


TRAINED_MODEL_NAMES = ("digits_cnn", "digits_cnn_shortcut", "digits_cnn_shortcut_twin")
"""The models trained with this module's recipe whose weights ship in ``saliencylab/data``."""


def _weights_filename(name: str) -> str:
    validate.one_of(name, "name", TRAINED_MODEL_NAMES)
    return f"{name}.pt"


def trainer(name: str = "digits_cnn") -> Callable[[], tuple[nn.Sequential, dict]]:
    """The function that trains model ``name`` from scratch, returning ``(model, info)``."""
    validate.one_of(name, "name", TRAINED_MODEL_NAMES)
    if name == "digits_cnn":
        return train_digits_cnn
    from saliencylab import shortcut  # it builds on this module

    return shortcut.TRAINERS[name]


def load_trained_state_dict(name: str = "digits_cnn") -> dict[str, torch.Tensor]:
    """The trained weights of model ``name``: from the first file in
    :func:`weights_candidates`, or, when there is none (a package whose data folder was
    removed), trained now (seconds) and cached."""
    for path in weights_candidates(name):
        if path.is_file():
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:
                raise SaliencyLabError(
                    f"could not read the {name} weights {path} ({error}). Delete the file "
                    f"to have them retrained, or run tools/train_digits_cnn.py --model {name}."
                ) from error
    cache = _cache_dir() / _weights_filename(name)
    print(
        f"saliencylab: no trained {name} found; training it now (a few seconds, once) "
        f"and caching it in {cache}",
        file=sys.stderr,
    )
    model, info = trainer(name)()
    try:
        save_digits_cnn(model, info, cache)
    except OSError as error:
        print(f"saliencylab: could not cache the weights ({error}).", file=sys.stderr)
    print(
        f"saliencylab: {name} trained, held-out accuracy {info['test_accuracy']:.1%}.",
        file=sys.stderr,
    )
    return model.state_dict()


def save_digits_cnn(model: nn.Module, info: dict, path: Path) -> None:
    """Write the weights to ``path`` (``.pt``) and ``info`` next to it (``.json``).

    Written to a temporary file first and renamed, so a reader never sees half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(model.state_dict(), temporary)
    os.replace(temporary, path)
    path.with_suffix(".json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
