"""Structural ops: the network's input, flatten, and the merges ``add`` and ``concat``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field, model_validator

from netspec.common.errors import ShapeError
from netspec.common.lazy import lazy_import
from netspec.ops.activations import relu_gradient, relu_into
from netspec.ops.base import NO_FUSION, Array, Context, Fusion, Grads, NodeParams, Op, register
from netspec.ops.conv import Workspace, empty_in_order, memory_order
from netspec.ops.shapes import Shape, format_shape, numel

np = lazy_import("numpy")

MAX_INPUT_DIM = 65536
# 64 MiB of float32 per sample: far above any image netspec can train on, far below a typo
MAX_INPUT_VALUES = 2**24


class InputParams(NodeParams):
    op: Literal["input"]
    shape: list[Annotated[int, Field(gt=0, le=MAX_INPUT_DIM)]] = Field(
        min_length=1, max_length=4, description="Per-sample shape, e.g. [1, 28, 28] (C, H, W)."
    )

    @model_validator(mode="after")
    def _bounded_size(self) -> InputParams:
        if numel(self.shape) > MAX_INPUT_VALUES:
            raise ValueError(
                f"shape {self.shape} holds {numel(self.shape):,} values per sample, more than "
                f"the {MAX_INPUT_VALUES:,} netspec accepts; downsample the input"
            )
        return self


@register
class Input(Op):
    """A network input; its shape is given, not inferred."""

    name = "input"
    Params = InputParams
    min_inputs = 0
    max_inputs = 0

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        return tuple(self.p.shape)

    def forward(self, xs, params, buffers, ctx):
        return xs[0], None

    def backward(self, cache, dy):
        return [dy], {}


class FlattenParams(NodeParams):
    op: Literal["flatten"]


@register
class Flatten(Op):
    """Any per-sample shape to (product,), in row-major (C, H, W) order."""

    name = "flatten"
    Params = FlattenParams

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        return (numel(in_shapes[0]),)

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, Shape]:
        x = xs[0]
        return x.reshape(x.shape[0], -1), x.shape

    def backward(self, cache: Shape, dy: Array) -> tuple[list[Array | None], Grads]:
        return [dy.reshape(cache)], {}


class AddParams(NodeParams):
    op: Literal["add"]


@register
class Add(Op):
    """Element-wise sum of two or more inputs of identical shape (residual connections)."""

    name = "add"
    Params = AddParams
    min_inputs = 2
    max_inputs = None

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        first = in_shapes[0]
        if any(shape != first for shape in in_shapes[1:]):
            listed = ", ".join(format_shape(s) for s in in_shapes)
            raise ShapeError(
                f"inputs must have identical shapes, got {listed}; insert a 1x1 conv2d or a "
                f"pooling node on the mismatched branch"
            )
        return first

    def flops(self, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        return numel(out_shape) * (len(in_shapes) - 1)

    absorbs_relu = True
    fresh_output = True

    def __init__(self, params: AddParams):
        super().__init__(params)
        self.workspace = Workspace()

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, tuple]:
        return self.fused_forward(xs, params, buffers, ctx, NO_FUSION)

    def fused_forward(self, xs: list[Array], params, buffers, ctx: Context,
                      fusion: Fusion) -> tuple[Array, tuple]:
        workspace = self.workspace if ctx.train else None
        # the sum is laid out as the first input: adding arrays of one memory order runs
        # along contiguous memory; it goes into that input when the executor says nothing
        # else reads it
        dtype = np.result_type(*xs)
        out = xs[0] if fusion.overwrite_input and xs[0].dtype == dtype else \
            empty_in_order(xs[0].shape, dtype, memory_order(xs[0]), workspace)
        np.add(xs[0], xs[1], out=out)
        for x in xs[2:]:
            out += x
        if fusion.relu:
            relu_into(out, out)
        return out, (len(xs), out if fusion.relu else None, workspace)

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        count, relu_out, workspace = cache
        if relu_out is not None:
            # the fused ReLU's backward, for every input alike
            order = memory_order(relu_out)
            dy = relu_gradient(
                dy, relu_out, out=empty_in_order(relu_out.shape, dy.dtype, order, workspace),
                positive=empty_in_order(relu_out.shape, np.bool_, order, workspace))
        return [dy] * count, {}


class ConcatParams(NodeParams):
    op: Literal["concat"]
    axis: int = Field(
        default=0, ge=0, le=3, description="Per-sample axis to join along (0 = channels)."
    )


@register
class Concat(Op):
    """Join inputs along a per-sample axis (channels by default); other axes must match."""

    name = "concat"
    Params = ConcatParams
    min_inputs = 2
    max_inputs = None

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        axis = self.p.axis
        first = in_shapes[0]
        listed = ", ".join(format_shape(s) for s in in_shapes)
        if any(len(s) != len(first) for s in in_shapes) or axis >= len(first):
            raise ShapeError(
                f"cannot concatenate along axis {axis}: inputs have shapes {listed}"
            )
        for shape in in_shapes[1:]:
            if shape[:axis] + shape[axis + 1 :] != first[:axis] + first[axis + 1 :]:
                raise ShapeError(
                    f"inputs must match on every axis but {axis}, got {listed}"
                )
        joined = sum(s[axis] for s in in_shapes)
        return first[:axis] + (joined,) + first[axis + 1 :]

    fresh_output = True

    def __init__(self, params: ConcatParams):
        super().__init__(params)
        self.workspace = Workspace()

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, list[int]]:
        axis = self.p.axis + 1
        sizes = [x.shape[axis] for x in xs]
        shape = list(xs[0].shape)
        shape[axis] = sum(sizes)
        # laid out as the first input: for convolution outputs (batch innermost) joined along
        # channels, each input is then one contiguous block of the result and the copy runs
        # along memory, and a batchnorm after it needs no copy either
        out = empty_in_order(shape, np.result_type(*xs), memory_order(xs[0]),
                             self.workspace if ctx.train else None)
        return np.concatenate(xs, axis=axis, out=out), sizes

    def backward(self, cache: list[int], dy: Array) -> tuple[list[Array | None], Grads]:
        splits = np.cumsum(cache)[:-1]
        return list(np.split(dy, splits, axis=self.p.axis + 1)), {}
