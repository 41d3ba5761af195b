"""Transposed 2-D convolution, as PyTorch's ``ConvTranspose2d``: the gradient of a
convolution with respect to its input, used to upsample in decoders and U-Nets.

Weight (in_channels, out_channels/groups, KH, KW), PyTorch's layout. Each input pixel
scatters its channels times the kernel into the output grid: one batched matrix product over
the groups gives every pixel's (out/groups, KH, KW) contribution, then one strided add per
kernel offset lays them onto the grid (col2im); ``padding`` is then cut from both sides and
``output_padding`` rows and columns added at the bottom and right. The backward is a
convolution of dy: im2col of dy's grid and the transposed products.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field, model_validator

from netspec.common.errors import ShapeError
from netspec.common.lazy import lazy_import
from netspec.ops.base import Array, Context, Grads, Op, ParamSpec, WeightedParams, register
from netspec.ops.conv import NonNegativeSize, PaddingPair, PositiveSize, SizePair
from netspec.ops.grouped_conv import im2col, kernel_offsets, offset_view
from netspec.ops.shapes import Shape, numel, pair, require_groups, require_rank

np = lazy_import("numpy")


class ConvTranspose2dParams(WeightedParams):
    op: Literal["conv_transpose2d"]
    out_channels: int = Field(gt=0, le=65536, description="Number of output channels.")
    kernel_size: PositiveSize | SizePair = Field(
        description="Kernel size: n for n x n, or [kh, kw].")
    stride: PositiveSize | SizePair = Field(default=1, description="Step: n, or [sh, sw].")
    padding: NonNegativeSize | PaddingPair = Field(
        default=0, description="Cells cut from each side of the full output: n, or [ph, pw] "
        "(PyTorch's padding, dilation * (kernel_size - 1) - padding of zeros in effect).")
    output_padding: NonNegativeSize | PaddingPair = Field(
        default=0, description="Cells added to the bottom and right of the output, to pick "
        "among the sizes a strided convolution maps to one size: n, or [oh, ow].")
    groups: int = Field(default=1, gt=0, le=65536,
                        description="Channel groups, as conv2d's.")
    dilation: PositiveSize | SizePair = Field(
        default=1, description="Spacing between kernel taps: n, or [dh, dw].")
    bias: bool = Field(default=True, description="Add a learnt bias per output channel.")

    @model_validator(mode="after")
    def _output_padding_below_stride_or_dilation(self) -> ConvTranspose2dParams:
        for extra, stride, dilation in zip(pair(self.output_padding), pair(self.stride),
                                           pair(self.dilation)):
            if extra >= stride and extra >= dilation:
                raise ValueError(
                    f"output_padding {list(pair(self.output_padding))} must be smaller than "
                    f"the stride {list(pair(self.stride))} or the dilation "
                    f"{list(pair(self.dilation))}")
        return self


@register
class ConvTranspose2d(Op):
    """(C, H, W) -> (out_channels, (H-1)*s - 2p + d*(k-1) + output_padding + 1, ...)."""

    name = "conv_transpose2d"
    Params = ConvTranspose2dParams

    @property
    def geometry(self) -> tuple[tuple[int, int], ...]:
        p = self.p
        return (pair(p.kernel_size), pair(p.stride), pair(p.padding), pair(p.output_padding),
                pair(p.dilation))

    def _sizes(self, in_hw: Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """The output (H, W) and the (H, W) of the grid the kernels are laid on."""
        kernel, stride, padding, extra, dilation = self.geometry
        full = [(size - 1) * s + d * (k - 1) + 1
                for size, k, s, d in zip(in_hw, kernel, stride, dilation)]
        out = [f - 2 * p + e for f, p, e in zip(full, padding, extra)]
        grid = [f + max(0, e - p) for f, p, e in zip(full, padding, extra)]
        return (out[0], out[1]), (grid[0], grid[1])

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        shape = in_shapes[0]
        require_rank(shape, (3,), "conv_transpose2d input")
        groups = self.p.groups
        require_groups(shape[0], self.p.out_channels, groups)
        (out_h, out_w), _ = self._sizes(shape[1:])
        if out_h < 1 or out_w < 1:
            padding = pair(self.p.padding)
            raise ShapeError(
                f"padding {padding[0]}x{padding[1]} cuts the whole output away "
                f"({out_h}x{out_w} left of the input {shape[1]}x{shape[2]}); use less padding")
        return (self.p.out_channels, out_h, out_w)

    def param_specs(self, in_shapes: Sequence[Shape]) -> dict[str, ParamSpec]:
        kernel_h, kernel_w = pair(self.p.kernel_size)
        specs = {"weight": ParamSpec((in_shapes[0][0], self.p.out_channels // self.p.groups,
                                      kernel_h, kernel_w), "weight")}
        if self.p.bias:
            specs["bias"] = ParamSpec((self.p.out_channels,), "bias")
        return specs

    def flops(self, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        kernel_h, kernel_w = pair(self.p.kernel_size)
        per_input = 2 * (self.p.out_channels // self.p.groups) * kernel_h * kernel_w
        return per_input * numel(in_shapes[0]) + int(self.p.bias) * numel(out_shape)

    def forward(self, xs: list[Array], params: dict[str, Array], buffers,
                ctx: Context) -> tuple[Array, tuple]:
        x, weight = xs[0], params["weight"]
        kernel, stride, padding, _, dilation = self.geometry
        groups = self.p.groups
        n, in_c, in_h, in_w = x.shape
        out_c = self.p.out_channels
        (out_h, out_w), (grid_h, grid_w) = self._sizes((in_h, in_w))
        dtype = np.result_type(weight, x)
        # (G, C/G, H*W*N): each group's input channels, pixels batch-innermost
        rows = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).reshape(groups, in_c // groups, -1)
        matrix = weight.reshape(groups, in_c // groups, -1).astype(dtype, copy=False)
        contributions = np.matmul(matrix.transpose(0, 2, 1), rows).reshape(
            out_c, *kernel, in_h, in_w, n)
        grid = np.zeros((out_c, grid_h, grid_w, n), dtype)
        for i, j in kernel_offsets(kernel):
            offset_view(grid, (i, j), (in_h, in_w), stride, dilation)[...] += \
                contributions[:, i, j]
        out = grid[:, padding[0]:padding[0] + out_h, padding[1]:padding[1] + out_w]
        out = out.transpose(3, 0, 1, 2)
        if self.p.bias:
            out = out + params["bias"].astype(dtype)[:, None, None]
        return out, (rows, weight, (in_h, in_w))

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        rows, weight, in_hw = cache
        kernel, stride, padding, _, dilation = self.geometry
        groups = self.p.groups
        in_c = weight.shape[0]
        n, out_c, out_h, out_w = dy.shape
        _, (grid_h, grid_w) = self._sizes(in_hw)
        dtype = np.result_type(weight, dy)
        grid = np.zeros((out_c, grid_h, grid_w, n), dtype)
        grid[:, padding[0]:padding[0] + out_h, padding[1]:padding[1] + out_w] = \
            dy.transpose(1, 2, 3, 0)
        # (G, O/G*KH*KW, H*W*N): what reached every input pixel through every tap

        def allocate(shape: tuple[int, ...], kind: np.dtype) -> Array:
            return np.empty(shape, kind)

        gathered = im2col(grid, groups, kernel, stride, dilation, in_hw, allocate)
        matrix = weight.reshape(groups, in_c // groups, -1).astype(dtype, copy=False)
        dx = np.matmul(matrix, gathered).reshape(in_c, *in_hw, n).transpose(3, 0, 1, 2)
        dweight = np.matmul(rows, gathered.transpose(0, 2, 1)).reshape(weight.shape)
        grads = {"weight": dweight}
        if self.p.bias:
            grads["bias"] = dy.sum(axis=(0, 2, 3))
        return [dx], grads
