"""One way to test an op, shared by every op test (modelled on Keras' ``run_layer_test``).

:func:`run_layer_test` builds the op from the registry through its params model, then checks
(1) the compile-time ``output_shape`` against the shape the forward really returns, (2) the
forward (and any buffers it updates) against a naive-loop NumPy reference written here, apart
from the op's own code, (3) every input and parameter gradient against float64 central
finite differences of a random projection ``L = sum(R * y)``, and (4) that float32 stays
float32 and the op leaves its arguments untouched. Memory an op forgets to initialise is made
to read as NaN (:func:`poison_allocator`), which every check treats as a failure. Each kind
of failure raises its own ``AssertionError`` subclass, so a negative control can say which
check must catch it.

Inputs are drawn as distinct values well away from zero, so no ReLU input sits within a
finite-difference step of its kink and no max-pool window holds a tie.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tensor_references import TENSOR_REFERENCES

import netspec
from netspec.ops import REGISTRY, Context, Op

Array = np.ndarray
Reference = Callable[[Any, list[Array], dict[str, Array], dict[str, Array], bool, Array],
                     tuple[Array, dict[str, Array]]]

# measured over the op table: worst error 1e-8 at this step, 6e-8 at 1e-5 (rounding) and 2e-8
# at 1e-4 (curvature); inputs are spaced far wider than a step, see distinct_values
FD_STEP = 3e-5
# |analytic - numeric| / max(|analytic|, |numeric|, GRAD_FLOOR) must stay below GRAD_TOLERANCE;
# the floor turns the test into an absolute one for gradients far below the O(1) scale
GRAD_FLOOR = 1e-3
GRAD_TOLERANCE = 1e-6
FORWARD_TOLERANCE = 1e-12
FLOAT32_TOLERANCE = 1e-4
# tensors larger than this have a random subset of their entries differenced
MAX_FD_ENTRIES = 400
# the batch of an op without inputs (a learned tensor), which has no input to count it from
NO_INPUT_BATCH = 3


class LayerTestFailure(AssertionError):
    """Base of the harness's failures."""


class ShapeMismatch(LayerTestFailure):
    """``output_shape`` (or a gradient's shape) disagrees with the arrays the op returns."""


class ForwardMismatch(LayerTestFailure):
    """The forward output or updated buffers differ from the naive reference."""


class GradientMismatch(LayerTestFailure):
    """A backward gradient differs from its finite-difference estimate."""


class DtypeMismatch(LayerTestFailure):
    """A float32 pass returned another dtype, or drifted from the float64 result."""


class ArgumentMutated(LayerTestFailure):
    """Forward or backward wrote into an array it was handed."""


@dataclass(frozen=True)
class OpCase:
    """One op configuration: params as in TOML (without ``op``), full input shapes (batch
    first), the seed of every random value, whether the forward runs in training mode, and
    whether (N, C, H, W) inputs are stored channels-last, as a convolution's output is."""

    op: str
    params: dict[str, Any] = field(default_factory=dict)
    shapes: tuple[tuple[int, ...], ...] = ((2, 3),)
    seed: int = 0
    train: bool = False
    channels_last: bool = False

    @property
    def id(self) -> str:
        fields = ",".join(f"{key}={value}" for key, value in self.params.items())
        shapes = "+".join("x".join(map(str, shape)) for shape in self.shapes)
        return (f"{self.op}[{fields}]({shapes}){'-train' if self.train else ''}"
                f"{'-channels_last' if self.channels_last else ''}")


@dataclass(frozen=True)
class GradientReport:
    """Worst relative error per checked tensor (``input0``, ``input1``..., param names)."""

    errors: dict[str, float]
    checked: dict[str, int]

    @property
    def worst(self) -> float:
        return max(self.errors.values(), default=0.0)

    @property
    def passed(self) -> bool:
        return self.worst < GRAD_TOLERANCE


@dataclass(frozen=True)
class LayerReport:
    output_shape: tuple[int, ...]
    forward_error: float
    gradients: GradientReport


def build_op(op_name: str, params: dict[str, Any] | None = None) -> Op:
    """The registered op, its params validated as the spec loader would."""
    op_class = REGISTRY[op_name]
    return op_class(op_class.Params.model_validate({"op": op_name, **(params or {})}))


