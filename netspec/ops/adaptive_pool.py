"""Adaptive average pooling of (C, H, W) to a given (OH, OW), as PyTorch's
``AdaptiveAvgPool2d``: output cell ``i`` averages input rows ``floor(i*H/OH)`` to
``ceil((i+1)*H/OH) - 1``, and likewise along the width. ``output_size = 1`` is the global
average pool that keeps its 1x1 axes (the squeeze of squeeze-and-excitation).

The windows are separable, so pooling is two matrix products with averaging matrices, one
per axis: no loop over windows, channels or samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from netspec.common.lazy import lazy_import
from netspec.ops.base import Array, Context, Grads, NodeParams, Op, register
from netspec.ops.conv import PositiveSize, SizePair
from netspec.ops.shapes import Shape, numel, pair, require_rank

np = lazy_import("numpy")


def adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's [start, end) input range of each of ``out`` cells over ``size`` inputs.

    >>> adaptive_windows(5, 3)
    [(0, 2), (1, 4), (3, 5)]
    """
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def averaging_matrix(size: int, out: int, dtype: np.dtype) -> Array:
    """The (out, size) matrix whose row ``i`` averages cell ``i``'s window."""
    matrix = np.zeros((out, size), dtype)
    for row, (start, end) in enumerate(adaptive_windows(size, out)):
        matrix[row, start:end] = 1.0 / (end - start)
    return matrix


class AdaptiveAvgPoolParams(NodeParams):
    op: Literal["adaptive_avgpool2d"]
    output_size: PositiveSize | SizePair = Field(
        description="Output (OH, OW): n for n x n, or [oh, ow]; 1 for a global average that "
        "keeps its 1x1 axes.")


@register
class AdaptiveAvgPool2d(Op):
    """(C, H, W) -> (C, OH, OW), each cell the mean of its adaptive window."""

    name = "adaptive_avgpool2d"
    Params = AdaptiveAvgPoolParams

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        require_rank(in_shapes[0], (3,), "adaptive_avgpool2d input")
        return (in_shapes[0][0], *pair(self.p.output_size))

    def flops(self, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        # every input cell is added into each window holding it (windows may overlap)
        channels, height, width = in_shapes[0]
        out_h, out_w = pair(self.p.output_size)
        rows = sum(end - start for start, end in adaptive_windows(height, out_h))
        columns = sum(end - start for start, end in adaptive_windows(width, out_w))
        return channels * rows * columns + numel(out_shape)

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, tuple]:
        x = xs[0]
        height, width = x.shape[2:]
        out_h, out_w = pair(self.p.output_size)
        if (out_h, out_w) == (1, 1):
            return x.mean(axis=(2, 3), keepdims=True), (x.shape, None, None)
        rows = averaging_matrix(height, out_h, x.dtype)
        columns = averaging_matrix(width, out_w, x.dtype)
        return rows @ (x @ columns.T), (x.shape, rows, columns)

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        shape, rows, columns = cache
        if rows is None:
            n, c, h, w = shape
            return [np.ascontiguousarray(np.broadcast_to(dy / (h * w), shape))], {}
        return [rows.T @ dy @ columns], {}
