"""Element-wise product of two inputs, broadcasting per-sample axes of size 1 (PyTorch's
``torch.mul``): the gate of squeeze-and-excitation, ``(C, 1, 1) x (C, H, W)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from netspec.common.lazy import lazy_import
from netspec.ops.base import Array, Context, Grads, NodeParams, Op, register
from netspec.ops.shapes import Shape, broadcast_shapes, numel, reduce_to

np = lazy_import("numpy")


class MulParams(NodeParams):
    op: Literal["mul"]


@register
class Mul(Op):
    """a * b, element-wise; an axis of size 1 in one input is repeated along the other's."""

    name = "mul"
    Params = MulParams
    min_inputs = 2
    max_inputs = 2

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        return broadcast_shapes(in_shapes, "mul")

    def flops(self, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        return numel(out_shape)

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, tuple]:
        a, b = xs
        return np.multiply(a, b), (a, b)

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        a, b = cache
        return [reduce_to(dy * b, a.shape), reduce_to(dy * a, b.shape)], {}
