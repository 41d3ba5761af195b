"""Data beyond MNIST: the named sets (Fashion-MNIST, KMNIST, CIFAR-10) from generated files in
their real formats, Keras-layout ``.npz`` files, folders of pictures, the ``[data]`` table and
``--data``, the check of data against the network, and every bad-data case with its message.
No test downloads: downloads go through a fake opener."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest

from netspec.cli import main
from netspec.common.errors import DataError, SpecError
from netspec.data import catalog
from netspec.data.batches import random_crop, random_flip
from netspec.data.catalog import NAMED_SETS, load_named
from netspec.data.choice import DataChoice, choose_data, data_info, load_data, parse_data_config
from netspec.data.dataset import channel_stats
from netspec.data.folder import load_folder
from netspec.data.npz import inspect_npz, load_npz
from netspec.lang.spec import parse_spec

RNG = np.random.default_rng(7)


def run_cli(*argv: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------- generated files, real formats

def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file byte for byte: two zero bytes, 0x08 (unsigned byte), the number of
    dimensions, each dimension as a big-endian 32-bit integer, then the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx_set(directory: Path, train: int = 60, test: int = 20) -> dict[str, np.ndarray]:
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte.gz": RNG.integers(0, 256, (train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": np.arange(train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte.gz": RNG.integers(0, 256, (test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": (np.arange(test, dtype=np.uint8) * 3) % 10,
    }
    for name, array in arrays.items():
        (directory / name).write_bytes(gzip.compress(idx_bytes(array)))
    return arrays


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def trust(monkeypatch, name: str, directory: Path) -> None:
    """Make the catalogue expect the generated files' checksums instead of the real ones."""
    known = NAMED_SETS[name]
    files = {file: sha(directory / file) for file in known.files}
    monkeypatch.setitem(NAMED_SETS, name, dataclasses.replace(known, files=files))


CIFAR_RECORDS = 20


def cifar_batch(records: int = CIFAR_RECORDS, labels: np.ndarray | None = None) -> bytes:
    """A CIFAR-10 binary batch: per record one label byte, then 1024 red, 1024 green and 1024
    blue bytes, row by row."""
    labels = np.arange(records) % 10 if labels is None else labels
    pixels = RNG.integers(0, 256, (records, 3072), dtype=np.uint8)
    return np.concatenate([labels.astype(np.uint8)[:, None], pixels], axis=1).tobytes()


def write_cifar(directory: Path, batches: dict[str, bytes] | None = None,
                meta: bytes = b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\n"
                              b"truck\n\n") -> Path:
    """``cifar-10-binary.tar.gz`` in its published layout (``cifar-10-batches-bin/``)."""
    directory.mkdir(parents=True, exist_ok=True)
    batches = batches if batches is not None else {
        **{f"data_batch_{i}.bin": cifar_batch() for i in range(1, 6)},
        "test_batch.bin": cifar_batch()}
    archive = directory / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in {**batches, "batches.meta.txt": meta}.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


@pytest.fixture
def small_cifar(monkeypatch):
    monkeypatch.setattr(catalog, "CIFAR10_RECORDS", CIFAR_RECORDS)


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def keras_arrays(train: int = 40, test: int = 10, shape: tuple[int, ...] = (28, 28),
                 dtype: type = np.uint8, classes: int = 10) -> dict[str, np.ndarray]:
    high = 1.0 if dtype != np.uint8 else 256
    x = (RNG.random if dtype != np.uint8 else None)
    images = {split: (RNG.random((n, *shape)).astype(dtype) if x is not None else
                      RNG.integers(0, high, (n, *shape), dtype=np.uint8))
              for split, n in (("train", train), ("test", test))}
    return {"x_train": images["train"], "y_train": np.arange(train, dtype=np.uint8) % classes,
            "x_test": images["test"], "y_test": np.arange(test, dtype=np.uint8) % classes}


def write_folder(root: Path, classes=("cat", "dog"), per_class: int = 3, size=(12, 10),
                 mode: str = "RGB") -> Path:
    Image = pytest.importorskip("PIL.Image")
    for split in ("train", "test"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = RNG.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).convert(mode).save(folder / f"{i}.png")
    return root


# ---------------------------------------------------------------------------- named data sets

