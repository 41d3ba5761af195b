"""TOML text -> validated spec: pydantic models per node, with the source line of every key."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from netspec.errors import Diagnostic, NetspecError, SpecError, did_you_mean
from netspec.ops import REGISTRY, NodeParams

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

KeyPath = tuple[str, ...]
TOP_LEVEL_TABLES = ("network", "nodes", "train")
SHIPPED_DIR = Path(__file__).resolve().parent / "architectures"

_HEADER = re.compile(r"^\s*\[(?!\[)\s*(?P<path>[^\]]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*(?P<path>[A-Za-z0-9_\-.\"' ]+?)\s*=")
_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)")


def _split_key(text: str) -> KeyPath:
    return tuple(part.strip().strip("\"'") for part in text.split("."))


@dataclass
class SourceMap:
    """Where each table header and key stands in the TOML text (1-based lines)."""

    tables: dict[KeyPath, int] = field(default_factory=dict)
    keys: dict[KeyPath, int] = field(default_factory=dict)
    duplicate_tables: list[tuple[KeyPath, int, int]] = field(default_factory=list)

    @classmethod
    def scan(cls, text: str) -> SourceMap:
        """A line scan good enough for hand-written specs: headers, ``key =`` lines, and
        multi-line strings skipped, so that errors can point at lines tomllib does not give."""
        source = cls()
        table: KeyPath = ()
        in_multiline = False
        for number, line in enumerate(text.splitlines(), start=1):
            if in_multiline:
                in_multiline = line.count('"""') % 2 == 0 and line.count("'''") % 2 == 0
                continue
            header = _HEADER.match(line)
            if header:
                table = _split_key(header.group("path"))
                if table in source.tables:
                    source.duplicate_tables.append((table, number, source.tables[table]))
                else:
                    source.tables[table] = number
                continue
            key = _KEY.match(line)
            if key:
                path = table + _split_key(key.group("path"))
                source.keys.setdefault(path, number)
                for depth in range(len(table) + 1, len(path)):
                    source.tables.setdefault(path[:depth], number)
            if line.count('"""') % 2 == 1 or line.count("'''") % 2 == 1:
                in_multiline = True
        return source

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

    name: str | None = Field(default=None, min_length=1)
    description: str = ""
    output: str | None = Field(default=None, min_length=1)


@cache
def node_adapter() -> TypeAdapter:
    """The discriminated union of every registered op's params model, selected by ``op``."""
    models = tuple(op.Params for op in REGISTRY.values())
    return TypeAdapter(Annotated[Union[models], Field(discriminator="op")])  # noqa: UP007


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
    if path.exists():
        return path
    if path.suffix == "" and path.parent == Path("."):
        shipped = SHIPPED_DIR / f"{path.name}.toml"
        if shipped.exists():
            return shipped
        known = [p.stem for p in shipped_architectures()]
        raise NetspecError(
            f"{name_or_path}: no such file and no shipped architecture of that name"
            f"{did_you_mean(path.name, known)} (shipped: {', '.join(known)})"
        )
    raise NetspecError(f"{name_or_path}: no such file")


def shipped_architectures() -> list[Path]:
    """The architecture files that ship with netspec, sorted by name."""
    return sorted(SHIPPED_DIR.glob("*.toml"))


def load_spec(source: str | Path) -> Spec:
    """Read and validate a spec file (a path, or a bare shipped name)."""
    path = resolve_spec_path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NetspecError(f"{path}: cannot read the spec: {exc}") from None
    return parse_spec(text, file=str(source) if Path(source).exists() else path.name,
                      directory=path.resolve().parent)