def distinct_values(shape: Sequence[int], rng: np.random.Generator) -> Array:
    """Distinct values in (-2, 2), at least 1/size from zero and from each other, shuffled."""
    size = math.prod(shape)
    if size * FD_STEP > 1e-2:
        raise ValueError(f"{size} inputs are too many to keep each a hundred finite-difference "
                         f"steps from zero and from each other; use a smaller shape")
    grid = -2.0 + (np.arange(size) + 0.25) * (4.0 / size)
    return rng.permutation(grid).reshape(shape)


def make_tensors(op: Op, case: OpCase, distinct: bool = True,
                 ) -> tuple[list[Array], dict[str, Array], dict[str, Array]]:
    """Inputs, parameters and buffers of ``case``, all float64 and all drawn from its seed.
    Inputs are :func:`distinct_values` unless ``distinct`` is false (then standard normal, of
    any size, for checks without finite differences)."""
    rng = np.random.default_rng(case.seed)
    draw = distinct_values if distinct else lambda shape, rng: rng.normal(size=shape)
    xs = [draw(shape, rng) for shape in case.shapes]
    if case.channels_last:
        xs = [np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
              if x.ndim == 4 else x for x in xs]
    in_shapes = [shape[1:] for shape in case.shapes]
    params = {name: rng.normal(size=spec.shape) for name, spec in op.param_specs(in_shapes).items()}
    # buffers that start at one are variances: keep them positive
    buffers = {
        name: rng.uniform(0.5, 2.0, size=spec.shape) if spec.init == "ones"
        else rng.normal(size=spec.shape)
        for name, spec in op.buffer_specs(in_shapes).items()
    }
    return xs, params, buffers


def run_op(op: Op, xs: list[Array], params: dict[str, Array], buffers: dict[str, Array],
           train: bool, seed: int) -> tuple[Array, Any, dict[str, Array]]:
    """One forward on copies of the buffers, with a generator fresh from ``seed``: calls with
    the same arguments draw the same dropout mask."""
    state = {name: value.copy() for name, value in buffers.items()}
    ctx = Context(train=train, rng=np.random.default_rng(seed),
                  batch=xs[0].shape[0] if xs else NO_INPUT_BATCH)
    y, cache = op.forward(list(xs), params, state, ctx)
    return y, cache, state


def poison_allocator(op: Op, shapes: Sequence[tuple[int, ...]]) -> None:
    """Free NaN-filled blocks of the sizes an op is likely to ask for next (its inputs, padded
    if it pads, and its output), so that memory it forgets to initialise after ``np.empty``
    reads as NaN rather than happening to be zero. Both NumPy's cache of small blocks and the
    C allocator hand a freed block of the same size back first."""
    pad_h, pad_w = _pair(getattr(op.p, "padding", 0))
    sizes = set()
    for shape in shapes:
        sizes.add(math.prod(shape))
        if len(shape) == 4:
            sizes.add(math.prod((*shape[:2], shape[2] + 2 * pad_h, shape[3] + 2 * pad_w)))
    blocks = [np.full(size, np.nan) for size in sorted(sizes)]
    del blocks


