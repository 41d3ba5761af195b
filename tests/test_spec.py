"""The spec language: loader defaults, the source map's line numbers, and every loader error,
checked as the exact ``file:line: node 'id' (op): message`` a user reads."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netspec.common.errors import NetspecError, SpecError
from netspec.lang.spec import (
    SourceMap,
    check_spec,
    load_spec,
    parse_spec,
    resolve_spec_path,
    shipped_architectures,
)
from netspec.ops import REGISTRY

# every registered op, as the messages list them: other issues add ops too
KNOWN_OPS = ", ".join(sorted(REGISTRY))

CHAIN = """\
[nodes.image]
op = "input"
shape = [1, 28, 28]

[nodes.flat]
op = "flatten"

[nodes.fc]
op = "linear"
out_features = 10
"""


def problems(text: str) -> list[str]:
    """Every loader diagnostic for ``text``, as printed, in file ``net.toml``."""
    with pytest.raises(SpecError) as caught:
        parse_spec(text, file="net.toml")
    return [str(d) for d in caught.value.diagnostics]


# ---------------------------------------------------------------------------- loader defaults


def test_omitted_inputs_mean_the_node_before():
    spec = parse_spec(CHAIN, file="chain.toml")
    assert list(spec.nodes) == ["image", "flat", "fc"]
    assert spec.inputs == {"image": (), "flat": ("image",), "fc": ("flat",)}


@pytest.mark.parametrize(("declared", "expected"), [
    ('inputs = "image"', ("image",)),
    ('inputs = ["image"]', ("image",)),
    ('inputs = ["a", "b"]', ("a", "b")),
    ('inputs = [\n    "b",  # comment\n    "a",\n]', ("b", "a")),
])
def test_inputs_as_string_or_list(declared, expected):
    text = f"""\
[nodes.image]
op = "input"
shape = [4]
[nodes.a]
op = "relu"
inputs = "image"
[nodes.b]
op = "relu"
inputs = "image"
[nodes.x]
op = "concat"
{declared}
"""
    if len(expected) == 1:
        text = text.replace('op = "concat"', 'op = "relu"')
    assert parse_spec(text).inputs["x"] == expected


def test_network_table_is_optional():
    spec = parse_spec(CHAIN, file="some/dir/my_net.toml")
    assert spec.name == "my_net"
    assert spec.description == ""
    assert spec.output is None
    assert spec.train is None


def test_network_table_sets_name_description_and_output():
    text = """\
[network]
name = "tiny"
description = '''
Two lines
of description.'''
output = "flat"

""" + CHAIN
    spec = parse_spec(text, file="ignored.toml")
    assert spec.name == "tiny"
    assert spec.description == "Two lines\nof description."
    assert spec.output == "flat"


def test_train_table_is_kept_and_is_not_a_node():
    spec = parse_spec(CHAIN + '\n[train]\nepochs = 2\n[train.optimizer]\ntype = "sgd"\n')
    assert spec.train == {"epochs": 2, "optimizer": {"type": "sgd"}}
    assert "train" not in spec.nodes and "optimizer" not in spec.nodes


def test_load_spec_names_the_file_as_given(tmp_path, monkeypatch):
    (tmp_path / "small_net.toml").write_text(CHAIN, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    spec = load_spec("small_net.toml")
    assert (spec.name, spec.file, spec.directory) == ("small_net", "small_net.toml", tmp_path)


def test_bare_name_resolves_to_a_shipped_architecture(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_spec_path("lenet5") in shipped_architectures()
    spec = load_spec("lenet5")
    # named by its installed path, so that its errors say where the shipped file is
    assert (spec.name, spec.file) == ("lenet5", str(resolve_spec_path("lenet5")))


def test_a_local_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    (tmp_path / "lenet5").write_text(CHAIN, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert list(load_spec("lenet5").nodes) == ["image", "flat", "fc"]


def test_a_run_directory_named_like_a_shipped_spec_does_not_hide_it(tmp_path, monkeypatch):
    # netspec train lenet5 --out lenet5, then any command naming lenet5 from that directory
    (tmp_path / "lenet5").mkdir()
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_spec_path("lenet5") in shipped_architectures()
    with pytest.raises(NetspecError, match="^runs: a directory, not a spec file$"):
        load_spec("runs")
    with pytest.raises(NetspecError, match="a directory, not a spec file$"):
        load_spec(str(tmp_path / "runs"))


SHIPPED = ", ".join(path.stem for path in shipped_architectures())


@pytest.mark.parametrize(("name", "expected"), [
    ("lenet", "lenet: no such file and no shipped architecture of that name; did you mean "
              f"'lenet5'? (shipped: {SHIPPED})"),
    ("nothing_alike", "nothing_alike: no such file and no shipped architecture of that name "
                      f"(shipped: {SHIPPED})"),
    ("missing.toml", "missing.toml: no such file"),
    ("sub/lenet5", "sub/lenet5: no such file"),
])
def test_unknown_names_and_paths(tmp_path, monkeypatch, name, expected):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NetspecError) as caught:
        load_spec(name)
    assert str(caught.value) == expected


def test_unreadable_spec_is_an_error(tmp_path):
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(NetspecError, match="cannot read the spec"):
        load_spec(path)


# ---------------------------------------------------------------------------- source map

MAP_TEXT = """\
# a comment with [brackets] and key = value
[network]
name = "demo"  # trailing = comment
description = \"\"\"
[nodes.fake]
op = "not a key"
\"\"\"

