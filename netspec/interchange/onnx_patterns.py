"""Subgraphs an exporter writes for one PyTorch module or netspec op, read back as that op.

netspec's own export writes multihead_attention (its in_proj split in the graph), layernorm2d
(Transpose, LayerNormalization, Transpose), channel_shuffle (Reshape, Transpose, Reshape) and
global_avgpool (GlobalAveragePool, Squeeze) as several nodes each; each form is found by its
op types and wiring, its constants checked when it is read, and read back as the one op, so
that netspec -> ONNX -> netspec gives the same plan. PyTorch writes the second and third
alike. A region whose constants say it is something else is read node by node.

``torch.onnx.export`` writes ``nn.MultiheadAttention`` (as torchvision's ViT calls it: one input
for query, key and value, batch first) as some forty nodes that put the batch axis second,
fold it into the heads' axis (``(T, N*H, d)``, with N written as the number it was when traced)
and put it back. netspec's values keep the batch first and never mix samples, so those nodes
cannot be read one by one; the region between the first transpose and the last is recognised as
a whole, checked, and becomes one ``multihead_attention`` node with the module's weights.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from netspec.interchange.onnx_ops import fixed_scale
from netspec.interchange.onnx_translator import BATCH, Tensor, Translator

# every op the exporter writes inside the attention region (shape arithmetic included)
_ATTENTION_OPS = frozenset({
    "Transpose", "MatMul", "Add", "Reshape", "Unsqueeze", "Squeeze", "Gather", "Shape",
    "Slice", "Concat", "Cast", "Sqrt", "Div", "Mul", "Softmax", "Gemm", "Dropout", "Identity",
    # an is_causal mask, built inside from the shapes of q and k
    "Expand", "Trilu", "Equal", "Where", "ConstantOfShape",
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
    mask: Any | None  # the Add of an attention mask to the scores, if any
    out_projection: Any  # the Gemm of out_proj
    head_reshapes: tuple[Any, ...]  # the Reshapes to (T, N*H, d)

    @property
    def members(self) -> frozenset[str]:
        return self.inside | {self.start.output[0], self.end.output[0]}


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
            or len(kinds["Gemm"]) != 1 or len(kinds["Add"]) not in (1, 2)):
        return None
    # an attn_mask is added to the scores right before the Softmax
    scores = kinds["Softmax"][0].input[0]
    masks = [a for a in kinds["Add"] if a.output[0] == scores]
    biases = [a for a in kinds["Add"] if a.output[0] != scores]
    if len(biases) != 1:
        return None
    head_reshapes = tuple(r for r in kinds["Reshape"] if r.input[1] in constants)
    return AttentionRegion(start, end, frozenset(inside), weighted[0], biases[0],
                           masks[0] if masks else None, kinds["Gemm"][0], head_reshapes)


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
    projection = region.out_projection
    # torch.onnx.export's newer (dynamo) exporter drops a bias that is all zeros, as
    # nn.MultiheadAttention starts it: a missing bias adds nothing
    out_bias = t.constant(projection, 2, "out_proj's bias") if (
        len(projection.input) > 2 and projection.input[2]) else np.zeros(embed, np.float32)
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
    fields: dict[str, Any] = {"embed_dim": int(embed), "num_heads": int(heads)}
    if region.mask is not None:
        if not _causal_mask(t, region.mask, tokens):
            return
        fields["causal"] = True
    t.emit(region.start, "multihead_attention", [x], fields,
           {"in_proj_weight": weight.T, "in_proj_bias": bias,
            "out_proj.weight": out_weight, "out_proj.bias": out_bias.reshape(-1)})
    if n.output[0] != region.start.output[0] and region.start.output[0] in t.values:
        t.values[n.output[0]] = t.values.pop(region.start.output[0])


def _causal_mask(t: Translator, add: Any, tokens: int) -> bool:
    """Whether the mask ``add`` adds to the scores is the causal one (what an attn_mask from
    nn.Transformer.generate_square_subsequent_mask is); refused otherwise, with the reason."""
    # the scores are inside the region (not translated): the mask is the input with a value
    mask = next((t.values[name] for name in add.input
                 if isinstance(t.values.get(name), np.ndarray)), None)
    if mask is None:
        mask = _shape_built_mask(t, add)
    if mask is None or mask.dtype == object:
        t.refuse(add, "the attention mask is computed by the network (is_causal=True, or a "
                      "mask built from the input's shape); netspec reads a causal mask given "
                      "as a constant, as an attn_mask from "
                      "nn.Transformer.generate_square_subsequent_mask")
        return False
    if mask.dtype.kind != "f" or not _is_causal(mask, tokens, tokens):
        t.refuse(add, f"the attention mask (shape {list(mask.shape)}) is not the causal one "
                      f"(0 on and below the diagonal, -inf above); netspec's "
                      f"multihead_attention has the causal mask only")
        return False
    return True


def _shape_built_mask(t: Translator, add: Any) -> np.ndarray | None:
    """The mask PyTorch builds for is_causal=True inside the attention from the shapes of q
    and k (Shape, Expand, Trilu, Equal, Where), worked out from the static shapes of the file
    (torch.onnx.export from one example); None where it depends on any value but shapes."""
    producer = {name: n for n in t.graph.node for name in n.output if name}
    for candidate in add.input:
        needed = _built_from_shapes(t, producer, candidate)
        if not needed:
            continue
        for n in t.graph.node:
            if not n.output or n.output[0] not in needed:
                continue
            if n.op_type == "Shape":
                shape = t.static_shape(n.input[0])
                if shape is None:
                    return None
                start, end = t.attr(n, "start", 0), t.attr(n, "end", None, int)
                t.values[n.output[0]] = np.array(shape[start:end], dtype=np.int64)
            else:
                t.translate(n)
        mask = t.values.get(candidate)
        return mask if isinstance(mask, np.ndarray) else None
    return None


def _built_from_shapes(t: Translator, producer: dict[str, Any], name: str) -> set[str]:
    """The nodes (by first output) computing ``name`` from constants and the shapes of
    values only; empty where a value itself takes part."""
    needed: set[str] = set()
    pending = [name] if name in producer and name not in t.values else []
    while pending:
        n = producer[pending.pop()]
        if n.output[0] in needed:
            continue
        needed.add(n.output[0])
        if n.op_type == "Shape":
            continue
        if n.op_type not in _MASK_OPS or len(needed) > 64:
            return set()
        pending.extend(i for i in n.input if i and i in producer and i not in t.values)
    return needed if any(producer[k].op_type == "Shape" for k in needed) else set()


# what the exporter builds an is_causal mask of, besides the shapes it starts from
_MASK_OPS = frozenset({"Gather", "Slice", "Unsqueeze", "Squeeze", "Concat", "Cast", "Expand",
                       "Trilu", "Equal", "Where", "ConstantOfShape", "Reshape", "Identity"})


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


# ---------------------------------------------------------------- netspec's own forms
# Ops whose ONNX form is several nodes (netspec's export writes them so, and PyTorch's the
# first three): a region found by its op types and wiring alone, whose constants are checked
# when it is read; a region that does not hold what the op needs is read node by node.


@dataclass(frozen=True)
class Region:
    """Nodes read as one netspec op at the last of them (``end``), which names it; ``members``
    are the nodes' first outputs (protobuf hands out a new object at each access)."""

    end: Any
    members: frozenset[str]
    parts: dict[str, Any]  # the nodes a reader looks at, by role


