"""PyTorch parity in float64: every op, whole branching networks rebuilt node by node from
the plan, and the loss. Weights are copied as they are: netspec keeps PyTorch's layouts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from layer_harness import (
    NO_INPUT_BATCH,
    OpCase,
    build_network,
    build_op,
    make_tensors,
    poison_allocator,
    run_op,
)
from tensor_cases import EVERY_TENSOR_OP
from tensor_cases import PARITY_CASES as TENSOR_PARITY_CASES
from tensor_torch import TENSOR_TORCH, tensor_torch_apply

import netspec
from netspec.ops import REGISTRY, Context
from netspec.ops.base import param_key

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOLERANCE = 1e-7


@pytest.fixture(autouse=True, scope="module")
def _float64_by_default():
    """float64 for every tensor made here, then the previous default back: a module-level
    set_default_dtype would leak into the test files collected after this one."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def relative_error(ours: np.ndarray, theirs: Any, floor: float = 1e-300) -> float:
    """max |ours - theirs| / max(max |theirs|, floor): relative to the tensor's scale, so that
    entries near zero are not divided by themselves. ``floor`` stands in for a tensor that
    is zero up to rounding, such as a bias followed by batchnorm."""
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    if not np.all(np.isfinite(ours)):
        return float("inf")
    scale = max(float(np.abs(theirs).max(initial=0.0)), floor)
    return float(np.abs(ours - theirs).max(initial=0.0)) / scale


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def torch_apply(op_name: str, p: Any, xs: list, params: dict, buffers: dict, train: bool,
                dropout_mask: np.ndarray | None = None, batch: int = NO_INPUT_BATCH):
    """The torch counterpart of one netspec node. Dropout multiplies by netspec's own mask
    (scaled, as the op applies it): the two libraries' generators differ. ``batch`` is what
    an op without inputs broadcasts to."""
    if op_name in TENSOR_TORCH:
        return tensor_torch_apply(op_name, p, xs, params, batch)
    x = xs[0] if xs else None
    if op_name == "input":
        return x
    if op_name == "conv2d":
        return F.conv2d(x, params["weight"], params.get("bias"), stride=_pair(p.stride),
                        padding=_pair(p.padding), dilation=_pair(p.dilation), groups=p.groups)
    if op_name in ("maxpool2d", "avgpool2d"):
        kernel = _pair(p.kernel_size)
        stride = kernel if p.stride is None else _pair(p.stride)
        if op_name == "maxpool2d":
            return F.max_pool2d(x, kernel, stride, _pair(p.padding), ceil_mode=p.ceil_mode)
        return F.avg_pool2d(x, kernel, stride, _pair(p.padding), ceil_mode=p.ceil_mode,
                            count_include_pad=p.count_include_pad)
    if op_name == "global_avgpool":
        return F.adaptive_avg_pool2d(x, 1).flatten(1)
    if op_name == "linear":
        return F.linear(x, params["weight"], params.get("bias"))
    if op_name == "relu":
        return F.relu(x)
    if op_name == "leaky_relu":
        return F.leaky_relu(x, p.negative_slope)
    if op_name == "sigmoid":
        return torch.sigmoid(x)
    if op_name == "tanh":
        return torch.tanh(x)
    if op_name == "dropout":
        return x if dropout_mask is None else x * torch.from_numpy(dropout_mask)
    if op_name == "batchnorm":
        return F.batch_norm(x, buffers["running_mean"], buffers["running_var"],
                            params["weight"], params["bias"], training=train,
                            momentum=p.momentum, eps=p.eps)
    if op_name == "add":
        return sum(xs[1:], xs[0])
    if op_name in CONV_OPS:
        return CONV_OPS[op_name](p, xs, dropout_mask)
    if op_name == "conv_transpose2d":
        return _conv_transpose2d(p, xs, params)
    raise KeyError(f"no torch translation for op '{op_name}'; add one to torch_apply")


