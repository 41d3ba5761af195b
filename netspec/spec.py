"""TOML text -> validated spec: pydantic models per node, with the source line of every key."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from netspec.catalog import SHIPPED_DIR, shipped_architectures
from netspec.errors import Diagnostic, NetspecError, SpecError, closest, did_you_mean
from netspec.ops import REGISTRY, NodeParams, Op

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

KeyPath = tuple[str, ...]
TOP_LEVEL_TABLES = ("network", "nodes", "train")

# One alternative per TOML token class that matters for locating keys; strings and comments
# are consumed whole so that brackets, '=' or '#' inside them are never mistaken for structure.
_TOKEN = re.compile(
    r'(?P<mlstring>"""(?:\\.|[^\\])*?"{3,5}|\'\'\'.*?\'{3,5})'
    r'|(?P<string>"(?:\\.|[^"\\\n])*"|\'[^\'\n]*\')'
    r"|(?P<comment>#[^\n]*)"
    r"|(?P<newline>\n)"
    r"|(?P<punct>\[\[|\]\]|[\[\]{}=.])"
    r"|(?P<blank>[ \t\r,]+)"
    r"|(?P<bare>[^\s\"'#\[\]{}=.,]+)"
    r"|(?P<other>.)",
    re.DOTALL,
)
_TOML_LINE = re.compile(r"\s*\(at line (\d+), column \d+\)")
_TOML_END = re.compile(r"\s*\(at end of document\)")
_DEPTH_CHANGE = {"[": 1, "{": 1, "[[": 2, "]": -1, "}": -1, "]]": -2}


def _key_part(token: str) -> str:
    """A bare or quoted key segment as tomllib reads it."""
    if token[0] not in "\"'":
        return token
    if token[0] == '"' and "\\" in token:
        try:
            return tomllib.loads(f"k = {token}")["k"]
        except tomllib.TOMLDecodeError:
            pass
    return token[1:-1]


@dataclass
class SourceMap:
    """Where each table header and key stands in the TOML text (1-based lines)."""

    tables: dict[KeyPath, int] = field(default_factory=dict)
    keys: dict[KeyPath, int] = field(default_factory=dict)
    duplicate_tables: list[tuple[KeyPath, int, int]] = field(default_factory=list)
    headers: dict[KeyPath, int] = field(default_factory=dict)

    @classmethod
    def scan(cls, text: str) -> SourceMap:
        """Find every table header and key with a small tokenizer, so that errors can point at
        lines tomllib does not give. Strings (one-line and multi-line), comments, and the
        insides of arrays and inline tables are skipped; malformed text never raises."""
        source = cls()
        table: KeyPath = ()
        line = 1
        depth = 0  # brackets and braces open in the current value
        state = "start"  # start of a line, inside a header, inside a key, or in a value
        parts: list[str] = []
        first_line = 1
        array_header = False
        for match in _TOKEN.finditer(text):
            kind, token = match.lastgroup, match.group()
            if kind == "newline":
                line += 1
                if depth == 0:
                    state = "start"
                continue
            if kind == "mlstring":
                line += token.count("\n")
                state = "value"
                continue
            if kind in ("blank", "comment"):
                continue
            if state == "start":
                first_line, parts = line, []
                if token in ("[", "[["):
                    state, array_header = "header", token == "[["
                elif kind in ("bare", "string"):
                    state, parts = "key", [_key_part(token)]
                else:
                    state = "value"
                continue
            if state in ("header", "key"):
                if kind in ("bare", "string"):
                    parts.append(_key_part(token))
                elif token == ".":
                    pass
                elif state == "header" and token in ("]", "]]"):
                    table = tuple(parts)
                    source._add_table(table, first_line, array_header)
                    state = "value"
                elif state == "key" and token == "=":
                    source._add_key(table + tuple(parts), len(table), first_line)
                    state = "value"
                else:
                    state = "value"
                continue
            depth = max(0, depth + _DEPTH_CHANGE.get(token, 0)) if kind == "punct" else depth
        return source

    def _add_table(self, table: KeyPath, line: int, array: bool) -> None:
        for depth in range(1, len(table) + 1):
            self.tables.setdefault(table[:depth], line)
        if array:
            return
        if table in self.headers:
            self.duplicate_tables.append((table, line, self.headers[table]))
        else:
            self.headers[table] = line

    def _add_key(self, path: KeyPath, table_depth: int, line: int) -> None:
        self.keys.setdefault(path, line)
        # a dotted key (conv1.op = ...) also opens the tables it passes through
        for depth in range(table_depth + 1, len(path)):
            self.tables.setdefault(path[:depth], line)

    def locate(self, path: KeyPath) -> int | None:
        """The line of a key, else of its closest enclosing table that the text names."""
        for depth in range(len(path), 0, -1):
            prefix = path[:depth]
            if prefix in self.keys:
                return self.keys[prefix]
            if prefix in self.tables:
                return self.tables[prefix]
        return None


class NetworkInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, min_length=1,
                             description="The network's name; default the file's stem.")
    description: str = Field(default="", description="One line about the network.")
    output: str | None = Field(default=None, min_length=1,
                               description="The output node's id; default the last node.")


@dataclass(frozen=True)
class Spec:
    """A validated spec: nodes in file order with resolved inputs, plus where each key stands."""

    name: str
    description: str
    file: str
    nodes: dict[str, NodeParams]
    inputs: dict[str, tuple[str, ...]]
    output: str | None
    train: dict[str, Any] | None
    source: SourceMap
    directory: Path | None = None

    def line(self, *path: str) -> int | None:
        return self.source.locate(tuple(path))

    def node_line(self, node_id: str, key: str | None = None) -> int | None:
        path = ("nodes", node_id) + ((key,) if key else ())
        return self.source.locate(path)


def resolve_spec_path(name_or_path: str | Path) -> Path:
    """A path as given, or the shipped architecture of that bare name (``lenet5``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix == "" and path.parent == Path("."):
        # a directory of that name (a run's: --out lenet5) does not hide the shipped spec
        shipped = SHIPPED_DIR / f"{path.name}.toml"
        if shipped.exists():
            return shipped
        if path.exists():
            raise NetspecError(f"{name_or_path}: a directory, not a spec file")
        known = [p.stem for p in shipped_architectures()]
        raise NetspecError(
            f"{name_or_path}: no such file and no shipped architecture of that name"
            f"{did_you_mean(path.name, known)} (shipped: {', '.join(known)})"
        )
    if path.exists():
        raise NetspecError(f"{name_or_path}: a directory, not a spec file")
    raise NetspecError(f"{name_or_path}: no such file")


@dataclass(frozen=True)
class CheckedSpec:
    """A spec validated as far as it goes: its valid nodes as a Spec (whose inputs may name
    the invalid ones), the nodes that failed validation (id -> op as written, or "?"), every
    node id in file order, and every problem found. The compiler uses it to report graph and
    shape problems alongside validation ones."""

    spec: Spec
    invalid: dict[str, str]
    node_ids: tuple[str, ...]
    problems: tuple[Diagnostic, ...]


def load_spec(source: str | Path) -> Spec:
    """Read and validate a spec file (a path, or a bare shipped name)."""
    return _valid(check_spec_file(source))


def parse_spec(text: str, *, file: str = "<spec>", directory: Path | None = None) -> Spec:
    """Validate spec text, reporting every independent problem at once (sorted by line)."""
    return _valid(check_spec(text, file=file, directory=directory))


def _valid(checked: CheckedSpec) -> Spec:
    if checked.problems:
        raise SpecError(checked.problems)
    return checked.spec


def check_spec_file(source: str | Path) -> CheckedSpec:
    """Read a spec file (a path, or a bare shipped name) and validate what can be validated."""
    path = resolve_spec_path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NetspecError(f"{path}: cannot read the spec: {exc}") from None
    return check_spec(text, file=str(source) if Path(source).exists() else path.name,
                      directory=path.resolve().parent)


def check_spec(text: str, *, file: str = "<spec>", directory: Path | None = None) -> CheckedSpec:
    """Validate spec text node by node. Raises SpecError only when no node can be read at all
    (malformed TOML, a table defined twice, no nodes); other problems are returned."""
    source = SourceMap.scan(text)
    problems: list[Diagnostic] = []

    def report(message: str, path: KeyPath = (), node: str | None = None, op: str | None = None,
               line: int | None = None) -> None:
        where = line if line is not None else (source.locate(path) if path else None)
        problems.append(Diagnostic(message, file=file, line=where, node=node, op=op))

    def fail() -> SpecError:
        return SpecError(_by_line(problems))

    # tomllib stops at the first duplicate; the scan finds them all, with both lines
    for table, line, first in source.duplicate_tables:
        if len(table) == 2 and table[0] == "nodes":
            report(f"defined twice (first at line {first}); rename one of them",
                   node=table[1], line=line)
        else:
            report(f"table [{'.'.join(table)}] defined twice (first at line {first}); "
                   f"merge them into one", line=line)
    if problems:
        raise fail()

    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        report(*_toml_problem(str(exc), text))
        raise fail() from None
    except RecursionError:
        # tomllib recurses once per nested array or inline table; blame the most nested line
        lines = text.splitlines() or [""]
        deepest = max(range(len(lines)), key=lambda i: lines[i].count("[") + lines[i].count("{"))
        report("invalid TOML: arrays or inline tables nested too deeply", line=deepest + 1)
        raise fail() from None

    for key in document:
        if key not in TOP_LEVEL_TABLES:
            report(f"unknown top-level table [{key}]{did_you_mean(key, TOP_LEVEL_TABLES)} "
                   f"(expected {', '.join(TOP_LEVEL_TABLES)})", path=(key,))

    network = _validate_network(document.get("network", {}), report)
    raw_nodes = document.get("nodes")
    if not isinstance(raw_nodes, Mapping) or not raw_nodes:
        report("no nodes: add tables like [nodes.image] with op = \"input\"", path=("nodes",))
        raise fail()
    if network is not None and network.output is not None and network.output not in raw_nodes:
        report(f"[network] output '{network.output}' names no node"
               f"{did_you_mean(network.output, raw_nodes)}", path=("network", "output"))

    nodes: dict[str, NodeParams] = {}
    inputs: dict[str, tuple[str, ...]] = {}
    previous: str | None = None
    for node_id, raw in raw_nodes.items():
        params = _validate_node(node_id, raw, report)
        resolved = None if params is None else _resolve_inputs(node_id, params, previous, report)
        if params is not None and resolved is not None:
            nodes[node_id] = params
            inputs[node_id] = resolved
        _check_references(node_id, raw, params, raw_nodes, report)
        previous = node_id

    train = document.get("train")
    if train is not None and not isinstance(train, Mapping):
        report("[train] must be a table", path=("train",))
    name = network.name if network and network.name else Path(file).stem
    spec = Spec(
        name=name,
        description=network.description if network else "",
        file=file,
        nodes=nodes,
        inputs=inputs,
        output=network.output if network else None,
        train=dict(train) if isinstance(train, Mapping) else None,
        source=source,
        directory=directory,
    )
    invalid = {node_id: _written_op(raw) for node_id, raw in raw_nodes.items()
               if node_id not in nodes}
    return CheckedSpec(spec=spec, invalid=invalid,
                       node_ids=tuple(raw_nodes), problems=tuple(_by_line(problems)))


def _written_op(raw: Any) -> str:
    op = raw.get("op") if isinstance(raw, Mapping) else None
    return op if isinstance(op, str) else "?"


def _by_line(problems: list[Diagnostic]) -> list[Diagnostic]:
    return sorted(problems, key=lambda d: d.line or 0)


def _toml_problem(message: str, text: str) -> tuple[str, KeyPath, None, None, int]:
    """tomllib's message and line; an error at the end of the text is put on its last line."""
    found = _TOML_LINE.search(message)
    if found:
        line = int(found.group(1))
        message = _TOML_LINE.sub("", message)
    else:
        line = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
        if _TOML_END.search(message):
            message = _TOML_END.sub("", message) + " at the end of the file"
            if message.startswith(("Unclosed", "Unterminated")):
                message += "; close it where it should end"
    return f"invalid TOML: {message.strip()}", (), None, None, line