def parse_spec(text: str, *, file: str = "<spec>", directory: Path | None = None) -> Spec:
    """Validate spec text, reporting every independent problem at once."""
    source = SourceMap.scan(text)
    problems: list[Diagnostic] = []

    def report(message: str, path: KeyPath = (), node: str | None = None, op: str | None = None,
               line: int | None = None) -> None:
        where = line if line is not None else (source.locate(path) if path else None)
        problems.append(Diagnostic(message, file=file, line=where, node=node, op=op))

    for table, line, first in source.duplicate_tables:
        if len(table) == 2 and table[0] == "nodes":
            report(f"defined twice (first at line {first}); rename one of them",
                   node=table[1], line=line)
        else:
            report(f"table [{'.'.join(table)}] defined twice (first at line {first})", line=line)
    if problems:
        raise SpecError(problems)

    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_LINE.search(str(exc))
        message = _TOML_LINE.sub("", str(exc)).strip()
        report(f"invalid TOML: {message}", line=int(found.group(1)) if found else None)
        raise SpecError(problems) from None

    for key in document:
        if key not in TOP_LEVEL_TABLES:
            report(f"unknown top-level table [{key}]{did_you_mean(key, TOP_LEVEL_TABLES)} "
                   f"(expected {', '.join(TOP_LEVEL_TABLES)})", path=(key,))

    network = _validate_network(document.get("network", {}), report)
    raw_nodes = document.get("nodes")
    if not isinstance(raw_nodes, Mapping) or not raw_nodes:
        report("no nodes: add tables like [nodes.image] with op = \"input\"", path=("nodes",))
        raise SpecError(problems)

    nodes: dict[str, NodeParams] = {}
    inputs: dict[str, tuple[str, ...]] = {}
    previous: str | None = None
    for node_id, raw in raw_nodes.items():
        params = _validate_node(node_id, raw, report)
        if params is not None:
            nodes[node_id] = params
            declared = params.inputs
            if declared is None:
                wants_input = REGISTRY[params.op].min_inputs > 0
                if wants_input and previous is None:
                    report("has no inputs and no node is defined before it; set inputs = \"...\"",
                           path=("nodes", node_id), node=node_id, op=params.op)
                inputs[node_id] = (previous,) if wants_input and previous else ()
            else:
                inputs[node_id] = (declared,) if isinstance(declared, str) else tuple(declared)
        previous = node_id

    train = document.get("train")
    if train is not None and not isinstance(train, Mapping):
        report("[train] must be a table", path=("train",))
    if problems:
        raise SpecError(problems)
    name = network.name if network and network.name else Path(file).stem
    return Spec(
        name=name,
        description=network.description if network else "",
        file=file,
        nodes=nodes,
        inputs=inputs,
        output=network.output if network else None,
        train=dict(train) if train is not None else None,
        source=source,
        directory=directory,
    )


def _validate_network(raw: Any, report) -> NetworkInfo | None:
    if not isinstance(raw, Mapping):
        report("[network] must be a table", path=("network",))
        return None
    try:
        return NetworkInfo.model_validate(raw)
    except ValidationError as exc:
        fields = list(NetworkInfo.model_fields)
        for error in exc.errors():
            key = str(error["loc"][0]) if error["loc"] else ""
            report(f"[network] {_describe(error, key, fields)}", path=("network", key))
        return None


def _validate_node(node_id: str, raw: Any, report) -> NodeParams | None:
    path = ("nodes", node_id)
    if not isinstance(raw, Mapping):
        report(f"must be a table like [nodes.{node_id}] with an op", path=path, node=node_id)
        return None
    op = raw.get("op")
    if op is None:
        report(f"missing 'op' (one of: {', '.join(sorted(REGISTRY))})", path=path, node=node_id)
        return None
    if op not in REGISTRY:
        report(f"unknown op '{op}'{did_you_mean(str(op), REGISTRY)} "
               f"(known ops: {', '.join(sorted(REGISTRY))})",
               path=path + ("op",), node=node_id)
        return None
    try:
        return node_adapter().validate_python(dict(raw))
    except ValidationError as exc:
        fields = list(REGISTRY[op].Params.model_fields)
        for error in exc.errors():
            # the union's discriminator value leads every location; drop it
            loc = [str(part) for part in error["loc"][1:]]
            key = loc[0] if loc else ""
            report(_describe(error, key, fields, loc), path=path + ((key,) if key else ()),
                   node=node_id, op=op)
        return None


def _describe(error: Mapping[str, Any], key: str, fields: list[str],
              loc: list[str] | None = None) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        valid = [f for f in fields if f != "op"]
        return (f"unknown field '{key}'{did_you_mean(key, valid)} "
                f"(valid fields: {', '.join(valid)})")
    if kind == "missing":
        return f"missing required field '{key}'"
    where = ".".join(loc) if loc else key
    message = error["msg"]
    if "input" in error and kind not in ("model_type", "dict_type"):
        return f"{where}: {message} (got {error['input']!r})" if where else message
    return f"{where}: {message}" if where else message
