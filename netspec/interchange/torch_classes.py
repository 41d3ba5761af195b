"""The class structure of an exported PyTorch module: one class for the network and one per
block, nested as the block instances are (``Spec.instances``).

Each block's class is built from all its instances in the plan. What is the same in every
instance is written into the class; what differs becomes an ``__init__`` argument: a block
argument where a layer's setting equals it in every instance (``planes``, ``stride``), else an
argument named after the node and setting (``conv1_in_channels``). Conditional nodes (present
in some instances only) are built and run under a flag argument (``with_downsample``), and a
node whose inputs depend on one such flag reads them under it. Anything else that differs
between instances (an op, a wiring no flag explains, a node of a block used from outside) makes
:func:`class_models` raise :class:`Flatten`, and the network is exported as one flat class:
module paths, and so weights, are the same either way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from netspec.interchange.torch_ops import Layer, Tensor, torch_form
from netspec.interchange.torch_paths import reserved_names
from netspec.plan.compiler import Plan, PlanNode

_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")

Ref = tuple[str, Any]  # ("node", local id) | ("child", local path) | ("in", entry index)


class Flatten(Exception):  # noqa: N818 - a decision, not an error
    """The network cannot be written as one class per block; the reason says why."""


@dataclass
class Entry:
    """A node or a child instance of a class, across the class's instances."""

    key: str
    kind: tuple
    values: list[dict[str, Any] | None]
    inputs: list[tuple[Ref, ...] | None]
    group: str | None = None  # child instances of one repeat: the container's local path
    index: int | None = None  # and this one's position in it

    @property
    def present(self) -> tuple[bool, ...]:
        return tuple(v is not None for v in self.values)


@dataclass
class Param:
    """An ``__init__`` argument: its values per instance (None where unused)."""

    name: str
    values: list[Any]
    pair: bool = False  # used as (value, value)


@dataclass
class ClassModel:
    name: str
    block: str | None
    paths: list[str]
    entries: list[Entry]
    n_inputs: int
    output: Ref
    params: list[Param] = field(default_factory=list)
    flags: dict[tuple[bool, ...], str] = field(default_factory=dict)
    # (entry key, setting) -> Param for the settings that vary
    settings: dict[tuple[str, str], Param] = field(default_factory=dict)
    # entry key -> (flag, inputs when set, inputs when not)
    switches: dict[str, tuple[str, tuple[Ref, ...], tuple[Ref, ...]]] = field(
        default_factory=dict)

    def call_values(self, position: int) -> dict[str, Any]:
        """The ``__init__`` arguments of instance ``position``."""
        values = {p.name: p.values[position] for p in self.params
                  if p.values[position] is not None}
        for presence, flag in self.flags.items():
            values[flag] = presence[position]
        return values


@dataclass
class _Scope:
    path: str | None
    prefix: str
    block: str | None
    # ("node", PlanNode) or ("child", instance path), in the plan's order
    items: list[tuple[str, Any]] = field(default_factory=list)
    external: list[str] = field(default_factory=list)
    output: str = ""


