"""The JSON Schema of the spec language: generated from the models and shipped in sync, complete
(every field typed, bounded, defaulted and described), accepted by the real Taplo CLI on every
shipped and valid spec, and flagging typical mistakes at their line. Without the ``taplo``
binary (``pip install taplo``) the Taplo tests skip; jsonschema checks the same documents."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib
from hypothesis import example, given
from test_properties import Mutation, Network, Node, emit, examples, mutated, networks

from netspec.cli import main
from netspec.common.errors import NetspecError
from netspec.editor.schema import op_definition, schema_text, spec_schema
from netspec.lang.spec import parse_spec
from netspec.ops import REGISTRY
from netspec.plan.catalog import CATALOG_FILE, SCHEMA_FILE, catalog_text, shipped_architectures
from netspec.plan.compiler import compile_plan
from netspec.train.config import parse_train_config, train_table_problems

TAPLO = shutil.which("taplo")
needs_taplo = pytest.mark.skipif(TAPLO is None, reason="taplo is not installed "
                                 "(pip install taplo)")
SCHEMA_LINE = f"#:schema ./{SCHEMA_FILE.name}\n"
_LOCATION = re.compile(r"┌─ (.+?):(\d+):(\d+)")


def taplo(*files: Path) -> tuple[int, list[tuple[str, int]]]:
    """Taplo's exit code and (message, line) of each error it prints."""
    run = subprocess.run([TAPLO, "check", "--colors", "never", *map(str, files)],
                         capture_output=True, text=True, timeout=60)
    errors = []
    message = None
    for line in run.stderr.splitlines():
        if line.startswith("error: "):
            message = line.removeprefix("error: ")
        found = _LOCATION.search(line)
        if found and message is not None:
            errors.append((message, int(found.group(2))))
    return run.returncode, errors


def beside_schema(directory: Path, name: str, text: str) -> Path:
    shutil.copy(SCHEMA_FILE, directory / SCHEMA_FILE.name)
    path = directory / name
    path.write_text(SCHEMA_LINE + text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# generated, shipped, complete


def test_the_shipped_schema_is_the_generated_one():
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), (
        "the shipped schema is stale: run python tools/update_catalog.py")


def test_the_stored_listing_is_of_the_shipped_files():
    assert CATALOG_FILE.read_text(encoding="utf-8") == catalog_text(), (
        "netspec/catalog.json is stale: run python tools/update_catalog.py")


def test_every_op_and_field_is_described_with_its_type_default_and_bounds():
    schema = spec_schema()
    definitions = schema["definitions"]
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert definitions["op_node"]["properties"]["op"]["else"]["enum"] == sorted(REGISTRY)
    for name, op_class in REGISTRY.items():
        node = definitions[op_definition(name)]
        assert node["additionalProperties"] is False
        assert node["description"]
        assert node["properties"]["op"]["const"] == name
        for field, info in op_class.Params.model_fields.items():
            prop = node["properties"][field]
            assert prop.get("description"), (name, field)
            # every field but op and inputs may also be an expression ("= planes * 2")
            typed = prop if field in ("op", "inputs") else prop["else"]
            assert "type" in typed or "anyOf" in typed or "const" in typed, (name, field)
            if info.is_required():
                assert field in node["required"], (name, field)
            elif info.default is not None:
                assert prop["default"] == info.default, (name, field)
    for name, definition in definitions.items():
        for field, prop in definition.get("properties", {}).items():
            assert prop.get("description"), (name, field)
    conv = definitions[op_definition("conv2d")]["properties"]
    assert conv["out_channels"]["else"]["exclusiveMinimum"] == 0
    assert conv["kernel_size"]["else"]["anyOf"][1]["minItems"] == 2
    assert definitions["TrainConfig"]["properties"]["epochs"]["default"] == 10


def test_no_pydantic_2020_12_idioms_or_nulls_remain():
    text = schema_text()
    for idiom in ('"$defs"', '"prefixItems"', '"discriminator"', '"type": "null"'):
        assert idiom not in text


def test_the_schema_command_prints_and_writes_the_shipped_schema(capsys, tmp_path):
    assert main(["schema"]) == 0
    assert capsys.readouterr().out == SCHEMA_FILE.read_text(encoding="utf-8")
    target = tmp_path / "editor" / "netspec.schema.json"
    assert main(["schema", "-o", str(target)]) == 0
    assert "#:schema ./netspec.schema.json" in capsys.readouterr().out
    assert json.loads(target.read_text(encoding="utf-8")) == spec_schema()