class _Wiring:
    """Who produces and who reads each value of a graph, and which values the network
    computes (every other value is a constant)."""

    def __init__(self, graph: Any, data_inputs: set[str]):
        self.producer = {name: n for n in graph.node for name in n.output if name}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for n in graph.node:
            for name in n.input:
                if name:
                    self.consumers[name].append(n)
        self.outputs = {value.name for value in graph.output}
        self.dynamic = set(data_inputs)
        for n in graph.node:  # in topological order
            if any(name in self.dynamic for name in n.input):
                self.dynamic.update(n.output)

    def only_reader(self, n: Any, op_type: str) -> Any | None:
        """The one node reading ``n``'s first output, if it is an ``op_type`` and ``n`` has no
        other output in use."""
        if any(name in self.outputs or (k and self.consumers[name])
               for k, name in enumerate(n.output)):
            return None
        readers = self.consumers[n.output[0]]
        return readers[0] if len(readers) == 1 and readers[0].op_type == op_type else None

    def fed_by(self, n: Any, index: int, op_type: str) -> Any | None:
        """The ``op_type`` node producing input ``index`` of ``n``, read by ``n`` alone."""
        if index >= len(n.input):
            return None
        source = self.producer.get(n.input[index])
        if source is None or source.op_type != op_type or \
                self.only_reader(source, n.op_type) is None:
            return None
        return source

    def computed(self, n: Any, index: int) -> bool:
        return index < len(n.input) and n.input[index] in self.dynamic

    def constant(self, n: Any, index: int) -> bool:
        return index < len(n.input) and bool(n.input[index]) and \
            n.input[index] not in self.dynamic


