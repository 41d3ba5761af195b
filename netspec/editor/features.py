"""What an editor shows about a spec being written: diagnostics from the real compiler, hover
text with shapes, completions and definitions. Pure functions of the buffer's text and path;
``netspec.editor.lsp`` speaks the Language Server Protocol over them.

The buffer is compiled as it stands, never written anywhere: includes and weight files are
read relative to the document's directory, as ``netspec compile`` would read them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netspec.common.diagnostics import with_columns
from netspec.common.errors import Diagnostic, NetspecError, SpecError
from netspec.common.tables import human_count
from netspec.lang.expressions import FUNCTIONS, SHAPE_FUNCTIONS
from netspec.lang.hierarchy import Container, node_chains
from netspec.lang.sourcemap import KeyPath, SourceMap
from netspec.lang.spec import Spec, check_spec
from netspec.ops import REGISTRY
from netspec.ops.base import param_key
from netspec.ops.shapes import format_shape
from netspec.plan.compiler import CompileError, PlanNode, compile_plan

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

ENTRY_DEFAULT = ("x",)


@dataclass(frozen=True)
class Location:
    """A place in a file: its path and 1-based line."""

    path: Path
    line: int


@dataclass
class Analysis:
    """One compile of a buffer: its problems, the nodes that compiled (all of them, or those
    before the failing ones), and what the spec defines."""

    path: Path
    text: str
    diagnostics: list[Diagnostic]
    nodes: dict[str, PlanNode] = field(default_factory=dict)
    spec: Spec | None = None
    chains: dict[str, tuple[Container, ...]] = field(default_factory=dict)
    # block name -> (its table as written, the file that defines it, that file's text)
    blocks: dict[str, tuple[Mapping[str, Any], Path, str]] = field(default_factory=dict)
    # what builds but is probably wrong (shown as warnings)
    warnings: list[Diagnostic] = field(default_factory=list)

    @property
    def source(self) -> SourceMap:
        return self.spec.source if self.spec is not None else SourceMap.scan(self.text)


def analyse(text: str, path: str | Path) -> Analysis:
    """Compile ``text`` as the spec at ``path`` (which need not exist on disk) and collect
    every problem, with [train] checked too."""
    path = Path(path)
    name = path.name
    analysis = Analysis(path=path, text=text, diagnostics=[])
    try:
        checked = check_spec(text, file=name, directory=path.parent)
    except SpecError as exc:  # no node can be read: malformed TOML, no nodes
        analysis.diagnostics = list(exc.diagnostics)
        return _finish(analysis, {})
    except NetspecError as exc:
        analysis.diagnostics = [Diagnostic(str(exc), file=name, line=1)]
        return _finish(analysis, {})
    spec = checked.spec
    analysis.spec = spec
    analysis.warnings = with_columns(spec.warnings, {name: text, **spec.included})
    try:
        plan = compile_plan(checked)
        analysis.nodes = dict(plan.nodes)
    except CompileError as exc:
        analysis.diagnostics = list(exc.diagnostics)
        analysis.nodes = dict(exc.partial)
    except NetspecError as exc:
        analysis.diagnostics = [Diagnostic(str(exc), file=name, line=1)]
    from netspec.train.config import train_table_problems

    analysis.diagnostics += train_table_problems(spec.train, file=name,
                                                 locate=spec.source.locate)
    analysis.chains = node_chains({n: o.instance for n, o in spec.origins.items()},
                                  spec.instances)
    return _finish(analysis, spec.included)


def _finish(analysis: Analysis, included: Mapping[str, str]) -> Analysis:
    texts = {analysis.path.name: analysis.text, **included}
    analysis.diagnostics = with_columns(analysis.diagnostics, texts)
    analysis.blocks = _blocks(analysis.text, analysis.path, included)
    return analysis


def _blocks(text: str, path: Path, included: Mapping[str, str]
            ) -> dict[str, tuple[Mapping[str, Any], Path, str]]:
    found: dict[str, tuple[Mapping[str, Any], Path, str]] = {}
    for file, content in [(path, text)] + [(path.parent / name, body)
                                           for name, body in included.items()]:
        try:
            document = tomllib.loads(content)
        except tomllib.TOMLDecodeError:
            continue
        blocks = document.get("blocks")
        if isinstance(blocks, Mapping):
            for name, raw in blocks.items():
                if isinstance(raw, Mapping):
                    found.setdefault(name, (raw, file, content))
    return found


# -- where the cursor is --------------------------------------------------------------------

_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_STRING = re.compile(r'"((?:\\.|[^"\\])*)"|\'([^\']*)\'')


@dataclass(frozen=True)
class Cursor:
    """What surrounds a position: the table the line belongs to, the key being written on the
    line (if any), the quoted string under the cursor, and whether the cursor is in a value."""

    table: KeyPath
    key: str | None
    word: str | None
    in_value: bool
    before: str  # the line's text before the cursor


def cursor_at(text: str, line: int, character: int) -> Cursor:
    """The context of 0-based (line, character) in ``text``."""
    lines = text.splitlines()
    current = lines[line] if line < len(lines) else ""
    before = current[:character]
    table: KeyPath = ()
    for previous in reversed(lines[:line + 1]):
        header = _HEADER.match(previous)
        if header and not previous.lstrip().startswith("[["):
            table = _split_key(header.group(1))
            break
    key: str | None = None
    in_value = False
    # strings blanked, so that "=", "{" and "," inside them are not structure
    plain = _outside_strings(current)
    if "=" in plain:
        _, _, rest = plain.partition("=")
        # the key as written, quoted parts included ("features.1.0" = { ... })
        parts = _split_key(current[:_first_outside_strings(current, "=")].strip())
        if rest.lstrip().startswith("{"):  # `conv1 = { op = "conv2d", ... }`
            table = table + parts
            written = _outside_strings(before)
            opened = written.find("{")
            segment = re.split(r",", written[opened + 1:])[-1] if opened >= 0 else ""
            if opened >= 0 and "=" in segment:
                key = (_split_key(segment.split("=", 1)[0].strip()) or (None,))[-1]
                in_value = True
        else:  # `out_channels = 6`, or `conv1.op = "conv2d"` under [nodes]
            table = table + parts[:-1]
            key = parts[-1] if parts else None
            in_value = "=" in _outside_strings(before)
    word = None
    for match in _STRING.finditer(current):
        if match.start() <= character <= match.end():
            word = match.group(1) if match.group(1) is not None else match.group(2)
    return Cursor(table, key, word, in_value, before)


def _outside_strings(text: str) -> str:
    return _STRING.sub('""', text)


def _first_outside_strings(text: str, char: str) -> int:
    """The index in ``text`` of the first ``char`` that is not inside a string (-1: none)."""
    start = 0
    for match in _STRING.finditer(text):
        found = text.find(char, start, match.start())
        if found >= 0:
            return found
        start = match.end()
    return text.find(char, start)


def _split_key(text: str) -> KeyPath:
    parts = re.findall(r'"((?:\\.|[^"\\])*)"|\'([^\']*)\'|([^.\s]+)', text)
    return tuple(a or b or c for a, b, c in parts)


def node_path(table: KeyPath) -> KeyPath | None:
    """The node table a key path lies in: ("nodes", id) or ("blocks", name, "nodes", id)."""
    if len(table) >= 2 and table[0] == "nodes":
        return table[:2]
    if len(table) >= 4 and table[0] == "blocks" and table[2] == "nodes":
        return table[:4]
    return None


# -- hover --------------------------------------------------------------------------------


def hover(analysis: Analysis, line: int, character: int) -> str | None:
    """Markdown about the node (or instance) under the cursor: op, output shape, parameters,
    FLOPs; for a block's node, what each of its instances made."""
    cursor = cursor_at(analysis.text, line, character)
    if cursor.word is not None and cursor.key in ("inputs", "output"):
        about = _describe_id(analysis, cursor.word)
        if about:
            return about
    assertion = _assertion_at(cursor.table, cursor.key)
    if assertion is not None:
        return _describe_assertion(analysis, assertion, line + 1)
    path = node_path(cursor.table)
    if path is None:
        return None
    if path[0] == "nodes":
        return _describe_id(analysis, path[1]) or _describe_nameless(analysis, path[1])
    made = [node_id for node_id, origin in (analysis.spec.origins.items() if analysis.spec
                                             else ())
            if origin.path == path and origin.file.name == analysis.path.name]
    if not made:
        # an instance written inside the block: the instances it made, by their line
        instances = [instance for instance in (analysis.spec.instances.values()
                                               if analysis.spec else ())
                     if instance.line == line + 1
                     and Path(instance.file).name == analysis.path.name]
        if instances:
            rows = [_instance_line(analysis, instance.path, instance.block, instance.output)
                    for instance in instances]
            return (f"**{path[3]}** in block `{path[1]}`, {len(rows)} instance(s):\n\n"
                    + "\n".join(f"- {row}" for row in rows))
        return f"**{path[3]}** in block `{path[1]}`: no instance of the block compiled yet"
    rows = [_node_line(analysis, node_id) for node_id in made]
    return f"**{path[3]}** in block `{path[1]}`, {len(made)} instance(s):\n\n" + "\n".join(
        f"- {row}" for row in rows)


