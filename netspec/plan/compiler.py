"""Spec -> plan: the DAG, a deterministic topological order, and every node's shape, parameter
shapes and FLOPs, all worked out from the input shapes alone. Nothing is run here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import networkx as nx

from netspec.common.errors import Diagnostic, NetspecError, ShapeError, SpecError
from netspec.common.lazy import lazy_import
from netspec.lang.hierarchy import Container, node_chains
from netspec.lang.spec import CheckedSpec, Spec, check_spec_file
from netspec.ops import REGISTRY, NodeParams, Op, ParamSpec
from netspec.ops.base import WHOLE_NODE
from netspec.ops.shapes import Shape, format_shape, numel

np = lazy_import("numpy")

NPY_MAGIC = b"\x93NUMPY"
BYTES_PER_VALUE = 4  # activation and parameter memory are reported for float32
UPSTREAM_FAILED = "an input did not compile"  # why a node after a failed one is not compiled
INVALID_NODE = "invalid in the spec"
RELU_FAMILY = frozenset({"relu", "leaky_relu"})
# ops that sit between a layer and its activation without changing which init suits it
# ops whose output is an image (C, H, W) whatever fed them
_IMAGE_MAKERS = frozenset({"conv2d", "maxpool2d", "avgpool2d"})
_SEE_THROUGH = frozenset({"batchnorm", "dropout", "maxpool2d", "avgpool2d", "global_avgpool"})


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
        return tuple(name for name in self.param_specs
                     if not (frozen and name in ("weight", WHOLE_NODE)))

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

    @cached_property
    def chains(self) -> dict[str, tuple[Container, ...]]:
        """Each node's block instances, outermost first (see :mod:`netspec.lang.hierarchy`)."""
        return spec_chains(self.spec, self.nodes)

    @property
    def total_flops(self) -> int:
        return sum(node.flops for node in self.nodes.values())

    def to_dict(self, batch_size: int = 1) -> dict[str, Any]:
        """The machine-readable summary of ``netspec compile --json``: the same nodes, order,
        trainable parameters and forward FLOPs (at ``batch_size``) as the printed table."""
        return {
            "name": self.name,
            "output": self.output,
            "total_params": self.total_params,
            "total_flops": self.total_flops * batch_size,
            "nodes": [
                {
                    "id": node.id,
                    "op": node.op_name,
                    **({"block": chain[-1].block, "instance": chain[-1].id}
                       if (chain := self.chains[node.id]) else {}),
                    "inputs": list(node.inputs),
                    "shape": list(node.shape),
                    "params": node.n_params,
                    "flops": node.flops * batch_size,
                }
                for node in self.nodes.values()
            ],
        }


class CompileError(SpecError):
    """A spec that does not compile. ``partial`` holds the nodes that did and ``failed`` the
    others (id -> why); ``order`` lists both together in topological order."""

    def __init__(self, diagnostics: Sequence[Diagnostic], checked: CheckedSpec,
                 partial: dict[str, PlanNode], failed: dict[str, str],
                 order: Sequence[str] = ()):
        super().__init__(sorted(diagnostics, key=lambda d: d.line or 0))
        self.checked = checked
        self.spec = checked.spec
        self.partial = partial
        self.failed = failed
        self.order = tuple(order)


def spec_chains(spec: Spec, node_ids: Iterable[str]) -> dict[str, tuple[Container, ...]]:
    """The block instances of each of ``node_ids``, outermost first."""
    origins = spec.origins
    return node_chains({node_id: origins[node_id].instance if node_id in origins else None
                        for node_id in node_ids}, spec.instances)


def compile_plan(spec_or_path: Spec | CheckedSpec | str | Path,
                 overrides: Mapping[str, Any] | None = None) -> Plan:
    """Build the DAG of a spec and infer every shape; raise CompileError listing every problem.
    ``overrides`` (``--set``) apply when the spec is read here, not to a Spec given. A
    CheckedSpec (``check_spec`` of an editor's buffer) keeps its problems in the report."""
    if isinstance(spec_or_path, CheckedSpec):
        checked = spec_or_path
    elif isinstance(spec_or_path, Spec):
        checked = CheckedSpec(spec_or_path, {}, tuple(spec_or_path.nodes), ())
    else:
        checked = check_spec_file(spec_or_path, overrides)
    spec, invalid = checked.spec, frozenset(checked.invalid)
    problems: list[Diagnostic] = list(checked.problems)

    def report(message: str, node: str | None = None, key: str | None = None,
               line: int | None = None, code: str | None = None) -> None:
        op = spec.nodes[node].op if node in spec.nodes else None
        file, context = spec.file, None
        if line is None and node is not None:
            file, line, context = spec.locate_node(node, key)
        problems.append(Diagnostic(message, file=file, line=line, node=node, op=op,
                                   context=context, code=code))

    # invalid nodes stay in the graph so that the nodes after them are known not to compile
    position = {node_id: index for index, node_id in enumerate(checked.node_ids)}
    graph = nx.DiGraph()
    graph.add_nodes_from(checked.node_ids)
    # the loader has reported inputs that name no node, and input counts that do not fit
    for node_id, sources in spec.inputs.items():
        graph.add_edges_from((source, node_id) for source in sources if source in position)

    input_ids = tuple(n for n, p in spec.nodes.items() if p.op == "input")
    if not input_ids and not invalid:
        problems.append(Diagnostic("no input node: add a node with op = \"input\" and its "
                                   "shape, e.g. shape = [1, 28, 28]", file=spec.file,
                                   line=spec.line("nodes")))
    output = spec.output if spec.output is not None else checked.node_ids[-1]

    cycles = _cycles(graph, position)
    for cycle in cycles:
        path = " -> ".join(cycle + [cycle[0]])
        report(f"is on a cycle: {path}; a network must be acyclic", cycle[0], "inputs")
    if cycles:
        raise CompileError(problems, checked, {}, {})

    order = list(nx.lexicographical_topological_sort(graph, key=lambda n: position[n]))
    relu_after = _relu_follows(spec, graph, order)
    images: set[str] = set()
    compiled: dict[str, PlanNode] = {}
    failed: dict[str, str] = {}
    for node_id in order:
        if node_id in invalid:
            failed[node_id] = INVALID_NODE
            continue
        params = spec.nodes[node_id]
        sources = spec.inputs[node_id]
        if any(s not in compiled for s in sources):
            failed.setdefault(node_id, UPSTREAM_FAILED)
            continue
        try:
            compiled[node_id] = _compile_node(spec, node_id, params, sources, compiled,
                                              relu_after[node_id], images)
            if _is_image(compiled[node_id], images):
                images.add(node_id)
        except NetspecError as exc:
            report(str(exc), node_id, _blamed_key(exc), code=_code_of(exc))
            failed[node_id] = str(exc)
    if problems:
        raise CompileError(problems, checked, compiled, failed, order)
    needed = nx.ancestors(graph, output) | {output}
    nodes = {node_id: compiled[node_id] for node_id in order if node_id in needed}
    used_inputs = tuple(n for n in input_ids if n in needed)
    if not used_inputs:
        # a learned tensor alone: nothing to feed, nothing a batch could change
        message = (f"the output '{output}' ({nodes[output].op_name}) reads no input node; a "
                   f"network computes its output from an input: make the output a node that "
                   f"depends on one")
        if spec.output is not None:
            problems.append(Diagnostic(message, file=spec.file, line=spec.line(
                "network", "output")))
        else:
            report(message, output)
        raise CompileError(problems, checked, compiled, failed, order)
    return Plan(spec=spec, nodes=nodes, inputs=used_inputs, output=output)


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