@pytest.mark.parametrize("path", shipped_architectures(), ids=lambda p: p.stem)
def test_shipped_specs_name_the_schema_in_their_first_line(path):
    assert path.read_text(encoding="utf-8").startswith(SCHEMA_LINE)


# --------------------------------------------------------------------------------------------
# the schema agrees with netspec (Python's jsonschema, fast enough for property tests)

try:
    from jsonschema import Draft7Validator
except ImportError:  # pragma: no cover - jsonschema comes with the test extra
    Draft7Validator = None
needs_jsonschema = pytest.mark.skipif(Draft7Validator is None, reason="jsonschema is not "
                                      "installed (pip install jsonschema)")
VALIDATOR = Draft7Validator(spec_schema()) if Draft7Validator else None


@needs_jsonschema
@examples(60)
@given(networks())
def test_the_schema_accepts_every_valid_network(net):
    document = tomllib.loads(emit(net).text)
    assert not list(VALIDATOR.iter_errors(document))


@needs_jsonschema
@examples(150)
@given(mutated())
# found by the property: a [train] table with a field nobody knows, which the compiler alone
# does not read but every command rejects
@example(case=(Network(nodes=[Node(id="0", fields={"op": "input", "shape": [1, 1, 1]}, shape=None),
                              Node(id="0_", fields={"op": "relu"}, shape=None)],
                       extra_tables={"train": {"": False}}),
               [Mutation(kind="top_level")]))
def test_the_schema_never_rejects_a_spec_that_netspec_accepts(case):
    text = emit(case[0]).text
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    errors = list(VALIDATOR.iter_errors(document))
    try:
        spec = parse_spec(text, file="mutated.toml")
        compile_plan(spec)
    except NetspecError:
        return
    # as `netspec compile` judges a file: the network, then the [train] table beside it
    if train_table_problems(spec.train, file="mutated.toml", locate=spec.source.locate):
        return
    assert not errors, [e.message for e in errors]


# --------------------------------------------------------------------------------------------
# the real Taplo


@needs_taplo
def test_taplo_accepts_every_shipped_spec():
    code, errors = taplo(*shipped_architectures())
    assert code == 0 and not errors, errors


@needs_taplo
@examples(15)
@given(networks())
def test_taplo_accepts_valid_networks(net):
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = beside_schema(Path(directory), "valid.toml", emit(net).text)
        code, errors = taplo(path)
    assert code == 0 and not errors, errors


VALID = """\
[network]
name = "small"

[nodes.image]
op = "input"
shape = [1, 28, 28]

[nodes.conv1]
op = "conv2d"
out_channels = 8
kernel_size = [3, 3]
padding = 1

[nodes.pool]
op = "maxpool2d"
kernel_size = 2

[nodes.flat]
op = "flatten"

[nodes.drop]
op = "dropout"
p = 0.25

[nodes.fc]
op = "linear"
out_features = 10

[train]
epochs = 3

[train.optimizer]
type = "adam"
lr = 0.001

[train.schedule]
warmup_epochs = 1
"""

# (what is wrong, replace this, by this, the line Taplo must point at, words in its message)
MISTAKES = [
    ("unknown field", "padding = 1", "paddin = 1", 12, "paddin"),
    ("wrong type", "out_channels = 8", 'out_channels = "8"', 10, "integer"),
    ("unknown op", 'op = "flatten"', 'op = "flaten"', 19, "flaten"),
    ("out-of-range value", "p = 0.25", "p = 1.5", 23, "maximum"),
    ("value below its minimum", "out_features = 10", "out_features = 0", 27, "minimum"),
    ("missing required field", "kernel_size = 2\n", "\n", 15, "kernel_size"),
    ("wrong list length", "kernel_size = [3, 3]", "kernel_size = [3, 3, 3]", 11, ""),
    ("unknown top-level table", "[train]\nepochs = 3", "[trian]\nepochs = 3", 29, "trian"),
    ("unknown optimizer", 'type = "adam"', 'type = "adamm"', 33, "adamm"),
    ("field of another optimizer", "lr = 0.001", "momentum = 0.5", 34, "momentum"),
    ("wrong type in [train]", "epochs = 3", "epochs = 3.5", 30, "integer"),
    ("unknown [network] field", 'name = "small"', 'nmae = "small"', 2, "nmae"),
]


@needs_taplo
def test_taplo_accepts_the_valid_example(tmp_path):
    code, errors = taplo(beside_schema(tmp_path, "valid.toml", VALID))
    assert code == 0 and not errors, errors


