"""Block expansion: a spec with blocks, ``repeat``, variables and conditions -> flat nodes.

A pure step between reading a spec and compiling it. Every flat node keeps where it was
written (file, key path, instance path, block), so that errors point at the block's field and
at the instance. References between nodes are resolved only after everything is expanded, so
a node may name one that a later instance creates.

Names follow PyTorch's module paths: an instance ``layer2`` with ``repeat`` makes ``layer2.0``,
``layer2.1``, ..., whose nodes are ``layer2.0.conv1``; without ``repeat`` they are
``layer2.conv1``. Naming an instance means its output node.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from netspec.common.errors import Diagnostic, NetspecError, did_you_mean
from netspec.lang.expressions import (
    SHAPES,
    ExpressionError,
    is_expression,
    name_from,
    substitute,
    type_name,
)
from netspec.lang.sourcemap import KeyPath, SourceMap
from netspec.ops import REGISTRY

MAX_NODES = 100_000
MAX_NESTING = 32
INDEX = "index"
DEFAULT_ENTRY = "x"
INSTANCE_KEYS = ("block", "repeat", "inputs", "if", "name")
NODE_KEYS = ("if", "name")  # keys of a plain node that the expansion reads, not its op
BLOCK_KEYS = ("args", "defaults", "let", "assert", "inputs", "output", "nodes", "description")
ASSERTION_KEYS = ("check", "message")
VARIABLE_TYPES = (bool, int, float, str, list)


# how a node whose fields the compiler will refuse (with its own error) is named as the cause
_OWN_ERROR = " (its own error says which)"


class _KnockOn(ExpressionError):
    """A shape read fails only because a node made before has an error of its own."""


@dataclass(frozen=True)
class SourceFile:
    """One TOML file of a spec (the spec or an include), as errors name it."""

    name: str
    source: SourceMap

    def line(self, path: KeyPath) -> int | None:
        return self.source.locate(path)

    def at(self, path: KeyPath) -> str:
        line = self.line(path)
        return f"{self.name}:{line}" if line else self.name


@dataclass(frozen=True)
class BlockDef:
    """A block as written: its raw table and where it stands."""

    name: str
    raw: Mapping[str, Any]
    file: SourceFile

    @property
    def path(self) -> KeyPath:
        return ("blocks", self.name)

    @property
    def line(self) -> int | None:
        return self.file.line(self.path)


@dataclass(frozen=True)
class Instance:
    """One instance of a block in the expanded network (``layer2.0``)."""

    path: str
    block: str
    parent: str | None
    file: str
    line: int | None
    args: Mapping[str, Any]
    output: str = ""
    group: str | None = None  # the instance id of a repeat ("layer1" of "layer1.0")


@dataclass(frozen=True)
class NodeOrigin:
    """Where a flat node was written. Top-level nodes have no block or instance; a block's
    nodes name the innermost instance and the outermost instantiation, which is the line a
    user of the block edits."""

    file: SourceFile
    path: KeyPath
    block: str | None = None
    instance: str | None = None
    instance_at: str | None = None  # "file:line" of the outermost instantiation
    instance_file: str | None = None
    instance_line: int | None = None

    @property
    def line(self) -> int | None:
        return self.file.line(self.path)

    def key_line(self, key: str | None) -> int | None:
        return self.file.line(self.path + ((key,) if key else ()))

    def field_context(self) -> str | None:
        """For a problem in one of the node's fields (located in the block's text)."""
        if self.block is None:
            return None
        return f"in block '{self.block}' instantiated at {self.instance_at}"

    def node_context(self) -> str | None:
        """For a problem of the node as a whole (located at the instance)."""
        if self.block is None:
            return None
        return f"in block '{self.block}' defined at {self.file.at(self.path)}"


class _Ref:
    """A name used in a scope, resolved once the whole network is expanded."""

    __slots__ = ("scope", "name", "node", "origin", "key")

    def __init__(self, scope: _Scope, name: str, node: str, origin: NodeOrigin, key: str):
        self.scope, self.name, self.node, self.origin, self.key = scope, name, node, origin, key


@dataclass
class _Scope:
    """The names visible inside one instance (or at the top level): local node ids, instance
    ids (meaning their outputs), the block's entries, and descendants by relative path."""

    prefix: str
    block: str | None
    names: dict[str, str | _Ref] = field(default_factory=dict)
    absent: dict[str, int | None] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)  # instances reported already
    parent: _Scope | None = None
    # what each name names, for a person: "node 'layer.0' (net.toml:5)"
    what: dict[str, str] = field(default_factory=dict)

    def flat(self, local: str) -> str:
        return f"{self.prefix}.{local}" if self.prefix else local


@dataclass
class Expansion:
    """The flat network: raw node tables in order, where each came from, the instance tree,
    each node's implicit input (the node before it) and every problem found."""

    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    origins: dict[str, NodeOrigin] = field(default_factory=dict)
    previous: dict[str, str | None] = field(default_factory=dict)
    instances: dict[str, Instance] = field(default_factory=dict)
    top_names: dict[str, str] = field(default_factory=dict)
    problems: list[Diagnostic] = field(default_factory=list)
    # what is probably wrong but builds: a branch rewired by a forgotten inputs
    warnings: list[Diagnostic] = field(default_factory=list)


class _Abort(Exception):
    """The expansion cannot go on (a bound exceeded); its problem is already reported."""


def evaluate_variables(raw: Mapping[str, Any], file: SourceFile,
                       overrides: Mapping[str, Any], problems: list[Diagnostic]
                       ) -> dict[str, Any]:
    """The ``[vars]`` table in order, each value possibly an expression over earlier ones;
    an override replaces a variable's value and must have its type."""
    values: dict[str, Any] = {}
    for name, value in raw.items():
        path = ("vars", name)
        where = file.line(path)

        def report(message: str, where: int | None = where, code: str | None = None) -> None:
            # a --set problem is on the command line, not in the file
            problems.append(Diagnostic(message, file=file.name if where else None, line=where,
                                       code=code))

        if not name.isidentifier():
            report(f"variable name '{name}' must be a plain name (letters, digits, _)")
            continue
        if name == INDEX:
            report(f"variable name '{INDEX}' is reserved for the instance index of a repeat")
            continue
        try:
            value = substitute(value, values)
        except ExpressionError as exc:
            report(f"[vars] {name}: {exc}", code="expression")
            continue
        if not _plain_value(value):
            report(f"[vars] {name} must be an int, float, bool, string or list, got "
                   f"{type_name(value)}")
            continue
        if name in overrides:
            override = overrides[name]
            if not _same_type(override, value):
                report(f"--set {name}: must be {type_name(value)} like the spec's value "
                       f"{_show(value)}, got {type_name(override)} {_show(override)}",
                       where=None)
            else:
                value = float(override) if isinstance(value, float) else override
        values[name] = value
    return values