[nodes.image]
op = "input"
shape = [
    1,  # [not a header]
    28,
    28
]

[ nodes . "conv.1" ]
"kernel_size" = 3
'literal key' = 1
weight = [
  [0.1, 0.2],
  [0.3, 0.4]
]
after_array = 2
text = "a = [b] # c"
literal = 'x = 1'

[nodes]
dotted.op = "relu"
inline = { op = "relu", inputs = [
] }
[nodes.after]
op = '''
multi
line'''
key = \"\"\"with \\\"\"\" escaped quotes
[nodes.inside]\"\"\"
last = 1
"""


@pytest.mark.parametrize(("path", "line"), [
    (("network",), 2),
    (("network", "name"), 3),
    (("network", "description"), 4),
    (("nodes",), 9),
    (("nodes", "image"), 9),
    (("nodes", "image", "op"), 10),
    (("nodes", "image", "shape"), 11),
    (("nodes", "conv.1"), 17),
    (("nodes", "conv.1", "kernel_size"), 18),
    (("nodes", "conv.1", "literal key"), 19),
    (("nodes", "conv.1", "weight"), 20),
    (("nodes", "conv.1", "after_array"), 24),
    (("nodes", "conv.1", "text"), 25),
    (("nodes", "conv.1", "literal"), 26),
    (("nodes", "dotted"), 29),
    (("nodes", "dotted", "op"), 29),
    (("nodes", "inline"), 30),
    (("nodes", "inline", "op"), 30),  # keys inside an inline table fall back to its line
    (("nodes", "after"), 32),
    (("nodes", "after", "op"), 33),
    (("nodes", "after", "key"), 36),
    (("nodes", "after", "last"), 38),
    (("nodes", "after", "never_written"), 32),
    (("nodes", "unknown"), 9),
    (("elsewhere",), None),
])
def test_source_map_locates_keys_and_tables(path, line):
    assert SourceMap.scan(MAP_TEXT).locate(path) == line


def test_source_map_ignores_what_looks_like_structure_inside_values():
    source = SourceMap.scan(MAP_TEXT)
    assert ("nodes", "fake") not in source.tables
    assert ("nodes", "inside") not in source.tables
    assert not any(path[-1] in ("0.3, 0.4", "a", "x") for path in source.keys)
    assert source.duplicate_tables == []


def test_the_map_text_is_valid_toml():
    import tomllib

    document = tomllib.loads(MAP_TEXT)
    assert document["nodes"]["after"]["key"] == 'with """ escaped quotes\n[nodes.inside]'
    assert document["nodes"]["conv.1"]["kernel_size"] == 3


