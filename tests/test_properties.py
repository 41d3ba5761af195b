"""Property tests: whatever text a spec holds, netspec compiles and runs it or says what is wrong.

Strategies build small random networks (chains and DAGs with branches, add/concat merges,
conv/pool/linear/flatten/activations/batchnorm/dropout; values of any rank: tokens (T, D) and
4-D inputs, reshape/permute/transpose/select/slice/mean/softmax/layernorm chains, attention
with one or three inputs, learned tensors added, multiplied, joined as a class token or
multiplied as a matrix, concat along any dim) together with the shape of every node
worked out independently here, write them as TOML in several layouts, and mutate them: fields
deleted, misspelt or retyped, values out of range, nodes rewired into cycles or to unknown ids,
shapes made incompatible, text truncated or scrambled. The property, for every input:

* ``compile_plan(parse_spec(text))`` returns a Plan whose shapes are those computed here (for
  unmutated networks), and the compiled network's forward on a batch of 2 produces every node's
  planned shape, its backward every parameter's shape; or
* it raises a NetspecError whose diagnostics all name the file, and that name a node only with a
  line inside that node's text.

Never any other exception. Example counts come from a profile: ``ci`` (default, about a minute
on 2 cores) or ``long`` (``NETSPEC_HYPOTHESIS_PROFILE=long``, 20x more examples).
"""

from __future__ import annotations

import json
import math
import os
import string
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import netspec
from netspec.common.errors import NetspecError, SpecError
from netspec.lang.spec import load_spec, parse_spec
from netspec.ops import REGISTRY, Context
from netspec.ops.base import param_key
from netspec.plan.budget import check_memory, estimate_memory
from netspec.plan.compiler import Plan, compile_plan
from netspec.train.config import parse_train_config

PROFILE = os.environ.get("NETSPEC_HYPOTHESIS_PROFILE", "ci")
SCALES = {"ci": 1, "long": 20}
if PROFILE not in SCALES:
    raise ValueError(f"NETSPEC_HYPOTHESIS_PROFILE must be one of {sorted(SCALES)}, "
                     f"got {PROFILE!r}")
FILE = "fuzz.toml"
# a plan is run only when it is this cheap: mutations can make valid but large networks
RUN_BYTES = 32 * 2**20
RUN_FLOPS = 2_000_000
MAX_VALUES = 256  # per-sample size of any generated node, so forwards stay cheap


def record(kind: str) -> None:
    """Count outcomes in Hypothesis' statistics (``--hypothesis-show-statistics``)."""
    if currently_in_test_context():
        event(kind)