def check_gradients(op: Op, xs: list[Array], params: dict[str, Array],
                    buffers: dict[str, Array], train: bool, seed: int,
                    dy_like_output: bool = False) -> GradientReport:
    """Compare ``op.backward`` with central differences of ``L = sum(R * forward)``.

    ``dy_like_output`` hands backward ``R`` in the output's memory layout (as the op after it
    in a network would) instead of C order."""
    rng = np.random.default_rng(seed + 1)
    poison_allocator(op, [x.shape for x in xs])
    y, cache, _ = run_op(op, xs, params, buffers, train, seed)
    projection = rng.normal(size=y.shape)
    dy = np.empty_like(y) if dy_like_output else np.empty(y.shape)
    dy[...] = projection
    poison_allocator(op, [x.shape for x in xs] + [y.shape])
    dxs, dparams = op.backward(cache, dy)
    if len(dxs) != len(xs):
        raise ShapeMismatch(f"backward returned {len(dxs)} input gradients for {len(xs)} inputs")
    if set(dparams) != set(params):
        raise ShapeMismatch(f"backward returned gradients for {sorted(dparams)}, the op has "
                            f"parameters {sorted(params)}")
    xs = [x.copy(order="K") for x in xs]
    params = {name: value.copy() for name, value in params.items()}
    tensors = {f"input{i}": (x, dx) for i, (x, dx) in enumerate(zip(xs, dxs))}
    tensors.update({name: (params[name], dparams[name]) for name in params})

    def output() -> Array:
        # a copy: input and dropout in inference hand back the very array being perturbed
        return run_op(op, xs, params, buffers, train, seed)[0].copy()

    errors, checked = {}, {}
    for name, (tensor, analytic) in tensors.items():
        if analytic is None:
            raise ShapeMismatch(f"backward returned no gradient for {name}")
        analytic = np.asarray(analytic)
        if analytic.shape != tensor.shape:
            raise ShapeMismatch(f"gradient of {name} has shape {analytic.shape}, the tensor "
                                f"has {tensor.shape}")
        entries = np.arange(tensor.size)
        if tensor.size > MAX_FD_ENTRIES:
            entries = rng.choice(tensor.size, MAX_FD_ENTRIES, replace=False)
        worst = 0.0
        for index in entries:
            # indexing by position, not through a flat view: inputs may be channels-last
            position = np.unravel_index(index, tensor.shape)
            original = tensor[position]
            tensor[position] = original + FD_STEP
            plus = output()
            tensor[position] = original - FD_STEP
            minus = output()
            tensor[position] = original
            # differencing the outputs before projecting keeps untouched elements from
            # adding rounding noise to the slope
            numeric = float((projection * (plus - minus)).sum()) / (2 * FD_STEP)
            exact = float(analytic[position])
            error = abs(exact - numeric) / max(abs(exact), abs(numeric), GRAD_FLOOR)
            # a NaN would lose every comparison, and so pass: count it as the worst error
            worst = max(worst, error if math.isfinite(error) else math.inf)
        errors[name], checked[name] = worst, len(entries)
    return GradientReport(errors, checked)


def run_layer_test(case: OpCase) -> LayerReport:
    """Every check of the module docstring on one case; raises a LayerTestFailure subclass."""
    op = build_op(case.op, case.params)
    in_shapes = [shape[1:] for shape in case.shapes]
    declared = tuple(op.output_shape(in_shapes))
    xs, params, buffers = make_tensors(op, case)
    originals = [x.copy() for x in xs], {k: v.copy() for k, v in params.items()}

    poison_allocator(op, [x.shape for x in xs])
    y, cache, buffers_after = run_op(op, xs, params, buffers, case.train, case.seed)
    if y.shape != (case.shapes[0][0] if case.shapes else NO_INPUT_BATCH, *declared):
        raise ShapeMismatch(f"{case.id}: output_shape says {declared} per sample, forward "
                            f"returned {y.shape}")
    expected, expected_buffers = REFERENCES[case.op](op.p, xs, params, buffers, case.train, y)
    forward_error = _max_abs_difference(y, expected)
    for name, value in expected_buffers.items():
        forward_error = max(forward_error, _max_abs_difference(buffers_after[name], value))
    if forward_error > FORWARD_TOLERANCE:
        raise ForwardMismatch(f"{case.id}: forward differs from the naive reference by "
                              f"{forward_error:.3g}")

    dy = np.random.default_rng(case.seed + 2).normal(size=y.shape)
    dy_original = dy.copy()
    op.backward(cache, dy)
    if (any(not np.array_equal(x, x0) for x, x0 in zip(xs, originals[0]))
            or any(not np.array_equal(params[k], v) for k, v in originals[1].items())
            or not np.array_equal(dy, dy_original)):
        raise ArgumentMutated(f"{case.id}: forward or backward wrote into its inputs, "
                              f"parameters or dy")

    gradients = check_gradients(op, xs, params, buffers, case.train, case.seed,
                                dy_like_output=case.channels_last)
    if not gradients.passed:
        failing = {k: f"{v:.3g}" for k, v in gradients.errors.items() if v >= GRAD_TOLERANCE}
        raise GradientMismatch(f"{case.id}: gradients differ from finite differences "
                               f"(worst relative error per tensor: {failing})")

    _check_float32(op, case, xs, params, buffers, y, dy)
    return LayerReport(declared, forward_error, gradients)