@pytest.mark.parametrize("name", ["fashion-mnist", "kmnist"])
def test_idx_sets_load_from_a_directory_with_their_class_names(tmp_path, monkeypatch, name):
    arrays = write_idx_set(tmp_path)
    trust(monkeypatch, name, tmp_path)
    data = load_named(name, tmp_path)
    np.testing.assert_array_equal(data.train_images[:, 0], arrays["train-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(data.test_labels, arrays["t10k-labels-idx1-ubyte.gz"])
    assert data.train_images.shape == (60, 1, 28, 28) and data.label == name
    assert data.class_names == NAMED_SETS[name].class_names and len(data.class_names) == 10


def test_the_catalogue_pins_the_published_files():
    assert NAMED_SETS["fashion-mnist"].class_names[0] == "T-shirt/top"
    assert NAMED_SETS["kmnist"].class_names[:3] == ("o", "ki", "su")
    assert NAMED_SETS["cifar10"].files == {
        "cifar-10-binary.tar.gz":
            "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"}
    for name in ("fashion-mnist", "kmnist"):
        assert list(NAMED_SETS[name].files) == list(catalog.IDX_FILES)
        assert all(len(v) == 64 for v in NAMED_SETS[name].files.values())


def test_a_file_that_is_not_the_published_one_fails_its_checksum(tmp_path):
    write_idx_set(tmp_path)
    with pytest.raises(DataError) as caught:
        load_named("fashion-mnist", tmp_path)
    assert str(caught.value).startswith(
        f"{tmp_path / 'train-images-idx3-ubyte.gz'}: SHA-256 is ")
    assert "expected 3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84: the " \
           "file is damaged or not the original" in str(caught.value)


def test_a_missing_file_says_what_to_put_where(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as caught:
        load_named("kmnist", tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path} (the given data directory) lacks "
                              "t10k-labels-idx1-ubyte.gz. Put the Kuzushiji-MNIST files")
    assert "https://codh.rois.ac.jp/kmnist/dataset/kmnist/t10k-labels-idx1-ubyte.gz" in message


def test_idx_labels_out_of_range_are_named(tmp_path, monkeypatch):
    write_idx_set(tmp_path)
    labels = np.zeros(20, dtype=np.uint8)
    labels[4] = 12
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    trust(monkeypatch, "fashion-mnist", tmp_path)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: label 12 at index 4 is out "
                                        r"of range 0\.\.9$"):
        load_named("fashion-mnist", tmp_path)


class FakeResponse(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def test_a_download_lands_verified_in_the_cache_after_a_transient_failure(tmp_path, monkeypatch):
    source = tmp_path / "published"
    write_idx_set(source)
    trust(monkeypatch, "fashion-mnist", source)
    monkeypatch.setenv("NETSPEC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("netspec.data.download.RETRY_DELAY_S", 0)
    asked: list[str] = []

    def opener(url: str, timeout: float):
        asked.append(url)
        if len(asked) == 1:
            raise ConnectionResetError("connection reset")
        return FakeResponse((source / url.rsplit("/", 1)[1]).read_bytes())

    heard = []
    data = load_named("fashion-mnist", opener=opener,
                      progress=lambda name, done, total: heard.append(name))
    assert len(data.train_images) == 60
    cache = tmp_path / "cache" / "fashion-mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(catalog.IDX_FILES)
    assert asked[0] == asked[1] == ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
                                    "train-images-idx3-ubyte.gz")
    assert set(heard) == set(catalog.IDX_FILES)


def test_offline_the_error_lists_what_was_tried_and_where_to_put_the_files(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("NETSPEC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("netspec.data.download.RETRY_DELAY_S", 0)

    def offline(url: str, timeout: float):
        raise OSError("Network is unreachable")

    with pytest.raises(DataError) as caught:
        load_named("cifar10", opener=offline)
    message = str(caught.value)
    assert message.startswith("could not download CIFAR-10 (binary version); tried:\n  "
                              "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz: "
                              "Network is unreachable\nPut the CIFAR-10")
    # no empty cache folder is left behind, the ones above it created for it neither
    assert not (tmp_path / "cache").exists()


def test_a_download_of_the_wrong_file_is_not_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("NETSPEC_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="SHA-256 is .* the server sends a different file"):
        load_named("kmnist", opener=lambda url, timeout: FakeResponse(b"not the file"))
    # no empty cache folder is left behind, the ones above it created for it neither
    assert not (tmp_path / "cache").exists()


def test_downloading_switched_off_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("NETSPEC_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"^Fashion-MNIST is not in .*fashion-mnist and "
                                        r"downloading is switched off"):
        load_named("fashion-mnist", download=False)


def test_cifar10_reads_its_binary_archive(tmp_path, monkeypatch, small_cifar):
    batches = {f"data_batch_{i}.bin": cifar_batch() for i in range(1, 6)}
    batches["test_batch.bin"] = cifar_batch(labels=np.full(CIFAR_RECORDS, 7))
    write_cifar(tmp_path, batches)
    trust(monkeypatch, "cifar10", tmp_path)
    data = load_named("cifar10", tmp_path)
    assert data.train_images.shape == (100, 3, 32, 32) and data.test_images.shape == (20, 3, 32,
                                                                                         32)
    assert data.class_names[:3] == ("airplane", "automobile", "bird")
    first = np.frombuffer(batches["data_batch_1.bin"], dtype=np.uint8)[:3073]
    assert data.train_labels[0] == first[0]
    np.testing.assert_array_equal(data.train_images[0, 0, 0], first[1:33])  # red, top row
    np.testing.assert_array_equal(data.train_images[0, 2, 31], first[3073 - 32:])  # blue
    assert set(data.test_labels) == {7}


def test_cifar10_damage_is_named(tmp_path, monkeypatch, small_cifar):
    batches = {f"data_batch_{i}.bin": cifar_batch() for i in range(1, 6)}
    batches["test_batch.bin"] = cifar_batch()[:-5]
    write_cifar(tmp_path, batches)
    trust(monkeypatch, "cifar10", tmp_path)
    with pytest.raises(DataError, match=r"cifar-10-batches-bin/test_batch.bin: 61455 bytes, "
                                        r"expected 61460 \(20 records of 3073\)$"):
        load_named("cifar10", tmp_path)
    del batches["test_batch.bin"]
    write_cifar(tmp_path, batches)
    trust(monkeypatch, "cifar10", tmp_path)
    with pytest.raises(DataError, match=r"has no cifar-10-batches-bin/test_batch.bin$"):
        load_named("cifar10", tmp_path)
    batches["test_batch.bin"] = cifar_batch(labels=np.full(CIFAR_RECORDS, 10))
    write_cifar(tmp_path, batches)
    trust(monkeypatch, "cifar10", tmp_path)
    with pytest.raises(DataError, match=r"test_batch.bin: label 10 at index 0 is out of range"):
        load_named("cifar10", tmp_path)


def test_a_cifar_archive_that_is_not_gzip_is_named(tmp_path, monkeypatch):
    tmp_path.joinpath("cifar-10-binary.tar.gz").write_bytes(b"plain text")
    trust(monkeypatch, "cifar10", tmp_path)
    with pytest.raises(DataError, match=r"cifar-10-binary.tar.gz: unreadable archive"):
        load_named("cifar10", tmp_path)


# -------------------------------------------------------------------------------- .npz files

def test_keras_layout_npz_loads_greyscale_uint8(tmp_path):
    arrays = keras_arrays()
    data = load_npz(write_npz(tmp_path / "d.npz", **arrays))
    assert data.train_images.shape == (40, 1, 28, 28) and data.train_images.dtype == np.uint8
    np.testing.assert_array_equal(data.train_images[:, 0], arrays["x_train"])
    assert data.class_names == tuple(str(i) for i in range(10)) and data.label == "d.npz"


def test_keras_layout_npz_loads_colour_floats_with_labels_n_by_1_and_class_names(tmp_path):
    arrays = keras_arrays(shape=(8, 6, 3), dtype=np.float32, classes=3)
    arrays["y_train"] = arrays["y_train"].reshape(-1, 1).astype(np.int64)
    path = write_npz(tmp_path / "c.npz", **arrays, class_names=np.array(["a", "b", "c"]))
    info = inspect_npz(path)
    assert (info.sample_shape, info.class_names) == ((3, 8, 6), ("a", "b", "c"))
    data = load_npz(path)
    assert data.train_images.dtype == np.float32 and data.train_images.shape == (40, 3, 8, 6)
    np.testing.assert_array_equal(data.train_images.transpose(0, 2, 3, 1), arrays["x_train"])
    np.testing.assert_array_equal(data.train_labels, np.arange(40) % 3)


def test_float_pixels_in_0_to_255_are_scaled(tmp_path):
    arrays = keras_arrays()
    arrays["x_train"] = arrays["x_train"].astype(np.float64)
    data = load_npz(write_npz(tmp_path / "d.npz", **arrays))
    assert data.train_images.max() <= 1.0 and data.train_images.dtype == np.float32


def pickled_npz(path: Path) -> Path:
    arrays = keras_arrays()
    objects = np.empty(40, dtype=object)
    objects[:] = [int(v) for v in arrays["y_train"]]
    arrays["y_train"] = objects
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)  # numpy pickles object arrays when saving
    return path


def label_out_of_range(path: Path) -> Path:
    arrays = keras_arrays()
    arrays["y_test"][3] = 10
    return write_npz(path, **arrays, class_names=np.array([str(i) for i in range(10)]))


def negative_label(path: Path) -> Path:
    arrays = keras_arrays()
    arrays["y_train"] = arrays["y_train"].astype(np.int16)
    arrays["y_train"][5] = -1
    return write_npz(path, **arrays)


def truncated(path: Path) -> Path:
    write_npz(path, **keras_arrays())
    path.write_bytes(path.read_bytes()[:2000])
    return path


def header_claims_more(path: Path) -> Path:
    arrays = keras_arrays()
    buffer = io.BytesIO()
    np.save(buffer, arrays["x_test"])
    raw = buffer.getvalue().replace(b"(10, 28, 28)", b"(99, 28, 28)")
    write_npz(path, **{k: v for k, v in arrays.items() if k != "x_test"})
    with __import__("zipfile").ZipFile(path, "a") as archive:
        archive.writestr("x_test.npy", raw)
    return path


def missing_key(path: Path) -> Path:
    arrays = keras_arrays()
    del arrays["y_test"]
    return write_npz(path, **arrays)


def counts_differ(path: Path) -> Path:
    arrays = keras_arrays()
    arrays["y_train"] = arrays["y_train"][:-1]
    return write_npz(path, **arrays)


def float_labels(path: Path) -> Path:
    arrays = keras_arrays()
    arrays["y_train"] = arrays["y_train"].astype(np.float32)
    return write_npz(path, **arrays)


def standardised_pixels(path: Path) -> Path:
    arrays = keras_arrays(dtype=np.float32)
    arrays["x_train"] = arrays["x_train"] - 0.5
    return write_npz(path, **arrays)


def sizes_differ(path: Path) -> Path:
    arrays = keras_arrays()
    arrays["x_test"] = arrays["x_test"][:, :27]
    return write_npz(path, **arrays)


def object_class_names(path: Path) -> Path:
    names = np.empty(10, dtype=object)
    names[:] = [str(i) for i in range(10)]
    with open(path, "wb") as handle:
        np.savez(handle, **keras_arrays(), class_names=names)
    return path


def not_a_zip(path: Path) -> Path:
    with open(path, "wb") as handle:
        np.save(handle, np.zeros(3))
    return path


BAD_NPZ = {
    "truncated": (truncated, "{p}: not a readable .npz (not a zip archive: truncated, or "
                             "another format)"),
    "not a zip": (not_a_zip, "{p}: not a readable .npz (not a zip archive: truncated, or "
                             "another format)"),
    "empty": (lambda p: (p.write_bytes(b""), p)[1],
              "{p}: not a readable .npz (not a zip archive: truncated, or another format)"),
    "pickled (object) array": (pickled_npz, "{p}: y_train is a pickled (object) array; netspec "
                                            "refuses it without unpickling it; save plain "
                                            "numbers or strings"),
    "pickled class names": (object_class_names, "{p}: class_names is a pickled (object) array; "
                                                "netspec refuses it without unpickling it; "
                                                "save plain numbers or strings"),
    "label out of range": (label_out_of_range, "{p}: y_test: label 10 at index 3 is out of "
                                               "range 0..9 (class_names names 10 classes)"),
    "negative label": (negative_label, "{p}: y_train: label -1 at index 5 is out of range; "
                                       "labels are 0, 1, 2, ..."),
    "header claims more data": (header_claims_more, "{p}: x_test is truncated or damaged: its "
                                                    "header says shape (99, 28, 28) of uint8 "
                                                    "(77616 bytes), the member holds 7840"),
    "missing y_test": (missing_key, "{p}: lacks y_test (a Keras-layout .npz holds x_train, "
                                    "y_train, x_test, y_test)"),
    "counts differ": (counts_differ, "{p}: x_train holds 40 images but y_train 39 labels"),
    "float labels": (float_labels, "{p}: y_train holds float32 values; labels must be integer "
                                   "class indices"),
    "standardised pixels": (standardised_pixels, "{p}: x_train holds values from "),
    "sizes differ": (sizes_differ, "{p}: x_train images are (1, 28, 28) (C, H, W) but x_test "
                                   "images are (1, 27, 28)"),
}


@pytest.mark.parametrize("case", BAD_NPZ.values(), ids=BAD_NPZ.keys())
def test_bad_npz_files_are_one_line_naming_the_file(tmp_path, case):
    make, message = case
    path = make(tmp_path / "bad.npz")
    with pytest.raises(DataError) as caught:
        load_npz(path)
    assert str(caught.value).startswith(message.format(p=path))
    assert "\n" not in str(caught.value)


def test_an_object_array_is_never_unpickled(tmp_path, monkeypatch):
    import pickle

    path = pickled_npz(tmp_path / "bad.npz")
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(DataError, match="pickled"):
        load_npz(path)


# --------------------------------------------------------------------------- picture folders

def test_a_colour_folder_loads_with_sorted_class_names(tmp_path):
    root = write_folder(tmp_path / "pets", classes=("dog", "cat"))
    data = load_folder(root, channels=3)
    assert data.class_names == ("cat", "dog")
    assert data.train_images.shape == (6, 3, 10, 12) and data.train_images.dtype == np.uint8
    assert data.train_labels.tolist() == [0, 0, 0, 1, 1, 1]
    Image = pytest.importorskip("PIL.Image")
    first = np.asarray(Image.open(root / "train" / "cat" / "0.png"))
    np.testing.assert_array_equal(data.train_images[0].transpose(1, 2, 0), first)


def test_a_folder_is_read_as_greyscale_when_the_input_takes_one_channel(tmp_path):
    root = write_folder(tmp_path / "pets")
    data = load_folder(root, channels=1)
    assert data.train_images.shape == (6, 1, 10, 12)
    Image = pytest.importorskip("PIL.Image")
    grey = np.asarray(Image.open(root / "train" / "cat" / "0.png").convert("L"))
    np.testing.assert_array_equal(data.train_images[0, 0], grey)


def test_a_test_split_may_lack_a_class(tmp_path):
    root = write_folder(tmp_path / "pets", classes=("cat", "dog", "fox"))
    for file in (root / "test" / "fox").iterdir():
        file.unlink()
    (root / "test" / "fox").rmdir()
    data = load_folder(root, 3)
    assert data.class_names == ("cat", "dog", "fox") and set(data.test_labels) == {0, 1}


def test_jpeg_pictures_are_read_and_links_out_of_the_folder_refused(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    root = write_folder(tmp_path / "pets")
    Image.new("RGB", (12, 10), (200, 10, 10)).save(root / "train" / "cat" / "red.jpg")
    data = load_folder(root, 3)
    assert len(data.train_images) == 7 and abs(int(data.train_images[3, 0].mean()) - 200) < 4
    outside = tmp_path / "outside.png"
    Image.new("RGB", (12, 10)).save(outside)
    (root / "test" / "dog" / "link.png").symlink_to(outside)
    with pytest.raises(DataError, match=r"link.png: a link to .*outside.png, outside "):
        load_folder(root, 3)


def _empty_class(root: Path) -> Path:
    for file in (root / "train" / "dog").iterdir():
        file.unlink()
    return root / "train" / "dog"


def _not_an_image(root: Path) -> Path:
    path = root / "train" / "cat" / "notes.png"
    path.write_text("not a picture")
    return path


def _wrong_suffix(root: Path) -> Path:
    path = root / "test" / "dog" / "notes.txt"
    path.write_text("hello")
    return path


def _no_test(root: Path) -> Path:
    for file in sorted((root / "test").rglob("*"), reverse=True):
        file.unlink() if file.is_file() else file.rmdir()
    (root / "test").rmdir()
    return root


def _other_size(root: Path) -> Path:
    Image = pytest.importorskip("PIL.Image")
    path = root / "test" / "dog" / "9.png"
    Image.new("RGB", (14, 10)).save(path)
    return path


def _unknown_test_class(root: Path) -> Path:
    (root / "test" / "dgo").mkdir()
    return root / "test" / "dgo"


def _loose_file(root: Path) -> Path:
    path = root / "train" / "x.png"
    (root / "train" / "cat" / "0.png").rename(path)
    return path


def _gif(root: Path) -> Path:
    Image = pytest.importorskip("PIL.Image")
    path = root / "train" / "cat" / "g.png"
    Image.new("RGB", (12, 10)).save(path, format="GIF")
    return path


def _truncated_png(root: Path) -> Path:
    path = root / "train" / "cat" / "1.png"
    path.write_bytes(path.read_bytes()[:60])
    return path


BAD_FOLDERS = {
    "empty class folder": (_empty_class, "{p}: empty class folder (no .png, .jpg or .jpeg "
                                         "pictures)"),
    "a file that is not an image": (_not_an_image, "{p}: not a readable image: cannot identify "
                                                   "image file"),
    "a file that is not named as a picture": (
        _wrong_suffix, "{p}: not a picture netspec reads (a class folder holds .png, .jpg and "
                       ".jpeg files only)"),
    "a folder without test/": (_no_test, "{p}: no test/ directory; a folder of pictures holds "
                                         "train/ and test/, each with one sub-directory per "
                                         "class"),
    "pictures of another size": (_other_size, "{p}: pictures differ in size: this one is 14x10, "
                                              "{root}/train/cat/0.png is 12x10 (width x "
                                              "height); resize them to one size"),
    "a test class unknown to train": (_unknown_test_class, "{p}: class 'dgo' has no folder in "
                                                           "train/; did you mean 'dog'?"),
    "a picture outside the class folders": (_loose_file, "{p}: pictures go inside a class "
                                                         "folder (train/<class>/), not in "
                                                         "train/ itself"),
    "a GIF named .png": (_gif, "{p}: a GIF image; netspec reads PNG and JPEG"),
    "a truncated PNG": (_truncated_png, "{p}: not a readable image"),
}


@pytest.mark.parametrize("case", BAD_FOLDERS.values(), ids=BAD_FOLDERS.keys())
def test_bad_folders_are_one_line_naming_the_file(tmp_path, case):
    root = write_folder(tmp_path / "pets")
    damage, message = case
    path = damage(root)
    with pytest.raises(DataError) as caught:
        load_folder(root, 3)
    assert str(caught.value).startswith(message.format(p=path, root=root)), str(caught.value)
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------------ choosing the data

def test_names_win_over_paths_and_typos_get_a_suggestion(tmp_path):
    assert choose_data("kmnist", base=tmp_path) == DataChoice("named", "kmnist")
    with pytest.raises(DataError, match=r"^'fashion': no such file or directory, and not a data "
                                        r"set name; did you mean 'fashion-mnist'\? \(names: "
                                        r"mnist, fashion-mnist, kmnist, cifar10\)$"):
        choose_data("fashion", base=tmp_path)


def spec_with_data(directory: Path, table: str) -> Path:
    path = directory / "net.toml"
    path.write_text(f"""[network]
name = "net"

[data]
{table}

[nodes.image]
op = "input"
shape = [3, 10, 12]

[nodes.flat]
op = "flatten"

[nodes.fc]
op = "linear"
out_features = 2
""")
    return path


def parsed_choice(path: Path) -> DataChoice:
    spec = parse_spec(path.read_text(), file=path.name, directory=path.parent)
    return parse_data_config(spec.data, file=spec.file, locate=spec.source.locate,
                             directory=spec.directory)


def test_a_path_in_data_is_relative_to_the_spec_and_confined_to_its_directory(tmp_path):
    write_folder(tmp_path / "specs" / "pets")
    write_npz(tmp_path / "outside.npz", **keras_arrays())
    spec = spec_with_data(tmp_path / "specs", 'source = "pets"')
    assert parsed_choice(spec) == DataChoice("folder", str(tmp_path / "specs" / "pets"))
    spec.write_text(spec.read_text().replace('"pets"', '"../outside.npz"'))
    with pytest.raises(SpecError) as caught:
        parsed_choice(spec)
    assert str(caught.value) == (f"net.toml:5: [data] source: '../outside.npz' points outside "
                                 f"the spec's directory {tmp_path / 'specs'}; name data "
                                 f"elsewhere with --data on the command line")


@pytest.mark.parametrize("table, message", [
    ('sorce = "mnist"', "net.toml:5: [data] unknown field 'sorce'; did you mean 'source'? (valid "
                        "fields: source)"),
    ("source = 3", "net.toml:5: [data] source: Input should be a valid string (got 3)"),
    ('source = ""', "net.toml:5: [data] source: String should have at least 1 character "
                    "(got '')"),
    ('source = "cifar-10"', "net.toml:5: [data] source: 'cifar-10': no such file or directory, "
                            "and not a data set name; did you mean 'cifar10'? (names: mnist, "
                            "fashion-mnist, kmnist, cifar10)"),
])
def test_a_bad_data_table_is_reported_at_its_line(tmp_path, table, message):
    with pytest.raises(SpecError) as caught:
        parsed_choice(spec_with_data(tmp_path, table))
    assert str(caught.value) == message


def test_compile_checks_the_data_against_the_input_and_output_nodes(tmp_path):
    spec = spec_with_data(tmp_path, 'source = "cifar10"')
    code, out, err = run_cli("compile", spec)
    assert code == 1
    assert err == (f"netspec compile: 2 errors:\n{spec}:9: cifar10 gives (3, 32, 32); input node "
                   f"'image' takes (3, 10, 12)\n{spec}:14: cifar10 has 10 classes; output node "
                   f"'fc' gives (2,), it should give (10,)\n")
    write_folder(tmp_path / "pets")
    spec.write_text(spec.read_text().replace('"cifar10"', '"pets"'))
    code, out, err = run_cli("compile", spec)
    assert (code, err) == (0, "")
    assert out.rstrip().endswith("data: pets/ gives (3, 10, 12) in 2 classes, as the network "
                                 "takes them".replace("pets/", f"{tmp_path / 'pets'}/"))


def test_the_example_message_of_the_issue(tmp_path):
    spec = tmp_path / "lenet.toml"
    spec.write_text('[network]\nname = "n"\n[nodes.image]\nop = "input"\nshape = [1, 28, 28]\n'
                    '[nodes.flat]\nop = "flatten"\n[nodes.fc]\nop = "linear"\n'
                    'out_features = 10\n')
    code, _, err = run_cli("train", spec, "--data", "cifar10", "--out", tmp_path / "run")
    assert code == 1
    assert err == (f"netspec train: error: {spec}:5: cifar10 gives (3, 32, 32); input node "
                   "'image' takes (1, 28, 28)\n")
    assert not (tmp_path / "run").exists()


def test_data_info_needs_no_pixels(tmp_path):
    info = data_info(DataChoice("named", "fashion-mnist"))
    assert (info.sample_shape, info.classes) == ((1, 28, 28), 10)
    root = write_folder(tmp_path / "pets")
    assert data_info(choose_data(str(root)), channels=1).sample_shape == (1, 10, 12)


def test_data_dir_is_for_named_sets_only(tmp_path):
    path = write_npz(tmp_path / "d.npz", **keras_arrays())
    with pytest.raises(DataError, match="--data-dir says where the files of a named data set"):
        load_data(choose_data(str(path)), data_dir=tmp_path)


# ------------------------------------------------------------------- statistics, augmentation

def test_channel_statistics_match_numpy():
    images = RNG.integers(0, 256, (30, 3, 5, 7), dtype=np.uint8)
    mean, std = channel_stats(images)
    scaled = images / 255.0
    np.testing.assert_allclose(mean, scaled.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, scaled.std(axis=(0, 2, 3)), rtol=1e-12)
    floats = (images / 255.0).astype(np.float32)
    np.testing.assert_allclose(channel_stats(floats)[0], mean, rtol=1e-6)


def test_a_padded_random_crop_is_a_window_of_the_padded_image():
    images = RNG.random((16, 3, 6, 5))
    for mode, pad in (("zeros", "constant"), ("reflect", "reflect")):
        out = random_crop(images, np.random.default_rng(4), 2, mode)
        offsets = np.random.default_rng(4).integers(0, 4, size=(16, 2), endpoint=True)
        padded = np.pad(images, ((0, 0), (0, 0), (2, 2), (2, 2)), mode=pad)
        for i, (dy, dx) in enumerate(offsets):
            np.testing.assert_array_equal(out[i], padded[i, :, dy:dy + 6, dx:dx + 5])


def test_a_flip_mirrors_about_half_the_images_and_is_reproducible():
    images = RNG.random((400, 1, 4, 4))
    out = random_flip(images, np.random.default_rng(1))
    flipped = [not np.array_equal(o, i) for o, i in zip(out, images)]
    assert 150 < sum(flipped) < 250
    for o, i, f in zip(out, images, flipped):
        np.testing.assert_array_equal(o, i[..., ::-1] if f else i)
    np.testing.assert_array_equal(random_flip(images, np.random.default_rng(1)), out)


def test_augmentation_for_natural_images_is_off_by_default():
    from netspec.train.config import TrainConfig

    augment = TrainConfig().augment
    assert not augment.horizontal_flip and augment.crop_padding == 0 and not augment.any


# ------------------------------------------------------------------- runs on the other data

def colour_spec(directory: Path, classes: int = 3, source: str | None = None,
                augment: str = "horizontal_flip = true\ncrop_padding = 2") -> Path:
    data = f'[data]\nsource = "{source}"\n\n' if source else ""
    path = directory / "colour.toml"
    path.write_text(f"""[network]
name = "colour"

{data}[nodes.image]
op = "input"
shape = [3, 8, 6]

[nodes.conv]
op = "conv2d"
out_channels = 4
kernel_size = 3
padding = 1

[nodes.relu]
op = "relu"

[nodes.flat]
op = "flatten"

[nodes.fc]
op = "linear"
out_features = {classes}

[train]
epochs = 2
batch_size = 16
seed = 5
validation = 20

[train.optimizer]
type = "adam"
lr = 0.01

[train.augment]
{augment}
""")
    return path


@pytest.fixture
def colour_npz(tmp_path) -> Path:
    arrays = keras_arrays(train=120, test=30, shape=(8, 6, 3), classes=3)
    # a class is told by its brightest channel, so that a little training learns something
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        x[np.arange(len(x)), :, :, y] = 255
    return write_npz(tmp_path / "colours.npz", **arrays,
                     class_names=np.array(["red", "green", "blue"]))


def test_a_colour_npz_trains_with_flips_and_crops_and_records_its_data(tmp_path, colour_npz):
    spec = colour_spec(tmp_path)
    run = tmp_path / "run"
    code, out, err = run_cli("train", spec, "--data", colour_npz, "--out", run, "--no-plots")
    assert code == 0, err
    header = re.sub(r", \d+ BLAS threads?", "", out)  # the thread count depends on the machine
    assert header.startswith("training colour (691 params) for 2 epochs, batch 16, adam lr 0.01, "
                             "100 training / 20 validation images of colours.npz (3 classes) -> ")
    config = json.loads((run / "config.json").read_text())
    assert config["data"] == {"kind": "npz", "source": str(colour_npz)}
    assert config["config"]["augment"]["horizontal_flip"] is True
    from netspec.weights.checkpoint import read_checkpoint

    meta = read_checkpoint(run / "best.npz").meta
    assert meta["class_names"] == ["red", "green", "blue"]
    assert len(meta["mean"]) == len(meta["std"]) == 3
    assert json.loads((run / "result.json").read_text())["class_names"] == ["red", "green",
                                                                            "blue"]

    code, out, err = run_cli("evaluate", spec, "--weights", run / "best.npz")
    assert (code, err) == (0, "")
    assert "(30 images of colours.npz (3 classes))" in out.splitlines()[0]
    rows = [line.split()[:2] for line in out.splitlines()[4:7]]
    assert rows == [["0", "red"], ["1", "green"], ["2", "blue"]]

    picture = tmp_path / "pixel.npy"
    np.save(picture, np.full((8, 6, 3), (0, 0, 255), dtype=np.uint8))
    code, out, err = run_cli("predict", spec, "--weights", run / "best.npz", picture)
    assert (code, err) == (0, "")
    assert out.splitlines()[0].split()[:3] == ["input", "class", "confidence"]
    assert out.splitlines()[2].split()[:3] == [str(picture), "2", "blue"]


def test_resuming_a_run_on_an_npz_is_bit_identical(tmp_path, colour_npz):
    from test_train import assert_same_arrays, metrics, start_stopping_at, weights

    from netspec.train.loop import TrainingInterrupted, resume_run, start_run

    spec = colour_spec(tmp_path)
    straight = start_run(spec, tmp_path / "straight", data=str(colour_npz)).run()
    trainer = start_stopping_at(1, 3, spec, tmp_path / "resumed", data=str(colour_npz))
    with pytest.raises(TrainingInterrupted):
        trainer.run()
    resumed = resume_run(tmp_path / "resumed").run()
    assert metrics(resumed.history) == metrics(straight.history)
    for name in ("best.npz", "last.npz"):
        assert_same_arrays(weights(tmp_path / "resumed" / name),
                           weights(tmp_path / "straight" / name))
    assert resumed.test.accuracy == straight.test.accuracy


def test_resuming_on_changed_data_is_refused(tmp_path, colour_npz):
    from test_train import start_stopping_at

    from netspec.train.loop import TrainingInterrupted, resume_run

    spec = colour_spec(tmp_path)
    trainer = start_stopping_at(1, 3, spec, tmp_path / "run", data=str(colour_npz))
    with pytest.raises(TrainingInterrupted):
        trainer.run()
    arrays = dict(np.load(colour_npz))
    arrays["x_train"] = 255 - arrays["x_train"]
    write_npz(colour_npz, **arrays)
    with pytest.raises(DataError, match=r"^colours.npz is not the data this run started with"):
        resume_run(tmp_path / "run")


def test_a_spec_data_table_chooses_the_data_and_the_cli_can_override_it(tmp_path, colour_npz):
    spec = colour_spec(tmp_path, source="colours.npz", augment="")
    code, out, err = run_cli("train", spec, "--out", tmp_path / "run", "--no-plots")
    assert code == 0, err
    assert "of colours.npz (3 classes)" in out.splitlines()[0]
    code, _, err = run_cli("train", spec, "--data", "mnist", "--out", tmp_path / "other")
    assert code == 1 and "mnist gives (1, 28, 28); input node 'image' takes (3, 8, 6)" in err
    code, _, err = run_cli("train", "--resume", tmp_path / "run", "--data", "mnist")
    assert code == 1 and "drop --data" in err


@pytest.mark.parametrize("damage", ["label out of range", "pickled (object) array",
                                    "truncated"])
def test_nothing_is_written_to_the_run_directory_before_the_data_passed(tmp_path, damage):
    path = BAD_NPZ[damage][0](tmp_path / "bad.npz")
    spec = colour_spec(tmp_path, classes=10)
    spec.write_text(spec.read_text().replace("[3, 8, 6]", "[1, 28, 28]"))
    code, out, err = run_cli("train", spec, "--data", path, "--out", tmp_path / "run")
    assert (code, out) == (1, "")
    assert err == f"netspec train: error: {BAD_NPZ[damage][1].format(p=path)}\n" or \
        err.startswith(f"netspec train: error: {BAD_NPZ[damage][1].format(p=path)}")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_picture_folder_trains_and_evaluates_with_its_class_names(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    root = tmp_path / "shapes"
    rng = np.random.default_rng(0)
    for split, count in (("train", 40), ("test", 10)):
        for name, fill in (("dark", 30), ("light", 220)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(fill + rng.integers(-20, 20, (6, 8)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    spec = colour_spec(tmp_path, classes=2, augment="")
    spec.write_text(spec.read_text().replace("[3, 8, 6]", "[1, 6, 8]"))
    run = tmp_path / "run"
    code, out, err = run_cli("train", spec, "--data", root, "--out", run, "--no-plots")
    assert code == 0, err
    assert f"60 training / 20 validation images of {root}/ (2 classes)" in out.splitlines()[0]
    code, out, err = run_cli("evaluate", spec, "--weights", run / "best.npz")
    assert code == 0, err
    assert out.startswith("test accuracy 100.00%")
    assert [line.split()[:2] for line in out.splitlines()[4:6]] == [["0", "dark"],
                                                                    ["1", "light"]]
    code, out, err = run_cli("predict", spec, "--weights", run / "best.npz",
                             root / "test" / "light" / "0.png")
    assert code == 0, err
    assert out.splitlines()[2].split()[1:3] == ["1", "light"]


def test_plots_carry_the_class_names(tmp_path, colour_npz, monkeypatch):
    pytest.importorskip("matplotlib")
    from netspec.pictures import plots
    from netspec.train.report import plot_run

    spec = colour_spec(tmp_path)
    run = tmp_path / "run"
    assert run_cli("train", spec, "--data", colour_npz, "--out", run, "--no-plots")[0] == 0
    seen = {}
    real_confusion, real_mistakes = plots.plot_confusion, plots.plot_mistakes

    def confusion(matrix, path, class_names=None):
        seen["confusion"] = class_names
        real_confusion(matrix, path, class_names)

    def mistakes(images, true, predicted, path, **kwargs):
        seen["mistakes"] = (images.shape[1:], kwargs)
        real_mistakes(images, true, predicted, path, **kwargs)

    monkeypatch.setattr("netspec.train.report.plot_confusion", confusion)
    monkeypatch.setattr("netspec.train.report.plot_mistakes", mistakes)
    written = plot_run(run)
    assert {p.name for p in written} == {"curves.png", "filters.png", "confusion.png",
                                         "mistakes.png"}
    assert seen["confusion"] == ("red", "green", "blue")
    assert seen["mistakes"] == ((3, 8, 6), {"class_names": ("red", "green", "blue"),
                                            "light_on_dark": False})


def test_an_npz_of_mnist_trains_exactly_as_the_idx_files_do(tmp_path, mnist_dir):
    from test_train import TINY, assert_same_arrays, metrics, weights, write_spec

    from netspec.data import load_mnist
    from netspec.train.loop import start_run

    mnist = load_mnist(mnist_dir)
    npz = write_npz(tmp_path / "mnist.npz", x_train=mnist.train_images[:700],
                    y_train=mnist.train_labels[:700], x_test=mnist.test_images,
                    y_test=mnist.test_labels)
    spec = write_spec(tmp_path, TINY)
    from_idx = start_run(spec, tmp_path / "idx", data_dir=mnist_dir).run()
    from_npz = start_run(spec, tmp_path / "npz", data=str(npz)).run()
    assert metrics(from_npz.history) == metrics(from_idx.history)
    assert from_npz.test.accuracy == from_idx.test.accuracy
    assert_same_arrays(weights(tmp_path / "npz" / "best.npz"),
                       weights(tmp_path / "idx" / "best.npz"))


def test_a_corrupt_recorded_data_choice_is_named(tmp_path, colour_npz):
    from test_train import start_stopping_at

    from netspec.train.loop import TrainingInterrupted, resume_run

    trainer = start_stopping_at(1, 2, colour_spec(tmp_path), tmp_path / "run",
                                data=str(colour_npz))
    with pytest.raises(TrainingInterrupted):
        trainer.run()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    for bad in ({"kind": "pickle", "source": "x"}, {"kind": "named", "source": "imagenet"}, 3):
        config["data"] = bad
        (tmp_path / "run" / "config.json").write_text(json.dumps(config))
        with pytest.raises(DataError, match=r"config.json: (the recorded data choice is corrupt"
                                            r"|records an unknown data set 'imagenet')"):
            resume_run(tmp_path / "run")


def test_weights_that_record_no_data_are_mnist_weights(tmp_path, mnist_dir):
    from test_train import TINY, write_spec

    from netspec.runtime.executor import compile
    from netspec.train.loop import start_run
    from netspec.weights.checkpoint import load_weights, save_checkpoint

    spec = write_spec(tmp_path, TINY.replace("epochs = 2", "epochs = 1"))
    start_run(spec, tmp_path / "run", data_dir=mnist_dir).run()
    net = compile(spec)
    meta = load_weights(tmp_path / "run" / "best.npz", net).meta
    assert meta["data"] == {"kind": "named", "source": "mnist"} and isinstance(meta["mean"], float)
    old = {k: v for k, v in meta.items() if k not in ("data", "class_names", "format", "spec",
                                                      "spec_hash")}
    save_checkpoint(tmp_path / "old.npz", net, meta=old)
    code, out, err = run_cli("evaluate", spec, "--weights", tmp_path / "old.npz", "--data-dir",
                             mnist_dir)
    assert (code, err) == (0, "")
    assert "(10,000 images)" in out.splitlines()[0]


def test_a_folder_copy_of_mnist_trains_and_evaluates_with_its_class_names(tmp_path, mnist_dir):
    pytest.importorskip("PIL")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    try:
        from mnist_copies import WORDS
        from mnist_copies import write_folder as write_mnist_folder
    finally:
        sys.path.pop(0)
    from test_train import TINY, write_spec

    write_mnist_folder(tmp_path / "digits", str(mnist_dir), 30, 5)
    picture = tmp_path / "digits" / "test" / "7-seven" / "00000.png"
    assert np.asarray(__import__("PIL.Image").Image.open(picture))[0, 0] == 255  # dark on white
    spec = write_spec(tmp_path, TINY.replace("limit = 600", "limit = 0"))
    run = tmp_path / "run"
    code, out, err = run_cli("train", spec, "--data", tmp_path / "digits", "--out", run,
                             "--no-plots")
    assert code == 0, err
    assert "200 training / 100 validation images of" in out.splitlines()[0]
    code, out, err = run_cli("evaluate", spec, "--weights", run / "best.npz")
    assert (code, err) == (0, "")
    assert "(50 images of" in out.splitlines()[0]
    # the folders sort in digit order, so class i is the digit i
    assert [line.split()[:2] for line in out.splitlines()[4:14]] == [
        [str(i), f"{i}-{word}"] for i, word in enumerate(WORDS)]
