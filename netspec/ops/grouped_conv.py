"""Grouped, depthwise and dilated 2-D convolution: the kernels behind conv2d's ``groups`` and
``dilation`` (:class:`netspec.ops.conv.Conv2d` keeps its row-lowered path for dense,
undilated convolutions and calls these otherwise).

Arrays are worked on batch-innermost, (C, H, W, N) in memory, as the dense path does, so the
output is a transposed view of a (O, OH, OW, N) array. No loop runs over channels or groups:

* depthwise (one input channel per group): one pass per kernel offset over the whole
  (C, OH, OW, N) slab, each channel scaled by its own tap, as pooling does; its weight
  gradient is a batched product of dy with each offset's slab (:func:`depthwise_forward`);
* grouped (several input channels per group): im2col per group, then one batched matrix
  product over the groups, ``(G, O/G, C/G*KH*KW) @ (G, C/G*KH*KW, OH*OW*N)``
  (:func:`grouped_forward`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from netspec.common.lazy import lazy_import
from netspec.ops.base import Array

np = lazy_import("numpy")

Pair = tuple[int, int]
# hands out uninitialised scratch arrays of (shape, dtype): conv2d's workspace in training
Allocate = Callable[[tuple[int, ...], Any], Array]


def dilated_extent(kernel: int, dilation: int) -> int:
    """The span of a dilated kernel along one axis.

    >>> dilated_extent(3, 2)
    5
    """
    return dilation * (kernel - 1) + 1


def _batch_last_padded(x: Array, padding: Pair, allocate: Allocate) -> Array:
    """``x`` padded with zeros, as a C-contiguous (C, H, W, N) array."""
    n, c, h, w = x.shape
    pad_h, pad_w = padding
    grid = allocate((c, h + 2 * pad_h, w + 2 * pad_w, n), x.dtype)
    if pad_h or pad_w:
        grid[:, :pad_h] = 0
        grid[:, h + pad_h:] = 0
        grid[:, pad_h:h + pad_h, :pad_w] = 0
        grid[:, pad_h:h + pad_h, w + pad_w:] = 0
    grid[:, pad_h:h + pad_h, pad_w:w + pad_w] = x.transpose(1, 2, 3, 0)
    return grid


def _batch_last(dy: Array) -> Array:
    """``dy`` as a C-contiguous (C, H, W, N) array, copied only if it is not laid out so."""
    return np.ascontiguousarray(dy.transpose(1, 2, 3, 0))


def offset_view(grid: Array, offset: Pair, out_hw: Pair, stride: Pair,
                 dilation: Pair) -> Array:
    """The (C, OH, OW, N) view of a (C, H, W, N) ``grid`` that kernel offset ``offset`` reads
    in every window."""
    (i, j), (out_h, out_w), (stride_h, stride_w) = offset, out_hw, stride
    top, left = i * dilation[0], j * dilation[1]
    return grid[:, top:top + stride_h * (out_h - 1) + 1:stride_h,
                left:left + stride_w * (out_w - 1) + 1:stride_w]


def kernel_offsets(kernel: Pair) -> list[Pair]:
    return [(i, j) for i in range(kernel[0]) for j in range(kernel[1])]


def _as_output(y: Array) -> Array:
    """A (O, OH, OW, N) array as the (N, O, OH, OW) view consumers read."""
    return y.transpose(3, 0, 1, 2)


def depthwise_forward(x: Array, weight: Array, stride: Pair, padding: Pair, dilation: Pair,
                      out_hw: Pair, allocate: Allocate) -> tuple[Array, Any]:
    """Convolution with one input channel per group (``weight`` (C*M, 1, KH, KW), M outputs
    per input channel); returns the output and what :func:`depthwise_backward` needs."""
    out_c, _, kernel_h, kernel_w = weight.shape
    channels = x.shape[1]
    multiplier = out_c // channels
    grid = _batch_last_padded(x, padding, allocate)
    dtype = np.result_type(weight, x)
    n = x.shape[0]
    y = allocate((channels, multiplier, *out_hw, n), dtype)
    product = allocate((channels, multiplier, *out_hw, n), dtype)
    taps = weight.reshape(channels, multiplier, kernel_h, kernel_w).astype(dtype, copy=False)
    for index, offset in enumerate(kernel_offsets((kernel_h, kernel_w))):
        slab = offset_view(grid, offset, out_hw, stride, dilation)[:, None]
        tap = taps[:, :, offset[0], offset[1], None, None, None]
        if index == 0:
            np.multiply(slab, tap, out=y)
        else:
            np.multiply(slab, tap, out=product)
            y += product
    return _as_output(y.reshape(out_c, *out_hw, n)), (grid, x.shape, allocate)


def depthwise_backward(cache: Any, dy: Array, weight: Array, stride: Pair, padding: Pair,
                       dilation: Pair, need_dx: bool) -> tuple[Array | None, Array]:
    """The input gradient (None unless ``need_dx``) and the weight gradient."""
    grid, x_shape, allocate = cache
    out_c, _, kernel_h, kernel_w = weight.shape
    channels = x_shape[1]
    multiplier = out_c // channels
    n, _, out_h, out_w = dy.shape
    positions = out_h * out_w * n
    dy_rows = _batch_last(dy)
    # (C, M, OH*OW*N): each input channel's M output channels as the rows of one matrix
    dy_rows = dy_rows.reshape(channels, multiplier, positions)
    dtype = dy_rows.dtype
    dweight = np.empty((channels, multiplier, kernel_h * kernel_w), np.result_type(dy, grid))
    slab = allocate((channels, positions, 1), grid.dtype)
    offsets = kernel_offsets((kernel_h, kernel_w))
    for index, offset in enumerate(offsets):
        slab.reshape(channels, out_h, out_w, n)[...] = \
            offset_view(grid, offset, (out_h, out_w), stride, dilation)
        # one (M, P) @ (P, 1) product per channel, batched
        dweight[:, :, index] = np.matmul(dy_rows, slab)[:, :, 0]
    dweight = dweight.reshape(out_c, 1, kernel_h, kernel_w)
    if not need_dx:
        return None, dweight
    dgrid = np.zeros(grid.shape, np.result_type(weight, dy))
    taps = weight.reshape(channels, multiplier, kernel_h, kernel_w).astype(dtype, copy=False)
    share = allocate((channels, 1, positions), dgrid.dtype)
    for offset in offsets:
        target = offset_view(dgrid, offset, (out_h, out_w), stride, dilation)
        if multiplier == 1:
            np.multiply(dy_rows[:, 0], taps[:, 0, offset[0], offset[1], None],
                        out=share[:, 0])
        else:
            np.matmul(taps[:, None, :, offset[0], offset[1]], dy_rows, out=share)
        target += share.reshape(channels, out_h, out_w, n)
    return _crop(dgrid, padding), dweight


def _crop(dgrid: Array, padding: Pair) -> Array:
    """The (N, C, H, W) gradient of the input from that of its padded (C, H, W, N) grid."""
    pad_h, pad_w = padding
    height, width = dgrid.shape[1] - 2 * pad_h, dgrid.shape[2] - 2 * pad_w
    return dgrid[:, pad_h:pad_h + height, pad_w:pad_w + width].transpose(3, 0, 1, 2)


def grouped_forward(x: Array, weight: Array, groups: int, stride: Pair, padding: Pair,
                    dilation: Pair, out_hw: Pair, allocate: Allocate
                    ) -> tuple[Array, Any]:
    """Convolution in ``groups`` groups of input channels by im2col and one batched matrix
    product over the groups; also serves dilated dense convolutions (one group)."""
    out_c, group_c, kernel_h, kernel_w = weight.shape
    n = x.shape[0]
    grid = _batch_last_padded(x, padding, allocate)
    columns = im2col(grid, groups, (kernel_h, kernel_w), stride, dilation, out_hw, allocate)
    dtype = np.result_type(weight, x)
    y = allocate((groups, out_c // groups, columns.shape[2]), dtype)
    np.matmul(weight.reshape(groups, out_c // groups, -1).astype(dtype, copy=False), columns,
              out=y)
    return _as_output(y.reshape(out_c, *out_hw, n)), (columns, grid.shape)


def im2col(grid: Array, groups: int, kernel: Pair, stride: Pair, dilation: Pair,
           out_hw: Pair, allocate: Allocate) -> Array:
    """im2col of a (C, H, W, N) grid per group: (G, C/G*KH*KW, OH*OW*N), rows ordered
    (c, kh, kw) as PyTorch's weight."""
    channels, _, _, n = grid.shape
    group_c = channels // groups
    sc, sh, sw, sn = grid.strides
    windows = np.lib.stride_tricks.as_strided(
        grid, (groups, group_c, *kernel, *out_hw, n),
        (group_c * sc, sc, dilation[0] * sh, dilation[1] * sw, stride[0] * sh,
         stride[1] * sw, sn), writeable=False)
    columns = allocate((groups, group_c * kernel[0] * kernel[1], out_hw[0] * out_hw[1] * n),
                       grid.dtype)
    columns.reshape(windows.shape)[...] = windows
    return columns


