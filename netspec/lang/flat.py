"""A spec as flat TOML: every block instance written out as the nodes it makes.

``netspec expand`` prints it; it compiles to the same plan as the spec it came from (same node
ids, order, fields and parameter keys), which is how a user sees exactly what the blocks made.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from netspec.common.errors import NetspecError
from netspec.lang.spec import Spec

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def flat_toml(spec: Spec) -> str:
    """The TOML text of ``spec`` with blocks, variables and includes expanded away."""
    lines = [f"# {spec.name}, expanded from {spec.file}: every block instance written out",
             "[network]", f"name = {toml_value(spec.name)}"]
    if spec.description:
        lines.append(f"description = {toml_value(spec.description)}")
    if spec.output is not None:
        lines.append(f"output = {toml_value(spec.output)}")
    previous: str | None = None
    for node_id, params in spec.nodes.items():
        fields = {name: getattr(params, name) for name in params.model_fields_set}
        fields["op"] = params.op
        inputs = spec.inputs[node_id]
        # an implicit input reads the node before it in this flat order, nothing else
        if inputs == ((previous,) if previous is not None else ()):
            fields.pop("inputs", None)
        else:
            fields["inputs"] = inputs[0] if len(inputs) == 1 else list(inputs)
        lines += ["", f"[nodes.{_key(node_id)}]"]
        lines += [f"{_key(name)} = {toml_value(fields[name])}" for name in _ordered(fields)]
        previous = node_id
    for table, content in (("train", spec.train), ("data", spec.data)):
        if content:
            lines += _table((table,), content)
    return "\n".join(lines) + "\n"


def _ordered(fields: Mapping[str, Any]) -> list[str]:
    first = [name for name in ("op", "inputs") if name in fields]
    return first + sorted(name for name in fields if name not in first)


def _table(path: tuple[str, ...], content: Mapping[str, Any]) -> list[str]:
    lines = ["", f"[{'.'.join(_key(part) for part in path)}]"]
    tables = {}
    for name, value in content.items():
        if isinstance(value, Mapping):
            tables[name] = value
        else:
            lines.append(f"{_key(name)} = {toml_value(value)}")
    for name, value in tables.items():
        lines += _table((*path, name), value)
    return lines


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name)


def toml_value(value: Any) -> str:
    """A value as TOML text (strings with JSON's escapes, which TOML shares)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NetspecError(f"cannot write {value} as a spec value")
        return repr(value)
    if isinstance(value, str):
        # JSON's escapes (\n, \", \u0000) are TOML's basic-string escapes
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise NetspecError(f"cannot write a {type(value).__name__} as a spec value")
