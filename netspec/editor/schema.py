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

from netspec.common.atomic import atomic_write_text
from netspec.data.choice import DataConfig
from netspec.lang.shipped import SCHEMA_FILE
from netspec.lang.spec import TOP_LEVEL_TABLES, NetworkInfo
from netspec.ops import REGISTRY
from netspec.train.config import TrainConfig

DRAFT = "http://json-schema.org/draft-07/schema#"
REF_PREFIX = "#/definitions/"
EXPRESSION = {
    "type": "string",
    # netspec.lang.expressions.is_expression: "=" starts an expression, "==" a literal "="
    "pattern": "^=([^=]|$)",
    "description": "An expression over [vars], a block's arguments, local values (let), "
                   "index and the shapes of earlier nodes (shape, channels, height, width): a "
                   "string starting with '=', e.g. \"= planes * 2\" or \"= channels(x) // "
                   "2\".",
}
IDENTIFIER = "^[A-Za-z_][A-Za-z0-9_]*$"


def op_definition(name: str) -> str:
    return f"op.{name}"


def spec_schema() -> dict[str, Any]:
    """The JSON Schema (draft 07) of a whole spec file."""
    ops = sorted(REGISTRY)
    models: list[type[BaseModel]] = [REGISTRY[name].Params for name in ops]
    models += [NetworkInfo, TrainConfig, DataConfig]
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
        node.setdefault("required", [])
        if "op" not in node["required"]:
            node["required"].insert(0, "op")
        node["properties"] = {
            key: (prop if key in ("op", "inputs") else _or_expression(_draft07(prop)))
            for key, prop in node["properties"].items()}
        node["properties"]["op"] = {"const": name, "description": f"op = \"{name}\": "
                                                               f"{node['description']}"}
        node["properties"]["if"] = CONDITION
        node["properties"]["name"] = NAME
    definitions["expression"] = EXPRESSION
    definitions["assertions"] = ASSERTIONS
    definitions["op_node"] = _node_union(ops)
    definitions["instance"] = INSTANCE
    definitions["node"] = {
        "type": "object",
        "description": "A node: an op and its fields, or an instance of a block (block = ...).",
        "if": {"required": ["block"]},
        "then": {"$ref": REF_PREFIX + "instance"},
        "else": {"$ref": REF_PREFIX + "op_node"},
    }
    definitions["block"] = BLOCK
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
                       "blocks and variables that nodes use, and the training recipe in "
                       "[train].",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "include": {
                "description": "Files of blocks, relative to this file and inside its "
                               "directory, e.g. include = [\"blocks/resnet.toml\"].",
                "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
            },
            "vars": {
                "type": "object",
                "description": "Variables nodes and blocks use in expressions (\"= depth * "
                               "2\"); a value may be an expression over earlier ones and "
                               "--set NAME=VALUE overrides it.",
                "propertyNames": {"pattern": IDENTIFIER},
                "additionalProperties": {
                    "type": ["boolean", "integer", "number", "string", "array"]},
            },
            "assert": {"$ref": REF_PREFIX + "assertions",
                       "description": "Conditions on the variables, each with its message: "
                                      "name = { check = \"= ...\", message = \"...\" }."},
            "blocks": {
                "type": "object",
                "description": "Reusable groups of nodes with arguments, used by nodes with "
                               "block = \"name\".",
                "additionalProperties": {"$ref": REF_PREFIX + "block"},
            },
            "data": {"$ref": REF_PREFIX + "DataConfig",
                     "description": "The data a training run reads (default MNIST)."},
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
        # no "required": a file of blocks (an include) has no [nodes]
        "definitions": dict(sorted(definitions.items())),
    }
    missing = set(TOP_LEVEL_TABLES) - set(schema["properties"])
    if missing:
        raise RuntimeError(f"the schema does not describe [{', '.join(sorted(missing))}]")
    return _draft07(schema)


