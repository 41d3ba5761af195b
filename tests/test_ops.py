"""Every registered op through the shared layer harness, plus the behaviours a table row
cannot express (dropout statistics, running statistics by hand, extreme inputs), and
negative controls showing that the harness catches wrong ops."""

from __future__ import annotations

import numpy as np
import pytest
from layer_harness import (
    REFERENCES,
    ForwardMismatch,
    GradientMismatch,
    OpCase,
    ShapeMismatch,
    build_op,
    run_layer_test,
    run_op,
)
from tensor_cases import LAYER_CASES as TENSOR_LAYER_CASES

from netspec.ops import REGISTRY

IMAGE = (2, 3, 6, 5)

CASES = [
    OpCase("input", {"shape": [3, 4]}, ((2, 3, 4),)),
    OpCase("input", {"shape": [5]}, ((3, 5),)),
    # conv2d
    OpCase("conv2d", {"out_channels": 4, "kernel_size": 3}, (IMAGE,)),
    OpCase("conv2d", {"out_channels": 2, "kernel_size": 3, "stride": 2, "padding": 1},
           ((2, 2, 7, 6),)),
    OpCase("conv2d", {"out_channels": 3, "kernel_size": [3, 2], "stride": [2, 1],
                      "padding": [1, 0]}, ((2, 3, 7, 5),), seed=1),
    OpCase("conv2d", {"out_channels": 3, "kernel_size": 2, "bias": False}, (IMAGE,)),
    OpCase("conv2d", {"out_channels": 2, "kernel_size": 1}, (IMAGE,)),
    OpCase("conv2d", {"out_channels": 2, "kernel_size": [6, 5]}, (IMAGE,)),
    OpCase("conv2d", {"out_channels": 2, "kernel_size": 2, "stride": 3}, ((2, 2, 8, 7),)),
    OpCase("conv2d", {"out_channels": 2, "kernel_size": 3, "padding": 2}, ((1, 1, 3, 4),)),
    OpCase("conv2d", {"out_channels": 3, "kernel_size": 3, "padding": 1}, ((2, 4, 5, 4),),
           channels_last=True),
    OpCase("conv2d", {"out_channels": 2, "kernel_size": [2, 3], "stride": [1, 2]},
           ((2, 3, 5, 7),), channels_last=True),
    # dx by rows: padding wider than the kernel (rows whose window misses dy entirely), a
    # phase with no kernel rows (kernel 1, stride 2), phases of unequal length
    OpCase("conv2d", {"out_channels": 2, "kernel_size": 2, "stride": [3, 1], "padding": 3},
           ((1, 2, 4, 3),)),
    OpCase("conv2d", {"out_channels": 3, "kernel_size": 1, "stride": 2}, ((2, 2, 5, 5),)),
    OpCase("conv2d", {"out_channels": 2, "kernel_size": [5, 3], "stride": [3, 2],
                      "padding": [2, 1]}, ((2, 2, 9, 6),), channels_last=True),
    # same-size and larger outputs with no more channels: dx as a convolution of dy
    OpCase("conv2d", {"out_channels": 2, "kernel_size": [3, 5], "padding": [1, 2]},
           ((2, 3, 4, 6),), seed=2),
    OpCase("conv2d", {"out_channels": 1, "kernel_size": 3, "padding": 2, "bias": False},
           ((1, 2, 3, 4),)),
    # conv2d groups and dilation: depthwise (with and without a channel multiplier),
    # grouped, dilated dense, dilated depthwise with stride and padding, both layouts
    OpCase("conv2d", {"out_channels": 4, "kernel_size": 3, "groups": 4, "padding": 1},
           ((2, 4, 5, 6),)),
    OpCase("conv2d", {"out_channels": 6, "kernel_size": 3, "groups": 3, "stride": 2},
           ((2, 3, 7, 6),), seed=1),
    OpCase("conv2d", {"out_channels": 4, "kernel_size": [3, 2], "groups": 2,
                      "padding": [1, 0], "bias": False}, ((2, 4, 5, 4),)),
    OpCase("conv2d", {"out_channels": 6, "kernel_size": 1, "groups": 3}, ((2, 6, 3, 4),)),
    OpCase("conv2d", {"out_channels": 3, "kernel_size": 3, "dilation": 2, "padding": 2},
           ((2, 2, 6, 5),)),
    OpCase("conv2d", {"out_channels": 3, "kernel_size": 3, "groups": 3, "dilation": [2, 1],
                      "stride": [1, 2], "padding": [2, 1]}, ((2, 3, 6, 7),),
           channels_last=True),
    OpCase("conv2d", {"out_channels": 4, "kernel_size": 2, "groups": 2, "dilation": 3},
           ((1, 4, 5, 5),), channels_last=True),
    # maxpool2d
    OpCase("maxpool2d", {"kernel_size": 2}, ((2, 3, 6, 6),)),
    OpCase("maxpool2d", {"kernel_size": 2}, ((2, 2, 7, 5),)),
    OpCase("maxpool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, ((2, 2, 7, 7),)),
    OpCase("maxpool2d", {"kernel_size": [3, 2], "stride": [2, 1], "padding": [1, 0]},
           ((2, 2, 7, 5),)),
    OpCase("maxpool2d", {"kernel_size": 2, "stride": 1}, (IMAGE,)),
    OpCase("maxpool2d", {"kernel_size": 2, "stride": 3}, ((2, 2, 8, 7),)),
    OpCase("maxpool2d", {"kernel_size": [2, 4], "padding": [1, 2]}, ((1, 2, 5, 6),)),
    # gaps between windows that still reach the far edge: (9 - 2) // 3 + 1 = 3 windows of 3
    OpCase("maxpool2d", {"kernel_size": 2, "stride": 3}, ((2, 2, 9, 9),)),
    OpCase("maxpool2d", {"kernel_size": 2}, ((2, 3, 6, 4),), channels_last=True),
    OpCase("maxpool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, ((2, 3, 5, 5),),
           channels_last=True),
    # avgpool2d
    OpCase("avgpool2d", {"kernel_size": 2}, ((2, 3, 6, 6),)),
    OpCase("avgpool2d", {"kernel_size": 2}, ((2, 2, 7, 5),)),
    OpCase("avgpool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, ((2, 2, 7, 7),)),
    OpCase("avgpool2d", {"kernel_size": [3, 2], "stride": [2, 1], "padding": [1, 0]},
           ((2, 2, 7, 5),)),
    OpCase("avgpool2d", {"kernel_size": 2, "stride": 1}, (IMAGE,)),
    OpCase("avgpool2d", {"kernel_size": 2, "stride": 3}, ((2, 2, 8, 7),)),
    OpCase("avgpool2d", {"kernel_size": [2, 4], "padding": [1, 2]}, ((1, 2, 5, 6),)),
    OpCase("avgpool2d", {"kernel_size": 2, "stride": 3}, ((2, 2, 9, 9),)),
    OpCase("avgpool2d", {"kernel_size": 2}, ((2, 3, 6, 4),), channels_last=True),
    OpCase("avgpool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, ((2, 3, 5, 5),),
           channels_last=True),
    # global_avgpool
    OpCase("global_avgpool", {}, ((2, 3, 4, 5),)),
    OpCase("global_avgpool", {}, ((3, 2, 1, 1),)),
    OpCase("global_avgpool", {}, ((2, 3, 4, 5),), channels_last=True),
    # linear
    OpCase("linear", {"out_features": 3}, ((4, 5),)),
    OpCase("linear", {"out_features": 4, "bias": False}, ((2, 6),)),
    OpCase("linear", {"out_features": 1}, ((3, 1),)),
    # flatten
    OpCase("flatten", {}, ((2, 3, 4, 5),)),
    OpCase("flatten", {}, ((2, 3, 4),)),
    OpCase("flatten", {}, ((2, 6),)),
    OpCase("flatten", {}, ((2, 3, 4, 5),), channels_last=True),
    # element-wise activations
    OpCase("relu", {}, ((2, 3, 4, 5),)),
    OpCase("relu", {}, ((3, 7),)),
    OpCase("relu", {}, ((2, 3, 4, 5),), channels_last=True),
    OpCase("leaky_relu", {}, ((2, 3, 4, 5),)),
    OpCase("leaky_relu", {"negative_slope": 0.2}, ((3, 7),)),
    OpCase("leaky_relu", {"negative_slope": 0.0}, ((3, 7),)),
    OpCase("sigmoid", {}, ((2, 3, 4, 5),)),
    OpCase("sigmoid", {}, ((3, 7),)),
    OpCase("tanh", {}, ((2, 3, 4, 5),)),
    OpCase("tanh", {}, ((3, 7),)),
    # softmax: over features, or over channels of (C, H, W)
    OpCase("softmax", {}, ((3, 5),)),
    OpCase("softmax", {}, ((2, 4, 3, 2),)),
    OpCase("softmax", {}, ((2, 4, 3, 2),), channels_last=True),
    # dropout: identity in inference, inverted scaling with a seeded mask in training
    OpCase("dropout", {}, ((2, 3, 4, 5),)),
    OpCase("dropout", {"p": 0.5}, ((2, 3, 4, 5),), train=True),
    OpCase("dropout", {"p": 0.25}, ((4, 20),), seed=3, train=True),
    OpCase("dropout", {"p": 0.0}, ((3, 7),), train=True),
    # batchnorm on (C, H, W) and (F,), training and inference
    OpCase("batchnorm", {}, ((3, 2, 3, 4),), train=True),
    OpCase("batchnorm", {}, ((3, 2, 3, 4),)),
    OpCase("batchnorm", {}, ((5, 4),), train=True),
    OpCase("batchnorm", {}, ((5, 4),)),
    OpCase("batchnorm", {"momentum": 0.3, "eps": 1e-3}, ((4, 3, 2, 2),), seed=2, train=True),
    OpCase("batchnorm", {"momentum": 1.0}, ((2, 3),), train=True),
    OpCase("batchnorm", {}, ((3, 2, 3, 4),), train=True, channels_last=True),
    # merges
    OpCase("add", {}, ((2, 3, 4), (2, 3, 4))),
    OpCase("add", {}, ((2, 3, 2, 2), (2, 3, 2, 2), (2, 3, 2, 2))),
    # broadcasting, as PyTorch's +: a per-channel term, a row, axes of 1 in every input
    OpCase("add", {}, ((2, 3, 1, 1), (2, 3, 4, 5))),
    OpCase("add", {}, ((2, 5, 8), (2, 1, 8))),
    OpCase("add", {}, ((2, 1, 4, 1), (2, 3, 1, 5), (2, 3, 4, 5))),
    OpCase("add", {}, ((2, 3, 4, 5), (2, 3, 1, 1)), channels_last=True),
    OpCase("concat", {}, ((2, 2, 3, 4), (2, 3, 3, 4))),
    OpCase("concat", {"axis": 0}, ((2, 3), (2, 1), (2, 2))),
    OpCase("concat", {"axis": 1}, ((2, 2, 3, 4), (2, 2, 1, 4))),
    OpCase("concat", {"axis": 2}, ((2, 2, 3, 1), (2, 2, 3, 2), (2, 2, 3, 3))),
    OpCase("concat", {}, ((2, 2, 3, 4), (2, 3, 3, 4)), channels_last=True),
    OpCase("add", {}, ((2, 3, 2, 2), (2, 3, 2, 2)), channels_last=True),
    # tensors of any rank: tests/tensor_cases.py
    *TENSOR_LAYER_CASES,

    # ---- the convolutional-network ops (issue 24) ----
    # mul: equal shapes, the excitation gate (C, 1, 1) x (C, H, W) either way round,
    # broadcasting on both sides, vectors
    OpCase("mul", {}, ((2, 3, 4, 5), (2, 3, 4, 5))),
    OpCase("mul", {}, ((2, 3, 1, 1), (2, 3, 4, 5))),
    OpCase("mul", {}, ((2, 3, 4, 5), (2, 3, 1, 1)), channels_last=True),
    OpCase("mul", {}, ((2, 1, 4, 1), (2, 3, 1, 5))),
    OpCase("mul", {}, ((3, 4), (3, 1))),
    # adaptive_avgpool2d: global keeping 1x1, dividing sizes, overlapping windows (7 -> 3,
    # 5 -> 4), an output larger than the input, both layouts
    OpCase("adaptive_avgpool2d", {"output_size": 1}, ((2, 3, 4, 5),)),
    OpCase("adaptive_avgpool2d", {"output_size": 1}, ((2, 3, 4, 5),), channels_last=True),
    OpCase("adaptive_avgpool2d", {"output_size": 2}, ((2, 3, 6, 4),)),
    OpCase("adaptive_avgpool2d", {"output_size": [3, 4]}, ((2, 2, 7, 5),)),
    OpCase("adaptive_avgpool2d", {"output_size": [4, 2]}, ((1, 2, 3, 5),), channels_last=True),
    # clipping: both bounds reached, relu6 around 0
    OpCase("hardtanh", {}, ((2, 3, 4, 5),)),
    OpCase("hardtanh", {"min_val": -0.5, "max_val": 1.5}, ((3, 7),)),
    OpCase("relu6", {}, ((2, 3, 4, 5),)),
    OpCase("relu6", {}, ((2, 3, 4, 5),), channels_last=True),
    OpCase("silu", {}, ((2, 3, 4, 5),)),
    OpCase("silu", {}, ((3, 7),)),
    OpCase("gelu", {}, ((2, 3, 4, 5),)),
    OpCase("gelu", {"approximate": "tanh"}, ((2, 3, 4, 5),)),
    OpCase("gelu", {}, ((3, 7),)),
    OpCase("hardswish", {}, ((2, 3, 4, 5),)),
    OpCase("hardswish", {}, ((3, 7),)),
    OpCase("hardsigmoid", {}, ((2, 3, 4, 5),)),
    OpCase("hardsigmoid", {}, ((3, 7),)),
    # log_softmax over classes, over channels of an image, over the last axis
    OpCase("log_softmax", {}, ((3, 5),)),
    OpCase("log_softmax", {"dim": 1}, ((2, 4, 3, 2),), channels_last=True),
    OpCase("log_softmax", {"dim": -1}, ((2, 4, 3, 2),)),
    OpCase("log_softmax", {"dim": 2}, ((2, 3, 4),)),
    # stochastic_depth: identity in inference, whole samples kept or dropped in training
    OpCase("stochastic_depth", {"p": 0.5}, ((4, 3, 2, 2),)),
    OpCase("stochastic_depth", {"p": 0.5}, ((6, 3, 2, 2),), train=True),
    OpCase("stochastic_depth", {"p": 0.2}, ((5, 7),), seed=3, train=True),
    OpCase("stochastic_depth", {"p": 0.0}, ((3, 7),), train=True),
    # conv_transpose2d: U-Net's 2x2 stride 2, a 3x3 stride 2 with padding and
    # output_padding, grouped and dilated, output_padding below the dilation, both layouts
    OpCase("conv_transpose2d", {"out_channels": 3, "kernel_size": 2, "stride": 2},
           ((2, 4, 3, 4),)),
    OpCase("conv_transpose2d", {"out_channels": 2, "kernel_size": 3, "stride": 2,
                                "padding": 1, "output_padding": 1}, ((2, 3, 4, 3),),
           channels_last=True),
    OpCase("conv_transpose2d", {"out_channels": 4, "kernel_size": [3, 2], "stride": [1, 2],
                                "groups": 2, "bias": False}, ((2, 4, 3, 3),)),
    OpCase("conv_transpose2d", {"out_channels": 2, "kernel_size": 3, "dilation": 2,
                                "padding": 2, "output_padding": [1, 0]}, ((1, 2, 4, 4),)),
    OpCase("conv_transpose2d", {"out_channels": 2, "kernel_size": 1, "padding": 1,
                                "output_padding": [0, 2], "stride": 3}, ((2, 2, 3, 3),)),
    # upsample: nearest and bilinear, square and unequal factors, both layouts
    OpCase("upsample", {"scale_factor": 2}, ((2, 3, 3, 4),)),
    OpCase("upsample", {"scale_factor": [3, 1]}, ((2, 2, 2, 3),), channels_last=True),
    OpCase("upsample", {"scale_factor": 2, "mode": "bilinear"}, ((2, 2, 3, 4),)),
    OpCase("upsample", {"scale_factor": [3, 2], "mode": "bilinear"}, ((1, 2, 4, 3),),
           channels_last=True),
    OpCase("upsample", {"scale_factor": 4, "mode": "bilinear"}, ((1, 1, 1, 2),)),
    # pooling ceil_mode: GoogLeNet's 3x3 stride 2 (partial last windows), a last window that
    # would start in the padding (dropped), windows tiling exactly (no overhang); and
    # count_include_pad=false at the edges and with an overhang
    OpCase("maxpool2d", {"kernel_size": 3, "stride": 2, "ceil_mode": True}, ((2, 2, 8, 7),)),
    OpCase("maxpool2d", {"kernel_size": 2, "stride": 2, "padding": 1, "ceil_mode": True},
           ((2, 2, 5, 6),), channels_last=True),
    OpCase("maxpool2d", {"kernel_size": 2, "ceil_mode": True}, ((2, 2, 6, 6),)),
    OpCase("maxpool2d", {"kernel_size": [3, 2], "stride": [2, 3], "ceil_mode": True},
           ((1, 2, 6, 7),)),
    OpCase("avgpool2d", {"kernel_size": 3, "stride": 2, "ceil_mode": True}, ((2, 2, 8, 7),)),
    OpCase("avgpool2d", {"kernel_size": 3, "stride": 2, "padding": 1,
                         "count_include_pad": False}, ((2, 2, 7, 6),)),
    OpCase("avgpool2d", {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
           ((2, 2, 6, 6),), channels_last=True),
    OpCase("avgpool2d", {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
                         "count_include_pad": False}, ((2, 2, 6, 7),)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_op_case(case: OpCase) -> None:
    report = run_layer_test(case)
    assert report.gradients.checked, "no gradient was checked"


def test_every_registered_op_has_cases_and_a_reference() -> None:
    covered = {case.op for case in CASES}
    assert set(REGISTRY) - covered == set(), "registered ops without cases in CASES"
    assert set(REGISTRY) - set(REFERENCES) == set(), "registered ops without a reference"


# ---- behaviours beyond one forward/backward ----


def _dropout(x: np.ndarray, p: float, seed: int, train: bool = True) -> np.ndarray:
    return run_op(build_op("dropout", {"p": p}), [x], {}, {}, train, seed)[0]


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_keeps_one_minus_p_and_preserves_the_mean(p: float) -> None:
    x = np.ones((100, 1000))
    y = _dropout(x, p, seed=0)
    kept = y != 0
    # 1e5 Bernoulli draws: the kept fraction is within ~5 standard deviations
    assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / x.size)
    np.testing.assert_allclose(y[kept], 1 / (1 - p))
    assert abs(y.mean() - 1.0) < 0.05


def test_dropout_mask_is_fixed_by_the_generator() -> None:
    x = np.ones((4, 50))
    np.testing.assert_array_equal(_dropout(x, 0.5, seed=7), _dropout(x, 0.5, seed=7))
    assert not np.array_equal(_dropout(x, 0.5, seed=7), _dropout(x, 0.5, seed=8))
    np.testing.assert_array_equal(_dropout(x, 0.5, seed=7, train=False), x)


def test_batchnorm_running_statistics_by_hand() -> None:
    # batch [1, 3]: mean 2, biased variance 1 (used to normalise), unbiased variance 2
    op = build_op("batchnorm", {"momentum": 0.1})
    buffers = {"running_mean": np.zeros(1), "running_var": np.ones(1)}
    params = {"weight": np.ones(1), "bias": np.zeros(1)}
    y, _, after = run_op(op, [np.array([[1.0], [3.0]])], params, buffers, True, 0)
    np.testing.assert_allclose(y[:, 0], [-1 / np.sqrt(1 + 1e-5), 1 / np.sqrt(1 + 1e-5)])
    np.testing.assert_allclose(after["running_mean"], [0.2])
    np.testing.assert_allclose(after["running_var"], [0.9 * 1.0 + 0.1 * 2.0])
    y_eval, _, unchanged = run_op(op, [np.array([[1.0], [3.0]])], params, after, False, 0)
    np.testing.assert_allclose(y_eval[:, 0], (np.array([1.0, 3.0]) - 0.2) / np.sqrt(1.1 + 1e-5))
    np.testing.assert_array_equal(unchanged["running_var"], after["running_var"])


@pytest.mark.parametrize("op_name", ["sigmoid", "tanh", "softmax", "relu", "leaky_relu"])
def test_extreme_inputs_stay_finite(op_name: str) -> None:
    x = np.array([[-1000.0, 0.0, 1000.0], [800.0, 800.0, -800.0]])
    op = build_op(op_name)
    y, cache, _ = run_op(op, [x], {}, {}, False, 0)
    (dx,), _ = op.backward(cache, np.ones_like(x))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    if op_name == "softmax":
        np.testing.assert_allclose(y, [[0, 0, 1], [0.5, 0.5, 0]], atol=1e-300)


# ---- negative controls: the same harness must reject wrong ops ----

Relu, Linear, LeakyRelu, Conv2d = (REGISTRY[n] for n in ("relu", "linear", "leaky_relu",
                                                          "conv2d"))


class MaskLessRelu(Relu):
    def backward(self, cache, dy):
        return [dy], {}


class UnzeroedRelu(Relu):
    """Writes the gradient only where the input was positive, into uninitialised memory."""

    def backward(self, cache, dy):
        dx = np.empty_like(dy)
        np.copyto(dx, dy, where=cache > 0)
        return [dx], {}


class TransposedWeightGradLinear(Linear):
    def backward(self, cache, dy):
        dxs, grads = super().backward(cache, dy)
        return dxs, {**grads, "weight": grads["weight"].T.copy()}


class ScaledWeightGradLinear(Linear):
    def backward(self, cache, dy):
        dxs, grads = super().backward(cache, dy)
        return dxs, {**grads, "weight": grads["weight"] * 1.001}


class SlopeLessLeakyRelu(LeakyRelu):
    def forward(self, xs, params, buffers, ctx):
        y, cache = super().forward(xs, params, buffers, ctx)
        return np.maximum(xs[0], 0), cache


class FlippedKernelConv(Conv2d):
    def forward(self, xs, params, buffers, ctx):
        flipped = {**params, "weight": params["weight"][:, :, ::-1, ::-1].copy()}
        return super().forward(xs, flipped, buffers, ctx)


class UngroupedWeightGradConv(Conv2d):
    """A grouped convolution whose weight gradient lands on the wrong group's rows."""

    def backward(self, cache, dy):
        dxs, grads = super().backward(cache, dy)
        return dxs, {**grads, "weight": np.roll(grads["weight"], 1, axis=0)}


class ShapeLyingConv(Conv2d):
    def output_shape(self, in_shapes):
        channels, height, width = super().output_shape(in_shapes)
        return (channels, height + 1, width)


SABOTAGE = [
    ("relu", MaskLessRelu, OpCase("relu", {}, ((2, 3, 4),)), GradientMismatch),
    ("relu", UnzeroedRelu, OpCase("relu", {}, ((2, 3, 4, 5),)), GradientMismatch),
    ("relu", UnzeroedRelu, OpCase("relu", {}, ((3, 7),)), GradientMismatch),
    ("linear", TransposedWeightGradLinear, OpCase("linear", {"out_features": 3}, ((2, 3),)),
     GradientMismatch),
    ("linear", ScaledWeightGradLinear, OpCase("linear", {"out_features": 3}, ((2, 4),)),
     GradientMismatch),
    ("leaky_relu", SlopeLessLeakyRelu, OpCase("leaky_relu", {"negative_slope": 0.1},
                                              ((2, 5),)), ForwardMismatch),
    ("conv2d", FlippedKernelConv, OpCase("conv2d", {"out_channels": 2, "kernel_size": 3},
                                         (IMAGE,)), ForwardMismatch),
    ("conv2d", ShapeLyingConv, OpCase("conv2d", {"out_channels": 2, "kernel_size": 3},
                                      (IMAGE,)), ShapeMismatch),
    ("conv2d", FlippedKernelConv, OpCase("conv2d", {"out_channels": 4, "kernel_size": 3,
                                                    "groups": 4}, ((2, 4, 5, 5),)),
     ForwardMismatch),
    ("conv2d", UngroupedWeightGradConv, OpCase("conv2d", {"out_channels": 4, "kernel_size": 3,
                                                          "groups": 4}, ((2, 4, 5, 5),)),
     GradientMismatch),
    ("conv2d", UngroupedWeightGradConv, OpCase("conv2d", {"out_channels": 4, "kernel_size": 2,
                                                          "groups": 2, "dilation": 2},
                                               ((2, 4, 5, 5),)), GradientMismatch),
]


@pytest.mark.parametrize(("op_name", "broken", "case", "failure"), SABOTAGE,
                         ids=[f"{entry[1].__name__}-{entry[2].id}" for entry in SABOTAGE])
def test_harness_catches_a_broken_op(monkeypatch: pytest.MonkeyPatch, op_name, broken, case,
                                     failure) -> None:
    run_layer_test(case)  # the genuine op passes the very same case
    monkeypatch.setitem(REGISTRY, op_name, broken)
    with pytest.raises(failure):
        run_layer_test(case)
