"""Subgraphs an exporter writes for one PyTorch module, read back as that one netspec op.

``torch.onnx.export`` writes ``nn.MultiheadAttention`` (as torchvision's ViT calls it: one input
for query, key and value, batch first) as some forty nodes that put the batch axis second,
fold it into the heads' axis (``(T, N*H, d)``, with N written as the number it was when traced)
and put it back. netspec's values keep the batch first and never mix samples, so those nodes
cannot be read one by one; the region between the first transpose and the last is recognised as
a whole, checked, and becomes one ``multihead_attention`` node with the module's weights.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from netspec.interchange.onnx_translator import Translator

# every op the exporter writes inside the attention region (shape arithmetic included)
_ATTENTION_OPS = frozenset({
    "Transpose", "MatMul", "Add", "Reshape", "Unsqueeze", "Squeeze", "Gather", "Shape",
    "Slice", "Concat", "Cast", "Sqrt", "Div", "Mul", "Softmax", "Gemm", "Dropout", "Identity",
})
_SWAP_FIRST_TWO = [1, 0, 2]


@dataclass(frozen=True)
class AttentionRegion:
    """One recognised attention: ``start`` and ``end`` are the two transposes around it,
    ``inside`` every node strictly between them, by its first output's name (protobuf hands
    out a new object at each access, so identities do not last)."""

    start: Any
    end: Any
    inside: frozenset[int]
    in_projection: Any  # the MatMul by the packed q, k, v weight
    in_bias: Any  # the Add of the packed bias
    out_projection: Any  # the Gemm of out_proj
    head_reshapes: tuple[Any, ...]  # the Reshapes to (T, N*H, d)


def _perm(n: Any) -> list[int] | None:
    for attribute in n.attribute:
        if attribute.name == "perm":
            return list(attribute.ints)
    return None


def find_attention_regions(graph: Any, data_inputs: set[str]) -> list[AttentionRegion]:
    """The attention regions of ``graph`` whose inputs (not initializers) are ``data_inputs``.
    A candidate that does not have exactly the exporter's shape is left alone, for the per-op
    importers to judge."""
    consumers: dict[str, list[Any]] = defaultdict(list)
    for n in graph.node:
        for name in n.input:
            if name:
                consumers[name].append(n)
    # values computed from the inputs; every other value is a constant
    dynamic = set(data_inputs)
    for n in graph.node:  # in topological order
        if any(name in dynamic for name in n.input):
            dynamic.update(n.output)
    constants = {name for n in graph.node for name in (*n.input, *n.output)
                 if name and name not in dynamic}
    outputs = {value.name for value in graph.output}
    regions = []
    for start in graph.node:
        if start.op_type == "Transpose" and _perm(start) == _SWAP_FIRST_TWO:
            region = _region_from(start, consumers, constants, outputs)
            if region is not None:
                regions.append(region)
    return regions


def _region_from(start: Any, consumers: dict[str, list[Any]], constants: set[str],
                 outputs: set[str]) -> AttentionRegion | None:
    inside: dict[str, Any] = {}
    ends: dict[str, Any] = {}
    frontier = list(consumers[start.output[0]])
    while frontier:
        n = frontier.pop()
        if n.output[0] in inside or n.output[0] in ends:
            continue
        if n.op_type not in _ATTENTION_OPS or len(inside) > 200:
            return None
        if n.op_type == "Transpose" and _perm(n) == _SWAP_FIRST_TWO and _after_gemm(n, inside):
            ends[n.output[0]] = n
            continue
        inside[n.output[0]] = n
        for name in n.output:
            if name in outputs:
                return None
            frontier.extend(consumers[name])
    if len(ends) != 1:
        return None
    # the end's Reshape and Gemm may have been reached after it was met; check again
    end = next(iter(ends.values()))
    if not _after_gemm(end, inside):
        return None
    produced = {name for n in inside.values() for name in n.output} | {start.output[0]}
    for n in inside.values():
        # everything inside reads the region, or constants; nothing outside reads the region
        if any(name and name not in produced and name not in constants for name in n.input):
            return None
        if any(c.output[0] != end.output[0] and c.output[0] not in inside
               for name in n.output for c in consumers[name]):
            return None
    kinds = defaultdict(list)
    for n in inside.values():
        kinds[n.op_type].append(n)
    weighted = [m for m in kinds["MatMul"] if m.input[1] in constants]
    products = [m for m in kinds["MatMul"] if m.input[1] not in constants]
    if (len(weighted) != 1 or len(products) != 2 or len(kinds["Softmax"]) != 1
            or len(kinds["Gemm"]) != 1 or len(kinds["Add"]) != 1):
        return None
    head_reshapes = tuple(r for r in kinds["Reshape"] if r.input[1] in constants)
    return AttentionRegion(start, end, frozenset(inside), weighted[0], kinds["Add"][0],
                           kinds["Gemm"][0], head_reshapes)


def _after_gemm(n: Any, inside: dict[str, Any]) -> bool:
    """Whether ``n`` reads a Reshape of the region's Gemm (out_proj, then back to (T, N, D))."""
    reshape = next((m for m in inside.values() if m.output[0] == n.input[0]), None)
    if reshape is None or reshape.op_type != "Reshape":
        return False
    gemm = next((m for m in inside.values() if m.output[0] == reshape.input[0]), None)
    return gemm is not None and gemm.op_type == "Gemm"


