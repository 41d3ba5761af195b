"""2-D convolution (cross-correlation, as PyTorch) by row-lowered im2col and matrix products.

Arrays are indexed (N, C, H, W) as everywhere in netspec, but a convolution stores its output
batch-innermost, (C, H, W, N) in memory: a transposed view of its (O, OH*OW*N) matrix
product, so no copy is made. In that order every kernel offset's slice of a whole batch is
made of long contiguous runs (OW*N values), so window copies and gradient sums move long
runs, and pooling runs along the batch. Consumers see ordinary (N, C, H, W) arrays.

The windows are gathered lowered along the width only (:func:`_gather_rows`): each output
row's window matrix is a block of rows of that array, overlapping the next row's, so the
forward and weight-gradient products run one per output row on KH times fewer copied values
than full im2col. Measured against full im2col with one product: LeNet-5's step 0.3 ms
faster, resnet_mini's convolutions 1.4-1.8x faster forward. The input gradient is the
mirror image (:func:`_input_gradient_by_rows`): one product per input row over overlapping
blocks of dy's rows, then a sum over the kernel columns.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Literal

from pydantic import Field, conint, conlist

from netspec.common.errors import ShapeError
from netspec.common.lazy import lazy_import
from netspec.ops.base import Array, Context, Grads, Op, ParamSpec, WeightedParams, register
from netspec.ops.grouped_conv import (
    depthwise_backward,
    depthwise_forward,
    grouped_backward,
    grouped_forward,
)
from netspec.ops.shapes import Shape, numel, pair, require_groups, require_rank, window_output_hw

np = lazy_import("numpy")

PositiveSize = conint(gt=0, le=4096)
NonNegativeSize = conint(ge=0, le=4096)
SizePair = conlist(PositiveSize, min_length=2, max_length=2)
PaddingPair = conlist(NonNegativeSize, min_length=2, max_length=2)


class Conv2dParams(WeightedParams):
    op: Literal["conv2d"]
    out_channels: int = Field(gt=0, le=65536, description="Number of output channels.")
    kernel_size: PositiveSize | SizePair = Field(
        description="Kernel size: n for n x n, or [kh, kw].")
    stride: PositiveSize | SizePair = Field(default=1, description="Step: n, or [sh, sw].")
    padding: NonNegativeSize | PaddingPair = Field(
        default=0, description="Zeros added on each side: n, or [ph, pw].")
    bias: bool = Field(default=True, description="Add a learnt bias per output channel.")
    groups: int = Field(
        default=1, gt=0, le=65536,
        description="Channel groups: each output channel sees in_channels/groups inputs; "
        "equal to in_channels for a depthwise convolution (PyTorch's groups).")
    dilation: PositiveSize | SizePair = Field(
        default=1, description="Spacing between kernel taps: n, or [dh, dw] (PyTorch's "
        "dilation).")


class Workspace:
    """An op's large scratch arrays, handed out again once nothing else refers to them.

    Fresh multi-MiB arrays every training step cost page faults whenever the C allocator
    returns them to the system in between (with torch loaded, 2,000 faults and 3.7 ms of a
    12 ms LeNet step). An array is reused only when its reference count shows that the
    workspace holds the last reference: a cache waiting for backward, or a view handed
    downstream, keeps its array out of reuse. Ops use it in training only, where the caches
    keep their arrays alive until backward anyway; in inference it would keep every op's
    scratch alive at once. A network is not meant for several threads at once, nor is this.
    """

    per_shape = 3
    # shapes remembered, the oldest forgotten first: a batch of each new size must not grow
    # memory for ever
    shapes = 8

    def __init__(self) -> None:
        self._arrays: dict[tuple, list[Array]] = {}

    def empty(self, shape: Sequence[int], dtype: np.dtype) -> Array:
        key = (tuple(shape), np.dtype(dtype).str)
        arrays = self._arrays.pop(key, [])
        self._arrays[key] = arrays
        if len(self._arrays) > self.shapes:
            del self._arrays[next(iter(self._arrays))]
        for array in arrays:
            if sys.getrefcount(array) == _UNREFERENCED:
                return array
        array = np.empty(shape, dtype)
        if len(arrays) < self.per_shape:
            arrays.append(array)
        return array


def _count_in_loop(arrays: list[Array]) -> int:
    # the count Workspace.empty sees for an array only its list holds: same loop shape
    for array in arrays:
        return sys.getrefcount(array)
    return 0


_UNREFERENCED = _count_in_loop([object()])


# memory orders of (N, C, H, W) arrays: axes from the slowest-varying to the fastest
BATCH_LAST = (1, 2, 3, 0)


def memory_order(x: Array) -> tuple[int, ...]:
    """The axes of ``x`` by decreasing stride: how it is laid out in memory."""
    strides = x.strides
    return tuple(sorted(range(x.ndim), key=lambda axis: -abs(strides[axis])))


def _inverse(order: Sequence[int]) -> tuple[int, ...]:
    return tuple(sorted(range(len(order)), key=order.__getitem__))


def in_order(x: Array, order: Sequence[int], workspace: Workspace | None = None) -> Array:
    """``x``, copied so that its axes lie in memory ``order`` unless they already do.

    Element-wise work on arrays laid out differently runs in short strided pieces, several
    times slower than on matching ones.
    """
    current = [a for a in memory_order(x) if x.shape[a] > 1]
    if current == [a for a in order if x.shape[a] > 1]:
        return x
    copy = empty_in_order(x.shape, x.dtype, order, workspace)
    copy[...] = x
    return copy


def empty(shape: Sequence[int], dtype: np.dtype, workspace: Workspace | None) -> Array:
    """An uninitialised array, from ``workspace`` if there is one."""
    return np.empty(shape, dtype) if workspace is None else workspace.empty(shape, dtype)


def empty_in_order(shape: Sequence[int], dtype: np.dtype, order: Sequence[int],
                   workspace: Workspace | None = None) -> Array:
    """An uninitialised array of ``shape`` whose axes lie in memory ``order``."""
    return empty([shape[a] for a in order], dtype, workspace).transpose(_inverse(order))


def pad_hw(x: Array, padding: tuple[int, int], value: float = 0.0,
           workspace: Workspace | None = None, extra: tuple[int, int] = (0, 0)) -> Array:
    """``x`` padded on its two spatial axes with ``value``, laid out in memory as ``x``, with
    ``extra`` more cells below and to the right (a pooling's ceil-mode overhang); ``x``
    itself when there is nothing to pad."""
    pad_h, pad_w = padding
    extra_h, extra_w = extra
    if pad_h == pad_w == extra_h == extra_w == 0:
        return x
    n, c, h, w = x.shape
    shape = (n, c, h + 2 * pad_h + extra_h, w + 2 * pad_w + extra_w)
    padded = empty_in_order(shape, x.dtype, memory_order(x), workspace)
    padded[:, :, :pad_h] = value
    padded[:, :, h + pad_h:] = value
    padded[:, :, pad_h:h + pad_h, :pad_w] = value
    padded[:, :, pad_h:h + pad_h, w + pad_w:] = value
    padded[:, :, pad_h:h + pad_h, pad_w:w + pad_w] = x
    return padded


def row_sums(matrix: Array) -> Array:
    """The sum of each row of ``matrix``, as a matrix-vector product: BLAS runs it on both
    cores, 3-6x faster than ``matrix.sum(axis=1)`` on a layer's (channels, positions)."""
    return matrix @ np.ones(matrix.shape[1], matrix.dtype)


def window_slab(x: Array, offset: tuple[int, int], out_hw: tuple[int, int],
                stride: tuple[int, int]) -> Array:
    """The (N, C, OH, OW) view of ``x`` that kernel offset ``(i, j)`` sees in every window."""
    (i, j), (out_h, out_w), (stride_h, stride_w) = offset, out_hw, stride
    return x[:, :, i : i + stride_h * (out_h - 1) + 1 : stride_h,
             j : j + stride_w * (out_w - 1) + 1 : stride_w]


def _gather_rows(x: Array, kernel: tuple[int, int], stride: tuple[int, int],
                 padding: tuple[int, int], out_hw: tuple[int, int],
                 workspace: Workspace | None) -> Array:
    """im2col lowered along the width only: ``L[h, c, j, ow, n] = padded[n, c, h, ow*sw + j]``,
    where ``padded`` is ``x`` with ``padding`` zeros around its two spatial axes.

    For output row ``oh`` the (KH*C*KW, OW*N) window matrix is the block of L's rows that
    starts at input row ``oh*sh``: consecutive blocks overlap, so L holds about KH/SH times
    fewer values than full im2col (:func:`_row_windows` views the blocks). The padding is
    written into L directly, never into a padded copy of ``x``: one pass over memory less.
    """
    if stride[1] == 1:
        # the copies below then run along whole rows of (column, batch): from an input whose
        # batch axis is outermost (a network's own), taken element by element, they were
        # 1.3-2x slower than a copy laid out batch-innermost first and then theirs for a 5x5
        # kernel on 1x28x28, 2.3-3.5x for 3x32x32 at batch 64, and no faster for a 3x3 on
        # 1x28x28 (at stride 2 the runs are one batch long: no faster for 8 ImageNet images)
        x = in_order(x, BATCH_LAST, workspace)
    n, c, h, w = x.shape
    (kernel_h, kernel_w), (stride_h, stride_w), (out_h, out_w) = kernel, stride, out_hw
    pad_h, pad_w = padding
    rows_needed = stride_h * (out_h - 1) + kernel_h
    lowered = empty((rows_needed, c, kernel_w, out_w, n), x.dtype, workspace)
    if pad_h == 0 and pad_w == 0:
        # one strided copy, in whatever layout x lies
        sn, sc, sy, sx = x.strides
        np.copyto(lowered, np.lib.stride_tricks.as_strided(
            x, lowered.shape, (sy, sc, sx, stride_w * sx, sn), writeable=False))
        return lowered
    # rows of L that hold rows of x
    first = min(pad_h, rows_needed)
    last = max(first, min(rows_needed, pad_h + h))
    lowered[:first] = 0
    lowered[last:] = 0
    for j in range(kernel_w):
        # output columns whose window column j falls inside x: 0 <= ow*sw + j - pw < w
        start = max(0, -(-(pad_w - j) // stride_w))
        stop = min(out_w, (w - 1 + pad_w - j) // stride_w + 1)
        lowered[first:last, :, j, :start] = 0
        lowered[first:last, :, j, max(start, stop):] = 0
        if stop > start:
            columns = slice(start * stride_w + j - pad_w,
                            (stop - 1) * stride_w + j - pad_w + 1, stride_w)
            lowered[first:last, :, j, start:stop] = \
                x[:, :, :last - first, columns].transpose(2, 1, 3, 0)
    return lowered


def _row_windows(lowered: Array, kernel_h: int, stride_h: int, out_h: int) -> Array:
    """The (OH, KH*C*KW, OW*N) stack of per-output-row window matrices, a view of ``lowered``
    (rows ordered (kh, c, kw), which :func:`_lowered_weight` matches)."""
    _, c, kernel_w, out_w, n = lowered.shape
    row_stride = lowered.strides[2]
    return np.lib.stride_tricks.as_strided(
        lowered, (out_h, kernel_h * c * kernel_w, out_w * n),
        (stride_h * lowered.strides[0], row_stride, lowered.itemsize), writeable=False)


def _lowered_weight(weight: Array) -> Array:
    """The (O, KH*C*KW) weight matrix with columns ordered as :func:`_row_windows` rows."""
    return weight.transpose(0, 2, 1, 3).reshape(weight.shape[0], -1)


def _convolve(x: Array, weight: Array, kernel: tuple[int, int], stride: tuple[int, int],
              padding: tuple[int, int], workspace: Workspace | None) -> tuple[Array, Array]:
    """The convolution of ``x`` with ``weight``, no bias, as an (N, O, OH, OW) view of
    batch-innermost memory, and the lowered windows it was computed from."""
    n, out_c = x.shape[0], weight.shape[0]
    out_hw = window_output_hw(x.shape[2:], kernel, stride, padding)
    y = empty((out_c, n * out_hw[0] * out_hw[1]), np.result_type(weight, x), workspace)
    lowered = _gather_rows(x, kernel, stride, padding, out_hw, workspace)
    windows = _row_windows(lowered, kernel[0], stride[0], out_hw[0])
    np.matmul(_lowered_weight(weight), windows,
              out=y.reshape(out_c, out_hw[0], -1).transpose(1, 0, 2))
    return y.reshape(out_c, *out_hw, n).transpose(3, 0, 1, 2), lowered


def _input_gradient_by_convolution(weight_shape: Shape, in_hw: tuple[int, int],
                                   dy_shape: Shape, stride: tuple[int, int],
                                   padding: tuple[int, int]) -> bool:
    """Whether dx is cheaper as a convolution of dy than by :func:`_input_gradient_by_rows`.

    For a stride-1 convolution that keeps the image size and does not widen the channels (a
    ResNet block's), convolving dy needs no sum over kernel columns afterwards: training
    steps of resnet_mini and resnet_mnist 1.5-2.5% faster than by rows. Where the output is
    smaller (LeNet's unpadded layers) or has more channels, it was up to 3x slower.
    """
    out_c, in_c, kernel_h, kernel_w = weight_shape
    in_h, in_w = in_hw
    return (tuple(stride) == (1, 1) and out_c <= in_c
            and dy_shape[2] * dy_shape[3] >= in_h * in_w
            and padding[0] < kernel_h and padding[1] < kernel_w)


def _input_gradient_by_rows(dy: Array, weight: Array, in_hw: tuple[int, int],
                            stride: tuple[int, int], padding: tuple[int, int],
                            workspace: Workspace | None) -> Array:
    """The input gradient as products per input row, then a sum over the kernel columns.

    Input row ``y`` receives from the kernel rows ``i`` and output rows ``oh`` with
    ``oh*sh + i = y + ph``. For one phase ``(y + ph) mod sh`` those output rows are
    consecutive, so the rows of ``dy`` laid out (OH, O, OW*N) form a (t*O, OW*N) block that
    one product with the (C*KW, t*O) matrix of that phase's kernel rows turns into the
    gradient of every window column (:func:`_window_column_gradients`); the KW columns are
    then added onto dx (:func:`_add_kernel_columns`). Against col2im (one product, then KH*KW
    strided adds onto dx), whole training steps in an in-process A/B against the previous
    code: lenet5 0.93x, lenet_caffe 0.92x, convnet_bn 0.92x the time (resnet_mnist, which
    uses it only in its stride-2 layers, 1.02x).
    """
    gathered = _window_column_gradients(dy, weight, in_hw[0], stride[0], padding[0], workspace)
    return _add_kernel_columns(gathered, in_hw[1], stride[1], padding[1], workspace)


def _window_column_gradients(dy: Array, weight: Array, in_h: int, stride_h: int, pad_h: int,
                             workspace: Workspace | None) -> Array:
    """``G[c, j, y, ow, n]``: the gradient reaching input row ``y`` of channel ``c`` through
    window column ``j`` of output column ``ow``, by one product per input row. Rows whose
    window reaches past dy's edge take a narrower product, so no zeros are multiplied."""
    out_c, in_c, _, kernel_w = weight.shape
    n, _, out_h, out_w = dy.shape
    columns = out_w * n
    dy_rows = in_order(dy, (2, 1, 3, 0), workspace).transpose(2, 1, 3, 0).reshape(-1, columns)
    gathered = empty((in_c, kernel_w, in_h, out_w, n), np.result_type(weight, dy), workspace)
    by_row = gathered.reshape(in_c * kernel_w, in_h, columns)
    for phase in range(stride_h):
        first = (phase - pad_h) % stride_h  # the first input row of this phase
        if first >= in_h:
            continue
        # this phase's kernel rows, matched to consecutive dy rows in increasing order
        taps = weight[:, :, phase::stride_h][:, :, ::-1]
        count = taps.shape[2]
        if count == 0:
            by_row[:, first::stride_h] = 0
            continue
        rows = range(first, in_h, stride_h)
        matrix = taps.transpose(1, 3, 2, 0).reshape(in_c * kernel_w, count * out_c)
        # dy rows [top, top + count) feed input row y, top = (y + ph - phase)//sh - count + 1
        tops = [(y + pad_h - phase) // stride_h - count + 1 for y in rows]
        inner = [k for k, top in enumerate(tops) if top >= 0 and top + count <= out_h]
        start, stop = (inner[0], inner[-1] + 1) if inner else (len(tops), len(tops))
        if inner:
            windows = np.lib.stride_tricks.as_strided(
                dy_rows[tops[start] * out_c:], (stop - start, count * out_c, columns),
                (out_c * dy_rows.strides[0], dy_rows.strides[0], dy_rows.strides[1]),
                writeable=False)
            np.matmul(matrix, windows, out=by_row[:, rows[start]:rows[stop - 1] + 1:stride_h]
                      .transpose(1, 0, 2))
        for k in [*range(start), *range(stop, len(tops))]:
            low, high = max(0, -tops[k]), min(count, out_h - tops[k])
            if low >= high:
                by_row[:, rows[k]] = 0
                continue
            np.matmul(matrix[:, low * out_c:high * out_c],
                      dy_rows[(tops[k] + low) * out_c:(tops[k] + high) * out_c],
                      out=by_row[:, rows[k]])
    return gathered


def _add_kernel_columns(gathered: Array, in_w: int, stride_w: int, pad_w: int,
                        workspace: Workspace | None) -> Array:
    """dx from :func:`_window_column_gradients`: each window column's gradients added at the
    input columns it read, as an (N, C, H, W) view of batch-innermost memory."""
    in_c, kernel_w, in_h, out_w, n = gathered.shape
    spans = []
    for j in range(kernel_w):
        # output columns whose window column j falls inside x: 0 <= ow*sw + j - pw < w
        start = max(0, -(-(pad_w - j) // stride_w))
        stop = min(out_w, (in_w - 1 + pad_w - j) // stride_w + 1)
        if stop > start:
            spans.append((j, start, stop, start * stride_w + j - pad_w))
    dx = empty((in_c, in_h, in_w, n), gathered.dtype, workspace)
    # a column that covers the whole width is copied in rather than added to zeros
    covering = [span for span in spans
                if stride_w == 1 and span[3] == 0 and span[2] - span[1] == in_w]
    if covering:
        j, start, stop, _ = covering[0]
        dx[...] = gathered[:, j, :, start:stop]
        spans.remove(covering[0])
    else:
        dx.fill(0)
    for j, start, stop, x_start in spans:
        dx[:, :, x_start:x_start + stride_w * (stop - start - 1) + 1:stride_w] += \
            gathered[:, j, :, start:stop]
    return dx.transpose(3, 0, 1, 2)


@register
class Conv2d(Op):
    """2-D convolution of (C, H, W) inputs with out_channels kernels, PyTorch's layout."""

    name = "conv2d"
    Params = Conv2dParams
    fresh_output = True

    def __init__(self, params: Conv2dParams):
        super().__init__(params)
        self.workspace = Workspace()

    @property
    def geometry(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        return pair(self.p.kernel_size), pair(self.p.stride), pair(self.p.padding)

    @property
    def dense(self) -> bool:
        """Whether the row-lowered path runs: one group, no dilation."""
        return self.p.groups == 1 and pair(self.p.dilation) == (1, 1)

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        shape = in_shapes[0]
        require_rank(shape, (3,), "conv2d input")
        kernel, stride, padding = self.geometry
        groups = self.p.groups
        require_groups(shape[0], self.p.out_channels, groups)
        dilation = pair(self.p.dilation)
        if dilation != (1, 1):
            extent = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
            padded = tuple(size + 2 * p for size, p in zip(shape[1:], padding))
            if extent[0] > padded[0] or extent[1] > padded[1]:
                raise ShapeError(
                    f"kernel {kernel[0]}x{kernel[1]} with dilation {dilation[0]}x{dilation[1]} "
                    f"spans {extent[0]}x{extent[1]}, larger than the padded input "
                    f"{padded[0]}x{padded[1]} ({shape[1]}x{shape[2]} with padding "
                    f"{padding[0]}x{padding[1]}); use a smaller dilation or more padding")
            kernel = extent
        out_h, out_w = window_output_hw(shape[1:], kernel, stride, padding)
        return (self.p.out_channels, out_h, out_w)

    def param_specs(self, in_shapes: Sequence[Shape]) -> dict[str, ParamSpec]:
        kernel_h, kernel_w = pair(self.p.kernel_size)
        in_channels = in_shapes[0][0] // self.p.groups
        specs = {
            "weight": ParamSpec((self.p.out_channels, in_channels, kernel_h, kernel_w), "weight")
        }
        if self.p.bias:
            specs["bias"] = ParamSpec((self.p.out_channels,), "bias")
        return specs

    def flops(self, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        kernel_h, kernel_w = pair(self.p.kernel_size)
        per_output = 2 * (in_shapes[0][0] // self.p.groups) * kernel_h * kernel_w \
            + int(self.p.bias)
        return per_output * numel(out_shape)

    def _convolve(self, x: Array, weight: Array, workspace: Workspace | None
                  ) -> tuple[Array, tuple]:
        """The convolution without bias, and what its backward needs besides dy."""
        kernel, stride, padding = self.geometry
        if self.dense:
            out, lowered = _convolve(x, weight, kernel, stride, padding, workspace)
            return out, ("dense", lowered)
        dilation = pair(self.p.dilation)
        extent = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        out_hw = window_output_hw(x.shape[2:], extent, stride, padding)

        def allocate(shape: tuple[int, ...], dtype: np.dtype) -> Array:
            return empty(shape, dtype, workspace)

        if weight.shape[1] == 1 and self.p.groups > 1:
            out, cache = depthwise_forward(x, weight, stride, padding, dilation, out_hw,
                                           allocate)
            return out, ("depthwise", cache)
        out, cache = grouped_forward(x, weight, self.p.groups, stride, padding, dilation,
                                     out_hw, allocate)
        return out, ("grouped", cache)

    def forward(
        self, xs: list[Array], params: dict[str, Array], buffers, ctx: Context
    ) -> tuple[Array, tuple]:
        x, weight = xs[0], params["weight"]
        workspace = self.workspace if ctx.train else None
        out, lowered = self._convolve(x, weight, workspace)
        if self.p.bias:
            out += params["bias"][:, None, None]
        return out, (lowered, weight, x.shape[2:], workspace)

    def infer_scaled(self, x: Array, params: dict[str, Array], scale: Array, shift: Array,
                     relu: bool) -> Array:
        """Inference of this convolution followed by ``y * scale + shift`` per channel (a
        batchnorm folded in: the scale goes into the weight, a single pass less over the
        output), and by a ReLU if ``relu``. Equal to the unfused nodes up to rounding."""
        weight = params["weight"] * scale.astype(params["weight"].dtype)[:, None, None, None]
        bias = shift if not self.p.bias else params["bias"] * scale + shift
        out = self._convolve(x, weight, None)[0]
        out += bias.astype(out.dtype)[:, None, None]
        if relu:
            np.maximum(out, 0, out=out)
        return out

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        dx, grads = self._backward(cache, dy, need_dx=True)
        return [dx], grads

    def param_grads(self, cache: tuple, dy: Array) -> Grads:
        """Backward without the input gradient: for a node fed by a network input."""
        return self._backward(cache, dy, need_dx=False)[1]

    def _backward(self, cache: tuple, dy: Array, need_dx: bool) -> tuple[Array | None, Grads]:
        kernel, stride, padding = self.geometry
        (path, lowered), weight, in_hw, workspace = cache
        if path != "dense":
            return self._grouped_backward(path, lowered, dy, weight, need_dx)
        out_c = weight.shape[0]
        # laid out batch-innermost once, for the products below and for convolving dy
        dy = in_order(dy, BATCH_LAST, workspace)
        dy_t = dy.transpose(1, 2, 3, 0).reshape(out_c, -1)
        out_h = dy.shape[2]
        # one product per output row, summed; reading the windows in their stored order is
        # 1.1-2x faster than transposing them
        windows = _row_windows(lowered, kernel[0], stride[0], out_h)
        by_row = np.matmul(windows, dy_t.reshape(out_c, out_h, -1).transpose(1, 2, 0))
        # (O, KH*C*KW) in the windows' (kh, c, kw) order, back to PyTorch's (O, C, KH, KW)
        dweight = by_row.sum(axis=0).T.reshape(out_c, kernel[0], -1, kernel[1])
        grads = {"weight": np.ascontiguousarray(dweight.transpose(0, 2, 1, 3))}
        if self.p.bias:
            grads["bias"] = row_sums(dy_t)
        if not need_dx:
            return None, grads
        if _input_gradient_by_convolution(weight.shape, in_hw, dy.shape, stride, padding):
            # the input gradient of a stride-1 convolution is dy convolved with the kernel
            # turned by 180 degrees, its channel axes swapped
            turned = weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
            full = (kernel[0] - 1 - padding[0], kernel[1] - 1 - padding[1])
            return _convolve(dy, turned, kernel, (1, 1), full, workspace)[0], grads
        return _input_gradient_by_rows(dy, weight, in_hw, stride, padding, workspace), grads

    def _grouped_backward(self, path: str, cache: tuple, dy: Array, weight: Array,
                          need_dx: bool) -> tuple[Array | None, Grads]:
        _, stride, padding = self.geometry
        dilation = pair(self.p.dilation)
        if path == "depthwise":
            dx, dweight = depthwise_backward(cache, dy, weight, stride, padding, dilation,
                                             need_dx)
        else:
            dx, dweight = grouped_backward(cache, dy, weight, self.p.groups, stride,
                                           padding, dilation, need_dx)
        grads = {"weight": dweight}
        if self.p.bias:
            grads["bias"] = dy.sum(axis=(0, 2, 3))
        return dx, grads
