"""Stochastic depth (torchvision's ``StochasticDepth``): in training, whole samples of a
residual branch are dropped and the kept ones scaled by 1/(1-p); the identity in inference.
The draw comes from the run's generator, as dropout's does, so one seed fixes it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from netspec.common.lazy import lazy_import
from netspec.ops.base import Array, Context, Grads, NodeParams, Op, register
from netspec.ops.shapes import Shape

np = lazy_import("numpy")


class StochasticDepthParams(NodeParams):
    op: Literal["stochastic_depth"]
    p: float = Field(ge=0, lt=1, description="Probability of dropping a sample's branch.")
    # torchvision's "batch" mode (one draw for the whole batch) is not offered
    mode: Literal["row"] = Field(
        default="row", description="'row': each sample's branch is dropped on its own draw.")


@register
class StochasticDepth(Op):
    """x * mask / (1 - p) with one Bernoulli(1 - p) draw per sample, any rank (tokens
    (T, D) as images), as torchvision.ops.stochastic_depth."""

    name = "stochastic_depth"
    Params = StochasticDepthParams

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        return in_shapes[0]

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, Array | None]:
        x = xs[0]
        if not ctx.train or self.p.p == 0:
            return x, None
        keep = 1.0 - self.p.p
        kept = ctx.rng.random(x.shape[0]) < keep
        mask = (kept.astype(x.dtype) / x.dtype.type(keep)).reshape(-1, *[1] * (x.ndim - 1))
        return x * mask, mask

    def backward(self, cache: Array | None, dy: Array) -> tuple[list[Array | None], Grads]:
        return [dy if cache is None else dy * cache], {}