def _region(end: Any, **parts: Any) -> Region:
    members = frozenset(n.output[0] for n in (end, *parts.values()) if n is not None)
    return Region(end, members, {"end": end, **parts})


def read_each(t: Translator, region: Region) -> None:
    """The region's nodes one by one, in the graph's order: what they compute is no one op."""
    for n in t.graph.node:
        if n.output and n.output[0] in region.members:
            t.translate(n)


def _array(t: Translator, name: str) -> np.ndarray | None:
    value = t.values.get(name)
    return value if isinstance(value, np.ndarray) and value.dtype != object else None


def _target(t: Translator, name: str) -> list[Any] | None:
    """The shape a Reshape is given at ``name``: integers (the batch among them, as shape
    arithmetic holds it); None for anything else."""
    value = t.values.get(name)
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuO" or value.ndim != 1:
        return None
    dims = list(value)
    return dims if all(isinstance(d, (int, np.integer)) or d is BATCH for d in dims) else None


def _sample(t: Translator, name: str) -> Any | None:
    """The network value ``name``, held as ONNX holds it (not a pooled value kept flat)."""
    value = t.values.get(name)
    return value if isinstance(value, Tensor) and value.shape == value.onnx_shape else None


# -- layernorm2d: Transpose to channels last, LayerNormalization, Transpose back

def find_channels_first_norms(graph: Any, data_inputs: set[str]) -> list[Region]:
    wiring = _Wiring(graph, data_inputs)
    regions = []
    for norm in graph.node:
        if norm.op_type != "LayerNormalization" or not wiring.computed(norm, 0):
            continue
        last = wiring.fed_by(norm, 0, "Transpose")
        back = wiring.only_reader(norm, "Transpose")
        if last is not None and back is not None and _perm(last) == [0, 2, 3, 1] \
                and _perm(back) == [0, 3, 1, 2]:
            regions.append(_region(back, last=last, norm=norm))
    return regions


def import_channels_first_norm(t: Translator, region: Region) -> None:
    last, norm, back = (region.parts[k] for k in ("last", "norm", "end"))
    x = _sample(t, last.input[0])
    scale = _array(t, norm.input[1]) if len(norm.input) > 1 else None
    bias = _array(t, norm.input[2]) if len(norm.input) > 2 and norm.input[2] else None
    axis = t.attr(norm, "axis", -1)
    if x is None or len(x.shape) != 3 or scale is None or axis not in (-1, 3) or \
            scale.size != x.shape[0] or (bias is not None and bias.size != x.shape[0]) or \
            {a.name for a in norm.attribute} - {"axis", "epsilon", "stash_type"}:
        read_each(t, region)
        return
    fields = {"normalized_shape": int(x.shape[0]), "eps": float(t.attr(norm, "epsilon", 1e-5)),
              "bias": bias is not None}
    params = {"weight": scale.reshape(-1)}
    if bias is not None:
        params["bias"] = bias.reshape(-1)
    if fixed_scale(norm, scale, bias):
        del fields["bias"]
        fields["elementwise_affine"], params = False, {}
    t.emit(back, "layernorm2d", [x], fields, params)


# -- channel_shuffle: Reshape to (groups, C / groups, ...), Transpose of those, Reshape back

