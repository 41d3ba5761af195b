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
from netspec.ops.shapes import (
    MAX_RANK,
    Shape,
    batched_axis,
    broadcast_shapes,
    format_shape,
    numel,
    reduce_to,
)

np = lazy_import("numpy")

MAX_INPUT_DIM = 65536
# 64 MiB of float32 per sample: far above any image netspec can train on, far below a typo
MAX_INPUT_VALUES = 2**24


class InputParams(NodeParams):
    op: Literal["input"]
    shape: list[Annotated[int, Field(gt=0, le=MAX_INPUT_DIM)]] = Field(
        min_length=1, max_length=MAX_RANK,
        description="Per-sample shape of any rank: [1, 28, 28] (C, H, W), [197, 768] (tokens, "
                    "features), [784] (features)."
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
    start_dim: int = Field(
        default=1, ge=-MAX_RANK - 1, le=MAX_RANK,
        description="First axis to flatten, PyTorch's (0 is the batch axis, so at least 1; "
                    "negative counts from the end).")
    end_dim: int = Field(
        default=-1, ge=-MAX_RANK - 1, le=MAX_RANK,
        description="Last axis to flatten, PyTorch's; -1 is the last.")


@register
class Flatten(Op):
    """Axes start_dim..end_dim (PyTorch's, counting the batch axis) joined into one, in
    row-major order; by default every per-sample axis: (C, H, W) -> (C*H*W,). Any rank in,
    the same rank less end_dim - start_dim out."""

    name = "flatten"
    Params = FlattenParams
    keeps_image = False

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        shape = in_shapes[0]
        start = batched_axis(self.p.start_dim, shape, "start_dim") - 1
        end = batched_axis(self.p.end_dim, shape, "end_dim") - 1
        if start > end:
            raise ShapeError(f"start_dim {self.p.start_dim} comes after end_dim "
                             f"{self.p.end_dim} for an input of shape {format_shape(shape)}; "
                             f"swap them")
        return shape[:start] + (numel(shape[start:end + 1]),) + shape[end + 1:]

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, Shape]:
        x = xs[0]
        out = self.output_shape([x.shape[1:]])
        return x.reshape(x.shape[0], *out), x.shape

    def backward(self, cache: Shape, dy: Array) -> tuple[list[Array | None], Grads]:
        return [dy.reshape(cache)], {}


class AddParams(NodeParams):
    op: Literal["add"]


@register
class Add(Op):
    """Element-wise sum of two or more inputs (residual connections), as PyTorch's ``+``:
    inputs of one rank whose axes match or are 1, an axis of size 1 repeated along the
    others' ((C, 1, 1) + (C, H, W), (1, D) + (T, D))."""

    name = "add"
    Params = AddParams
    min_inputs = 2
    max_inputs = None

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        if len({len(shape) for shape in in_shapes}) > 1:
            return broadcast_shapes(in_shapes, "add")  # says the ranks differ
        try:
            return broadcast_shapes(in_shapes, "add")
        except ShapeError as exc:
            raise ShapeError(f"{exc}; insert a 1x1 conv2d or a pooling node on the "
                             f"mismatched branch") from None

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
        dtype = np.result_type(*xs)
        shapes = [x.shape for x in xs]
        broadcast = any(shape != shapes[0] for shape in shapes[1:])
        if broadcast:
            out = np.empty(np.broadcast_shapes(*shapes), dtype)
        else:
            # the sum is laid out as the first input: adding arrays of one memory order runs
            # along contiguous memory; it goes into that input when the executor says nothing
            # else reads it
            out = xs[0] if fusion.overwrite_input and xs[0].dtype == dtype else \
                empty_in_order(xs[0].shape, dtype, memory_order(xs[0]), workspace)
        np.add(xs[0], xs[1], out=out)
        for x in xs[2:]:
            out += x
        if fusion.relu:
            relu_into(out, out)
        return out, (shapes if broadcast else len(xs), out if fusion.relu else None, workspace)

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        inputs, relu_out, workspace = cache
        if relu_out is not None:
            # the fused ReLU's backward, for every input alike
            order = memory_order(relu_out)
            dy = relu_gradient(
                dy, relu_out, out=empty_in_order(relu_out.shape, dy.dtype, order, workspace),
                positive=empty_in_order(relu_out.shape, np.bool_, order, workspace))
        if isinstance(inputs, int):
            return [dy] * inputs, {}
        # an input repeated along an axis receives the sum of the gradient along it
        return [reduce_to(dy, shape) for shape in inputs], {}


class ConcatParams(NodeParams):
    op: Literal["concat"]
    dim: int = Field(
        default=1, ge=-MAX_RANK - 1, le=MAX_RANK,
        description="Axis to join along, PyTorch's torch.cat dim (1 = the first per-sample "
                    "axis, channels of an image or tokens of a sequence; negative counts from "
                    "the end).")
    axis: int | None = Field(
        default=None, ge=0, le=MAX_RANK - 1,
        description="The same axis counted per sample (0 = channels); dim - 1. Give one of "
                    "dim and axis.")

    @model_validator(mode="after")
    def _one_axis(self) -> ConcatParams:
        if "dim" in self.model_fields_set and self.axis is not None:
            raise ValueError("give either 'dim' (PyTorch's, counting the batch axis) or "
                             "'axis' (per sample), not both")
        return self


@register
class Concat(Op):
    """Join inputs along one axis (dim, PyTorch's; channels by default); other axes must
    match. Any rank, all inputs of one rank: (1, 768) and (196, 768) along dim 1 give
    (197, 768)."""

    name = "concat"
    Params = ConcatParams
    min_inputs = 2
    max_inputs = None

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        first = in_shapes[0]
        listed = ", ".join(format_shape(s) for s in in_shapes)
        if self.p.axis is not None and self.p.axis >= len(first):
            raise ShapeError(
                f"cannot concatenate along axis {self.p.axis}: inputs have shapes {listed}"
            )
        axis = self.axis(first) - 1
        if any(len(s) != len(first) for s in in_shapes):
            if self.p.axis is not None:
                raise ShapeError(
                    f"cannot concatenate along axis {axis}: inputs have shapes {listed}")
            raise ShapeError(f"inputs have shapes {listed}, of different ranks; concat joins "
                             f"values of one rank (reshape or flatten one of them first)")
        for shape in in_shapes[1:]:
            if shape[:axis] + shape[axis + 1 :] != first[:axis] + first[axis + 1 :]:
                if self.p.axis is not None:
                    raise ShapeError(
                        f"inputs must match on every axis but {axis}, got {listed}")
                # PyTorch's dims, as the user wrote dim: the first that differs
                differs = next(a for a in range(len(first)) if a != axis
                               and shape[a] != first[a])
                raise ShapeError(
                    f"inputs have shapes {listed}; joined along dim {axis + 1}, every other "
                    f"axis must match, but dim {differs + 1} has {first[differs]} and "
                    f"{shape[differs]}")
        joined = sum(s[axis] for s in in_shapes)
        return first[:axis] + (joined,) + first[axis + 1 :]

    def axis(self, shape: Shape) -> int:
        """The axis joined, in the batched array (PyTorch's dim, from 1)."""
        if self.p.axis is not None:
            return self.p.axis + 1
        return batched_axis(self.p.dim, shape)

    fresh_output = True

    def __init__(self, params: ConcatParams):
        super().__init__(params)
        self.workspace = Workspace()

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, list[int]]:
        axis = self.axis(xs[0].shape[1:])
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
        return list(np.split(dy, splits, axis=self.axis(dy.shape[1:]))), {}