def test_windows_line_endings_keep_line_numbers():
    text = CHAIN.replace("out_features = 10", "out_features = 0").replace("\n", "\r\n")
    assert problems(text) == [
        "net.toml:10: node 'fc' (linear): out_features must be greater than 0, got 0"]


def test_source_map_records_duplicates_but_not_super_tables_defined_later():
    text = "[nodes.a]\nop = 1\n[nodes]\n[nodes.b]\n[nodes.a]\n[[runs]]\n[[runs]]\n"
    assert SourceMap.scan(text).duplicate_tables == [(("nodes", "a"), 5, 1)]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet='[]{}"\'#=.,\n ab1\\', max_size=80))
def test_source_map_never_raises_and_lines_stay_in_the_text(text):
    source = SourceMap.scan(text)
    lines = text.count("\n") + 1
    assert all(1 <= line <= lines for line in [*source.keys.values(), *source.tables.values()])


# ---------------------------------------------------------------------------- loader errors

NODE_ERRORS = [
    pytest.param(
        '[nodes.image]\nop = "input"\nshape = [1, 8, 8]\n[nodes.c]\nop = "conv2d"\n'
        'out_channels = 4\nkernal_size = 3\n',
        ["net.toml:7: node 'c' (conv2d): unknown field 'kernal_size'; did you mean "
         "'kernel_size'?"],
        id="typo-field-only-reported-once"),
    pytest.param(
        '[nodes.image]\nop = "input"\nshape = [1, 8, 8]\n[nodes.c]\nop = "conv2d"\n'
        'out_channels = 4\nkernel_size = 3\ncolour = "red"\n',
        ["net.toml:8: node 'c' (conv2d): unknown field 'colour' (valid fields: inputs, init, "
         "init_scale, weight, weight_file, bias_init, trainable, out_channels, kernel_size, "
         "stride, padding, bias, groups, dilation)"],
        id="unknown-field-lists-valid-ones"),
    pytest.param(
        '[nodes.image]\nop = "input"\nshape = [1, 8, 8]\n\n[nodes.c]\nop = "conv2d"\n'
        'out_channels = 4\n',
        ["net.toml:5: node 'c' (conv2d): missing required field 'kernel_size'; add "
         "kernel_size = ... to the node"],
        id="missing-field-at-header"),
    pytest.param(
        '[nodes.image]\nop = "input"\nshape = [4]\n[nodes.r]\nop = "relux"\n',
        ["net.toml:5: node 'r': unknown op 'relux'; did you mean 'relu'? (known ops: "
         + KNOWN_OPS + ")"],
        id="unknown-op"),
    pytest.param(
        '[nodes.image]\nop = "input"\nshape = [4]\n[nodes.r]\nop = ["relu"]\n',
        ["net.toml:5: node 'r': op must be a string such as \"conv2d\", got [\"relu\"]"],
        id="op-not-a-string"),
    pytest.param(
        '[nodes.image]\nshape = [4]\n',
        ["net.toml:1: node 'image': missing 'op'; add op = \"...\" (one of: " + KNOWN_OPS + ")"],
        id="missing-op"),
    pytest.param(
        '[nodes]\nimage = 5\n',
        ["net.toml:2: node 'image': must be a table like [nodes.image] with an op"],
        id="node-not-a-table"),
    pytest.param(
        '[nodes.image]\nop = "input"\nshape = [4]\n[nodes.fc]\nop = "linear"\n'
        'out_features = "10"\n',
        ['net.toml:6: node \'fc\' (linear): out_features must be a valid integer, got "10"'],
        id="wrong-type-is-not-coerced"),
    pytest.param(
        '[nodes.image]\nop = "input"\nshape = [4]\n[nodes.fc]\nop = "linear"\n'
        'out_features = 0\nbias = 1\n',
        ["net.toml:6: node 'fc' (linear): out_features must be greater than 0, got 0",
         "net.toml:7: node 'fc' (linear): bias must be a valid boolean, got 1"],
        id="out-of-range-and-wrong-type"),
    pytest.param(
        '[nodes.image]\nop = "input"\nshape = [1, 0, 28.0]\n',
        ["net.toml:3: node 'image' (input): shape[1] must be greater than 0, got 0",
         "net.toml:3: node 'image' (input): shape[2] must be a valid integer, got 28.0"],
        id="list-items-named-by-index"),
    pytest.param(
        '[nodes.image]\nop = "input"\nshape = [1, 8, 8]\n[nodes.c]\nop = "conv2d"\n'
        'out_channels = 4\nkernel_size = "3"\nstride = [2]\npadding = -1\n',
        ['net.toml:7: node \'c\' (conv2d): kernel_size must be a valid integer or a valid '
         'list, got "3"',
         "net.toml:8: node 'c' (conv2d): stride must have at least 2 item(s), got [2]",
         "net.toml:9: node 'c' (conv2d): padding must be greater than or equal to 0, got -1"],
        id="int-or-pair-fields"),
    pytest.param(
        '[nodes.image]\nop = "input"\nshape = [1, 8, 8]\n[nodes.c]\nop = "conv2d"\n'
        'out_channels = 4\nkernel_size = 3\nstride = [1, 0]\n',
        ["net.toml:8: node 'c' (conv2d): stride[1] must be greater than 0, got 0"],
        id="bad-item-of-a-pair"),
    pytest.param(
        '[nodes.image]\nop = "input"\nshape = [1, 8, 8]\n[nodes.c]\nop = "conv2d"\n'
        'out_channels = 4\nkernel_size = [3, 0.5]\ninputs = ["image", 5]\n',
        ["net.toml:7: node 'c' (conv2d): kernel_size[1] must be a valid integer, got 0.5",
         "net.toml:8: node 'c' (conv2d): inputs[1] must be a valid string, got 5"],
        id="bad-item-inside-a-union-member"),
    pytest.param(
        '[nodes.image]\nop = "input"\nshape = [1, 8, 8]\n[nodes.c]\nop = "conv2d"\n'
        'out_channels = 4\nkernel_size = 3\ninit = "he_norml"\n',
        ["net.toml:8: node 'c' (conv2d): init must be 'he_normal', 'he_uniform', "
         "'glorot_normal', 'glorot_uniform', 'lecun_normal', 'normal', 'uniform' or 'zeros', "
         "got \"he_norml\"; did you mean 'he_normal'?"],
        id="choice-with-suggestion"),
    pytest.param(
        '[nodes.image]\nop = "input"\nshape = [4]\n[nodes.d]\nop = "dropout"\np = 1.5\n',
        ["net.toml:6: node 'd' (dropout): p must be less than 1, got 1.5"],
        id="float-bound"),
    pytest.param(
        '[nodes.image]\nop = "input"\nshape = [1, 8, 8]\n[nodes.pool]\nop = "maxpool2d"\n'
        'kernel_size = 2\npadding = 2\n',
        ["net.toml:4: node 'pool' (maxpool2d): padding [2, 2] must be at most half the "
         "kernel size [2, 2]"],
        id="cross-field-rule-at-header"),
    pytest.param(
        '[nodes.image]\nop = "input"\nshape = [4]\n[nodes.fc]\nop = "linear"\n'
        'inputs = "imag"\nout_features = 3\n',
        ["net.toml:6: node 'fc' (linear): input 'imag' names no node; did you mean 'image'?"],
        id="input-names-no-node"),
    pytest.param(
        '[nodes.image]\nop = "input"\nshape = [4]\n[nodes.a]\nop = "relu"\n[nodes.b]\n'
        'op = "relu"\n[nodes.sum]\nop = "add"\ninputs = [\n    "a",\n    "bb",\n    "zzz",\n]\n',
        ["net.toml:10: node 'sum' (add): input 'bb' names no node; did you mean 'b'?",
         "net.toml:10: node 'sum' (add): input 'zzz' names no node"],
        id="inputs-in-a-multiline-list"),
    pytest.param(
        '[nodes.image]\nop = "input"\nshape = [4]\n[nodes.r]\nop = "relux"\ninputs = "imge"\n',
        ["net.toml:5: node 'r': unknown op 'relux'; did you mean 'relu'? (known ops: "
         + KNOWN_OPS + ")",
         "net.toml:6: node 'r': input 'imge' names no node; did you mean 'image'?"],
        id="references-checked-on-invalid-nodes-too"),
    pytest.param(
        '[nodes.image]\nop = "input"\nshape = [4]\ninputs = "image"\n',
        ["net.toml:4: node 'image' (input): an input node takes no inputs; remove 'inputs'"],
        id="input-with-inputs"),
    pytest.param(
        '[nodes.image]\nop = "input"\nshape = [4]\n[nodes.r]\nop = "relu"\n'
        'inputs = ["image", "image"]\n',
        ["net.toml:6: node 'r' (relu): takes exactly one input, got 2; join them first with "
         "an add or concat node"],
        id="too-many-inputs"),
    pytest.param(
        '[nodes.image]\nop = "input"\nshape = [4]\n[nodes.r]\nop = "relu"\ninputs = []\n',
        ["net.toml:6: node 'r' (relu): inputs is empty; name the input node(s), e.g. "
         "inputs = \"a\""],
        id="empty-inputs"),
    pytest.param(
        '[nodes.image]\nop = "input"\nshape = [4]\n\n[nodes.sum]\nop = "add"\n',
        ["net.toml:5: node 'sum' (add): takes at least 2 inputs, got only the node before it; "
         "list them, e.g. inputs = [\"a\", \"b\"]"],
        id="merge-without-inputs"),
    pytest.param(
        '[nodes.r]\nop = "relu"\n[nodes.image]\nop = "input"\nshape = [4]\n',
        ["net.toml:1: node 'r' (relu): has no inputs and no node is defined before it; set "
         "inputs = \"...\""],
        id="first-node-needs-inputs"),
]