def _assertion_at(table: KeyPath, key: str | None) -> KeyPath | None:
    """The assertion a cursor is on: ("assert", name) or ("blocks", block, "assert", name)."""
    for start in (("assert",), ("blocks", "*", "assert")):
        if len(table) >= len(start) and all(want in ("*", got) for want, got in
                                            zip(start, table)):
            rest = table[len(start):]
            name = rest[0] if rest else key
            return (*table[:len(start)], name) if name else None
    return None


def _describe_assertion(analysis: Analysis, path: KeyPath, line: int) -> str:
    """An assertion: its condition and message, and whether it holds in the last compile
    (for a block's, in which instances it fails)."""
    name = path[-1]
    raw: Any = None
    if path[0] == "blocks" and path[1] in analysis.blocks:
        raw = analysis.blocks[path[1]][0].get("assert", {})
    elif path[0] == "assert":
        try:
            raw = tomllib.loads(analysis.text).get("assert", {})
        except tomllib.TOMLDecodeError:
            raw = None
    entry = raw.get(name) if isinstance(raw, Mapping) else None
    if not isinstance(entry, Mapping):
        return f"**assertion {name}**: name = {{ check = \"= condition\", message = \"...\" }}"
    where = "the variables" if path[0] == "assert" else f"each instance of block `{path[1]}`"
    failing = [d for d in analysis.diagnostics
               if d.message.startswith(f"assertion '{name}'") and d.line == line]
    if failing:
        subjects = [f"`{d.node}`" for d in failing if d.node]
        status = "fails" + (f" in {', '.join(subjects)}" if subjects else "")
    elif analysis.spec is None:
        status = "not checked (the spec does not read)"
    else:
        status = "holds"
    return (f"**assertion {name}** on {where}\n\n`{entry.get('check')}`\n\n"
            f"{entry.get('message')}\n\n{status}")