def _resolve_inputs(node_id: str, params: NodeParams, previous: str | None,
                    report) -> tuple[str, ...] | None:
    """Declared inputs, or the node defined just before; None when their number does not fit
    the op."""
    op_class = REGISTRY[params.op]
    path = ("nodes", node_id)
    declared = params.inputs
    if declared is None:
        if op_class.min_inputs == 0:
            return ()
        if previous is None:
            report("has no inputs and no node is defined before it; set inputs = \"...\"",
                   path=path, node=node_id, op=params.op)
            return None
        resolved: tuple[str, ...] = (previous,)
    else:
        resolved = (declared,) if isinstance(declared, str) else tuple(declared)
        path += ("inputs",)
    count = len(resolved)
    if count < op_class.min_inputs or (op_class.max_inputs is not None
                                       and count > op_class.max_inputs):
        report(_arity_message(op_class, count, declared is None), path=path, node=node_id,
               op=params.op)
        return None
    return resolved


def _arity_message(op_class: type[Op], count: int, implicit: bool) -> str:
    if op_class.max_inputs == 0:
        return "an input node takes no inputs; remove 'inputs'"
    if count == 0:
        return "inputs is empty; name the input node(s), e.g. inputs = \"a\""
    if op_class.max_inputs == 1:
        return (f"takes exactly one input, got {count}; join them first with an add or "
                f"concat node")
    got = "got only the node before it" if implicit else f"got {count}"
    return (f"takes at least {op_class.min_inputs} inputs, {got}; list them, e.g. "
            f"inputs = [\"a\", \"b\"]")