def find_channel_shuffles(graph: Any, data_inputs: set[str]) -> list[Region]:
    wiring = _Wiring(graph, data_inputs)
    regions = []
    for swap in graph.node:
        perm = _perm(swap) if swap.op_type == "Transpose" else None
        if not perm or len(perm) < 3 or perm != [0, 2, 1, *range(3, len(perm))]:
            continue
        grouped = wiring.fed_by(swap, 0, "Reshape")
        back = wiring.only_reader(swap, "Reshape")
        if grouped is not None and back is not None and wiring.computed(grouped, 0) \
                and wiring.constant(grouped, 1) and wiring.constant(back, 1):
            regions.append(_region(back, grouped=grouped, swap=swap))
    return regions


def import_channel_shuffle(t: Translator, region: Region) -> None:
    grouped, back = region.parts["grouped"], region.parts["end"]
    x = _sample(t, grouped.input[0])
    first, second = _target(t, grouped.input[1]), _target(t, back.input[1])
    if x is None or first is None or second is None:
        read_each(t, region)
        return
    split = t.sample_shape(grouped, x, first)
    channels, rest = x.shape[0], list(x.shape[1:])
    if split is None or len(split) != len(x.shape) + 1 or split[2:] != rest or \
            split[0] * split[1] != channels:
        read_each(t, region)
        return
    swapped = (split[1], split[0], *rest)
    joined = t.sample_shape(back, Tensor("", swapped, swapped), second)
    if joined != list(x.shape):
        read_each(t, region)
        return
    t.emit(back, "channel_shuffle", [x], {"groups": int(split[0])}, {})


# -- global_avgpool: GlobalAveragePool, its 1x1 axes squeezed away

def find_global_pools(graph: Any, data_inputs: set[str]) -> list[Region]:
    wiring = _Wiring(graph, data_inputs)
    regions = []
    for pool in graph.node:
        if pool.op_type == "GlobalAveragePool" and wiring.computed(pool, 0):
            squeeze = wiring.only_reader(pool, "Squeeze")
            if squeeze is not None and all(wiring.constant(squeeze, k)
                                           for k in range(1, len(squeeze.input))):
                regions.append(_region(squeeze, pool=pool))
    return regions


def import_global_pool(t: Translator, region: Region) -> None:
    pool, squeeze = region.parts["pool"], region.parts["end"]
    x = _sample(t, pool.input[0])
    axes = t.attr(squeeze, "axes", None, list)
    if len(squeeze.input) > 1 and squeeze.input[1]:
        given = _array(t, squeeze.input[1])
        axes = None if given is None else [int(a) for a in given.reshape(-1)]
    if x is None or len(x.shape) != 3 or axes is None or \
            sorted(a % 4 for a in axes) != [2, 3]:
        read_each(t, region)
        return
    t.emit(squeeze, "global_avgpool", [x], {}, {})


# -- a reshape written as flatten-and-gather: torch.onnx.export's newer exporter writes an
# as_strided view of a batch-1 value (ConvNeXt's pooled features) as a Reshape to [-1] and a
# Gather of every position, in order, into the new shape

def find_flat_gathers(graph: Any, data_inputs: set[str]) -> list[Region]:
    wiring = _Wiring(graph, data_inputs)
    regions = []
    for flat in graph.node:
        if flat.op_type == "Reshape" and wiring.computed(flat, 0) and wiring.constant(flat, 1):
            gather = wiring.only_reader(flat, "Gather")
            if gather is not None and gather.input[0] == flat.output[0] and \
                    wiring.constant(gather, 1):
                regions.append(_region(gather, flat=flat))
    return regions


def import_flat_gather(t: Translator, region: Region) -> None:
    flat, gather = region.parts["flat"], region.parts["end"]
    x = _sample(t, flat.input[0])
    target = _array(t, flat.input[1])
    positions = _array(t, gather.input[1])
    if x is None or target is None or positions is None or positions.dtype.kind not in "iu" \
            or target.reshape(-1).tolist() != [-1] or t.attr(gather, "axis", 0) != 0 \
            or positions.ndim < 2 or positions.shape[0] != 1 \
            or positions.size != math.prod(x.shape) \
            or not np.array_equal(positions.reshape(-1), np.arange(positions.size)):
        read_each(t, region)
        return
    shape = [int(d) for d in positions.shape[1:]]
    if shape == list(x.shape):
        t.alias(gather, x)
    else:
        t.emit(gather, "reshape", [x], {"shape": shape}, {})


