"""Weights files: round trips, the spec fingerprint, and damaged or foreign files reported as
WeightsError naming the file (never a NumPy or zipfile traceback)."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from netspec.common.errors import WeightsError
from netspec.lang.spec import parse_spec
from netspec.plan.compiler import compile_plan
from netspec.runtime.executor import Network
from netspec.weights.checkpoint import (
    FORMAT_VERSION,
    load_weights,
    read_checkpoint,
    save_checkpoint,
    spec_hash,
)

SMALL = """\
[network]
name = "small"

[nodes.image]
op = "input"
shape = [1, 8, 8]

[nodes.conv]
op = "conv2d"
out_channels = 3
kernel_size = 3

[nodes.bn]
op = "batchnorm"

[nodes.relu]
op = "relu"

[nodes.drop]
op = "dropout"
p = 0.5

[nodes.flatten]
op = "flatten"

[nodes.fc]
op = "linear"
out_features = 4
"""


def network(text: str = SMALL, seed: int = 0, dtype: str = "float32") -> Network:
    return Network(compile_plan(parse_spec(text, file="small.toml")), seed=seed, dtype=dtype)


@pytest.fixture
def trained(tmp_path) -> tuple[Network, Path]:
    """A network whose buffers are not at their initial values, saved to ``w.npz``."""
    net = network(seed=1)
    rng = np.random.default_rng(5)
    for array in net.buffers.values():
        array[...] = rng.uniform(0.5, 2.0, array.shape)
    path = tmp_path / "w.npz"
    save_checkpoint(path, net, optimizer={"momentum_buffer:fc.weight": np.ones((4, 108))},
                    meta={"mean": 0.13, "std": 0.31, "state": {"epoch": 2}})
    return net, path


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip(tmp_path, dtype):
    net = network(seed=1, dtype=dtype)
    net.buffers["bn.running_mean"][...] = [0.5, -1.0, 2.0]
    path = tmp_path / "w.npz"
    save_checkpoint(path, net, optimizer={"momentum_buffer:fc.weight": np.full((4, 108), 0.5)},
                    meta={"mean": 0.13, "state": {"epoch": 2, "history": [{"lr": 0.1}]}})

    checkpoint = read_checkpoint(path)
    assert checkpoint.params.keys() == net.params.keys()
    assert checkpoint.buffers.keys() == {"bn.running_mean", "bn.running_var"}
    np.testing.assert_array_equal(checkpoint.optimizer["momentum_buffer:fc.weight"], 0.5)
    assert re.fullmatch(r"[0-9a-f]{16}", checkpoint.meta["spec_hash"])
    assert checkpoint.meta == {"format": FORMAT_VERSION, "spec": "small",
                               "spec_hash": spec_hash(net.plan), "mean": 0.13,
                               "state": {"epoch": 2, "history": [{"lr": 0.1}]}}

    fresh = network(seed=2, dtype=dtype)
    assert not np.array_equal(fresh.params["conv.weight"], net.params["conv.weight"])
    load_weights(path, fresh)
    for key, array in net.state().items():
        np.testing.assert_array_equal(fresh.state()[key], array, err_msg=key)
        assert fresh.state()[key].dtype == np.dtype(dtype)
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8))
    np.testing.assert_array_equal(fresh.forward(x), net.forward(x))


def test_weights_load_across_dtypes(trained):
    net, path = trained
    wide = network(dtype="float64")
    load_weights(path, wide)
    assert wide.params["fc.weight"].dtype == np.float64
    np.testing.assert_array_equal(wide.params["fc.weight"], net.params["fc.weight"])


@pytest.mark.parametrize(("change", "same"), [
    (("", ""), True),
    (("p = 0.5", "p = 0.1"), True),               # no parameter depends on it
    (("out_features = 4", "out_features = 5"), False),
    (("kernel_size = 3", "kernel_size = 2"), False),
    (("[nodes.fc]", "[nodes.head]"), False),     # keys in the file are node ids
    (('op = "relu"', 'op = "tanh"'), False),
])
def test_spec_hash_follows_the_weight_layout(change, same):
    reference = spec_hash(network().plan)
    assert spec_hash(network(seed=7, dtype="float64").plan) == reference
    assert (spec_hash(network(SMALL.replace(*change)).plan) == reference) is same


def test_weights_of_another_spec_are_refused_naming_both(trained, tmp_path):
    _, path = trained
    other = network(SMALL.replace('name = "small"', 'name = "other"')
                    .replace("out_features = 4", "out_features = 10"))
    before = {k: v.copy() for k, v in other.state().items()}
    with pytest.raises(WeightsError) as caught:
        load_weights(path, other)
    message = str(caught.value)
    assert message.startswith(f"{path}: these weights belong to spec 'small' (layout ")
    assert "not to 'other' (layout " in message
    assert message.endswith("pass the spec the weights were trained with")
    for key, array in other.state().items():
        np.testing.assert_array_equal(array, before[key])


def rewrite(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


def edit(path: Path, change) -> None:
    """Rewrite the archive at ``path`` with ``change`` applied to its arrays."""
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    change(arrays)
    rewrite(path, arrays)


def set_meta(path: Path, meta_bytes: bytes) -> None:
    edit(path, lambda a: a.__setitem__("meta", np.frombuffer(meta_bytes, dtype=np.uint8)))


def flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    path.write_bytes(bytes(data))


def bare_npy(path: Path) -> None:
    with path.open("wb") as handle:
        np.save(handle, np.zeros(3))


def zip_of_text(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("meta.npy", "hello")


NOT_NPZ = r"not a netspec weights file \(not an \.npz archive: truncated, or another format\)"
UNREADABLE = r"not a readable netspec weights file \(truncated or corrupt \.npz"
CORRUPTIONS = {
    "missing": (lambda p: p.unlink(), r"no such weights file"),
    "empty": (lambda p: p.write_bytes(b""), NOT_NPZ),
    "truncated to half": (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
                          NOT_NPZ),
    "last bytes cut": (lambda p: p.write_bytes(p.read_bytes()[:-10]), NOT_NPZ),
    "random bytes": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000)), NOT_NPZ),
    "a pickle": (lambda p: p.write_bytes(b"\x80\x04\x95" + bytes(200)), NOT_NPZ),
    "a bare .npy": (bare_npy, NOT_NPZ),
    "bytes flipped inside": (flip_middle, UNREADABLE),
    "a zip of text": (zip_of_text, r"not a netspec weights file \('meta' is not an array\)"),
    "no meta": (lambda p: edit(p, lambda a: a.pop("meta")), r"not a netspec weights file "
                                                            r"\(no metadata\)"),
    "meta not bytes": (lambda p: edit(p, lambda a: a.__setitem__("meta", np.zeros(3))),
                       r"\(no metadata\)"),
    "an object array": (lambda p: edit(p, lambda a: a.__setitem__(
        "param/fc.weight", np.array([{"x": 1}, None], dtype=object))), UNREADABLE +
        r".*allow_pickle=False"),
    "meta not JSON": (lambda p: set_meta(p, b"{oops"), r"its metadata is corrupt"),
    "meta not UTF-8": (lambda p: set_meta(p, b"\xff\xfe"), r"its metadata is corrupt"),
    "meta a list": (lambda p: set_meta(p, b"[1, 2]"), r"its metadata is corrupt \(not a JSON "
                                                     r"object\)"),
    "future format": (lambda p: set_meta(p, json.dumps({"format": 99}).encode()),
                      r"unsupported weights format 99"),
    "no format": (lambda p: set_meta(p, b"{}"), r"unsupported weights format None"),
    "stray entry": (lambda p: edit(p, lambda a: a.__setitem__("extra", np.zeros(1))),
                    r"unexpected entry 'extra'"),
    "unknown role": (lambda p: edit(p, lambda a: a.__setitem__("grad/fc.weight", np.zeros(1))),
                     r"unexpected entry 'grad/fc.weight'"),
}


@pytest.mark.parametrize("damage", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_damaged_files_are_reported_naming_the_file(trained, damage):
    _, path = trained
    change, message = damage
    change(path)
    for read in (read_checkpoint, lambda p: load_weights(p, network())):
        with pytest.raises(WeightsError, match=message) as caught:
            read(path)
        assert str(caught.value).startswith(f"{path}: ")


TAMPERED = {
    "a NaN weight": (lambda a: a["param/fc.weight"].__setitem__((0, 0), np.nan),
                     r"'fc.weight' holds NaN or infinite values"),
    "an infinite buffer": (lambda a: a["buffer/bn.running_var"].__setitem__(0, np.inf),
                           r"'bn.running_var' holds NaN or infinite values"),
    "a missing weight": (lambda a: a.pop("param/fc.bias"),
                         r"weights do not fit this network: missing \['fc.bias'\]"),
    "a stray weight": (lambda a: a.__setitem__("param/fc.gain", np.ones(4)),
                       r"unexpected \['fc.gain'\]"),
    "a reshaped weight": (lambda a: a.__setitem__("param/fc.weight", np.ones((4, 100))),
                          r"'fc.weight' has shape \(4, 100\), the network needs \(4, 108\)"),
}


@pytest.mark.parametrize("change", TAMPERED.values(), ids=TAMPERED.keys())
def test_tampered_weights_are_refused_and_the_network_is_untouched(trained, change):
    # the layout fingerprint in the metadata still matches: the arrays themselves are wrong
    _, path = trained

    def tamper(arrays: dict[str, np.ndarray]) -> None:
        for key in list(arrays):
            arrays[key] = arrays[key].copy()
        change[0](arrays)

    edit(path, tamper)
    fresh = network(seed=3)
    before = {k: v.copy() for k, v in fresh.state().items()}
    with pytest.raises(WeightsError, match=change[1]) as caught:
        load_weights(path, fresh)
    assert str(caught.value).startswith(f"{path}: ")
    for key, array in fresh.state().items():
        np.testing.assert_array_equal(array, before[key])


def test_a_failed_save_leaves_the_previous_file(trained, monkeypatch):
    net, path = trained
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, network(seed=9))
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["w.npz"]