def _describe_id(analysis: Analysis, node_id: str) -> str | None:
    node = analysis.nodes.get(node_id)
    if node is not None:
        parts = [f"**{node_id}** · `{node.op_name}`",
                 f"output `{format_shape(node.shape)}` per sample"]
        if node.inputs:
            parts.append("inputs: " + ", ".join(
                f"`{source}` {format_shape(shape)}"
                for source, shape in zip(node.inputs, node.input_shapes)))
        # a learned tensor's one parameter is the node itself: shown under its key
        tensors = [f"`{name or param_key(node_id, name)}` {format_shape(spec.shape)}"
                   for name, spec in node.param_specs.items()]
        parts.append(f"{node.n_params:,} trainable parameters"
                     + (f" ({', '.join(tensors)})" if tensors else ""))
        parts.append(f"{human_count(node.flops)} FLOPs per sample (forward)")
        return "\n\n".join(parts)
    container = _container(analysis, node_id)
    if container is not None:
        members = [n for n, chain in analysis.chains.items()
                   if any(c.id == container.id for c in chain)]
        return _instance_summary(analysis, f"**{node_id}** · block `{container.kind}`",
                                 members, container.output)
    if analysis.spec is not None and node_id in analysis.spec.origins:
        return f"**{node_id}**: did not compile (see the problems reported)"
    return None


