"""The executor's speed paths give the answers of the plain ones.

Convolutions leave their outputs batch-innermost in memory; pooling follows its input's
layout; ``backward(need_input_grad=False)``
skips input-gradient work; large inference batches run in chunks. Each case here runs an op
or a network both ways, in float64, and demands the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from layer_harness import affordable_architectures, build_network

import netspec.ops.conv
import netspec.plan.budget
import netspec.runtime.executor
from netspec.ops import REGISTRY, Context, Op
from netspec.ops.conv import Workspace
from netspec.ops.regularization import channel_rows
from netspec.runtime.executor import Network, compile

SHIPPED = [path.stem for path in affordable_architectures()]


def build_op(name: str, params: dict[str, Any]) -> Op:
    op_class = REGISTRY[name]
    return op_class(op_class.Params.model_validate({"op": name, **params}))


def channels_last(x: np.ndarray) -> np.ndarray:
    """The same (N, C, H, W) values, stored N, H, W, C."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def channels_outer(x: np.ndarray) -> np.ndarray:
    """The same values stored C, N, H, W."""
    return np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)


def batch_last(x: np.ndarray) -> np.ndarray:
    """The same values stored C, H, W, N (what convolutions produce)."""
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


LAYOUTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "channels_last": channels_last, "channels_outer": channels_outer, "batch_last": batch_last,
}

