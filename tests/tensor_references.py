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


def _normalised(values: list[float], eps: float) -> list[float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / len(values)
    return [(v - mean) / math.sqrt(var + eps) for v in values]


def _ref_layernorm(p, xs, params, buffers, train, observed):
    x = xs[0]
    tail = (p.normalized_shape,) if isinstance(p.normalized_shape, int) \
        else tuple(p.normalized_shape)
    lead = x.shape[:x.ndim - len(tail)]
    y = np.zeros(x.shape)
    for row in np.ndindex(lead):
        positions = list(np.ndindex(tail))
        values = _normalised([float(x[row + pos]) for pos in positions], p.eps)
        for pos, value in zip(positions, values):
            if p.elementwise_affine:
                value = value * params["weight"][pos] + (params["bias"][pos] if p.bias else 0)
            y[row + pos] = value
    return y, {}


def _ref_layernorm2d(p, xs, params, buffers, train, observed):
    x = xs[0]
    y = np.zeros(x.shape)
    for b, i, j in np.ndindex(x.shape[0], x.shape[2], x.shape[3]):
        values = _normalised([float(x[b, c, i, j]) for c in range(x.shape[1])], p.eps)
        for c, value in enumerate(values):
            if p.elementwise_affine:
                value = value * params["weight"][c] + (params["bias"][c] if p.bias else 0)
            y[b, c, i, j] = value
    return y, {}


def _ref_matmul(p, xs, params, buffers, train, observed):
    a, b = xs
    y = np.zeros(observed.shape)
    for index in np.ndindex(y.shape):
        lead, row, col = index[:-2], index[-2], index[-1]
        a_lead = tuple(0 if size == 1 else i for i, size in zip(lead, a.shape[:-2]))
        b_lead = tuple(0 if size == 1 else i for i, size in zip(lead, b.shape[:-2]))
        y[index] = sum(a[(*a_lead, row, k)] * b[(*b_lead, k, col)]
                       for k in range(a.shape[-1]))
    return y, {}


def _ref_multihead_attention(p, xs, params, buffers, train, observed):
    """Loops over samples, heads, queries and keys; dropout is checked with p = 0 only."""
    query, key, value = (xs * 3) if len(xs) == 1 else xs
    embed, heads = p.embed_dim, p.num_heads
    width = embed // heads
    w, b = params["in_proj_weight"], params.get("in_proj_bias")

    def project(x, block):
        out = np.zeros((x.shape[0], x.shape[1], embed))
        for n, t, o in np.ndindex(out.shape):
            out[n, t, o] = sum(w[block * embed + o, i] * x[n, t, i] for i in range(embed)) + (
                0.0 if b is None else b[block * embed + o])
        return out

    q, k, v = project(query, 0), project(key, 1), project(value, 2)
    joined = np.zeros(q.shape)
    for n, h, t in np.ndindex(q.shape[0], heads, q.shape[1]):
        cols = range(h * width, (h + 1) * width)
        allowed = [s for s in range(k.shape[1]) if not (p.causal and s > t)]
        scores = [sum(q[n, t, c] * k[n, s, c] for c in cols) / math.sqrt(width)
                  for s in allowed]
        top = max(scores)
        exps = [math.exp(score - top) for score in scores]
        for c in cols:
            joined[n, t, c] = sum(e * v[n, s, c] for e, s in zip(exps, allowed)) / sum(exps)
    out_w = params["out_proj.weight"]
    y = np.zeros(q.shape)
    for n, t, o in np.ndindex(y.shape):
        y[n, t, o] = sum(out_w[o, i] * joined[n, t, i] for i in range(embed)) + (
            params["out_proj.bias"][o] if p.bias else 0.0)
    return y, {}


TENSOR_REFERENCES: dict[str, Any] = {
    "layernorm": _ref_layernorm,
    "layernorm2d": _ref_layernorm2d,
    "matmul": _ref_matmul,
    "multihead_attention": _ref_multihead_attention,
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
