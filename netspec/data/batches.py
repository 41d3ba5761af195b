"""Data helpers for training that know nothing about networks: statistics, splits, batches,
augmentation. All randomness comes from a caller's :class:`numpy.random.Generator`, so one seed
reproduces a whole run.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from netspec.common.errors import DataError

_HISTOGRAM_CHUNK = 1 << 22


def normalisation_stats(images: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the uint8 pixels of ``images`` scaled to [0, 1].

    Computed from a 256-bin histogram, in chunks: exact, and without a float copy of the 47
    million MNIST training pixels.

    >>> normalisation_stats(np.array([[0, 255]], dtype=np.uint8))
    (0.5, 0.5)
    """
    pixels = np.asarray(images)
    if pixels.dtype != np.uint8 or pixels.size == 0:
        raise DataError(
            f"normalisation statistics need uint8 pixels, got {pixels.size} of {pixels.dtype}"
        )
    flat = pixels.reshape(-1)
    counts = np.zeros(256, dtype=np.int64)
    for start in range(0, flat.size, _HISTOGRAM_CHUNK):
        counts += np.bincount(flat[start : start + _HISTOGRAM_CHUNK], minlength=256)
    levels = np.arange(256) / 255.0
    mean = counts @ levels / flat.size
    variance = counts @ (levels - mean) ** 2 / flat.size
    return float(mean), float(np.sqrt(variance))


