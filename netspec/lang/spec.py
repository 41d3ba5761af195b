"""TOML text -> validated spec: pydantic models per node, with the source line of every key."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from netspec.common.errors import Diagnostic, NetspecError, SpecError, closest, did_you_mean
from netspec.lang.blocks import (
    UNEVALUATED,
    BlockDef,
    Instance,
    NodeOrigin,
    SourceFile,
    check_assertions,
    evaluate_variables,
    expand,
)
from netspec.lang.shipped import SHIPPED_DIR, shipped_architectures
from netspec.lang.sourcemap import KeyPath, SourceMap
from netspec.ops import REGISTRY, NodeParams, Op

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

TOP_LEVEL_TABLES = ("include", "network", "vars", "assert", "blocks", "nodes", "train", "data")
MAX_SPEC_BYTES = 4 * 2**20
MAX_INCLUDES = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TOML_LINE = re.compile(r"\s*\(at line (\d+), column \d+\)")
_TOML_END = re.compile(r"\s*\(at end of document\)")


class NetworkInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, min_length=1,
                             description="The network's name; default the file's stem.")
    description: str = Field(default="", description="One line about the network.")
    output: str | None = Field(default=None, min_length=1,
                               description="The output node's id; default the last node.")


@dataclass(frozen=True)
class Spec:
    """A validated spec: flat nodes in order with resolved inputs, where each was written,
    the block instances they belong to, and the ``--set`` overrides applied."""

    name: str
    description: str
    file: str
    nodes: dict[str, NodeParams]
    inputs: dict[str, tuple[str, ...]]
    output: str | None
    train: dict[str, Any] | None
    source: SourceMap
    directory: Path | None = None
    origins: dict[str, NodeOrigin] = field(default_factory=dict)
    instances: dict[str, Instance] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] | None = None
    # the text of every included file, by its path relative to the spec's directory
    included: dict[str, str] = field(default_factory=dict)
    # what builds but is probably wrong (a branch rewired by a forgotten inputs)
    warnings: tuple[Diagnostic, ...] = ()

    def line(self, *path: str) -> int | None:
        return self.source.locate(tuple(path))

    def node_line(self, node_id: str, key: str | None = None) -> int | None:
        return self.locate_node(node_id, key)[1]

    def locate_node(self, node_id: str, key: str | None = None
                    ) -> tuple[str, int | None, str | None]:
        """(file, line, context) of a problem with a node: a field's own line, or for the
        node as a whole the line of the instance that made it, naming the block's line."""
        origin = self.origins.get(node_id)
        if origin is None:
            path = ("nodes", node_id) + ((key,) if key else ())
            return self.file, self.source.locate(path), None
        if origin.block is None:
            return origin.file.name, origin.key_line(key), None
        if key is not None:
            return origin.file.name, origin.key_line(key), origin.field_context()
        return origin.instance_file or self.file, origin.instance_line, origin.node_context()


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