@needs_taplo
@pytest.mark.parametrize("what, old, new, line, words", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_taplo_flags_each_typical_mistake_at_its_line(tmp_path, what, old, new, line, words):
    assert VALID.count(old) == 1
    text = VALID.replace(old, new)
    path = beside_schema(tmp_path, "bad.toml", text)
    code, errors = taplo(path)
    assert code != 0
    # the #:schema line shifts every line by one
    at_line = [message for message, where in errors if where == line + 1]
    assert at_line, (what, errors)
    assert any(words in message for message in at_line), (what, at_line)
    # and netspec itself rejects the same text (compile checks the network, train [train])
    with pytest.raises(NetspecError):
        spec = parse_spec(text, file="bad.toml")
        compile_plan(spec)
        parse_train_config(spec.train or {}, file="bad.toml", locate=spec.source.locate)


def test_mistake_table_lines_are_the_lines_of_the_changed_text():
    for what, old, new, line, _ in MISTAKES:
        text = VALID.replace(old, new)
        changed = new.strip().splitlines()[0] if new.strip() else None
        if changed is not None:
            assert text.splitlines()[line - 1] == changed, what


BLOCKS = """\
[vars]
width = 8
depth = 2

[blocks.unit]
args = ["planes"]
defaults = { stride = 1 }

[blocks.unit.nodes.conv]
op = "conv2d"
out_channels = "= planes"
kernel_size = [3, "= 1 + 2"]
stride = "= stride"
padding = 1

[blocks.unit.nodes.skip]
if = "= stride != 1"
op = "avgpool2d"
inputs = "x"
kernel_size = 1
stride = "= stride"

[nodes.image]
op = "input"
shape = [1, 8, 8]

[nodes.stage]
block = "unit"
repeat = "= depth"
planes = "= width * 2"
stride = "= 2 if index == 0 else 1"

[nodes.last]
block = "unit"
planes = 4

[blocks.extra]
defaults = { k = 1, m = "= k + channels(x)" }
let = { twice = "= k * 2" }

[blocks.extra.assert]
small = { check = "= k < 4", message = "k stays small" }

[blocks.extra.nodes.act]
op = "relu"
name = "act{twice}"

[nodes.more]
block = "extra"
repeat = 1
name = "more{index}"
"""

BLOCK_MISTAKES = [
    ("unknown block key", 'args = ["planes"]', 'arg = ["planes"]', 6, "arg"),
    ("unknown field in a block's node", "padding = 1", "paddin = 1", 14, "paddin"),
    ("wrong type in a block's node", "kernel_size = 1\n", "kernel_size = true\n", 20, ""),
    ("repeat below 0", 'repeat = "= depth"', "repeat = -1", 29, "minimum"),
    ("condition not a bool", 'if = "= stride != 1"', 'if = "stride"', 17, "boolean"),
    ("variable that is not a name", "depth = 2", '"two words" = 2', 3, "two words"),
    ("assertion without its message", 'small = { check = "= k < 4", message = "k stays small" }',
     'small = { check = "= k < 4" }', 42, "message"),
    ("local value that is not a name", 'let = { twice = "= k * 2" }',
     'let = { "two words" = "= k * 2" }', 39, "two words"),
    ("name that is not a string", 'name = "act{twice}"', "name = 3", 46, "string"),
]


@needs_taplo
def test_taplo_accepts_blocks_variables_and_expressions(tmp_path):
    spec = compile_plan(parse_spec(BLOCKS, file="blocks.toml"))
    assert spec.total_params > 0
    code, errors = taplo(beside_schema(tmp_path, "blocks.toml", BLOCKS))
    assert code == 0 and not errors, errors


@needs_taplo
@pytest.mark.parametrize("what, old, new, line, words", BLOCK_MISTAKES,
                         ids=[m[0] for m in BLOCK_MISTAKES])
def test_taplo_flags_block_mistakes_at_their_line(tmp_path, what, old, new, line, words):
    assert BLOCKS.count(old) == 1
    text = BLOCKS.replace(old, new)
    assert text.splitlines()[line - 1].startswith(new.strip().split(" ")[0])
    code, errors = taplo(beside_schema(tmp_path, "bad.toml", text))
    assert code != 0
    at_line = [message for message, where in errors if where == line + 1]
    assert at_line, (what, errors)
    assert any(words in message for message in at_line), (what, at_line)
    with pytest.raises(NetspecError):
        compile_plan(parse_spec(text, file="bad.toml"))