# the convolutional-network ops (issue 24); stochastic depth multiplies by netspec's own
# per-sample mask, as dropout does (torchvision draws it from torch's generator)
CONV_OPS = {
    "mul": lambda p, xs, mask: torch.mul(xs[0], xs[1]),
    "adaptive_avgpool2d": lambda p, xs, mask: F.adaptive_avg_pool2d(xs[0],
                                                                    _pair(p.output_size)),
    "hardtanh": lambda p, xs, mask: F.hardtanh(xs[0], p.min_val, p.max_val),
    "relu6": lambda p, xs, mask: F.relu6(xs[0]),
    "silu": lambda p, xs, mask: F.silu(xs[0]),
    "gelu": lambda p, xs, mask: F.gelu(xs[0], approximate=p.approximate),
    "hardswish": lambda p, xs, mask: F.hardswish(xs[0]),
    "hardsigmoid": lambda p, xs, mask: F.hardsigmoid(xs[0]),
    "log_softmax": lambda p, xs, mask: F.log_softmax(xs[0], dim=p.dim),
    "stochastic_depth": lambda p, xs, mask: xs[0] if mask is None
    else xs[0] * torch.from_numpy(mask),
    "upsample": lambda p, xs, mask: F.interpolate(
        xs[0], scale_factor=_pair(p.scale_factor), mode=p.mode,
        align_corners=False if p.mode == "bilinear" else None),
}


def _conv_transpose2d(p, xs, params):
    return F.conv_transpose2d(xs[0], params["weight"], params.get("bias"),
                              stride=_pair(p.stride), padding=_pair(p.padding),
                              output_padding=_pair(p.output_padding), groups=p.groups,
                              dilation=_pair(p.dilation))


def _leaf(array: np.ndarray):
    return torch.tensor(array, dtype=torch.float64, requires_grad=True)


# ---- one op at a time ----

