"""Shape arithmetic shared by every op, kept in one place so each rule is written once."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from netspec.common.errors import ShapeError

Shape = tuple[int, ...]

# the most axes a per-sample value may have (PyTorch's own limit is 64; 8 is beyond any
# network netspec knows)
MAX_RANK = 8


def pair(value: int | Sequence[int]) -> tuple[int, int]:
    """An ``int`` or ``[a, b]`` spec value as a (height, width) pair.

    >>> pair(3)
    (3, 3)
    >>> pair([3, 5])
    (3, 5)
    """
    if isinstance(value, int):
        return (value, value)
    first, second = value
    return (int(first), int(second))


def window_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a sliding window along one axis (floor division, as PyTorch).

    >>> window_output_size(28, 5, 1, 2)
    28
    >>> window_output_size(28, 2, 2, 0)
    14
    >>> window_output_size(7, 3, 2, 1)
    4
    >>> window_output_size(4, 5, 1, 0)
    Traceback (most recent call last):
    ...
    netspec.common.errors.ShapeError: kernel 5 is larger than the padded input 4
    """
    padded = size + 2 * padding
    if kernel > padded:
        raise ShapeError(f"kernel {kernel} is larger than the padded input {padded}")
    return (padded - kernel) // stride + 1


def window_output_hw(
    in_hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> tuple[int, int]:
    """Output (H, W) of a 2-D sliding window; errors name the input size and kernel.

    >>> window_output_hw((28, 28), (5, 5), (1, 1), (0, 0))
    (24, 24)
    >>> window_output_hw((6, 9), (3, 2), (2, 3), (1, 0))
    (3, 3)
    """
    height, width = in_hw
    kernel_h, kernel_w = kernel
    pad_h, pad_w = padding
    if kernel_h > height + 2 * pad_h or kernel_w > width + 2 * pad_w:
        raise ShapeError(
            f"kernel {kernel_h}x{kernel_w} is larger than the padded input "
            f"{height + 2 * pad_h}x{width + 2 * pad_w} ({height}x{width} with padding "
            f"{pad_h}x{pad_w}); use a smaller kernel, more padding, or remove a pooling step"
        )
    return (
        window_output_size(height, kernel_h, stride[0], pad_h),
        window_output_size(width, kernel_w, stride[1], pad_w),
    )


def numel(shape: Sequence[int]) -> int:
    """Number of elements of a shape.

    >>> numel((16, 5, 5))
    400
    >>> numel(())
    1
    """
    return math.prod(shape)


def format_shape(shape: Sequence[int]) -> str:
    """A shape as users read it.

    >>> format_shape((16, 5, 5))
    '(16, 5, 5)'
    >>> format_shape((10,))
    '(10,)'
    """
    return str(tuple(shape))


def require_rank(shape: Shape, ranks: Sequence[int], what: str) -> None:
    """Raise a ShapeError unless ``shape`` has one of ``ranks`` dimensions."""
    if len(shape) not in ranks:
        wanted = " or ".join(f"{r}-D" for r in ranks)
        kinds = " or ".join(_RANK_KINDS.get(r, f"{r} axes") for r in ranks)
        raise ShapeError(f"{what} must be {wanted} per sample, got shape {format_shape(shape)}; "
                         f"it takes {kinds}: reshape, flatten or permute the value first")


_RANK_KINDS = {1: "a vector (D,)", 2: "tokens (T, D)", 3: "an image (C, H, W)"}


def batched_axis(dim: int, shape: Shape, what: str = "dim") -> int:
    """PyTorch's ``dim`` of a batched value, whose per-sample shape is ``shape``, as an axis of
    the batched array: from 1 (the first per-sample axis) to ``len(shape)``; a negative dim
    counts from the end, as in PyTorch. The batch axis (0) is refused: ops act on each sample.

    >>> batched_axis(1, (197, 768))
    1
    >>> batched_axis(-1, (197, 768))
    2
    >>> batched_axis(0, (197, 768))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    netspec.common.errors.ShapeError: dim 0 is the batch axis of the input (N, 197, 768); use ...
    """
    rank = len(shape)
    batched = batched_shape(shape)
    if rank == 0:
        raise ShapeError(f"{what} {dim}: the input {batched} has no per-sample axis")
    hint = f"use a dim from 1 to {rank} (or -{rank} to -1)"
    if not -(rank + 1) <= dim <= rank:
        raise ShapeError(f"{what} {dim} is out of range for the input {batched}; {hint}")
    axis = dim % (rank + 1)
    if axis == 0:
        raise ShapeError(f"{what} {dim} is the batch axis of the input {batched}; {hint}")
    return axis


def batched_shape(shape: Shape) -> str:
    """A per-sample shape with the batch axis in front, as PyTorch sees the value.

    >>> batched_shape((197, 768))
    '(N, 197, 768)'
    """
    return "(N, " + ", ".join(map(str, shape)) + ")"


def require_groups(in_channels: int, out_channels: int, groups: int) -> None:
    """A grouped convolution's channels must both split into ``groups`` equal parts."""
    if in_channels % groups:
        raise ShapeError(f"groups={groups} does not divide the input's {in_channels} channels; "
                         f"in_channels must be a multiple of groups")
    if out_channels % groups:
        raise ShapeError(f"groups={groups} does not divide out_channels={out_channels}; "
                         f"out_channels must be a multiple of groups")


def _listing(items: Sequence[str]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1]


def broadcast_shapes(shapes: Sequence[Shape], op: str) -> Shape:
    """The shape per-sample shapes of one rank broadcast to, as PyTorch's element-wise ops
    do: along each axis the sizes are equal, or 1 where an input is repeated.

    >>> broadcast_shapes([(4, 1, 1), (4, 7, 7)], "mul")
    (4, 7, 7)
    """
    listed = _listing([format_shape(shape) for shape in shapes])
    if len({len(shape) for shape in shapes}) > 1:
        raise ShapeError(f"inputs have shapes {listed} of different ranks; {op} broadcasts "
                         f"axes of size 1 between inputs of one rank")
    for axis, sizes in enumerate(zip(*shapes)):
        if len(set(sizes) - {1}) > 1:
            raise ShapeError(f"inputs of shapes {listed} do not broadcast: axis {axis} has "
                             f"{_listing([str(size) for size in sizes])}; each axis must "
                             f"match or be 1 in one of them")
    return tuple(max(sizes) for sizes in zip(*shapes))


def reduce_to(gradient: Any, shape: Sequence[int]) -> Any:
    """``gradient`` summed over the axes along which an input of batched shape ``shape`` was
    broadcast, so that it has that input's shape."""
    axes = tuple(axis for axis, (g, s) in enumerate(zip(gradient.shape, shape)) if s == 1 != g)
    return gradient.sum(axis=axes, keepdims=True) if axes else gradient
