"""Pictures of networks and of training.

This module decides what every diagram shows about a node (the same facts in every format);
``render.draw`` writes a diagram in the format a file extension names (``dot``, ``mermaid``
and ``svg`` produce the text), and ``plots`` draws training curves with matplotlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from netspec.common.errors import printable
from netspec.common.tables import human_count
from netspec.lang.hierarchy import Container, Totals, container_totals, visible
from netspec.ops.shapes import format_shape, pair
from netspec.plan.compiler import Plan, PlanNode

# (fill, border) per op family: the eye finds convolutions, pooling and merges at a glance
_PALETTE = {
    "input": ("#fff4d6", "#b08a1e"),
    "conv": ("#dde8fb", "#3d68b8"),
    "pool": ("#dcf2e3", "#2f8a4f"),
    "linear": ("#fde6d4", "#c2652a"),
    "norm": ("#ece2f7", "#7a4fb0"),
    "merge": ("#fadadd", "#b83d4f"),
    "other": ("#eef0f3", "#66707f"),
    "block": ("#f4efe1", "#8a6d2f"),
}
_FAMILY = {
    "input": "input",
    "conv2d": "conv",
    "maxpool2d": "pool",
    "avgpool2d": "pool",
    "global_avgpool": "pool",
    "linear": "linear",
    "batchnorm": "norm",
    "dropout": "norm",
    "add": "merge",
    "concat": "merge",
}


@dataclass(frozen=True)
class NodeLabel:
    """What a diagram shows in one node's box: a title (the id) and detail lines below it."""

    title: str
    details: tuple[str, ...]
    family: str

    @property
    def lines(self) -> tuple[str, ...]:
        return (self.title, *self.details)

    @property
    def colors(self) -> tuple[str, str]:
        return _PALETTE[self.family]


@dataclass(frozen=True)
class Edge:
    """One tensor flowing from ``source`` into ``target`` (twice if a node reads it twice)."""

    source: str
    target: str
    label: str


def family(op_name: str) -> str:
    """The colour family of an op (``conv``, ``pool``, ``merge``, ...)."""
    return _FAMILY.get(op_name, "other")


def palette() -> dict[str, tuple[str, str]]:
    """Every colour family with its (fill, border) colours."""
    return dict(_PALETTE)


def _size(value: int | Sequence[int]) -> str:
    height, width = pair(value)
    return str(height) if height == width else f"({height}, {width})"


def node_attributes(node: PlanNode) -> list[str]:
    """The hyper-parameters worth seeing on a diagram, as short phrases.

    >>> from netspec import compile_plan
    >>> plan = compile_plan("lenet5")
    >>> node_attributes(plan.nodes["conv1"])
    ['6 ch', '5×5', 'stride 1', 'pad 2']
    """
    params = node.params
    phrases = []
    if (channels := getattr(params, "out_channels", None)) is not None:
        phrases.append(f"{channels} ch")
    if (features := getattr(params, "out_features", None)) is not None:
        phrases.append(f"{features} features")
    if (kernel := getattr(params, "kernel_size", None)) is not None:
        kernel_h, kernel_w = pair(kernel)
        # pooling's stride defaults to its kernel; the op knows its effective geometry
        geometry = getattr(node.op, "geometry", None)
        stride = geometry[1] if geometry else getattr(params, "stride", 1)
        phrases += [f"{kernel_h}×{kernel_w}", f"stride {_size(stride)}",
                    f"pad {_size(getattr(params, 'padding', 0))}"]
    if (p := getattr(params, "p", None)) is not None:
        phrases.append(f"p = {p:g}")
    if (slope := getattr(params, "negative_slope", None)) is not None:
        phrases.append(f"slope {slope:g}")
    if node.op_name == "concat":
        # as written: PyTorch's dim (the batch axis is 0, as select's and softmax's), or the
        # per-sample axis of a spec that gives one
        phrases.append(f"dim {params.dim}" if params.axis is None else f"axis {params.axis}")
    phrases += _tensor_attributes(node)
    if not getattr(params, "trainable", True):
        phrases.append("fixed weights")
    return phrases


def _tensor_attributes(node: PlanNode) -> list[str]:
    """The phrases of the ops that move values between axes, attention and learned tensors:
    their dims, shapes and heads, PyTorch's spelling."""
    params, names = node.params, ("dim", "dims", "dim0", "dim1", "index", "start", "end",
                                  "groups", "num_heads", "normalized_shape")
    if node.op_name in ("concat", "linear", "conv2d"):
        return []
    phrases = [f"{name} {getattr(params, name)}" for name in names
               if getattr(params, name, None) is not None]
    if node.op_name == "reshape":
        phrases.append(f"to {format_shape(node.shape)}")
    if node.op_name == "parameter":
        phrases.append(f"tensor {format_shape(tuple(params.shape))}")
    return phrases


