"""Digit images from files for prediction: 28x28 greyscale, white digit on black like MNIST."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from netspec.errors import DataError

SIDE = 28


def load_digit_images(paths: Sequence[str | Path]) -> np.ndarray:
    """uint8 (N, 28, 28) images from ``.png`` (needs Pillow) or ``.npy`` files.

    Each file holds one image (a ``.npy`` may hold a stack ``(K, 28, 28)``). Images whose
    background is light are inverted, since MNIST digits are light on dark.
    """
    if not paths:
        raise DataError("no image files given")
    images = []
    for path in map(Path, paths):
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        loaded = _read_npy(path) if path.suffix.lower() == ".npy" else _read_picture(path)
        images.extend(loaded)
    return np.stack([_mnist_polarity(image) for image in images])


NPY_MAGIC = b"\x93NUMPY"


def _read_npy(path: Path) -> list[np.ndarray]:
    try:
        # np.load takes anything else for a pickle and advises loading it unsafely
        with open(path, "rb") as handle:
            if handle.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise DataError(f"{path}: not a .npy file (no NumPy header); save the image "
                                f"with numpy.save, or as a .png")
        array = np.load(path, allow_pickle=False)
    # MemoryError: a .npy header may claim any shape; numpy allocates before reading
    except (OSError, ValueError, EOFError, MemoryError) as exc:
        raise DataError(f"{path}: not a readable .npy array: {exc}") from None
    shape = array.shape
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != (SIDE, SIDE) or len(array) == 0:
        raise DataError(f"{path}: expected a 28x28 image (or a stack K x 28 x 28), "
                        f"got shape {shape}")
    if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
        raise DataError(f"{path}: image values must be finite numbers")
    if array.dtype != np.uint8:
        # floats in [0, 1] are intensities; anything larger is taken as 0..255
        scale = 255.0 if array.max() <= 1.0 else 1.0
        array = np.clip(array * scale, 0, 255).round().astype(np.uint8)
    return list(array)


def _read_picture(path: Path) -> list[np.ndarray]:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError(f"{path}: reading pictures needs Pillow: pip install netspec[image] "
                        f"(or save the image as a 28x28 .npy)") from None
    try:
        with Image.open(path) as picture:
            if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
                picture = _on_contrasting_background(picture)
            grey = picture.convert("L")
            if grey.size != (SIDE, SIDE):
                grey = grey.resize((SIDE, SIDE), Image.Resampling.LANCZOS)
            return [np.asarray(grey, dtype=np.uint8)]
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
        raise DataError(f"{path}: not a readable image: {exc}") from None


def _on_contrasting_background(picture: Any) -> Any:
    """A Pillow ``picture`` flattened onto white where its drawn (opaque) pixels are dark, onto
    black where they are light: dropping the alpha channel alone turns a dark digit on a
    transparent background into a black square."""
    from PIL import Image

    rgba = picture.convert("RGBA")
    opaque = np.asarray(rgba)[..., 3] > 127
    drawn = np.asarray(rgba.convert("L"))[opaque]
    colour = (0, 0, 0, 255) if drawn.size and drawn.mean() > 127 else (255, 255, 255, 255)
    return Image.alpha_composite(Image.new("RGBA", rgba.size, colour), rgba)


def _mnist_polarity(image: np.ndarray) -> np.ndarray:
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return 255 - image if border.mean() > 127 else image