def _check_float32(op: Op, case: OpCase, xs: list[Array], params: dict[str, Array],
                   buffers: dict[str, Array], y64: Array, dy: Array) -> None:
    """The executor runs float32 by default: results must stay float32 and near float64's."""
    def single(arrays: dict[str, Array]) -> dict[str, Array]:
        return {k: v.astype(np.float32) for k, v in arrays.items()}

    _, cache64, _ = run_op(op, xs, params, buffers, case.train, case.seed)
    dxs64, dparams64 = op.backward(cache64, dy)
    y, cache, _ = run_op(op, [x.astype(np.float32) for x in xs], single(params),
                         single(buffers), case.train, case.seed)
    dxs, dparams = op.backward(cache, dy.astype(np.float32))
    pairs = [("output", y, y64)] + [(f"input{i} gradient", a, b)
                                    for i, (a, b) in enumerate(zip(dxs, dxs64))]
    pairs += [(f"{k} gradient", dparams[k], dparams64[k]) for k in dparams64]
    for what, single_value, double_value in pairs:
        if single_value.dtype != np.float32:
            raise DtypeMismatch(f"{case.id}: float32 {what} came back as {single_value.dtype}")
        scale = max(1.0, float(np.abs(double_value).max(initial=0.0)))
        if _max_abs_difference(single_value, double_value) > FLOAT32_TOLERANCE * scale:
            raise DtypeMismatch(f"{case.id}: float32 {what} drifted from float64")