def node_label(node: PlanNode) -> NodeLabel:
    """Id; op; key hyper-parameters; output shape; trainable parameter count.

    >>> from netspec import compile_plan
    >>> node_label(compile_plan("lenet5").nodes["conv1"]).lines
    ('conv1', 'conv2d', '6 ch · 5×5 · stride 1 · pad 2', 'out (6, 28, 28)', '156 params')
    """
    details = [node.op_name]
    attributes = node_attributes(node)
    if attributes:
        details.append(" · ".join(attributes))
    details.append(f"out {format_shape(node.shape)}")
    if node.n_params:
        details.append(f"{node.n_params:,} params")
    return NodeLabel(printable(node.id), tuple(details), family(node.op_name))


def edges(plan: Plan) -> list[Edge]:
    """Every edge of the plan in node order, labelled with the shape of the tensor it carries."""
    return diagram(plan).edges


@dataclass(frozen=True)
class Cluster:
    """A block instance drawn as a frame around its boxes (and the frames nested in it)."""

    id: str
    label: str
    boxes: tuple[str, ...]
    children: tuple[Cluster, ...]


@dataclass(frozen=True)
class Diagram:
    """What a picture of a plan shows: boxes in topological order, edges, the output box and
    the frames of block instances. Instances deeper than a depth are folded into one box."""

    title: str
    boxes: dict[str, NodeLabel]
    edges: list[Edge]
    output: str
    clusters: tuple[Cluster, ...]


def diagram(plan: Plan, depth: int | None = None) -> Diagram:
    """The boxes, edges and instance frames of ``plan``; with ``depth``, every instance at
    that level of nesting is one box with its output shape and totals (1: top level only)."""
    chains = plan.chains
    totals = container_totals(plan.nodes, chains) if depth else {}
    shown: dict[str, str] = {}  # node -> the box it is drawn in
    boxes: dict[str, NodeLabel] = {}
    frames: dict[str, tuple[Container, ...]] = {}  # box -> the frames around it
    for node_id, node in plan.nodes.items():
        chain = chains[node_id]
        folded = visible(chain, depth)
        if folded is None:
            shown[node_id] = node_id
            boxes[node_id] = node_label(node)
            frames[node_id] = chain
            continue
        shown[node_id] = folded.id
        if folded.id not in boxes:
            boxes[folded.id] = _folded_label(plan, folded, totals)
            frames[folded.id] = chain[:depth - 1] if depth else ()
    drawn: list[Edge] = []
    seen: set[tuple[str, str, str]] = set()
    for node in plan.nodes.values():
        for source in node.inputs:
            key = (shown[source], shown[node.id], source)
            # a folded box reads a tensor once however many of its nodes read it
            folded = key[1] != node.id
            if key[0] != key[1] and not (folded and key in seen):
                seen.add(key)
                drawn.append(Edge(key[0], key[1], format_shape(plan.nodes[source].shape)))
    return Diagram(title(plan), boxes, drawn, shown[plan.output], _clusters(frames))


def _folded_label(plan: Plan, container: Container,
                  totals_of: dict[str, Totals]) -> NodeLabel:
    totals = totals_of[container.id]
    details = [f"block {container.kind}", f"out {format_shape(plan.nodes[container.output].shape)}"]
    if totals.params:
        details.append(f"{totals.params:,} params")
    details.append(f"{human_count(totals.flops)} FLOPs, {totals.nodes} nodes")
    return NodeLabel(printable(container.id), tuple(details), "block")


def _clusters(frames: dict[str, tuple[Container, ...]]) -> tuple[Cluster, ...]:
    """The frames as a tree, in the order their first boxes appear."""
    tree: dict[str, dict] = {}
    labels: dict[str, str] = {}
    for box, chain in frames.items():
        level = tree
        for container in chain:
            labels[container.id] = f"{container.id} ({container.kind})"
            level = level.setdefault(container.id, {"": []})
        level.setdefault("", []).append(box)

    def build(level: dict) -> tuple[Cluster, ...]:
        return tuple(Cluster(name, labels[name], tuple(inner[""]), build(inner))
                     for name, inner in level.items() if name)

    return build(tree)


def title(plan: Plan) -> str:
    """The heading of a diagram: name, trainable parameters and forward FLOPs per sample."""
    return (f"{printable(plan.name)} · {plan.total_params:,} params · "
            f"{human_count(plan.total_flops)} FLOPs")


__all__ = ["Cluster", "Diagram", "Edge", "NodeLabel", "diagram", "edges", "family",
           "node_attributes", "node_label", "palette", "printable", "title"]
