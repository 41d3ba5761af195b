"""The convolutional-network ops (issue 24) beyond the shared table of tests/test_ops.py:
the piecewise activations over their whole range and at their corners (PyTorch's choice of
gradient there), stochastic depth's draws, the error function behind the exact GELU, the
adaptive pool's windows against PyTorch's for any sizes, and the negative controls."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from layer_harness import (
    GRAD_TOLERANCE,
    ForwardMismatch,
    GradientMismatch,
    OpCase,
    build_op,
    check_gradients,
    distinct_values,
    run_layer_test,
    run_op,
)

from netspec.ops import REGISTRY
from netspec.ops.adaptive_pool import adaptive_windows
from netspec.ops.modern_activations import erf

torch = pytest.importorskip("torch")
F = torch.nn.functional

WIDE = {"hardswish": 2.5, "hardsigmoid": 2.5, "relu6": 4.0, "hardtanh": 1.0, "silu": 5.0,
        "gelu": 3.0}


@pytest.mark.parametrize("op_name", list(WIDE))
def test_activations_over_their_whole_range_match_finite_differences(op_name: str) -> None:
    # the table's inputs lie in (-2, 2): here they reach past every corner (+-3, 6)
    op = build_op(op_name)
    x = distinct_values((3, 40), np.random.default_rng(0)) * WIDE[op_name]
    report = check_gradients(op, [x], {}, {}, False, 0)
    assert report.worst < GRAD_TOLERANCE, report.errors


CORNERS = np.array([[-6.0, -3.0, -1.0, 0.0, 1.0, 3.0, 6.0, 7.0]])
TORCH_OF = {"hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid, "relu6": F.relu6,
            "hardtanh": F.hardtanh, "silu": F.silu, "gelu": F.gelu,
            "log_softmax": lambda x: F.log_softmax(x, dim=1)}


@pytest.mark.parametrize("op_name", list(TORCH_OF))
def test_values_and_gradients_at_the_corners_are_pytorchs(op_name: str) -> None:
    op = build_op(op_name)
    y, cache, _ = run_op(op, [CORNERS], {}, {}, False, 0)
    (dx,), _ = op.backward(cache, np.ones_like(CORNERS))
    tx = torch.tensor(CORNERS, requires_grad=True)
    ty = TORCH_OF[op_name](tx)
    ty.backward(torch.ones_like(ty))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-14, atol=1e-15)
    # PyTorch's hardsigmoid gradient is 1/6 rounded to float32 even in float64; netspec's is
    # 1/6 in the array's precision
    rtol = 3e-8 if op_name == "hardsigmoid" else 1e-14
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=rtol, atol=1e-15)


@pytest.mark.parametrize("op_name", ["silu", "gelu", "log_softmax", "hardswish"])
def test_extreme_inputs_stay_finite(op_name: str) -> None:
    x = np.array([[-1000.0, 0.0, 1000.0], [800.0, 800.0, -800.0]])
    op = build_op(op_name)
    y, cache, _ = run_op(op, [x], {}, {}, False, 0)
    (dx,), _ = op.backward(cache, np.ones_like(x))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))


def test_erf_is_accurate_to_double_precision_everywhere() -> None:
    z = np.concatenate([np.linspace(-9, 9, 200_001), [0.0, -0.0, 1e-300, 5.9999, 6.0001]])
    theirs = torch.special.erf(torch.from_numpy(z)).numpy()
    assert np.abs(erf(z) - theirs).max() < 5e-15
    assert erf(np.float32([0.5])).dtype == np.float32


def test_stochastic_depth_drops_whole_samples_at_rate_p_and_is_seeded() -> None:
    op = build_op("stochastic_depth", {"p": 0.3})
    x = np.ones((4000, 2, 3, 3))
    y = run_op(op, [x], {}, {}, True, 5)[0]
    per_sample = y.reshape(4000, -1)
    dropped = np.all(per_sample == 0, axis=1)
    assert np.all(dropped | np.all(per_sample == 1 / 0.7, axis=1))
    # 4000 draws: the dropped fraction is within ~5 standard deviations of p
    assert abs(dropped.mean() - 0.3) < 5 * np.sqrt(0.3 * 0.7 / 4000)
    np.testing.assert_array_equal(run_op(op, [x], {}, {}, True, 5)[0], y)
    assert not np.array_equal(run_op(op, [x], {}, {}, True, 6)[0], y)
    assert run_op(op, [x], {}, {}, False, 5)[0] is x


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 40), out=st.integers(1, 40))
def test_adaptive_windows_are_pytorchs(size: int, out: int) -> None:
    x = torch.arange(size, dtype=torch.float64).reshape(1, 1, 1, size)
    starts = F.adaptive_max_pool1d(x[0], out, return_indices=True)[1].reshape(-1)
    ends = F.adaptive_max_pool1d(-x[0], out, return_indices=True)[1].reshape(-1)
    windows = adaptive_windows(size, out)
    # the maximum of an increasing row sits at a window's last cell, the minimum at its first
    assert [(start, end - 1) for start, end in windows] == \
        list(zip(ends.tolist(), starts.tolist()))
    pooled = F.adaptive_avg_pool2d(torch.rand(1, 2, size, 3, dtype=torch.float64), (out, 1))
    op = build_op("adaptive_avgpool2d", {"output_size": [out, 1]})
    assert op.output_shape([(2, size, 3)]) == tuple(pooled.shape[1:])


# ---- negative controls: the shared harness rejects broken versions of these ops

Mul, Hardswish, AdaptivePool, Depth, Add = (REGISTRY[n] for n in (
    "mul", "hardswish", "adaptive_avgpool2d", "stochastic_depth", "add"))


class UnreducedMul(Mul):
    """Hands back the broadcast gradient without summing it over the broadcast axes."""

    def backward(self, cache, dy):
        a, b = cache
        return [np.broadcast_to(dy * b, dy.shape)[..., :a.shape[2], :a.shape[3]].copy(),
                dy * a], {}


class UnreducedAdd(Add):
    """Hands each input the first input's share of a broadcast gradient: the repeated axes
    are sliced instead of summed."""

    def backward(self, cache, dy):
        grads, _ = super().backward(cache, dy)
        return [dy[tuple(slice(0, size) for size in g.shape)].copy() for g in grads], {}


class SlopeOneHardswish(Hardswish):
    def backward(self, cache, dy):
        return [dy * np.where(cache > 3, 1.0, cache / 3)], {}


class ScaledAdaptivePool(AdaptivePool):
    """A forward a ten-thousandth off: the divisor of a window miscounted."""

    def forward(self, xs, params, buffers, ctx):
        y, cache = super().forward(xs, params, buffers, ctx)
        return y * 1.0001, cache


class UnscaledDepth(Depth):
    def forward(self, xs, params, buffers, ctx):
        y, mask = super().forward(xs, params, buffers, ctx)
        return (y, mask) if mask is None else (y * (1 - self.p.p), mask)


SABOTAGE = [
    ("mul", UnreducedMul, OpCase("mul", {}, ((2, 3, 1, 1), (2, 3, 4, 5))), GradientMismatch),
    ("add", UnreducedAdd, OpCase("add", {}, ((2, 3, 1, 1), (2, 3, 4, 5))), GradientMismatch),
    ("hardswish", SlopeOneHardswish, OpCase("hardswish", {}, ((2, 3, 4),)), GradientMismatch),
    ("adaptive_avgpool2d", ScaledAdaptivePool,
     OpCase("adaptive_avgpool2d", {"output_size": [3, 2]}, ((2, 2, 7, 5),)), ForwardMismatch),
    ("stochastic_depth", UnscaledDepth,
     OpCase("stochastic_depth", {"p": 0.5}, ((6, 3, 2, 2),), train=True), ForwardMismatch),
]


@pytest.mark.parametrize(("op_name", "broken", "case", "failure"), SABOTAGE,
                         ids=[entry[1].__name__ for entry in SABOTAGE])
def test_the_harness_catches_broken_versions(monkeypatch, op_name, broken, case,
                                             failure) -> None:
    run_layer_test(case)
    monkeypatch.setitem(REGISTRY, op_name, broken)
    with pytest.raises(failure):
        run_layer_test(case)


def test_the_language_server_shows_the_new_ops() -> None:
    from test_parity_torch import EVERY_CONV_OP

    from netspec.editor.features import analyse, complete, hover

    analysis = analyse(EVERY_CONV_OP, "net.toml")
    assert analysis.diagnostics == []
    lines = EVERY_CONV_OP.split("\n")
    depthwise = lines.index("[nodes.depthwise]")
    shown = hover(analysis, depthwise + 1, 2)
    assert "`conv2d`" in shown and "output `(8, 10, 9)`" in shown
    assert "80 trainable parameters (`weight` (8, 1, 3, 3), `bias` (8,))" in shown
    assert "FLOPs per sample" in shown
    gate = hover(analysis, lines.index("[nodes.scaled]") + 1, 2)
    assert "`mul`" in gate and "inputs: `gate` (8, 1, 1), `swish` (8, 10, 9)" in gate
    op_line = lines.index('op = "relu6"')
    names = {item.label for item in complete(analysis, op_line, len('op = "'))}
    assert {"mul", "adaptive_avgpool2d", "relu6", "hardtanh", "silu", "gelu", "hardswish",
            "hardsigmoid", "log_softmax", "stochastic_depth", "conv_transpose2d",
            "upsample"} <= names
    # the fields a conv2d without them may take
    fields = {item.label for item in complete(analysis, lines.index("[nodes.expand]") + 1, 0)}
    assert {"groups", "dilation"} <= fields


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_mobile_block_fuses_as_it_runs_node_by_node(dtype: str) -> None:
    # depthwise and grouped convolutions with batchnorms folded in inference and ReLUs
    # fused in training: the same bits in training, equal up to rounding in inference
    from pathlib import Path

    from test_fusion import batch_for, run_training, twins

    spec = (Path(__file__).resolve().parents[1] / "tools" / "specs" /
            "depthwise_separable.toml").read_text()
    spec = spec.replace('[nodes.reduce_act]\nop = "relu"', '[nodes.reduce_bn]\n'
                        'op = "batchnorm"\n\n[nodes.reduce_act]\nop = "relu"')
    fused, plain = twins(spec, dtype)
    x = batch_for(fused, batch=4)
    for a, b in zip(run_training(fused, x), run_training(plain, x)):
        np.testing.assert_array_equal(a, b)
    tolerance = {"float32": 2e-5, "float64": 1e-12}[dtype]
    got, want = fused.forward(x), plain.forward(x)
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance * np.abs(want).max())