@pytest.mark.parametrize(("text", "expected"), NODE_ERRORS)
def test_node_errors(text, expected):
    assert problems(text) == expected


FILE_ERRORS = [
    pytest.param('[nodes.image]\nop = "input"\nshape = [4\n]\nx = = 1\n',
                 ["net.toml:5: invalid TOML: Invalid value"], id="toml-syntax"),
    pytest.param('[nodes.image]\nop = "input"\nshape = [4,\n5\n',
                 ["net.toml:4: invalid TOML: Unclosed array at the end of the file; close it "
                  "where it should end"],
                 id="toml-unclosed-at-end"),
    pytest.param('[nodes.image]\nop = "input"\nshape = [4,',
                 ["net.toml:3: invalid TOML: Invalid value at the end of the file"],
                 id="toml-cut-short"),
    pytest.param('[nodes.image]\nop = "input"\nop = "relu"\n',
                 ["net.toml:3: invalid TOML: Cannot overwrite a value"], id="toml-same-key"),
    pytest.param('[nodes.a]\nop = "input"\nshape = [4]\n\n[nodes.b]\nop = "relu"\n\n'
                 '[nodes.a]\nop = "relu"\n[network]\n[network]\n',
                 ["net.toml:8: node 'a': defined twice (first at line 1); rename one of them",
                  "net.toml:11: table [network] defined twice (first at line 10); merge them "
                  "into one"],
                 id="defined-twice"),
    pytest.param('# nothing here\n', ['net.toml:1: no nodes: add tables like [nodes.image] with '
                                      'op = "input"'], id="no-nodes"),
    pytest.param('[trian]\nepochs = 1\n' + CHAIN,
                 ["net.toml:1: unknown top-level table [trian]; did you mean 'train'? "
                  "(expected include, network, vars, assert, blocks, nodes, train, data)"],
                 id="unknown-top-level-table"),
    pytest.param('train = 5\n' + CHAIN, ["net.toml:1: [train] must be a table"],
                 id="train-not-a-table"),
    pytest.param('[network]\nname = ""\noutptu = "fc"\n' + CHAIN,
                 ['net.toml:2: [network] name must have at least 1 character, got ""',
                  "net.toml:3: [network] unknown field 'outptu'; did you mean 'output'?"],
                 id="network-fields"),
    pytest.param('[network]\noutput = "fc2"\n' + CHAIN,
                 ["net.toml:2: [network] output 'fc2' names no node; did you mean 'fc'?"],
                 id="output-names-no-node"),
]