def expand(nodes: Mapping[str, Any], blocks: Mapping[str, BlockDef],
           variables: Mapping[str, Any], file: SourceFile,
           limit: int = MAX_NODES) -> Expansion:
    """Expand the top-level ``[nodes]`` table of ``file`` into flat nodes."""
    return _Expander(blocks, variables, file, limit).run(nodes)


class _Expander:
    def __init__(self, blocks: Mapping[str, BlockDef], variables: Mapping[str, Any],
                 file: SourceFile, limit: int):
        self.blocks = blocks
        self.variables = dict(variables)
        self.file = file
        self.limit = limit
        self.out = Expansion()
        self.refs: list[_Ref] = []
        self.count_cache: dict[tuple[str, str], int] = {}
        self.size_is_lower_bound = False
        # a problem of a block's text, said once: its key -> (its problem's place, how often)
        self.said: dict[tuple, list[int]] = {}
        self.shapes: dict[str, tuple[int, ...] | str] = {}  # a node's shape, or why not
        # instances given up without a word of their own: a node they read has its own error
        self.knock_ons = 0
        self.index_users: dict[str, bool] = {}
        self.fixed_sizes: dict[str, bool] = {}
        self.recursive: set[str] = set()  # blocks on a cycle, reported once and never expanded
        self.instance_outputs: dict[str, _Ref] = {}

    # -- reporting -------------------------------------------------------------------------

    def report(self, message: str, file: SourceFile, path: KeyPath, node: str | None = None,
               op: str | None = None, context: str | None = None,
               code: str | None = None) -> None:
        self.out.problems.append(Diagnostic(message, file=file.name, line=file.line(path),
                                            node=node, op=op, context=context, code=code))

    # -- the top level -------------------------------------------------------------------

    def run(self, nodes: Mapping[str, Any]) -> Expansion:
        self._check_block_definitions()
        top = _Scope(prefix="", block=None)
        try:
            self._expand_body(nodes, top, ("nodes",), self.file, self.variables, None)
        except _Abort:
            # what was made before the refusal is listed; its names still resolve, but names
            # the refused part would have made are not reported missing
            self._resolve(top, quiet=True)
        else:
            self._resolve(top)
        self._count_repeats()
        return self.out

    def _count_repeats(self) -> None:
        """A problem of a block's text said once names how many instances it affects."""
        for at, times in self.said.values():
            if times > 1 and at >= 0:
                said = self.out.problems[at]
                self.out.problems[at] = replace(
                    said, context=f"{said.context}, and {times - 1:,} more instance"
                                  f"{'s' if times > 2 else ''}")

    def _check_block_definitions(self) -> None:
        for name, block in self.blocks.items():
            raw = block.raw
            if not isinstance(raw, Mapping):
                self.report(f"block '{name}' must be a table with nodes", block.file,
                            block.path)
                continue
            for key in raw:
                if key not in BLOCK_KEYS:
                    self.report(f"block '{name}': unknown key '{key}'"
                                f"{did_you_mean(key, BLOCK_KEYS)} (block keys: "
                                f"{', '.join(BLOCK_KEYS)})", block.file, block.path + (key,))
            lets = raw.get("let", {})
            if not isinstance(lets, Mapping):
                self.report(f"block '{name}': let must be a table of name = value, e.g. "
                            f"let = {{ project = \"= stride != 1\" }}", block.file,
                            block.path + ("let",))
                continue
            for local in lets:
                if not _local_name(local, block):
                    self.report(f"block '{name}': local value '{local}' must be a plain name "
                                f"(letters, digits, _) that is neither an argument nor "
                                f"{INDEX}", block.file, block.path + ("let", local))
        for cycle in self._block_cycles():
            self.recursive.update(cycle)
            block = self.blocks[cycle[0]]
            chain = " -> ".join([*cycle, cycle[0]])
            user = next(node for node, raw in _block_nodes(block.raw).items()
                        if _block_name(raw) == cycle[1 % len(cycle)])
            self.report(f"block '{cycle[0]}' reaches itself: {chain}; a block cannot contain "
                        f"itself", block.file, block.path + ("nodes", user, "block"))

    def _block_cycles(self) -> list[list[str]]:
        uses = {name: [b for raw in _block_nodes(block.raw).values()
                       if (b := _block_name(raw)) in self.blocks]
                for name, block in self.blocks.items()}
        cycles: list[list[str]] = []
        seen: set[str] = set()
        for start in uses:
            stack = [(start, [start])]
            while stack:
                current, chain = stack.pop()
                for used in uses[current]:
                    if used == start:
                        if not seen.intersection(chain):
                            cycles.append(chain)
                        continue
                    if used not in chain and used not in seen:
                        stack.append((used, [*chain, used]))
            seen.add(start)
        return cycles

    # -- a body: the top-level nodes or a block's nodes ----------------------------------

    def _expand_body(self, nodes: Mapping[str, Any], scope: _Scope, table: KeyPath,
                     file: SourceFile, values: Mapping[str, Any],
                     origin_of_instance: dict[str, Any] | None,
                     entry: str | None = None) -> str | None:
        """Expand the nodes of one scope; return the local name of the last present node.
        A node without inputs reads the one before it, the first one the block's entry."""
        previous: str | None = entry
        current: list[str] = [""]
        values = {**values, SHAPES: self._oracle(scope, nodes, current)}
        # local -> (the node before it, read by default, or None; the names it lists)
        wiring: dict[str, tuple[str | None, list[str]]] = {}
        for local, raw in nodes.items():
            current[0] = local
            if isinstance(raw, Mapping):
                wiring[local] = self._wiring(raw, values, previous, entry)
            path = table + (local,)
            flat_id = scope.flat(local)
            origin = self._origin(file, path, scope, origin_of_instance)
            if not isinstance(raw, Mapping):
                # the spec's own checks word this; keep the node so they see it
                self._add_node(flat_id, raw, origin, scope, local, previous)
                previous = local
                continue
            if not self._present(raw, values, flat_id, origin):
                scope.absent[local] = file.line(path + ("if",))
                continue
            if "block" in raw:
                before = (len(self.out.problems), self.knock_ons)
                self._expand_instance(local, raw, scope, path, file, values, previous,
                                      origin_of_instance)
                if (len(self.out.problems), self.knock_ons) != before and (
                        local not in scope.names):
                    scope.failed.add(local)
            else:
                if "name" in raw:
                    named = self._node_name(raw["name"], values, flat_id, origin)
                    if named is None:
                        scope.failed.add(local)
                        previous = local
                        continue
                    flat_id = scope.flat(named)
                body = {key: value for key, value in raw.items() if key not in NODE_KEYS}
                self._add_node(flat_id, self._substituted(body, values, flat_id, origin),
                               origin, scope, local, previous)
            previous = local
        self._check_branches(wiring, scope, table, file, origin_of_instance)
        return previous if previous != entry else None

    @staticmethod
    def _wiring(raw: Mapping[str, Any], values: Mapping[str, Any], previous: str | None,
                entry: str | None) -> tuple[str | None, list[str]]:
        if "inputs" in raw:
            try:
                listed = substitute(raw["inputs"], values)
            except ExpressionError:
                listed = []
            listed = listed if isinstance(listed, list) else [listed]
            return None, [name for name in listed if isinstance(name, str)]
        op = raw.get("op")
        takes_none = isinstance(op, str) and op in REGISTRY and REGISTRY[op].min_inputs == 0
        # the block's entry read by default is how a block starts, not a rewired branch
        return (None if takes_none or previous == entry else previous), []

    def _check_branches(self, wiring: Mapping[str, tuple[str | None, list[str]]],
                        scope: _Scope, table: KeyPath, file: SourceFile,
                        outer: dict[str, Any] | None) -> None:
        """Warn where a node reads the node before it by default although that node ends a
        branch which a join also reads beside the node's own path: a forgotten inputs = "x"
        that rewires a parallel branch (only the parameter count would show it)."""
        def chain(local: str) -> list[str]:
            """The nodes read by default back from ``local``, itself first."""
            found = [local]
            while (before := wiring.get(found[-1], (None, []))[0]) is not None and (
                    before not in found):
                found.append(before)
            return found

        def ends_branch(local: str) -> bool:
            """Whether ``local`` ends a branch: the chain read by default back from it starts
            at a node that names one input (a fork), not at a join (a residual's add, a
            dense layer's concat, whose output the next node rightly reads by default)."""
            starts = [listed for n in chain(local) if (listed := wiring.get(n, (None, []))[1])]
            return bool(starts) and len(starts[0]) == 1

        for join, (_, listed) in wiring.items():
            for before in listed:
                readers = [node for node, (implicit, _) in wiring.items()
                           if implicit == before and node != join]
                for node in readers:
                    if not ends_branch(before) or not any(
                            node in chain(other) for other in listed if other != before):
                        continue
                    path = table + (node,)
                    said = ("branch", file.name, file.line(path))
                    if said in self.said:
                        continue
                    self.said[said] = [-1, 1]
                    origin = self._origin(file, path, scope, outer)
                    self.out.warnings.append(Diagnostic(
                        f"reads '{before}', the node before it, by default, but '{before}' "
                        f"ends a branch that '{join}' also reads; if '{node}' starts a branch "
                        f"of its own, name its input (inputs = \"...\")", file=file.name,
                        line=file.line(path), node=scope.flat(node),
                        context=origin.field_context()))

    def _node_name(self, written: Any, values: Mapping[str, Any], node: str,
                   origin: NodeOrigin, empty_ok: bool = False) -> str | None:
        try:
            name = name_from(written, values)
        except ExpressionError as exc:
            self._field_problem(f"name: {exc}", node, origin, "name", code="expression")
            return None
        if not name and not empty_ok:
            self._field_problem("name: a node's name must not be empty", node, origin, "name")
            return None
        return name

    # -- shapes of the nodes made so far -------------------------------------------------------

    def _oracle(self, scope: _Scope, body: Mapping[str, Any], current: list[str]):
        """The shape functions' view from one scope: a name it knows -> that node's shape."""
        def shape_of(name: str) -> tuple[int, ...]:
            target = self._lookup(scope, name)
            if target is None:
                if name == current[0]:
                    raise ExpressionError(f"'{name}' is this node itself; a shape can be read "
                                          f"only of a node made before it")
                if name in body:
                    raise ExpressionError(f"'{name}' comes later in the same table; a shape "
                                          f"can be read only of a node made before it")
                raise ExpressionError(f"no node '{name}' is made before this one"
                                      f"{did_you_mean(name, [n for n in scope.names])}")
            return self._shape(target)
        return shape_of

    def _shape(self, node_id: str) -> tuple[int, ...]:
        """The output shape of a node made already, computed from its op's shape rule and its
        inputs' shapes (each once); a node that does not compute raises, naming it."""
        pending, visiting = [node_id], set()
        while pending:
            current = pending[-1]
            if current in self.shapes:
                pending.pop()
                continue
            sources = self._sources(current)
            if isinstance(sources, str):
                self.shapes[current] = sources
                pending.pop()
                continue
            waiting = [s for s in sources if s not in self.shapes]
            if waiting and current not in visiting:
                visiting.add(current)
                pending += waiting
                continue
            pending.pop()
            if waiting:
                self.shapes[current] = f"node '{current}' is on a cycle"
                continue
            broken = next((self.shapes[s] for s in sources
                           if isinstance(self.shapes[s], str)), None)
            self.shapes[current] = broken if broken is not None else self._compute(
                current, [self.shapes[s] for s in sources])
        shape = self.shapes[node_id]
        if isinstance(shape, str):
            # worded by its cause alone, so that every instance reading it says it once
            message = f"it reads a shape that is not known: {shape}"
            if shape.endswith(_OWN_ERROR):
                raise _KnockOn(message)
            raise ExpressionError(message)
        return shape

    def _sources(self, node_id: str) -> list[str] | str:
        raw = self.out.nodes.get(node_id)
        if not isinstance(raw, dict):
            return f"node '{node_id}' is not a table"
        op = raw.get("op")
        if not isinstance(op, str) or op not in REGISTRY:
            return f"node '{node_id}' has no known op"
        declared = raw.get("inputs")
        if declared is None:
            if REGISTRY[op].min_inputs == 0:
                return []
            declared = self.out.previous.get(node_id)
            if declared is None:
                return f"node '{node_id}' has no input"
        sources = []
        for ref in declared if isinstance(declared, list) else [declared]:
            target = self._lookup(ref.scope, ref.name) if isinstance(ref, _Ref) else None
            if target is None:
                return (f"input '{getattr(ref, 'name', ref)}' of node '{node_id}' is not "
                        f"made before it")
            sources.append(target)
        return sources

    def _compute(self, node_id: str, in_shapes: list[Any]) -> tuple[int, ...] | str:
        raw = self.out.nodes[node_id]
        if any(value is UNEVALUATED for value in raw.values()):
            return f"node '{node_id}' has a field that does not evaluate"
        op = REGISTRY[raw["op"]]
        if len(in_shapes) < op.min_inputs or (op.max_inputs is not None
                                              and len(in_shapes) > op.max_inputs):
            return f"node '{node_id}' has {len(in_shapes)} inputs, which its op does not take"
        try:
            params = op.Params.model_validate(
                {key: value for key, value in raw.items() if key != "inputs"}, strict=True)
            shape = tuple(int(d) for d in op(params).output_shape(tuple(in_shapes)))
        except ValidationError:
            return f"node '{node_id}' has invalid fields{_OWN_ERROR}"
        except (NetspecError, ValueError, TypeError, ArithmeticError, LookupError) as exc:
            return f"node '{node_id}' does not compute ({exc})"
        return shape

    def _origin(self, file: SourceFile, path: KeyPath, scope: _Scope,
                outer: dict[str, Any] | None) -> NodeOrigin:
        if outer is None:
            return NodeOrigin(file=file, path=path)
        return NodeOrigin(file=file, path=path, block=scope.block, instance=scope.prefix,
                          instance_at=outer["at"], instance_file=outer["file"],
                          instance_line=outer["line"])

    def _present(self, raw: Mapping[str, Any], values: Mapping[str, Any], node: str,
                 origin: NodeOrigin) -> bool:
        if "if" not in raw:
            return True
        condition = raw["if"]
        try:
            value = substitute(condition, values)
        except ExpressionError as exc:
            self._field_problem(f"if: {exc}", node, origin, "if", code="expression")
            return False
        if not isinstance(value, bool):
            self._field_problem(f"if must be a bool (true/false), got {type_name(value)} "
                                f"{_show(value)}", node, origin, "if")
            return False
        return value

    def _field_problem(self, message: str, node: str, origin: NodeOrigin, key: str | None,
                       op: str | None = None, code: str | None = None) -> None:
        if origin.block is not None:
            # every instance of a block repeats the same mistake in its text: say it once
            said = (origin.file.name, origin.key_line(key), key, message)
            if said in self.said:
                self.said[said][1] += 1
                return
            self.said[said] = [len(self.out.problems), 1]
        self.out.problems.append(Diagnostic(message, file=origin.file.name,
                                            line=origin.key_line(key), node=node, op=op,
                                            context=origin.field_context(), code=code))

    def _substituted(self, raw: Mapping[str, Any], values: Mapping[str, Any], node: str,
                     origin: NodeOrigin) -> dict[str, Any]:
        op = raw.get("op") if isinstance(raw.get("op"), str) else None
        result: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "inputs":
                result[key] = value  # names are resolved with the scope, below
                continue
            try:
                result[key] = substitute(value, values)
            except ExpressionError as exc:
                self._field_problem(f"{key}: {exc}", node, origin, key, op, code="expression")
                result[key] = UNEVALUATED
        if "inputs" in result:
            result["inputs"] = self._input_names(result["inputs"], values, node, origin, op)
        return result

    def _input_names(self, declared: Any, values: Mapping[str, Any], node: str,
                     origin: NodeOrigin, op: str | None) -> Any:
        """Evaluate expressions among the names a node lists; an entry may evaluate to a
        name or a list of names (empty when a condition leaves it out)."""
        entries = declared if isinstance(declared, list) else [declared]
        computed = [entry for entry in entries if is_expression(entry)]
        names: list[Any] = []
        for entry in entries:
            try:
                value = substitute(entry, values)
            except ExpressionError as exc:
                self._field_problem(f"inputs: {exc}", node, origin, "inputs", op,
                                    code="expression")
                return UNEVALUATED
            names += value if is_expression(entry) and isinstance(value, list) else [value]
        if computed and not names:
            self._field_problem("its conditional inputs leave it without input; make sure "
                                "every case names at least one node", node, origin, "inputs", op)
            return UNEVALUATED
        return names if isinstance(declared, list) or len(names) != 1 else names[0]

    def _add_node(self, flat_id: str, raw: Any, origin: NodeOrigin, scope: _Scope,
                  local: str, previous: str | None) -> None:
        out = self.out
        if flat_id in out.nodes:
            first = out.origins[flat_id]
            self.report(f"node id '{flat_id}' is made twice (first by {first.file.at(first.path)}"
                        f"); rename one of them", origin.file, origin.path, node=flat_id,
                        context=origin.field_context())
            return
        if len(out.nodes) >= self.limit:
            self.report(f"the network expands to more than {self.limit:,} nodes; that is "
                        f"the limit", origin.file, origin.path)
            raise _Abort
        if isinstance(raw, dict) and "inputs" in raw:
            raw["inputs"] = self._refs(raw["inputs"], scope, flat_id, origin)
        out.nodes[flat_id] = raw
        out.origins[flat_id] = origin
        out.previous[flat_id] = (self._ref(scope, previous, flat_id, origin, "")
                                 if previous is not None else None)
        self._register(scope, local, flat_id, flat_id,
                       f"node '{flat_id}' ({origin.file.at(origin.path)})", origin)

    def _refs(self, declared: Any, scope: _Scope, node: str, origin: NodeOrigin) -> Any:
        if isinstance(declared, str):
            return self._ref(scope, declared, node, origin, "inputs")
        if isinstance(declared, list):
            return [self._ref(scope, name, node, origin, "inputs") if isinstance(name, str)
                    else name for name in declared]
        return declared

    def _ref(self, scope: _Scope, name: str, node: str, origin: NodeOrigin,
             key: str) -> _Ref:
        ref = _Ref(scope, name, node, origin, key)
        self.refs.append(ref)
        return ref

    def _register(self, scope: _Scope, handle: str | None, path: str | None,
                  target: str | _Ref, what: str, origin: NodeOrigin) -> None:
        """Make ``handle`` (the key it is written under) name ``target`` in its scope, and its
        ``path`` (its full id) relative to every scope around it (``layer1.0.conv1`` from the
        top). Two things under one name are an error naming both."""
        if handle is not None:
            self._bind(scope, handle, target, what, origin)
        current: _Scope | None = scope
        while path is not None and current is not None:
            relative = path[len(current.prefix) + 1:] if current.prefix else path
            if relative and (current is not scope or relative != handle):
                self._bind(current, relative, target, what, origin)
            current = current.parent

    def _bind(self, scope: _Scope, name: str, target: str | _Ref, what: str,
              origin: NodeOrigin) -> None:
        if name not in scope.names:
            scope.names[name] = target
            scope.what[name] = what
            return
        if scope.names[name] is target or scope.what.get(name) == what:
            return
        self._field_problem(f"'{name}' names two things: {scope.what[name]} and {what}; "
                            f"rename one of them", name, origin, None)

    # -- instances --------------------------------------------------------------------------

    def _expand_instance(self, local: str, raw: Mapping[str, Any], scope: _Scope,
                         path: KeyPath, file: SourceFile, values: Mapping[str, Any],
                         previous: str | None, outer: dict[str, Any] | None) -> None:
        flat_id = scope.flat(local)
        origin = self._origin(file, path, scope, outer)
        block_name = raw["block"]
        if not isinstance(block_name, str) or block_name not in self.blocks:
            shown = block_name if isinstance(block_name, str) else _show(block_name)
            known = ", ".join(sorted(self.blocks)) or "none defined"
            message = (f"block must be a block's name, got {_show(block_name)}"
                       if not isinstance(block_name, str) else
                       f"unknown block '{shown}'{did_you_mean(shown, self.blocks)} "
                       f"(blocks: {known})")
            self._field_problem(message, flat_id, origin, "block")
            return
        block = self.blocks[block_name]
        if not isinstance(block.raw, Mapping) or block_name in self.recursive:
            return
        if scope.block is not None and len(self._enclosing(scope)) >= MAX_NESTING:
            self._field_problem(f"blocks nest more than {MAX_NESTING} deep here; that is the "
                                f"limit", flat_id, origin, "block")
            return
        count = self._repeat(raw, values, flat_id, origin)
        if count is None:
            return
        parameters = self._parameters(block, flat_id, origin)
        if parameters is None:
            return
        required, defaults = parameters
        arguments = {k: v for k, v in raw.items() if k not in INSTANCE_KEYS}
        for name in arguments:
            if name not in required and name not in defaults:
                known = [*required, *defaults]
                self._field_problem(
                    f"unknown argument '{name}' for block '{block_name}'"
                    f"{did_you_mean(name, known)} (arguments: {', '.join(known) or 'none'})",
                    flat_id, origin, name)
                return
        missing = [name for name in required if name not in arguments]
        if missing:
            self._field_problem(f"block '{block_name}' needs argument(s) "
                                f"{', '.join(repr(m) for m in missing)}; add "
                                f"{missing[0]} = ... to the instance", flat_id, origin, None)
            return
        entries = self._entries(block, flat_id, origin)
        if entries is None:
            return
        declared = raw.get("inputs")
        if declared is not None:
            declared = self._input_names(declared, values, flat_id, origin, None)
            if declared is UNEVALUATED:
                return
            names = [declared] if isinstance(declared, str) else declared
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                self._field_problem(f"inputs must be a node id or a list of node ids, got "
                                    f"{_show(declared)}", flat_id, origin, "inputs")
                return
            bound: list[_Ref] = [self._ref(scope, n, flat_id, origin, "inputs") for n in names]
        elif previous is not None:
            bound = [self._ref(scope, previous, flat_id, origin, "inputs")]
        else:
            self._field_problem(f"instance of block '{block_name}' has no inputs and no node "
                                f"is defined before it; set inputs = \"...\"", flat_id, origin,
                                None)
            return
        if len(bound) != len(entries):
            self._field_problem(f"block '{block_name}' takes {len(entries)} input(s) "
                                f"({', '.join(entries)}), got {len(bound)}", flat_id, origin,
                                "inputs" if declared is not None else None)
            return
        if "repeat" in raw and len(entries) != 1:
            self._field_problem(f"repeat chains instances output to input, so block "
                                f"'{block_name}' needs exactly one input, not {len(entries)}",
                                flat_id, origin, "repeat")
            return
        repeated = "repeat" in raw
        self._check_size(block, arguments, values, count, repeated, flat_id, origin)
        if outer is None:
            outer = {"at": file.at(path), "file": file.name, "line": file.line(path)}
        at = file.at(path)
        output: _Ref | None = None
        for index in range(count):
            # index is the index of the innermost repeat around a field: an instance's own
            # for the fields of a repeat line (its if and repeat are decided before it
            # exists), the enclosing one for every field of an instance without repeat
            own = {**values, INDEX: index} if repeated else {INDEX: 0, **values}
            name = f"{local}.{index}" if repeated else local
            if "name" in raw:
                name = self._node_name(raw["name"], own, flat_id, origin, empty_ok=True)
                if name is None:
                    return
            # an empty name adds no step to the path: the block's nodes are named as the
            # enclosing scope's own (a PyTorch Sequential numbered across blocks)
            instance_id = scope.flat(name) if name else scope.prefix
            inner = _Scope(prefix=instance_id, block=block_name, parent=scope)
            for entry, ref in zip(entries, bound):
                inner.names[entry] = ref
            inner_values = self._instance_values(block, arguments, defaults, own, inner,
                                                 flat_id, origin)
            if inner_values is None:
                return
            args = {k: v for k, v in inner_values.items() if k in defaults or k in required}
            if name:
                self.out.instances[instance_id] = Instance(
                    path=instance_id, block=block_name, parent=scope.prefix or None,
                    file=file.name, line=file.line(path), args=args,
                    group=flat_id if repeated and "name" not in raw else None)
            last = self._expand_body(_block_nodes(block.raw), inner, block.path + ("nodes",),
                                     block.file, inner_values, outer, entries[0])
            output = self._block_output(block, inner, last, instance_id, origin)
            if output is None:
                return
            if name:
                self.instance_outputs[instance_id] = output
                if repeated:
                    self._register(scope, None, instance_id, output,
                                   f"instance '{instance_id}' ({at})", origin)
            bound = [output]
        if count == 0:
            # no instance: the repeat passes its input on
            output = bound[0]
        if output is not None:
            # a named instance without repeat is reached by its name too
            group_path = (flat_id if "name" not in raw
                          else instance_id if not repeated and count and name else None)
            self._register(scope, local, group_path, output,
                           f"instance '{flat_id}' ({at})", origin)

    def _instance_values(self, block: BlockDef, arguments: Mapping[str, Any],
                         defaults: Mapping[str, Any], own: Mapping[str, Any], inner: _Scope,
                         node: str, origin: NodeOrigin
                         ) -> dict[str, Any] | None:
        """What the block's expressions see in one instance: the variables, its arguments
        (defaults computed from the others), index, its local values in order, the shapes of
        its inputs; its assertions are checked here."""
        body_index = own[INDEX]
        oracle = self._oracle(inner, {}, [""])
        args = self._arguments(block, arguments, defaults, own,
                               {**self.variables, INDEX: body_index, SHAPES: oracle},
                               node, origin)
        if args is None:
            return None
        values = {**self.variables, **args, INDEX: body_index, SHAPES: oracle}
        lets = block.raw.get("let", {})
        if not isinstance(lets, Mapping) or not all(_local_name(name, block) for name in lets):
            return None  # said once, with the block's definition
        for name, written in lets.items():
            where = self._block_origin(block, ("let", name), inner, origin)
            try:
                values[name] = substitute(written, values)
            except ExpressionError as exc:
                self._field_problem(f"let {name}: {exc}", inner.prefix or node, where, None,
                                    code="expression")
                return None
        where = self._block_origin(block, ("assert",), inner, origin)
        for problem in check_assertions(block.raw.get("assert", {}), values, block.file,
                                        block.path + ("assert",), inner.prefix or node,
                                        where.field_context()):
            said = (problem.file, problem.line, None, problem.message)
            if problem.code == "assertion":  # a failing assertion names each instance
                self.out.problems.append(problem)
            elif said in self.said:  # a malformed one is the block's text: said once
                self.said[said][1] += 1
            else:
                self.said[said] = [len(self.out.problems), 1]
                self.out.problems.append(problem)
        del values[SHAPES]  # the body's own view of shapes is added with its scope
        return values

    def _block_origin(self, block: BlockDef, key: KeyPath, inner: _Scope,
                      origin: NodeOrigin) -> NodeOrigin:
        return NodeOrigin(file=block.file, path=block.path + key, block=block.name,
                          instance=inner.prefix, instance_at=origin.instance_at
                          or origin.file.at(origin.path), instance_file=origin.instance_file,
                          instance_line=origin.instance_line)

    @staticmethod
    def _enclosing(scope: _Scope) -> list[_Scope]:
        chain = []
        while scope.parent is not None:
            chain.append(scope)
            scope = scope.parent
        return chain

    def _repeat(self, raw: Mapping[str, Any], values: Mapping[str, Any], node: str,
                origin: NodeOrigin) -> int | None:
        if "repeat" not in raw:
            return 1
        try:
            count = substitute(raw["repeat"], values)
        except ExpressionError as exc:
            self._field_problem(f"repeat: {exc}", node, origin, "repeat",
                                    code="expression")
            return None
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            self._field_problem(f"repeat must be a whole number of at least 0, got "
                                f"{_show(count)}", node, origin, "repeat")
            return None
        return count

    def _parameters(self, block: BlockDef, node: str, origin: NodeOrigin
                    ) -> tuple[list[str], dict[str, Any]] | None:
        required = block.raw.get("args", [])
        defaults = block.raw.get("defaults", {})
        where = block.path
        if not isinstance(required, list) or not all(isinstance(a, str) for a in required):
            self.report(f"block '{block.name}': args must be a list of argument names, got "
                        f"{_show(required)}", block.file, where + ("args",))
            return None
        if not isinstance(defaults, Mapping):
            self.report(f"block '{block.name}': defaults must be a table of argument = value, "
                        f"got {_show(defaults)}", block.file, where + ("defaults",))
            return None
        for name in [*required, *defaults]:
            if not name.isidentifier() or name in INSTANCE_KEYS or name == INDEX:
                self.report(f"block '{block.name}': '{name}' cannot name an argument (a plain "
                            f"name other than {', '.join(INSTANCE_KEYS)} and {INDEX})",
                            block.file, where + ("args",))
                return None
        both = set(required) & set(defaults)
        if both:
            self.report(f"block '{block.name}': argument '{sorted(both)[0]}' is both required "
                        f"(args) and has a default; keep one", block.file, where + ("defaults",))
            return None
        return list(required), dict(defaults)

    def _entries(self, block: BlockDef, node: str, origin: NodeOrigin) -> list[str] | None:
        entries = block.raw.get("inputs", [DEFAULT_ENTRY])
        entries = [entries] if isinstance(entries, str) else entries
        if (not isinstance(entries, list) or not entries
                or not all(isinstance(e, str) and e for e in entries)):
            self.report(f"block '{block.name}': inputs must name the block's input(s), e.g. "
                        f"inputs = [\"x\"]", block.file, block.path + ("inputs",))
            return None
        clash = [e for e in entries if e in _block_nodes(block.raw)]
        if clash:
            self.report(f"block '{block.name}': '{clash[0]}' names both an input and a node",
                        block.file, block.path + ("inputs",))
            return None
        if not _block_nodes(block.raw):
            self.report(f"block '{block.name}' has no nodes; add [blocks.{block.name}.nodes."
                        f"<id>] tables", block.file, block.path)
            return None
        return entries

    def _arguments(self, block: BlockDef, arguments: Mapping[str, Any],
                   defaults: Mapping[str, Any], values: Mapping[str, Any],
                   default_scope: Mapping[str, Any], node: str,
                   origin: NodeOrigin) -> dict[str, Any] | None:
        """The arguments given (evaluated where the instance is written) and the defaults of
        the others, in order, each seeing the variables, index, the shapes of the block's
        inputs, the arguments given and the defaults before it."""
        given: dict[str, Any] = {}
        for name, written in arguments.items():
            try:
                given[name] = substitute(written, values)
            except ExpressionError as exc:
                self._field_problem(f"argument '{name}': {exc}", node, origin, name,
                                    code="expression")
                return None
        args: dict[str, Any] = {}
        for name, default in defaults.items():
            scope = {**default_scope, **given, **args}
            if name in given:
                try:
                    like = substitute(default, scope)
                except ExpressionError:
                    like = given[name]  # a default that cannot be computed here types nothing
                if not _same_type(given[name], like):
                    self._field_problem(
                        f"argument '{name}' of block '{block.name}' must be "
                        f"{type_name(like)} like its default {_show(like)}, got "
                        f"{type_name(given[name])} {_show(given[name])}", node, origin, name)
                    return None
                args[name] = given[name]
                continue
            try:
                args[name] = substitute(default, scope)
            except _KnockOn:
                self.knock_ons += 1  # the node it reads has its own error, which says why
                return None
            except ExpressionError as exc:
                where = self._block_origin(block, ("defaults", name),
                                           _Scope(prefix=node, block=block.name), origin)
                self._field_problem(f"default of '{name}': {exc}; a default sees the "
                                    f"variables, {INDEX}, the shapes of the block's inputs, "
                                    f"the arguments given and the defaults written before "
                                    f"it", node, where, None, code="expression")
                return None
        return {**args, **{k: v for k, v in given.items() if k not in args}}

    def _block_output(self, block: BlockDef, inner: _Scope, last: str | None,
                      instance_id: str, origin: NodeOrigin) -> _Ref | None:
        output = block.raw.get("output", last)
        where = block.path + ("output",)
        if output is None:
            self._field_problem(f"every node of block '{block.name}' is left out by its "
                                f"condition here; the instance has no output", instance_id,
                                origin, None)
            return None
        if not isinstance(output, str):
            self.report(f"block '{block.name}': output must be a node id, got "
                        f"{_show(output)}", block.file, where)
            return None
        if output in inner.failed:
            return None  # its own error says why
        if output in inner.absent:
            self._field_problem(f"the output '{output}' of block '{block.name}' is left out "
                                f"by its condition here", instance_id, origin, None)
            return None
        if output not in inner.names or output in _entries_of(block):
            self.report(f"block '{block.name}': output '{output}' names no node of the block"
                        f"{did_you_mean(output, _block_nodes(block.raw))}", block.file, where)
            return None
        return _Ref(inner, output, instance_id, origin, "output")

    def _check_size(self, block: BlockDef, arguments: Mapping[str, Any],
                    values: Mapping[str, Any], count: int, repeated: bool, node: str,
                    origin: NodeOrigin) -> None:
        """Refuse an instance that would push the network past the node limit, counting
        before building anything (and no further than the limit)."""
        room = self.limit - len(self.out.nodes)
        self.size_is_lower_bound = False
        if count > room:
            total, self.size_is_lower_bound = count, True
        else:
            total = self._repeated_size(block, arguments, values, count, room, repeated)
        if total > room:
            at_least = "at least " if self.size_is_lower_bound else ""
            self._field_problem(f"this instance of block '{block.name}' would make "
                                f"{at_least}{total:,} nodes; a network may have at most "
                                f"{self.limit:,}, so it is refused before it is built",
                                node, origin, "repeat" if count > 1 else None)
            raise _Abort

    def _repeated_size(self, block: BlockDef, arguments: Mapping[str, Any],
                       values: Mapping[str, Any], count: int, room: int,
                       repeated: bool = True) -> int:
        """Nodes made by ``count`` chained instances; counting stops (and the total becomes a
        lower bound) once it passes ``room``."""
        if not repeated:
            index = values.get(INDEX, 0)
            return self._size(block, _evaluated_loosely(arguments, {INDEX: 0, **values}),
                              index if isinstance(index, int) else 0, room)
        if self._fixed_size(block):
            return count * self._size(block, {}, 0, room)
        if not self._uses_index(block) and INDEX not in repr(arguments):
            # every instance is alike: count one
            return count * self._size(block, _evaluated_loosely(
                arguments, {**values, INDEX: 0}), 0, room)
        total = 0
        for index in range(count):
            total += self._size(block, _evaluated_loosely(arguments, {**values, INDEX: index}),
                                index, room - total)
            if total > room:
                if index + 1 < count:
                    self.size_is_lower_bound = True
                break
        return total

    def _fixed_size(self, block: BlockDef) -> bool:
        """Whether every instance of a block makes the same number of nodes whatever its
        arguments: no condition and no computed repeat in it or in the blocks it uses."""
        if block.name not in self.fixed_sizes:
            self.fixed_sizes[block.name] = False  # a cycle reads as "not fixed"
            fixed = True
            for raw in _block_nodes(block.raw).values():
                if not isinstance(raw, Mapping):
                    continue
                name = _block_name(raw)
                if "if" in raw or (name is not None and (
                        not isinstance(raw.get("repeat", 1), int)
                        or name not in self.blocks or not self._fixed_size(self.blocks[name]))):
                    fixed = False
                    break
            self.fixed_sizes[block.name] = fixed
        return self.fixed_sizes[block.name]

    def _uses_index(self, block: BlockDef) -> bool:
        """Whether anything in a block (or the blocks it uses) may read ``index``; a
        conservative textual test, so that counting alike instances counts one."""
        if block.name not in self.index_users:
            self.index_users[block.name] = True  # a cycle reads as "uses it"
            text = repr(block.raw)
            inner = [self.blocks[b] for raw in _block_nodes(block.raw).values()
                     if (b := _block_name(raw)) in self.blocks]
            self.index_users[block.name] = INDEX in text or any(
                self._uses_index(b) for b in inner)
        return self.index_users[block.name]

    def _size(self, block: BlockDef, args: Mapping[str, Any], index: int, room: int) -> int:
        """How many nodes one instance makes, counting no further than past ``room``."""
        key = (block.name, "" if self._fixed_size(block) else repr(
            {**args, INDEX: index if self._uses_index(block) else 0}))
        if key in self.count_cache:
            return self.count_cache[key]
        values = {**self.variables, **_defaults(block), **args, INDEX: index}
        total = 0
        for raw in _block_nodes(block.raw).values():
            if total > room:
                self.size_is_lower_bound = True
                return total  # cut short: not cached
            if not isinstance(raw, Mapping):
                total += 1
                continue
            try:
                if "if" in raw and substitute(raw["if"], values) is False:
                    continue
            except ExpressionError:
                pass
            name = _block_name(raw)
            if name is None or name not in self.blocks or name in self.recursive:
                total += 1
                continue
            try:
                repeat = substitute(raw.get("repeat", 1), values)
            except ExpressionError:
                repeat = 1
            repeat = repeat if isinstance(repeat, int) and repeat >= 0 else 1
            if repeat > room - total:
                self.size_is_lower_bound = True
                return total + repeat
            inner_args = {k: v for k, v in raw.items() if k not in INSTANCE_KEYS}
            total += self._repeated_size(self.blocks[name], inner_args, values, repeat,
                                         room - total, "repeat" in raw)
        if total > room:
            self.size_is_lower_bound = True
        else:
            self.count_cache[key] = total
        return total

    # -- resolving names ---------------------------------------------------------------------

    def _resolve(self, top: _Scope, quiet: bool = False) -> None:
        out = self.out
        for node_id, raw in out.nodes.items():
            if isinstance(raw, dict) and "inputs" in raw:
                declared = raw["inputs"]
                if isinstance(declared, _Ref):
                    raw["inputs"] = self._target(declared, quiet)
                elif isinstance(declared, list):
                    raw["inputs"] = [self._target(r, quiet) if isinstance(r, _Ref) else r
                                     for r in declared]
            previous = out.previous[node_id]
            out.previous[node_id] = (self._target(previous, quiet) if previous is not None
                                     else None)
        for path, ref in self.instance_outputs.items():
            instance = out.instances[path]
            out.instances[path] = replace(instance,
                                          output=self._lookup(ref.scope, ref.name) or "")
        out.top_names = {name: target for name in top.names
                         if (target := self._lookup(top, name)) is not None}

    def _target(self, ref: _Ref, quiet: bool = False) -> str:
        """The flat id a reference names; unknown names are reported (unless ``quiet``) and
        kept as written, so that the graph leaves that edge out."""
        if not isinstance(ref.name, str):
            return ref.name  # not a name at all: the node's own checks say so
        found = self._lookup(ref.scope, ref.name, None if quiet else ref)
        return found if found is not None else ref.name

    def _lookup(self, scope: _Scope | None, name: str, ref: _Ref | None = None,
                depth: int = 0) -> str | None:
        if scope is None:
            return None
        target = scope.names.get(name)
        if isinstance(target, _Ref):
            if depth > 10_000:
                return None
            return self._lookup(target.scope, target.name, ref, depth + 1)
        if target is not None:
            return target
        if ref is not None:
            self._unknown(scope, name, ref)
        return None

    def _unknown(self, scope: _Scope, name: str, ref: _Ref) -> None:
        if name in scope.failed or name.split(".")[0] in scope.failed:
            return  # the instance's own error says why; the node is left uncompiled
        origin = ref.origin
        op = None
        raw = self.out.nodes.get(ref.node)
        if isinstance(raw, dict) and isinstance(raw.get("op"), str) and raw["op"] in REGISTRY:
            op = raw["op"]
        if name in scope.absent:
            line = scope.absent[name]
            where = f" (its if at line {line})" if line else ""
            message = (f"input '{name}' names a node left out by its condition{where}; make "
                       f"the input conditional too")
        else:
            others = [n for n in scope.names if n != ref.node]
            message = f"input '{name}' names no node{did_you_mean(name, others)}"
        self._field_problem(message, ref.node, origin, ref.key or "inputs", op)


