"""Images from files for prediction: shaped as the network's input takes them, and for digits
drawn light on dark like MNIST (a dark digit on white paper is inverted)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from netspec.common.errors import DataError
from netspec.common.extras import install_line

SIDE = 28


def load_digit_images(paths: Sequence[str | Path]) -> np.ndarray:
    """uint8 (N, 28, 28) images from ``.png`` (needs Pillow) or ``.npy`` files.

    Each file holds one image (a ``.npy`` may hold a stack ``(K, 28, 28)``). Images whose
    background is light are inverted, since MNIST digits are light on dark.
    """
    return load_images(paths, (1, SIDE, SIDE), light_on_dark=True)[:, 0]


def load_images(paths: Sequence[str | Path], sample_shape: tuple[int, int, int],
                light_on_dark: bool = False, notes: list[str] | None = None) -> np.ndarray:
    """uint8 ``(N, C, H, W)`` images from pictures (needs Pillow) or ``.npy`` files.

    A picture is converted to greyscale (C = 1) or colour (C = 3) and resized to H x W. A
    ``.npy`` holds one image or a stack: ``(H, W)`` / ``(K, H, W)`` for greyscale, ``(H, W, 3)``
    / ``(K, H, W, 3)`` for colour, as Keras lays them out. With ``light_on_dark`` greyscale
    images with a light border are inverted, to match training data drawn light on dark.
    Each picture resized and each image inverted gets a line in ``notes`` when it is given.
    """
    channels, height, width = sample_shape
    if channels not in (1, 3):
        raise DataError(f"images for prediction are greyscale or colour; this input takes "
                        f"{channels} channels")
    if not paths:
        raise DataError("no image files given")
    notes = [] if notes is None else notes
    images = []
    for path in map(Path, paths):
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        loaded = (_read_npy(path, sample_shape) if path.suffix.lower() == ".npy"
                  else _read_picture(path, sample_shape, notes))
        if light_on_dark and channels == 1:
            flipped = [index for index, image in enumerate(loaded) if _light_border(image[0])]
            inverted = [255 - image if index in flipped else image
                        for index, image in enumerate(loaded)]
            if flipped:
                which = "" if len(loaded) == 1 else (
                    f" ({len(flipped)} of its {len(loaded)} images)")
                notes.append(f"{path}: inverted{which}, a dark drawing on a light background; "
                             "the network reads light on dark")
            loaded = inverted
        images.extend(loaded)
    return np.stack(images)


NPY_MAGIC = b"\x93NUMPY"


def _read_npy(path: Path, sample_shape: tuple[int, int, int]) -> list[np.ndarray]:
    channels, height, width = sample_shape
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
    one = (height, width) if channels == 1 else (height, width, channels)
    if array.shape == one:
        array = array[None]
    if array.shape[1:] != one or len(array) == 0:
        size = "x".join(str(d) for d in one)
        raise DataError(f"{path}: expected a {size} image (or a stack K x "
                        f"{size.replace('x', ' x ')}), got shape {shape}")
    if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
        raise DataError(f"{path}: image values must be finite numbers")
    if array.dtype != np.uint8:
        # floats in [0, 1] are intensities; anything larger is taken as 0..255
        scale = 255.0 if array.max() <= 1.0 else 1.0
        array = np.clip(array * scale, 0, 255).round().astype(np.uint8)
    if channels == 1:
        return list(array[:, None])
    return list(array.transpose(0, 3, 1, 2))


def _read_picture(path: Path, sample_shape: tuple[int, int, int],
                  notes: list[str]) -> list[np.ndarray]:
    channels, height, width = sample_shape
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError(f"{path}: reading pictures needs Pillow: {install_line('image')} "
                        f"(or save the image as a .npy)") from None
    try:
        with Image.open(path) as picture:
            if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
                picture = _on_contrasting_background(picture)
            converted = picture.convert("L" if channels == 1 else "RGB")
            if converted.size != (width, height):
                notes.append(f"{path}: resized from {converted.size[0]}x{converted.size[1]} "
                             f"to {width}x{height}")
                converted = converted.resize((width, height), Image.Resampling.LANCZOS)
            array = np.asarray(converted, dtype=np.uint8)
            return [array[None] if channels == 1 else array.transpose(2, 0, 1)]
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


def _light_border(image: np.ndarray) -> bool:
    """Whether a greyscale image is drawn on a light background (its border is light)."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return bool(border.mean() > 127)
