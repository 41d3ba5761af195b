"""A labelled image data set as training needs it, whatever file layout it came from.

Images are ``(N, C, H, W)``: uint8 intensities 0..255, or float32 intensities already scaled to
[0, 1] (a Keras ``.npz`` may store floats). Labels are int64 class indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netspec.common.errors import DataError

_CHUNK_VALUES = 1 << 22


@dataclass(frozen=True, eq=False)
class Dataset:
    """Training and test splits with their class names; arrays are shared, so read-only use."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    label: str  # how messages name the data: "cifar10", "digits.npz", "pictures/"

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.train_images.shape[1:])


@dataclass(frozen=True)
class DataInfo:
    """What a data set gives, known before its pixels are read: enough to check a network."""

    label: str
    sample_shape: tuple[int, int, int]
    class_names: tuple[str, ...]

    @property
    def classes(self) -> int:
        return len(self.class_names)


def unit_scale(images: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Images as ``dtype`` intensities in [0, 1]: uint8 divided by 255, floats as they are."""
    if images.dtype == np.uint8:
        return images.astype(dtype) / dtype(255.0)
    return images.astype(dtype, copy=False)


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and standard deviation of each channel of ``(N, C, H, W)`` images on the [0, 1] scale.

    uint8 pixels are counted in a 256-bin histogram per channel (exact, no float copy of the
    whole set); float images are summed in chunks, mean first, then squared deviations.

    >>> channel_stats(np.array([[[[0, 255]], [[255, 255]]]], dtype=np.uint8))
    ((0.5, 1.0), (0.5, 0.0))
    """
    pixels = np.asarray(images)
    if pixels.ndim != 4 or pixels.size == 0:
        raise DataError(f"normalisation statistics need images (N, C, H, W), got {pixels.shape}")
    channels = pixels.shape[1]
    means, stds = [], []
    for c in range(channels):
        plane = pixels[:, c]
        if plane.dtype == np.uint8:
            counts = np.zeros(256, dtype=np.int64)
            for rows in _chunks(plane):
                counts += np.bincount(rows.reshape(-1), minlength=256)
            levels = np.arange(256) / 255.0
            mean = counts @ levels / plane.size
            variance = counts @ (levels - mean) ** 2 / plane.size
        else:
            mean = sum(float(rows.sum(dtype=np.float64)) for rows in _chunks(plane)) / plane.size
            variance = sum(float(((rows.astype(np.float64) - mean) ** 2).sum())
                           for rows in _chunks(plane)) / plane.size
        means.append(float(mean))
        stds.append(float(np.sqrt(variance)))
    return tuple(means), tuple(stds)


def _chunks(plane: np.ndarray):
    per_image = max(1, int(np.prod(plane.shape[1:])))
    step = max(1, _CHUNK_VALUES // per_image)
    for start in range(0, len(plane), step):
        yield plane[start:start + step]