def parse_override(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` from ``--set``, the value read as TOML (``3``, ``0.1``, ``[3, 4, 6, 3]``,
    ``true``, ``"relu"``); a bare word that is not TOML is taken as a string.

    >>> parse_override("depths=[3,4,6,3]"), parse_override("train.optimizer.lr=0.1")
    (('depths', [3, 4, 6, 3]), ('train.optimizer.lr', 0.1))
    """
    name, equals, value = text.partition("=")
    name = name.strip()
    if not equals or not name:
        raise NetspecError(f"--set {text}: write NAME=VALUE, e.g. --set depths=[3,4,6,3] or "
                           f"--set train.optimizer.lr=0.1")
    try:
        return name, tomllib.loads(f"value = {value.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        if re.fullmatch(r"[\w.+-]+", value.strip()):
            return name, value.strip()
        raise NetspecError(f"--set {text}: '{value}' is not a TOML value; quote a string "
                           f"('\"text\"') and write lists as [1, 2]") from None


def parse_overrides(texts: list[str] | None) -> dict[str, Any]:
    """Every ``--set`` of a command line, later ones winning."""
    return dict(parse_override(text) for text in texts or [])


def load_spec(source: str | Path, overrides: Mapping[str, Any] | None = None) -> Spec:
    """Read and validate a spec file (a path, or a bare shipped name), with ``--set``
    overrides (variable or ``train.``-dotted key -> value) applied."""
    return _valid(check_spec_file(source, overrides))


def parse_spec(text: str, *, file: str = "<spec>", directory: Path | None = None,
               overrides: Mapping[str, Any] | None = None) -> Spec:
    """Validate spec text, reporting every independent problem at once (sorted by line)."""
    return _valid(check_spec(text, file=file, directory=directory, overrides=overrides))


def _valid(checked: CheckedSpec) -> Spec:
    if checked.problems:
        raise SpecError(checked.problems)
    return checked.spec


def check_spec_file(source: str | Path,
                    overrides: Mapping[str, Any] | None = None) -> CheckedSpec:
    """Read a spec file (a path, or a bare shipped name) and validate what can be validated."""
    path = resolve_spec_path(source)
    text = _read_text(path, "the spec")
    # a shipped spec is named by its installed path, so that its errors say where it is
    return check_spec(text, file=str(source) if Path(source).exists() else str(path),
                      directory=path.resolve().parent, overrides=overrides)


def _read_text(path: Path, what: str) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise NetspecError(f"{path}: {what} is {size:,} bytes; a spec file may have at most "
                               f"{MAX_SPEC_BYTES:,}")
        # utf-8-sig: Windows editors start a file with a byte-order mark
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise NetspecError(f"{path}: cannot read {what}: {exc}") from None


def check_spec(text: str, *, file: str = "<spec>", directory: Path | None = None,
               overrides: Mapping[str, Any] | None = None) -> CheckedSpec:
    """Validate spec text node by node, after reading its includes and expanding its blocks.
    Raises SpecError only when no node can be read at all (malformed TOML, a table defined
    twice, no nodes); other problems are returned."""
    text = text.removeprefix("\ufeff")  # a byte-order mark, as an editor's buffer may hold
    source = SourceMap.scan(text)
    main = SourceFile(file, source)
    problems: list[Diagnostic] = []
    overrides = dict(overrides or {})

    def report(message: str, path: KeyPath = (), node: str | None = None, op: str | None = None,
               line: int | None = None) -> None:
        where = line if line is not None else (source.locate(path) if path else None)
        problems.append(Diagnostic(message, file=file, line=where, node=node, op=op))

    def fail() -> SpecError:
        return SpecError(_by_line(problems))

    document = _read_document(text, main, problems)
    if document is None:
        raise fail()

    for key in document:
        if key not in TOP_LEVEL_TABLES:
            report(f"unknown top-level table [{key}]{did_you_mean(key, TOP_LEVEL_TABLES)} "
                   f"(expected {', '.join(TOP_LEVEL_TABLES)})", path=(key,))

    network = _validate_network(document.get("network", {}), report)
    raw_nodes = document.get("nodes")
    if not isinstance(raw_nodes, Mapping) or not raw_nodes:
        report("no nodes: add tables like [nodes.image] with op = \"input\"", path=("nodes",),
               line=source.locate(("nodes",)) or 1)
        raise fail()

    included: dict[str, str] = {}
    blocks = _collect_blocks(document, main, directory, problems, included)
    raw_vars = document.get("vars", {})
    if not isinstance(raw_vars, Mapping):
        report("[vars] must be a table of name = value", path=("vars",))
        raw_vars = {}
    train = document.get("train")
    train = _apply_overrides(overrides, raw_vars, train, problems)
    variables = evaluate_variables(raw_vars, main, overrides, problems)
    if "assert" in document:
        problems += check_assertions(document["assert"], variables, main, ("assert",))
    expansion = expand(raw_nodes, blocks, variables, main)
    problems += expansion.problems

    output = network.output if network is not None else None
    if output is None:
        # the last top-level entry is the output; an instance's is its output node, which
        # need not be the last node it makes
        last = next((expansion.top_names[key] for key in reversed(list(raw_nodes))
                     if key in expansion.top_names), None)
        if last is not None and expansion.nodes and last != list(expansion.nodes)[-1]:
            output = last
    elif output is not None:
        if output in expansion.top_names:
            output = expansion.top_names[output]
        elif output not in expansion.nodes:
            report(f"[network] output '{output}' names no node"
                   f"{did_you_mean(output, expansion.top_names)}", path=("network", "output"))

    nodes: dict[str, NodeParams] = {}
    inputs: dict[str, tuple[str, ...]] = {}
    # a mistake in a block's text is one problem however many instances repeat it
    in_blocks: dict[tuple, list] = {}
    for node_id, raw in expansion.nodes.items():
        origin = expansion.origins[node_id]

        # a node's own fields are checked where they are written (in a block's text, naming
        # the instance)
        def report_node(message: str, key: str | None = None, op: str | None = None,
                        node_id: str = node_id, origin: NodeOrigin = origin) -> None:
            line = origin.key_line(key)
            if origin.block is not None:
                said = (origin.file.name, line, key, message)
                if said in in_blocks:
                    in_blocks[said][1] += 1
                    return
                in_blocks[said] = [len(problems), 1]
            problems.append(Diagnostic(message, file=origin.file.name, line=line,
                                       node=node_id, op=op, context=origin.field_context()))

        params = _validate_node(node_id, raw, report_node)
        resolved = None if params is None else _resolve_inputs(
            node_id, params, expansion.previous[node_id], report_node)
        if params is not None and resolved is not None:
            nodes[node_id] = params
            inputs[node_id] = resolved

    for at, times in in_blocks.values():
        if times > 1:
            said = problems[at]
            problems[at] = replace(said, context=f"{said.context}, and {times - 1:,} more "
                                                 f"instance{'s' if times > 2 else ''}")
    if train is not None and not isinstance(train, Mapping):
        report("[train] must be a table", path=("train",))
    data = document.get("data")
    if data is not None and not isinstance(data, Mapping):
        report("[data] must be a table", path=("data",))
    name = network.name if network and network.name else Path(file).stem
    spec = Spec(
        name=name,
        description=network.description if network else "",
        file=file,
        nodes=nodes,
        inputs=inputs,
        output=output,
        train=dict(train) if isinstance(train, Mapping) else None,
        source=source,
        directory=directory,
        origins=expansion.origins,
        instances=expansion.instances,
        overrides=overrides,
        data=dict(data) if isinstance(data, Mapping) else None,
        included=included,
        warnings=tuple(expansion.warnings),
    )
    invalid = {node_id: _written_op(raw) for node_id, raw in expansion.nodes.items()
               if node_id not in nodes}
    return CheckedSpec(spec=spec, invalid=invalid,
                       node_ids=tuple(expansion.nodes), problems=tuple(_by_line(problems)))


def _read_document(text: str, file: SourceFile, problems: list[Diagnostic]
                   ) -> dict[str, Any] | None:
    """The TOML document, or None with its problems reported (every duplicated table at
    once: tomllib stops at the first, the scan finds them all with both lines)."""
    def report(message: str, line: int | None, node: str | None = None) -> None:
        problems.append(Diagnostic(message, file=file.name, line=line, node=node))

    for table, line, first in file.source.duplicate_tables:
        if len(table) == 2 and table[0] == "nodes":
            report(f"defined twice (first at line {first}); rename one of them", line,
                   node=table[1])
        else:
            report(f"table [{'.'.join(table)}] defined twice (first at line {first}); "
                   f"merge them into one", line)
    if problems:
        return None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message, _, _, _, line = _toml_problem(str(exc), text)
        report(message, line)
    except RecursionError:
        # tomllib recurses once per nested array or inline table; blame the most nested line
        lines = text.splitlines() or [""]
        deepest = max(range(len(lines)), key=lambda i: lines[i].count("[") + lines[i].count("{"))
        report("invalid TOML: arrays or inline tables nested too deeply", deepest + 1)
    return None


def _collect_blocks(document: Mapping[str, Any], main: SourceFile, directory: Path | None,
                    problems: list[Diagnostic], included: dict[str, str]
                    ) -> dict[str, BlockDef]:
    """The blocks of the spec and of every file it includes, transitively. An include is
    relative to the file that names it and must stay inside that file's directory."""
    blocks: dict[str, BlockDef] = {}
    base = (directory or Path.cwd()).resolve()
    pending = [(document, main, base, (main.name,))]
    read = 0
    while pending:
        current, file, folder, chain = pending.pop(0)

        def report(message: str, path: KeyPath, file: SourceFile = file) -> None:
            problems.append(Diagnostic(message, file=file.name, line=file.line(path)))

        raw_blocks = current.get("blocks", {})
        if not isinstance(raw_blocks, Mapping):
            report("[blocks] must hold tables like [blocks.basic]", ("blocks",))
            raw_blocks = {}
        for name, raw in raw_blocks.items():
            if name in blocks:
                first = blocks[name]
                report(f"block '{name}' is defined twice (first at {first.file.at(first.path)})"
                       f"; rename one of them", ("blocks", name))
                continue
            blocks[name] = BlockDef(name, raw, file)
        includes = current.get("include", [])
        includes = [includes] if isinstance(includes, str) else includes
        if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
            report("include must be a list of file paths, e.g. include = [\"blocks.toml\"]",
                   ("include",))
            continue
        for written in includes:
            path = (folder / written).resolve()
            shown = _shown_path(path, base)
            if not path.is_relative_to(folder):
                report(f"include '{written}' points outside {folder}; an included file must "
                       f"lie in the including file's directory or below it", ("include",))
                continue
            if shown in chain:
                report(f"include '{written}' includes itself: {' -> '.join([*chain, shown])}",
                       ("include",))
                continue
            read += 1
            if read > MAX_INCLUDES:
                report(f"more than {MAX_INCLUDES} included files; that is the limit",
                       ("include",))
                return blocks
            if not path.is_file():
                report(f"include '{written}' not found (looked for {path})", ("include",))
                continue
            try:
                text = _read_text(path, "the included file")
            except NetspecError as exc:
                report(f"include '{written}': {exc}", ("include",))
                continue
            included[shown] = text
            library = SourceFile(shown, SourceMap.scan(text))
            before = len(problems)
            content = _read_document(text, library, problems)
            if content is None:
                problems.insert(before, Diagnostic(f"include '{written}' is not a valid spec "
                                                   f"file (the errors follow)", file=file.name,
                                                   line=file.line(("include",))))
                continue
            strays = [key for key in content if key not in ("include", "blocks")]
            for key in strays:
                problems.append(Diagnostic(
                    f"an included file holds blocks and includes only, not [{key}]; move it "
                    f"to the spec", file=shown, line=library.line((key,))))
            pending.append((content, library, path.parent, (*chain, shown)))
    return blocks


def _shown_path(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def _apply_overrides(overrides: dict[str, Any], variables: Mapping[str, Any], train: Any,
                     problems: list[Diagnostic]) -> Any:
    """The [train] table with its ``train.``-dotted overrides applied; variable overrides
    are applied when the variables are evaluated. Unknown names are reported here."""
    def report(message: str) -> None:
        problems.append(Diagnostic(message))

    for name, value in overrides.items():
        if name.startswith("train."):
            keys = name.split(".")[1:]
            if not all(keys):
                report(f"--set {name}: a dotted path like train.optimizer.lr")
                continue
            train = dict(train) if isinstance(train, Mapping) else {}
            table = train
            for key in keys[:-1]:
                inner = table.get(key, {})
                if not isinstance(inner, Mapping):
                    report(f"--set {name}: [train] {key} is not a table")
                    break
                table[key] = dict(inner)
                table = table[key]
            else:
                table[keys[-1]] = value
        elif name not in variables:
            known = [*variables, "train.<key>"]
            report(f"--set {name}: no variable of that name{did_you_mean(name, variables)} "
                   f"(variables: {', '.join(known)})")
    return train


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
    declared = params.inputs
    key = None
    if declared is None:
        if op_class.min_inputs == 0:
            return ()
        if previous is None:
            report("has no inputs and no node is defined before it; set inputs = \"...\"",
                   op=params.op)
            return None
        resolved: tuple[str, ...] = (previous,)
    else:
        resolved = (declared,) if isinstance(declared, str) else tuple(declared)
        key = "inputs"
    count = len(resolved)
    if count < op_class.min_inputs or (op_class.max_inputs is not None
                                       and count > op_class.max_inputs):
        report(_arity_message(op_class, count, declared is None), key, params.op)
        return None
    return resolved


def _arity_message(op_class: type[Op], count: int, implicit: bool) -> str:
    if op_class.max_inputs == 0:
        if op_class.name == "input":
            return "an input node takes no inputs; remove 'inputs'"
        return f"a {op_class.name} node takes no inputs; remove 'inputs'"
    if count == 0:
        return "inputs is empty; name the input node(s), e.g. inputs = \"a\""
    if op_class.max_inputs == 1:
        return (f"takes exactly one input, got {count}; join them first with an add or "
                f"concat node")
    if op_class.max_inputs is not None and count > op_class.max_inputs:
        allowed = (f"exactly {op_class.max_inputs}" if op_class.min_inputs ==
                   op_class.max_inputs else f"{op_class.min_inputs} to {op_class.max_inputs}")
        return f"takes {allowed} inputs, got {count}; list only those it reads"
    got = "got only the node before it" if implicit else f"got {count}"
    return (f"takes at least {op_class.min_inputs} inputs, {got}; list them, e.g. "
            f"inputs = [\"a\", \"b\"]")


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
    if not node_id.strip():
        report("a node id must not be empty or blank; name the table like [nodes.conv1]")
        return None
    control = _CONTROL.search(node_id)
    if control:
        # a NUL would cut the id short as a name inside a weights (.npz) file
        report(f"the id holds the control character U+{ord(control.group()):04X}; rename "
               f"the node")
        return None
    if not isinstance(raw, Mapping):
        report(f"must be a table like [nodes.{node_id}] with an op")
        return None
    # a field whose expression failed has been reported; validate the others
    unevaluated = {key for key, value in raw.items() if value is UNEVALUATED}
    op = raw.get("op")
    if "op" in unevaluated:
        return None
    if op is None:
        report(f"missing 'op'; add op = \"...\" (one of: {', '.join(sorted(REGISTRY))})")
        return None
    if not isinstance(op, str):
        report(f"op must be a string such as \"conv2d\", got {_show(op)}", "op")
        return None
    if op not in REGISTRY:
        report(f"unknown op '{op}'{did_you_mean(op, REGISTRY)} "
               f"(known ops: {', '.join(sorted(REGISTRY))})", "op")
        return None
    try:
        # strict: TOML values are typed, so "5" for a size or 1 for a flag is a mistake.
        # The op's own model, not a union of all: a model is built on its first use
        # (defer_build), so a spec pays only for the ops it uses.
        params = REGISTRY[op].Params.model_validate(
            {key: value for key, value in raw.items() if key not in unevaluated}, strict=True)
    except ValidationError as exc:
        errors = exc.errors()
        for key, message in _field_problems(errors, list(REGISTRY[op].Params.model_fields)):
            if key not in unevaluated:
                report(message, key or None, op)
        return None
    return None if unevaluated else params


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