# (op, params, input shape): stride 1, 2 and 3, padding, rectangular kernels, 1x1 kernels,
# one channel and many, windows that overlap, tile the input or leave cells uncovered
CASES = [
    ("conv2d", {"out_channels": 4, "kernel_size": 3}, (2, 3, 7, 6)),
    ("conv2d", {"out_channels": 5, "kernel_size": 5}, (2, 20, 12, 12)),
    ("conv2d", {"out_channels": 3, "kernel_size": 3, "padding": 1}, (2, 1, 9, 9)),
    ("conv2d", {"out_channels": 2, "kernel_size": [3, 2], "stride": [2, 1],
                "padding": [1, 0]}, (2, 4, 7, 6)),
    ("conv2d", {"out_channels": 2, "kernel_size": 2, "stride": 2, "bias": False}, (3, 6, 8, 8)),
    ("conv2d", {"out_channels": 3, "kernel_size": 1}, (2, 5, 4, 3)),
    ("maxpool2d", {"kernel_size": 2}, (2, 3, 8, 6)),
    ("maxpool2d", {"kernel_size": 2}, (2, 3, 7, 5)),
    ("maxpool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, (2, 4, 7, 7)),
    ("maxpool2d", {"kernel_size": [2, 3], "stride": 1}, (1, 2, 5, 6)),
    ("maxpool2d", {"kernel_size": 2, "stride": 3}, (2, 2, 9, 9)),
    ("avgpool2d", {"kernel_size": 2}, (2, 3, 8, 6)),
    ("avgpool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, (2, 4, 7, 7)),
    ("avgpool2d", {"kernel_size": 2, "stride": 3}, (2, 2, 9, 9)),
]


def _run(op: Op, x: np.ndarray, params: dict[str, np.ndarray],
         dy_layout: Callable[[np.ndarray], np.ndarray], dy: np.ndarray):
    ctx = Context(train=True, rng=np.random.default_rng(0))
    y, cache = op.forward([x], params, {}, ctx)
    dxs, grads = op.backward(cache, dy_layout(dy))
    return y, dxs[0], grads


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}{c[1]}{c[2]}")
def test_ops_give_the_same_numbers_in_every_memory_layout(case, layout: str) -> None:
    name, raw, shape = case
    op = build_op(name, raw)
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape)
    params = {key: rng.normal(size=spec.shape)
              for key, spec in op.param_specs([shape[1:]]).items()}
    out_shape = (shape[0], *op.output_shape([shape[1:]]))
    dy = rng.normal(size=out_shape)
    reference = _run(op, x, params, np.ascontiguousarray, dy)
    arranged = LAYOUTS[layout]
    x_before, dy_before = arranged(x), arranged(dy)
    result = _run(op, x_before, params, arranged, dy)
    np.testing.assert_allclose(result[0], reference[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(result[1], reference[1], rtol=0, atol=1e-12)
    assert result[2].keys() == reference[2].keys()
    for key in reference[2]:
        np.testing.assert_allclose(result[2][key], reference[2][key], rtol=0, atol=1e-12)
        assert result[2][key].shape == params[key].shape
    np.testing.assert_array_equal(x_before, x)
    np.testing.assert_array_equal(dy_before, dy)


@pytest.mark.parametrize("layout", [np.ascontiguousarray, channels_last, batch_last])
def test_maxpool_ties_send_the_gradient_to_the_first_cell_only(layout) -> None:
    # ReLU outputs make all-zero windows common; PyTorch (and argmax) pick the first cell
    op = build_op("maxpool2d", {"kernel_size": 2})
    x = np.zeros((1, 2, 2, 4))
    x[0, 1, 1, 2:] = 3.0
    y, cache = op.forward([layout(x)], {}, {}, Context(False, np.random.default_rng(0)))
    dxs, _ = op.backward(cache, np.ones(y.shape))
    expected = np.zeros_like(x)
    expected[0, 0, 0, 0] = expected[0, 0, 0, 2] = expected[0, 1, 0, 0] = 1.0
    expected[0, 1, 1, 2] = 1.0
    np.testing.assert_array_equal(dxs[0], expected)


def _first_argmax_gradient(x: np.ndarray, dy: np.ndarray, kernel: int, stride: int,
                           padding: int) -> np.ndarray:
    """Max pooling's input gradient by loops over windows: each window's first maximum
    cell in row-major order takes the window's gradient (padding never wins)."""
    padded = np.pad(x, ((0, 0), (0, 0), (padding,) * 2, (padding,) * 2),
                    constant_values=-np.inf)
    dx = np.zeros_like(padded)
    for n, c, i, j in np.ndindex(dy.shape):
        window = padded[n, c, i * stride:i * stride + kernel, j * stride:j * stride + kernel]
        row, col = np.unravel_index(np.argmax(window), window.shape)
        dx[n, c, i * stride + row, j * stride + col] += dy[n, c, i, j]
    return dx[:, :, padding:padded.shape[2] - padding, padding:padded.shape[3] - padding]


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize(("kernel", "stride", "padding", "shape"), [
    (2, 2, 0, (3, 2, 8, 6)), (2, 2, 0, (2, 3, 7, 5)), (3, 2, 1, (2, 2, 7, 7)),
    (3, 1, 0, (1, 2, 5, 6)), (2, 3, 0, (2, 2, 9, 9)),
])
def test_maxpool_gradient_goes_to_each_window_first_maximum(
        kernel: int, stride: int, padding: int, shape, layout: str, train: bool) -> None:
    # small integers tie in every arrangement; training finds the winners in the forward,
    # a backward after inference finds them from the kept input
    op = build_op("maxpool2d", {"kernel_size": kernel, "stride": stride, "padding": padding})
    rng = np.random.default_rng(6)
    x = rng.integers(-2, 3, size=shape).astype(np.float64)
    y, cache = op.forward([LAYOUTS[layout](x)], {}, {}, Context(train, rng))
    dy = rng.normal(size=y.shape)
    dx = op.backward(cache, LAYOUTS[layout](dy))[0][0]
    # overlapping windows add in another order than the loops: equal up to rounding
    np.testing.assert_allclose(dx, _first_argmax_gradient(x, dy, kernel, stride, padding),
                               rtol=0, atol=1e-12)


def _seeded_pass(net: Network, x: np.ndarray, dy: np.ndarray, **kwargs: Any):
    net.rng = np.random.default_rng(7)  # the same dropout masks both times
    net.forward(x, train=True)
    dx = net.backward(dy, **kwargs)
    return dx, {key: value.copy() for key, value in net.grads.items()}


@pytest.mark.parametrize("name", SHIPPED)
def test_skipping_the_input_gradient_changes_no_parameter_gradient(name: str) -> None:
    net = compile(name, seed=0, dtype="float64")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, *net.shapes[net.plan.inputs[0]]))
    dy = rng.normal(size=(3, *net.output_shape))
    dx, full = _seeded_pass(net, x, dy)
    assert dx.shape == x.shape and dx.flags.c_contiguous
    skipped, partial = _seeded_pass(net, x, dy, need_input_grad=False)
    assert skipped is None
    assert partial.keys() == full.keys()
    for key, value in full.items():
        np.testing.assert_array_equal(partial[key], value, err_msg=key)