def grouped_backward(cache: Any, dy: Array, weight: Array, groups: int, stride: Pair,
                     padding: Pair, dilation: Pair, need_dx: bool
                     ) -> tuple[Array | None, Array]:
    """The input gradient (None unless ``need_dx``) and the weight gradient."""
    columns, grid_shape = cache
    out_c, group_c, kernel_h, kernel_w = weight.shape
    n, _, out_h, out_w = dy.shape
    dy_rows = _batch_last(dy)
    dy_rows = dy_rows.reshape(groups, out_c // groups, -1)
    dweight = np.matmul(dy_rows, columns.transpose(0, 2, 1)).reshape(weight.shape)
    if not need_dx:
        return None, dweight
    dtype = np.result_type(weight, dy)
    matrix = weight.reshape(groups, out_c // groups, -1).astype(dtype, copy=False)
    dcolumns = np.matmul(matrix.transpose(0, 2, 1), dy_rows)
    dcolumns = dcolumns.reshape(groups * group_c, kernel_h, kernel_w, out_h, out_w, n)
    dgrid = np.zeros(grid_shape, dtype)
    for i, j in kernel_offsets((kernel_h, kernel_w)):
        offset_view(dgrid, (i, j), (out_h, out_w), stride, dilation)[...] += dcolumns[:, i, j]
    return _crop(dgrid, padding), dweight