# a field whose expression failed (and was reported): the spec's checks skip it
UNEVALUATED = object()


def check_assertions(raw: Any, values: Mapping[str, Any], file: SourceFile, table: KeyPath,
                     subject: str | None = None, context: str | None = None
                     ) -> list[Diagnostic]:
    """The problems of an ``assert`` table (top-level ``[assert]`` or a block's): each entry
    is ``name = { check = "= condition", message = "what it means" }``, and a condition that
    is false is an error at its line with its message (naming the instance, in a block)."""
    if not isinstance(raw, Mapping):
        return [Diagnostic("assert must be a table of name = { check = \"= ...\", message = "
                           "\"...\" }", file=file.name, line=file.line(table))]
    problems = []
    for name, assertion in raw.items():
        path = table + (name,)

        def problem(message: str, code: str | None = None, path: KeyPath = path) -> None:
            problems.append(Diagnostic(message, file=file.name, line=file.line(path),
                                       node=subject, context=context, code=code))

        if (not isinstance(assertion, Mapping) or set(assertion) != set(ASSERTION_KEYS)
                or not is_expression(assertion.get("check"))
                or not isinstance(assertion.get("message"), str)):
            problem(f"assertion '{name}' must be {{ check = \"= condition\", message = \"what "
                    f"it means\" }}")
            continue
        try:
            holds = substitute(assertion["check"], values)
        except ExpressionError as exc:
            problem(f"assertion '{name}': {exc}", "expression")
            continue
        if not isinstance(holds, bool):
            problem(f"assertion '{name}' must be a bool (true/false), got {type_name(holds)} "
                    f"{_show(holds)}")
        elif not holds:
            problem(f"assertion '{name}' fails: {assertion['message']} (check: "
                    f"{assertion['check'][1:].strip()})", "assertion")
    return problems


