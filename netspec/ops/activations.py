"""Element-wise activations and softmax: the output has the input's shape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from netspec.common.lazy import lazy_import
from netspec.ops.base import Array, Context, Fusion, Grads, NodeParams, Op, register
from netspec.ops.conv import memory_order
from netspec.ops.shapes import MAX_RANK, Shape, batched_axis, numel

np = lazy_import("numpy")
# np.maximum against a scalar runs NumPy's loop for a stride-0 operand, 2-3x slower than
# against an array; a row of zeros broadcast down a (rows, width) view of the same memory
# takes the fast loop without an array of zeros the size of the input
_ZERO_ROW_WIDTH = 1024
_ZERO_ROWS: dict[np.dtype, Array] = {}


def _flat(array: Array, order: tuple[int, ...]) -> Array | None:
    """A 1-D view of ``array``'s elements in memory ``order``, or None if they do not fill
    one dense block."""
    arranged = array.transpose(order)
    return arranged.reshape(-1) if arranged.flags.c_contiguous else None


def relu_into(x: Array, out: Array) -> Array:
    """``max(x, 0)`` written into ``out`` (``x`` itself for in place), which is returned; the
    same values as ``np.maximum(x, 0, out=out)``, faster on dense arrays of one layout."""
    order = memory_order(x)
    flat_x, flat_out = _flat(x, order), _flat(out, order)
    if flat_x is None or flat_out is None or x.shape != out.shape:
        return np.maximum(x, 0, out=out)
    zeros = _ZERO_ROWS.get(x.dtype)
    if zeros is None:
        zeros = _ZERO_ROWS[x.dtype] = np.zeros(_ZERO_ROW_WIDTH, x.dtype)
    whole = flat_x.size - flat_x.size % _ZERO_ROW_WIDTH
    np.maximum(flat_x[:whole].reshape(-1, _ZERO_ROW_WIDTH), zeros,
               out=flat_out[:whole].reshape(-1, _ZERO_ROW_WIDTH))
    np.maximum(flat_x[whole:], zeros[: flat_x.size - whole], out=flat_out[whole:])
    return out


def relu_gradient(dy: Array, relu_out: Array, out: Array | None = None,
                  positive: Array | None = None) -> Array:
    """``dy * (relu_out > 0)``, the same bits, into ``out`` (default: a new array laid out as
    ``relu_out``), with ``positive`` as the boolean scratch if given. The mask is widened to
    floats in a pass of its own: a product of a float and a boolean array converts inside
    its loop, 1.6x slower than the two passes."""
    positive = np.greater(relu_out, 0, out=positive)
    if out is None:
        out = np.empty_like(relu_out, dtype=np.result_type(dy, relu_out))
    np.copyto(out, positive)
    return np.multiply(dy, out, out=out)


class _Elementwise(Op):
    """An op whose output shape is its input's and that costs ``flops_per_element``."""

    flops_per_element = 1

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        return in_shapes[0]

    def flops(self, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        return self.flops_per_element * numel(out_shape)


class ReluParams(NodeParams):
    op: Literal["relu"]


@register
class Relu(_Elementwise):
    """max(x, 0), element-wise."""

    name = "relu"
    Params = ReluParams
    # relu is non-decreasing, and the only ties it makes are at 0, where its gradient is 0
    # whichever cell wins; leaky_relu, sigmoid and tanh can round distinct inputs to equal
    # outputs with non-zero gradients, so they stay where the spec puts them
    commutes_with_max_pool = True

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, Array]:
        x = xs[0]
        y = relu_into(x, np.empty_like(x))
        return y, y

    def fused_forward(self, xs: list[Array], params, buffers, ctx: Context,
                      fusion: Fusion) -> tuple[Array, Array]:
        if not fusion.overwrite_input:
            return self.forward(xs, params, buffers, ctx)
        y = relu_into(xs[0], xs[0])
        return y, y

    def backward(self, cache: Array, dy: Array) -> tuple[list[Array | None], Grads]:
        # a product with the mask is several times faster than np.where
        return [relu_gradient(dy, cache)], {}


