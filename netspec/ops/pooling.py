"""Max, average and global average pooling over the spatial axes of (C, H, W).

Window pooling loops over the KH*KW kernel offsets, each touching one strided (N, C, OH, OW)
slab of the whole batch; outputs and input gradients keep the memory layout of the input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import Field, model_validator

from netspec.common.lazy import lazy_import
from netspec.ops.activations import relu_into
from netspec.ops.base import NO_FUSION, Array, Context, Fusion, Grads, NodeParams, Op, register
from netspec.ops.conv import (
    NonNegativeSize,
    PaddingPair,
    PositiveSize,
    SizePair,
    Workspace,
    empty_in_order,
    in_order,
    memory_order,
    pad_hw,
    window_slab,
)
from netspec.ops.shapes import Shape, numel, pair, require_rank, window_output_hw

np = lazy_import("numpy")


class _PoolParams(NodeParams):
    kernel_size: PositiveSize | SizePair = Field(
        description="Window size: n for n x n, or [kh, kw].")
    stride: PositiveSize | SizePair | None = Field(
        default=None, description="Step: n, or [sh, sw]; default the kernel size.")
    padding: NonNegativeSize | PaddingPair = Field(
        default=0, description="Cells added on each side: n, or [ph, pw].")
    ceil_mode: bool = Field(
        default=False, description="Round the output size up: a last, partial window that "
        "starts inside the input (or its leading padding) is kept (PyTorch's ceil_mode).")

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

    def __init__(self, params: _PoolParams):
        super().__init__(params)
        self.workspace = Workspace()

    @property
    def geometry(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        kernel = pair(self.p.kernel_size)
        stride = kernel if self.p.stride is None else pair(self.p.stride)
        return kernel, stride, pair(self.p.padding)

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        shape = in_shapes[0]
        require_rank(shape, (3,), f"{self.name} input")
        return (shape[0], *self.out_hw(shape[1:]))

    def out_hw(self, in_hw: Sequence[int]) -> tuple[int, int]:
        """The output (H, W); in ceil mode PyTorch's rule: rounded up, less a last window
        that would start past the input and its leading padding."""
        kernel, stride, padding = self.geometry
        floor = window_output_hw(tuple(in_hw), kernel, stride, padding)
        if not self.p.ceil_mode:
            return floor
        sizes = []
        for size, k, s, p, rounded_down in zip(in_hw, kernel, stride, padding, floor):
            out = -(-(size + 2 * p - k) // s) + 1
            if (out - 1) * s >= size + p:
                out -= 1
            sizes.append(max(out, rounded_down))
        return (sizes[0], sizes[1])

    def overhang(self, in_hw: Sequence[int]) -> tuple[int, int]:
        """Cells the last windows reach past the padded input, below and to the right (ceil
        mode only)."""
        kernel, stride, padding = self.geometry
        out_hw = self.out_hw(in_hw)
        return tuple(max(0, (out - 1) * s + k - (size + 2 * p))  # type: ignore[return-value]
                     for out, size, k, s, p in zip(out_hw, in_hw, kernel, stride, padding))

    def flops(self, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        kernel_h, kernel_w = self.geometry[0]
        return kernel_h * kernel_w * numel(out_shape)

    def slabs(self, padded: Array, out_hw: tuple[int, int]) -> list[Array]:
        """One (N, C, OH, OW) view of ``padded`` per kernel offset, in row-major offset order."""
        (kernel_h, kernel_w), stride, _ = self.geometry
        return [window_slab(padded, (i, j), out_hw, stride)
                for i in range(kernel_h) for j in range(kernel_w)]

    def pool(self, padded: Array, combine: Callable[[Array, Array], object],
             workspace: Workspace | None) -> Array:
        """The output: the first kernel offset's slab, then ``combine(out, slab)`` in place
        for every other offset."""
        kernel, stride, _ = self.geometry
        slabs = self.slabs(padded, window_output_hw(padded.shape[2:], kernel, stride, (0, 0)))
        y = empty_in_order(slabs[0].shape, padded.dtype, memory_order(padded), workspace)
        y[...] = slabs[0]
        for slab in slabs[1:]:
            combine(y, slab)
        return y

    def scatter(self, padded_shape: Shape, dtype: np.dtype, order: Sequence[int],
                out_hw: tuple[int, int], write: Callable[[list[Array], bool], object],
                workspace: Workspace | None, in_hw: Sequence[int]) -> Array:
        """The input gradient on a grid of the padded input's shape (laid out in memory
        ``order``), padding cropped off: ``write(targets, add)`` fills each kernel offset's
        slab, adding to it if ``add`` (windows overlap) or else assigning."""
        (kernel_h, kernel_w), (stride_h, stride_w), (pad_h, pad_w) = self.geometry
        height, width = padded_shape[2:]
        overlapping = stride_h < kernel_h or stride_w < kernel_w
        # windows tiling the grid: every cell is written exactly once
        tiled = (stride_h, stride_w) == (kernel_h, kernel_w) \
            and stride_h * out_hw[0] == height and stride_w * out_hw[1] == width
        dx = empty_in_order(padded_shape, dtype, order, workspace)
        if not tiled:
            dx.fill(0)
        write(self.slabs(dx, out_hw), overlapping)
        return dx[:, :, pad_h : pad_h + in_hw[0], pad_w : pad_w + in_hw[1]]


class MaxPoolParams(_PoolParams):
    op: Literal["maxpool2d"]


@register
class MaxPool2d(_WindowPool):
    """Max pooling; padding counts as -inf, so a padded cell never wins."""

    name = "maxpool2d"
    Params = MaxPoolParams
    is_max_pool = True
    # neither cache (winners, or the padded input) holds the output
    fresh_output = True

    absorbs_relu = True

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, tuple]:
        return self.fused_forward(xs, params, buffers, ctx, NO_FUSION)

    def fused_forward(self, xs: list[Array], params, buffers, ctx: Context,
                      fusion: Fusion) -> tuple[Array, tuple]:
        workspace = self.workspace if ctx.train else None
        padded = pad_hw(xs[0], self.geometry[2], value=-np.inf, workspace=workspace,
                        extra=self.overhang(xs[0].shape[2:]))
        if not ctx.train:
            # a backward after inference is rare (gradient checks): it finds the winners then
            # (the executor fuses no ReLU into a node whose cache it keeps in inference)
            y = self.pool(padded, lambda out, slab: np.maximum(out, slab, out=out), None)
            if fusion.relu:
                relu_into(y, y)
            return y, (padded, None, padded.shape, padded.dtype, None, xs[0].shape[2:])
        # found here, where the input was just written and is still in the CPU caches, the
        # winners spare the backward a pass over the whole input
        y, winner = self._first_maxima(padded, workspace)
        if fusion.relu:
            # the ReLU's backward: a window whose output it zeroes sends no gradient, so its
            # winner becomes an offset past the last
            order = memory_order(y)
            zeroed = np.less_equal(y, 0, out=empty_in_order(y.shape, np.bool_, order, workspace))
            past_last = np.multiply(zeroed, winner.dtype.type(self._window_cells()),
                                    out=empty_in_order(y.shape, winner.dtype, order, workspace))
            np.maximum(winner, past_last, out=winner)
            relu_into(y, y)
        return y, (None, winner, padded.shape, padded.dtype, workspace, xs[0].shape[2:])

    def _window_cells(self) -> int:
        kernel_h, kernel_w = self.geometry[0]
        return kernel_h * kernel_w

    def _first_maxima(self, padded: Array, workspace: Workspace | None) -> tuple[Array, Array]:
        """The pooled output, and for each window the kernel offset (row-major) of its first
        cell equal to the maximum, as argmax and PyTorch pick among ties: a later cell wins
        only if strictly greater."""
        kernel, stride, _ = self.geometry
        order = memory_order(padded)
        slabs = self.slabs(padded, window_output_hw(padded.shape[2:], kernel, stride, (0, 0)))
        y = empty_in_order(slabs[0].shape, padded.dtype, order, workspace)
        y[...] = slabs[0]
        # room for one offset past the last (see fused_forward)
        index_type = np.min_scalar_type(len(slabs))
        winner = empty_in_order(y.shape, index_type, order, workspace)
        winner.fill(0)
        greater = empty_in_order(y.shape, np.bool_, order, workspace)
        offset = empty_in_order(y.shape, index_type, order, workspace)
        # each strided slab is read once, into memory laid out as the output: comparing and
        # taking the maximum then both run along contiguous memory
        cells = empty_in_order(y.shape, padded.dtype, order, workspace)
        for index, slab in enumerate(slabs[1:], start=1):
            cells[...] = slab
            np.greater(cells, y, out=greater)
            np.maximum(y, cells, out=y)
            # offsets only grow, so the newest strictly greater cell has the largest one
            np.multiply(greater, index_type.type(index), out=offset)
            np.maximum(winner, offset, out=winner)
        return y, winner

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        padded, winner, padded_shape, dtype, workspace, in_hw = cache
        if winner is None:
            winner = self._first_maxima(padded, None)[1]
        order = memory_order(winner)
        dy = in_order(dy, order, workspace)
        hit = empty_in_order(winner.shape, np.bool_, order, workspace)

        def write(targets: list[Array], add: bool) -> None:
            # multiplying by a mask is several times faster than NumPy's masked writes
            for index, target in enumerate(targets):
                np.equal(winner, index, out=hit)
                if add:
                    target += dy * hit
                else:
                    np.multiply(dy, hit, out=target)

        return [self.scatter(padded_shape, dtype, order, winner.shape[2:], write, workspace,
                             in_hw)], {}


class AvgPoolParams(_PoolParams):
    op: Literal["avgpool2d"]
    count_include_pad: bool = Field(
        default=True, description="Count the padded zeros in each window's average "
        "(PyTorch's count_include_pad); false averages the input's cells only.")


@register
class AvgPool2d(_WindowPool):
    """Average pooling; padded zeros count in the average unless count_include_pad is false,
    a ceil-mode window's overhang past the padding never does (as PyTorch)."""

    name = "avgpool2d"
    Params = AvgPoolParams

    def divisor(self, in_hw: Sequence[int]) -> float | Array:
        """What each window's sum is divided by: the kernel's area, or per output cell (an
        (OH, OW) array) where windows are cut by the edge of what counts."""
        (kernel_h, kernel_w), stride, padding = self.geometry
        if self.p.count_include_pad and self.overhang(in_hw) == (0, 0):
            return float(kernel_h * kernel_w)
        counts = []
        for size, out, k, s, p in zip(in_hw, self.out_hw(in_hw), (kernel_h, kernel_w),
                                      stride, padding):
            starts = np.arange(out) * s - p
            ends = np.minimum(starts + k, size + p)
            if not self.p.count_include_pad:
                starts, ends = np.maximum(starts, 0), np.minimum(ends, size)
            counts.append(ends - starts)
        return np.multiply.outer(counts[0], counts[1]).astype(np.float64)

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, tuple]:
        _, _, padding = self.geometry
        workspace = self.workspace if ctx.train else None
        in_hw = xs[0].shape[2:]
        padded = pad_hw(xs[0], padding, workspace=workspace, extra=self.overhang(in_hw))
        y = self.pool(padded, lambda out, slab: np.add(out, slab, out=out), workspace)
        divisor = self.divisor(in_hw)
        y /= divisor if isinstance(divisor, float) else divisor.astype(y.dtype)
        return y, (padded, workspace, in_hw)

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        padded, workspace, in_hw = cache
        divisor = self.divisor(in_hw)
        share = in_order(dy, memory_order(padded)) / (
            divisor if isinstance(divisor, float) else divisor.astype(dy.dtype))

        def write(targets: list[Array], add: bool) -> None:
            for target in targets:
                if add:
                    target += share
                else:
                    target[...] = share

        return [self.scatter(padded.shape, padded.dtype, memory_order(padded), dy.shape[2:],
                             write, workspace, in_hw)], {}


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
