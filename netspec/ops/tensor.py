"""Ops that move values between axes without computing: reshape, permute, transpose, select,
slice, channel_shuffle, the mean over axes, and the learned tensor (``parameter``).

Axes are PyTorch's ``dim``: the batch axis is 0, so the first per-sample axis is 1, and a
negative dim counts from the end (see :func:`netspec.ops.shapes.batched_axis`). A shape is
per sample, as every netspec shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field, PositiveFloat, model_validator

from netspec.common.errors import ShapeError
from netspec.common.lazy import lazy_import
from netspec.ops.base import (
    WHOLE_NODE,
    Array,
    Context,
    Grads,
    InitName,
    NodeParams,
    Op,
    ParamSpec,
    register,
)
from netspec.ops.core import MAX_INPUT_DIM, MAX_INPUT_VALUES
from netspec.ops.shapes import MAX_RANK, Shape, batched_axis, batched_shape, format_shape, numel

np = lazy_import("numpy")

Dim = Annotated[int, Field(ge=-MAX_RANK - 1, le=MAX_RANK)]


class ReshapeParams(NodeParams):
    op: Literal["reshape"]
    shape: list[Annotated[int, Field(ge=-1, le=MAX_INPUT_DIM)]] = Field(
        min_length=1, max_length=MAX_RANK,
        description="Per-sample shape of the output, e.g. [196, 768]; one entry may be -1, "
                    "the size that makes the values fit (PyTorch's reshape less the batch).")

    @model_validator(mode="after")
    def _one_unknown(self) -> ReshapeParams:
        if self.shape.count(-1) > 1:
            raise ValueError(f"shape {self.shape} has {self.shape.count(-1)} entries -1; at "
                             f"most one size can be inferred")
        if 0 in self.shape:
            raise ValueError(f"shape {self.shape} has an axis of size 0; every size must be "
                             f"positive (or -1 for one inferred size)")
        return self


@register
class Reshape(Op):
    """The same values, row-major, in another per-sample shape of any rank."""

    name = "reshape"
    Params = ReshapeParams
    keeps_image = False

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        shape, target = in_shapes[0], list(self.p.shape)
        total = numel(shape)
        if -1 in target:
            known = numel([size for size in target if size != -1])
            if total % known:
                raise ShapeError(
                    f"cannot reshape {format_shape(shape)} ({total:,} values) to "
                    f"{format_shape(target)}: {total:,} is not a multiple of the "
                    f"{known:,} the other sizes hold")
            target[target.index(-1)] = total // known
        elif numel(target) != total:
            raise ShapeError(
                f"cannot reshape {format_shape(shape)} ({total:,} values) to "
                f"{format_shape(target)} ({numel(target):,} values); the sizes must multiply "
                f"to {total:,}")
        return tuple(target)

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, Shape]:
        x = xs[0]
        return x.reshape(x.shape[0], *self.output_shape([x.shape[1:]])), x.shape

    def backward(self, cache: Shape, dy: Array) -> tuple[list[Array | None], Grads]:
        return [dy.reshape(cache)], {}


def _permutation_error(dims: Sequence[int], rank: int, shape: Shape) -> str | None:
    """Why ``dims`` (PyTorch's, batch included) is not a permutation keeping the batch first,
    or None."""
    if len(dims) != rank + 1:
        return (f"dims {list(dims)} has {len(dims)} entries; the input {batched_shape(shape)} "
                f"has {rank + 1} axes, the batch's included, and dims must name each once")
    axes = [d % (rank + 1) if -(rank + 1) <= d <= rank else None for d in dims]
    if None in axes:
        bad = dims[axes.index(None)]
        return (f"dims {list(dims)}: {bad} is not an axis of the input "
                f"{batched_shape(shape)}; use 0 to {rank} (or -{rank + 1} to -1)")
    if sorted(axes) != list(range(rank + 1)):
        return (f"dims {list(dims)} is not a permutation of the axes 0 to {rank} of the input "
                f"{batched_shape(shape)}; name each axis exactly once")
    if axes[0] != 0:
        return (f"dims {list(dims)} moves the batch axis 0; keep 0 first, the other axes "
                f"are per sample")
    return None


class _Reorder(Op):
    """An op that reorders the batched value's axes (``axes`` of a per-sample shape, the
    batch's 0 first); forward is a view, as PyTorch's."""

    keeps_image = False

    def axes(self, shape: Shape) -> tuple[int, ...]:
        raise NotImplementedError

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        batched = (0, *in_shapes[0])
        return tuple(batched[axis] for axis in self.axes(in_shapes[0])[1:])

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, tuple]:
        axes = self.axes(xs[0].shape[1:])
        # a view, as PyTorch's: the op after it reads the strides it is given
        return xs[0].transpose(axes), axes

    def backward(self, cache: tuple[int, ...], dy: Array) -> tuple[list[Array | None], Grads]:
        return [dy.transpose(np.argsort(cache))], {}


class PermuteParams(NodeParams):
    op: Literal["permute"]
    dims: list[Dim] = Field(
        min_length=2, max_length=MAX_RANK + 1,
        description="The input's axes in their new order, PyTorch's, batch axis 0 included "
                    "and first: [0, 2, 3, 1] takes (C, H, W) to (H, W, C).")


@register
class Permute(_Reorder):
    """The input's axes reordered (torch.permute); any rank, the batch axis stays first."""

    name = "permute"
    Params = PermuteParams

    def axes(self, shape: Shape) -> tuple[int, ...]:
        rank = len(shape)
        problem = _permutation_error(self.p.dims, rank, shape)
        if problem:
            raise ShapeError(problem)
        return tuple(d % (rank + 1) for d in self.p.dims)


class TransposeParams(NodeParams):
    op: Literal["transpose"]
    dim0: Dim = Field(description="One axis to swap, PyTorch's (1 = the first per-sample "
                                  "axis; negative counts from the end).")
    dim1: Dim = Field(description="The other axis to swap.")


@register
class Transpose(_Reorder):
    """Two axes swapped (torch.transpose); any rank: (T, D) with dims 1, 2 gives (D, T)."""

    name = "transpose"
    Params = TransposeParams

    def axes(self, shape: Shape) -> tuple[int, ...]:
        first = batched_axis(self.p.dim0, shape, "dim0")
        second = batched_axis(self.p.dim1, shape, "dim1")
        axes = list(range(len(shape) + 1))
        axes[first], axes[second] = second, first
        return tuple(axes)


class SelectParams(NodeParams):
    op: Literal["select"]
    dim: Dim = Field(default=1, description="Axis to pick from, PyTorch's (1 = the first "
                                            "per-sample axis, e.g. the tokens).")
    index: int = Field(ge=-MAX_INPUT_DIM, lt=MAX_INPUT_DIM,
                       description="Position along dim; negative counts from the end. "
                                   "ViT's class token is index 0 of dim 1.")


@register
class Select(Op):
    """One position along an axis, which disappears (torch.select): (197, 768) -> (768,)."""

    name = "select"
    Params = SelectParams
    keeps_image = False

    def position(self, shape: Shape) -> tuple[int, int]:
        axis = batched_axis(self.p.dim, shape)
        size = shape[axis - 1]
        if not -size <= self.p.index < size:
            raise ShapeError(f"index {self.p.index} is out of range for dim {self.p.dim} of "
                             f"size {size} (input {format_shape(shape)}); use -{size} to "
                             f"{size - 1}")
        return axis, self.p.index % size

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        axis, _ = self.position(in_shapes[0])
        return in_shapes[0][:axis - 1] + in_shapes[0][axis:]

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, tuple]:
        x = xs[0]
        axis, index = self.position(x.shape[1:])
        return np.take(x, index, axis=axis), (x.shape, x.dtype, axis, index)

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        shape, dtype, axis, index = cache
        dx = np.zeros(shape, dtype=dy.dtype)
        # the picked position's plane of dx, written through a view
        np.moveaxis(dx, axis, 0)[index] = dy
        return [dx], {}


