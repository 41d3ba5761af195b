"""Keras-layout ``.npz`` files: ``x_train, y_train, x_test, y_test`` and optional ``class_names``.

Images are ``(N, H, W)`` or ``(N, H, W, C)`` as Keras stores them, uint8 (or integers 0..255) or
floats (0..1, or 0..255). Every member's header is read and checked (dtype, shape, size) before
any data is: an object array is refused without being unpickled, and a header claiming more
data than the file holds is refused before anything is allocated.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from netspec.common.errors import DataError
from netspec.data.dataset import DataInfo, Dataset

KEYS = ("x_train", "y_train", "x_test", "y_test")
CLASS_NAMES = "class_names"
# the largest array netspec will read from an .npz; CIFAR-10's x_train is 150 MiB
MAX_ARRAY_BYTES = 4 * 2**30
MAX_VALUES_PER_SAMPLE = 1 << 24
MAX_CLASSES = 100_000


def _header(archive: zipfile.ZipFile, key: str, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of member ``key``, from its .npy header alone, checked for sense."""
    try:
        info = archive.getinfo(f"{key}.npy")
    except KeyError:
        raise DataError(f"{path}: lacks {key} (a Keras-layout .npz holds "
                        f"{', '.join(KEYS)})") from None
    try:
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
            else:
                raise DataError(f"{path}: {key} is a .npy of version {version}, which netspec "
                                "does not read; save it with numpy.savez")
            data_offset = member.tell()
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: {key} is not a readable .npy array: {exc}") from None
    if dtype.hasobject:
        raise DataError(f"{path}: {key} is a pickled (object) array; netspec refuses it "
                        "without unpickling it; save plain numbers or strings")
    needed = math.prod(shape) * dtype.itemsize
    if needed > MAX_ARRAY_BYTES:
        raise DataError(f"{path}: {key} claims shape {shape} of {dtype} "
                        f"({needed / 2**30:.1f} GiB), more than the "
                        f"{MAX_ARRAY_BYTES // 2**30} GiB netspec reads")
    if info.file_size - data_offset != needed:
        raise DataError(f"{path}: {key} is truncated or damaged: its header says shape "
                        f"{shape} of {dtype} ({needed} bytes), the member holds "
                        f"{info.file_size - data_offset}")
    return tuple(int(d) for d in shape), dtype


