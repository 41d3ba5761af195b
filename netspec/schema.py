"""The JSON Schema of the spec language, generated from the pydantic models.

Editors validate and complete TOML against a JSON Schema named in a ``#:schema`` line (Taplo,
behind Even Better TOML in VS Code and the TOML support of other editors). The schema is
written in draft 07, which Taplo implements: pydantic's draft 2020-12 output is translated
(``$defs`` -> ``definitions``, ``prefixItems`` -> ``items``), and its discriminated unions
become ``if``/``then`` pairs keyed on ``op`` or ``type``, so that a validator reports the
mistake inside the chosen member (an unknown field, a wrong type) and not "matches none of 7
alternatives". TOML has no null, so pydantic's ``None`` alternatives are dropped: an optional
field is written or left out.

The generated file ships in the package (``SCHEMA_FILE``) so that ``netspec schema`` needs
neither pydantic nor the ops; ``python tools/update_catalog.py`` rewrites it and a test fails
while it differs from what this module generates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from netspec.atomic import atomic_write_text
from netspec.catalog import SCHEMA_FILE
from netspec.ops import REGISTRY
from netspec.spec import TOP_LEVEL_TABLES, NetworkInfo
from netspec.train.config import TrainConfig

DRAFT = "http://json-schema.org/draft-07/schema#"
REF_PREFIX = "#/definitions/"
EXPRESSION = {
    "type": "string",
    "pattern": r"^\s*=",
    "description": "An expression: a string starting with '=', e.g. \"= planes * 2\".",
}


def op_definition(name: str) -> str:
    return f"op.{name}"


def spec_schema() -> dict[str, Any]:
    """The JSON Schema (draft 07) of a whole spec file."""
    ops = sorted(REGISTRY)
    models: list[type[BaseModel]] = [REGISTRY[name].Params for name in ops]
    models += [NetworkInfo, TrainConfig]
    _, generated = models_json_schema([(model, "validation") for model in models],
                                      ref_template=REF_PREFIX + "{model}")
    definitions: dict[str, Any] = generated.get("$defs", {})
    # pydantic names definitions after the classes; a node's definition is named after its op
    renamed = {REGISTRY[name].Params.__name__: op_definition(name) for name in ops}
    definitions = {renamed.get(key, key): value for key, value in definitions.items()}
    definitions = _rename_refs(definitions, renamed)
    for name in ops:
        node = definitions[op_definition(name)]
        node["description"] = _op_description(name)
        node["properties"]["op"]["description"] = f"op = \"{name}\": {node['description']}"
        node.setdefault("required", [])
        if "op" not in node["required"]:
            node["required"].insert(0, "op")
    definitions["node"] = _node_union(ops)
    definitions["TrainConfig"] = _with_default_members(definitions["TrainConfig"], TrainConfig)
    for definition in definitions.values():
        tag = definition.get("properties", {}).get("type", {})
        if "const" in tag:
            tag.setdefault("description", f"type = \"{tag['const']}\": "
                                          f"{definition.get('description', '')}".strip())
    schema = {
        "$schema": DRAFT,
        "title": "netspec architecture",
        "description": "A neural network as TOML: [network], one [nodes.ID] table per node, "
                       "and the training recipe in [train].",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "network": {"$ref": REF_PREFIX + "NetworkInfo",
                        "description": "The network's name, description and output node."},
            "nodes": {
                "type": "object",
                "description": "One table per node, in the order the network reads best; a "
                               "node's inputs default to the node before it.",
                "minProperties": 1,
                "additionalProperties": {"$ref": REF_PREFIX + "node"},
            },
            "train": {"$ref": REF_PREFIX + "TrainConfig",
                      "description": "The training recipe: epochs, batch size, optimizer, "
                                     "schedule, augmentation."},
        },
        "required": ["nodes"],
        "definitions": dict(sorted(definitions.items())),
    }
    missing = set(TOP_LEVEL_TABLES) - set(schema["properties"])
    if missing:
        raise RuntimeError(f"the schema does not describe [{', '.join(sorted(missing))}]")
    return _draft07(schema)


def _op_description(name: str) -> str:
    op_class = REGISTRY[name]
    doc = (op_class.__doc__ or op_class.Params.__doc__ or name).strip()
    return doc.split("\n\n")[0].replace("\n", " ")


def _node_union(ops: list[str]) -> dict[str, Any]:
    """One node table: ``op`` picks the member that checks the rest of the table."""
    return {
        "type": "object",
        "description": "A node: its op and that op's fields.",
        "required": ["op"],
        "properties": {"op": {"type": "string", "enum": ops,
                              "description": "What the node computes."}},
        "allOf": [{"if": {"properties": {"op": {"const": name}}, "required": ["op"]},
                   "then": {"$ref": REF_PREFIX + op_definition(name)}} for name in ops],
    }


def _with_default_members(table: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """Discriminated sub-tables of [train] (optimizer, schedule) whose ``type`` may be left out:
    the model then reads the field's default kind."""
    table = json.loads(json.dumps(table))
    for field, info in model.model_fields.items():
        prop = table["properties"].get(field, {})
        if "discriminator" not in prop or info.default_factory is None:
            continue
        tag = prop["discriminator"]["propertyName"]
        default = getattr(info.default_factory(), tag)
        mapping = prop["discriminator"]["mapping"]
        branches = [{"if": {"properties": {tag: {"const": value}}, "required": [tag]},
                     "then": {"$ref": ref}} for value, ref in sorted(mapping.items())]
        branches.append({"if": {"not": {"required": [tag]}}, "then": {"$ref": mapping[default]}})
        table["properties"][field] = {
            "type": "object",
            "description": prop.get("description", f"The {field}; type = one of "
                                                   f"{', '.join(sorted(mapping))} "
                                                   f"(default {default})."),
            "properties": {tag: {"type": "string", "enum": sorted(mapping),
                                 "default": default}},
            "allOf": branches,
        }
    return table


def _rename_refs(value: Any, renamed: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str) and item.startswith(REF_PREFIX):
                name = item.removeprefix(REF_PREFIX)
                out[key] = REF_PREFIX + renamed.get(name, name)
            else:
                out[key] = _rename_refs(item, renamed)
        return out
    if isinstance(value, list):
        return [_rename_refs(item, renamed) for item in value]
    return value


def _draft07(value: Any) -> Any:
    """pydantic's draft 2020-12 idioms in draft 07, without null (TOML has none)."""
    if isinstance(value, list):
        return [_draft07(item) for item in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        if key in ("properties", "definitions"):  # maps of names, not keywords
            out[key] = {name: _draft07(member) for name, member in item.items()}
        elif key not in ("title", "discriminator"):
            out[key] = _draft07(item)
    if "prefixItems" in out:
        out["items"] = out.pop("prefixItems")
    for key in ("anyOf", "oneOf"):
        if key in out:
            members = [m for m in out[key] if m != {"type": "null"}]
            if len(members) == 1:
                del out[key]
                out = {**members[0], **out}
            else:
                out[key] = members
    if out.get("default", 0) is None:
        del out["default"]
    return out


def schema_text() -> str:
    """The schema as ``netspec schema`` writes it."""
    return json.dumps(spec_schema(), indent=2, ensure_ascii=False) + "\n"


def write_schema(path: Path = SCHEMA_FILE) -> None:
    atomic_write_text(path, schema_text())
