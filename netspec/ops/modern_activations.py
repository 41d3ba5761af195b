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
_SQRT_TWO_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_TWO_PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_CUBIC = 0.044715

# erf by W. J. Cody, "Rational Chebyshev approximations for the error function", Mathematics
# of Computation 23 (1969) 631-637, with the coefficients of his CALERF (netlib specfun), the
# routine C libraries' erf descends from. Below _ERF_SMALL: erf(z) = z R1(z^2); up to 4:
# erfc(z) = exp(-z^2) R2(z); beyond: erfc(z) = exp(-z^2) / z (1/sqrt(pi) - R3(1/z^2) / z^2).
# Each R is (numerator coefficients, lowest power first, ...) / (monic denominator's).
_ERF_SMALL = 0.46875
_ERF_R1 = ((3.20937758913846947e03, 3.77485237685302021e02, 1.13864154151050156e02,
            3.16112374387056560e00, 1.85777706184603153e-1),
           (2.84423683343917062e03, 1.28261652607737228e03, 2.44024637934444173e02,
            2.36012909523441209e01))
_ERF_R2 = ((1.23033935479799725e03, 2.05107837782607147e03, 1.71204761263407058e03,
            8.81952221241769090e02, 2.98635138197400131e02, 6.61191906371416295e01,
            8.88314979438837594e00, 5.64188496988670089e-1, 2.15311535474403846e-8),
           (1.23033935480374942e03, 3.43936767414372164e03, 4.36261909014324716e03,
            3.29079923573345963e03, 1.62138957456669019e03, 5.37181101862009858e02,
            1.17693950891312499e02, 1.57449261107098347e01))
_ERF_R3 = ((6.58749161529837803e-4, 1.60837851487422766e-2, 1.25781726111229246e-1,
            3.60344899949804439e-1, 3.05326634961232344e-1, 1.63153871373020978e-2),
           (2.33520497626869185e-3, 6.05183413124413191e-2, 5.27905102951428412e-1,
            1.87295284992346047e00, 2.56852019228982242e00))
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
_ERF_MIDDLE_END = 4.0
# erfc(6) < 2^-54: erf is 1 to double precision from here on
_ERF_SATURATES = 6.0
# elements per pass: the dozens of temporaries of one chunk stay in the CPU's L2 cache
_ERF_CHUNK = 1 << 15


def _rational(t: Array, coefficients: tuple[tuple[float, ...], tuple[float, ...]]) -> Array:
    """numerator(t) / denominator(t) by Horner's rule, in ``t``'s dtype, in new arrays."""
    top, bottom = coefficients
    kind = t.dtype.type
    numerator = t * kind(top[-1])
    for c in reversed(top[1:-1]):
        numerator += kind(c)
        numerator *= t
    numerator += kind(top[0])
    denominator = t + kind(bottom[-1])
    for c in reversed(bottom[:-1]):
        denominator *= t
        denominator += kind(c)
    numerator /= denominator
    return numerator


def _erf_chunk(z: Array, out: Array) -> None:
    """erf of a 1-D chunk into ``out``, both in the computing dtype. Every range is
    evaluated on every element with the argument clipped into it, then the right one kept:
    arithmetic on whole arrays is many times cheaper than gathering each range's elements."""
    kind = z.dtype.type
    magnitude = np.abs(z)
    inner = np.clip(z, -_ERF_SMALL, _ERF_SMALL)
    small = _rational(inner * inner, _ERF_R1)
    small *= inner
    middle = np.clip(magnitude, _ERF_SMALL, _ERF_MIDDLE_END)
    complement = _rational(middle, _ERF_R2)
    np.multiply(middle, middle, out=middle)
    np.negative(middle, out=middle)
    complement *= np.exp(middle, out=middle)
    far = np.flatnonzero(magnitude > _ERF_MIDDLE_END)
    if far.size:
        tail = np.minimum(magnitude[far], kind(_ERF_SATURATES))
        inverse_square = 1 / (tail * tail)
        series = inverse_square * _rational(inverse_square, _ERF_R3)
        tail_complement = (kind(_INV_SQRT_PI) - series) / tail * np.exp(-tail * tail)
        tail_complement[tail >= _ERF_SATURATES] = 0
        complement[far] = tail_complement
    np.subtract(1, complement, out=complement)
    np.copysign(complement, z, out=complement)
    np.copyto(complement, small, where=magnitude <= _ERF_SMALL)
    out[...] = complement


def erf(z: Array) -> Array:
    """The error function, element-wise (NumPy has none), in ``z``'s dtype: Cody's rational
    approximations, to double precision in float64 (within 3e-16 of math.erf, 4.5e-16
    relative; nan, +-inf and -0 as C's erf) and to a few ulps in float32, which is computed
    in float32 (float64 work would cost twice the time for digits the result drops)."""
    values = np.asarray(z)
    kind = np.float32 if values.dtype == np.float32 else np.float64
    flat = values.reshape(-1)
    result = np.empty(flat.shape, kind)
    for start in range(0, flat.size, _ERF_CHUNK):
        _erf_chunk(flat[start:start + _ERF_CHUNK].astype(kind, copy=False),
                   result[start:start + _ERF_CHUNK])
    return result.reshape(values.shape)


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
        # in place on new arrays, in PyTorch's order of operations (the same bits as
        # 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x * x * x))) and
        # x * 0.5 * (1 + erf(x / sqrt(2))))
        x = xs[0]
        if self.p.approximate == "tanh":
            t = x * x.dtype.type(_GELU_CUBIC)
            t *= x
            t *= x
            t += x
            t *= x.dtype.type(_SQRT_TWO_OVER_PI)
            np.tanh(t, out=t)
            y = t + 1
            y *= x
            y *= 0.5
            return y, (x, t)
        cdf = erf(x * x.dtype.type(_SQRT_HALF))
        cdf += 1
        cdf *= 0.5
        return x * cdf, (x, cdf)

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        x, value = cache
        if self.p.approximate == "tanh":
            t = value
            # 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
            slope = x * x.dtype.type(3 * _GELU_CUBIC)
            slope *= x
            slope += 1
            slope *= x.dtype.type(_SQRT_TWO_OVER_PI)
            curve = t * t
            np.subtract(1, curve, out=curve)
            outer = x * 0.5
            outer *= curve
            outer *= slope
            gate = t + 1
            gate *= 0.5
            gate += outer
            return [dy * gate], {}
        density = x * x.dtype.type(-0.5)
        density *= x
        np.exp(density, out=density)
        density *= x.dtype.type(_INV_SQRT_TWO_PI)
        density *= x
        density += value
        return [dy * density], {}


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