def test_the_first_convolution_computes_no_input_gradient_when_none_is_needed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    net = compile("lenet5", seed=0)
    op = net.plan.nodes["conv1"].op

    def refuse(cache, dy):
        raise AssertionError("conv1 computed an input gradient nobody needs")

    monkeypatch.setattr(op, "backward", refuse)
    net.forward(np.zeros((2, 1, 28, 28)), train=True)
    net.backward(np.ones((2, 10)), need_input_grad=False)
    assert net.grads["conv1.weight"].shape == (6, 1, 5, 5)


@pytest.mark.parametrize("name", ["lenet5", "resnet_mini"])
def test_large_inference_batches_run_in_chunks_with_the_same_values(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # a tiny chunk budget forces chunking at a test-sized batch
    monkeypatch.setattr(netspec.plan.budget, "INFERENCE_CHUNK_BYTES", 1)
    monkeypatch.setattr(netspec.plan.budget, "MIN_INFERENCE_CHUNK", 1)
    net = compile(name, seed=0, dtype="float64")
    calls = []
    op = net.plan.nodes[net.plan.output].op
    forward = op.forward

    def counting(xs, params, buffers, ctx):
        calls.append(len(xs[0]))
        return forward(xs, params, buffers, ctx)

    monkeypatch.setattr(op, "forward", counting)
    x = np.random.default_rng(0).normal(size=(5, 1, 28, 28))
    chunked = net.forward(x)
    assert calls == [1] * 5
    whole = net.forward(x, keep=True)  # kept caches: one pass, as training does
    assert calls[5:] == [5]
    assert chunked.shape == whole.shape and chunked.flags.c_contiguous
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-12)


def test_workspace_hands_out_an_array_again_only_when_nothing_else_holds_it() -> None:
    workspace = Workspace()
    first = workspace.empty((4, 5), np.float32)
    held = workspace.empty((4, 5), np.float32)
    assert held is not first
    view = first[1:]
    assert workspace.empty((4, 5), np.float32) is not first  # a view keeps it in use
    del view, first
    again = workspace.empty((4, 5), np.float32)
    assert again.base is None and again is not held
    assert workspace.empty((4, 5), np.float64).dtype == np.float64


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}{c[1]}{c[2]}")
def test_a_pending_cache_survives_later_calls_on_the_same_shapes(case) -> None:
    name, raw, shape = case
    op = build_op(name, raw)
    rng = np.random.default_rng(3)
    x, later = rng.normal(size=(2, *shape))
    params = {key: rng.normal(size=spec.shape)
              for key, spec in op.param_specs([shape[1:]]).items()}
    dy = rng.normal(size=(shape[0], *op.output_shape([shape[1:]])))
    expected = _run(build_op(name, raw), x, params, np.ascontiguousarray, dy)
    ctx = Context(train=True, rng=np.random.default_rng(0))
    y, cache = op.forward([x], params, {}, ctx)
    y_before = y.copy()
    for _ in range(2):  # scratch arrays still held by y and cache must not be handed out
        op.forward([later], params, {}, ctx)
        op.backward(op.forward([later], params, {}, ctx)[1], dy)
    dxs, grads = op.backward(cache, dy)
    np.testing.assert_array_equal(y, y_before)
    np.testing.assert_array_equal(dxs[0], expected[1])
    for key, value in expected[2].items():
        np.testing.assert_array_equal(grads[key], value)


ACTIVATION_THEN_POOL = """
[nodes.image]
op = "input"
shape = [2, 6, 6]

[nodes.conv]
op = "conv2d"
out_channels = 3
kernel_size = 3
padding = 1

[nodes.act]
op = "{activation}"

[nodes.pool]
op = "maxpool2d"
kernel_size = {kernel}
stride = {stride}
padding = {padding}

[nodes.flatten]
op = "flatten"

[nodes.fc]
op = "linear"
out_features = 4
"""


def _forward_order(net: Network, x: np.ndarray) -> list[str]:
    order: list[str] = []
    net.node_timer = lambda node_id, phase, seconds: order.append(node_id)
    net.forward(x)
    net.node_timer = None
    return order


