"""netspec.runtime.gradcheck and the ``netspec gradcheck`` command: every shipped architecture
passes, a sabotaged backward fails, and the check leaves the network as it found it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from layer_harness import TWO_INPUTS, affordable_architectures, build_network

import netspec
from netspec.cli import main
from netspec.ops import REGISTRY
from netspec.runtime.gradcheck import TOLERANCE, check_network

ARCHITECTURES = affordable_architectures()
Linear, Relu = REGISTRY["linear"], REGISTRY["relu"]
GENUINE_LINEAR_BACKWARD = Linear.backward


def _check(net: netspec.Network, samples: int = 2, seed: int = 0):
    x = np.random.default_rng(seed).normal(size=(2, *net.shapes[net.plan.inputs[0]]))
    return check_network(net, x, samples=samples, seed=seed)


def test_architectures_are_found() -> None:
    assert {path.stem for path in ARCHITECTURES} >= {"lenet5", "mlp", "resnet_mini"}


@pytest.mark.parametrize("path", ARCHITECTURES, ids=lambda path: path.stem)
def test_every_shipped_architecture_passes(path: Path) -> None:
    net = netspec.compile(path, seed=0, dtype="float64")
    results = _check(net)
    assert [r.name for r in results] == [*net.trainable, f"input:{net.plan.inputs[0]}"]
    for result in results:
        assert result.checked > 0, result
        assert result.worst_relative_error < TOLERANCE, result
        assert result.passed


def _scaled_weight_grad(self, cache, dy):
    dxs, grads = GENUINE_LINEAR_BACKWARD(self, cache, dy)
    return dxs, {**grads, "weight": grads["weight"] * 1.001}


def _maskless_relu(self, cache, dy):
    return [dy], {}


SMALL = """
[nodes.x]
op = "input"
shape = [2, 5, 5]

[nodes.conv]
op = "conv2d"
out_channels = 3
kernel_size = 3

[nodes.relu]
op = "relu"

[nodes.flat]
op = "flatten"

[nodes.fc]
op = "linear"
out_features = 4
"""


# batchnorm statistics and a dropout generator: the state a training-mode check moves
STATEFUL = SMALL + """
[nodes.bn]
op = "batchnorm"

[nodes.drop]
op = "dropout"

[nodes.head]
op = "linear"
out_features = 2
"""


@pytest.mark.parametrize(("op_class", "sabotage", "blamed"), [
    (Linear, _scaled_weight_grad, {"fc.weight"}),
    (Relu, _maskless_relu, {"conv.weight", "conv.bias", "input:x"}),
])
def test_a_sabotaged_backward_fails(monkeypatch: pytest.MonkeyPatch, op_class, sabotage,
                                    blamed: set[str]) -> None:
    net = build_network(SMALL)
    assert all(r.passed for r in _check(net, samples=6))
    monkeypatch.setattr(op_class, "backward", sabotage)
    results = _check(net, samples=6)
    assert {r.name for r in results if not r.passed} == blamed
    assert max(r.worst_relative_error for r in results) > 1e-4


def test_float32_networks_are_refused() -> None:
    with pytest.raises(ValueError, match="float64"):
        _check(build_network(SMALL, dtype="float32"))


def test_check_leaves_parameters_buffers_and_generator_untouched() -> None:
    net = build_network(STATEFUL)
    before = {key: value.copy() for key, value in net.state().items()}
    generator = net.rng.bit_generator.state
    _check(net, samples=1)
    for key, value in net.state().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    assert net.rng.bit_generator.state == generator


def test_cli_prints_a_row_per_tensor_and_exits_0(capsys: pytest.CaptureFixture) -> None:
    assert main(["gradcheck", "lenet5", "--samples", "2", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    net = netspec.compile("lenet5")
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for key in [*net.trainable, "input:image"]:
        assert rows[key].endswith("ok"), rows[key]
    assert "passed" in out


def test_cli_exits_1_on_sabotage(monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(Linear, "backward", _scaled_weight_grad)
    assert main(["gradcheck", "mlp", "--samples", "2", "--batch", "2"]) == 1
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert all(rows[f"{layer}.weight"].endswith("FAIL") for layer in ("fc1", "fc2", "fc3"))
    assert rows["fc1.bias"].endswith("ok")
    assert "FAILED for fc1.weight, fc2.weight, fc3.weight" in out


def test_every_input_of_a_multi_input_network_is_checked(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    net = build_network(TWO_INPUTS)
    rng = np.random.default_rng(0)
    x = {key: rng.normal(size=(2, *net.shapes[key])) for key in net.plan.inputs}
    results = {r.name: r for r in check_network(net, x, samples=4)}
    assert {"input:a", "input:b"} <= results.keys()
    assert all(r.passed and r.checked > 0 for r in results.values())
    spec = tmp_path / "two.toml"
    spec.write_text(TWO_INPUTS)
    assert main(["gradcheck", str(spec), "--samples", "2", "--batch", "2"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert rows["input:a"].endswith("ok") and rows["input:b"].endswith("ok")
    # and a wrong input gradient is caught on the input it belongs to
    first_layer = net.plan.nodes["fa"].op

    def scaled_input_grad(cache, dy):
        dxs, grads = GENUINE_LINEAR_BACKWARD(first_layer, cache, dy)
        return [dxs[0] * 1.001], grads

    monkeypatch.setattr(first_layer, "backward", scaled_input_grad)
    failed = {r.name for r in check_network(net, x, samples=4) if not r.passed}
    assert failed == {"input:a"}