class SliceParams(NodeParams):
    op: Literal["slice"]
    dim: Dim = Field(default=1, description="Axis to cut, PyTorch's (1 = the first "
                                            "per-sample axis: channels of an image).")
    start: int = Field(default=0, ge=-MAX_INPUT_DIM, le=MAX_INPUT_DIM,
                       description="First position kept; negative counts from the end.")
    end: int | None = Field(default=None, ge=-MAX_INPUT_DIM, le=MAX_INPUT_DIM,
                            description="Position after the last kept (Python's x[start:end]); "
                                        "default: to the end.")
    step: int = Field(default=1, ge=1, le=MAX_INPUT_DIM, description="Keep every step-th.")


@register
class Slice(Op):
    """A range of positions along one axis, x[..., start:end:step, ...] as Python's slices
    (out-of-range bounds are clipped); ShuffleNet's channel split is two of these."""

    name = "slice"
    Params = SliceParams

    def window(self, shape: Shape) -> tuple[int, slice]:
        axis = batched_axis(self.p.dim, shape)
        size = shape[axis - 1]
        start, stop, step = slice(self.p.start, self.p.end, self.p.step).indices(size)
        if len(range(start, stop, step)) == 0:
            raise ShapeError(f"slice {self.p.start}:{'' if self.p.end is None else self.p.end}"
                             f" of dim {self.p.dim} (size {size}, input {format_shape(shape)}) "
                             f"keeps nothing; it needs start < end within 0 to {size}")
        return axis, slice(start, stop, step)

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        shape = in_shapes[0]
        axis, window = self.window(shape)
        kept = len(range(*window.indices(shape[axis - 1])))
        return shape[:axis - 1] + (kept,) + shape[axis:]

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, tuple]:
        x = xs[0]
        axis, window = self.window(x.shape[1:])
        index = (slice(None),) * axis + (window,)
        return x[index], (x.shape, index)

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        shape, index = cache
        dx = np.zeros(shape, dtype=dy.dtype)
        dx[index] = dy
        return [dx], {}


