"""Spec -> plan: the DAG, a deterministic topological order, and every node's shape, parameter
shapes and FLOPs, all worked out from the input shapes alone. Nothing is run here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from netspec.errors import Diagnostic, NetspecError, SpecError, did_you_mean
from netspec.ops import REGISTRY, NodeParams, Op, ParamSpec
from netspec.shapes import Shape, format_shape, numel
from netspec.spec import Spec, load_spec

BYTES_PER_VALUE = 4  # activation and parameter memory are reported for float32
RELU_FAMILY = frozenset({"relu", "leaky_relu"})
# ops that sit between a layer and its activation without changing which init suits it
_SEE_THROUGH = frozenset({"batchnorm", "dropout", "maxpool2d", "avgpool2d"})


@dataclass(frozen=True)
class PlanNode:
    """One node of a compiled network: everything known about it before any data flows."""

    id: str
    op: Op
    params: NodeParams
    inputs: tuple[str, ...]
    input_shapes: tuple[Shape, ...]
    shape: Shape
    param_specs: dict[str, ParamSpec]
    buffer_specs: dict[str, ParamSpec]
    flops: int
    line: int | None
    weight_init: str
    fixed_weight: np.ndarray | None

    @property
    def op_name(self) -> str:
        return self.op.name

    @property
    def trainable_names(self) -> tuple[str, ...]:
        frozen = not getattr(self.params, "trainable", True)
        return tuple(name for name in self.param_specs if not (frozen and name == "weight"))

    @property
    def n_params(self) -> int:
        """Trainable parameter count."""
        return sum(numel(self.param_specs[name].shape) for name in self.trainable_names)

    @property
    def n_param_values(self) -> int:
        """Every parameter value, trainable or fixed (for memory)."""
        return sum(numel(spec.shape) for spec in self.param_specs.values())

    @property
    def activation_bytes(self) -> int:
        """Bytes of this node's output per sample, in float32."""
        return numel(self.shape) * BYTES_PER_VALUE


@dataclass(frozen=True)
class Plan:
    """A compiled network: nodes in topological order, ready for an executor."""

    spec: Spec
    nodes: dict[str, PlanNode]
    inputs: tuple[str, ...]
    output: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def order(self) -> list[str]:
        return list(self.nodes)

    @property
    def shapes(self) -> dict[str, Shape]:
        return {node_id: node.shape for node_id, node in self.nodes.items()}

    @property
    def total_params(self) -> int:
        return sum(node.n_params for node in self.nodes.values())

    @property
    def total_flops(self) -> int:
        return sum(node.flops for node in self.nodes.values())

    def to_dict(self) -> dict[str, Any]:
        """The machine-readable summary of ``netspec compile --json``."""
        return {
            "name": self.name,
            "output": self.output,
            "total_params": self.total_params,
            "total_flops": self.total_flops,
            "nodes": [
                {
                    "id": node.id,
                    "op": node.op_name,
                    "inputs": list(node.inputs),
                    "shape": list(node.shape),
                    "params": node.n_params,
                    "flops": node.flops,
                }
                for node in self.nodes.values()
            ],
        }


class CompileError(SpecError):
    """A spec that does not compile; ``partial`` holds the nodes that did, in order."""

    def __init__(self, diagnostics: Sequence[Diagnostic], partial: dict[str, PlanNode],
                 failed: dict[str, str]):
        super().__init__(diagnostics)
        self.partial = partial
        self.failed = failed


def compile_plan(spec_or_path: Spec | str | Path) -> Plan:
    """Build the DAG of a spec and infer every shape; raise CompileError listing every problem."""
    spec = spec_or_path if isinstance(spec_or_path, Spec) else load_spec(spec_or_path)
    problems: list[Diagnostic] = []

    def report(message: str, node: str | None = None, key: str | None = None,
               line: int | None = None) -> None:
        op = spec.nodes[node].op if node in spec.nodes else None
        if line is None:
            line = spec.node_line(node, key) if node else None
        problems.append(Diagnostic(message, file=spec.file, line=line, node=node, op=op))

    position = {node_id: index for index, node_id in enumerate(spec.nodes)}
    graph = nx.DiGraph()
    graph.add_nodes_from(spec.nodes)
    for node_id, sources in spec.inputs.items():
        op_class = REGISTRY[spec.nodes[node_id].op]
        count = len(sources)
        if count < op_class.min_inputs or (op_class.max_inputs is not None
                                           and count > op_class.max_inputs):
            report(_arity_message(op_class, count), node_id, "inputs")
        for source in sources:
            if source in spec.nodes:
                graph.add_edge(source, node_id)
            else:
                others = [n for n in spec.nodes if n != node_id]
                report(f"input '{source}' names no node{did_you_mean(source, others)}",
                       node_id, "inputs")

    input_ids = tuple(n for n, p in spec.nodes.items() if p.op == "input")
    if not input_ids:
        problems.append(Diagnostic("no input node: add a node with op = \"input\" and its "
                                   "shape, e.g. shape = [1, 28, 28]", file=spec.file,
                                   line=spec.line("nodes")))
    output = spec.output if spec.output is not None else list(spec.nodes)[-1]
    if output not in spec.nodes:
        problems.append(Diagnostic(
            f"[network] output '{output}' names no node{did_you_mean(output, spec.nodes)}",
            file=spec.file, line=spec.line("network", "output")))

    cycles = _cycles(graph, position)
    for cycle in cycles:
        path = " -> ".join(cycle + [cycle[0]])
        report(f"is on a cycle: {path}; a network must be acyclic", cycle[0], "inputs")
    if cycles:
        raise CompileError(problems, {}, {})

    order = list(nx.lexicographical_topological_sort(graph, key=lambda n: position[n]))
    compiled: dict[str, PlanNode] = {}
    failed: dict[str, str] = {}
    for node_id in order:
        params = spec.nodes[node_id]
        sources = spec.inputs[node_id]
        if node_id in failed or any(s not in compiled for s in sources):
            failed.setdefault(node_id, "an input did not compile")
            continue
        try:
            compiled[node_id] = _compile_node(spec, graph, node_id, params, sources, compiled)
        except NetspecError as exc:
            report(str(exc), node_id, _blamed_key(exc))
            failed[node_id] = str(exc)
    if problems:
        raise CompileError(problems, compiled, failed)
    needed = nx.ancestors(graph, output) | {output}
    nodes = {node_id: compiled[node_id] for node_id in order if node_id in needed}
    used_inputs = tuple(n for n in input_ids if n in needed)
    return Plan(spec=spec, nodes=nodes, inputs=used_inputs, output=output)