def import_attention(t: Translator, region: AttentionRegion) -> None:
    """The region as one ``multihead_attention`` node, at its end (every constant it reads is
    known by then)."""
    n = region.end
    x = t.values.get(region.start.input[0])
    if isinstance(x, np.ndarray):
        t.refuse(n, "the attention's input is a constant; netspec attends over the network's "
                    "values only")
    if not hasattr(x, "onnx_shape"):
        return  # a refused node before it: said there
    if len(x.shape) != 2 or x.shape != x.onnx_shape:
        t.refuse(n, f"attention over per-sample shape {list(x.onnx_shape)}; netspec's "
                    f"multihead_attention takes tokens (T, D)")
        return
    tokens, embed = x.shape
    weight = t.constant(region.in_projection, 1, "the packed q, k, v weight")
    bias = _bias_of(t, region.in_bias)
    out_weight = t.constant(region.out_projection, 1, "out_proj's weight")
    out_bias = t.constant(region.out_projection, 2, "out_proj's bias")
    if weight is None or bias is None or out_weight is None or out_bias is None:
        return
    if t.attr(region.out_projection, "transB", 0) != 1:
        out_weight = out_weight.T
    heads = _heads(t, region.head_reshapes, tokens, embed)
    if weight.shape != (embed, 3 * embed) or bias.shape != (3 * embed,) or heads is None:
        t.refuse(n, f"attention over {embed} features: weight {list(weight.shape)}, bias "
                    f"{list(bias.shape)} and the heads' reshapes do not fit "
                    f"nn.MultiheadAttention's layout")
        return
    t.emit(region.start, "multihead_attention", [x],
           {"embed_dim": int(embed), "num_heads": int(heads)},
           {"in_proj_weight": weight.T, "in_proj_bias": bias,
            "out_proj.weight": out_weight, "out_proj.bias": out_bias.reshape(-1)})
    if n.output[0] != region.start.output[0] and region.start.output[0] in t.values:
        t.values[n.output[0]] = t.values.pop(region.start.output[0])


def _bias_of(t: Translator, add: Any) -> np.ndarray | None:
    index = 0 if add.input[0] in t.values and isinstance(t.values[add.input[0]], np.ndarray) \
        else 1
    return t.constant(add, index, "the packed q, k, v bias")


def _heads(t: Translator, reshapes: Sequence[Any], tokens: int, embed: int) -> int | None:
    """The number of heads, from the reshapes of q, k and v to (N, H, T, d)."""
    counts = set()
    for reshape in reshapes:
        target = t.values.get(reshape.input[1])
        if not isinstance(target, np.ndarray) or target.dtype == object:
            continue
        dims = [int(d) for d in target.reshape(-1)]
        if len(dims) == 4 and dims[2] == tokens and dims[1] * dims[3] == embed:
            counts.add(dims[1])
    return counts.pop() if len(counts) == 1 else None


# (find the regions in a graph, read one region as netspec nodes), for the translator
PATTERNS = ((find_attention_regions, import_attention),)
