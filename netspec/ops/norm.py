"""Layer normalisation: PyTorch's ``layernorm`` over the trailing axes of any rank, and the
channels-first ``layernorm2d`` of ConvNeXt (torchvision's LayerNorm2d: the same statistics over
the channels of each pixel of a (C, H, W) image)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field

from netspec.common.errors import ShapeError
from netspec.common.lazy import lazy_import
from netspec.ops.base import Array, Context, Grads, NodeParams, Op, ParamSpec, register
from netspec.ops.core import MAX_INPUT_DIM
from netspec.ops.shapes import MAX_RANK, Shape, format_shape, numel, require_rank

np = lazy_import("numpy")


def _mean(x: Array, axes: tuple[int, ...], other: Array | None = None) -> Array:
    """The mean of ``x`` (of ``x * other`` with ``other``) over ``axes``, which are kept. Over
    the last axis alone (a token's features) it is einsum's sum of products: numpy's
    reductions along short contiguous rows cost several times more, and no product is
    stored."""
    if axes != (x.ndim - 1,):
        return (x if other is None else x * other).mean(axis=axes, keepdims=True)
    total = np.einsum("...i->...", x) if other is None else \
        np.einsum("...i,...i->...", x, other)
    total /= x.shape[-1]
    return total[..., None]


def normalise(x: Array, axes: tuple[int, ...], eps: float) -> tuple[Array, Array]:
    """(x - mean) / sqrt(var + eps) over ``axes`` (the biased variance, as PyTorch's), and
    1 / sqrt(var + eps) with those axes kept, for the backward."""
    centred = x - _mean(x, axes)
    inv_std = _mean(centred, axes, centred)
    inv_std += eps
    np.sqrt(inv_std, out=inv_std)
    np.divide(1, inv_std, out=inv_std)
    centred *= inv_std
    return centred, inv_std


def normalise_backward(dxhat: Array, xhat: Array, inv_std: Array,
                       axes: tuple[int, ...]) -> Array:
    """The input gradient of :func:`normalise` given the gradient of its output."""
    dx = dxhat - _mean(dxhat, axes)
    dx -= xhat * _mean(dxhat, axes, xhat)
    dx *= inv_std
    return dx


class _LayerNormBase(Op):
    """A normalisation over some axes, then a learnt scale and shift of their shape."""

    def axes(self, ndim: int) -> tuple[int, ...]:
        raise NotImplementedError

    def affine_shape(self, ndim: int) -> tuple[int, ...]:
        """The weight's shape as it broadcasts against the batched input."""
        raise NotImplementedError

    def flops(self, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        # mean, centring, variance, scaling, and the affine multiply-add
        return (7 if self.p.elementwise_affine else 5) * numel(out_shape)

    def forward(self, xs: list[Array], params: dict[str, Array], buffers,
                ctx: Context) -> tuple[Array, tuple]:
        x = xs[0]
        axes = self.axes(x.ndim)
        xhat, inv_std = normalise(x, axes, self.p.eps)
        if not self.p.elementwise_affine:
            return xhat, (xhat, inv_std, None)
        weight = params["weight"].reshape(self.affine_shape(x.ndim))
        y = xhat * weight
        if "bias" in params:
            y += params["bias"].reshape(self.affine_shape(x.ndim))
        return y, (xhat, inv_std, weight)

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        xhat, inv_std, weight = cache
        axes = self.axes(dy.ndim)
        if weight is None:
            return [normalise_backward(dy, xhat, inv_std, axes)], {}
        # the affine parameters gather over every axis they are broadcast along
        spread = tuple(axis for axis, size in enumerate(self.affine_shape(dy.ndim))
                       if size == 1)
        grads = {"weight": (dy * xhat).sum(axis=spread).reshape(self.p_shape)}
        if self.p.bias:
            grads["bias"] = dy.sum(axis=spread).reshape(self.p_shape)
        return [normalise_backward(dy * weight, xhat, inv_std, axes)], grads

    @property
    def p_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def param_specs(self, in_shapes: Sequence[Shape]) -> dict[str, ParamSpec]:
        if not self.p.elementwise_affine:
            return {}
        specs = {"weight": ParamSpec(self.p_shape, "ones")}
        if self.p.bias:
            specs["bias"] = ParamSpec(self.p_shape, "zeros")
        return specs


class LayerNormParams(NodeParams):
    op: Literal["layernorm"]
    normalized_shape: int | list[Annotated[int, Field(gt=0, le=MAX_INPUT_DIM)]] = Field(
        description="The trailing axes normalised together, PyTorch's: 768 (the features of "
                    "each token) or [C, H, W]; the input's shape must end with it.")
    eps: float = Field(default=1e-5, gt=0, le=1, allow_inf_nan=False,
                       description="Added to the variance before its square root.")
    elementwise_affine: bool = Field(
        default=True, description="Learn a scale (weight, starting at 1) and a shift (bias, "
                                  "starting at 0) of normalized_shape.")
    bias: bool = Field(default=True, description="Learn the shift (with elementwise_affine).")


@register
class LayerNorm(_LayerNormBase):
    """Normalise each sample over its trailing axes (torch.nn.LayerNorm), any rank: (T, D)
    with normalized_shape D normalises every token on its own."""

    name = "layernorm"
    Params = LayerNormParams

    @property
    def p_shape(self) -> tuple[int, ...]:
        shape = self.p.normalized_shape
        return (shape,) if isinstance(shape, int) else tuple(shape)

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        shape, tail = in_shapes[0], self.p_shape
        if len(tail) > MAX_RANK or shape[len(shape) - len(tail):] != tail:
            raise ShapeError(f"input has shape {format_shape(shape)}; normalized_shape "
                             f"{format_shape(tail)} does not match its last "
                             f"{'axis' if len(tail) == 1 else f'{len(tail)} axes'} "
                             f"{format_shape(shape[-len(tail):])}")
        return shape

    def axes(self, ndim: int) -> tuple[int, ...]:
        return tuple(range(ndim - len(self.p_shape), ndim))

    def affine_shape(self, ndim: int) -> tuple[int, ...]:
        return (1,) * (ndim - len(self.p_shape)) + self.p_shape


class LayerNorm2dParams(NodeParams):
    op: Literal["layernorm2d"]
    normalized_shape: int = Field(gt=0, le=MAX_INPUT_DIM,
                                  description="The channels C of the (C, H, W) input.")
    eps: float = Field(default=1e-6, gt=0, le=1, allow_inf_nan=False,
                       description="Added to the variance (ConvNeXt's 1e-6 by default).")
    elementwise_affine: bool = Field(default=True,
                                     description="Learn a scale and a shift per channel.")
    bias: bool = Field(default=True, description="Learn the shift (with elementwise_affine).")


@register
class LayerNorm2d(_LayerNormBase):
    """Layer norm over the channels of each pixel of a (C, H, W) image, channels first
    (torchvision's LayerNorm2d in ConvNeXt: permute, layer norm over C, permute back)."""

    name = "layernorm2d"
    Params = LayerNorm2dParams

    @property
    def p_shape(self) -> tuple[int, ...]:
        return (self.p.normalized_shape,)

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        shape = in_shapes[0]
        require_rank(shape, (3,), "layernorm2d input")
        if shape[0] != self.p.normalized_shape:
            raise ShapeError(f"input has shape {format_shape(shape)}; normalized_shape "
                             f"{self.p.normalized_shape} does not match its {shape[0]} "
                             f"channels")
        return shape

    def axes(self, ndim: int) -> tuple[int, ...]:
        return (1,)

    def affine_shape(self, ndim: int) -> tuple[int, ...]:
        return (1, self.p.normalized_shape, 1, 1)