class LeakyReluParams(NodeParams):
    op: Literal["leaky_relu"]
    negative_slope: float = Field(default=0.01, ge=0, lt=1,
                                  description="Slope for negative inputs.")


@register
class LeakyRelu(_Elementwise):
    """x where x > 0, negative_slope * x elsewhere."""

    name = "leaky_relu"
    Params = LeakyReluParams

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, Array]:
        x = xs[0]
        positive = x > 0
        return np.where(positive, x, x * self.p.negative_slope), positive

    def backward(self, cache: Array, dy: Array) -> tuple[list[Array | None], Grads]:
        return [np.where(cache, dy, dy * self.p.negative_slope)], {}


class SigmoidParams(NodeParams):
    op: Literal["sigmoid"]


@register
class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x)), element-wise."""

    name = "sigmoid"
    Params = SigmoidParams
    flops_per_element = 4

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, Array]:
        x = xs[0]
        # tanh form: never overflows, unlike 1 / (1 + exp(-x)) for large negative x
        y = 0.5 * (np.tanh(0.5 * x) + 1)
        return y, y

    def backward(self, cache: Array, dy: Array) -> tuple[list[Array | None], Grads]:
        return [dy * cache * (1 - cache)], {}


class TanhParams(NodeParams):
    op: Literal["tanh"]


@register
class Tanh(_Elementwise):
    """tanh(x), element-wise."""

    name = "tanh"
    Params = TanhParams
    flops_per_element = 4

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, Array]:
        y = np.tanh(xs[0])
        return y, y

    def backward(self, cache: Array, dy: Array) -> tuple[list[Array | None], Grads]:
        return [dy * (1 - cache * cache)], {}


class SoftmaxParams(NodeParams):
    op: Literal["softmax"]
    dim: int = Field(
        default=1, ge=-MAX_RANK - 1, le=MAX_RANK,
        description="Axis to normalise over, PyTorch's (1 = the first per-sample axis: the "
                    "classes of a vector, the channels of an image; -1 = the last, as "
                    "attention's keys).")


@register
class Softmax(_Elementwise):
    """Softmax over one axis (dim, PyTorch's; the first per-sample axis by default); any
    rank, the output has the input's shape."""

    name = "softmax"
    Params = SoftmaxParams
    flops_per_element = 5

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        batched_axis(self.p.dim, in_shapes[0])
        return in_shapes[0]

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, Array]:
        x = xs[0]
        y = softmax(x, batched_axis(self.p.dim, x.shape[1:]))
        return y, y

    def backward(self, cache: Array, dy: Array) -> tuple[list[Array | None], Grads]:
        y = cache
        axis = batched_axis(self.p.dim, y.shape[1:])
        dx = dy - sum_of_products(dy, y, axis)
        dx *= y
        return [dx], {}


def softmax(x: Array, axis: int, overwrite: bool = False) -> Array:
    """exp(x) / sum(exp(x)) along ``axis`` of a batched array, shifted by the maximum so that
    no exponential overflows; in one new array (in ``x`` itself with ``overwrite``)."""
    maximum = x.max(axis=axis, keepdims=True)
    if overwrite:
        x -= maximum
        shifted = x
    else:
        shifted = x - maximum
    np.exp(shifted, out=shifted)
    shifted /= sum_of_products(shifted, None, axis)
    return shifted


def sum_of_products(a: Array, b: Array | None, axis: int) -> Array:
    """The sum of ``a`` (of ``a * b`` with ``b``) along ``axis``, kept. Along the last axis it
    is einsum's, which stores no product and runs several times faster than numpy's
    reductions along short contiguous rows (attention's keys, a token's features)."""
    if axis % a.ndim != a.ndim - 1:
        return (a if b is None else a * b).sum(axis=axis, keepdims=True)
    total = np.einsum("...i->...", a) if b is None else np.einsum("...i,...i->...", a, b)
    return total[..., None]
