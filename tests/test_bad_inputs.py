"""Untrusted inputs: damaged weights, tampered MNIST files, weight files outside the spec's
directory, pictures and bad command lines. Each is reported as such (which file, what is
wrong), by the library as a NetspecError and by the CLI as one message and exit status 1,
never a NumPy or zipfile traceback. docs/bad_inputs.md lists what the user sees for each."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from netspec.cli import main
from netspec.common.errors import DataError, NetspecError, SpecError, WeightsError
from netspec.data import MNIST_FILES, load_mnist, read_idx
from netspec.data.images import load_digit_images
from netspec.lang.spec import load_spec, parse_spec
from netspec.plan import budget
from netspec.plan.budget import check_memory, estimate_memory
from netspec.plan.compiler import CompileError, Plan, compile_plan
from netspec.runtime.executor import compile
from netspec.weights.checkpoint import load_weights, read_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]


def npy_bytes(shape: tuple[int, ...], descr: str = "<f8", payload: bytes = b"") -> bytes:
    """A .npy file whose header claims ``shape``, followed by ``payload`` whatever its size."""
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


def assert_user_error(code: int, err: str, *fragments: str) -> None:
    """One CLI error: exit 1, the fragments on stderr, and no traceback."""
    assert code == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


# --------------------------------------------------------------------------------------------
# Weights files


@pytest.fixture(scope="module")
def good_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "lenet5.npz"
    save_checkpoint(path, compile("lenet5"), meta={"mean": 0.13, "std": 0.31})
    return path


def _rewrite(change: Callable[[dict[str, np.ndarray]], None]) -> Callable[[Path, Path], None]:
    """A damage that rewrites the archive's arrays (meta included) through ``change``."""

    def damage(good: Path, target: Path) -> None:
        with np.load(good) as archive:
            arrays = {name: archive[name] for name in archive.files}
        change(arrays)
        np.savez(target, **arrays)

    return damage


def _set(name: str, value: np.ndarray) -> Callable[[dict[str, np.ndarray]], None]:
    return lambda arrays: arrays.__setitem__(name, value)


def _meta(text: bytes) -> Callable[[dict[str, np.ndarray]], None]:
    return _set("meta", np.frombuffer(text, dtype=np.uint8))


def _bytes(change: Callable[[bytes], bytes]) -> Callable[[Path, Path], None]:
    return lambda good, target: target.write_bytes(change(good.read_bytes()))


def _flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


def _huge_member(good: Path, target: Path) -> None:
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(target, "w") as out:
        for name in source.namelist():
            data = source.read(name)
            out.writestr(name, npy_bytes((10**12,)) if name == "param/fc3.bias.npy" else data)


def _pickled(arrays: dict[str, np.ndarray]) -> None:
    arrays["param/fc3.bias"] = np.array([{"os": "system"}] * 10, dtype=object)