def _scopes(plan: Plan) -> dict[str | None, _Scope]:
    spec = plan.spec
    instances = spec.instances
    scopes: dict[str | None, _Scope] = {None: _Scope(None, "", None, output=plan.output)}
    owner: dict[str, str | None] = {}
    for node in plan.nodes.values():
        origin = spec.origins.get(node.id)
        # an instance named "" at the top (ViT's stem) puts its nodes at the top: no scope
        owner[node.id] = (origin.instance or None) if origin is not None else None
    # instances with nodes in the plan, and their ancestors
    live: set[str] = set()
    for path in owner.values():
        while path is not None and path not in live:
            live.add(path)
            path = instances[path].parent
    for path in instances:
        if path in live:
            instance = instances[path]
            if instance.output not in plan.nodes:
                raise Flatten(f"the output of instance {path!r} is not in the network")
            scopes[path] = _Scope(path, path + ".", instance.block, output=instance.output)
    placed: set[str] = set()
    by_output = {scopes[p].output: p for p in scopes if p is not None}
    for node in plan.nodes.values():
        scopes[owner[node.id]].items.append(("node", node))
        # a child instance is called where its output is computed
        path = by_output.get(node.id)
        while path is not None and path not in placed:
            parent = instances[path].parent
            placed.add(path)
            scopes[parent].items.append(("child", path))
            path = parent if scopes[parent].output == node.id and parent is not None else None
    # what flows into each instance from outside it, and that only outputs flow out
    inside = {path: set() for path in scopes if path is not None}
    for node_id, path in owner.items():
        while path is not None:
            inside[path].add(node_id)
            path = instances[path].parent
    for node in plan.nodes.values():
        for source in node.inputs:
            path = owner[source]
            while path is not None:
                if node.id not in inside[path] and source != scopes[path].output:
                    raise Flatten(f"node {node.id!r} reads {source!r} from inside instance "
                                  f"{path!r}, which is not its output")
                path = instances[path].parent
    for path, scope in scopes.items():
        if path is None:
            continue
        for node_id in sorted(inside[path], key=list(plan.nodes).index):
            for source in plan.nodes[node_id].inputs:
                if source not in inside[path] and source not in scope.external:
                    scope.external.append(source)
    return scopes


@dataclass(frozen=True)
class _Context:
    scopes: dict[str | None, _Scope]
    owner_of: dict[str, str | None]
    parents: dict[str, str | None]
    args: dict[str, dict[str, Any]]

    def ref(self, scope: _Scope, source: str) -> Ref:
        """How ``source`` is known inside ``scope``."""
        path = self.owner_of[source]
        if path == scope.path:
            return ("node", source[len(scope.prefix):])
        # the child of scope that holds source (as its output)
        child = path
        while child is not None:
            parent = self.parents[child]
            if parent == scope.path:
                return ("child", child[len(scope.prefix):])
            child = parent
        return ("in", scope.external.index(source))


def class_models(plan: Plan) -> list[ClassModel]:
    """The classes of ``plan``, innermost blocks first, the network's class last; raises
    :class:`Flatten` when they cannot express every instance."""
    spec = plan.spec
    if not spec.instances:
        raise Flatten("the spec has no blocks")
    scopes = _scopes(plan)
    owner_of: dict[str, str | None] = {}
    for path, scope in scopes.items():
        for kind, item in scope.items:
            if kind == "node":
                owner_of[item.id] = path
    live = [path for path in scopes if path is not None]
    context = _Context(scopes, owner_of, {p: spec.instances[p].parent for p in live},
                       {p: dict(spec.instances[p].args) for p in live})
    names = _ClassNames(plan.name)
    models: dict[str | None, ClassModel] = {}  # by block (None: the network)
    instance_class: dict[str, tuple[ClassModel, int]] = {}

    def build(block: str | None) -> ClassModel:
        if block in models:
            return models[block]
        paths = [p for p, s in scopes.items() if s.block == block and p is not None] \
            if block is not None else [None]
        for path in paths:
            for kind, item in scopes[path].items:
                if kind == "child":
                    build(scopes[item].block)
        model = _build_class(block, paths, context, instance_class, names)
        models[block] = model
        for position, path in enumerate(paths):
            if path is not None:
                instance_class[path] = (model, position)
        return model

    for block in dict.fromkeys(s.block for s in scopes.values()):
        build(block)
    network = models.pop(None)
    return [*models.values(), network]


def class_name(spec_name: str) -> str:
    """A CamelCase class name from the spec's name (``lenet5`` -> ``Lenet5``); ``Network``
    when the name has no letters or digits to build one from."""
    words = re.findall(r"[A-Za-z0-9]+", spec_name)
    name = "".join(word[:1].upper() + word[1:] for word in words)
    if not name:
        return "Network"
    return name if name[0].isalpha() else f"Net{name}"