def _max_abs_difference(a: Array, b: Array) -> float:
    """The largest difference, infinite when either side holds a NaN or an infinity."""
    if a.shape != b.shape:
        raise ShapeMismatch(f"shapes differ: {a.shape} vs {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return math.inf
    return float(np.abs(a - b).max(initial=0.0))


# ---- naive references: plain loops over indices, sharing no code with netspec's ops ----


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def _windows(p: Any) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    kernel = _pair(p.kernel_size)
    stride = kernel if getattr(p, "stride", None) is None else _pair(p.stride)
    return kernel, stride, _pair(p.padding)


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _ref_input(p, xs, params, buffers, train, observed):
    return xs[0].copy(), {}


def _ref_conv2d(p, xs, params, buffers, train, observed):
    x, w = xs[0], params["weight"]
    n, c, h, width = x.shape
    (kh, kw), (sh, sw), (ph, pw) = _windows(p)
    dh, dw = _pair(p.dilation)
    group_in, group_out = c // p.groups, w.shape[0] // p.groups
    oh = _out_size(h, dh * (kh - 1) + 1, sh, ph)
    ow = _out_size(width, dw * (kw - 1) + 1, sw, pw)
    y = np.zeros((n, w.shape[0], oh, ow))
    for b, o, i, j in np.ndindex(y.shape):
        total = params["bias"][o] if p.bias else 0.0
        first = (o // group_out) * group_in
        for ci, a, d in np.ndindex(group_in, kh, kw):
            row, col = i * sh + a * dh - ph, j * sw + d * dw - pw
            if 0 <= row < h and 0 <= col < width:
                total += w[o, ci, a, d] * x[b, first + ci, row, col]
        y[b, o, i, j] = total
    return y, {}


def _pool_out_size(size: int, kernel: int, stride: int, padding: int, ceil: bool) -> int:
    if not ceil:
        return _out_size(size, kernel, stride, padding)
    # PyTorch: rounded up, less a last window starting past the input and its leading padding
    out = math.ceil((size + 2 * padding - kernel) / stride) + 1
    return out - 1 if (out - 1) * stride >= size + padding else out


def _pool(p, x, combine):
    """``combine(cells inside the input, cells the divisor counts)`` over every window."""
    n, c, h, width = x.shape
    (kh, kw), (sh, sw), (ph, pw) = _windows(p)
    ceil = getattr(p, "ceil_mode", False)
    y = np.zeros((n, c, _pool_out_size(h, kh, sh, ph, ceil),
                  _pool_out_size(width, kw, sw, pw, ceil)))
    for b, ch, i, j in np.ndindex(y.shape):
        rows = [i * sh + a - ph for a in range(kh)]
        cols = [j * sw + d - pw for d in range(kw)]
        inside = [x[b, ch, r, q] for r in rows for q in cols if 0 <= r < h and 0 <= q < width]
        # the padded grid: the input and its padding, never a ceil-mode overhang beyond it
        padded = sum(1 for r in rows for q in cols if -ph <= r < h + ph and -pw <= q < width + pw)
        y[b, ch, i, j] = combine(inside, padded)
    return y


def _ref_maxpool2d(p, xs, params, buffers, train, observed):
    return _pool(p, xs[0], lambda inside, count: max(inside)), {}


def _ref_avgpool2d(p, xs, params, buffers, train, observed):
    # padded cells are zeros that count in the divisor when count_include_pad
    if p.count_include_pad:
        return _pool(p, xs[0], lambda inside, count: sum(inside) / count), {}
    return _pool(p, xs[0], lambda inside, count: sum(inside) / len(inside)), {}


def _ref_global_avgpool(p, xs, params, buffers, train, observed):
    x = xs[0]
    n, c, h, w = x.shape
    y = np.zeros((n, c))
    for b, ch in np.ndindex(n, c):
        y[b, ch] = sum(x[b, ch, i, j] for i, j in np.ndindex(h, w)) / (h * w)
    return y, {}


def _elementwise(function: Callable[[float], float]) -> Reference:
    def reference(p, xs, params, buffers, train, observed):
        x = xs[0]
        y = np.zeros(x.shape)
        for index in np.ndindex(x.shape):
            y[index] = function(float(x[index]))
        return y, {}
    return reference


def _ref_leaky_relu(p, xs, params, buffers, train, observed):
    slope = p.negative_slope
    return _elementwise(lambda v: v if v > 0 else slope * v)(p, xs, params, buffers, train,
                                                              observed)


def _ref_dropout(p, xs, params, buffers, train, observed):
    """The mask is the generator's to choose, so it is read off the op's output (inputs are
    never zero); what is checked is that kept elements are scaled by 1/(1-p), the rest zero,
    and that inference is the identity."""
    x = xs[0]
    if not train:
        return x.copy(), {}
    y = np.zeros(x.shape)
    for index in np.ndindex(x.shape):
        if observed[index] != 0:
            y[index] = x[index] / (1.0 - p.p)
    return y, {}


def _ref_batchnorm(p, xs, params, buffers, train, observed):
    x = xs[0]
    channels = x.shape[1]
    y = np.zeros(x.shape)
    mean_after = buffers["running_mean"].copy()
    var_after = buffers["running_var"].copy()
    for ch in range(channels):
        members = [index for index in np.ndindex(x.shape) if index[1] == ch]
        values = [float(x[index]) for index in members]
        count = len(values)
        if train:
            mean = sum(values) / count
            var = sum((v - mean) ** 2 for v in values) / count
            mean_after[ch] = (1 - p.momentum) * mean_after[ch] + p.momentum * mean
            var_after[ch] = ((1 - p.momentum) * var_after[ch]
                             + p.momentum * var * count / (count - 1))
        else:
            mean, var = buffers["running_mean"][ch], buffers["running_var"][ch]
        for index, v in zip(members, values):
            y[index] = (params["weight"][ch] * (v - mean) / math.sqrt(var + p.eps)
                        + params["bias"][ch])
    return y, {"running_mean": mean_after, "running_var": var_after}


def _ref_add(p, xs, params, buffers, train, observed):
    # an axis of size 1 in an input is read at 0 for every position along it
    shape = tuple(max(sizes) for sizes in zip(*(x.shape for x in xs)))
    y = np.zeros(shape)
    for index in np.ndindex(shape):
        y[index] = sum(float(x[tuple(min(i, size - 1) for i, size in zip(index, x.shape))])
                       for x in xs)
    return y, {}


REFERENCES: dict[str, Reference] = {
    "input": _ref_input,
    "conv2d": _ref_conv2d,
    "maxpool2d": _ref_maxpool2d,
    "avgpool2d": _ref_avgpool2d,
    "global_avgpool": _ref_global_avgpool,
    "relu": _elementwise(lambda v: v if v > 0 else 0.0),
    "leaky_relu": _ref_leaky_relu,
    "sigmoid": _elementwise(lambda v: 1.0 / (1.0 + math.exp(-v))),
    "tanh": _elementwise(math.tanh),
    "dropout": _ref_dropout,
    "batchnorm": _ref_batchnorm,
    "add": _ref_add,
    # the tensor ops, and linear, softmax, flatten and concat in their any-rank forms
    **TENSOR_REFERENCES,
}


# ---- the convolutional-network ops (issue 24) ----


def _ref_mul(p, xs, params, buffers, train, observed):
    a, b = xs
    shape = tuple(max(i, j) for i, j in zip(a.shape, b.shape))
    y = np.zeros(shape)
    for index in np.ndindex(shape):
        pick_a = tuple(min(i, size - 1) for i, size in zip(index, a.shape))
        pick_b = tuple(min(i, size - 1) for i, size in zip(index, b.shape))
        y[index] = a[pick_a] * b[pick_b]
    return y, {}


def _ref_adaptive_avgpool2d(p, xs, params, buffers, train, observed):
    x = xs[0]
    n, c, h, w = x.shape
    out_h, out_w = _pair(p.output_size)
    y = np.zeros((n, c, out_h, out_w))
    for b, ch, i, j in np.ndindex(y.shape):
        top, bottom = math.floor(i * h / out_h), math.ceil((i + 1) * h / out_h)
        left, right = math.floor(j * w / out_w), math.ceil((j + 1) * w / out_w)
        cells = [x[b, ch, r, q] for r in range(top, bottom) for q in range(left, right)]
        y[b, ch, i, j] = sum(cells) / len(cells)
    return y, {}


def _ref_hardtanh(p, xs, params, buffers, train, observed):
    return _elementwise(lambda v: min(max(v, p.min_val), p.max_val))(
        p, xs, params, buffers, train, observed)


def _ref_gelu(p, xs, params, buffers, train, observed):
    if p.approximate == "tanh":
        def function(v):
            return 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)))
    else:
        def function(v):
            return 0.5 * v * (1 + math.erf(v / math.sqrt(2)))
    return _elementwise(function)(p, xs, params, buffers, train, observed)


