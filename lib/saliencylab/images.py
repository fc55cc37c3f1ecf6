"""Images in, tensors out: photos from files, arrays or the installed packages.

Every model in the course takes float tensors ``[B, 3, H, W]`` with RGB values in ``[0, 1]``.
:func:`load_image` turns whatever you have (a path, a sample name, a PIL image, a numpy
array) into an 8-bit RGB PIL image; :func:`to_tensor` turns that into ``[1, 3, size, size]``;
:func:`to_numpy_image` turns a tensor back into an ``H x W x 3`` array for ``plt.imshow``.

The sample photos (:data:`SAMPLE_IMAGES`) ship inside scikit-image, matplotlib and
scikit-learn, so they are on disk wherever the course runs: nothing is downloaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Union

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from torchvision.transforms.v2 import functional as TF

from saliencylab import _validate as validate
from saliencylab._core import SaliencyLabError, course_device
from saliencylab._validate import NameLookupError, UnknownNameError, unknown_name_error

__all__ = [
    "SAMPLE_IMAGES",
    "SampleImage",
    "Box",
    "NameLookupError",
    "UnknownNameError",
    "load_image",
    "sample_image",
    "to_tensor",
    "to_numpy_image",
    "side_by_side",
]

ImageLike = Union[str, Path, PIL.Image.Image, np.ndarray, torch.Tensor]


# ---------------------------------------------------------------- sample photos

def _skimage_data_dir() -> Path:
    return Path(importlib.import_module("skimage.data").data_dir)


def _matplotlib_sample_dir() -> Path:
    return Path(importlib.import_module("matplotlib").get_data_path()) / "sample_data"


def _sklearn_images_dir() -> Path:
    # The folder sklearn.datasets.load_sample_image reads from, found without importing
    # sklearn.datasets (seconds of imports for two file names).
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise SaliencyLabError("scikit-learn is not installed: pip install scikit-learn.")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "images"


_PACKAGE_DIRS = {
    "scikit-image": _skimage_data_dir,
    "matplotlib": _matplotlib_sample_dir,
    "scikit-learn": _sklearn_images_dir,
}


@dataclass(frozen=True)
class SampleImage:
    """A photo shipped inside an installed package (no download)."""

    description: str
    package: str
    filename: str
    licence: str

    @property
    def path(self) -> Path:
        """Where the installed package keeps the file."""
        return _PACKAGE_DIRS[self.package]() / self.filename


SAMPLE_IMAGES: dict[str, SampleImage] = {
    "chelsea": SampleImage(
        "Chelsea the cat", "scikit-image", "chelsea.png",
        "CC0, by the photographer (Stefan van der Walt)"),
    "coffee": SampleImage(
        "A cup of espresso, courtesy of Pikolo Espresso Bar", "scikit-image", "coffee.png",
        "CC0, by the photographer (Rachel Michetti)"),
    "rocket": SampleImage(
        "Falcon 9 launching DSCOVR (SpaceX)", "scikit-image", "rocket.jpg",
        "public domain (released by SpaceX)"),
    "astronaut": SampleImage(
        "Astronaut Eileen Collins (NASA)", "scikit-image", "astronaut.png",
        "public domain (no known copyright restrictions)"),
    "motorcycle": SampleImage(
        "A motorcycle in a workshop: the left image of a Middlebury 2014 stereo pair",
        "scikit-image", "motorcycle_left.png",
        "not stated by scikit-image (Middlebury 2014 stereo data set, Scharstein et al.)"),
    "camera": SampleImage(
        "A photographer with a camera on a tripod (greyscale, returned as RGB)",
        "scikit-image", "camera.png", "CC0, by the photographer (Lav Varshney)"),
    "horse": SampleImage(
        "Black silhouette of a horse (RGBA, composited on white)", "scikit-image",
        "horse.png", "CC0 (Andreas Preuss, openclipart)"),
    "coins": SampleImage(
        "Greek coins from Pompeii, Brooklyn Museum (greyscale, returned as RGB)",
        "scikit-image", "coins.png", "no known copyright restrictions"),
    "hubble_deep_field": SampleImage(
        "Hubble eXtreme Deep Field (NASA)", "scikit-image", "hubble_deep_field.jpg",
        "public domain (NASA)"),
    "grace_hopper": SampleImage(
        "Rear Admiral Grace Hopper in uniform", "matplotlib", "grace_hopper.jpg",
        "public domain (official U.S. Navy photograph)"),
    "china": SampleImage(
        "A pagoda by a lake in China", "scikit-learn", "china.jpg",
        "CC BY 2.0, danielbuechele (flickr)"),
    "flower": SampleImage(
        "An orange dahlia", "scikit-learn", "flower.jpg", "CC BY 2.0, vultilion (flickr)"),
}


def sample_image(name: str) -> PIL.Image.Image:
    """One of :data:`SAMPLE_IMAGES` (e.g. ``"chelsea"``) as an 8-bit RGB PIL image.

    Raises:
        UnknownNameError: unknown name (suggests the closest, lists all).
        SaliencyLabError: the installed package does not contain the file.
    """
    validate.known_name(name, "sample image", list(SAMPLE_IMAGES))
    info = SAMPLE_IMAGES[name]
    path = info.path
    if not path.is_file():
        raise SaliencyLabError(
            f"sample image {name!r} should be {path}, shipped with {info.package}, but the "
            f"installed {info.package} does not have it. Reinstall {info.package}, or use "
            f"another sample: {', '.join(SAMPLE_IMAGES)}."
        )
    return _open_image_file(path)


# ---------------------------------------------------------------- loading anything as RGB

def load_image(image: ImageLike) -> PIL.Image.Image:
    """Load an image as an 8-bit RGB PIL image.

    Args:
        image: a file path (``str`` or ``Path``); a sample name from :data:`SAMPLE_IMAGES`;
            a PIL image; a numpy array ``H x W``, ``H x W x 1``, ``H x W x 3`` or
            ``H x W x 4`` of uint8, uint16 (16-bit), bool, or float in ``[0, 1]``; or an
            image tensor ``[3, H, W]`` / ``[1, 3, H, W]`` in ``[0, 1]``. An existing file
            wins over a sample of the same name.
    Greyscale (also 16-bit) is repeated to three channels; palette images are expanded;
    images with transparency (RGBA, LA, palette with transparency) are composited on a
    **white** background; EXIF rotation of photos is applied.
    """
    if isinstance(image, PIL.Image.Image):
        return _to_rgb(image)
    if isinstance(image, np.ndarray):
        return _to_rgb(_array_to_pil(image))
    if isinstance(image, torch.Tensor):
        return _to_rgb(_array_to_pil(to_numpy_image(image)))
    if isinstance(image, (str, Path)):
        return _load_path_or_sample(image)
    raise SaliencyLabError(
        f"cannot load an image from a {type(image).__name__}: give a file path, a sample "
        f"name ({', '.join(SAMPLE_IMAGES)}), a PIL image, a numpy array or an image tensor."
    )


def _load_path_or_sample(source: str | Path) -> PIL.Image.Image:
    path = Path(source).expanduser()
    if path.is_file():
        return _open_image_file(path)
    if isinstance(source, str) and source in SAMPLE_IMAGES:
        return sample_image(source)
    looks_like_path = isinstance(source, Path) or path.suffix or len(path.parts) > 1
    if looks_like_path:
        problem = "is a folder, not an image file" if path.is_dir() else "does not exist"
        raise SaliencyLabError(f"cannot load image {str(path)!r}: the path {problem}.")
    raise unknown_name_error(
        "sample image", source, list(SAMPLE_IMAGES), note=f" (and there is no file {str(path)!r})"
    )


def _open_image_file(path: Path) -> PIL.Image.Image:
    try:
        with PIL.Image.open(path) as opened:
            opened.load()
            return _to_rgb(PIL.ImageOps.exif_transpose(opened))
    except PIL.UnidentifiedImageError as error:
        raise SaliencyLabError(
            f"cannot load image {str(path)!r}: it is not an image file Pillow can read "
            "(PNG, JPEG, GIF, TIFF, BMP, WebP, ...)."
        ) from error


def _to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """Any PIL mode -> RGB (8 bit), transparency composited on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale (PNG "I;16", older Pillow "I"): scale 0..65535 to 0..255.
        values = np.asarray(image, dtype=np.float64)
        image = PIL.Image.fromarray(np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8))
    if image.mode == "P" or image.mode == "PA" or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = PIL.Image.alpha_composite(white, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image.copy()


def _array_to_pil(array: np.ndarray) -> PIL.Image.Image:
    """``H x W [x 1|3|4]`` array -> PIL image (8 bit, or RGBA), with clear errors."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        hint = (
            " It looks channels-first: use array.transpose(1, 2, 0)."
            if array.ndim == 3 and array.shape[0] in (1, 3, 4) else ""
        )
        raise SaliencyLabError(
            f"a numpy image must be H x W, H x W x 3 or H x W x 4, got shape "
            f"{array.shape}.{hint}"
        )
    if min(array.shape[:2]) == 0:
        raise SaliencyLabError(f"the numpy image is empty (shape {array.shape}).")
    return PIL.Image.fromarray(np.ascontiguousarray(_as_uint8(array)))


def _as_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return np.round(array / 257.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        finite = np.nan_to_num(array.astype(np.float64), nan=0.0)
        low, high = float(finite.min()), float(finite.max())
        if low < -1e-3 or high > 1 + 1e-3:
            warnings.warn(
                f"float image values are in [{low:.3g}, {high:.3g}], outside [0, 1]: clipped. "
                "If they are 0..255, divide by 255 first.",
                stacklevel=4,
            )
        return np.round(np.clip(finite, 0.0, 1.0) * 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer) and array.min() >= 0 and array.max() <= 255:
        return array.astype(np.uint8)
    raise SaliencyLabError(
        f"cannot read a numpy image of dtype {array.dtype} with values in "
        f"[{array.min()}, {array.max()}]: use uint8 (0..255), uint16 (0..65535), bool, or "
        "float in [0, 1]."
    )


# ---------------------------------------------------------------- tensors

def to_tensor(image: ImageLike, size: int | None = 224) -> torch.Tensor:
    """An image as a model input ``[1, 3, size, size]``, float RGB in ``[0, 1]``.

    The shorter side is resized to ``size`` (bilinear, antialiased), then the centre is
    cropped to a square. ``size=None`` keeps the original ``[1, 3, H, W]``. Accepts anything
    :func:`load_image` accepts; an image tensor keeps its float values (no 8-bit rounding) and
    its device, anything else goes to :func:`~saliencylab.models.course_device` (the CPU unless
    ``$SALIENCYLAB_DEVICE`` says otherwise).
    """
    if size is not None:
        size = validate.positive_int(size, "size")
    if isinstance(image, torch.Tensor):
        tensor = _single_image(image, "to_tensor").float()
    else:
        pixels = TF.pil_to_tensor(load_image(image)).to(course_device())
        tensor = TF.to_dtype(pixels, torch.float32, scale=True)
    if size is not None:
        tensor = TF.center_crop(TF.resize(tensor, size, antialias=True), [size, size])
    return tensor.clamp(0.0, 1.0).unsqueeze(0)


def to_numpy_image(tensor: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` or ``[1, 3, H, W]`` tensor -> ``H x W x 3`` float32 array in ``[0, 1]``
    for ``plt.imshow`` (values outside ``[0, 1]`` are clipped, with a warning)."""
    image = _single_image(tensor, "to_numpy_image").detach().clamp(0.0, 1.0)
    return image.permute(1, 2, 0).cpu().numpy()


def _single_image(tensor: torch.Tensor, caller: str) -> torch.Tensor:
    """Check ``[3, H, W]`` / ``[1, 3, H, W]`` and return ``[3, H, W]``."""
    batch, _ = validate.one_image(tensor, f"{caller}'s image")
    return batch[0]


class Box(NamedTuple):
    """A rectangle in pixel coordinates: rows ``y0:y1``, columns ``x0:x1`` (ends excluded)."""

    x0: int
    y0: int
    x1: int
    y1: int

    def mask(self, height: int, width: int) -> torch.Tensor:
        """``[height, width]`` bool mask, True inside the box."""
        inside = torch.zeros(height, width, dtype=torch.bool)
        inside[self.y0 : self.y1, self.x0 : self.x1] = True
        return inside


def side_by_side(
    left: ImageLike, right: ImageLike, size: int = 224
) -> tuple[torch.Tensor, tuple[Box, Box]]:
    """Two photos next to each other, e.g. a cat and a cup for a two-object image.

    Each is ``to_tensor``'ed to ``size`` and they are concatenated along the width.
    Returns:
        ``(image [1, 3, size, 2 * size], (left_box, right_box))``, the boxes saying which
        pixels each photo covers (for the pointing game).
    """
    if size is None:
        raise SaliencyLabError("side_by_side needs a size (an int) so both halves match.")
    image = torch.cat([to_tensor(left, size), to_tensor(right, size)], dim=3)
    return image, (Box(0, 0, size, size), Box(size, 0, 2 * size, size))
