"""Ops that behave differently in training and inference: dropout and batch normalisation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field

from netspec.ops.base import Array, Context, Grads, NodeParams, Op, ParamSpec, register
from netspec.shapes import Shape, numel, require_rank


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
    eps: float = Field(default=1e-5, gt=0, lt=1)
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

    def forward(
        self, xs: list[Array], params: dict[str, Array], buffers: dict[str, Array], ctx: Context
    ) -> tuple[Array, tuple]:
        x = xs[0]
        axes = (0,) if x.ndim == 2 else (0, 2, 3)
        view = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
        if ctx.train:
            mean = x.mean(axis=axes)
            var = x.var(axis=axes)
            count = x.size // x.shape[1]
            momentum = self.p.momentum
            unbiased = var * (count / max(count - 1, 1))
            buffers["running_mean"] *= 1 - momentum
            buffers["running_mean"] += momentum * mean
            buffers["running_var"] *= 1 - momentum
            buffers["running_var"] += momentum * unbiased
        else:
            mean, var = buffers["running_mean"], buffers["running_var"]
        inv_std = 1.0 / np.sqrt(var + self.p.eps)
        x_hat = (x - mean.reshape(view)) * inv_std.reshape(view)
        y = x_hat * params["weight"].reshape(view) + params["bias"].reshape(view)
        return y, (x_hat, inv_std, params["weight"], axes, view, ctx.train)

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        x_hat, inv_std, gamma, axes, view, train = cache
        dgamma = (dy * x_hat).sum(axis=axes)
        dbeta = dy.sum(axis=axes)
        scale = (gamma * inv_std).reshape(view)
        if train:
            count = dy.size // dy.shape[1]
            dx = scale * (
                dy - (dbeta / count).reshape(view) - x_hat * (dgamma / count).reshape(view)
            )
        else:
            dx = dy * scale
        return [dx], {"weight": dgamma, "bias": dbeta}