def _tied_images(dtype: str) -> np.ndarray:
    """Images whose convolution outputs tie often: whole windows of zeros after ReLU, equal
    positive values, and windows with no positive value at all."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 2, 6, 6))
    x[0] = 0.0
    x[1, :, :3] = 1.0
    x[2] = -np.abs(x[2])
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0)])
def test_relu_moved_behind_max_pooling_gives_the_same_bits(
        dtype: str, kernel: int, stride: int, padding: int) -> None:
    spec = ACTIVATION_THEN_POOL.format(activation="relu", kernel=kernel, stride=stride,
                                       padding=padding)
    # fused, the relu runs inside the pooling; unfused, as a node of its own after it
    inside = build_network(spec, dtype=dtype)
    assert "act" not in _forward_order(inside, _tied_images(dtype))
    assert inside._fusions["pool"].relu
    moved = build_network(spec, dtype=dtype, fuse=False)
    assert _forward_order(moved, _tied_images(dtype)).index("act") > \
        _forward_order(moved, _tied_images(dtype)).index("pool")
    in_place = build_network(spec, dtype=dtype, fuse=False)
    # the spec's own order: what moving the relu must not change
    in_place._after_pool, in_place._moved = {}, frozenset()
    assert _forward_order(in_place, _tied_images(dtype)) == list(in_place.plan.order)
    weight = moved.params["conv.weight"]
    weight[:, :, 1, 1] = 0.0  # a centre tap of 0 and 1s elsewhere make equal outputs
    weight[0] = 1.0
    in_place.load_state(moved.state())
    inside.load_state(moved.state())
    x = _tied_images(dtype)
    dy = np.random.default_rng(4).normal(size=(4, 4)).astype(dtype)
    results = []
    for net in (inside, moved, in_place):
        y = net.forward(x, train=True)
        dx = net.backward(dy)
        results.append((y, dx, {key: value.copy() for key, value in net.grads.items()}))
    y_plain, dx_plain, grads_plain = results[-1]
    for y, dx, grads in results[:-1]:
        np.testing.assert_array_equal(y, y_plain)
        np.testing.assert_array_equal(dx, dx_plain)
        for key, value in grads_plain.items():
            np.testing.assert_array_equal(grads[key], value, err_msg=key)


@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1)])
def test_a_relu_after_max_pooling_runs_inside_it_with_the_same_bits(
        kernel: int, stride: int, padding: int) -> None:
    spec = ACTIVATION_THEN_POOL.format(activation="relu", kernel=kernel, stride=stride,
                                       padding=padding)
    # the same nodes with the ReLU after the pooling instead of before it
    spec = spec.replace('[nodes.act]\nop = "relu"\n', "").replace(
        "[nodes.flatten]", '[nodes.act]\nop = "relu"\n\n[nodes.flatten]')
    fused, plain = build_network(spec), build_network(spec, fuse=False)
    assert list(fused.plan.order).index("act") > list(fused.plan.order).index("pool")
    assert fused._fusions["pool"].relu and "act" in fused._absorbed
    plain.load_state(fused.state())
    x = _tied_images("float64")
    dy = np.random.default_rng(5).normal(size=(4, 4))
    results = []
    for net in (fused, plain):
        y = net.forward(x, train=True)
        results.append((y, net.backward(dy), {k: v.copy() for k, v in net.grads.items()}))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    for key, value in results[1][2].items():
        np.testing.assert_array_equal(results[0][2][key], value, err_msg=key)


@pytest.mark.parametrize("activation", ["leaky_relu", "sigmoid", "tanh"])
def test_activations_that_can_tie_nonzero_gradients_stay_in_place(activation: str) -> None:
    net = build_network(ACTIVATION_THEN_POOL.format(activation=activation, kernel=2, stride=2,
                                                    padding=0))
    assert _forward_order(net, _tied_images("float64")) == list(net.plan.order)


def test_a_relu_read_by_another_node_too_stays_in_place() -> None:
    spec = ACTIVATION_THEN_POOL.format(activation="relu", kernel=1, stride=1, padding=0)
    spec = spec.replace('[nodes.flatten]\nop = "flatten"',
                        '[nodes.skip]\nop = "add"\ninputs = ["pool", "act"]\n\n'
                        '[nodes.flatten]\nop = "flatten"')
    net = build_network(spec)
    assert _forward_order(net, _tied_images("float64")) == list(net.plan.order)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("dy_layout", list(LAYOUTS))
@pytest.mark.parametrize("x_layout", list(LAYOUTS))
def test_batchnorm_gives_the_same_numbers_in_every_memory_layout(
        x_layout: str, dy_layout: str, train: bool) -> None:
    op = build_op("batchnorm", {})
    rng = np.random.default_rng(2)
    x, dy = rng.normal(2.0, 3.0, size=(4, 3, 5, 6)), rng.normal(size=(4, 3, 5, 6))
    params = {"weight": rng.normal(size=3), "bias": rng.normal(size=3)}

    def run(x_in: np.ndarray, dy_in: np.ndarray):
        buffers = {"running_mean": np.full(3, 0.5), "running_var": np.full(3, 2.0)}
        y, cache = op.forward([x_in], params, buffers, Context(train, np.random.default_rng(0)))
        dxs, grads = op.backward(cache, dy_in)
        return [y, dxs[0], *grads.values(), *buffers.values()]

    reference = run(x, dy)
    for got, want in zip(run(LAYOUTS[x_layout](x), LAYOUTS[dy_layout](dy)), reference):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_batchnorm_without_fusion_leaves_its_input_and_gradient_alone(layout: str) -> None:
    # its backward works in the memory of the centred input, which must then be its own
    op = build_op("batchnorm", {})
    rng = np.random.default_rng(4)
    x = LAYOUTS[layout](rng.normal(1.0, 2.0, size=(4, 3, 5, 6)))
    dy = LAYOUTS[layout](rng.normal(size=(4, 3, 5, 6)))
    x_before, dy_before = x.copy(), dy.copy()
    buffers = {"running_mean": np.zeros(3), "running_var": np.ones(3)}
    params = {"weight": rng.normal(size=3), "bias": rng.normal(size=3)}
    y, cache = op.forward([x], params, buffers, Context(True, np.random.default_rng(0)))
    y_before = y.copy()
    dx = op.backward(cache, dy)[0][0]
    assert not np.shares_memory(dx, x) and not np.shares_memory(dx, dy)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(dy, dy_before)
    np.testing.assert_array_equal(y, y_before)


def test_batchnorm_reads_a_convolution_output_in_place() -> None:
    x = batch_last(np.random.default_rng(0).normal(size=(4, 3, 5, 6)))
    rows, _ = channel_rows(x)
    assert rows.shape == (3, 120) and np.shares_memory(rows, x)
    flat = np.asfortranarray(np.ones((8, 5)))  # how a linear layer leaves its output
    assert np.shares_memory(channel_rows(flat)[0], flat)


@pytest.mark.parametrize(("params", "shape"), [
    ({"out_channels": 4, "kernel_size": 3, "padding": 1}, (2, 4, 6, 5)),
    ({"out_channels": 2, "kernel_size": [3, 5], "padding": [1, 2]}, (2, 3, 4, 6)),
    ({"out_channels": 2, "kernel_size": 3, "padding": 2}, (1, 3, 4, 4)),
    ({"out_channels": 3, "kernel_size": 1}, (2, 5, 4, 3)),
])
def test_input_gradient_by_convolution_equals_by_rows(params, shape,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    op = build_op("conv2d", params)
    rng = np.random.default_rng(6)
    x = batch_last(rng.normal(size=shape))
    weights = {key: rng.normal(size=spec.shape)
               for key, spec in op.param_specs([shape[1:]]).items()}
    dy = rng.normal(size=(shape[0], *op.output_shape([shape[1:]])))
    assert netspec.ops.conv._input_gradient_by_convolution(
        weights["weight"].shape, shape[2:], dy.shape, op.geometry[1], op.geometry[2])
    by_convolution = _run(op, x, weights, batch_last, dy)[1]
    monkeypatch.setattr(netspec.ops.conv, "_input_gradient_by_convolution",
                        lambda *args: False)
    by_rows = _run(op, x, weights, batch_last, dy)[1]
    np.testing.assert_allclose(by_convolution, by_rows, rtol=0, atol=1e-12)



@pytest.mark.parametrize("layout", ["nchw", "batch_last"])
@pytest.mark.parametrize(("shape", "kernel", "stride", "padding"), [
    ((2, 3, 7, 6), (3, 3), (1, 1), (1, 1)),
    ((2, 3, 7, 6), (5, 3), (2, 1), (2, 0)),
    ((1, 2, 5, 5), (3, 3), (3, 2), (4, 5)),   # padding wider than the kernel
    ((3, 1, 4, 9), (1, 4), (1, 3), (0, 2)),
    ((2, 2, 1, 1), (3, 3), (1, 1), (1, 1)),   # a 1x1 image: every window mostly padding
    ((1, 2, 6, 6), (6, 6), (1, 1), (0, 0)),
])
def test_lowering_writes_the_padding_itself(shape, kernel, stride, padding, layout) -> None:
    # naive reference: pad, then L[h, c, j, ow, n] = padded[n, c, h, ow*sw + j] by loops
    from netspec.ops.conv import _gather_rows
    from netspec.ops.shapes import window_output_hw

    x = np.random.default_rng(0).standard_normal(shape)
    if layout == "batch_last":
        x = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    out_h, out_w = window_output_hw(shape[2:], kernel, stride, padding)
    padded = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    rows = stride[0] * (out_h - 1) + kernel[0]
    expected = np.empty((rows, shape[1], kernel[1], out_w, shape[0]))
    for h in range(rows):
        for c in range(shape[1]):
            for j in range(kernel[1]):
                for ow in range(out_w):
                    expected[h, c, j, ow] = padded[:, c, h, ow * stride[1] + j]
    workspace = Workspace()
    # a reused scratch array holds the last call's values: every cell must be written again
    _gather_rows(x, kernel, stride, padding, (out_h, out_w), workspace).fill(np.nan)
    lowered = _gather_rows(x, kernel, stride, padding, (out_h, out_w), workspace)
    np.testing.assert_array_equal(lowered, expected)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (4, 16, 8, 8), (3, 1, 1, 1), (5, 2, 33, 31)])
@pytest.mark.parametrize("layout", [np.ascontiguousarray, *LAYOUTS.values(),
                                    lambda x: np.ones((*x.shape[:3], 2 * x.shape[3]),
                                                      x.dtype)[..., ::2]])
def test_relu_into_gives_the_bits_of_np_maximum(layout, shape, dtype: str) -> None:
    # the last layout is a strided view, not one dense block: the plain path
    from netspec.ops.activations import relu_into
    x = np.random.default_rng(3).normal(size=shape).astype(dtype)
    x.flat[::7] = 0.0
    x.flat[1::11] = -0.0
    x.flat[2::13] = np.nan
    arranged = layout(x)
    arranged[...] = x
    want = np.maximum(arranged, 0)
    got = relu_into(arranged, np.empty_like(arranged))
    in_place = relu_into(arranged, arranged)
    assert in_place is arranged
    for result in (got, in_place):
        np.testing.assert_array_equal(result, want)
        np.testing.assert_array_equal(np.signbit(result), np.signbit(want))


def _input_gradient_by_loops(dy: np.ndarray, weight: np.ndarray, in_hw: tuple[int, int],
                             stride: tuple[int, int], padding: tuple[int, int]) -> np.ndarray:
    """dx of a convolution by its definition: every output cell's gradient times the kernel,
    added at the input cells its window read (those in the padding dropped)."""
    n, _, out_h, out_w = dy.shape
    _, in_c, kernel_h, kernel_w = weight.shape
    dx = np.zeros((n, in_c, *in_hw))
    for oh in range(out_h):
        for ow in range(out_w):
            for i in range(kernel_h):
                for j in range(kernel_w):
                    y, x = oh * stride[0] + i - padding[0], ow * stride[1] + j - padding[1]
                    if 0 <= y < in_hw[0] and 0 <= x < in_hw[1]:
                        dx[:, :, y, x] += dy[:, :, oh, ow] @ weight[:, :, i, j]
    return dx


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_input_gradient_by_rows_equals_the_definition(data: st.DataObject) -> None:
    # any geometry: strides above the kernel (phases with no kernel rows), padding wider than
    # the kernel (rows whose windows miss dy), one-row and one-column outputs, batch 1
    kernel = (data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)))
    stride = (data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)))
    padding = (data.draw(st.integers(0, 4)), data.draw(st.integers(0, 4)))
    in_hw = tuple(data.draw(st.integers(max(1, k - 2 * p), 9))
                  for k, p in zip(kernel, padding, strict=True))
    out_hw = tuple((size + 2 * p - k) // s + 1
                   for size, k, s, p in zip(in_hw, kernel, stride, padding, strict=True))
    n, in_c, out_c = (data.draw(st.integers(1, 3)) for _ in range(3))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    weight = rng.normal(size=(out_c, in_c, *kernel))
    dy = batch_last(rng.normal(size=(n, out_c, *out_hw)))
    dx = netspec.ops.conv._input_gradient_by_rows(dy, weight, in_hw, stride, padding, Workspace())
    np.testing.assert_allclose(dx, _input_gradient_by_loops(dy, weight, in_hw, stride, padding),
                               rtol=1e-12, atol=1e-12)