def _local_name(name: str, block: BlockDef) -> bool:
    args = block.raw.get("args", [])
    defaults = block.raw.get("defaults", {})
    return (name.isidentifier() and name != INDEX
            and name not in (args if isinstance(args, list) else [])
            and name not in (defaults if isinstance(defaults, Mapping) else {}))


def _block_nodes(raw: Any) -> Mapping[str, Any]:
    nodes = raw.get("nodes") if isinstance(raw, Mapping) else None
    return nodes if isinstance(nodes, Mapping) else {}


def _block_name(raw: Any) -> str | None:
    name = raw.get("block") if isinstance(raw, Mapping) else None
    return name if isinstance(name, str) else None


def _entries_of(block: BlockDef) -> list[str]:
    entries = block.raw.get("inputs", [DEFAULT_ENTRY])
    return [entries] if isinstance(entries, str) else list(entries) if isinstance(
        entries, list) else []


def _evaluated_loosely(arguments: Mapping[str, Any], values: Mapping[str, Any]
                       ) -> dict[str, Any]:
    """Arguments evaluated where they can be (for counting; the expansion reports errors)."""
    result = {}
    for name, written in arguments.items():
        try:
            result[name] = substitute(written, values)
        except ExpressionError:
            result[name] = written
    return result


def _defaults(block: BlockDef) -> dict[str, Any]:
    defaults = block.raw.get("defaults", {}) if isinstance(block.raw, Mapping) else {}
    return dict(defaults) if isinstance(defaults, Mapping) else {}


def _plain_value(value: Any) -> bool:
    if isinstance(value, list):
        return all(_plain_value(item) for item in value)
    return isinstance(value, VARIABLE_TYPES)


def _same_type(value: Any, like: Any) -> bool:
    if isinstance(like, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(like, bool)
    if isinstance(like, float):
        return isinstance(value, int | float)
    return type(value) is type(like)


def _show(value: Any) -> str:
    """A value as TOML would write it, near enough for a message."""
    if isinstance(value, bool):
        return str(value).lower()
    text = json.dumps(value) if isinstance(value, str | list) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
