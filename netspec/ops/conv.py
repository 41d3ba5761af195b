"""2-D convolution (cross-correlation, as PyTorch) by im2col and one matrix product per pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import Field, conint, conlist

from netspec.ops.base import Array, Context, Grads, Op, ParamSpec, WeightedParams, register
from netspec.shapes import Shape, numel, pair, require_rank, window_output_hw

PositiveSize = conint(gt=0, le=4096)
NonNegativeSize = conint(ge=0, le=4096)
SizePair = conlist(PositiveSize, min_length=2, max_length=2)
PaddingPair = conlist(NonNegativeSize, min_length=2, max_length=2)


class Conv2dParams(WeightedParams):
    op: Literal["conv2d"]
    out_channels: int = Field(gt=0, le=65536)
    kernel_size: PositiveSize | SizePair
    stride: PositiveSize | SizePair = 1
    padding: NonNegativeSize | PaddingPair = 0
    bias: bool = True


def pad_hw(x: Array, padding: tuple[int, int], value: float = 0.0) -> Array:
    """Pad the two spatial axes of an (N, C, H, W) array; no copy when there is no padding."""
    pad_h, pad_w = padding
    if pad_h == 0 and pad_w == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (pad_h, pad_h), (pad_w, pad_w)), constant_values=value)


def windows(x: Array, kernel: tuple[int, int], stride: tuple[int, int]) -> Array:
    """A strided (N, C, OH, OW, KH, KW) view of every kernel window; no data is copied."""
    view = sliding_window_view(x, kernel, axis=(2, 3))
    return view[:, :, :: stride[0], :: stride[1]]


def scatter_windows(
    dwindows: Array, padded_shape: Shape, stride: tuple[int, int], padding: tuple[int, int]
) -> Array:
    """Sum window gradients (N, C, OH, OW, KH, KW) back onto the unpadded input grid.

    Loops over the KH*KW kernel offsets only; each offset adds one strided slab at once.
    """
    _, _, out_h, out_w, kernel_h, kernel_w = dwindows.shape
    dx = np.zeros(padded_shape, dtype=dwindows.dtype)
    stride_h, stride_w = stride
    for i in range(kernel_h):
        for j in range(kernel_w):
            dx[:, :, i : i + stride_h * out_h : stride_h, j : j + stride_w * out_w : stride_w] += (
                dwindows[:, :, :, :, i, j]
            )
    pad_h, pad_w = padding
    return dx[:, :, pad_h : padded_shape[2] - pad_h, pad_w : padded_shape[3] - pad_w]


@register
class Conv2d(Op):
    name = "conv2d"
    Params = Conv2dParams

    @property
    def geometry(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        return pair(self.p.kernel_size), pair(self.p.stride), pair(self.p.padding)

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        shape = in_shapes[0]
        require_rank(shape, (3,), "conv2d input")
        kernel, stride, padding = self.geometry
        out_h, out_w = window_output_hw(shape[1:], kernel, stride, padding)
        return (self.p.out_channels, out_h, out_w)

    def param_specs(self, in_shapes: Sequence[Shape]) -> dict[str, ParamSpec]:
        kernel_h, kernel_w = pair(self.p.kernel_size)
        in_channels = in_shapes[0][0]
        specs = {
            "weight": ParamSpec((self.p.out_channels, in_channels, kernel_h, kernel_w), "weight")
        }
        if self.p.bias:
            specs["bias"] = ParamSpec((self.p.out_channels,), "bias")
        return specs

    def flops(self, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        kernel_h, kernel_w = pair(self.p.kernel_size)
        per_output = 2 * in_shapes[0][0] * kernel_h * kernel_w + int(self.p.bias)
        return per_output * numel(out_shape)

    def forward(
        self, xs: list[Array], params: dict[str, Array], buffers, ctx: Context
    ) -> tuple[Array, tuple]:
        kernel, stride, padding = self.geometry
        x, weight = xs[0], params["weight"]
        n = x.shape[0]
        padded = pad_hw(x, padding)
        win = windows(padded, kernel, stride)
        out_h, out_w = win.shape[2], win.shape[3]
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * out_h * out_w, -1)
        y = cols @ weight.reshape(weight.shape[0], -1).T
        if self.p.bias:
            y += params["bias"]
        y = y.reshape(n, out_h, out_w, -1).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(y), (cols, weight, padded.shape)

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        kernel, stride, padding = self.geometry
        cols, weight, padded_shape = cache
        n, out_c, out_h, out_w = dy.shape
        dy2d = dy.transpose(0, 2, 3, 1).reshape(-1, out_c)
        grads = {"weight": (dy2d.T @ cols).reshape(weight.shape)}
        if self.p.bias:
            grads["bias"] = dy2d.sum(axis=0)
        dcols = dy2d @ weight.reshape(out_c, -1)
        in_c = weight.shape[1]
        dwin = dcols.reshape(n, out_h, out_w, in_c, *kernel).transpose(0, 3, 1, 2, 4, 5)
        return [scatter_windows(dwin, padded_shape, stride, padding)], grads