def _ref_log_softmax(p, xs, params, buffers, train, observed):
    x = xs[0]
    axis = p.dim % x.ndim
    y = np.zeros(x.shape)
    for index in np.ndindex(x.shape):
        line = [float(x[index[:axis] + (k,) + index[axis + 1:]]) for k in range(x.shape[axis])]
        y[index] = float(x[index]) - math.log(sum(math.exp(v) for v in line))
    return y, {}


def _ref_stochastic_depth(p, xs, params, buffers, train, observed):
    """Which samples survive is the generator's to choose, so it is read off the op's output
    (inputs are never zero); checked: a sample is kept whole, scaled by 1/(1-p), or zeroed
    whole, and inference is the identity."""
    x = xs[0]
    if not train or p.p == 0:
        return x.copy(), {}
    y = np.zeros(x.shape)
    kept = [bool(np.any(observed[b] != 0)) for b in range(x.shape[0])]
    for b in range(x.shape[0]):
        if kept[b]:
            for index in np.ndindex(x.shape[1:]):
                y[(b, *index)] = x[(b, *index)] / (1.0 - p.p)
    return y, {}


def _sigmoid_of(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def _ref_conv_transpose2d(p, xs, params, buffers, train, observed):
    """Every input cell adds its value times the kernel onto the output it reaches."""
    x, w = xs[0], params["weight"]
    n, c, h, width = x.shape
    (kh, kw), (sh, sw), (ph, pw) = _pair(p.kernel_size), _pair(p.stride), _pair(p.padding)
    (eh, ew), (dh, dw) = _pair(p.output_padding), _pair(p.dilation)
    out_c = p.out_channels
    oh = (h - 1) * sh - 2 * ph + dh * (kh - 1) + eh + 1
    ow = (width - 1) * sw - 2 * pw + dw * (kw - 1) + ew + 1
    group_in, group_out = c // p.groups, out_c // p.groups
    y = np.zeros((n, out_c, oh, ow))
    for b, ci, i, j in np.ndindex(x.shape):
        group = ci // group_in
        for oc, a, d in np.ndindex(group_out, kh, kw):
            row, col = i * sh + a * dh - ph, j * sw + d * dw - pw
            if 0 <= row < oh and 0 <= col < ow:
                y[b, group * group_out + oc, row, col] += x[b, ci, i, j] * w[ci, oc, a, d]
    if p.bias:
        for b, o, i, j in np.ndindex(y.shape):
            y[b, o, i, j] += params["bias"][o]
    return y, {}


def _ref_upsample(p, xs, params, buffers, train, observed):
    x = xs[0]
    n, c, h, w = x.shape
    sh, sw = _pair(p.scale_factor)
    y = np.zeros((n, c, h * sh, w * sw))

    def source(dst: int, scale: int, size: int) -> list[tuple[int, float]]:
        if p.mode == "nearest":
            return [(dst // scale, 1.0)]
        position = max((dst + 0.5) / scale - 0.5, 0.0)
        low = math.floor(position)
        frac = position - low
        return [(low, 1 - frac), (min(low + 1, size - 1), frac)]

    for b, ch, i, j in np.ndindex(y.shape):
        y[b, ch, i, j] = sum(wr * wc * x[b, ch, r, q] for r, wr in source(i, sh, h)
                             for q, wc in source(j, sw, w))
    return y, {}


REFERENCES.update({
    "conv_transpose2d": _ref_conv_transpose2d,
    "upsample": _ref_upsample,
    "mul": _ref_mul,
    "adaptive_avgpool2d": _ref_adaptive_avgpool2d,
    "hardtanh": _ref_hardtanh,
    "relu6": _elementwise(lambda v: min(max(v, 0.0), 6.0)),
    "silu": _elementwise(lambda v: v * _sigmoid_of(v)),
    "gelu": _ref_gelu,
    "hardswish": _elementwise(lambda v: v * min(max(v + 3, 0.0), 6.0) / 6),
    "hardsigmoid": _elementwise(lambda v: min(max(v + 3, 0.0), 6.0) / 6),
    "log_softmax": _ref_log_softmax,
    "stochastic_depth": _ref_stochastic_depth,
})


# ---- whole networks ----


def build_network(toml: str, *, seed: int = 0, dtype: str = "float64",
                  file: str = "test.toml", directory: Path | None = None,
                  fuse: bool = True) -> netspec.Network:
    """A runnable Network from spec text (``parse_spec`` then ``compile``)."""
    spec = netspec.parse_spec(toml, file=file, directory=directory)
    return netspec.compile(spec, seed=seed, dtype=dtype, fuse=fuse)


def network_fd_gradients(net: netspec.Network, x: Array | dict[str, Array],
                         projection: Array, *, train: bool = False,
                         step: float = FD_STEP) -> dict[str, Array]:
    """Central-difference gradients of ``sum(projection * net(x))`` for every parameter
    (by key) and every input (``input:<id>``), entry by entry: for small networks only.
    The dropout generator is rewound before every pass, so masks repeat."""
    feed = {k: np.array(v, dtype=np.float64) for k, v in
            (x.items() if isinstance(x, dict) else [(net.plan.inputs[0], x)])}
    rng_state = net.rng.bit_generator.state

    def output() -> Array:
        net.rng.bit_generator.state = rng_state
        given = feed if isinstance(x, dict) else feed[net.plan.inputs[0]]
        return net.forward(given, train=train).copy()

    tensors = {**net.params, **{f"input:{k}": v for k, v in feed.items()}}
    grads = {}
    for key, tensor in tensors.items():
        flat = tensor.reshape(-1)
        grad = np.zeros(flat.size)
        for index in range(flat.size):
            original = flat[index]
            flat[index] = original + step
            plus = output()
            flat[index] = original - step
            minus = output()
            flat[index] = original
            grad[index] = float((projection * (plus - minus)).sum()) / (2 * step)
        grads[key] = grad.reshape(tensor.shape)
    net.rng.bit_generator.state = rng_state
    return grads


# a network with two inputs of different ranks, joined by a concat
TWO_INPUTS = """
[nodes.a]
op = "input"
shape = [3]

[nodes.b]
op = "input"
shape = [2, 4, 4]

[nodes.fa]
op = "linear"
inputs = "a"
out_features = 5

[nodes.pb]
op = "avgpool2d"
inputs = "b"
kernel_size = 2

[nodes.flat]
op = "flatten"

[nodes.joined]
op = "concat"
inputs = ["fa", "flat"]

[nodes.act]
op = "sigmoid"

[nodes.out]
op = "linear"
out_features = 2
"""


def affordable_architectures(max_flops: int = 10**8) -> list[Path]:
    """The shipped architectures small enough for float64 finite differences and repeated
    float64 passes in CI: the 28x28 ones. The 224x224 ResNets are built from the same blocks
    as resnet_mnist, which is among them; their own parity is tests/test_resnet_twin.py."""
    from netspec.lang.spec import shipped_architectures
    from netspec.plan.compiler import compile_plan

    return [path for path in shipped_architectures()
            if compile_plan(path).total_flops <= max_flops]