def _describe_nameless(analysis: Analysis, key: str) -> str | None:
    """A top-level instance named "" (its nodes keep their own names, as torchvision's stem
    of ViT): what it made, found by the line that instantiates it."""
    if analysis.spec is None:
        return None
    line = analysis.spec.source.locate(("nodes", key))
    made = [node_id for node_id, origin in analysis.spec.origins.items()
            if origin.instance_line == line and origin.instance_file is not None
            and Path(origin.instance_file).name == analysis.path.name]
    if line is None or not made:
        return None
    block = analysis.spec.origins[made[0]].block
    return _instance_summary(
        analysis, f"**{key}** · block `{block}`, named \"\" (its nodes keep their own names)",
        made, made[-1])


def _instance_summary(analysis: Analysis, heading: str, members: list[str],
                      output_id: str) -> str:
    """What an instance made: its output's shape, its nodes, parameters and FLOPs."""
    compiled = [analysis.nodes[n] for n in members if n in analysis.nodes]
    output = analysis.nodes.get(output_id)
    shape = format_shape(output.shape) if output is not None else "not compiled"
    missing = len(members) - len(compiled)
    note = f"\n\n{missing} of its nodes did not compile" if missing else ""
    return (f"{heading}\n\noutput `{shape}` (node `{output_id}`)\n\n"
            f"{len(members)} nodes, {sum(n.n_params for n in compiled):,} trainable "
            f"parameters, {human_count(sum(n.flops for n in compiled))} FLOPs per sample"
            f"{note}")


def _container(analysis: Analysis, container_id: str) -> Container | None:
    for chain in analysis.chains.values():
        for container in chain:
            if container.id == container_id:
                return container
    return None


def _instance_line(analysis: Analysis, path: str, block: str, output: str) -> str:
    members = [analysis.nodes[n] for n, chain in analysis.chains.items()
               if n in analysis.nodes and any(c.id == path for c in chain)]
    shape = (format_shape(analysis.nodes[output].shape) if output in analysis.nodes
             else "not compiled")
    return (f"`{path}` (block `{block}`) → `{shape}`, {len(members)} nodes, "
            f"{sum(n.n_params for n in members):,} params, "
            f"{human_count(sum(n.flops for n in members))} FLOPs")


def _node_line(analysis: Analysis, node_id: str) -> str:
    node = analysis.nodes.get(node_id)
    if node is None:
        return f"`{node_id}`: did not compile"
    return (f"`{node_id}` → `{format_shape(node.shape)}`, {node.n_params:,} params, "
            f"{human_count(node.flops)} FLOPs")


# -- completion ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Completion:
    label: str
    kind: str  # "op", "field", "node", "block", "argument", "function", "variable", "local"
    detail: str = ""
    insert: str | None = None


def complete(analysis: Analysis, line: int, character: int) -> list[Completion]:
    """What may be written at the cursor: op names in ``op = "``, a node's fields with their
    defaults, node ids in ``inputs``, block names in ``block = "`` and a block's arguments."""
    cursor = cursor_at(analysis.text, line, character)
    path = node_path(cursor.table)
    if cursor.in_value and _in_expression(cursor.before):
        return _expression_names(analysis, cursor.table)
    if cursor.in_value:
        if cursor.key == "op":
            return [Completion(name, "op", _op_summary(name)) for name in sorted(REGISTRY)]
        if cursor.key == "block":
            return [Completion(name, "block", _block_signature(raw))
                    for name, (raw, _, _) in sorted(analysis.blocks.items())]
        if cursor.key in ("inputs", "output") and path is not None:
            return [Completion(name, "node", detail)
                    for name, detail in _visible_names(analysis, path).items()]
        return []
    if path is None:
        return []
    fields = _table_fields(analysis.text, line, path)
    written = set(fields)
    block = fields.get("block")
    if isinstance(block, str) and block in analysis.blocks:
        raw = analysis.blocks[block][0]
        required = [a for a in raw.get("args", []) if isinstance(a, str)]
        defaults = raw.get("defaults", {}) if isinstance(raw.get("defaults"), Mapping) else {}
        items = [Completion(name, "argument", "required", f"{name} = ")
                 for name in required if name not in written]
        items += [Completion(name, "argument", f"default {_toml(value)}",
                             f"{name} = {_toml(value)}")
                  for name, value in defaults.items() if name not in written]
        items += [Completion(key, "field", "", f"{key} = ") for key in ("repeat", "inputs", "if")
                  if key not in written]
        return items
    op = fields.get("op")
    if not isinstance(op, str) or op not in REGISTRY:
        return [Completion("op", "field", "what the node computes", 'op = "'),
                Completion("block", "field", "instantiate a block", 'block = "')]
    items = []
    for name, info in REGISTRY[op].Params.model_fields.items():
        if name in written or name == "op":
            continue
        if info.is_required():
            items.append(Completion(name, "field", f"required · {info.description or ''}",
                                    f"{name} = "))
        elif info.default is None:
            items.append(Completion(name, "field", f"optional · {info.description or ''}",
                                    f"{name} = "))
        else:
            items.append(Completion(name, "field",
                                    f"default {_toml(info.default)} · {info.description or ''}",
                                    f"{name} = {_toml(info.default)}"))
    return items