def _check_references(node_id: str, raw: Any, params: NodeParams | None,
                      raw_nodes: Mapping[str, Any], report) -> None:
    """Every input a node names must be a node, even when the node itself is invalid."""
    if params is not None:
        declared = params.inputs
        op = params.op
    elif isinstance(raw, Mapping):
        declared = raw.get("inputs")
        op = _written_op(raw)
        op = op if op in REGISTRY else None
    else:
        return
    names = [declared] if isinstance(declared, str) else declared
    if not isinstance(names, list):
        return
    for name in names:
        if isinstance(name, str) and name not in raw_nodes:
            others = [n for n in raw_nodes if n != node_id]
            report(f"input '{name}' names no node{did_you_mean(name, others)}",
                   path=("nodes", node_id, "inputs"), node=node_id, op=op)


def _validate_network(raw: Any, report) -> NetworkInfo | None:
    if not isinstance(raw, Mapping):
        report("[network] must be a table", path=("network",))
        return None
    try:
        return NetworkInfo.model_validate(raw, strict=True)
    except ValidationError as exc:
        for key, message in _field_problems(exc.errors(), list(NetworkInfo.model_fields)):
            report(f"[network] {message}", path=("network", key) if key else ("network",))
        return None


def _validate_node(node_id: str, raw: Any, report) -> NodeParams | None:
    path = ("nodes", node_id)
    if not node_id.strip():
        report("a node id must not be empty or blank; name the table like [nodes.conv1]",
               path=path, node=node_id)
        return None
    if not isinstance(raw, Mapping):
        report(f"must be a table like [nodes.{node_id}] with an op", path=path, node=node_id)
        return None
    op = raw.get("op")
    if op is None:
        report(f"missing 'op'; add op = \"...\" (one of: {', '.join(sorted(REGISTRY))})",
               path=path, node=node_id)
        return None
    if not isinstance(op, str):
        report(f"op must be a string such as \"conv2d\", got {_show(op)}", path=path + ("op",),
               node=node_id)
        return None
    if op not in REGISTRY:
        report(f"unknown op '{op}'{did_you_mean(op, REGISTRY)} "
               f"(known ops: {', '.join(sorted(REGISTRY))})",
               path=path + ("op",), node=node_id)
        return None
    try:
        # strict: TOML values are typed, so "5" for a size or 1 for a flag is a mistake.
        # The op's own model, not a union of all: a model is built on its first use
        # (defer_build), so a spec pays only for the ops it uses.
        return REGISTRY[op].Params.model_validate(dict(raw), strict=True)
    except ValidationError as exc:
        errors = exc.errors()
        for key, message in _field_problems(errors, list(REGISTRY[op].Params.model_fields)):
            report(message, path=path + ((key,) if key else ()), node=node_id, op=op)
        return None