def _code_of(exc: NetspecError) -> str:
    """A node that does not compile: its shapes do not fit, or its weights do not."""
    return "weights" if isinstance(exc, _KeyedError) else "shape-mismatch"


def _blamed_key(exc: NetspecError) -> str | None:
    return exc.key if isinstance(exc, _KeyedError) else None


def _is_image(node: PlanNode, images: set[str]) -> bool:
    """Whether a node's value is an image (C, H, W): a network input of rank 3, what a
    convolution or pooling gives, and what an op that keeps images makes of one."""
    if len(node.shape) != 3:
        return False
    if node.op_name == "input" or node.op_name in _IMAGE_MAKERS:
        return True
    return node.op.keeps_image and any(source in images for source in node.inputs)


def _compile_node(spec: Spec, node_id: str, params: NodeParams, sources: tuple[str, ...],
                  compiled: dict[str, PlanNode], relu_after: bool,
                  images: set[str]) -> PlanNode:
    op = REGISTRY[params.op](params)
    in_shapes = tuple(compiled[s].shape for s in sources)
    if op.image_refusal and any(source in images for source in sources):
        shape = next(compiled[s].shape for s in sources if s in images)
        raise ShapeError(f"input has shape {format_shape(shape)}, an image (C, H, W); "
                         f"{op.image_refusal}")
    try:
        shape = tuple(int(d) for d in op.output_shape(in_shapes))
    except ShapeError as exc:
        listed = ", ".join(format_shape(s) for s in in_shapes)
        # ops may speak of spatial sizes only; the user needs the whole input shape to fix it
        if all(format_shape(s) not in str(exc) for s in in_shapes):
            raise ShapeError(f"input shape {listed}: {exc}") from None
        raise
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
        weight_init=_weight_init(params, relu_after),
        fixed_weight=_fixed_weight(spec, params, param_specs),
    )


def _relu_follows(spec: Spec, graph: nx.DiGraph, order: list[str]) -> dict[str, bool]:
    """Whether a ReLU-family op follows each node, looking through ops that do not change
    which initialiser suits a layer. One pass in reverse topological order keeps it linear."""
    follows: dict[str, bool] = {}
    for node_id in reversed(order):
        follows[node_id] = False
        for successor in graph.successors(node_id):
            op = spec.nodes[successor].op if successor in spec.nodes else None
            if op in RELU_FAMILY or (op in _SEE_THROUGH and follows[successor]):
                follows[node_id] = True
                break
    return follows


def _weight_init(params: NodeParams, relu_after: bool) -> str:
    """The node's chosen initialiser, or the default that suits the activation after it."""
    chosen = getattr(params, "init", None)
    if chosen is not None:
        return chosen
    return "he_normal" if relu_after else "glorot_uniform"


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
        layout = "(out, in, kh, kw)" if len(expected) == 4 else "(out, in)"
        raise _KeyedError(f"{key} has shape {format_shape(array.shape)}, the weight needs "
                          f"{format_shape(expected)} {layout}", key)
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
        # np.load takes anything else for a pickle and advises loading it unsafely
        with open(path, "rb") as handle:
            if handle.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise _KeyedError(f"weight_file '{name}' is not a .npy file (no NumPy header); "
                                  f"write the array with numpy.save", "weight_file")
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise _KeyedError(f"weight_file '{name}' not found (looked for {path})",
                          "weight_file") from None
    # MemoryError: a .npy header may claim any shape; numpy allocates before reading
    except (OSError, ValueError, EOFError, MemoryError) as exc:
        raise _KeyedError(f"weight_file '{name}' is not a readable .npy array: {exc}",
                          "weight_file") from None
    # complex values would lose their imaginary part without a word
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "iuf":
        raise _KeyedError(f"weight_file '{name}' must hold one numeric array", "weight_file")
    return array.astype(np.float64)
