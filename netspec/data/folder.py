"""A directory of pictures: ``train/`` and ``test/``, each with one sub-directory per class.

The class names are the folder names of ``train/`` (sorted, as torchvision's ``ImageFolder``
sorts them); ``test/`` may lack a class but may not add one. Pictures are PNG or JPEG, read
with Pillow as greyscale (1 channel) or colour (3), as the caller asks; all must have one size.
Every file is checked by its header before any picture is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from netspec.common.errors import DataError, did_you_mean
from netspec.common.extras import install_line
from netspec.data.dataset import DataInfo, Dataset

SUFFIXES = (".png", ".jpg", ".jpeg")
FORMATS = ("PNG", "JPEG")
SPLITS = ("train", "test")
MAX_VALUES_PER_SAMPLE = 1 << 24
MAX_TOTAL_BYTES = 8 * 2**30


@dataclass(frozen=True)
class FolderScan:
    """The files of each split with their labels, and the one size (width, height) of all."""

    root: Path
    class_names: tuple[str, ...]
    files: dict[str, list[tuple[Path, int]]]
    size: tuple[int, int]


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading a folder of pictures needs Pillow: "
                        f"{install_line('image')}") from None
    return Image


def _visible(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if not p.name.startswith("."))


def scan_folder(root: str | Path, channels: int) -> FolderScan:
    """Check the layout and every picture's header; decode nothing."""
    root = Path(root)
    if channels not in (1, 3):
        raise DataError(f"{root}: a folder of pictures gives 1 (greyscale) or 3 (colour) "
                        f"channels, not {channels}")
    if not root.is_dir():
        raise DataError(f"{root}: no such directory" if not root.exists() else
                        f"{root}: not a directory")
    for split in SPLITS:
        if not (root / split).is_dir():
            raise DataError(f"{root}: no {split}/ directory; a folder of pictures holds train/ "
                            "and test/, each with one sub-directory per class")
    class_names = tuple(p.name for p in _visible(root / "train") if p.is_dir())
    if not class_names:
        raise DataError(f"{root / 'train'}: no class folders; put each class's pictures in a "
                        "sub-directory named after the class")
    Image = _pillow()
    inside = root.resolve()
    files: dict[str, list[tuple[Path, int]]] = {}
    size: tuple[int, int] | None = None
    first: Path | None = None
    for split in SPLITS:
        files[split] = []
        for entry in _visible(root / split):
            if not entry.is_dir():
                raise DataError(f"{entry}: pictures go inside a class folder "
                                f"({split}/<class>/), not in {split}/ itself")
            if entry.name not in class_names:
                raise DataError(f"{entry}: class '{entry.name}' has no folder in train/"
                                f"{did_you_mean(entry.name, class_names)}")
            pictures = _visible(entry)
            if not pictures:
                raise DataError(f"{entry}: empty class folder (no .png, .jpg or .jpeg "
                                "pictures)")
            label = class_names.index(entry.name)
            for picture in pictures:
                if not picture.resolve().is_relative_to(inside):
                    raise DataError(f"{picture}: a link to {picture.resolve()}, outside "
                                    f"{root}; copy the picture into the folder")
                found = _picture_size(Image, picture)
                if size is None:
                    size, first = found, picture
                elif found != size:
                    raise DataError(f"{picture}: pictures differ in size: this one is "
                                    f"{found[0]}x{found[1]}, {first} is {size[0]}x{size[1]} "
                                    "(width x height); resize them to one size")
                files[split].append((picture, label))
    if not files["test"]:
        raise DataError(f"{root / 'test'}: no class folders; put the test pictures of each "
                        "class in a sub-directory named after the class")
    width, height = size if size is not None else (0, 0)
    values = channels * width * height
    if values > MAX_VALUES_PER_SAMPLE:
        raise DataError(f"{first}: {width}x{height} pictures hold more than "
                        f"{MAX_VALUES_PER_SAMPLE:,} values each; downsample them")
    total = values * sum(len(f) for f in files.values())
    if total > MAX_TOTAL_BYTES:
        raise DataError(f"{root}: the pictures would take {total / 2**30:.1f} GiB, more than "
                        f"the {MAX_TOTAL_BYTES // 2**30} GiB netspec loads")
    return FolderScan(root, class_names, files, (width, height))


def _picture_size(Image: Any, path: Path) -> tuple[int, int]:
    if path.is_dir() or path.suffix.lower() not in SUFFIXES:
        raise DataError(f"{path}: not a picture netspec reads (a class folder holds .png, "
                        ".jpg and .jpeg files only)")
    try:
        with Image.open(path) as picture:
            if picture.format not in FORMATS:
                raise DataError(f"{path}: a {picture.format} image; netspec reads PNG and "
                                "JPEG")
            return picture.size
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a readable image: {exc}") from None


def folder_info(root: str | Path, channels: int) -> DataInfo:
    scan = scan_folder(root, channels)
    width, height = scan.size
    return DataInfo(_label(scan.root), (channels, height, width), scan.class_names)


def _label(root: Path) -> str:
    return f"{root}/"


def load_folder(root: str | Path, channels: int) -> Dataset:
    """Every picture of the folder, decoded into uint8 ``(N, channels, H, W)`` arrays."""
    scan = scan_folder(root, channels)
    Image = _pillow()
    width, height = scan.size
    splits = {}
    for split in SPLITS:
        entries = scan.files[split]
        images = np.empty((len(entries), channels, height, width), dtype=np.uint8)
        for i, (path, _) in enumerate(entries):
            images[i] = _decode(Image, path, channels).reshape(height, width, channels) \
                .transpose(2, 0, 1)
        labels = np.array([label for _, label in entries], dtype=np.int64)
        splits[split] = (images, labels)
    return Dataset(*splits["train"], *splits["test"], scan.class_names, _label(scan.root))


def _decode(Image: Any, path: Path, channels: int) -> np.ndarray:
    try:
        with Image.open(path) as picture:
            if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
                # transparent parts become white, as a viewer shows them on a page
                rgba = picture.convert("RGBA")
                picture = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
            return np.asarray(picture.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a readable image: {exc}") from None