@pytest.mark.parametrize(("text", "expected"), FILE_ERRORS)
def test_file_errors(text, expected):
    assert problems(text) == expected


def test_every_independent_error_is_reported_in_line_order():
    text = """\
[network]
description = \"\"\"
A description that spans lines
[nodes.fake]
\"\"\"
output = "fc3"

[nodes.image]
op = "input"
shape = [1, 28, 28]

[nodes.conv]
op = "conv2d"
out_channels = 6
kernal_size = 5

[nodes.act]
op = "relux"

[nodes.fc]
op = "linear"
inputs = "flat"
out_features = -1
"""
    assert problems(text) == [
        "net.toml:6: [network] output 'fc3' names no node; did you mean 'fc'?",
        "net.toml:15: node 'conv' (conv2d): unknown field 'kernal_size'; did you mean "
        "'kernel_size'?",
        "net.toml:18: node 'act': unknown op 'relux'; did you mean 'relu'? (known ops: "
        + KNOWN_OPS + ")",
        "net.toml:22: node 'fc' (linear): input 'flat' names no node",
        "net.toml:23: node 'fc' (linear): out_features must be greater than 0, got -1",
    ]


def test_check_spec_keeps_the_valid_nodes_of_an_invalid_spec():
    checked = check_spec(CHAIN.replace("out_features = 10", "out_features = 0"), file="n.toml")
    assert list(checked.spec.nodes) == ["image", "flat"]
    assert checked.invalid == {"fc": "linear"}
    assert checked.node_ids == ("image", "flat", "fc")
    assert [d.line for d in checked.problems] == [10]