# -- multihead_attention as netspec writes it (onnx_ops._export_multihead_attention)

_HEADS_PERM = {"q": [0, 2, 1, 3], "k": [0, 2, 3, 1], "v": [0, 2, 1, 3]}


def _projection(wiring: _Wiring, heads: Any | None, role: str) -> dict[str, Any] | None:
    """One of q, k, v: MatMul by a constant weight, Add of a constant bias (or none),
    Reshape to heads, Transpose; keyed ``{role}_matmul`` ... ``{role}_heads``."""
    if heads is None or heads.op_type != "Transpose" or _perm(heads) != _HEADS_PERM[role]:
        return None
    reshape = wiring.fed_by(heads, 0, "Reshape")
    if reshape is None or not wiring.constant(reshape, 1):
        return None
    add = wiring.fed_by(reshape, 0, "Add")
    product = reshape if add is None else add
    index = 0 if add is None or wiring.computed(add, 0) else 1
    if add is not None and not wiring.constant(add, 1 - index):
        return None
    matmul = wiring.fed_by(product, index, "MatMul")
    if matmul is None or not wiring.computed(matmul, 0) or not wiring.constant(matmul, 1):
        return None
    return {f"{role}_matmul": matmul, f"{role}_add": add, f"{role}_reshape": reshape,
            f"{role}_heads": heads}


def find_netspec_attention(graph: Any, data_inputs: set[str]) -> list[Region]:
    wiring = _Wiring(graph, data_inputs)
    regions = []
    for softmax in graph.node:
        if softmax.op_type != "Softmax":
            continue
        before = wiring.fed_by(softmax, 0, "Add") or wiring.fed_by(softmax, 0, "Mul")
        mask = before if before is not None and before.op_type == "Add" else None
        scale = before if mask is None else (wiring.fed_by(mask, 0, "Mul")
                                             if wiring.constant(mask, 1) else None)
        if scale is None or not wiring.constant(scale, 1):
            continue
        scores = wiring.fed_by(scale, 0, "MatMul")
        weighted = wiring.only_reader(softmax, "MatMul")
        if scores is None or weighted is None or weighted.input[0] != softmax.output[0]:
            continue
        parts: dict[str, Any] = {}
        for role, (n, index) in (("q", (scores, 0)), ("k", (scores, 1)), ("v", (weighted, 1))):
            found = _projection(wiring, wiring.fed_by(n, index, "Transpose"), role)
            if found is None:
                break
            parts.update(found)
        else:
            tokens_first = wiring.only_reader(weighted, "Transpose")
            join = wiring.only_reader(tokens_first, "Reshape") \
                if tokens_first is not None and _perm(tokens_first) == [0, 2, 1, 3] else None
            out = wiring.only_reader(join, "MatMul") \
                if join is not None and wiring.constant(join, 1) else None
            if out is None or out.input[0] != join.output[0] or not wiring.constant(out, 1):
                continue
            biased = [parts[f"{role}_add"] is not None for role in "qkv"]
            out_add = wiring.only_reader(out, "Add") if all(biased) else None
            if any(biased) and (out_add is None or not wiring.constant(
                    out_add, 1 if out_add.input[0] == out.output[0] else 0)):
                continue
            parts.update(scores=scores, scale=scale, mask=mask, softmax=softmax,
                         weighted=weighted, tokens_first=tokens_first, join=join,
                         out_matmul=out if out_add is not None else None)
            end = out if out_add is None else out_add
            regions.append(_region(end, **parts))
    return regions


def _is_causal(mask: np.ndarray, tokens: int, keys: int) -> bool:
    """Whether ``mask`` is the additive causal mask: 0 on and below the diagonal, -inf (or a
    value whose exponential is 0 in float32) above it."""
    if mask.shape not in ((tokens, keys), (1, 1, tokens, keys), (1, tokens, keys)):
        return False
    mask = mask.reshape(tokens, keys)
    above = np.triu(np.ones((tokens, keys), dtype=bool), 1)
    return bool(np.all(mask[~above] == 0) and np.all(mask[above] <= -1e30))


