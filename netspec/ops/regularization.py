"""Ops that behave differently in training and inference: dropout and batch normalisation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from netspec.common.lazy import lazy_import
from netspec.ops.activations import relu_gradient, relu_into
from netspec.ops.base import (
    NO_FUSION,
    Array,
    Context,
    Fusion,
    Grads,
    NodeParams,
    Op,
    ParamSpec,
    register,
)
from netspec.ops.conv import Workspace, empty, memory_order, row_sums
from netspec.ops.shapes import Shape, numel, require_rank

np = lazy_import("numpy")


class DropoutParams(NodeParams):
    op: Literal["dropout"]
    p: float = Field(default=0.5, ge=0, lt=1, description="Probability of zeroing an element.")


@register
class Dropout(Op):
    """Inverted dropout: scales kept elements by 1/(1-p) in training, identity in inference."""

    name = "dropout"
    Params = DropoutParams

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        return in_shapes[0]

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, Array | None]:
        x = xs[0]
        if not ctx.train or self.p.p == 0:
            return x, None
        keep = 1.0 - self.p.p
        mask = (ctx.rng.random(x.shape, dtype=np.float32) < keep).astype(x.dtype)
        mask *= x.dtype.type(1.0 / keep)
        return x * mask, mask

    def backward(self, cache: Array | None, dy: Array) -> tuple[list[Array | None], Grads]:
        return [dy if cache is None else dy * cache], {}


class BatchNormParams(NodeParams):
    op: Literal["batchnorm"]
    eps: float = Field(default=1e-5, gt=0, lt=1,
                       description="Added to the variance before its square root.")
    momentum: float = Field(
        default=0.1, gt=0, le=1, description="Weight of the new batch in the running statistics."
    )


@register
class BatchNorm(Op):
    """Batch normalisation over channels of (C, H, W) or features of (F,), PyTorch convention.

    Training normalises with the batch's biased variance and updates the running statistics
    with the unbiased one; inference uses the running statistics.
    """

    name = "batchnorm"
    Params = BatchNormParams

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        require_rank(in_shapes[0], (1, 3), "batchnorm input")
        return in_shapes[0]

    def param_specs(self, in_shapes: Sequence[Shape]) -> dict[str, ParamSpec]:
        channels = in_shapes[0][0]
        return {"weight": ParamSpec((channels,), "ones"), "bias": ParamSpec((channels,), "zeros")}

    def buffer_specs(self, in_shapes: Sequence[Shape]) -> dict[str, ParamSpec]:
        channels = in_shapes[0][0]
        return {
            "running_mean": ParamSpec((channels,), "zeros"),
            "running_var": ParamSpec((channels,), "ones"),
        }

    def flops(self, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        return 2 * numel(out_shape)

    absorbs_relu = True

    def __init__(self, params: BatchNormParams):
        super().__init__(params)
        self.workspace = Workspace()

    def forward(
        self, xs: list[Array], params: dict[str, Array], buffers: dict[str, Array], ctx: Context
    ) -> tuple[Array, tuple]:
        return self.fused_forward(xs, params, buffers, ctx, NO_FUSION)

    def output_is_fresh(self, fusion: Fusion) -> bool:
        # the cache holds the output only for a fused ReLU's backward
        return not fusion.relu

    def fused_forward(self, xs: list[Array], params: dict[str, Array],
                      buffers: dict[str, Array], ctx: Context,
                      fusion: Fusion) -> tuple[Array, tuple]:
        x = xs[0]
        rows, order = channel_rows(x)
        # a copy made by channel_rows is ours to overwrite too
        owned = fusion.overwrite_input or not np.may_share_memory(rows, x)
        workspace = self.workspace if ctx.train else None
        gamma, beta = params["weight"], params["bias"]
        if ctx.train:
            count = rows.shape[1]
            mean = row_sums(rows) / count
            if owned:
                centered = rows
                centered -= mean[:, None]
            else:
                centered = np.subtract(rows, mean[:, None],
                                       out=empty(rows.shape, rows.dtype, workspace))
            var = row_dots(centered, centered) / count
            momentum = self.p.momentum
            unbiased = var * (count / max(count - 1, 1))
            buffers["running_mean"] *= 1 - momentum
            buffers["running_mean"] += momentum * mean
            buffers["running_var"] *= 1 - momentum
            buffers["running_var"] += momentum * unbiased
            inv_std = 1.0 / np.sqrt(var + self.p.eps)
            y = np.multiply(centered, (gamma * inv_std)[:, None],
                            out=empty(rows.shape, rows.dtype, workspace))
            y += beta[:, None]
            cache_rows, running_mean = centered, None
        else:
            running_mean = buffers["running_mean"]
            inv_std = 1.0 / np.sqrt(buffers["running_var"] + self.p.eps)
            scale, shift = self.inference_affine(params, buffers)
            # the input is cached for a backward unless the executor says nothing reads it
            y = np.multiply(rows, scale[:, None],
                            out=rows if fusion.overwrite_input else None)
            y += shift[:, None]
            cache_rows = rows
        if fusion.relu:
            relu_into(y, y)
        cache = (cache_rows, running_mean, inv_std, gamma, order, y if fusion.relu else None,
                 workspace)
        return from_channel_rows(y, x.shape, order), cache

    def inference_affine(self, params: dict[str, Array],
                         buffers: dict[str, Array]) -> tuple[Array, Array]:
        """Inference is ``x * scale + shift`` per channel: these two vectors."""
        scale = params["weight"] * (1.0 / np.sqrt(buffers["running_var"] + self.p.eps))
        return scale, params["bias"] - buffers["running_mean"] * scale

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        inputs, running_mean, inv_std, gamma, order, relu_out, workspace = cache
        dy_rows = channel_rows(dy, order)[0]
        if relu_out is not None:
            # the fused ReLU's backward: dy where its output is positive
            dy_rows = relu_gradient(dy_rows, relu_out,
                                    out=empty(relu_out.shape, relu_out.dtype, workspace),
                                    positive=empty(relu_out.shape, np.bool_, workspace))
        dbeta = row_sums(dy_rows)
        if running_mean is not None:
            # inference: the statistics are constants
            dx = empty(dy_rows.shape, dy_rows.dtype, workspace)
            x_hat = np.subtract(inputs, running_mean[:, None], out=dx)
            x_hat *= inv_std[:, None]
            dgamma = row_dots(dy_rows, x_hat)
            np.multiply(dy_rows, (gamma * inv_std)[:, None], out=dx)
            return [from_channel_rows(dx, dy.shape, order)], {"weight": dgamma, "bias": dbeta}
        centered, count = inputs, inputs.shape[1]
        dgamma = row_dots(dy_rows, centered) * inv_std
        # dx = gamma / std * (dy - mean(dy) - x_hat * mean(dy * x_hat)), x_hat = centered / std,
        # computed in the memory of the centred input: in training it is this node's own (its
        # input's, which the executor let it overwrite, or a copy), and nothing reads it after
        # this; working in memory the forward touched is faster than filling a fresh array
        dx = np.multiply(centered, (dgamma * inv_std / count)[:, None], out=centered)
        dx += (dbeta / count)[:, None]
        np.subtract(dy_rows, dx, out=dx)
        dx *= (gamma * inv_std)[:, None]
        return [from_channel_rows(dx, dy.shape, order)], {"weight": dgamma, "bias": dbeta}


def row_dots(a: Array, b: Array) -> Array:
    """The dot product of each row of ``a`` with the same row of ``b``: one BLAS dot per
    row, twice as fast as ``np.einsum("ij,ij->i", a, b)`` on a layer's (channels, positions)."""
    return np.matmul(a[:, None, :], b[:, :, None]).reshape(a.shape[0])


def channel_rows(x: Array, order: Sequence[int] | None = None) -> tuple[Array, tuple[int, ...]]:
    """``x`` as a C-contiguous (channels, rest) matrix, and the memory order of its axes.

    Per-channel sums then run along contiguous rows, several times faster than reductions
    over the other axes of an (N, C, H, W) view. No copy is made when channels are outermost
    in ``x``'s memory, as in a convolution's batch-innermost output; ``order`` (default:
    channels first, the rest as ``x`` lies) fixes the arrangement, so that a gradient is
    laid out as its forward was.
    """
    if order is None:
        order = (1, *(axis for axis in memory_order(x) if axis != 1))
    order = tuple(order)
    arranged = np.ascontiguousarray(x.transpose(order))
    return arranged.reshape(x.shape[1], -1), order


def from_channel_rows(rows: Array, shape: Shape, order: Sequence[int]) -> Array:
    """The inverse of :func:`channel_rows`: an array of ``shape`` viewing ``rows``."""
    return rows.reshape([shape[axis] for axis in order]).transpose(
        sorted(range(len(order)), key=list(order).__getitem__))