class _ClassNames:
    def __init__(self, network: str):
        self.make = class_name
        self.taken = {class_name(network)}
        self.network = class_name(network)

    def take(self, block: str | None) -> str:
        if block is None:
            return self.network
        base = self.make(block)
        name, number = base, 1
        while name in self.taken:
            number += 1
            name = f"{base}{number}"
        self.taken.add(name)
        return name


def _form_entry(node: PlanNode) -> tuple[tuple, dict[str, Any]]:
    form = torch_form(node)
    if isinstance(form, Layer):
        return ("layer", form.cls, form.frozen, form.call), dict(form.kwargs)
    if isinstance(form, Tensor):
        # one setting per axis, so that an axis equal to a block argument (ConvNeXt's layer
        # scale of shape (dim, 1, 1)) is written as that argument
        sizes = {f"size{axis}": size for axis, size in enumerate(form.shape)}
        scale = {} if form.init == "zeros" else {"scale": form.scale}
        return ("tensor", form.init, form.frozen, len(form.shape), form.sample_rank), \
            {**sizes, **scale}
    return ("call", form.function, form.inputs), dict(form.kwargs)


def _build_class(block: str | None, paths: list[str | None], context: _Context,
                 instance_class: dict[str, tuple[ClassModel, int]],
                 names: _ClassNames) -> ClassModel:
    scopes = context.scopes
    count = len(paths)
    entries: dict[str, Entry] = {}
    precedence = nx.DiGraph()
    first_seen: dict[str, int] = {}
    outputs = set()
    n_inputs = {len(scopes[p].external) for p in paths if p is not None} or {0}
    if len(n_inputs) != 1:
        raise Flatten(f"instances of block {block!r} take different numbers of inputs")
    if block is not None and n_inputs == {0} and any(
            kind == "node" and isinstance(torch_form(item), Tensor)
            for p in paths for kind, item in scopes[p].items):
        raise Flatten(f"block {block!r} holds a learned tensor but takes no input to count "
                      f"the batch from")
    for position, path in enumerate(paths):
        scope = scopes[path]
        previous = None
        for kind, item in scope.items:
            if kind == "node":
                key = item.id[len(scope.prefix):]
                entry_kind, values = _form_entry(item)
                refs = tuple(context.ref(scope, s) for s in item.inputs)
                group = index = None
            else:
                key = item[len(scope.prefix):]
                model, child_position = instance_class[item]
                entry_kind = ("child", model.name)
                values = model.call_values(child_position)
                child = scopes[item]
                refs = tuple(context.ref(scope, s) for s in child.external)
                group, index = _group_of(key)
            entry = entries.get(key)
            if entry is None:
                entry = entries[key] = Entry(key, entry_kind, [None] * count, [None] * count,
                                             group, index)
                first_seen[key] = len(first_seen)
            elif entry.kind != entry_kind:
                raise Flatten(f"node {key!r} of block {block!r} is a {entry.kind[1]} in one "
                              f"instance and a {entry_kind[1]} in another")
            entry.values[position] = values
            entry.inputs[position] = refs
            precedence.add_node(key)
            if previous is not None:
                precedence.add_edge(previous, key)
            previous = key
        outputs.add(context.ref(scope, scope.output))
    if len(outputs) != 1:
        raise Flatten(f"instances of block {block!r} end at different nodes")
    try:
        order = list(nx.lexicographical_topological_sort(precedence, key=first_seen.get))
    except nx.NetworkXUnfeasible:
        raise Flatten(f"instances of block {block!r} order their nodes differently") from None
    groups = {entry.group for entry in entries.values() if entry.group is not None}
    for entry in entries.values():
        inside = next((g for g in groups if entry.key.startswith(g + ".")), None)
        if entry.group is None and entry.kind[0] != "call" and inside is not None:
            raise Flatten(f"{entry.key!r} of block {block!r} would sit inside the Sequential "
                          f"of repeat {inside!r}")
    model = ClassModel(names.take(block), block, [p or "" for p in paths],
                       [entries[k] for k in order], n_inputs.pop(), outputs.pop())
    _flags(model)
    _settings(model, [context.args.get(p) if p is not None else None for p in paths])
    _switches(model)
    return model