# pydantic's "Input should be ...", "String should have ..." read as "<field> must ..."
_SHOULD = re.compile(r"^\w+ should ")
_SHOULD_BE = re.compile(r"^\w+ should be ")
_TYPE_ERRORS = frozenset({"int_type", "float_type", "string_type", "bool_type", "list_type",
                          "dict_type", "model_type", "none_required"})


def _field_problems(errors: list[Mapping[str, Any]],
                    fields: list[str]) -> list[tuple[str, str]]:
    """(field, message) for each problem pydantic found in one table.

    A field of union type fails once per member; those failures become one message, keeping
    the specific ones (a bound, a length) over plain type mismatches. A required field that
    looks misspelt as an unknown field is not reported missing: the typo is the problem.
    """
    valid = [f for f in fields if f != "op"]
    by_field: dict[str, list[Mapping[str, Any]]] = {}
    for error in errors:
        key = str(error["loc"][0]) if error["loc"] else ""
        by_field.setdefault(key, []).append(error)
    misspelt = {closest(key, valid) for key, group in by_field.items()
                if group[0]["type"] == "extra_forbidden"}
    problems = []
    for key, group in by_field.items():
        kind = group[0]["type"]
        if kind == "extra_forbidden":
            hint = did_you_mean(key, valid) or f" (valid fields: {', '.join(valid)})"
            problems.append((key, f"unknown field '{key}'{hint}"))
        elif kind == "missing":
            if key not in misspelt:
                problems.append((key, f"missing required field '{key}'; add {key} = ... "
                                      f"to the node"))
        elif not any(len(e["loc"]) > 1 and isinstance(e["loc"][1], str) for e in group):
            problems += [(key, _describe(e, _location(e["loc"]))) for e in group]
        else:
            # a union: the value is not of a member's type at all, or fails inside the member
            # whose type it has; the latter is the specific problem
            mismatches = [e for e in group if len(e["loc"]) == 2 and e["type"] in _TYPE_ERRORS]
            specific = [e for e in group if e not in mismatches]
            if specific:
                problems += [(key, _describe(e, _location(e["loc"]))) for e in specific]
            else:
                expected = " or ".join(_expected(e["msg"]) for e in mismatches)
                problems.append((key, f"{key} must be {expected}, got "
                                      f"{_show(group[0]['input'])}"))
    return problems


def _location(loc: tuple) -> list[str | int]:
    """The field and list indices of a location, without pydantic's union member tags."""
    return [part for index, part in enumerate(loc) if index == 0 or isinstance(part, int)]


def _expected(message: str) -> str:
    return _SHOULD_BE.sub("", message)


def _describe(error: Mapping[str, Any], loc: list[str | int]) -> str:
    where = "".join(f"[{part}]" if isinstance(part, int) else str(part) for part in loc)
    kind, message = error["type"], error["msg"]
    got = f", got {_show(error['input'])}" if "input" in error else ""
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    if kind in ("too_short", "too_long"):
        bound = error["ctx"].get("min_length" if kind == "too_short" else "max_length")
        word = "at least" if kind == "too_short" else "at most"
        return f"{where} must have {word} {bound} item(s){got}"
    if kind == "literal_error" and isinstance(error.get("input"), str):
        choices = re.findall(r"'([^']*)'", error["ctx"]["expected"])
        return (f"{where} must be {_expected(message)}{got}"
                f"{did_you_mean(error['input'], choices)}")
    if where and _SHOULD.match(message):
        return f"{where} must {_SHOULD.sub('', message)}{got}"
    return f"{where}: {message}{got}" if where else message


def _show(value: Any) -> str:
    """A value as it would be written in TOML, near enough for a message."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