def examples(count: int) -> settings:
    """Settings for a property run ``count`` times in CI, more under the long profile."""
    return settings(max_examples=count * SCALES[PROFILE], deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# --------------------------------------------------------------------------------------------
# A network as the strategies see it: nodes in file order with their fields and expected shape


@dataclass
class Node:
    id: str
    fields: dict[str, Any]
    shape: tuple[int, ...] | None  # None once a mutation makes it unknowable


@dataclass
class Network:
    nodes: list[Node]
    output: str | None = None
    name: str | None = None
    style: str = "tables"
    comments: bool = False
    extra_tables: dict[str, Any] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [node.id for node in self.nodes]


@dataclass(frozen=True)
class Emitted:
    """TOML text and the line span of each node's text, and each node key's line."""

    text: str
    spans: dict[str, tuple[int, int]]
    key_lines: dict[tuple[str, str], int]


_BARE = set(string.ascii_letters + string.digits + "_-")


def toml_key(key: str) -> str:
    return key if key and set(key) <= _BARE else toml_string(key)


def toml_string(text: str) -> str:
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b",
               "\f": "\\f"}
    out = []
    for char in text:
        if char in escapes:
            out.append(escapes[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value)
                                                         else ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def emit(net: Network) -> Emitted:
    """The network as TOML in its style: [nodes.x] tables, dotted keys, or inline tables."""
    lines: list[str] = []
    spans: dict[str, tuple[int, int]] = {}
    key_lines: dict[tuple[str, str], int] = {}
    network = {k: v for k, v in (("name", net.name), ("output", net.output)) if v is not None}
    if network:
        lines.append("[network]")
        lines += [f"{key} = {toml_value(value)}" for key, value in network.items()]
        lines.append("")
    for table, value in net.extra_tables.items():
        lines.append(f"{toml_key(table)} = {toml_value(value)}")
    if net.style != "tables":
        lines.append("[nodes]")
    for node in net.nodes:
        if net.comments:
            lines.append(f"# node {node.id!r} [nodes.fake] = 1 \"")
        start = len(lines) + 1
        if net.style == "tables":
            lines.append(f"[nodes.{toml_key(node.id)}]")
            for key, value in node.fields.items():
                lines.append(f"{toml_key(key)} = {toml_value(value)}")
                key_lines[node.id, key] = len(lines)
        elif net.style == "dotted":
            for key, value in node.fields.items():
                lines.append(f"{toml_key(node.id)}.{toml_key(key)} = {toml_value(value)}")
                key_lines[node.id, key] = len(lines)
            if not node.fields:
                lines.append(f"{toml_key(node.id)} = {{}}")
        else:
            lines.append(f"{toml_key(node.id)} = {toml_value(node.fields)}")
            for key in node.fields:
                key_lines[node.id, key] = len(lines)
        spans[node.id] = (start, len(lines))
        if net.comments:
            lines.append("")
    return Emitted("\n".join(lines) + "\n", spans, key_lines)


# --------------------------------------------------------------------------------------------
# Valid networks, with every node's shape computed here, independently of netspec


def window(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def size_pair(draw: Callable, limit_h: int, limit_w: int, low: int = 1) -> Any:
    """An int or an [h, w] pair of sizes in [low, limit]."""
    if limit_h == limit_w and draw(st.booleans()):
        return draw(st.integers(low, limit_h))
    return [draw(st.integers(low, limit_h)), draw(st.integers(low, limit_w))]


def as_pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def weighted_fields(draw: Callable) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if draw(st.integers(0, 4)) == 0:
        fields["init"] = draw(st.sampled_from(["he_normal", "he_uniform", "glorot_normal",
                                               "glorot_uniform", "lecun_normal", "normal",
                                               "uniform", "zeros"]))
        if fields["init"] in ("normal", "uniform") and draw(st.booleans()):
            fields["init_scale"] = draw(st.floats(1e-3, 1.0))
    if draw(st.integers(0, 6)) == 0:
        fields["bias_init"] = draw(st.floats(-1.0, 1.0))
    if draw(st.integers(0, 6)) == 0:
        fields["trainable"] = draw(st.booleans())
    return fields


def explicit_weight(draw: Callable, shape: tuple[int, ...]) -> list[Any]:
    flat = draw(st.lists(st.floats(-2, 2, allow_nan=False), min_size=math.prod(shape),
                         max_size=math.prod(shape)))
    return np.asarray(flat).reshape(shape).tolist()


def single_input_op(draw: Callable, shape: tuple[int, ...]) -> tuple[dict[str, Any], tuple]:
    """A random op that accepts ``shape``, its fields, and its output shape."""
    rank = len(shape)
    choices = ["relu", "leaky_relu", "sigmoid", "tanh", "softmax", "dropout", "flatten"]
    if rank == 1:
        choices += ["linear"] * 4 + ["batchnorm"]
    if rank == 3:
        choices += ["conv2d"] * 4 + ["maxpool2d", "avgpool2d"] * 2 + ["global_avgpool",
                                                                      "batchnorm"]
    if rank >= 2 and draw(st.integers(0, 1)) == 0:
        # tensors of any rank: the ops that move values between axes, norms, attention
        return tensor_op(draw, shape)
    op = draw(st.sampled_from(choices))
    fields: dict[str, Any] = {"op": op}
    if op == "leaky_relu" and draw(st.booleans()):
        fields["negative_slope"] = draw(st.floats(0.0, 0.99))
    if op == "dropout" and draw(st.booleans()):
        fields["p"] = draw(st.floats(0.0, 0.9))
    if op == "batchnorm":
        if draw(st.booleans()):
            fields["eps"] = draw(st.floats(1e-6, 0.5))
        if draw(st.booleans()):
            fields["momentum"] = draw(st.floats(0.01, 1.0))
    if op == "flatten":
        return fields, (math.prod(shape),)
    if op == "global_avgpool":
        return fields, (shape[0],)
    if op == "linear":
        out = draw(st.integers(1, 8))
        fields["out_features"] = out
        fields |= weighted_fields(draw)
        if draw(st.booleans()):
            fields["bias"] = draw(st.booleans())
        if draw(st.integers(0, 8)) == 0:
            fields["weight"] = explicit_weight(draw, (out, shape[0]))
        return fields, (out,)
    if op == "conv2d":
        channels, height, width = shape
        padding = size_pair(draw, 2, 2, low=0) if draw(st.booleans()) else 0
        pad_h, pad_w = as_pair(padding)
        kernel = size_pair(draw, min(height + 2 * pad_h, 5), min(width + 2 * pad_w, 5))
        stride = size_pair(draw, 3, 3) if draw(st.booleans()) else 1
        out = draw(st.integers(1, 4))
        fields |= {"out_channels": out, "kernel_size": kernel, "stride": stride,
                   "padding": padding}
        fields |= weighted_fields(draw)
        if draw(st.booleans()):
            fields["bias"] = draw(st.booleans())
        kernel_h, kernel_w = as_pair(kernel)
        if draw(st.integers(0, 8)) == 0:
            fields["weight"] = explicit_weight(draw, (out, channels, kernel_h, kernel_w))
        stride_h, stride_w = as_pair(stride)
        return fields, (out, window(height, kernel_h, stride_h, pad_h),
                        window(width, kernel_w, stride_w, pad_w))
    if op in ("maxpool2d", "avgpool2d"):
        channels, height, width = shape
        kernel = size_pair(draw, min(height, 4), min(width, 4))
        kernel_h, kernel_w = as_pair(kernel)
        padding = [draw(st.integers(0, kernel_h // 2)), draw(st.integers(0, kernel_w // 2))]
        fields["kernel_size"] = kernel
        if any(padding):
            fields["padding"] = padding
        stride = size_pair(draw, 3, 3) if draw(st.booleans()) else None
        if stride is not None:
            fields["stride"] = stride
        stride_h, stride_w = as_pair(stride if stride is not None else kernel)
        return fields, (channels, window(height, kernel_h, stride_h, padding[0]),
                        window(width, kernel_w, stride_w, padding[1]))
    return fields, shape


def tensor_op(draw: Callable, shape: tuple[int, ...]) -> tuple[dict[str, Any], tuple]:
    """A random op of tensors of any rank that accepts ``shape`` (rank 2 or more), and its
    output shape computed here. Dims are PyTorch's: the batch axis is 0."""
    rank = len(shape)
    choices = ["reshape", "permute", "transpose", "select", "slice", "mean", "softmax",
               "log_softmax", "flatten", "layernorm", "stochastic_depth"]
    if rank != 3:  # a rank-3 value may be an image, which linear refuses
        choices += ["linear"]
    if rank == 2:
        choices += ["multihead_attention"]
    if rank == 3:
        choices += ["layernorm2d", "channel_shuffle"]
    op = draw(st.sampled_from(choices))

    def dim() -> int:
        axis = draw(st.integers(1, rank))
        return axis - rank - 1 if draw(st.booleans()) else axis

    if op == "reshape":
        target = list(reversed(shape))
        if draw(st.booleans()):
            target[draw(st.integers(0, rank - 1))] = -1
        return {"op": op, "shape": target}, tuple(reversed(shape))
    if op == "permute":
        order = draw(st.permutations(list(range(1, rank + 1))))
        return {"op": op, "dims": [0, *order]}, tuple(shape[a - 1] for a in order)
    if op == "transpose":
        first, second = dim(), dim()
        swapped = list(shape)
        a, b = first % (rank + 1) - 1, second % (rank + 1) - 1
        swapped[a], swapped[b] = swapped[b], swapped[a]
        return {"op": op, "dim0": first, "dim1": second}, tuple(swapped)
    if op == "select":
        chosen = dim()
        axis = chosen % (rank + 1) - 1
        index = draw(st.integers(-shape[axis], shape[axis] - 1))
        return {"op": op, "dim": chosen, "index": index}, shape[:axis] + shape[axis + 1:]
    if op == "slice":
        chosen = dim()
        axis = chosen % (rank + 1) - 1
        start = draw(st.integers(0, shape[axis] - 1))
        end = draw(st.integers(start + 1, shape[axis]))
        step = draw(st.integers(1, 3))
        kept = len(range(start, end, step))
        fields = {"op": op, "dim": chosen, "start": start, "end": end}
        if step > 1:
            fields["step"] = step
        return fields, shape[:axis] + (kept,) + shape[axis + 1:]
    if op == "mean":
        axes = draw(st.lists(st.integers(1, rank), min_size=1, max_size=rank, unique=True))
        keepdim = draw(st.booleans())
        if len(axes) == rank and not keepdim:  # a scalar per sample is refused
            axes = axes[:-1] or axes
            keepdim = len(axes) == rank
        out = tuple(1 if a + 1 in axes else size for a, size in enumerate(shape)
                    if keepdim or a + 1 not in axes)
        chosen = [a - rank - 1 if draw(st.booleans()) else a for a in axes]
        return {"op": op, "dim": chosen, "keepdim": keepdim}, out
    if op in ("softmax", "log_softmax"):
        return {"op": op, "dim": dim()}, shape
    if op == "stochastic_depth":
        return {"op": op, "p": draw(st.floats(0.0, 0.9))}, shape
    if op == "flatten":
        start = draw(st.integers(1, rank))
        end = draw(st.integers(start, rank))
        return ({"op": op, "start_dim": start, "end_dim": end},
                shape[:start - 1] + (math.prod(shape[start - 1:end]),) + shape[end:])
    if op == "layernorm":
        normalized = shape[-1] if draw(st.booleans()) else list(shape[-draw(
            st.integers(1, rank)):])
        fields = {"op": op, "normalized_shape": normalized}
        if draw(st.integers(0, 3)) == 0:
            fields["elementwise_affine"] = False
        if draw(st.integers(0, 3)) == 0:
            fields["eps"] = draw(st.floats(1e-6, 0.1))
        return fields, shape
    if op == "linear":
        out = draw(st.integers(1, 6))
        return {"op": op, "out_features": out}, (*shape[:-1], out)
    if op == "multihead_attention":
        heads = draw(st.sampled_from([h for h in range(1, shape[-1] + 1) if shape[-1] % h == 0]))
        fields = {"op": op, "embed_dim": shape[-1], "num_heads": heads,
                  "causal": draw(st.booleans())}
        if draw(st.booleans()):
            fields["dropout"] = draw(st.floats(0.0, 0.9))
        if draw(st.integers(0, 3)) == 0:
            fields["bias"] = False
        return fields, shape
    if op == "layernorm2d":
        return {"op": op, "normalized_shape": shape[0]}, shape
    groups = draw(st.sampled_from([g for g in range(1, shape[0] + 1) if shape[0] % g == 0]))
    return {"op": "channel_shuffle", "groups": groups}, shape


def tensor_pair(draw: Callable, source: Node, nodes: list[Node], learned_id: str
                ) -> tuple[Node | None, tuple[dict[str, Any], tuple]] | None:
    """A node that reads ``source`` and a second value: a learned tensor (made here, as a
    node of its own) added, multiplied, joined in front as a class token or multiplied as a
    matrix; or attention whose key and value are another node of tokens. Returns the learned
    tensor's node (or None) and the reading node's fields and shape; None if nothing fits."""
    shape, rank = source.shape, len(source.shape)
    kinds = ["add", "mul", "class_token"] + (["matmul"] if rank >= 2 else []) + (
        ["attend"] if rank == 2 else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "attend":
        others = [n for n in nodes if len(n.shape) == 2 and n.shape[-1] == shape[-1]]
        other = draw(st.sampled_from(others))  # the source itself is one of them
        heads = draw(st.sampled_from([h for h in range(1, shape[-1] + 1)
                                      if shape[-1] % h == 0]))
        fields = {"op": "multihead_attention", "embed_dim": shape[-1], "num_heads": heads,
                  "inputs": [written(source.id), written(other.id), written(other.id)]}
        if other.shape[0] == shape[0] and draw(st.booleans()):
            fields["causal"] = True
        return None, (fields, shape)
    learned: dict[str, Any] = {"op": "parameter"}
    if kind == "class_token":
        axis = draw(st.integers(0, rank - 1))
        per_sample = shape[:axis] + (1,) + shape[axis + 1:]
        out = shape[:axis] + (shape[axis] + 1,) + shape[axis + 1:]
        reader = {"op": "concat", "inputs": [written(learned_id), written(source.id)],
                  "dim": axis + 1 if draw(st.booleans()) else axis - rank}
    elif kind == "matmul":
        per_sample = shape[:-2] + (shape[-1], draw(st.integers(1, 4)))
        out = shape[:-1] + per_sample[-1:]
        reader = {"op": "matmul", "inputs": [written(source.id), written(learned_id)]}
    else:
        # both broadcast axes of size 1 (ConvNeXt's layer scale, a per-channel bias)
        per_sample = tuple(size if draw(st.booleans()) else 1 for size in shape)
        out = shape
        reader = {"op": kind, "inputs": [written(source.id), written(learned_id)]}
    if math.prod(out) > MAX_VALUES:
        return None
    if draw(st.booleans()):
        learned |= {"shape": [1, *per_sample], "batch_axis": True}
    else:
        learned["shape"] = list(per_sample)
    if draw(st.booleans()):
        learned["init"] = draw(st.sampled_from(["normal", "uniform", "zeros", "he_normal"]))
    if draw(st.integers(0, 4)) == 0:
        learned["value"] = draw(st.floats(-2.0, 2.0))
    if draw(st.integers(0, 5)) == 0:
        learned["trainable"] = False
    return Node(learned_id, learned, per_sample), (reader, out)


def written(node_id: str) -> str:
    """A node id as an ``inputs`` entry names it: a leading '=' marks an expression, so an id
    that starts with one is written with the '==' escape."""
    return "=" + node_id if node_id.startswith("=") else node_id


def node_names(draw: Callable, count: int) -> list[str]:
    """``count`` distinct ids: mostly bare words, sometimes any non-blank text (quoted keys
    with dots, spaces, quotes, emoji); blank ids and control characters are refused by the
    loader (tests/test_spec.py)."""
    names: list[str] = []
    printable = st.characters(blacklist_categories=("Cc", "Cs"))
    for index in range(count):
        text = draw(st.text(printable, min_size=1, max_size=5).filter(str.strip))
        if draw(st.integers(0, 3)):
            text = "n" + "".join(char for char in text if char in _BARE) + str(index)
        while text in names:
            text += "_"
        names.append(text)
    return names


@st.composite
def networks(draw: Callable, max_nodes: int = 10) -> Network:
    """A valid random network: 1-2 inputs, then ops fed by the previous node or a random
    earlier one, with add and concat merges of shape-compatible nodes."""
    # a step may add two nodes (a learned tensor and the node that reads it)
    names = node_names(draw, 2 * max_nodes + 2)
    nodes: list[Node] = []
    for _ in range(draw(st.sampled_from([1, 1, 1, 2]))):
        rank = draw(st.sampled_from([3, 3, 3, 1, 1, 2, 4]))
        dims = {1: [st.integers(1, 8)], 2: [st.integers(1, 4)] * 2,
                3: [st.integers(1, 3), st.integers(1, 8), st.integers(1, 8)],
                4: [st.integers(1, 3)] * 4}[rank]
        shape = tuple(draw(d) for d in dims)
        nodes.append(Node(names[len(nodes)], {"op": "input", "shape": list(shape)}, shape))
    for _ in range(draw(st.integers(1, max_nodes))):
        index = len(nodes)
        previous = nodes[-1]
        # a learned tensor is read where it is made: a value computed from it alone would
        # read no input (refused when it is the output, tested in tests/test_diagnostics.py)
        fed = [n for n in nodes if n.fields.get("op") != "parameter"]
        source = previous if draw(st.integers(0, 9)) < 7 else draw(st.sampled_from(fed))
        kind = draw(st.sampled_from(["single"] * 6 + ["add", "concat", "pair", "pair"]))
        fields: dict[str, Any] | None = None
        shape: tuple[int, ...] = ()
        if kind == "pair" and len(source.shape) >= 1:
            extra = tensor_pair(draw, source, nodes, names[index])
            if extra is not None:
                learned, (fields, shape) = extra
                if learned is not None:
                    nodes.append(learned)
                    index += 1
        if kind == "add":
            same = [n for n in nodes if n.shape == source.shape]
            others = draw(st.lists(st.sampled_from(same), min_size=1, max_size=3))
            sources = [source, *others]
            fields, shape = {"op": "add", "inputs": [written(n.id) for n in sources]}, source.shape
        elif kind == "concat":
            axis = draw(st.integers(0, len(source.shape) - 1))
            rest = source.shape[:axis] + source.shape[axis + 1:]
            fits = [n for n in nodes if len(n.shape) == len(source.shape)
                    and n.shape[:axis] + n.shape[axis + 1:] == rest]
            others = draw(st.lists(st.sampled_from(fits), min_size=1, max_size=2))
            sources = [source, *others]
            joined = sum(n.shape[axis] for n in sources)
            shape = source.shape[:axis] + (joined,) + source.shape[axis + 1:]
            fields = {"op": "concat", "inputs": [written(n.id) for n in sources]}
            how = draw(st.sampled_from(["axis", "dim", "negative dim", "default"]))
            if how == "dim" or (how == "default" and axis):
                fields["dim"] = axis + 1
            elif how == "negative dim":
                fields["dim"] = axis - len(source.shape)
            elif how == "axis":
                fields["axis"] = axis
        if fields is None or math.prod(shape) > MAX_VALUES:
            fields, shape = single_input_op(draw, source.shape)
            if math.prod(shape) > MAX_VALUES:
                fields, shape = {"op": "flatten"}, (math.prod(source.shape),)
                if shape[0] > MAX_VALUES:
                    fields, shape = {"op": "relu"}, source.shape
            if source is not previous or draw(st.booleans()):
                fields["inputs"] = (written(source.id) if draw(st.booleans())
                                    else [written(source.id)])
        nodes.append(Node(names[index], fields, shape))
    net = Network(nodes, style=draw(st.sampled_from(["tables", "tables", "dotted", "inline"])),
                  comments=draw(st.booleans()))
    if draw(st.integers(0, 4)) == 0:
        fed = [n for n in nodes if n.fields.get("op") != "parameter"]
        net.output = draw(st.sampled_from(fed[1:] or fed)).id
    if draw(st.integers(0, 3)) == 0:
        net.name = draw(st.text(min_size=1, max_size=8))
    return net


# --------------------------------------------------------------------------------------------
# Mutations

BAD_NUMBERS = [-1, 0, -(2**63), 2**63, 2**64, 10**9, 10**18, 4097, 65537, 1_000_001, 1e308,
               -0.0, 0.5, float("nan"), float("inf"), float("-inf")]
SIZE_FIELDS = ("out_channels", "out_features", "kernel_size", "stride", "padding", "axis",
               "dim", "dim0", "dim1", "index", "start", "end", "step", "groups", "embed_dim",
               "num_heads", "normalized_shape", "start_dim", "end_dim")
# list-valued sizes of the tensor ops, resized one entry at a time
SIZE_LISTS = ("shape", "dims", "dim", "normalized_shape")
FIELDS = sorted({name for op in REGISTRY.values() for name in op.Params.model_fields})


def typo(draw: Callable, word: str) -> str:
    if not word:
        return "x"
    i = draw(st.integers(0, len(word) - 1))
    edit = draw(st.sampled_from(["drop", "swap", "add", "case"]))
    if edit == "drop" and len(word) > 1:
        return word[:i] + word[i + 1:]
    if edit == "swap" and i + 1 < len(word) and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if edit == "case" and word[i].upper() != word[i]:
        return word[:i] + word[i].upper() + word[i + 1:]
    return word[:i] + draw(st.sampled_from("aeiosx_")) + word[i:]


any_value = st.recursive(
    st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=2),
    max_leaves=5,
)


def retyped(draw: Callable, value: Any) -> Any:
    """``value`` as another TOML type: a string, a list, a bool, a float, a table..."""
    choices = [str(value), [value], True, {"value": value}, [], 1.5,
               draw(any_value)]
    if isinstance(value, int) and not isinstance(value, bool):
        choices.append(float(value))
    if isinstance(value, list):
        choices += [value[:1], value * 2, [[v] for v in value], ",".join(map(str, value))]
    return draw(st.sampled_from(choices))


@dataclass(frozen=True)
class Mutation:
    kind: str
    node: str | None = None
    key: str | None = None


@st.composite
def mutated(draw: Callable) -> tuple[Network, list[Mutation]]:
    """A valid network with 1-3 mutations; shapes are forgotten (set to None) throughout."""
    net = draw(networks(max_nodes=6))
    done: list[Mutation] = []
    for _ in range(draw(st.sampled_from([1, 1, 2, 3]))):
        if not net.nodes:
            break
        node = draw(st.sampled_from(net.nodes))
        keys = list(node.fields)
        # Hypothesis leans towards the first choices: shape errors (the compiler's side)
        # would otherwise be rare next to the loader's
        kind = draw(st.sampled_from([
            "resize", "rewire", "retype", "out_of_range", "delete_field", "rename_field",
            "add_field", "change_op", "delete_node", "output", "input_shape", "top_level",
            "bad_weight"]))
        key = draw(st.sampled_from(keys)) if keys else None
        if kind == "delete_field" and key:
            del node.fields[key]
        elif kind == "rename_field" and key:
            new = typo(draw, key) if draw(st.booleans()) else draw(st.sampled_from(FIELDS))
            if new in node.fields:
                continue
            node.fields = {(new if k == key else k): v for k, v in node.fields.items()}
            key = new
        elif kind == "retype" and key:
            node.fields[key] = retyped(draw, node.fields[key])
        elif kind == "out_of_range":
            key = draw(st.sampled_from([k for k in keys if k != "op"] or FIELDS))
            current = node.fields.get(key)
            if isinstance(current, list) and current and draw(st.booleans()):
                current = list(current)
                current[draw(st.integers(0, len(current) - 1))] = draw(
                    st.sampled_from(BAD_NUMBERS))
                node.fields[key] = current
            else:
                node.fields[key] = draw(st.sampled_from(BAD_NUMBERS))
        elif kind == "add_field":
            key = draw(st.sampled_from(FIELDS) | st.text(min_size=1, max_size=6))
            node.fields[key] = draw(any_value)
        elif kind == "rewire":
            later = net.ids[net.ids.index(node.id):]
            key = "inputs"
            node.fields["inputs"] = draw(st.sampled_from([
                typo(draw, draw(st.sampled_from(net.ids))), node.id, [node.id],
                draw(st.sampled_from(later)), [draw(st.sampled_from(later)), net.ids[0]], [],
                net.ids, [net.ids[0]] * 3, 7, [1, 2], {"a": "b"}, "",
            ]))
        elif kind == "change_op":
            key = "op"
            node.fields["op"] = draw(st.sampled_from(
                [*REGISTRY, typo(draw, str(node.fields.get("op", "relu"))), "", "Conv2d", 3,
                 ["relu"], {"op": "relu"}]))
        elif kind == "delete_node":
            net.nodes.remove(node)
            key = None
        elif kind == "output":
            net.output = draw(st.sampled_from([typo(draw, node.id), "", 3, [node.id], node.id]))
            key = None
        elif kind == "input_shape":
            inputs = [n for n in net.nodes if n.fields.get("op") == "input"] or [node]
            node = draw(st.sampled_from(inputs))
            key = "shape"
            node.fields["shape"] = draw(st.sampled_from([
                [16], [1], [0], [], [1, 2, 3, 4, 5], [1, 1, 1], [3, 1, 64], [65536, 65536],
                [-1, 4, 4], [4096, 4096, 2], [1, 10**9], [2**24 + 1], [1.0, 4.0, 4.0],
                ["1", "4"], [[1], [4]]]))
        elif kind == "top_level":
            key = None
            table = draw(st.sampled_from(["network", "train", "nodez", "netwrok", "trian"]))
            net.extra_tables[table] = draw(any_value)
            if table == "network":
                net.name = net.output = None
        elif kind == "resize":
            # well-typed sizes that no longer fit: kernels past the input, merges of
            # mismatched branches, a linear layer on an image
            sizes = [(n, k) for n in net.nodes for k in n.fields if k in SIZE_FIELDS + SIZE_LISTS]
            sizes += [(n, "op") for n in net.nodes if n.fields.get("op") == "flatten"]
            if not sizes:
                continue
            node, key = draw(st.sampled_from(sizes))
            current = node.fields.get(key)
            if key == "op":
                node.fields["op"] = "relu"
            elif isinstance(current, list) and current:
                # a reshape that no longer multiplies out, a permutation that is not one, a
                # learned tensor of another shape, a norm over other axes
                current = list(current)
                current[draw(st.integers(0, len(current) - 1))] = draw(st.integers(-4, 12))
                if draw(st.integers(0, 3)) == 0:
                    current = current[:-1] if draw(st.booleans()) else current + [
                        draw(st.integers(-2, 6))]
                node.fields[key] = current
            elif key in SIZE_FIELDS:
                low = 0 if key in ("padding", "axis") else -4 if key in (
                    "dim", "dim0", "dim1", "index", "start", "end", "start_dim",
                    "end_dim") else 1
                node.fields[key] = draw(st.integers(low, 12))
            else:
                continue
        elif kind == "bad_weight":
            key = "weight"
            node.fields["weight"] = draw(st.sampled_from([
                [[1.0, 2.0], [3.0]], [["a"]], [[float("nan")]], [[1e308, -1e308]],
                [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
                [{"a": 1}], [], [True, False]]))
        else:
            continue
        done.append(Mutation(kind, node.id, key))
    for node in net.nodes:
        node.shape = None
    return net, done


def scrambled(draw: Callable, text: str) -> str:
    """``text`` truncated, with lines dropped, duplicated or swapped, or junk inserted."""
    lines = text.splitlines(keepends=True)
    edit = draw(st.sampled_from(["truncate", "drop", "duplicate", "swap", "insert", "replace"]))
    if edit == "truncate":
        return text[:draw(st.integers(0, len(text)))]
    if edit in ("drop", "duplicate", "swap") and lines:
        i = draw(st.integers(0, len(lines) - 1))
        j = draw(st.integers(0, len(lines) - 1))
        if edit == "drop":
            return "".join(lines[:i] + lines[i + 1:])
        if edit == "duplicate":
            return "".join(lines[:i] + [lines[i]] + lines[i:])
        lines[i], lines[j] = lines[j], lines[i]
        return "".join(lines)
    junk = draw(toml_junk | st.text(max_size=8))
    at = draw(st.integers(0, len(text)))
    skip = 1 if edit == "replace" else 0
    return text[:at] + junk + text[at + skip:]


toml_junk = st.lists(st.sampled_from([
    "[", "]", "[[", "]]", "{", "}", "=", ".", ",", '"', "'", '"""', "'''", "#", "\n", " ",
    "\\", "nodes", "network", "train", "op", "inputs", "shape", "conv2d", "input", "relu",
    "1", "-1", "1e999", "nan", "true", "[1, 28, 28]", "\x00", "\ufeff", "\u2028", "é", "😀",
    "\r\n", "\t",
]), max_size=30).map("".join)


# --------------------------------------------------------------------------------------------
# The property


def run_nodes(net: netspec.Network, given: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every node's value, computed op by op with the network's own parameters, so that each
    node's actual shape can be compared with its planned one."""
    values: dict[str, np.ndarray] = {}
    batch = next(iter(given.values())).shape[0]
    ctx = Context(train=False, rng=np.random.default_rng(0), batch=batch)
    for node_id, node in net.plan.nodes.items():
        params = {name: net.params[param_key(node_id, name)] for name in node.param_specs}
        buffers = {name: net.buffers[param_key(node_id, name)].copy()
                   for name in node.buffer_specs}
        xs = [given[node_id]] if node.op_name == "input" else [values[s] for s in node.inputs]
        values[node_id], _ = node.op.forward(xs, params, buffers, ctx)
    return values


def check_plan_runs(plan: Plan) -> None:
    """The compiled network's values have the planned shapes, forward and backward."""
    check_memory(plan, 2, training=True)
    estimate = estimate_memory(plan, 2, training=True)
    if estimate.total_bytes > RUN_BYTES or plan.total_flops > RUN_FLOPS:
        record("valid but too large to run in a test")
        return
    net = netspec.compile(plan, seed=0)
    rng = np.random.default_rng(0)
    given = {input_id: rng.normal(size=(2, *plan.nodes[input_id].shape))
             for input_id in plan.inputs}
    x = given if len(given) > 1 else given[plan.inputs[0]]
    output_shape = (2, *plan.nodes[plan.output].shape)
    assert net.forward(x).shape == output_shape
    for node_id, value in run_nodes(net, given).items():
        assert value.shape == (2, *plan.nodes[node_id].shape), node_id
    y = net.forward(x, train=True)
    assert y.shape == output_shape
    dx = net.backward(np.ones_like(y))
    dxs = dx if isinstance(dx, dict) else {plan.inputs[0]: dx}
    for input_id, grad in dxs.items():
        assert grad.shape == given[input_id].shape
    for key in net.trainable:
        assert net.grads[key].shape == net.params[key].shape, key
    record("compiled and ran")


def check_error(exc: NetspecError, emitted: Emitted | None = None) -> None:
    """A user-facing error: diagnostics with the file, node errors with a line in the node."""
    assert str(exc).strip()
    if not isinstance(exc, SpecError):
        return
    assert exc.diagnostics
    for diagnostic in exc.diagnostics:
        assert diagnostic.file == FILE, diagnostic
        assert diagnostic.message.strip(), diagnostic
        if diagnostic.node is not None:
            assert diagnostic.line is not None, diagnostic
        if emitted is not None and diagnostic.node in emitted.spans:
            first, last = emitted.spans[diagnostic.node]
            assert first <= diagnostic.line <= last, (diagnostic, emitted.spans)
    record(f"rejected: {type(exc).__name__}")


def outcome(text: str, emitted: Emitted | None = None) -> Plan | None:
    """The property itself: a plan that runs as planned, or a NetspecError for people."""
    try:
        plan = compile_plan(parse_spec(text, file=FILE))
    except NetspecError as exc:
        check_error(exc, emitted)
        return None
    try:
        check_plan_runs(plan)
    except NetspecError as exc:  # the memory guard may refuse a valid plan
        check_error(exc)
    return plan


@examples(600)
@given(networks())
def test_valid_networks_compile_to_the_shapes_computed_here_and_run(net: Network) -> None:
    emitted = emit(net)
    plan = compile_plan(parse_spec(emitted.text, file=FILE))
    expected = {node.id: node.shape for node in net.nodes}
    assert plan.shapes == {node_id: expected[node_id] for node_id in plan.nodes}
    assert plan.output == (net.output or net.ids[-1])
    check_plan_runs(plan)


@examples(1200)
@given(mutated())
def test_mutated_networks_compile_and_run_or_say_what_is_wrong(case) -> None:
    net, mutations = case
    emitted = emit(net)
    outcome(emitted.text, emitted)


@examples(250)
@given(mutated(), st.data())
def test_mutated_fields_are_blamed_on_their_node_and_line(case, data) -> None:
    """A misspelt field, or a table where a field's value should be, is reported on the
    node that holds it, at the line of that key."""
    net, _ = case
    candidates = [(node, key) for node in net.nodes for key in node.fields if key != "op"
                  and isinstance(node.fields.get("op"), str) and node.fields["op"] in REGISTRY]
    if not candidates:
        return
    node, key = data.draw(st.sampled_from(candidates))
    if data.draw(st.booleans()):
        new = typo(data.draw, key) + "_x"
        node.fields = {(new if k == key else k): v for k, v in node.fields.items()}
        key = new
    else:
        node.fields[key] = {"nested": node.fields[key]}
    emitted = emit(net)
    with pytest.raises(SpecError) as raised:
        compile_plan(parse_spec(emitted.text, file=FILE))
    check_error(raised.value, emitted)
    line = emitted.key_lines[node.id, key]
    assert any(d.node == node.id and d.line == line for d in raised.value.diagnostics), (
        key, line, [str(d) for d in raised.value.diagnostics])


@examples(600)
@given(networks(max_nodes=6), st.data())
def test_scrambled_text_compiles_or_says_what_is_wrong(net: Network, data) -> None:
    outcome(scrambled(data.draw, emit(net).text))


@examples(300)
@given(st.one_of(st.text(), toml_junk, st.binary().map(lambda b: b.decode("latin-1"))))
def test_random_text_is_rejected_with_a_message(text: str) -> None:
    outcome(text)


@pytest.fixture(scope="module")
def spec_dir():
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory)


@examples(60)
@given(data=st.binary(max_size=200))
def test_random_bytes_in_a_spec_file_are_rejected_with_a_message(spec_dir: Path,
                                                                 data: bytes) -> None:
    path = spec_dir / "random.toml"
    path.write_bytes(data)
    try:
        compile_plan(load_spec(path))
    except NetspecError as exc:
        assert str(exc).strip()


def chain(length: int, width: int) -> Network:
    nodes = [Node("x", {"op": "input", "shape": [width]}, (width,))]
    ops = ["relu", "tanh", "sigmoid", "linear", "batchnorm", "dropout", "leaky_relu"]
    for i in range(length):
        op = ops[i % len(ops)]
        fields: dict[str, Any] = {"op": op}
        if op == "linear":
            fields["out_features"] = width
        nodes.append(Node(f"n{i}", fields, (width,)))
    return Network(nodes)


@examples(8)
@given(st.integers(100, 600), st.sampled_from(["tables", "dotted", "inline"]))
def test_very_deep_networks_compile_and_run(length: int, style: str) -> None:
    net = replace(chain(length, 2), style=style)
    plan = compile_plan(parse_spec(emit(net).text, file=FILE))
    assert len(plan.nodes) == length + 1
    check_plan_runs(plan)


@examples(8)
@given(st.integers(50, 400), st.sampled_from(["add", "concat"]))
def test_very_wide_networks_compile_and_run(width: int, merge: str) -> None:
    nodes = [Node("x", {"op": "input", "shape": [1, 2, 2]}, (1, 2, 2))]
    branches = [f"b{i}" for i in range(width)]
    ops = ["relu", "tanh", "sigmoid", "dropout"]
    nodes += [Node(b, {"op": ops[i % 4], "inputs": "x"}, (1, 2, 2))
              for i, b in enumerate(branches)]
    shape = (1, 2, 2) if merge == "add" else (width, 2, 2)
    nodes.append(Node("merge", {"op": merge, "inputs": branches}, shape))
    plan = compile_plan(parse_spec(emit(Network(nodes)).text, file=FILE))
    assert plan.shapes["merge"] == shape
    check_plan_runs(plan)


@examples(4)
@given(st.integers(100, 500))
def test_very_long_cycles_are_reported_not_recursed(length: int) -> None:
    net = chain(length, 2)
    net.nodes[1].fields["inputs"] = net.nodes[-1].id
    emitted = emit(net)
    with pytest.raises(SpecError) as raised:
        compile_plan(parse_spec(emitted.text, file=FILE))
    check_error(raised.value, emitted)
    assert "cycle" in str(raised.value)


@pytest.mark.parametrize("depth", [50, 1000, 100_000])
@pytest.mark.parametrize("opener", ["[", "{a = ", "[{a = "])
def test_deeply_nested_values_are_rejected_not_recursed(depth: int, opener: str) -> None:
    closer = {"[": "]", "{a = ": "}", "[{a = ": "}]"}[opener]
    text = ("[nodes.x]\nop = \"input\"\nshape = [2]\n[nodes.y]\nop = \"linear\"\n"
            f"out_features = 1\nweight = {opener * depth}1{closer * depth}\n")
    with pytest.raises(SpecError) as raised:
        compile_plan(parse_spec(text, file=FILE))
    check_error(raised.value)


# --------------------------------------------------------------------------------------------
# The [train] table: checked when training starts, held to the same standard


train_tables = st.fixed_dictionaries({}, optional={
    "epochs": st.integers(-2, 5) | any_value,
    "batch_size": st.integers(-1, 512) | any_value,
    "seed": st.integers(-1, 2**64) | any_value,
    "validation": st.integers(-1, 10**6),
    "limit": st.integers(-1, 10**6),
    "clip_grad_norm": st.floats() | any_value,
    "label_smoothing": st.floats(),
    "optimizer": st.fixed_dictionaries({}, optional={
        "type": st.sampled_from(["sgd", "adam", "adamw", "sdg", "", 3]),
        "lr": st.floats() | any_value, "momentum": st.floats(), "nesterov": any_value,
        "betas": st.lists(st.floats(), max_size=3) | any_value, "eps": st.floats(),
        "weight_decay": st.floats(), "lrr": any_value}) | any_value,
    "schedule": st.fixed_dictionaries({}, optional={
        "type": st.sampled_from(["constant", "step", "multistep", "exponential", "cosine",
                                 "cosin", 1]),
        "step_size": st.integers(-1, 5) | any_value, "gamma": st.floats(),
        "milestones": st.lists(st.integers(-1, 5)) | any_value,
        "min_lr": st.floats(), "warmup_epochs": st.floats() | any_value}) | any_value,
    "early_stopping": st.fixed_dictionaries({}, optional={
        "monitor": st.sampled_from(["val_loss", "val_accuracy", "loss"]),
        "patience": st.integers(-1, 3) | any_value, "min_delta": st.floats()}) | any_value,
    "augment": st.fixed_dictionaries({}, optional={
        "max_shift": st.integers(-1, 4) | any_value,
        "max_rotation": st.floats() | any_value}) | any_value,
    "epocs": any_value,
})


@examples(300)
@given(train_tables)
def test_train_tables_validate_or_say_what_is_wrong(table: dict[str, Any]) -> None:
    text = ("[nodes.x]\nop = \"input\"\nshape = [4]\n[nodes.y]\nop = \"linear\"\n"
            "out_features = 2\n\n[train]\n"
            + "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in table.items()))
    spec = parse_spec(text, file=FILE)
    try:
        config = parse_train_config(spec.train or {}, file=FILE,
                                    locate=lambda path: spec.source.locate(path))
    except NetspecError as exc:
        check_error(exc)
        for diagnostic in exc.diagnostics:
            assert diagnostic.line is not None and diagnostic.line >= 8, diagnostic
        return
    assert config.epochs >= 1 and config.batch_size >= 1
    assert json.loads(config.model_dump_json())