def test_errors_never_use_assert_or_leak_pydantic_wording():
    text = CHAIN.replace("out_features = 10", 'out_features = [1]\nbias_init = "x"')
    for message in problems(text):
        assert "Input should" not in message and "validation error" not in message
        assert "pydantic" not in message.lower()


@pytest.mark.parametrize(("node_id", "shown", "code_point"), [
    ("fc\\u0000x", "fc\\x00x", "U+0000"),   # cut short as a member name of a weights .npz
    ("a\\tb", "a\\tb", "U+0009"),
    ("del\\u007f", "del\\x7f", "U+007F"),
])
def test_a_node_id_with_a_control_character_is_refused(node_id, shown, code_point):
    text = CHAIN + f'\n[nodes."{node_id}"]\nop = "relu"\n'
    checked = check_spec(text, file="n.toml")
    assert [str(d) for d in checked.problems] == [
        f"n.toml:12: node '{shown}': the id holds the control character {code_point}; "
        f"rename the node"]


def test_printable_escapes_control_characters_only():
    from netspec.common.errors import printable

    assert printable("layer1.0 conv") == "layer1.0 conv"
    assert printable("ünïcode") == "ünïcode"
    assert printable("a\x00b\nc") == "a\\x00b\\nc"


@pytest.mark.parametrize(("written", "meant"), [("ReLU", "relu"), ("BatchNorm", "batchnorm"),
                                                ("Linear", "linear"), ("MaxPool2d", "maxpool2d")])
def test_an_op_name_in_another_case_finds_its_suggestion(written, meant):
    """PyTorch's class names (``nn.ReLU``) are what a newcomer writes first."""
    text = f'[nodes.image]\nop = "input"\nshape = [4]\n[nodes.r]\nop = "{written}"\n'
    with pytest.raises(SpecError) as caught:
        parse_spec(text, file="net.toml")
    assert f"net.toml:5: node 'r': unknown op '{written}'; did you mean '{meant}'?" in str(
        caught.value)