def import_netspec_attention(t: Translator, region: Region) -> None:
    parts, end = region.parts, region.end
    sources = [parts[f"{role}_matmul"].input[0] for role in "qkv"]
    values = [_sample(t, name) for name in sources]
    weights = [_array(t, parts[f"{role}_matmul"].input[1]) for role in "qkv"]
    adds = [parts[f"{role}_add"] for role in "qkv"]
    biases = [None if add is None else _array(t, add.input[1 if add.input[0] ==
                                                           parts[f"{role}_matmul"].output[0]
                                                           else 0])
              for role, add in zip("qkv", adds)]
    bias = adds[0] is not None
    out = parts["out_matmul"] or end
    out_weight = _array(t, out.input[1])
    out_bias = _array(t, end.input[1] if end.input[0] == out.output[0] else end.input[0]) \
        if bias else None
    if any(v is None or len(v.shape) != 2 for v in values) or any(w is None for w in weights) \
            or out_weight is None or (bias and (out_bias is None or any(
                b is None for b in biases))):
        read_each(t, region)
        return
    embed = values[0].shape[1]
    tokens, keys = values[0].shape[0], values[1].shape[0]
    heads = _head_count(t, parts, values, embed)
    scale = _array(t, parts["scale"].input[1])
    mask = _array(t, parts["mask"].input[1]) if parts["mask"] is not None else None
    fits = (heads is not None and all(w.shape == (embed, embed) for w in weights)
            and out_weight.shape == (embed, embed)
            and values[1].shape == values[2].shape
            and all(v.shape[1] == embed for v in values)
            and (not bias or (all(b.size == embed for b in biases) and out_bias.size == embed))
            and scale is not None and scale.size == 1
            and math.isclose(float(scale.reshape(-1)[0]), 1 / math.sqrt(embed // heads),
                             rel_tol=1e-6)
            and t.attr(parts["softmax"], "axis", -1) in (-1, 3)
            and (mask is None or _is_causal(mask, tokens, keys)))
    if not fits:
        read_each(t, region)
        return
    inputs = [values[0]] if len(set(sources)) == 1 else values
    params = {"in_proj_weight": np.concatenate([w.T for w in weights]),
              "out_proj.weight": out_weight.T}
    fields: dict[str, Any] = {"embed_dim": int(embed), "num_heads": int(heads), "bias": bias}
    if bias:
        params["in_proj_bias"] = np.concatenate([b.reshape(-1) for b in biases])
        params["out_proj.bias"] = out_bias.reshape(-1)
    if mask is not None:
        fields["causal"] = True
    t.emit(end, "multihead_attention", inputs, fields, params)


def _head_count(t: Translator, parts: dict[str, Any], values: list[Any],
                embed: int) -> int | None:
    """The heads the q, k, v reshapes make ((T, H, d) each, one H) and the join undoes."""
    counts = set()
    for role, x in zip("qkv", values):
        reshape = parts[f"{role}_reshape"]
        target = _target(t, reshape.input[1])
        if target is None:
            return None
        shape = t.sample_shape(reshape, x, target)
        if shape is None or len(shape) != 3 or shape[0] != x.shape[0] or \
                shape[1] * shape[2] != embed:
            return None
        counts.add(shape[1])
    if len(counts) != 1:
        return None
    heads = counts.pop()
    join = parts["join"]
    target = _target(t, join.input[1])
    merged = (values[0].shape[0], heads, embed // heads)
    if target is None or t.sample_shape(
            join, Tensor("", merged, merged), target) != [merged[0], embed]:
        return None
    return heads


# (find the regions in a graph, read one region as netspec nodes), for the translator; a
# region sharing a node with one found before it is left to the others
PATTERNS = ((find_attention_regions, import_attention),
            (find_netspec_attention, import_netspec_attention),
            (find_channels_first_norms, import_channels_first_norm),
            (find_channel_shuffles, import_channel_shuffle),
            (find_global_pools, import_global_pool),
            (find_flat_gathers, import_flat_gather))
