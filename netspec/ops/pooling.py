"""Max, average and global average pooling over the spatial axes of (C, H, W)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import model_validator

from netspec.ops.base import Array, Context, Grads, NodeParams, Op, register
from netspec.ops.conv import (
    NonNegativeSize,
    PaddingPair,
    PositiveSize,
    SizePair,
    pad_hw,
    scatter_windows,
    windows,
)
from netspec.shapes import Shape, numel, pair, require_rank, window_output_hw


class _PoolParams(NodeParams):
    kernel_size: PositiveSize | SizePair
    stride: PositiveSize | SizePair | None = None
    padding: NonNegativeSize | PaddingPair = 0

    @model_validator(mode="after")
    def _padding_at_most_half_kernel(self) -> _PoolParams:
        kernel, padding = pair(self.kernel_size), pair(self.padding)
        if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
            raise ValueError(
                f"padding {list(padding)} must be at most half the kernel size {list(kernel)}"
            )
        return self


class _WindowPool(Op):
    """Shared geometry of max and average pooling; stride defaults to the kernel size."""

    @property
    def geometry(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        kernel = pair(self.p.kernel_size)
        stride = kernel if self.p.stride is None else pair(self.p.stride)
        return kernel, stride, pair(self.p.padding)

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        shape = in_shapes[0]
        require_rank(shape, (3,), f"{self.name} input")
        kernel, stride, padding = self.geometry
        return (shape[0], *window_output_hw(shape[1:], kernel, stride, padding))

    def flops(self, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        kernel_h, kernel_w = self.geometry[0]
        return kernel_h * kernel_w * numel(out_shape)


class MaxPoolParams(_PoolParams):
    op: Literal["maxpool2d"]


@register
class MaxPool2d(_WindowPool):
    """Max pooling; padding counts as -inf, so a padded cell never wins."""

    name = "maxpool2d"
    Params = MaxPoolParams

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, tuple]:
        kernel, stride, padding = self.geometry
        padded = pad_hw(xs[0], padding, value=-np.inf)
        win = windows(padded, kernel, stride)
        flat = win.reshape(*win.shape[:4], -1)
        winner = flat.argmax(axis=-1)
        y = np.take_along_axis(flat, winner[..., None], axis=-1)[..., 0]
        return y, (winner, padded.shape)

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        kernel, stride, padding = self.geometry
        winner, padded_shape = cache
        offsets = np.arange(kernel[0] * kernel[1]).reshape(kernel)
        dwin = np.where(winner[..., None, None] == offsets, dy[..., None, None], 0)
        return [scatter_windows(dwin.astype(dy.dtype), padded_shape, stride, padding)], {}


class AvgPoolParams(_PoolParams):
    op: Literal["avgpool2d"]


@register
class AvgPool2d(_WindowPool):
    """Average pooling; padded zeros count in the average (PyTorch's count_include_pad)."""

    name = "avgpool2d"
    Params = AvgPoolParams

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, Shape]:
        kernel, stride, padding = self.geometry
        padded = pad_hw(xs[0], padding)
        return windows(padded, kernel, stride).mean(axis=(-2, -1)), padded.shape

    def backward(self, cache: Shape, dy: Array) -> tuple[list[Array | None], Grads]:
        kernel, stride, padding = self.geometry
        share = dy / (kernel[0] * kernel[1])
        dwin = np.broadcast_to(share[..., None, None], (*dy.shape, *kernel))
        return [scatter_windows(dwin, cache, stride, padding)], {}


class GlobalAvgPoolParams(NodeParams):
    op: Literal["global_avgpool"]


@register
class GlobalAvgPool(Op):
    """(C, H, W) -> (C,): the mean of each channel."""

    name = "global_avgpool"
    Params = GlobalAvgPoolParams

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        require_rank(in_shapes[0], (3,), "global_avgpool input")
        return (in_shapes[0][0],)

    def flops(self, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        return numel(in_shapes[0])

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, Shape]:
        return xs[0].mean(axis=(2, 3)), xs[0].shape

    def backward(self, cache: Shape, dy: Array) -> tuple[list[Array | None], Grads]:
        n, c, h, w = cache
        dx = np.broadcast_to((dy / (h * w))[:, :, None, None], cache)
        return [np.ascontiguousarray(dx)], {}