def _open(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise DataError(f"{path}: no such file" if not path.exists() else
                        f"{path}: not a file")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a readable .npz (not a zip archive: truncated, or "
                        "another format)")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not a readable .npz: {exc}") from None


def _sample_shape(path: Path, key: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 3:
        return (1, shape[1], shape[2])
    if len(shape) == 4:
        return (shape[3], shape[1], shape[2])
    raise DataError(f"{path}: {key} has shape {shape}; images are (N, H, W) or (N, H, W, C)")


def inspect_npz(path: str | Path) -> DataInfo:
    """What the file gives (sample shape, class names), from headers and labels only."""
    path = Path(path)
    with _open(path) as archive:
        headers = {key: _header(archive, key, path) for key in KEYS}
        has_names = _has_class_names(archive, path)
    sample = _check_headers(path, headers)
    names, _ = _names_and_labels(path, headers, has_names)
    return DataInfo(path.name, sample, names)


def _check_headers(path: Path, headers: dict[str, tuple[tuple[int, ...], np.dtype]]
                   ) -> tuple[int, int, int]:
    samples = {}
    for split in ("train", "test"):
        (x_shape, x_dtype), (y_shape, y_dtype) = headers[f"x_{split}"], headers[f"y_{split}"]
        sample = _sample_shape(path, f"x_{split}", x_shape)
        if x_shape[0] == 0:
            raise DataError(f"{path}: x_{split} holds no images")
        if math.prod(sample) > MAX_VALUES_PER_SAMPLE or min(sample) == 0:
            raise DataError(f"{path}: x_{split} has shape {x_shape}; netspec takes images of "
                            f"1 to {MAX_VALUES_PER_SAMPLE:,} values")
        if x_dtype.kind not in "uif" or x_dtype.kind == "f" and x_dtype.itemsize > 8:
            raise DataError(f"{path}: x_{split} holds {x_dtype} values, not pixel numbers")
        if len(y_shape) not in (1, 2) or (len(y_shape) == 2 and y_shape[1] != 1):
            raise DataError(f"{path}: y_{split} has shape {y_shape}; labels are (N,) or (N, 1) "
                            "class indices")
        if y_dtype.kind not in "ui":
            raise DataError(f"{path}: y_{split} holds {y_dtype} values; labels must be "
                            "integer class indices")
        if y_shape[0] != x_shape[0]:
            raise DataError(f"{path}: x_{split} holds {x_shape[0]} images but y_{split} "
                            f"{y_shape[0]} labels")
        samples[split] = sample
    if samples["train"] != samples["test"]:
        raise DataError(f"{path}: x_train images are {samples['train']} (C, H, W) but x_test "
                        f"images are {samples['test']}")
    return samples["train"]


def _read(path: Path, key: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, MemoryError) as exc:
        raise DataError(f"{path}: {key} cannot be read: {exc}") from None


def _labels(path: Path, headers: dict) -> list[np.ndarray]:
    labels = []
    for split in ("train", "test"):
        y = _read(path, f"y_{split}").reshape(-1).astype(np.int64)
        negative = np.flatnonzero(y < 0)
        if len(negative):
            raise DataError(f"{path}: y_{split}: label {int(y[negative[0]])} at index "
                            f"{int(negative[0])} is out of range; labels are 0, 1, 2, ...")
        if int(y.max()) >= MAX_CLASSES:
            raise DataError(f"{path}: y_{split}: label {int(y.max())} is out of range; netspec "
                            f"takes up to {MAX_CLASSES:,} classes")
        labels.append(y)
    return labels


def _has_class_names(archive: zipfile.ZipFile, path: Path) -> bool:
    """Whether the file holds ``class_names``, checking its header if so."""
    if f"{CLASS_NAMES}.npy" not in archive.namelist():
        return False
    shape, dtype = _header(archive, CLASS_NAMES, path)
    if len(shape) != 1 or dtype.kind not in "US" or not 0 < shape[0] <= MAX_CLASSES:
        raise DataError(f"{path}: class_names must be a 1-D array of strings, got shape "
                        f"{shape} of {dtype}")
    return True


def _read_class_names(path: Path) -> tuple[str, ...]:
    raw = _read(path, CLASS_NAMES)
    try:
        names = tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n)
                      for n in raw.tolist())
    except UnicodeDecodeError:
        raise DataError(f"{path}: class_names are not UTF-8 text") from None
    if any(not n.strip() for n in names) or len(set(names)) != len(names):
        raise DataError(f"{path}: class_names must be distinct and not empty, got "
                        f"{list(names)[:12]}")
    return names


def _names_and_labels(path: Path, headers: dict, has_names: bool
                      ) -> tuple[tuple[str, ...], list[np.ndarray]]:
    labels = _labels(path, headers)
    if has_names:
        names = _read_class_names(path)
    else:
        names = tuple(str(i) for i in range(max(int(y.max()) for y in labels) + 1))
    for split, y in zip(("train", "test"), labels):
        wrong = np.flatnonzero(y >= len(names))
        if len(wrong):
            raise DataError(f"{path}: y_{split}: label {int(y[wrong[0]])} at index "
                            f"{int(wrong[0])} is out of range 0..{len(names) - 1} (class_names "
                            f"names {len(names)} classes)")
    return names, labels


def load_npz(path: str | Path) -> Dataset:
    """The data of a Keras-layout ``.npz``, checked; see the module docstring."""
    path = Path(path)
    with _open(path) as archive:
        headers = {key: _header(archive, key, path) for key in KEYS}
        has_names = _has_class_names(archive, path)
    _check_headers(path, headers)
    names, (train_labels, test_labels) = _names_and_labels(path, headers, has_names)
    return Dataset(_images(path, "x_train"), train_labels, _images(path, "x_test"), test_labels,
                   names, path.name)


def _images(path: Path, key: str) -> np.ndarray:
    x = _read(path, key)
    x = x[..., None] if x.ndim == 3 else x
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise DataError(f"{path}: {key} holds NaN or infinite values")
    low, high = x.min(), x.max()
    if low < 0 or high > 255:
        raise DataError(f"{path}: {key} holds values from {low:g} to {high:g}; netspec reads "
                        "pixel intensities 0..255 (or 0..1 as floats)")
    if x.dtype.kind in "ui":
        return x.astype(np.uint8)
    # floats up to 1 are intensities already; anything larger counts in 0..255
    return (x if high <= 1.0 else x / 255.0).astype(np.float32)