SHAPE_DETAILS = {
    "shape": "shape(n): the output shape of node n, a list",
    "channels": "channels(n): the first axis of node n's shape",
    "height": "height(n): the height of a (channels, height, width) node",
    "width": "width(n): the width of a (channels, height, width) node",
}


def _in_expression(before: str) -> bool:
    """Whether the text before the cursor ends inside a string that is an expression."""
    quotes = [match.start() for match in re.finditer(r'(?<!\\)"', before)]
    if len(quotes) % 2 == 0:
        return False
    content = before[quotes[-1] + 1:]
    return content.startswith("=") and not content.startswith("==")


def _expression_names(analysis: Analysis, table: KeyPath) -> list[Completion]:
    """What an expression may use here: the shape functions, the other functions, the
    variables, and inside a block its arguments, local values, entries and index."""
    items = [Completion(name, "function", SHAPE_DETAILS[name], f"{name}(")
             for name in SHAPE_FUNCTIONS]
    items += [Completion(name, "function", f"{name}(...)", f"{name}(") for name in FUNCTIONS]
    try:
        variables = tomllib.loads(analysis.text).get("vars", {})
    except tomllib.TOMLDecodeError:
        variables = {}
    items += [Completion(name, "variable", f"variable = {_toml(value)}")
              for name, value in (variables.items() if isinstance(variables, Mapping) else ())]
    if len(table) >= 2 and table[0] == "blocks" and table[1] in analysis.blocks:
        raw = analysis.blocks[table[1]][0]
        args = [a for a in raw.get("args", []) if isinstance(a, str)]
        defaults = raw.get("defaults", {}) if isinstance(raw.get("defaults"), Mapping) else {}
        lets = raw.get("let", {}) if isinstance(raw.get("let"), Mapping) else {}
        items += [Completion(a, "argument", "required argument") for a in args]
        items += [Completion(a, "argument", f"argument, default {_toml(v)}")
                  for a, v in defaults.items()]
        items += [Completion(a, "local", f"local value = {_toml(v)}") for a, v in lets.items()]
        entries = raw.get("inputs", list(ENTRY_DEFAULT))
        items += [Completion(str(e), "node", "the block's input (for shape functions)")
                  for e in ([entries] if isinstance(entries, str) else entries)]
    items.append(Completion("index", "variable", "the index of the innermost repeat"))
    return items


