"""The activations of mobile and modern networks, as PyTorch computes them: ``relu6`` and
``hardtanh`` (clipping), ``silu`` (x * sigmoid(x), EfficientNet's swish), ``gelu`` (exact or
tanh form), ``hardswish`` and ``hardsigmoid`` (MobileNetV3), and ``log_softmax``.

Gradients at the corners of the piecewise ops are PyTorch's: hardtanh passes the gradient
strictly inside (min_val, max_val); hardsigmoid strictly inside (-3, 3); hardswish's slope is
x/3 + 1/2 strictly inside (-3, 3), 0 at and below -3, 1 at and above 3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import Field, model_validator

from netspec.common.errors import ShapeError
from netspec.common.lazy import lazy_import
from netspec.ops.base import Array, Context, Grads, NodeParams, Op, register
from netspec.ops.shapes import Shape, numel

np = lazy_import("numpy")

_SQRT_HALF = math.sqrt(0.5)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_SQRT_TWO_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_TWO_PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_CUBIC = 0.044715
# erf(z) is 1 to double precision beyond this
_ERF_SATURATES = 6.0


def erf(z: Array) -> Array:
    """The error function, element-wise, to double precision (NumPy has none): the series
    erf(z) = 2/sqrt(pi) exp(-z^2) sum_n 2^n z^(2n+1) / (1*3*...*(2n+1)), whose terms are all
    of one sign (no cancellation), summed until every element's next term is negligible."""
    magnitude = np.minimum(np.abs(z), _ERF_SATURATES).astype(np.float64)
    squared = magnitude * magnitude
    term = magnitude.copy()
    total = magnitude.copy()
    n = 0
    while True:
        n += 1
        term *= (2.0 * squared) / (2 * n + 1)
        total += term
        if not np.any(term > 1e-17 * total):
            break
    result = np.minimum(_TWO_OVER_SQRT_PI * np.exp(-squared) * total, 1.0)
    return np.copysign(result, z).astype(z.dtype, copy=False)


class _Elementwise(Op):
    flops_per_element = 1

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        return in_shapes[0]

    def flops(self, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        return self.flops_per_element * numel(out_shape)


def _clip_forward(x: Array, low: float, high: float) -> tuple[Array, Array]:
    inside = (x > low) & (x < high)
    return np.clip(x, low, high), inside


class HardtanhParams(NodeParams):
    op: Literal["hardtanh"]
    min_val: float = Field(default=-1.0, allow_inf_nan=False, ge=-1e6, le=1e6,
                           description="Lower bound of the output.")
    max_val: float = Field(default=1.0, allow_inf_nan=False, ge=-1e6, le=1e6,
                           description="Upper bound of the output.")

    @model_validator(mode="after")
    def _ordered(self) -> HardtanhParams:
        if self.max_val <= self.min_val:
            raise ValueError(f"max_val {self.max_val:g} must be greater than min_val "
                             f"{self.min_val:g}")
        return self


@register
class Hardtanh(_Elementwise):
    """x clipped to [min_val, max_val]."""

    name = "hardtanh"
    Params = HardtanhParams

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, Array]:
        return _clip_forward(xs[0], self.p.min_val, self.p.max_val)

    def backward(self, cache: Array, dy: Array) -> tuple[list[Array | None], Grads]:
        return [dy * cache], {}


class Relu6Params(NodeParams):
    op: Literal["relu6"]


@register
class Relu6(_Elementwise):
    """min(max(x, 0), 6): MobileNetV2's activation (hardtanh from 0 to 6)."""

    name = "relu6"
    Params = Relu6Params

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, Array]:
        return _clip_forward(xs[0], 0.0, 6.0)

    def backward(self, cache: Array, dy: Array) -> tuple[list[Array | None], Grads]:
        return [dy * cache], {}


def _sigmoid(x: Array) -> Array:
    # tanh form: never overflows, as netspec's sigmoid
    return 0.5 * (np.tanh(0.5 * x) + 1)


class SiluParams(NodeParams):
    op: Literal["silu"]


@register
class Silu(_Elementwise):
    """x * sigmoid(x) (swish)."""

    name = "silu"
    Params = SiluParams
    flops_per_element = 5

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, tuple]:
        x = xs[0]
        gate = _sigmoid(x)
        return x * gate, (x, gate)

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        x, gate = cache
        return [dy * gate * (1 + x * (1 - gate))], {}