def _group_of(key: str) -> tuple[str | None, int | None]:
    """A repeat's member (``layer1.0``) is item ``index`` of its ``group``'s Sequential; any
    other instance (``conv``, or ViT's ``layers.encoder_layer_0``) is a module at its path."""
    head, _, tail = key.rpartition(".")
    if head and tail.isdigit():
        return head, int(tail)
    return None, None


def _safe(name: str, taken: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "value"
    if not name[0].isalpha():
        name = f"v_{name}"
    reserved = reserved_names()
    base, number = name, 1
    while name in taken or name in reserved or name in ("self",):
        number += 1
        name = f"{base}_{number}"
    taken.add(name)
    return name


def _module_names(model: ClassModel) -> set[str]:
    return {entry.key.split(".")[0] for entry in model.entries
            if entry.kind[0] != "call"} | {e.group for e in model.entries if e.group}


def _flags(model: ClassModel) -> None:
    taken = _module_names(model)
    for entry in model.entries:
        presence = entry.present
        if all(presence) or presence in model.flags:
            continue
        if entry.group is not None:
            raise Flatten(f"repeat member {entry.key!r} is present in some instances only")
        model.flags[presence] = _safe(f"with_{entry.key.split('.')[0]}", taken)


def _settings(model: ClassModel, args: list[dict[str, Any] | None]) -> None:
    """Turn the settings that differ between instances into ``__init__`` arguments."""
    taken = _module_names(model) | set(model.flags.values())
    arg_names = [name for name in (args[0] or {}) if _IDENTIFIER.match(name)
                 and name not in reserved_names()]
    by_vector: dict[tuple, Param] = {}
    for entry in model.entries:
        settings = dict.fromkeys(k for v in entry.values if v for k in v)
        for setting in settings:
            vector = tuple(None if v is None else v.get(setting) for v in entry.values)
            present = [x for x in vector if x is not None]
            if all(x == present[0] for x in present):
                continue
            param = by_vector.get(vector) or _block_arg(vector, args, arg_names, taken, model)
            if param is None:
                param = Param(_safe(f"{entry.key}_{setting}", taken), list(vector))
                model.params.append(param)
            by_vector[vector] = param
            model.settings[(entry.key, setting)] = param


def _block_arg(vector: tuple, args: list, names: list[str], taken: set[str],
               model: ClassModel) -> Param | None:
    """The block argument a setting equals in every instance (as itself or as a pair)."""
    for name in names:
        values = [a.get(name) if a else None for a in args]
        for pair in (False, True):
            if all(x is None or x == ((v, v) if pair else v) for x, v in zip(vector, values)):
                existing = next((p for p in model.params if p.name == name), None)
                if existing is None:
                    if name in taken:
                        continue
                    taken.add(name)
                    existing = Param(name, values)
                    model.params.append(existing)
                return Param(name, values, pair) if pair else existing
    return None


def _switches(model: ClassModel) -> None:
    for entry in model.entries:
        seen = {i for i in entry.inputs if i is not None}
        if len(seen) == 1:
            continue
        for presence, flag in model.flags.items():
            on = {i for i, p in zip(entry.inputs, presence) if i is not None and p}
            off = {i for i, p in zip(entry.inputs, presence) if i is not None and not p}
            if len(on) == 1 and len(off) == 1:
                model.switches[entry.key] = (flag, on.pop(), off.pop())
                break
        else:
            raise Flatten(f"node {entry.key!r} of block {model.block!r} reads different "
                          f"inputs in different instances, and no conditional node explains it")


def flat_model(plan: Plan) -> ClassModel:
    """The whole network as one class: every node at the path of its id."""
    entries = []
    for node in plan.nodes.values():
        kind, values = _form_entry(node)
        entries.append(Entry(node.id, kind, [values], [tuple(("node", s) for s in node.inputs)]))
    return ClassModel(class_name(plan.name), None, [""], entries, 0, ("node", plan.output))