class MeanParams(NodeParams):
    op: Literal["mean"]
    dim: list[Dim] = Field(
        min_length=1, max_length=MAX_RANK,
        description="Axes to average over, PyTorch's (1 = the first per-sample axis): "
                    "[2, 3] is the spatial mean of (C, H, W), [1] the mean over tokens.")
    keepdim: bool = Field(default=False, description="Keep the averaged axes, of size 1.")


@register
class Mean(Op):
    """The mean over one or more axes (torch.mean); any rank."""

    name = "mean"
    Params = MeanParams
    keeps_image = False

    def axes(self, shape: Shape) -> tuple[int, ...]:
        axes = tuple(batched_axis(d, shape) for d in self.p.dim)
        if len(set(axes)) != len(axes):
            raise ShapeError(f"dim {self.p.dim} names an axis of the input "
                             f"{batched_shape(shape)} twice; name each once")
        return axes

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        shape = in_shapes[0]
        axes = self.axes(shape)
        kept = [1 if axis + 1 in axes else size for axis, size in enumerate(shape)]
        if self.p.keepdim:
            return tuple(kept)
        out = tuple(size for axis, size in enumerate(shape) if axis + 1 not in axes)
        if not out:
            raise ShapeError(f"averaging every axis of {format_shape(shape)} leaves a scalar "
                             f"per sample; set keepdim = true or keep an axis")
        return out

    def flops(self, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        return numel(in_shapes[0])

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, tuple]:
        x = xs[0]
        axes = self.axes(x.shape[1:])
        y = x.mean(axis=axes, keepdims=self.p.keepdim)
        return y, (x.shape, axes)

    def backward(self, cache: tuple, dy: Array) -> tuple[list[Array | None], Grads]:
        shape, axes = cache
        count = numel([shape[axis] for axis in axes])
        if not self.p.keepdim:
            dy = np.expand_dims(dy, axes)
        return [np.broadcast_to(dy / count, shape).copy()], {}


class ChannelShuffleParams(NodeParams):
    op: Literal["channel_shuffle"]
    groups: int = Field(gt=0, le=MAX_INPUT_DIM,
                        description="Groups the channels are split into, then interleaved "
                                    "(ShuffleNet's channel shuffle; 2 in ShuffleNetV2).")