def split_train_validation(n: int, validation: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted index arrays ``(train, validation)`` covering ``range(n)``.

    The split depends on ``seed`` alone, so a resumed or repeated run validates on the same
    images it did before.

    >>> train, val = split_train_validation(10, 3, seed=0)
    >>> len(train), len(val), sorted(set(train) | set(val)) == list(range(10))
    (7, 3, True)
    """
    if not 0 <= validation <= n:
        raise DataError(f"a validation set of {validation} does not fit in {n} training images")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[validation:]), np.sort(order[:validation])


def iterate_minibatches(
    n: int, batch_size: int, rng: np.random.Generator, shuffle: bool = True
) -> Iterator[np.ndarray]:
    """Index arrays of ``batch_size`` covering ``range(n)`` once; the last one may be smaller.

    Indices rather than data, so the caller can slice several aligned arrays with them.

    >>> [b.tolist() for b in iterate_minibatches(5, 2, np.random.default_rng(0), shuffle=False)]
    [[0, 1], [2, 3], [4]]
    """
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {batch_size}")
    order = rng.permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def augment_batch(
    images: np.ndarray,
    rng: np.random.Generator,
    max_shift: int = 2,
    max_rotation_deg: float = 0.0,
) -> np.ndarray:
    """A randomly shifted and rotated copy of a batch ``(N, C, H, W)``.

    Each image gets its own whole-pixel shift in ``[-max_shift, max_shift]`` along each axis and
    its own angle in ``[-max_rotation_deg, max_rotation_deg]``; see :func:`shift_rotate`.
    """
    if max_shift < 0 or max_rotation_deg < 0:
        raise DataError(
            f"augmentation limits must not be negative: max_shift={max_shift}, "
            f"max_rotation_deg={max_rotation_deg}"
        )
    n = len(images)
    shifts = rng.integers(-max_shift, max_shift, size=(n, 2), endpoint=True)
    angles = rng.uniform(-max_rotation_deg, max_rotation_deg, size=n)
    return shift_rotate(images, shifts, angles)


def shift_rotate(images: np.ndarray, shifts: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """Each image of ``(N, C, H, W)`` turned about its centre and then moved.

    ``shifts`` is ``(N, 2)`` as (down, right) in pixels; ``angles_deg`` is ``(N,)``,
    counter-clockwise as displayed. Uncovered pixels become 0 (the MNIST background). Sampling
    is bilinear, so whole-pixel shifts without rotation move pixels exactly. The whole batch is
    one set of array operations: every output pixel looks up where it came from.
    """
    batch = np.asarray(images)
    if batch.ndim != 4:
        raise DataError(f"augmentation needs images shaped (N, C, H, W), got {batch.shape}")
    n, channels, h, w = batch.shape
    dtype = batch.dtype if np.issubdtype(batch.dtype, np.floating) else np.float64
    shifts = np.asarray(shifts, dtype=np.float64).reshape(n, 2, 1, 1)
    theta = np.deg2rad(np.asarray(angles_deg, dtype=np.float64)).reshape(n, 1, 1)

    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    cy, cx = (h - 1) / 2, (w - 1) / 2
    # Undo the shift, then the rotation (with y pointing down, a displayed counter-clockwise
    # turn by theta is undone by this matrix).
    oy = rows - cy - shifts[:, 0]
    ox = cols - cx - shifts[:, 1]
    cos, sin = np.cos(theta), np.sin(theta)
    src_y = sin * ox + cos * oy + cy
    src_x = cos * ox - sin * oy + cx

    y0, x0 = np.floor(src_y), np.floor(src_x)
    fy, fx = src_y - y0, src_x - x0
    y0, x0 = y0.astype(np.intp), x0.astype(np.intp)
    flat = batch.reshape(n, channels, h * w)
    out = np.zeros((n, channels, h * w), dtype=np.float64)
    corners = (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    )
    for dy, dx, weight in corners:
        yi, xi = y0 + dy, x0 + dx
        inside = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
        index = np.where(inside, yi * w + xi, 0).reshape(n, 1, h * w)
        values = np.take_along_axis(flat, index, axis=2)
        out += values * (weight * inside).reshape(n, 1, h * w)
    return out.reshape(n, channels, h, w).astype(dtype, copy=False)


PAD_MODES = ("zeros", "reflect")


def random_crop(images: np.ndarray, rng: np.random.Generator, padding: int,
                pad_mode: str = "zeros") -> np.ndarray:
    """Each image of ``(N, C, H, W)`` padded by ``padding`` on every side, then cut back to
    ``H x W`` at its own random offset: the standard augmentation for natural images.

    ``pad_mode`` "zeros" pads with 0 (black), "reflect" mirrors the border. The crops of the
    whole batch are one gather.
    """
    batch = np.asarray(images)
    if batch.ndim != 4:
        raise DataError(f"cropping needs images shaped (N, C, H, W), got {batch.shape}")
    if padding < 0 or pad_mode not in PAD_MODES:
        raise DataError(f"crop padding must be >= 0 with a pad mode of {', '.join(PAD_MODES)}; "
                        f"got {padding}, {pad_mode!r}")
    n, _, h, w = batch.shape
    offsets = rng.integers(0, 2 * padding, size=(n, 2), endpoint=True)
    if padding == 0:
        return batch
    if pad_mode == "reflect" and padding >= min(h, w):
        raise DataError(f"reflect padding of {padding} needs images larger than that, got "
                        f"{h}x{w}")
    widths = ((0, 0), (0, 0), (padding, padding), (padding, padding))
    padded = np.pad(batch, widths, mode="constant" if pad_mode == "zeros" else "reflect")
    rows = offsets[:, 0, None] + np.arange(h)
    cols = offsets[:, 1, None] + np.arange(w)
    picked = padded.transpose(0, 2, 3, 1)[np.arange(n)[:, None, None], rows[:, :, None],
                                          cols[:, None, :]]
    return np.ascontiguousarray(picked.transpose(0, 3, 1, 2))


def random_flip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image of ``(N, C, H, W)`` mirrored left to right with probability 1/2."""
    batch = np.asarray(images)
    if batch.ndim != 4:
        raise DataError(f"flipping needs images shaped (N, C, H, W), got {batch.shape}")
    flip = rng.random(len(batch)) < 0.5
    return np.where(flip[:, None, None, None], batch[..., ::-1], batch)