def _arity_message(op_class: type[Op], count: int) -> str:
    if op_class.max_inputs == 0:
        return "an input node takes no inputs; remove 'inputs'"
    if op_class.max_inputs == 1:
        return f"takes exactly one input, got {count}"
    return f"takes at least {op_class.min_inputs} inputs, got {count}"


def _cycles(graph: nx.DiGraph, position: dict[str, int]) -> list[list[str]]:
    """Each cycle once, starting at its earliest node in the file."""
    found = []
    for component in nx.strongly_connected_components(graph):
        members = sorted(component, key=position.get)
        if len(members) == 1 and not graph.has_edge(members[0], members[0]):
            continue
        cycle = nx.find_cycle(graph.subgraph(members), source=members[0])
        nodes = [edge[0] for edge in cycle]
        start = nodes.index(min(nodes, key=position.get))
        found.append(nodes[start:] + nodes[:start])
    return sorted(found, key=lambda c: position[c[0]])


class _KeyedError(NetspecError):
    """A node error that belongs to a specific key of the node's table."""

    def __init__(self, message: str, key: str):
        super().__init__(message)
        self.key = key


def _blamed_key(exc: NetspecError) -> str | None:
    return exc.key if isinstance(exc, _KeyedError) else None


def _compile_node(spec: Spec, graph: nx.DiGraph, node_id: str, params: NodeParams,
                  sources: tuple[str, ...], compiled: dict[str, PlanNode]) -> PlanNode:
    op = REGISTRY[params.op](params)
    in_shapes = tuple(compiled[s].shape for s in sources)
    shape = tuple(int(d) for d in op.output_shape(in_shapes))
    if any(d <= 0 for d in shape):
        raise NetspecError(f"output shape {format_shape(shape)} has an empty axis")
    param_specs = op.param_specs(in_shapes)
    return PlanNode(
        id=node_id,
        op=op,
        params=params,
        inputs=sources,
        input_shapes=in_shapes,
        shape=shape,
        param_specs=param_specs,
        buffer_specs=op.buffer_specs(in_shapes),
        flops=op.flops(in_shapes, shape),
        line=spec.node_line(node_id),
        weight_init=_weight_init(spec, graph, node_id, params),
        fixed_weight=_fixed_weight(spec, params, param_specs),
    )


def _weight_init(spec: Spec, graph: nx.DiGraph, node_id: str, params: NodeParams) -> str:
    """The node's chosen initialiser, or the default that suits the activation after it."""
    chosen = getattr(params, "init", None)
    if chosen is not None:
        return chosen
    frontier = list(graph.successors(node_id))
    seen = set()
    while frontier:
        successor = frontier.pop()
        if successor in seen:
            continue
        seen.add(successor)
        op = spec.nodes[successor].op
        if op in RELU_FAMILY:
            return "he_normal"
        if op in _SEE_THROUGH:
            frontier.extend(graph.successors(successor))
    return "glorot_uniform"


def _fixed_weight(spec: Spec, params: NodeParams,
                  param_specs: dict[str, ParamSpec]) -> np.ndarray | None:
    """Explicit weight values from the spec or a .npy beside it, checked against the shape."""
    values = getattr(params, "weight", None)
    weight_file = getattr(params, "weight_file", None)
    if values is not None and weight_file is not None:
        raise _KeyedError("give either 'weight' or 'weight_file', not both", "weight_file")
    if values is None and weight_file is None:
        return None
    expected = param_specs["weight"].shape
    if values is not None:
        key = "weight"
        try:
            array = np.asarray(values, dtype=np.float64)
        except (ValueError, TypeError):
            raise _KeyedError("weight values must be a rectangular nested list of numbers "
                              f"of shape {format_shape(expected)}", key) from None
    else:
        key = "weight_file"
        array = _load_weight_file(spec, weight_file)
    if array.shape != expected:
        raise _KeyedError(f"{key} has shape {format_shape(array.shape)}, the weight needs "
                          f"{format_shape(expected)} (out, in, kh, kw)", key)
    if not np.all(np.isfinite(array)):
        raise _KeyedError(f"{key} holds NaN or infinite values", key)
    return array


def _load_weight_file(spec: Spec, name: str) -> np.ndarray:
    base = (spec.directory or Path.cwd()).resolve()
    path = (base / name).resolve()
    if not path.is_relative_to(base):
        raise _KeyedError(f"weight_file '{name}' points outside the spec's directory {base}; "
                          f"copy the file next to the spec", "weight_file")
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise _KeyedError(f"weight_file '{name}' not found (looked for {path})",
                          "weight_file") from None
    except (OSError, ValueError, EOFError) as exc:
        raise _KeyedError(f"weight_file '{name}' is not a readable .npy array: {exc}",
                          "weight_file") from None
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number):
        raise _KeyedError(f"weight_file '{name}' must hold one numeric array", "weight_file")
    return array.astype(np.float64)