PARITY_CASES = [
    OpCase("input", {"shape": [3, 4]}, ((2, 3, 4),)),
    OpCase("conv2d", {"out_channels": 4, "kernel_size": 3}, ((2, 3, 6, 5),)),
    OpCase("conv2d", {"out_channels": 3, "kernel_size": [3, 2], "stride": [2, 1],
                      "padding": [1, 0]}, ((2, 3, 7, 5),)),
    OpCase("conv2d", {"out_channels": 2, "kernel_size": 3, "stride": 2, "padding": 2,
                      "bias": False}, ((3, 2, 6, 7),)),
    OpCase("maxpool2d", {"kernel_size": 2}, ((2, 3, 7, 6),)),
    OpCase("maxpool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, ((2, 2, 7, 7),)),
    OpCase("maxpool2d", {"kernel_size": [3, 2], "stride": [2, 1], "padding": [1, 0]},
           ((2, 2, 7, 5),)),
    OpCase("maxpool2d", {"kernel_size": 2, "stride": 1}, ((2, 2, 5, 4),)),
    OpCase("avgpool2d", {"kernel_size": 2}, ((2, 3, 7, 6),)),
    OpCase("avgpool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, ((2, 2, 7, 7),)),
    OpCase("avgpool2d", {"kernel_size": [3, 2], "stride": [2, 1], "padding": [1, 0]},
           ((2, 2, 7, 5),)),
    OpCase("avgpool2d", {"kernel_size": 2, "stride": 3}, ((2, 2, 8, 7),)),
    OpCase("global_avgpool", {}, ((2, 3, 4, 5),)),
    OpCase("linear", {"out_features": 3}, ((4, 5),)),
    OpCase("linear", {"out_features": 4, "bias": False}, ((2, 6),)),
    OpCase("flatten", {}, ((2, 3, 4, 5),)),
    OpCase("relu", {}, ((2, 3, 4, 5),)),
    OpCase("leaky_relu", {"negative_slope": 0.2}, ((2, 3, 4, 5),)),
    OpCase("sigmoid", {}, ((2, 3, 4, 5),)),
    OpCase("tanh", {}, ((2, 3, 4, 5),)),
    OpCase("softmax", {}, ((3, 5),)),
    OpCase("softmax", {}, ((2, 4, 3, 2),)),
    OpCase("dropout", {"p": 0.3}, ((2, 3, 4, 5),)),
    OpCase("dropout", {"p": 0.3}, ((2, 3, 4, 5),), train=True),
    OpCase("batchnorm", {}, ((3, 2, 3, 4),), train=True),
    OpCase("batchnorm", {}, ((3, 2, 3, 4),)),
    OpCase("batchnorm", {"momentum": 0.3, "eps": 1e-3}, ((5, 4),), train=True),
    OpCase("batchnorm", {}, ((5, 4),)),
    OpCase("add", {}, ((2, 3, 2, 2), (2, 3, 2, 2), (2, 3, 2, 2))),
    OpCase("add", {}, ((2, 1, 5, 1), (2, 3, 1, 4))),
    OpCase("add", {}, ((3, 1, 8), (3, 6, 8), (3, 6, 1))),
    OpCase("concat", {}, ((2, 2, 3, 4), (2, 3, 3, 4))),
    OpCase("concat", {"axis": 2}, ((2, 2, 3, 1), (2, 2, 3, 2))),
    # batches large enough for the split copies, inputs in both memory layouts
    OpCase("conv2d", {"out_channels": 6, "kernel_size": 3, "padding": 1}, ((4, 8, 32, 32),)),
    OpCase("conv2d", {"out_channels": 5, "kernel_size": 3, "stride": 2, "padding": 1},
           ((4, 16, 24, 24),), channels_last=True),
    OpCase("conv2d", {"out_channels": 4, "kernel_size": [5, 3], "padding": [2, 1]},
           ((4, 8, 32, 32),), channels_last=True),
    OpCase("conv2d", {"out_channels": 3, "kernel_size": 2, "stride": 3}, ((3, 2, 9, 9),)),
    OpCase("maxpool2d", {"kernel_size": 2}, ((4, 8, 32, 32),)),
    OpCase("maxpool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, ((4, 8, 32, 32),),
           channels_last=True),
    OpCase("maxpool2d", {"kernel_size": 2, "stride": 3}, ((2, 2, 9, 9),)),
    OpCase("avgpool2d", {"kernel_size": 2}, ((4, 8, 32, 32),), channels_last=True),
    OpCase("avgpool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, ((4, 8, 32, 32),)),
    OpCase("avgpool2d", {"kernel_size": 2, "stride": 3}, ((2, 2, 9, 9),)),
    OpCase("global_avgpool", {}, ((4, 16, 24, 24),), channels_last=True),
    OpCase("batchnorm", {}, ((4, 16, 24, 24),), train=True, channels_last=True),
    # conv2d groups and dilation: depthwise (MobileNet's 3x3, stride 1 and 2), a channel
    # multiplier, grouped (RegNet's), dilated dense and depthwise
    OpCase("conv2d", {"out_channels": 16, "kernel_size": 3, "groups": 16, "padding": 1},
           ((4, 16, 14, 14),)),
    OpCase("conv2d", {"out_channels": 16, "kernel_size": 5, "groups": 16, "stride": 2,
                      "padding": 2, "bias": False}, ((3, 16, 15, 15),), channels_last=True),
    OpCase("conv2d", {"out_channels": 12, "kernel_size": 3, "groups": 4, "padding": 1},
           ((2, 4, 9, 8),)),
    OpCase("conv2d", {"out_channels": 8, "kernel_size": 3, "groups": 2, "stride": 2,
                      "padding": 1}, ((3, 8, 11, 10),), channels_last=True),
    OpCase("conv2d", {"out_channels": 4, "kernel_size": 3, "dilation": [2, 3],
                      "padding": [2, 3]}, ((2, 3, 10, 11),)),
    OpCase("conv2d", {"out_channels": 6, "kernel_size": 3, "groups": 6, "dilation": 2,
                      "stride": 2, "padding": 2}, ((2, 6, 12, 9),)),
    # tensors of any rank: tests/tensor_cases.py
    *TENSOR_PARITY_CASES,
    OpCase("mul", {}, ((2, 8, 1, 1), (2, 8, 7, 6))),
    OpCase("mul", {}, ((3, 4, 5, 6), (3, 4, 5, 6)), channels_last=True),
    OpCase("mul", {}, ((2, 1, 5, 1), (2, 3, 1, 4))),
    OpCase("adaptive_avgpool2d", {"output_size": 1}, ((4, 16, 9, 7),), channels_last=True),
    OpCase("adaptive_avgpool2d", {"output_size": [7, 7]}, ((2, 3, 13, 15),)),
    OpCase("adaptive_avgpool2d", {"output_size": [5, 3]}, ((2, 3, 10, 9),)),
    OpCase("adaptive_avgpool2d", {"output_size": [6, 4]}, ((2, 2, 4, 3),)),
    OpCase("hardtanh", {"min_val": -0.5, "max_val": 1.25}, ((2, 3, 4, 5),)),
    OpCase("relu6", {}, ((2, 3, 4, 5),)),
    OpCase("silu", {}, ((2, 3, 4, 5),)),
    OpCase("gelu", {}, ((2, 3, 4, 5),)),
    OpCase("gelu", {"approximate": "tanh"}, ((2, 3, 4, 5),)),
    OpCase("hardswish", {}, ((2, 3, 4, 5),)),
    OpCase("hardsigmoid", {}, ((2, 3, 4, 5),)),
    OpCase("log_softmax", {}, ((3, 10),)),
    OpCase("log_softmax", {"dim": -1}, ((2, 4, 3, 5),)),
    OpCase("stochastic_depth", {"p": 0.4}, ((6, 3, 4, 5),)),
    OpCase("stochastic_depth", {"p": 0.4}, ((6, 3, 4, 5),), train=True),
    OpCase("stochastic_depth", {"p": 0.3}, ((5, 7),), seed=2, train=True),
    OpCase("conv_transpose2d", {"out_channels": 8, "kernel_size": 2, "stride": 2},
           ((2, 16, 7, 6),)),
    OpCase("conv_transpose2d", {"out_channels": 6, "kernel_size": 3, "stride": 2,
                                "padding": 1, "output_padding": 1, "groups": 3},
           ((2, 6, 5, 7),), channels_last=True),
    OpCase("conv_transpose2d", {"out_channels": 4, "kernel_size": [3, 5], "stride": [1, 3],
                                "padding": [2, 1], "dilation": [2, 1], "bias": False},
           ((2, 3, 6, 5),)),
    OpCase("upsample", {"scale_factor": 2}, ((2, 3, 5, 4),)),
    OpCase("upsample", {"scale_factor": [2, 3]}, ((2, 3, 5, 4),), channels_last=True),
    OpCase("upsample", {"scale_factor": 2, "mode": "bilinear"}, ((2, 3, 5, 4),)),
    OpCase("upsample", {"scale_factor": [4, 3], "mode": "bilinear"}, ((2, 2, 3, 5),),
           channels_last=True),
    OpCase("maxpool2d", {"kernel_size": 3, "stride": 2, "ceil_mode": True}, ((2, 4, 28, 28),)),
    OpCase("maxpool2d", {"kernel_size": 3, "stride": 2, "ceil_mode": True},
           ((2, 4, 14, 13),), channels_last=True),
    OpCase("maxpool2d", {"kernel_size": 2, "stride": 2, "padding": 1, "ceil_mode": True},
           ((2, 2, 5, 6),)),
    OpCase("avgpool2d", {"kernel_size": 3, "stride": 2, "ceil_mode": True}, ((2, 3, 8, 7),)),
    OpCase("avgpool2d", {"kernel_size": 3, "stride": 2, "padding": 1,
                         "count_include_pad": False}, ((2, 3, 7, 6),)),
    OpCase("avgpool2d", {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
           ((2, 2, 6, 6),), channels_last=True),
    OpCase("avgpool2d", {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
                         "count_include_pad": False}, ((2, 2, 6, 7),)),
    OpCase("avgpool2d", {"kernel_size": 2, "stride": 2, "padding": 1, "ceil_mode": True,
                         "count_include_pad": False}, ((2, 2, 5, 4),)),
]


def test_every_registered_op_has_a_parity_case() -> None:
    assert set(REGISTRY) - {case.op for case in PARITY_CASES} == set()


@pytest.mark.parametrize("case", PARITY_CASES, ids=lambda case: case.id)
def test_op_matches_torch(case: OpCase) -> None:
    op = build_op(case.op, case.params)
    xs, params, buffers = make_tensors(op, case, distinct=False)
    poison_allocator(op, [x.shape for x in xs])
    y, cache, buffers_after = run_op(op, xs, params, buffers, case.train, case.seed)
    poison_allocator(op, [x.shape for x in xs] + [y.shape])
    dy = np.random.default_rng(case.seed + 1).normal(size=y.shape)
    dxs, dparams = op.backward(cache, dy)

    mask = None
    if case.op in ("dropout", "stochastic_depth") and case.train:
        mask = run_op(op, [np.ones(xs[0].shape)], {}, {}, True, case.seed)[0]
    txs = [_leaf(x) for x in xs]
    tparams = {name: _leaf(value) for name, value in params.items()}
    tbuffers = {name: torch.tensor(value) for name, value in buffers.items()}
    ty = torch_apply(case.op, op.p, txs, tparams, tbuffers, case.train, mask)
    ty.backward(torch.from_numpy(dy))

    assert relative_error(y, ty) < TOLERANCE
    for dx, tx in zip(dxs, txs):
        assert relative_error(dx, tx.grad) < TOLERANCE
    assert set(dparams) == set(tparams)
    for name, value in tparams.items():
        assert relative_error(dparams[name], value.grad) < TOLERANCE, name
    for name, value in tbuffers.items():
        assert relative_error(buffers_after[name], value) < TOLERANCE, name


# ---- whole networks, rebuilt node by node from the plan ----

EVERY_OP = """
[nodes.image]
op = "input"
shape = [2, 9, 8]

[nodes.conv]
op = "conv2d"
out_channels = 4
kernel_size = [3, 2]
stride = [2, 1]
padding = [1, 0]

[nodes.bn]
op = "batchnorm"

[nodes.act]
op = "leaky_relu"
negative_slope = 0.1

[nodes.maxp]
op = "maxpool2d"
inputs = "act"
kernel_size = 3
stride = 2
padding = 1

[nodes.avgp]
op = "avgpool2d"
inputs = "act"
kernel_size = [3, 2]
stride = [2, 2]
padding = [1, 1]

[nodes.sig]
op = "sigmoid"
inputs = "maxp"

[nodes.th]
op = "tanh"
inputs = "avgp"

[nodes.sum]
op = "add"
inputs = ["sig", "th", "maxp"]

[nodes.channels]
op = "concat"
inputs = ["sum", "th"]

[nodes.wide]
op = "concat"
inputs = ["channels", "channels"]
axis = 2

[nodes.sm]
op = "softmax"

[nodes.gap]
op = "global_avgpool"

[nodes.relu]
op = "relu"

[nodes.drop]
op = "dropout"
p = 0.25

[nodes.bn1d]
op = "batchnorm"
momentum = 0.2

[nodes.head]
op = "linear"
out_features = 5

[nodes.flat]
op = "flatten"
inputs = "th"

[nodes.side]
op = "linear"
out_features = 5
bias = false

[nodes.out]
op = "add"
inputs = ["head", "side"]
"""


def torch_network(net: netspec.Network, x: np.ndarray, train: bool, rng_state: dict):
    """Run ``net``'s plan in torch with copies of its parameters and buffers. Returns the
    output, the input leaf, and the parameter leaves and buffers by netspec key."""
    replay = np.random.default_rng()
    replay.bit_generator.state = rng_state
    tx = _leaf(x)
    tparams = {key: _leaf(value) for key, value in net.params.items()}
    tbuffers = {key: torch.tensor(value) for key, value in net.buffers.items()}
    values: dict[str, Any] = {}
    for node_id, node in net.plan.nodes.items():
        xs = [tx] if node.op_name == "input" else [values[s] for s in node.inputs]
        mask = None
        if node.op_name in ("dropout", "stochastic_depth") and train:
            # the same draw from the same generator state netspec's forward made
            ones = np.ones((x.shape[0], *node.input_shapes[0]))
            mask = node.op.forward([ones], {}, {}, Context(train=True, rng=replay))[0]
        params = {name: tparams[param_key(node_id, name)] for name in node.param_specs}
        buffers = {name: tbuffers[param_key(node_id, name)] for name in node.buffer_specs}
        values[node_id] = torch_apply(node.op_name, node.params, xs, params, buffers, train,
                                      mask, batch=x.shape[0])
    return values[net.plan.output], tx, tparams, tbuffers


# the convolutional-network ops (issue 24): a mobile block with squeeze-and-excitation
EVERY_CONV_OP = """
[nodes.image]
op = "input"
shape = [3, 10, 9]

[nodes.expand]
op = "conv2d"
out_channels = 8
kernel_size = 1

[nodes.act6]
op = "relu6"

[nodes.depthwise]
op = "conv2d"
out_channels = 8
kernel_size = 3
padding = 2
dilation = 2
groups = 8

[nodes.swish]
op = "silu"

[nodes.squeeze]
op = "adaptive_avgpool2d"
output_size = 1

[nodes.reduce]
op = "conv2d"
out_channels = 4
kernel_size = 1

[nodes.clip]
op = "hardtanh"
min_val = -0.5
max_val = 2.0

[nodes.excite]
op = "conv2d"
out_channels = 8
kernel_size = 1

[nodes.gate]
op = "hardsigmoid"

[nodes.scaled]
op = "mul"
inputs = ["gate", "swish"]

[nodes.grouped]
op = "conv2d"
out_channels = 6
kernel_size = 3
padding = 1
groups = 2

[nodes.hs]
op = "hardswish"

[nodes.project]
op = "conv2d"
inputs = "scaled"
out_channels = 6
kernel_size = 1

[nodes.drop]
op = "stochastic_depth"
p = 0.4

[nodes.sum]
op = "add"
inputs = ["drop", "hs"]

[nodes.sum_mean]
op = "adaptive_avgpool2d"
output_size = 1

[nodes.shifted]
op = "add"
inputs = ["sum", "sum_mean"]

[nodes.up]
op = "upsample"
scale_factor = [2, 1]

[nodes.tconv]
op = "conv_transpose2d"
out_channels = 4
kernel_size = 3
stride = 2
padding = 1
output_padding = 1
groups = 2

[nodes.pooled]
op = "adaptive_avgpool2d"
output_size = [3, 2]

[nodes.upb]
op = "upsample"
scale_factor = 2
mode = "bilinear"

[nodes.smooth]
op = "gelu"

[nodes.smooth_tanh]
op = "gelu"
approximate = "tanh"

[nodes.flat]
op = "flatten"

[nodes.fc]
op = "linear"
out_features = 5

[nodes.out]
op = "log_softmax"
"""

NETWORKS = {"resnet_mini": lambda: netspec.compile("resnet_mini", seed=0, dtype="float64"),
            "every_op": lambda: build_network(EVERY_OP, seed=0),
            "every_tensor_op": lambda: build_network(EVERY_TENSOR_OP, seed=0),
            "every_conv_op": lambda: build_network(EVERY_CONV_OP, seed=0)}


def test_the_every_op_networks_use_every_registered_op() -> None:
    covered = {node.op_name for text in (EVERY_OP, EVERY_TENSOR_OP, EVERY_CONV_OP)
               for node in build_network(text, seed=0).plan.nodes.values()}
    assert covered == set(REGISTRY), "the every-op networks must use every registered op"


@pytest.mark.parametrize("name", list(NETWORKS))
def test_network_matches_torch_in_training_then_inference(name: str) -> None:
    net = NETWORKS[name]()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, *net.shapes[net.plan.inputs[0]]))
    for train in (True, False):
        rng_state = net.rng.bit_generator.state
        # torch reads the buffers as they were before this pass
        ty, tx, tparams, tbuffers = torch_network(net, x, train, rng_state)
        y = net.forward(x, train=train, keep=True)
        dy = rng.normal(size=y.shape)
        dx = net.backward(dy)
        ty.backward(torch.from_numpy(dy))
        assert relative_error(y, ty) < TOLERANCE, f"output, train={train}"
        assert relative_error(dx, tx.grad) < TOLERANCE, f"input gradient, train={train}"
        # a thousandth of the network's largest gradient: the scale of "zero" for a tensor
        floor = 1e-3 * max(float(leaf.grad.abs().max()) for leaf in tparams.values())
        for key, leaf in tparams.items():
            error = relative_error(net.grads[key], leaf.grad, floor)
            assert error < TOLERANCE, f"{key}, train={train}"
        for key, buffer in tbuffers.items():
            assert relative_error(net.buffers[key], buffer) < TOLERANCE, f"{key}, train={train}"


# ---- the loss ----

@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.35])
@pytest.mark.parametrize("scale", [1.0, 300.0])
def test_softmax_cross_entropy_matches_torch(smoothing: float, scale: float) -> None:
    rng = np.random.default_rng(int(scale) + int(100 * smoothing))
    logits = rng.normal(size=(7, 10)) * scale
    labels = rng.integers(0, 10, size=7)
    loss, grad = netspec.softmax_cross_entropy(logits, labels, label_smoothing=smoothing)
    tlogits = _leaf(logits)
    tloss = F.cross_entropy(tlogits, torch.from_numpy(labels), label_smoothing=smoothing)
    tloss.backward()
    assert abs(loss - tloss.item()) <= TOLERANCE * abs(tloss.item())
    assert relative_error(grad, tlogits.grad) < TOLERANCE
