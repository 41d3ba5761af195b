"""Property tests of the data files netspec reads: random Keras-layout ``.npz`` contents,
damaged archives, random pictures in a folder, random CIFAR batches and random ``[data]``
tables either load as what they hold or raise a one-line DataError/SpecError naming the file."""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from netspec.common.errors import DataError, SpecError
from netspec.data.catalog import parse_cifar_batch
from netspec.data.folder import load_folder
from netspec.data.npz import load_npz
from netspec.lang.spec import parse_spec

SCALE = 20 if os.environ.get("NETSPEC_HYPOTHESIS_PROFILE") == "long" else 1


def examples(count: int) -> settings:
    return settings(max_examples=count * SCALE, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


dtypes = st.sampled_from([np.uint8, np.int16, np.int64, np.uint16, np.float32, np.float64,
                          np.bool_, np.complex64, "U3", "S2"])


@st.composite
def keras_members(draw) -> dict[str, np.ndarray]:
    members = {}
    for split in ("train", "test"):
        n = draw(st.integers(0, 5))
        shape = draw(st.sampled_from([(n, 4, 3), (n, 4, 3, 1), (n, 4, 3, 3), (n, 12), (n,),
                                      (n, 4, 3, 2, 1)]))
        members[f"x_{split}"] = draw(hnp.arrays(draw(dtypes), shape))
        labels_shape = draw(st.sampled_from([(n,), (n, 1), (n + 1,), (n, 2)]))
        members[f"y_{split}"] = draw(hnp.arrays(draw(dtypes), labels_shape))
    keep = draw(st.sets(st.sampled_from(list(members)), min_size=3))
    members = {k: v for k, v in members.items() if k in keep}
    if draw(st.booleans()):
        members["class_names"] = draw(hnp.arrays(draw(dtypes), draw(st.integers(0, 12))))
    return members


def check_loaded_or_refused(path: Path) -> None:
    try:
        data = load_npz(path)
    except DataError as exc:
        message = str(exc)
        assert message.startswith(str(path)) and "\n" not in message
        return
    for images, labels in ((data.train_images, data.train_labels),
                           (data.test_images, data.test_labels)):
        assert images.ndim == 4 and images.dtype in (np.uint8, np.float32)
        assert len(images) == len(labels) > 0
        assert labels.min() >= 0 and labels.max() < len(data.class_names)
        if images.dtype == np.float32:
            assert np.all((images >= 0) & (images <= 1))


@examples(150)
@given(keras_members())
def test_random_npz_contents_load_as_they_are_or_are_refused(members):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "data.npz"
        with open(path, "wb") as handle:
            np.savez(handle, **members)
        check_loaded_or_refused(path)


def good_npz() -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez_compressed(buffer, x_train=rng.integers(0, 256, (6, 5, 4), dtype=np.uint8),
                        y_train=np.arange(6) % 3, x_test=rng.integers(0, 256, (2, 5, 4),
                                                                     dtype=np.uint8),
                        y_test=np.array([0, 2]), class_names=np.array(["a", "b", "c"]))
    return buffer.getvalue()


GOOD = good_npz()


@examples(200)
@given(st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), max_size=4),
       st.integers(0, len(GOOD)))
def test_damaged_npz_archives_load_or_are_refused(flips, keep):
    data = bytearray(GOOD[:keep])
    for index, value in flips:
        if index < len(data):
            data[index] = value
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "data.npz"
        path.write_bytes(bytes(data))
        check_loaded_or_refused(path)


@examples(60)
@given(st.binary(max_size=3 * 3073 + 5), st.integers(1, 20))
def test_random_cifar_batches_parse_or_are_refused(raw, classes):
    try:
        images, labels = parse_cifar_batch(raw, "batch.bin", classes)
    except DataError as exc:
        assert str(exc).startswith("batch.bin: ") and "\n" not in str(exc)
        return
    assert images.shape == (len(raw) // 3073, 3, 32, 32) and labels.max(initial=0) < classes


@examples(30)
@given(st.lists(st.tuples(st.sampled_from(["train", "test"]), st.sampled_from(["a", "b"]),
                          st.sampled_from([(4, 3), (3, 4)]),
                          st.sampled_from(["L", "RGB", "RGBA", "P", "junk", "gif"])),
                max_size=8))
def test_random_picture_folders_load_or_are_refused(pictures):
    Image = pytest.importorskip("PIL.Image")
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory) / "pictures"
        for split in ("train", "test"):
            (root / split).mkdir(parents=True)
        for index, (split, name, size, mode) in enumerate(pictures):
            folder = root / split / name
            folder.mkdir(exist_ok=True)
            path = folder / f"{index}.png"
            if mode == "junk":
                path.write_bytes(b"\x89PNG not really")
            else:
                Image.new("RGB" if mode == "gif" else mode, size).save(
                    path, format="GIF" if mode == "gif" else "PNG")
        for channels in (1, 3):
            try:
                data = load_folder(root, channels)
            except DataError as exc:
                assert str(exc).startswith(str(root)) and "\n" not in str(exc)
                continue
            assert data.train_images.shape[1] == channels
            assert len(data.train_images) == len(data.train_labels) > 0
            assert len(data.test_images) > 0


toml_values = st.one_of(st.integers(), st.booleans(), st.text(max_size=12),
                        st.sampled_from(['"mnist"', '"cifar10"', '"../x.npz"', '"/etc"', '""']))


@examples(60)
@given(st.dictionaries(st.sampled_from(["source", "sorce", "name"]), toml_values, max_size=2))
def test_random_data_tables_are_choices_or_diagnostics_at_their_line(table):
    from netspec.train.data import spec_data_choice

    lines = []
    for key, value in table.items():
        literal = value if isinstance(value, str) and value.startswith('"') else (
            str(value).lower() if isinstance(value, bool) else
            repr(value).replace("'", '"') if isinstance(value, str) else str(value))
        if isinstance(value, str) and not value.startswith('"'):
            literal = '"' + value.replace("\\\\", "").replace('"', "") + '"'
        lines.append(f"{key} = {literal}")
    text = "[data]\n" + "\n".join(lines) + '\n[nodes.image]\nop = "input"\nshape = [1, 2, 2]\n'
    try:
        spec = parse_spec(text, file="fuzz.toml", directory=Path(tempfile.gettempdir()))
    except SpecError:
        return  # text the generator made that is not TOML: the spec's own tests cover that
    try:
        choice = spec_data_choice(spec)
    except SpecError as exc:
        assert all(d.file == "fuzz.toml" and d.line is not None for d in exc.diagnostics)
        return
    assert choice is not None and choice.kind in ("named", "folder", "npz")


def test_the_zip_checks_do_not_read_members_they_refuse(tmp_path):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                       "shape": (10**6, 100, 100)})
        archive.writestr("x_train.npy", header.getvalue() + bytes(10**6))
    with pytest.raises(DataError, match="claims shape .* more than the 4 GiB netspec reads"):
        load_npz(path)