@register
class ChannelShuffle(Op):
    """ShuffleNet's channel shuffle (torch.nn.ChannelShuffle): (C, ...) seen as (groups,
    C/groups, ...), its first two axes swapped, and flattened back; any rank of at least 1."""

    name = "channel_shuffle"
    Params = ChannelShuffleParams

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        shape = in_shapes[0]
        if not shape:
            raise ShapeError("channel_shuffle needs a channel axis")
        if shape[0] % self.p.groups:
            raise ShapeError(f"{shape[0]} channels (input {format_shape(shape)}) do not split "
                             f"into {self.p.groups} equal groups; use a groups that divides "
                             f"{shape[0]}")
        return shape

    def forward(self, xs: list[Array], params, buffers, ctx: Context) -> tuple[Array, None]:
        x = xs[0]
        n, channels, rest = x.shape[0], x.shape[1], x.shape[2:]
        grouped = x.reshape(n, self.p.groups, channels // self.p.groups, *rest)
        return grouped.swapaxes(1, 2).reshape(x.shape), None

    def backward(self, cache: None, dy: Array) -> tuple[list[Array | None], Grads]:
        n, channels, rest = dy.shape[0], dy.shape[1], dy.shape[2:]
        grouped = dy.reshape(n, channels // self.p.groups, self.p.groups, *rest)
        return [grouped.swapaxes(1, 2).reshape(dy.shape)], {}


class ParameterParams(NodeParams):
    op: Literal["parameter"]
    shape: list[Annotated[int, Field(gt=0, le=MAX_INPUT_DIM)]] = Field(
        min_length=1, max_length=MAX_RANK + 1,
        description="Shape of the stored tensor, as PyTorch's state_dict holds it: [1, 1, 768] "
                    "for ViT's class token, [768, 1, 1] for ConvNeXt's layer scale.")
    batch_axis: bool = Field(
        default=False,
        description="true: the tensor's first axis, of size 1, is a batch axis (ViT's "
                    "class_token (1, 1, 768) is (1, 768) per sample); false: the whole "
                    "tensor is the per-sample value.")
    init: InitName = Field(default="zeros",
                           description="How the values start (ignored when value is given).")
    init_scale: PositiveFloat | None = Field(
        default=None, allow_inf_nan=False,
        description="Standard deviation for 'normal' (ViT's position embedding: 0.02), "
                    "half-width for 'uniform'.")
    value: float | None = Field(
        default=None, allow_inf_nan=False,
        description="Every entry starts at this value (ConvNeXt's layer scale: 1e-6).")
    trainable: bool = Field(default=True, description="false keeps the tensor fixed.")

    @model_validator(mode="after")
    def _bounded(self) -> ParameterParams:
        if self.batch_axis and (len(self.shape) < 2 or self.shape[0] != 1):
            raise ValueError(f"shape {self.shape} with batch_axis = true needs a first axis of "
                             f"size 1 and at least one more axis")
        if numel(self.shape) > MAX_INPUT_VALUES:
            raise ValueError(f"shape {self.shape} holds {numel(self.shape):,} values, more "
                             f"than the {MAX_INPUT_VALUES:,} netspec accepts")
        return self


@register
class Parameter(Op):
    """A learned tensor of any shape (a class token, a position embedding, a layer scale):
    no inputs, the same value for every sample. Its state key is the node's path itself
    (``class_token``, ``encoder.pos_embedding``), as torchvision's nn.Parameter attributes."""

    name = "parameter"
    Params = ParameterParams
    keeps_image = False
    min_inputs = 0
    max_inputs = 0

    @property
    def sample_shape(self) -> Shape:
        return tuple(self.p.shape[1:] if self.p.batch_axis else self.p.shape)

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        return self.sample_shape

    def param_specs(self, in_shapes: Sequence[Shape]) -> dict[str, ParamSpec]:
        init = "value" if self.p.value is not None else "weight"
        return {WHOLE_NODE: ParamSpec(tuple(self.p.shape), init)}

    def forward(self, xs: list[Array], params: dict[str, Array], buffers,
                ctx: Context) -> tuple[Array, int]:
        tensor = params[WHOLE_NODE].reshape(1, *self.sample_shape)
        # a read-only view: no op writes into an input it does not own (fresh_output is off)
        return np.broadcast_to(tensor, (ctx.batch, *self.sample_shape)), ctx.batch

    def backward(self, cache: int, dy: Array) -> tuple[list[Array | None], Grads]:
        return [], {WHOLE_NODE: dy.sum(axis=0).reshape(self.p.shape)}
