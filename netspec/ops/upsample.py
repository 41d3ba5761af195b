"""Upsampling of (C, H, W) by integer factors, as PyTorch's ``nn.Upsample``: ``nearest``
repeats each cell, ``bilinear`` (``align_corners=False``) interpolates between the four
nearest cells at PyTorch's source positions ``(dst + 0.5) / scale - 0.5`` (clamped at 0).

Both are separable: nearest is a repeat along each axis (its backward sums the repeated
blocks), bilinear two matrix products with interpolation matrices, one per axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field, conint, conlist

from netspec.common.lazy import lazy_import
from netspec.ops.base import Array, Context, Grads, NodeParams, Op, register
from netspec.ops.shapes import Shape, numel, pair, require_rank

np = lazy_import("numpy")

Factor = conint(ge=1, le=64)
FactorPair = conlist(Factor, min_length=2, max_length=2)


def bilinear_matrix(size: int, scale: int, dtype: np.dtype) -> Array:
    """The (size*scale, size) matrix of PyTorch's linear interpolation along one axis
    (align_corners=False)."""
    out = size * scale
    source = np.maximum((np.arange(out) + 0.5) / scale - 0.5, 0.0)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, size - 1)
    weight_high = source - low
    matrix = np.zeros((out, size), dtype)
    rows = np.arange(out)
    np.add.at(matrix, (rows, low), 1.0 - weight_high)
    np.add.at(matrix, (rows, high), weight_high)
    return matrix


class UpsampleParams(NodeParams):
    op: Literal["upsample"]
    scale_factor: Factor | FactorPair = Field(
        description="Integer factor of each spatial axis: n, or [sh, sw] (1 to 64).")
    mode: Literal["nearest", "bilinear"] = Field(
        default="nearest", description="'nearest' repeats cells; 'bilinear' interpolates "
        "(align_corners=False).")


@register
class Upsample(Op):
    """(C, H, W) -> (C, H*sh, W*sw)."""

    name = "upsample"
    Params = UpsampleParams

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        require_rank(in_shapes[0], (3,), "upsample input")
        channels, height, width = in_shapes[0]
        scale_h, scale_w = pair(self.p.scale_factor)
        return (channels, height * scale_h, width * scale_w)

    def flops(self, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        # bilinear: four products and three sums per output cell
        return 0 if self.p.mode == "nearest" else 7 * numel(out_shape)

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, tuple]:
        x = xs[0]
        scale_h, scale_w = pair(self.p.scale_factor)
        if self.p.mode == "nearest":
            return x.repeat(scale_h, axis=2).repeat(scale_w, axis=3), (None, None)
        rows = bilinear_matrix(x.shape[2], scale_h, x.dtype)
        columns = bilinear_matrix(x.shape[3], scale_w, x.dtype)
        return rows @ (x @ columns.T), (rows, columns)

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        rows, columns = cache
        if rows is None:
            scale_h, scale_w = pair(self.p.scale_factor)
            n, c, out_h, out_w = dy.shape
            blocks = dy.reshape(n, c, out_h // scale_h, scale_h, out_w // scale_w, scale_w)
            return [blocks.sum(axis=(3, 5))], {}
        return [rows.T @ dy @ columns], {}