def _op_summary(name: str) -> str:
    doc = (REGISTRY[name].__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


def _block_signature(raw: Mapping[str, Any]) -> str:
    args = [a for a in raw.get("args", []) if isinstance(a, str)]
    defaults = raw.get("defaults", {}) if isinstance(raw.get("defaults"), Mapping) else {}
    shown = args + [f"{k} = {_toml(v)}" for k, v in defaults.items()]
    return f"block({', '.join(shown)})"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def _table_fields(text: str, line: int, path: KeyPath) -> dict[str, Any]:
    """The keys already written in the node table around ``line`` (the buffer may not parse
    as a whole while it is being typed, so only that table's lines are read)."""
    lines = text.splitlines()
    current = lines[line] if line < len(lines) else ""
    head, _, rest = _outside_strings(current).partition("=")
    if rest.lstrip().startswith("{"):  # an inline table: its fields are on this line
        inner = current[current.index("{") + 1:].rstrip().removesuffix("}")
        fields: dict[str, Any] = {}
        for key, value in re.findall(r'([\w-]+)\s*=\s*("(?:\\.|[^"\\])*"|[^,}]*)', inner):
            fields[key] = value.strip().strip('"') if value.strip().startswith('"') else None
        return fields
    start = line
    while start > 0 and not _HEADER.match(lines[start] if start < len(lines) else ""):
        start -= 1
    end = line + 1
    while end < len(lines) and not _HEADER.match(lines[end]):
        end += 1
    body = "\n".join(lines[start + 1:end] if _HEADER.match(lines[start] if start < len(lines)
                                                             else "") else lines[start:end])
    fields = {}
    for row in body.splitlines():
        if row.strip() and "=" in row:
            try:
                fields.update(tomllib.loads(row))
            except tomllib.TOMLDecodeError:
                key = row.split("=", 1)[0].strip()
                if key:
                    fields.setdefault(key, None)
    return fields


def _visible_names(analysis: Analysis, path: KeyPath) -> dict[str, str]:
    """Node ids an ``inputs`` entry may name here, with what they hold."""
    names: dict[str, str] = {}
    if path[0] == "nodes":
        top = analysis.spec.origins if analysis.spec is not None else {}
        for node_id, origin in top.items():
            if origin.block is None and node_id != path[1]:
                names[node_id] = _shape_of(analysis, node_id)
        for instance in (analysis.spec.instances.values() if analysis.spec else ()):
            if instance.parent is None:
                group = instance.group or instance.path
                names.setdefault(group, f"block {instance.block}")
        if not names:
            names = {key: "" for key in _top_ids(analysis.text) if key != path[1]}
        return names
    block = analysis.blocks.get(path[1])
    if block is not None:
        raw = block[0]
        entries = raw.get("inputs", list(ENTRY_DEFAULT))
        for entry in [entries] if isinstance(entries, str) else entries:
            names[str(entry)] = "the block's input"
        for local in raw.get("nodes", {}) if isinstance(raw.get("nodes"), Mapping) else {}:
            if local != path[3]:
                names[local] = "node of the block"
    return names


def _shape_of(analysis: Analysis, node_id: str) -> str:
    node = analysis.nodes.get(node_id)
    return f"{node.op_name} → {format_shape(node.shape)}" if node is not None else ""


def _top_ids(text: str) -> list[str]:
    source = SourceMap.scan(text)
    ids = [path[1] for path in [*source.tables, *source.keys]
           if len(path) >= 2 and path[0] == "nodes"]
    return list(dict.fromkeys(ids))


# -- definition ---------------------------------------------------------------------------


def definition(analysis: Analysis, line: int, character: int) -> Location | None:
    """Where the name under the cursor is defined: an ``inputs``/``output`` entry's node
    table, or a ``block`` name's block table (in this file or an included one)."""
    cursor = cursor_at(analysis.text, line, character)
    if cursor.word is None:
        return None
    if cursor.key == "block":
        found = analysis.blocks.get(cursor.word)
        if found is None:
            return None
        _, file, content = found
        where = SourceMap.scan(content).locate(("blocks", cursor.word))
        return Location(file, where or 1) if where else None
    if cursor.key not in ("inputs", "output"):
        return None
    path = node_path(cursor.table)
    source = analysis.source
    if path is not None and path[0] == "blocks":
        where = source.locate(path[:3] + (cursor.word,))
        return Location(analysis.path, where) if where else None
    where = source.locate(("nodes", cursor.word))
    if where is not None and ("nodes", cursor.word) in {*source.tables, *source.keys}:
        return Location(analysis.path, where)
    origin = analysis.spec.origins.get(cursor.word) if analysis.spec is not None else None
    if origin is not None and origin.line is not None:
        file = analysis.path if origin.file.name == analysis.path.name else (
            analysis.path.parent / origin.file.name)
        return Location(file, origin.line)
    return None