NAME = {
    "type": "string",
    "description": "The id this node or instance gets instead of its key: a pattern whose "
                   "{...} parts are expressions (name = \"denselayer{index + 1}\") or an "
                   "expression; an instance named \"\" adds no level to its nodes' names.",
}
ASSERTIONS = {
    "type": "object",
    "description": "Assertions: name = { check = \"= condition\", message = \"what it "
                   "means\" }; a false condition is an error at its line with its message.",
    "propertyNames": {"pattern": IDENTIFIER},
    "additionalProperties": {
        "type": "object",
        "required": ["check", "message"],
        "additionalProperties": False,
        "properties": {
            "check": {"$ref": REF_PREFIX + "expression",
                      "description": "A condition that must hold, e.g. \"= layers <= 24\"."},
            "message": {"type": "string",
                        "description": "What the condition means, said when it fails."},
        },
    },
}
CONDITION = {
    "description": "A condition: the node exists only where it holds, e.g. "
                   "if = \"= stride != 1\".",
    "if": {"$ref": REF_PREFIX + "expression"},
    "then": {},
    "else": {"type": "boolean"},
}
INSTANCE = {
    "type": "object",
    "description": "An instance of a block: block = \"name\" and the block's arguments as "
                   "fields; its nodes are named <id>.<node> (with repeat: <id>.<index>.<node>).",
    "required": ["block"],
    "properties": {
        "block": {"type": "string", "description": "The block this node instantiates."},
        "repeat": {
            "description": "Chain this many instances, output to input; each sees index "
                           "(0-based). 0 makes none: the next node reads the repeat's input.",
            "if": {"$ref": REF_PREFIX + "expression"},
            "then": {},
            "else": {"type": "integer", "minimum": 0},
        },
        "name": NAME,
        "inputs": {"description": "The node(s) feeding the block's input(s); omitted means "
                                  "the node defined just before.",
                   "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "if": CONDITION,
    },
    "additionalProperties": {
        "description": "An argument of the block (a value or an expression)."},
}
BLOCK = {
    "type": "object",
    "description": "A block: nodes written like top-level nodes, whose fields may be "
                   "expressions over the block's arguments.",
    "additionalProperties": False,
    "properties": {
        "description": {"type": "string", "description": "One line about the block."},
        "args": {"type": "array", "items": {"type": "string", "pattern": IDENTIFIER},
                 "description": "Required arguments, e.g. args = [\"planes\"]."},
        "defaults": {"type": "object", "propertyNames": {"pattern": IDENTIFIER},
                     "description": "Optional arguments with their defaults, e.g. "
                                    "defaults = { stride = 1 }; a default may use the "
                                    "arguments given and the defaults before it."},
        "let": {"type": "object", "propertyNames": {"pattern": IDENTIFIER},
                "description": "Local values computed once per instance, in order, from the "
                               "arguments, index, shapes and earlier local values, e.g. "
                               "let = { project = \"= stride != 1\" }."},
        "assert": {"$ref": REF_PREFIX + "assertions",
                   "description": "Conditions each instance must meet, with their messages."},
        "inputs": {"description": "Names of the block's entries, which its nodes read "
                                  "(default [\"x\"]).",
                   "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "output": {"type": "string",
                   "description": "The node whose output is the block's (default the last)."},
        "nodes": {"type": "object", "description": "The block's nodes, in order.",
                  "additionalProperties": {"$ref": REF_PREFIX + "node"}},
    },
}


def _or_expression(schema: dict[str, Any]) -> dict[str, Any]:
    """A field's schema that also accepts an expression, as every node field does (and every
    item of a list). The value is checked against the field's own schema unless it is an
    expression, so that a validator's message stays the field's ("not of type integer")."""
    inner = dict(schema)
    shown = {key: inner.pop(key) for key in ("description", "default") if key in inner}
    return {**shown, "if": {"$ref": REF_PREFIX + "expression"}, "then": {},
            "else": _items_or_expression(inner)}


def _items_or_expression(schema: dict[str, Any]) -> dict[str, Any]:
    schema = dict(schema)
    if isinstance(schema.get("items"), dict) and schema["items"]:
        schema["items"] = _or_expression(schema["items"])
    elif isinstance(schema.get("items"), list):
        schema["items"] = [_or_expression(item) for item in schema["items"]]
    if "anyOf" in schema:
        schema["anyOf"] = [_items_or_expression(member) for member in schema["anyOf"]]
    return schema


def _op_description(name: str) -> str:
    op_class = REGISTRY[name]
    doc = (op_class.__doc__ or op_class.Params.__doc__ or name).strip()
    return " ".join(doc.split("\n\n")[0].split())


def _node_union(ops: list[str]) -> dict[str, Any]:
    """One node table: ``op`` picks the member that checks the rest of the table."""
    return {
        "type": "object",
        "description": "A node: its op and that op's fields.",
        "required": ["op"],
        "properties": {"op": {"description": "What the node computes.",
                              "if": {"$ref": REF_PREFIX + "expression"}, "then": {},
                              "else": {"type": "string", "enum": ops}}},
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
