"""Element-wise product of two inputs, broadcasting per-sample axes of size 1 (PyTorch's
``torch.mul``): the gate of squeeze-and-excitation, ``(C, 1, 1) x (C, H, W)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from netspec.common.errors import ShapeError
from netspec.common.lazy import lazy_import
from netspec.ops.base import Array, Context, Grads, NodeParams, Op, register
from netspec.ops.shapes import Shape, format_shape, numel

np = lazy_import("numpy")


def broadcast_shape(first: Shape, second: Shape) -> Shape:
    """The shape two per-sample shapes of one rank broadcast to: each axis equal, or 1 in one
    of them.

    >>> broadcast_shape((4, 1, 1), (4, 7, 7))
    (4, 7, 7)
    """
    if len(first) != len(second):
        raise ShapeError(
            f"inputs have shapes {format_shape(first)} and {format_shape(second)} of different "
            f"ranks; mul broadcasts axes of size 1 between inputs of one rank")
    for axis, (a, b) in enumerate(zip(first, second)):
        if a != b and 1 not in (a, b):
            raise ShapeError(
                f"inputs of shapes {format_shape(first)} and {format_shape(second)} do not "
                f"broadcast: axis {axis} has {a} and {b}; each axis must match or be 1 in "
                f"one of them")
    return tuple(max(a, b) for a, b in zip(first, second))


def reduce_to(gradient: Array, shape: Sequence[int]) -> Array:
    """``gradient`` summed over the axes where an input of batch shape ``shape`` was
    broadcast."""
    axes = tuple(axis for axis, (g, s) in enumerate(zip(gradient.shape, shape)) if s == 1 != g)
    return gradient.sum(axis=axes, keepdims=True) if axes else gradient


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
        return broadcast_shape(in_shapes[0], in_shapes[1])

    def flops(self, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        return numel(out_shape)

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, tuple]:
        a, b = xs
        return np.multiply(a, b), (a, b)

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        a, b = cache
        return [reduce_to(dy * b, a.shape), reduce_to(dy * a, b.shape)], {}
