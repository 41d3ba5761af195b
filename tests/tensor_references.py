"""Naive-loop references for the ops of tensors of any rank (reshape, permute, attention, ...)
and for the ops they generalised (linear on the last axis, softmax and concat over any dim,
flatten over a range of axes). Plain loops over indices, sharing no code with netspec's ops;
:mod:`layer_harness` adds them to its ``REFERENCES``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

Array = np.ndarray


def _axis(dim: int, ndim: int) -> int:
    """PyTorch's dim of an array with ``ndim`` axes (batch included) as a positive axis."""
    return dim + ndim if dim < 0 else dim


def _row_major(index: tuple[int, ...], shape: tuple[int, ...]) -> int:
    position = 0
    for i, size in zip(index, shape):
        position = position * size + i
    return position


def _ref_reshape(p, xs, params, buffers, train, observed):
    x = xs[0]
    out_shape = observed.shape  # -1 resolved by the op; the values are what is checked
    y = np.zeros(out_shape)
    per_sample = x.shape[1:]
    for index in np.ndindex(x.shape):
        flat = _row_major(index[1:], per_sample)
        target = []
        for size in reversed(out_shape[1:]):
            target.append(flat % size)
            flat //= size
        y[(index[0], *reversed(target))] = x[index]
    return y, {}


def _ref_permute_axes(x: Array, axes: list[int]) -> Array:
    y = np.zeros([x.shape[a] for a in axes])
    for index in np.ndindex(x.shape):
        y[tuple(index[a] for a in axes)] = x[index]
    return y


def _ref_permute(p, xs, params, buffers, train, observed):
    ndim = xs[0].ndim
    return _ref_permute_axes(xs[0], [_axis(d, ndim) for d in p.dims]), {}


def _ref_transpose(p, xs, params, buffers, train, observed):
    ndim = xs[0].ndim
    axes = list(range(ndim))
    a, b = _axis(p.dim0, ndim), _axis(p.dim1, ndim)
    axes[a], axes[b] = axes[b], axes[a]
    return _ref_permute_axes(xs[0], axes), {}


def _ref_flatten(p, xs, params, buffers, train, observed):
    x = xs[0]
    start, end = _axis(p.start_dim, x.ndim), _axis(p.end_dim, x.ndim)
    joined = x.shape[start:end + 1]
    y = np.zeros((*x.shape[:start], math.prod(joined), *x.shape[end + 1:]))
    for index in np.ndindex(x.shape):
        target = (*index[:start], _row_major(index[start:end + 1], joined), *index[end + 1:])
        y[target] = x[index]
    return y, {}


def _ref_select(p, xs, params, buffers, train, observed):
    x = xs[0]
    axis = _axis(p.dim, x.ndim)
    index_at = p.index % x.shape[axis]
    y = np.zeros(x.shape[:axis] + x.shape[axis + 1:])
    for index in np.ndindex(x.shape):
        if index[axis] == index_at:
            y[index[:axis] + index[axis + 1:]] = x[index]
    return y, {}


def _ref_slice(p, xs, params, buffers, train, observed):
    x = xs[0]
    axis = _axis(p.dim, x.ndim)
    kept = list(range(x.shape[axis]))[p.start:p.end:p.step]
    shape = list(x.shape)
    shape[axis] = len(kept)
    y = np.zeros(shape)
    for index in np.ndindex(x.shape):
        if index[axis] in kept:
            target = list(index)
            target[axis] = kept.index(index[axis])
            y[tuple(target)] = x[index]
    return y, {}


def _ref_mean(p, xs, params, buffers, train, observed):
    x = xs[0]
    axes = {_axis(d, x.ndim) for d in p.dim}
    kept_shape = [1 if a in axes else size for a, size in enumerate(x.shape)]
    totals = np.zeros(kept_shape)
    count = math.prod(x.shape[a] for a in axes)
    for index in np.ndindex(x.shape):
        target = tuple(0 if a in axes else i for a, i in enumerate(index))
        totals[target] += x[index] / count
    if p.keepdim:
        return totals, {}
    return totals.reshape([size for a, size in enumerate(x.shape) if a not in axes]), {}


def _ref_channel_shuffle(p, xs, params, buffers, train, observed):
    x = xs[0]
    per_group = x.shape[1] // p.groups
    y = np.zeros(x.shape)
    for index in np.ndindex(x.shape):
        group, member = divmod(index[1], per_group)
        y[(index[0], member * p.groups + group, *index[2:])] = x[index]
    return y, {}


def _ref_parameter(p, xs, params, buffers, train, observed):
    tensor = params[""]
    per_sample = tuple(p.shape[1:] if p.batch_axis else p.shape)
    y = np.zeros((observed.shape[0], *per_sample))
    for index in np.ndindex(y.shape):
        stored = ((0,) if p.batch_axis else ()) + index[1:]
        y[index] = tensor[stored]
    return y, {}


def _ref_linear(p, xs, params, buffers, train, observed):
    x, w = xs[0], params["weight"]
    y = np.zeros((*x.shape[:-1], w.shape[0]))
    for index in np.ndindex(y.shape):
        row, o = index[:-1], index[-1]
        y[index] = sum(w[o, i] * x[(*row, i)] for i in range(x.shape[-1]))
        if p.bias:
            y[index] += params["bias"][o]
    return y, {}


def _ref_softmax(p, xs, params, buffers, train, observed):
    x = xs[0]
    axis = _axis(p.dim, x.ndim)
    y = np.zeros(x.shape)
    for index in np.ndindex(x.shape):
        line = [float(x[(*index[:axis], k, *index[axis + 1:])]) for k in range(x.shape[axis])]
        y[index] = math.exp(float(x[index])) / sum(math.exp(v) for v in line)
    return y, {}


def _ref_concat(p, xs, params, buffers, train, observed):
    ndim = xs[0].ndim
    axis = p.axis + 1 if p.axis is not None else _axis(p.dim, ndim)
    shape = list(xs[0].shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    y = np.zeros(shape)
    offset = 0
    for x in xs:
        for index in np.ndindex(x.shape):
            target = list(index)
            target[axis] += offset
            y[tuple(target)] = x[index]
        offset += x.shape[axis]
    return y, {}


TENSOR_REFERENCES: dict[str, Any] = {
    "reshape": _ref_reshape,
    "permute": _ref_permute,
    "transpose": _ref_transpose,
    "flatten": _ref_flatten,
    "select": _ref_select,
    "slice": _ref_slice,
    "mean": _ref_mean,
    "channel_shuffle": _ref_channel_shuffle,
    "parameter": _ref_parameter,
    "linear": _ref_linear,
    "softmax": _ref_softmax,
    "concat": _ref_concat,
}
