"""The block language at model-zoo scale: the fixes of issue 23 (each test failed before its
fix), shape functions, local values, defaults over arguments, names from patterns, repeat = 0
and assertions, each with its exact messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from netspec.cli import main
from netspec.common.errors import NetspecError
from netspec.lang.flat import flat_toml
from netspec.lang.spec import check_spec, parse_spec
from netspec.plan.compiler import CompileError, compile_plan
from netspec.plan.summary import partial_summary

FILE = "net.toml"
HEAD = '[nodes]\nimage = { op = "input", shape = [3, 16, 16] }\n'


def plan_of(text: str, overrides: dict | None = None):
    return compile_plan(parse_spec(text, file=FILE, overrides=overrides))


def messages(text: str, overrides: dict | None = None) -> list[str]:
    with pytest.raises(NetspecError) as caught:
        plan_of(text, overrides)
    return [str(d) for d in caught.value.diagnostics]


# -- the fixes -------------------------------------------------------------------------------

NESTED_INDEX = '''[blocks.conv]
args = ["stride"]
[blocks.conv.nodes]
conv = { op = "conv2d", out_channels = 4, kernel_size = 1, stride = "= stride" }
[blocks.stage.nodes]
plain = { op = "conv2d", out_channels = 4, kernel_size = 1, stride = "= 2 if index == 0 else 1" }
nested = { block = "conv", if = "= index < 2", stride = "= 2 if index == 0 else 1" }
[nodes]
image = { op = "input", shape = [3, 64, 64] }
layer = { block = "stage", repeat = 3 }
'''


def test_a_nested_instance_without_repeat_sees_the_index_its_if_sees():
    plan = plan_of(NESTED_INDEX)
    shapes = {node_id: node.shape for node_id, node in plan.nodes.items()}
    assert shapes["layer.0.nested.conv"] == (4, 16, 16)
    # instance 1: both strides are 1, as the plain node's
    assert shapes["layer.1.plain"] == (4, 16, 16)
    assert shapes["layer.1.nested.conv"] == (4, 16, 16)
    assert "layer.2.plain" in shapes and "layer.2.nested.conv" not in shapes
    assert plan.spec.instances["layer.1.nested"].args == {"stride": 1}


def test_compile_depth_1_folds_instances_without_repeat(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path(FILE).write_text('[blocks.b.nodes]\nconv = { op = "conv2d", out_channels = 2, '
                          'kernel_size = 1 }\nact = { op = "relu" }\n' + HEAD
                          + 'stem = { block = "b" }\nlayer = { block = "b", repeat = 2 }\n')
    assert main(["compile", FILE, "--depth", "1"]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert "stem" in rows and "layer" in rows
    assert not any(row.startswith(("stem.", "layer.")) for row in rows)
    assert main(["compile", FILE, "--depth", "2"]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert "stem.conv" in rows and "layer.0" in rows and "layer.0.conv" not in rows


MANY = ('[blocks.b.nodes]\nconv = { op = "conv2d", out_channels = 2, kernel_sise = 1 }\n'
        + HEAD + 'layer = { block = "b", repeat = 5 }\n')


def test_a_mistake_in_a_blocks_text_is_reported_once_with_its_instances():
    assert messages(MANY) == [
        "net.toml:2: node 'layer.0.conv' (conv2d, in block 'b' instantiated at net.toml:5, and "
        "4 more instances): unknown field 'kernel_sise'; did you mean 'kernel_size'?"]


def test_a_node_named_like_a_repeat_instance_is_an_error_naming_both_lines():
    text = ('[blocks.b.nodes]\nact = { op = "relu" }\n' + HEAD
            + 'layer = { block = "b", repeat = 2 }\n"layer.0" = { op = "relu" }\n'
            + 'after = { op = "relu", inputs = "layer.0" }\n')
    assert messages(text) == [
        "net.toml:6: node 'layer.0': 'layer.0' names two things: instance 'layer.0' "
        "(net.toml:5) and node 'layer.0' (net.toml:6); rename one of them"]


def test_a_spec_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + (HEAD + 'act = { op = "relu" }\n').encode())
    assert list(compile_plan(str(path)).nodes) == ["image", "act"]
    assert list(plan_of("\ufeff" + HEAD + 'act = { op = "relu" }\n').nodes) == ["image", "act"]


def test_a_refused_huge_repeat_prints_its_partial_table_without_a_traceback(
        capsys, tmp_path, monkeypatch):
    text = ('[blocks.b.nodes]\nconv = { op = "conv2d", out_channels = 2, kernel_size = 1 }\n'
            'act = { op = "relu", inputs = "conv" }\n' + HEAD
            + 'stem = { block = "b" }\nlayer = { block = "b", repeat = 100000 }\n'
            + 'pool = { op = "global_avgpool", inputs = "layer" }\n')
    with pytest.raises(CompileError) as caught:
        compile_plan(check_spec(text, file=FILE))
    assert "would make at least 100,000 nodes" in str(caught.value)
    # the table of what was built before the refusal (it raised on an unresolved name)
    assert "stem.conv" in partial_summary(caught.value)
    monkeypatch.chdir(tmp_path)
    Path(FILE).write_text(text)
    assert main(["compile", FILE]) == 1
    assert "would make at least 100,000 nodes" in capsys.readouterr().err


# -- shape functions, local values, defaults over arguments ------------------------------------

BASIC = '''[blocks.basic]
args = ["planes"]
defaults = { stride = 1, mid = "= planes * 2" }
let = { project = "= stride != 1 or channels(x) != planes" }
[blocks.basic.nodes]
conv1 = { op = "conv2d", out_channels = "= mid", kernel_size = 3, stride = "= stride", padding = 1 }
conv2 = { op = "conv2d", out_channels = "= planes", kernel_size = 3, padding = 1 }
"downsample.0" = { if = "= project", inputs = "x", op = "conv2d", out_channels = "= planes", \
kernel_size = 1, stride = "= stride" }
add = { op = "add", inputs = ["conv2", "= 'downsample.0' if project else 'x'"] }
'''


def test_a_block_reads_its_inputs_shape_and_computes_local_values_once():
    plan = plan_of(BASIC + HEAD + 'a = { block = "basic", planes = 3 }\n'
                   'b = { block = "basic", planes = 3 }\n'
                   'c = { block = "basic", planes = "= channels(b) * 2", stride = 2 }\n'
                   'pool = { op = "global_avgpool" }\n'
                   'fc = { op = "linear", out_features = "= channels(pool) + height(c.conv1)" }\n')
    assert "a.downsample.0" not in plan.nodes and "b.downsample.0" not in plan.nodes
    assert plan.nodes["c.downsample.0"].shape == (6, 8, 8)
    assert plan.nodes["c.conv1"].shape == (12, 8, 8)  # mid defaults to planes * 2
    assert plan.nodes["fc"].shape == (6 + 8,)
    assert plan.spec.instances["c"].args == {"planes": 6, "stride": 2, "mid": 12}


@pytest.mark.parametrize(("nodes", "expected"), [
    ('late = { op = "conv2d", out_channels = "= channels(after)", kernel_size = 1 }\n'
     'after = { op = "relu" }\n',
     "net.toml:3: node 'late' (conv2d): out_channels: 'after' comes later in the same table; "
     "a shape can be read only of a node made before it"),
    ('own = { op = "conv2d", out_channels = "= channels(own)", kernel_size = 1 }\n',
     "net.toml:3: node 'own' (conv2d): out_channels: 'own' is this node itself; a shape can "
     "be read only of a node made before it"),
    ('fc = { op = "linear", out_features = "= width(imag)" }\n',
     "net.toml:3: node 'fc' (linear): out_features: no node 'imag' is made before this one; "
     "did you mean 'image'?"),
    ('f = { op = "flatten" }\nfc = { op = "linear", out_features = "= height(f)" }\n',
     "net.toml:4: node 'fc' (linear): out_features: height(f) needs a (channels, height, "
     "width) shape; 'f' has (768,)"),
])
def test_a_shape_asked_of_a_later_node_or_itself_is_an_error_at_its_line(nodes, expected):
    assert messages(HEAD + nodes) == [expected]


def test_shape_functions_belong_to_nodes_not_variables():
    assert messages('[vars]\nw = "= channels(image)"\n' + HEAD) == [
        "net.toml:2: [vars] w: channels() reads the shape of a node, so it can be used only "
        "in [nodes] and in blocks"]


def test_a_default_that_uses_an_unknown_name_says_what_a_default_sees():
    text = BASIC.replace('mid = "= planes * 2"', 'mid = "= plane * 2"') + HEAD + (
        'a = { block = "basic", planes = 3 }\n')
    assert messages(text) == [
        "net.toml:3: node 'a' (in block 'basic' instantiated at net.toml:12): default of "
        "'mid': unknown variable 'plane'; did you mean 'planes'? (known: index, planes, "
        "stride); a default sees the variables, index, the shapes of the block's inputs, the "
        "arguments given and the defaults written before it"]


def test_a_local_value_may_not_shadow_an_argument():
    text = BASIC.replace('let = { project', 'let = { planes = 1, project') + HEAD + (
        'a = { block = "basic", planes = 3 }\n')
    assert messages(text) == [
        "net.toml:4: block 'basic': local value 'planes' must be a plain name (letters, "
        "digits, _) that is neither an argument nor index"]


# -- names from patterns, repeat = 0 -----------------------------------------------------------

def test_instances_and_nodes_are_named_from_patterns_and_expressions():
    text = ('[blocks.layer]\nargs = ["at"]\n[blocks.layer.nodes]\n'
            'conv = { op = "conv2d", name = "{at}", out_channels = 2, kernel_size = 1 }\n'
            'act = { op = "relu", name = "= str(at + 1)" }\n'
            '[blocks.dense.nodes]\n'
            'layers = { block = "layer", repeat = 2, name = "denselayer{index + 1}", at = 0 }\n'
            'flat = { block = "layer", repeat = 2, name = "", at = "= 2 * index" }\n'
            + HEAD + '"features.denseblock1" = { block = "dense" }\n'
            'enc = { block = "layer", repeat = 2, name = "block1-{index}", at = 0 }\n'
            'renamed = { block = "layer", name = "stem.{index + 7}", at = 7 }\n'
            'again = { op = "relu", inputs = "stem.7" }\n'
            'last = { op = "add", inputs = ["block1-1.1", '
            '"features.denseblock1.denselayer2.1"] }\n')
    plan = plan_of(text)
    assert list(plan.spec.nodes) == [
        "image", "features.denseblock1.denselayer1.0", "features.denseblock1.denselayer1.1",
        "features.denseblock1.denselayer2.0", "features.denseblock1.denselayer2.1",
        "features.denseblock1.0", "features.denseblock1.1", "features.denseblock1.2",
        "features.denseblock1.3", "block1-0.0", "block1-0.1", "block1-1.0", "block1-1.1",
        "stem.7.7", "stem.7.8", "again", "last"]
    assert plan.spec.inputs["again"] == ("stem.7.8",)
    assert plan.nodes["block1-0.0"].inputs == ("features.denseblock1.3",)
    # a pattern-named instance is its own container; a nameless one adds no level
    assert [c.id for c in plan.chains["features.denseblock1.denselayer2.0"]] == [
        "features.denseblock1", "features.denseblock1.denselayer2"]
    assert [c.id for c in plan.chains["features.denseblock1.2"]] == ["features.denseblock1"]


@pytest.mark.parametrize(("name", "expected"), [
    ('"= [index]"', "name: a name is made of strings and ints"),
    ('"layer{index"', None),
    ('"a..b{index}"', "name: name \"a..b0\" must be dot-separated parts"),
    ('"{nope}"', "name: unknown variable 'nope'"),
])
def test_a_bad_name_is_an_error_at_its_line(name, expected):
    text = ('[blocks.b.nodes]\nact = { op = "relu" }\n' + HEAD
            + f'layer = {{ block = "b", repeat = 2, name = {name} }}\n')
    if expected is None:  # an unclosed brace is a literal character, refused by the name rule
        expected = "must be dot-separated parts of printable characters"
    found = messages(text)
    assert len(found) == 1 and found[0].startswith("net.toml:5: node 'layer'")
    assert expected in found[0]


def test_repeat_zero_makes_nothing_and_the_next_node_reads_the_repeats_input():
    text = ('[vars]\ndepths = [1, 1]\n[blocks.b.nodes]\nact = { op = "relu" }\n' + HEAD
            + 'one = { block = "b", repeat = "= depths[0]" }\n'
            'two = { block = "b", repeat = "= depths[1]" }\n'
            'after = { op = "relu" }\nnamed = { op = "relu", inputs = "two" }\n')
    spec = plan_of(text, {"depths": [1, 0]}).spec
    assert list(spec.nodes) == ["image", "one.0.act", "after", "named"]
    assert spec.inputs["after"] == spec.inputs["named"] == ("one.0.act",)
    spec = plan_of(text, {"depths": [0, 0]}).spec
    assert spec.inputs["after"] == ("image",)


# -- assertions -----------------------------------------------------------------------------

ASSERTING = '''[vars]
layers = [6, 12]
[assert]
two = { check = "= len(layers) == 2", message = "two stages here" }
[blocks.b]
args = ["n"]
[blocks.b.assert]
few = { check = "= n <= 8", message = "blocks have at most 8 layers here" }
[blocks.b.nodes]
act = { op = "relu" }
''' + HEAD + '''stage1 = { block = "b", n = "= layers[0]" }
stage2 = { block = "b", n = "= layers[1]" }
'''


def test_a_failing_assertion_is_an_error_at_its_line_naming_the_instance():
    assert messages(ASSERTING) == [
        "net.toml:8: node 'stage2' (in block 'b' instantiated at net.toml:14): assertion "
        "'few' fails: blocks have at most 8 layers here (check: n <= 8)"]
    assert messages(ASSERTING, {"layers": [1, 2, 3]}) == [
        "net.toml:4: assertion 'two' fails: two stages here (check: len(layers) == 2)"]
    assert list(plan_of(ASSERTING, {"layers": [1, 2]}).nodes) == [
        "image", "stage1.act", "stage2.act"]


@pytest.mark.parametrize(("assertion", "expected"), [
    ('{ check = "= n", message = "m" }', "assertion 'few' must be a bool (true/false), got "
                                         "int 6"),
    ('{ check = "n <= 8", message = "m" }', "assertion 'few' must be { check = \"= condition\", "
                                            "message = \"what it means\" }"),
    ('{ check = "= m <= 8", message = "m" }', "assertion 'few': unknown variable 'm'"),
])
def test_a_malformed_assertion_is_an_error_at_its_line(assertion, expected):
    text = ASSERTING.replace('{ check = "= n <= 8", message = "blocks have at most 8 layers '
                             'here" }', assertion)
    found = messages(text)
    assert found and all(line.startswith("net.toml:8: ") for line in found)
    assert expected in found[0]


# -- a branch rewired by a forgotten inputs ---------------------------------------------------

BRANCHES = '''[blocks.two.nodes]
a1 = { op = "conv2d", inputs = "x", out_channels = 4, kernel_size = 1 }
a2 = { op = "relu" }
b1 = { op = "conv2d", out_channels = 4, kernel_size = 3, padding = 1 }
b2 = { op = "relu" }
join = { op = "concat", inputs = ["a2", "b2"] }
''' + HEAD + 'one = { block = "two", repeat = 2 }\n'


def test_a_branch_that_reads_the_end_of_another_by_default_is_warned_about_once(
        capsys, tmp_path, monkeypatch):
    spec = plan_of(BRANCHES).spec
    assert [str(w) for w in spec.warnings] == [
        "net.toml:4: node 'one.0.b1' (in block 'two' instantiated at net.toml:9): reads 'a2', "
        "the node before it, by default, but 'a2' ends a branch that 'join' also reads; if "
        "'b1' starts a branch of its own, name its input (inputs = \"...\")"]
    assert spec.warnings[0].kind == "branch-rewired"
    monkeypatch.chdir(tmp_path)
    Path(FILE).write_text(BRANCHES)
    assert main(["compile", FILE]) == 0
    assert "netspec compile: warning: net.toml:4: node 'one.0.b1'" in capsys.readouterr().err
    fixed = BRANCHES.replace('b1 = { op = "conv2d",', 'b1 = { op = "conv2d", inputs = "x",')
    assert plan_of(fixed).spec.warnings == ()


@pytest.mark.parametrize("name", ["resnet18", "resnet_mini", "resnet_mnist", "densenet121",
                                  "vgg11_bn", "convnet_bn"])
def test_shipped_networks_with_branches_and_chains_give_no_warning(name):
    spec = compile_plan(name).spec
    assert spec.warnings == ()
    # nor their flat forms, where a residual's add or a dense layer's concat names the node
    # before the next one explicitly: a join, not the end of a branch
    assert parse_spec(flat_toml(spec), file=FILE).warnings == ()


def test_a_stage_dropped_with_set_leaves_a_resnet_that_still_fits():
    # repeat = 0 passes layer1's output on, and layer3's first block reads its width (64)
    # to project its shortcut: nothing restates it
    plan = compile_plan("resnet18", {"depths": [2, 0, 2, 2]})
    assert not any(node_id.startswith("layer2") for node_id in plan.nodes)
    assert plan.nodes["layer3.0.conv1"].inputs == ("layer1.1.relu",)
    assert plan.nodes["layer3.0.downsample.0"].param_specs["weight"].shape == (256, 64, 1, 1)