class GeluParams(NodeParams):
    op: Literal["gelu"]
    approximate: Literal["none", "tanh"] = Field(
        default="none", description="'none': x * Phi(x) exactly; 'tanh': PyTorch's tanh "
        "approximation.")


@register
class Gelu(_Elementwise):
    """x * Phi(x), Phi the standard normal distribution function (or its tanh form)."""

    name = "gelu"
    Params = GeluParams
    flops_per_element = 8

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, tuple]:
        x = xs[0]
        if self.p.approximate == "tanh":
            inner = _SQRT_TWO_OVER_PI * (x + _GELU_CUBIC * x * x * x)
            t = np.tanh(inner)
            return 0.5 * x * (1 + t), (x, t)
        cdf = 0.5 * (1 + erf(x * _SQRT_HALF))
        return x * cdf, (x, cdf)

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        x, value = cache
        if self.p.approximate == "tanh":
            t = value
            slope = _SQRT_TWO_OVER_PI * (1 + 3 * _GELU_CUBIC * x * x)
            return [dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * slope)], {}
        density = _INV_SQRT_TWO_PI * np.exp(-0.5 * x * x)
        return [dy * (value + x * density)], {}


class HardswishParams(NodeParams):
    op: Literal["hardswish"]


@register
class Hardswish(_Elementwise):
    """x * relu6(x + 3) / 6: MobileNetV3's activation."""

    name = "hardswish"
    Params = HardswishParams
    flops_per_element = 4

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, Array]:
        x = xs[0]
        return x * np.clip(x + 3, 0, 6) / 6, x

    def backward(self, cache: Array, dy: Array) -> tuple[list[Array | None], Grads]:
        x = cache
        slope = np.where(x <= -3, 0.0, np.where(x < 3, x / 3 + 0.5, 1.0)).astype(x.dtype)
        return [dy * slope], {}


class HardsigmoidParams(NodeParams):
    op: Literal["hardsigmoid"]


@register
class Hardsigmoid(_Elementwise):
    """relu6(x + 3) / 6: MobileNetV3's gate."""

    name = "hardsigmoid"
    Params = HardsigmoidParams
    flops_per_element = 3

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, Array]:
        x = xs[0]
        return np.clip(x + 3, 0, 6) / 6, (x > -3) & (x < 3)

    def backward(self, cache: Array, dy: Array) -> tuple[list[Array | None], Grads]:
        return [dy * cache / 6], {}


def softmax_axis(dim: int, shape: Shape) -> int:
    """PyTorch's ``dim`` of a batched value whose per-sample shape is ``shape``, as an axis of
    the batched array (1 to the rank); the batch axis is refused: ops act on each sample."""
    rank = len(shape)
    batched = f"(N, {', '.join(map(str, shape))})"
    hint = f"use a dim from 1 to {rank} (or -{rank} to -1)"
    if not -(rank + 1) <= dim <= rank:
        raise ShapeError(f"dim {dim} is out of range for the input {batched}; {hint}")
    axis = dim % (rank + 1)
    if axis == 0:
        raise ShapeError(f"dim {dim} is the batch axis of the input {batched}; {hint}")
    return axis


class LogSoftmaxParams(NodeParams):
    op: Literal["log_softmax"]
    dim: int = Field(default=1, ge=-5, le=4,
                     description="Axis to normalise over, PyTorch's (1 = the first per-sample "
                     "axis: the classes of a vector, the channels of an image).")


@register
class LogSoftmax(_Elementwise):
    """log(softmax(x)) over one axis, computed without forming the softmax's logarithm."""

    name = "log_softmax"
    Params = LogSoftmaxParams
    flops_per_element = 5

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        softmax_axis(self.p.dim, in_shapes[0])
        return in_shapes[0]

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, tuple]:
        x = xs[0]
        axis = softmax_axis(self.p.dim, x.shape[1:])
        shifted = x - x.max(axis=axis, keepdims=True)
        y = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
        return y, (y, axis)

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        y, axis = cache
        return [dy - np.exp(y) * dy.sum(axis=axis, keepdims=True)], {}