WEIGHT_DAMAGE = {
    "missing": (lambda good, target: None, "no such weights file"),
    "empty": (_bytes(lambda data: b""), "not an .npz"),
    "truncated to half": (_bytes(lambda data: data[: len(data) // 2]), "truncated"),
    "truncated to 100 bytes": (_bytes(lambda data: data[:100]), "truncated"),
    "one byte flipped": (_bytes(_flip), "corrupt"),
    "random bytes": (_bytes(lambda data: os.urandom(len(data))), "not an .npz"),
    "a bare .npy": (_bytes(lambda data: npy_bytes((2,), payload=bytes(16))), "not an .npz"),
    "an empty zip": (lambda good, target: zipfile.ZipFile(target, "w").close(), "metadata"),
    "pickled object array": (_rewrite(_pickled), "Object arrays cannot be loaded"),
    "header claims 10^12 values": (_huge_member, "Unable to allocate"),
    "no metadata": (_rewrite(lambda arrays: arrays.pop("meta")), "no metadata"),
    "metadata not JSON": (_rewrite(_meta(b"{not json")), "metadata is corrupt"),
    "metadata not UTF-8": (_rewrite(_meta(b"\xff\xfe")), "metadata is corrupt"),
    "metadata a list": (_rewrite(_meta(b"[1, 2]")), "metadata is corrupt"),
    "format 99": (_rewrite(_meta(b'{"format": 99}')), "unsupported weights format 99"),
    "unexpected entry": (_rewrite(_set("junk", np.zeros(2))), "unexpected entry 'junk'"),
    "another spec's layout": (_rewrite(_meta(b'{"format": 1, "spec": "mlp", "spec_hash": '
                                             b'"0123"}')), "belong to spec 'mlp'"),
    "NaN in a parameter": (_rewrite(_set("param/fc3.bias", np.full(10, np.nan, np.float32))),
                           "NaN or infinite"),
    "strings as a parameter": (_rewrite(_set("param/fc3.bias", np.array(["a"] * 10))),
                               "not real numbers"),
    "complex parameter": (_rewrite(_set("param/fc3.bias", np.ones(10, np.complex64))),
                          "not real numbers"),
    "parameter of the wrong shape": (_rewrite(_set("param/fc3.bias", np.zeros(11, np.float32))),
                                     "fc3.bias"),
}


@pytest.fixture(params=sorted(WEIGHT_DAMAGE), ids=lambda name: name.replace(" ", "-"))
def damaged_weights(request, good_weights: Path, tmp_path: Path) -> tuple[Path, str]:
    damage, message = WEIGHT_DAMAGE[request.param]
    target = tmp_path / "weights.npz"
    damage(good_weights, target)
    if request.param == "parameter of the wrong shape":
        # keep the layout fingerprint consistent, so that the shape check itself is reached
        with np.load(good_weights) as archive:
            meta = archive["meta"]
        _rewrite(_set("meta", meta))(target, target)
    return target, message


def test_damaged_weights_are_reported_naming_the_file(damaged_weights) -> None:
    path, message = damaged_weights
    net = compile("lenet5")
    before = {key: value.copy() for key, value in net.state().items()}
    with pytest.raises(WeightsError) as raised:
        load_weights(path, net)
    assert str(path) in str(raised.value)
    assert message in str(raised.value)
    assert all(np.array_equal(before[key], value) for key, value in net.state().items())


def test_damaged_weights_through_the_cli_exit_1_without_a_traceback(damaged_weights,
                                                                    capsys) -> None:
    path, message = damaged_weights
    code = main(["evaluate", "lenet5", "--weights", str(path), "--data-dir", "/nowhere"])
    assert_user_error(code, capsys.readouterr().err, str(path), message)


def test_the_genuine_weights_load(good_weights: Path) -> None:
    assert set(read_checkpoint(good_weights).params) == set(compile("lenet5").params)


# --------------------------------------------------------------------------------------------
# MNIST IDX files


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


IDX_DAMAGE = {
    # name: (bytes of t10k-labels from its decoded bytes, what the message says)
    "gzip truncated": (lambda raw: _gz(raw)[:200], "truncated gzip stream"),
    "gzip byte flipped": (lambda raw: _flip(_gz(raw)), "corrupt gzip stream"),
    "gzip CRC wrong": (lambda raw: _gz(raw)[:-8] + b"\0\0\0\0" + _gz(raw)[-4:],
                       "corrupt gzip stream"),
    "empty": (lambda raw: b"", "too short for an IDX header"),
    "header cut": (lambda raw: raw[:6], "the header of a 1-d IDX file needs 8 bytes"),
    "data cut": (lambda raw: raw[:5000], "truncated: header says 10000"),
    "extra bytes": (lambda raw: raw + b"x", "1 extra bytes"),
    "images magic": (lambda raw: b"\0\0\x08\x03" + raw[4:], "bad magic number 0x00000803"),
    "float data type": (lambda raw: b"\0\0\x0d\x01" + raw[4:], "data type byte is 0x0D"),
    "a PNG": (lambda raw: b"\x89PNG\r\n\x1a\n" + bytes(20), "bad magic number 0x89504E47"),
    "header claims 2^32 labels": (lambda raw: b"\0\0\x08\x01\xff\xff\xff\xff" + raw[8:],
                                  "truncated: header says 4294967295"),
}


@pytest.fixture(scope="module")
def labels_raw(mnist_dir: Path) -> bytes:
    plain = mnist_dir / "t10k-labels-idx1-ubyte"
    return plain.read_bytes() if plain.is_file() else gzip.decompress(
        (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())


@pytest.mark.parametrize("damage", sorted(IDX_DAMAGE))
def test_damaged_idx_files_are_reported_naming_the_file(damage: str, labels_raw: bytes,
                                                        tmp_path: Path) -> None:
    make, message = IDX_DAMAGE[damage]
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(make(labels_raw))
    with pytest.raises(DataError) as raised:
        read_idx(path, ndim=1)
    assert str(path) in str(raised.value)
    assert message in str(raised.value)


def mnist_copy(mnist_dir: Path, target: Path, replace: dict[str, bytes | None]) -> Path:
    """A data directory linking to the real files, except those replaced (None: removed)."""
    target.mkdir()
    for name in MNIST_FILES:
        if name in replace:
            if replace[name] is not None:
                (target / name).write_bytes(replace[name])
            continue
        source = next(p for p in (mnist_dir / name, mnist_dir / f"{name}.gz") if p.is_file())
        (target / source.name).symlink_to(source)
    return target


def test_a_tampered_label_fails_the_checksum_naming_the_file(mnist_dir, labels_raw,
                                                              tmp_path) -> None:
    tampered = bytearray(labels_raw)
    tampered[100] = (tampered[100] + 1) % 10  # still a valid IDX file, just not MNIST
    directory = mnist_copy(mnist_dir, tmp_path / "data",
                           {"t10k-labels-idx1-ubyte": bytes(tampered)})
    with pytest.raises(DataError) as raised:
        load_mnist(directory, download=False)
    assert str(directory / "t10k-labels-idx1-ubyte") in str(raised.value)
    assert "SHA-256" in str(raised.value)


def test_a_missing_idx_file_is_named_with_what_to_do(mnist_dir, tmp_path) -> None:
    directory = mnist_copy(mnist_dir, tmp_path / "data", {"t10k-images-idx3-ubyte": None})
    with pytest.raises(DataError) as raised:
        load_mnist(directory, download=False)
    assert "lacks t10k-images-idx3-ubyte" in str(raised.value)
    assert "--data-dir" in str(raised.value)


def test_damaged_mnist_through_the_cli_exits_1_naming_the_file(mnist_dir, labels_raw,
                                                               good_weights, tmp_path,
                                                               capsys) -> None:
    directory = mnist_copy(mnist_dir, tmp_path / "data",
                           {"t10k-labels-idx1-ubyte": _gz(labels_raw)[:300]})
    code = main(["evaluate", "lenet5", "--weights", str(good_weights), "--data-dir",
                 str(directory)])
    assert_user_error(code, capsys.readouterr().err,
                      str(directory / "t10k-labels-idx1-ubyte"), "truncated gzip stream")


# --------------------------------------------------------------------------------------------
# weight_file: only files inside the spec's directory, and only plain numeric arrays


SPEC = """\
[nodes.x]
op = "input"
shape = [3]

[nodes.fc]
op = "linear"
out_features = 2
weight_file = {name}
"""
WEIGHT_FILE_LINE = 8


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    """specs/ beside outside/, with symlinks and damaged arrays to point at."""
    outside = tmp_path / "outside"
    outside.mkdir()
    np.save(outside / "x.npy", np.ones((2, 3)))
    specs = tmp_path / "specs"
    (specs / "sub").mkdir(parents=True)
    np.save(specs / "good.npy", np.ones((2, 3)))
    np.save(specs / "sub" / "good.npy", np.ones((2, 3)))
    (specs / "escape.npy").symlink_to(outside / "x.npy")
    (specs / "escape_dir").symlink_to(outside)
    (specs / "inner_link.npy").symlink_to(specs / "good.npy")
    np.save(specs / "pickled.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    (specs / "truncated.npy").write_bytes((specs / "good.npy").read_bytes()[:100])
    (specs / "huge.npy").write_bytes(npy_bytes((10**12,)))
    (specs / "text.npy").write_text("1 2 3\n4 5 6\n")
    np.savez(specs / "archive.npz", weight=np.ones((2, 3)))
    np.save(specs / "strings.npy", np.array([["a"] * 3] * 2))
    np.save(specs / "complex.npy", np.ones((2, 3), dtype=complex))
    np.save(specs / "wrong_shape.npy", np.ones((3, 2)))
    np.save(specs / "nan.npy", np.full((2, 3), np.nan))
    return specs


def write_spec(spec_dir: Path, weight_file: str) -> Path:
    path = spec_dir / "net.toml"
    path.write_text(SPEC.format(name=json.dumps(weight_file)), encoding="utf-8")
    return path


@pytest.mark.parametrize("weight_file", ["good.npy", "sub/good.npy", "sub/../good.npy",
                                         "./good.npy", "inner_link.npy"])
def test_weight_files_inside_the_spec_directory_load(spec_dir: Path, weight_file: str) -> None:
    plan = compile_plan(load_spec(write_spec(spec_dir, weight_file)))
    assert np.array_equal(plan.nodes["fc"].fixed_weight, np.ones((2, 3)))


BAD_WEIGHT_FILES = [
    ("../outside/x.npy", "outside the spec's directory"),
    ("../../etc/x.npy", "outside the spec's directory"),
    ("/etc/passwd", "outside the spec's directory"),
    ("{outside}", "outside the spec's directory"),
    ("escape.npy", "outside the spec's directory"),
    ("escape_dir/x.npy", "outside the spec's directory"),
    ("sub/../../outside/x.npy", "outside the spec's directory"),
    ("missing.npy", "not found"),
    ("", "not a readable .npy array"),
    ("sub", "not a readable .npy array"),
    ("pickled.npy", "not a readable .npy array"),
    ("truncated.npy", "not a readable .npy array"),
    ("huge.npy", "not a readable .npy array"),
    ("text.npy", "is not a .npy file (no NumPy header)"),
    ("archive.npz", "is not a .npy file (no NumPy header)"),
    ("strings.npy", "must hold one numeric array"),
    ("complex.npy", "must hold one numeric array"),
    ("wrong_shape.npy", "has shape (3, 2), the weight needs (2, 3)"),
    ("nan.npy", "NaN or infinite"),
]


@pytest.mark.parametrize(("weight_file", "message"), BAD_WEIGHT_FILES)
def test_bad_weight_files_are_blamed_on_the_node_and_line(spec_dir: Path, weight_file: str,
                                                          message: str) -> None:
    weight_file = weight_file.format(outside=spec_dir.parent / "outside" / "x.npy")
    path = write_spec(spec_dir, weight_file)
    with pytest.raises(CompileError) as raised:
        compile_plan(load_spec(path))
    (diagnostic,) = raised.value.diagnostics
    assert (diagnostic.node, diagnostic.line) == ("fc", WEIGHT_FILE_LINE)
    assert diagnostic.file is not None
    assert message in diagnostic.message
    assert diagnostic.message.startswith("weight_file")


@pytest.mark.parametrize("weight_file", ["../outside/x.npy", "escape.npy", "pickled.npy"])
def test_bad_weight_files_through_the_cli(spec_dir: Path, weight_file: str, capsys) -> None:
    path = write_spec(spec_dir, weight_file)
    code = main(["compile", str(path)])
    assert_user_error(code, capsys.readouterr().err, f":{WEIGHT_FILE_LINE}: node 'fc' (linear)",
                      weight_file)


# --------------------------------------------------------------------------------------------
# Pictures for predict


PICTURES = {
    "missing.npy": (None, "no such file"),
    "pickled.npy": (lambda p: np.save(p, np.array([None]), allow_pickle=True),
                    "not a readable .npy array"),
    "huge.npy": (lambda p: p.write_bytes(npy_bytes((10**12,))), "not a readable .npy array"),
    "wrong_shape.npy": (lambda p: np.save(p, np.zeros((28, 27))), "expected a 28x28 image"),
    "empty_stack.npy": (lambda p: np.save(p, np.zeros((0, 28, 28))), "expected a 28x28 image"),
    "strings.npy": (lambda p: np.save(p, np.full((28, 28), "a")), "finite numbers"),
    "nan.npy": (lambda p: np.save(p, np.full((28, 28), np.nan)), "finite numbers"),
    "truncated.png": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(30)),
                      "not a readable image"),
    "text.png": (lambda p: p.write_text("not a picture"), "not a readable image"),
}


@pytest.mark.parametrize("name", sorted(PICTURES))
def test_bad_pictures_are_reported_naming_the_file(name: str, tmp_path: Path) -> None:
    if name.endswith(".png"):
        pytest.importorskip("PIL")
    make, message = PICTURES[name]
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(DataError) as raised:
        load_digit_images([path])
    assert str(path) in str(raised.value)
    assert message in str(raised.value)


def test_a_bad_picture_through_the_cli(good_weights: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "digit.npy"
    path.write_bytes(npy_bytes((10**12,)))
    code = main(["predict", "lenet5", "--weights", str(good_weights), str(path)])
    assert_user_error(code, capsys.readouterr().err, str(path))


# --------------------------------------------------------------------------------------------
# Command lines


CLI_ERRORS = [
    (["train", "lenet5", "--epochs", "-1"], "epochs"),
    (["train", "lenet5", "--epochs", "0"], "epochs"),
    (["train", "lenet5", "--batch-size", "0"], "batch_size"),
    (["train", "lenet5", "--lr", "-1"], "lr"),
    (["train", "lenet5", "--lr", "nan"], "lr"),
    (["train", "lenet5", "--momentum", "1.5"], "momentum"),
    (["train", "lenet5", "--weight-decay", "-1"], "weight_decay"),
    (["train", "lenet5", "--seed", "-1"], "seed"),
    (["train", "lenet5", "--limit", "-5"], "limit"),
    (["train", "lenet5", "--validation", "-3"], "validation"),
    (["train", "nosuch.toml"], "nosuch.toml: no such file"),
    (["train", "lenet"], "did you mean 'lenet5'"),
    (["train"], "give a spec to train, or --resume RUN_DIR"),
    (["train", "--resume", "{tmp}/nothing"], "is not a resumable run"),
    (["train", "lenet5", "--data-dir", "{tmp}/nowhere", "--out", "{tmp}/run"], "nowhere"),
    (["compile", "nosuch.toml"], "nosuch.toml: no such file"),
    (["compile", "{tmp}"], "a directory, not a spec file"),
    (["evaluate", "lenet5", "--weights", "{tmp}/none.npz"], "no such weights file"),
    (["predict", "lenet5", "--weights", "{tmp}/none.npz", "x.png"], "no such weights file"),
]


@pytest.mark.parametrize(("argv", "message"), CLI_ERRORS, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else None)
def test_bad_command_lines_are_one_message_and_exit_1(argv: list[str], message: str,
                                                     tmp_path: Path, capsys) -> None:
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    code = main(argv)
    assert_user_error(code, capsys.readouterr().err, message)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv", [
    ["train", "lenet5", "--epochs", "abc"],
    ["train", "lenet5", "--optimizer", "sdg"],
    ["compile", "lenet5", "--batch-size", "0"],
    ["compile", "lenet5", "--batch-size", "x"],
    ["evaluate", "lenet5"],
    ["gradcheck", "mlp", "--batch", "0"],
    ["gradcheck", "mlp", "--samples", "0"],
    ["gradcheck", "mlp", "--seed", "-1"],
    ["train", "lenet5", "--threads", "0"],
    ["bench", "lenet5", "--threads", "two"],
    ["evaluate", "lenet5", "--weights", "w.npz", "--threads", "100000"],
    ["frobnicate"],
])
def test_malformed_command_lines_get_usage_and_exit_2(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as raised:
        main(argv)
    err = capsys.readouterr().err
    assert raised.value.code == 2
    assert "usage: netspec" in err and "error:" in err and "Traceback" not in err


def test_an_unwritable_run_directory_is_a_message(mnist_dir, tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main(["train", "lenet5", "--data-dir", str(mnist_dir), "--limit", "300",
                 "--validation", "100", "--out", str(blocker / "run")])
    assert_user_error(code, capsys.readouterr().err, str(blocker / "run"))


@pytest.mark.parametrize("argv", [
    ["train", "lenet5", "--epochs", "-1"],
    ["evaluate", "lenet5", "--weights", "{damaged}"],
    ["compile", "{spec}"],
])
def test_bad_inputs_in_a_real_process_exit_1_without_a_traceback(argv, good_weights, spec_dir,
                                                                 tmp_path) -> None:
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(good_weights.read_bytes()[:300])
    spec = write_spec(spec_dir, "escape.npy")
    argv = [arg.format(damaged=damaged, spec=spec) for arg in argv]
    done = subprocess.run([sys.executable, "-m", "netspec", *argv], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"netspec {argv[0]}")


# --------------------------------------------------------------------------------------------
# Absurd sizes and values: refused by validation, or by the memory guard before allocating


ABSURD_SPECS = [
    # (node lines after an input of shape [1, 8, 8], the input's shape, what the error says)
    ('op = "conv2d"\nout_channels = 1000000000\nkernel_size = 1', [1, 8, 8],
     "out_channels must be less than or equal to 65536"),
    ('op = "linear"\nout_features = 10000000', [4], "out_features"),
    ('op = "relu"', [0, 28, 28], "shape[0]"),
    ('op = "relu"', [1, 100000], "shape[1]"),
    ('op = "relu"', [1, 65536, 65536], "more than the 16,777,216 netspec accepts"),
    ('op = "relu"', [16, 4096, 4096], "more than the 16,777,216 netspec accepts"),
    ('op = "conv2d"\nout_channels = 2\nkernel_size = 1\nstride = 1000000000', [1, 8, 8],
     "stride"),
    ('op = "linear"\nout_features = 2\nbias_init = nan', [4], "bias_init"),
    ('op = "linear"\nout_features = 2\nbias_init = inf', [4], "bias_init"),
    ('op = "linear"\nout_features = 2\ninit = "normal"\ninit_scale = inf', [4], "init_scale"),
    ('op = "conv2d"\nout_channels = 2\nkernel_size = 9', [1, 8, 8], "larger than the padded"),
    ('op = "maxpool2d"\nkernel_size = 2\npadding = 2', [1, 8, 8], "padding"),
]


@pytest.mark.parametrize(("node", "shape", "message"), ABSURD_SPECS)
def test_absurd_values_are_refused_at_the_node(node: str, shape: list[int], message: str,
                                               tmp_path: Path) -> None:
    path = tmp_path / "absurd.toml"
    path.write_text(f'[nodes.x]\nop = "input"\nshape = {shape}\n\n[nodes.y]\n{node}\n')
    with pytest.raises(SpecError) as raised:
        compile_plan(load_spec(path))
    assert message in str(raised.value)
    assert all(d.line is not None and d.node in ("x", "y") for d in raised.value.diagnostics)


LARGE = """\
[nodes.x]
op = "input"
shape = [1, 4096, 4096]

[nodes.conv]
op = "conv2d"
out_channels = 65536
kernel_size = 3
padding = 1
"""


def test_a_network_too_large_for_the_machine_is_refused_before_allocating() -> None:
    plan = compile_plan(parse_spec(LARGE, file="large.toml"))
    with pytest.raises(NetspecError) as raised:
        check_memory(plan, 64, training=True, available=32 * 2**30)
    message = str(raised.value)
    assert "needs about" in message and "at batch 64" in message
    assert "this machine has 32.0 GiB available" in message
    assert "not even one sample fits" in message


@pytest.fixture(scope="module")
def resnet() -> Plan:
    return compile_plan("resnet_mini")


# inference runs a large batch in chunks of about 12 MiB: beyond that only inputs and outputs
# grow, so less memory is needed to refuse a batch of 4096
@pytest.mark.parametrize("training,available", [(True, 50 * 2**20), (False, 20 * 2**20)])
def test_the_guard_names_the_largest_batch_that_fits(resnet: Plan, training: bool,
                                                     available: int) -> None:
    with pytest.raises(NetspecError) as raised:
        check_memory(resnet, 4096, training=training, available=available)
    fits = estimate_memory(resnet, 1, training=training, available=available).max_batch_size
    assert f"use a batch size of at most {fits}" in str(raised.value)
    assert check_memory(resnet, fits, training=training, available=available).fits
    with pytest.raises(NetspecError):
        check_memory(resnet, fits + 1, training=training, available=available)


def test_parameters_that_alone_do_not_fit_are_named_as_such() -> None:
    plan = compile_plan("mlp")
    with pytest.raises(NetspecError, match="for the parameters alone"):
        check_memory(plan, 1, training=True, available=100_000)


def test_unknown_memory_never_refuses(resnet: Plan, monkeypatch) -> None:
    monkeypatch.setattr(budget, "available_memory", lambda: None)
    estimate = check_memory(resnet, 10**6, training=True)
    assert estimate.fits and estimate.available_bytes is None and estimate.max_batch_size is None


@pytest.mark.parametrize("batch_size", [0, -1])
def test_a_batch_size_below_one_is_refused(resnet: Plan, batch_size: int) -> None:
    with pytest.raises(NetspecError, match="batch size must be a positive integer"):
        check_memory(resnet, batch_size, training=True)


@pytest.mark.parametrize("name", ["lenet5", "resnet_mini", "mlp", "convnet_bn", "lenet_caffe"])
@pytest.mark.parametrize("training", [True, False])
def test_the_estimate_is_within_a_small_factor_of_what_numpy_allocates(name: str,
                                                                     training: bool) -> None:
    plan = compile_plan(name)
    batch = 16
    x = np.random.default_rng(0).normal(size=(batch, *plan.nodes[plan.inputs[0]].shape))
    net = compile(plan)
    x = x.astype(net.dtype)
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        y = net.forward(x, train=training)
        if training:
            net.backward(np.ones_like(y))
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    estimate = estimate_memory(plan, batch, training=training, available=2**40)
    # the executor's parameters exist already; gradients and activations are what it allocates
    allocated = peak + (estimate.parameter_bytes if not training else 0)
    assert 0.5 * allocated <= estimate.total_bytes <= 3 * allocated + 2**20, (
        estimate.describe(), allocated)


def test_available_memory_reads_meminfo_and_the_cgroup_limit(tmp_path: Path,
                                                             monkeypatch) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       8000 kB\nMemAvailable:    4000 kB\n")
    monkeypatch.setattr(budget, "MEMINFO", meminfo)
    monkeypatch.setattr(budget, "CGROUP_MAX", tmp_path / "memory.max")
    monkeypatch.setattr(budget, "CGROUP_CURRENT", tmp_path / "memory.current")
    assert budget.available_memory() == 4000 * 1024
    assert budget.total_memory() == 8000 * 1024
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory.current").write_text("100\n")
    assert budget.available_memory() == 4000 * 1024
    (tmp_path / "memory.max").write_text("1100\n")
    assert budget.available_memory() == 1000


def test_unreadable_meminfo_falls_back_to_sysconf(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(budget, "MEMINFO", tmp_path / "absent")
    monkeypatch.setattr(budget, "CGROUP_MAX", tmp_path / "absent")
    monkeypatch.setattr(budget.os, "sysconf", lambda name: {"SC_AVPHYS_PAGES": 10,
                                                            "SC_PHYS_PAGES": 20,
                                                            "SC_PAGE_SIZE": 4096}[name])
    assert budget.available_memory() == 10 * 4096
    assert budget.total_memory() == 20 * 4096


# --------------------------------------------------------------------------------------------
# Fields of the convolutional-network ops (issue 24): each bad value with the exact message
# `netspec compile` prints, as docs/bad_inputs.md lists it


CONV_OP_FIELDS = [
    # (input shape, the node's lines, what `netspec compile net.toml` prints on stderr)
    ([4, 8, 8], 'op = "conv2d"\nout_channels = 4\nkernel_size = 3\ngroups = 3',
     "net.toml:5: node 'y' (conv2d): input shape (4, 8, 8): groups=3 does not divide the "
     "input's 4 channels; in_channels must be a multiple of groups"),
    ([4, 8, 8], 'op = "conv2d"\nout_channels = 6\nkernel_size = 3\ngroups = 4',
     "net.toml:5: node 'y' (conv2d): input shape (4, 8, 8): groups=4 does not divide "
     "out_channels=6; out_channels must be a multiple of groups"),
    ([4, 8, 8], 'op = "conv2d"\nout_channels = 4\nkernel_size = 3\ngroups = 0',
     "net.toml:9: node 'y' (conv2d): groups must be greater than 0, got 0"),
    ([4, 8, 8], 'op = "conv2d"\nout_channels = 4\nkernel_size = 3\ndilation = 4',
     "net.toml:5: node 'y' (conv2d): input shape (4, 8, 8): kernel 3x3 with dilation 4x4 "
     "spans 9x9, larger than the padded input 8x8 (8x8 with padding 0x0); use a smaller "
     "dilation or more padding"),
    ([4, 8, 8], 'op = "conv2d"\nout_channels = 4\nkernel_size = 3\ndilation = [1, 0]',
     "net.toml:9: node 'y' (conv2d): dilation[1] must be greater than 0, got 0"),
    ([4, 8, 8], 'op = "mul"\ninputs = ["x", "g"]\n\n[nodes.g]\nop = "adaptive_avgpool2d"\n'
     'inputs = "x"\noutput_size = 2',
     "net.toml:5: node 'y' (mul): inputs of shapes (4, 8, 8) and (4, 2, 2) do not broadcast: "
     "axis 1 has 8 and 2; each axis must match or be 1 in one of them"),
    ([4, 8, 8], 'op = "mul"\ninputs = ["x", "g"]\n\n[nodes.g]\nop = "flatten"\ninputs = "x"',
     "net.toml:5: node 'y' (mul): inputs have shapes (4, 8, 8) and (256,) of different ranks; "
     "mul broadcasts axes of size 1 between inputs of one rank"),
    ([4, 8, 8], 'op = "mul"\ninputs = "x"',
     "net.toml:7: node 'y' (mul): takes at least 2 inputs, got 1; list them, e.g. inputs = "
     '["a", "b"]'),
    ([4, 8, 8], 'op = "adaptive_avgpool2d"\noutput_size = 0',
     "net.toml:7: node 'y' (adaptive_avgpool2d): output_size must be greater than 0, got 0"),
    ([64], 'op = "adaptive_avgpool2d"\noutput_size = 1',
     "net.toml:5: node 'y' (adaptive_avgpool2d): adaptive_avgpool2d input must be 3-D per "
     "sample, got shape (64,); it takes an image (C, H, W): reshape, flatten or permute the "
     "value first"),
    ([4, 8, 8], 'op = "hardtanh"\nmin_val = 1.0\nmax_val = -1.0',
     "net.toml:5: node 'y' (hardtanh): max_val -1 must be greater than min_val 1"),
    ([4, 8, 8], 'op = "gelu"\napproximate = "erf"',
     "net.toml:7: node 'y' (gelu): approximate must be 'none' or 'tanh', got \"erf\""),
    ([10], 'op = "log_softmax"\ndim = 2',
     "net.toml:5: node 'y' (log_softmax): input shape (10,): dim 2 is out of range for the "
     "input (N, 10); use a dim from 1 to 1 (or -1 to -1)"),
    ([10], 'op = "log_softmax"\ndim = 0',
     "net.toml:5: node 'y' (log_softmax): input shape (10,): dim 0 is the batch axis of the "
     "input (N, 10); use a dim from 1 to 1 (or -1 to -1)"),
    ([4, 8, 8], 'op = "stochastic_depth"\np = 1.0',
     "net.toml:7: node 'y' (stochastic_depth): p must be less than 1, got 1.0"),
    ([4, 8, 8], 'op = "stochastic_depth"\np = 0.2\nmode = "batch"',
     "net.toml:8: node 'y' (stochastic_depth): mode must be 'row', got \"batch\""),
    ([4, 8, 8], 'op = "maxpool2d"\nkernel_size = 2\nceil_mode = 1',
     "net.toml:8: node 'y' (maxpool2d): ceil_mode must be a valid boolean, got 1"),
    ([4, 2, 2], 'op = "maxpool2d"\nkernel_size = 3\nceil_mode = true',
     "net.toml:5: node 'y' (maxpool2d): input shape (4, 2, 2): kernel 3x3 is larger than the "
     "padded input 2x2 (2x2 with padding 0x0); use a smaller kernel, more padding, or remove "
     "a pooling step"),
    ([4, 8, 8], 'op = "maxpool2d"\nkernel_size = 2\ncount_include_pad = false',
     "net.toml:8: node 'y' (maxpool2d): unknown field 'count_include_pad' (valid fields: "
     "inputs, kernel_size, stride, padding, ceil_mode)"),
    ([4, 8, 8], 'op = "avgpool2d"\nkernel_size = 2\ncount_include_pad = "no"',
     "net.toml:8: node 'y' (avgpool2d): count_include_pad must be a valid boolean, got \"no\""),
    ([4, 8, 8], 'op = "conv_transpose2d"\nout_channels = 4\nkernel_size = 2\nstride = 2\n'
     'output_padding = 2',
     "net.toml:5: node 'y' (conv_transpose2d): output_padding [2, 2] must be smaller than the "
     "stride [2, 2] or the dilation [1, 1]"),
    ([4, 8, 8], 'op = "conv_transpose2d"\nout_channels = 4\nkernel_size = 2\ngroups = 3',
     "net.toml:5: node 'y' (conv_transpose2d): input shape (4, 8, 8): groups=3 does not divide "
     "the input's 4 channels; in_channels must be a multiple of groups"),
    ([4, 1, 1], 'op = "conv_transpose2d"\nout_channels = 4\nkernel_size = 1\npadding = 1',
     "net.toml:5: node 'y' (conv_transpose2d): input shape (4, 1, 1): padding 1x1 cuts the "
     "whole output away (-1x-1 left of the input 1x1); use less padding"),
    ([4, 8, 8], 'op = "upsample"\nscale_factor = 0',
     "net.toml:7: node 'y' (upsample): scale_factor must be greater than or equal to 1, got 0"),
    ([4, 8, 8], 'op = "upsample"\nscale_factor = 1.5',
     "net.toml:7: node 'y' (upsample): scale_factor must be a valid integer or a valid list, "
     "got 1.5"),
    ([4, 8, 8], 'op = "upsample"\nscale_factor = 2\nmode = "bicubic"',
     "net.toml:8: node 'y' (upsample): mode must be 'nearest' or 'bilinear', got \"bicubic\""),
    ([8], 'op = "upsample"\nscale_factor = 2',
     "net.toml:5: node 'y' (upsample): upsample input must be 3-D per sample, got shape (8,); "
     "it takes an image (C, H, W): reshape, flatten or permute the value first"),
]


@pytest.mark.parametrize(("shape", "node", "message"), CONV_OP_FIELDS,
                         ids=[case[2].split(": ", 2)[-1][:60] for case in CONV_OP_FIELDS])
def test_bad_fields_of_the_conv_ops_get_their_message(shape: list[int], node: str,
                                                      message: str, tmp_path: Path,
                                                      monkeypatch, capsys) -> None:
    (tmp_path / "net.toml").write_text(f'[nodes.x]\nop = "input"\nshape = {shape}\n\n'
                                       f'[nodes.y]\n{node}\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code = main(["compile", "net.toml"])
    err = capsys.readouterr().err
    assert_user_error(code, err)
    assert err.strip() == f"netspec compile: error: {message}"


def test_the_conv_op_field_cases_are_in_the_docs() -> None:
    docs = (REPO / "docs" / "bad_inputs.md").read_text(encoding="utf-8")
    for _, _, message in CONV_OP_FIELDS:
        assert f"netspec compile: error: {message}" in docs, message
