"""Blocks, repeat, conditions, variables, includes and --set: names, hierarchy, every
diagnostic with its exact message, and the shipped block-built architectures."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from netspec.cli import main
from netspec.common.errors import NetspecError, SpecError
from netspec.lang.flat import flat_toml
from netspec.lang.spec import load_spec, parse_override, parse_spec, shipped_architectures
from netspec.plan.compiler import compile_plan
from netspec.runtime.executor import Network

FILE = "net.toml"
HEAD = '[nodes]\nimage = { op = "input", shape = [1, 8, 8] }\n'
UNIT = ('''[vars]
width = 8
depth = 2

[blocks.unit]
args = ["planes"]
defaults = { stride = 1 }

[blocks.unit.nodes]
''' + 'conv = { op = "conv2d", out_channels = "= planes", kernel_size = 3, '
    'stride = "= stride", padding = 1 }\n' + '''relu = { op = "relu" }

[nodes]
image = { op = "input", shape = [1, 8, 8] }
stage = { block = "unit", repeat = "= depth", planes = "= width * (index + 1)" }
flat = { op = "flatten" }
fc = { op = "linear", out_features = 10 }
''')


def messages(text: str, directory: Path | None = None, overrides: dict | None = None
             ) -> list[str]:
    with pytest.raises(NetspecError) as caught:
        compile_plan(parse_spec(text, file=FILE, directory=directory, overrides=overrides))
    return [str(d) for d in caught.value.diagnostics]


# -- names and structure -------------------------------------------------------------------

def test_repeat_names_instances_by_index_and_chains_them():
    plan = compile_plan(parse_spec(UNIT, file=FILE))
    assert list(plan.nodes) == ["image", "stage.0.conv", "stage.0.relu", "stage.1.conv",
                                "stage.1.relu", "flat", "fc"]
    assert plan.nodes["stage.1.conv"].inputs == ("stage.0.relu",)
    assert plan.nodes["flat"].inputs == ("stage.1.relu",)  # the instance's output
    # each instance sees its index: widths 8 then 16
    assert [plan.nodes[f"stage.{i}.conv"].shape[0] for i in (0, 1)] == [8, 16]
    assert "stage.1.conv.weight" in {f"{n}.{p}" for n, node in plan.nodes.items()
                                     for p in node.param_specs}


def test_an_instance_without_repeat_has_no_index_and_its_id_means_its_output():
    text = UNIT.replace('repeat = "= depth", ', "").replace("(index + 1)", "2")
    text = text.replace('flat = { op = "flatten" }', 'flat = { op = "flatten", inputs = "stage" }')
    plan = compile_plan(parse_spec(text, file=FILE))
    assert [n for n in plan.nodes if n.startswith("stage")] == ["stage.conv", "stage.relu"]
    assert plan.nodes["flat"].inputs == ("stage.relu",)


def test_the_hierarchy_stays_in_the_plan():
    plan = compile_plan(parse_spec(UNIT, file=FILE))
    instances = plan.spec.instances
    assert list(instances) == ["stage.0", "stage.1"]
    assert (instances["stage.1"].block, instances["stage.1"].group,
            instances["stage.1"].output, instances["stage.1"].args) == (
        "unit", "stage", "stage.1.relu", {"stride": 1, "planes": 16})
    assert [c.id for c in plan.chains["stage.1.conv"]] == ["stage", "stage.1"]
    assert plan.chains["fc"] == ()


def test_nested_blocks_name_by_path_and_may_reference_inner_nodes():
    text = '''[blocks.pair.nodes]
a = { op = "relu" }
b = { op = "relu" }
[blocks.outer.nodes]
first = { block = "pair" }
second = { block = "pair", repeat = 2 }
tap = { op = "add", inputs = ["first.a", "second.1"] }
''' + HEAD + 'net = { block = "outer" }\n'
    plan = compile_plan(parse_spec(text, file=FILE))
    assert list(plan.nodes) == ["image", "net.first.a", "net.first.b", "net.second.0.a",
                                "net.second.0.b", "net.second.1.a", "net.second.1.b", "net.tap"]
    assert plan.nodes["net.tap"].inputs == ("net.first.a", "net.second.1.b")
    assert [c.id for c in plan.chains["net.second.1.a"]] == ["net", "net.second",
                                                            "net.second.1"]


def test_conditional_nodes_and_inputs_follow_the_arguments():
    text = '''[blocks.res]
args = ["project"]
[blocks.res.nodes]
conv = { op = "conv2d", out_channels = 2, kernel_size = 1 }
proj = { if = "= project", inputs = "x", op = "conv2d", out_channels = 2, kernel_size = 1 }
sum = { op = "add", inputs = ["conv", "= 'proj' if project else 'x'"] }
''' + HEAD + '''a = { block = "res", project = true }
b = { block = "res", project = false }
'''
    plan = compile_plan(parse_spec(text.replace("shape = [1, 8, 8]", "shape = [2, 8, 8]"),
                                   file=FILE))
    assert "a.proj" in plan.nodes and "b.proj" not in plan.nodes
    assert plan.nodes["a.sum"].inputs == ("a.conv", "a.proj")
    assert plan.nodes["b.sum"].inputs == ("b.conv", "a.sum")


def test_an_input_expression_may_give_a_list():
    text = ('[vars]\nboth = true\n' + HEAD.replace("[1, 8, 8]", "[4]")
            + 'a = { op = "relu", inputs = "image" }\n'
            + 'out = { op = "add", inputs = "= [\'image\', \'a\'] if both else [\'a\', \'a\']" }\n')
    plan = compile_plan(parse_spec(text, file=FILE))
    assert plan.nodes["out"].inputs == ("image", "a")


def test_variables_may_use_earlier_ones_and_fields_at_top_level_too():
    text = ('[vars]\nbase = 4\nwide = "= base * 2"\nsizes = "= [base, wide]"\n' + HEAD
            + 'f = { op = "flatten" }\nfc = { op = "linear", out_features = "= sizes[-1]" }\n')
    assert compile_plan(parse_spec(text, file=FILE)).nodes["fc"].shape == (8,)


def test_a_literal_leading_equals_sign_is_escaped_by_doubling_it():
    text = (HEAD + '"=odd" = { op = "relu", inputs = "image" }\n'
            + 'out = { op = "relu", inputs = "==odd" }\n')
    assert compile_plan(parse_spec(text, file=FILE)).nodes["out"].inputs == ("=odd",)


def test_includes_are_read_relative_to_the_including_file(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "all.toml").write_text("include = ['more.toml']\n")
    (tmp_path / "lib" / "more.toml").write_text("[blocks.r.nodes]\nr = { op = 'relu' }\n")
    spec_path = tmp_path / "net.toml"
    spec_path.write_text('include = ["lib/all.toml"]\n' + HEAD + 'one = { block = "r" }\n')
    spec = load_spec(spec_path)
    assert list(spec.nodes) == ["image", "one.r"]
    assert spec.included == {"lib/all.toml": "include = ['more.toml']\n",
                             "lib/more.toml": "[blocks.r.nodes]\nr = { op = 'relu' }\n"}


# -- --set ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("depths=[3,4,6,3]", ("depths", [3, 4, 6, 3])),
    ("train.optimizer.lr=0.1", ("train.optimizer.lr", 0.1)),
    ("flag=true", ("flag", True)),
    ('name="a b"', ("name", "a b")),
    ("act=relu", ("act", "relu")),
])
def test_set_values_are_read_as_toml(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("depths", "--set depths: write NAME=VALUE"),
    ("x=[1,", "--set x=[1,: '[1,' is not a TOML value"),
])
def test_malformed_set_is_refused(text, message):
    with pytest.raises(NetspecError, match=message.replace("[", r"\[")):
        parse_override(text)


def test_set_overrides_a_variable_and_a_train_key():
    spec = parse_spec(UNIT + "[train]\nepochs = 3\n[train.optimizer]\nlr = 0.01\n", file=FILE,
                      overrides={"depth": 3, "train.optimizer.lr": 0.5, "train.epochs": 1})
    assert sum(1 for n in spec.nodes if n.endswith(".conv")) == 3
    assert spec.train == {"epochs": 1, "optimizer": {"lr": 0.5}}
    assert spec.overrides == {"depth": 3, "train.optimizer.lr": 0.5, "train.epochs": 1}


def test_resnet18_becomes_resnet34_with_set(capsys):
    assert main(["compile", "resnet18", "--set", "depths=[3,4,6,3]", "--depth", "1"]) == 0
    assert "21,797,672 trainable parameters" in capsys.readouterr().out


# -- every diagnostic, exactly -------------------------------------------------------------

def _mutated(old: str, new: str) -> str:
    assert old in UNIT
    return UNIT.replace(old, new)


DIAGNOSTICS = [
    pytest.param(_mutated('block = "unit"', 'block = "unti"'), [
        "net.toml:15: node 'stage': unknown block 'unti'; did you mean 'unit'? (blocks: unit)"],
        id="unknown-block"),
    pytest.param(_mutated('planes = "= width * (index + 1)"', "planse = 3"), [
        "net.toml:15: node 'stage': unknown argument 'planse' for block 'unit'; did you mean "
        "'planes'? (arguments: planes, stride)"], id="unknown-argument"),
    pytest.param(_mutated(', planes = "= width * (index + 1)"', ""), [
        "net.toml:15: node 'stage': block 'unit' needs argument(s) 'planes'; add planes = ... "
        "to the instance"], id="missing-argument"),
    pytest.param(_mutated('repeat = "= depth", ', 'repeat = "= depth", stride = "2", '), [
        "net.toml:15: node 'stage': argument 'stride' of block 'unit' must be int like its "
        "default 1, got string \"2\""], id="mistyped-argument"),
    pytest.param(_mutated('out_channels = "= planes"', 'out_channels = "= plane"'), [
        "net.toml:10: node 'stage.0.conv' (conv2d, in block 'unit' instantiated at "
        "net.toml:15, and 1 more instance): out_channels: unknown variable 'plane'; did you "
        "mean 'planes'? (known: "
        "depth, index, planes, stride, width)"], id="unknown-variable"),
    pytest.param(_mutated('out_channels = "= planes"', 'out_channels = "= planes // 0"'), [
        "net.toml:10: node 'stage.0.conv' (conv2d, in block 'unit' instantiated at "
        "net.toml:15, and 1 more instance): out_channels: division by zero"],
        id="division-by-zero"),
    pytest.param(_mutated('out_channels = "= planes"', 'out_channels = "= planes + \'a\'"'), [
        "net.toml:10: node 'stage.0.conv' (conv2d, in block 'unit' instantiated at "
        "net.toml:15): out_channels: '+' needs two numbers, got int 8 and string \"a\"",
        "net.toml:10: node 'stage.1.conv' (conv2d, in block 'unit' instantiated at "
        "net.toml:15): out_channels: '+' needs two numbers, got int 16 and string \"a\""],
        id="wrong-type-in-expression"),
    pytest.param(_mutated('out_channels = "= planes"', 'out_channels = "= planes +"'), [
        "net.toml:10: node 'stage.0.conv' (conv2d, in block 'unit' instantiated at "
        "net.toml:15, and 1 more instance): out_channels: bad syntax in expression 'planes +': "
        "invalid syntax"],
        id="bad-syntax"),
    pytest.param(_mutated('out_channels = "= planes"', 'out_channels = "= planes / 2"'), [
        "net.toml:10: node 'stage.0.conv' (conv2d, in block 'unit' instantiated at "
        "net.toml:15): out_channels must be a valid integer, got 4.0",
        "net.toml:10: node 'stage.1.conv' (conv2d, in block 'unit' instantiated at "
        "net.toml:15): out_channels must be a valid integer, got 8.0"],
        id="expression-gives-the-wrong-type"),
    pytest.param(_mutated("kernel_size = 3, stride", "kernel_size = 9, stride"), [
        "net.toml:15: node 'stage.1.conv' (conv2d, in block 'unit' defined at net.toml:10): "
        "input shape (8, 2, 2): kernel 9x9 is larger than the padded input 4x4 (2x2 with "
        "padding 1x1); use a smaller kernel, more padding, or remove a pooling step"],
        id="shape-error-names-both-lines"),
    pytest.param(_mutated('repeat = "= depth"', "repeat = -1"), [
        "net.toml:15: node 'stage': repeat must be a whole number of at least 0, got -1"],
        id="repeat-below-zero"),
    pytest.param('''[blocks.b]
defaults = { skip = false }
[blocks.b.nodes]
conv = { op = "conv2d", out_channels = 2, kernel_size = 1 }
join = { op = "add", inputs = "= ['conv', 'x'] if skip else []" }
''' + HEAD + 'one = { block = "b" }\n', [
        "net.toml:5: node 'one.join' (add, in block 'b' instantiated at net.toml:8): its "
        "conditional inputs leave it without input; make sure every case names at least one "
        "node"], id="conditional-inputs-leave-none"),
    pytest.param('''[blocks.b]
defaults = { project = false }
[blocks.b.nodes]
proj = { if = "= project", op = "conv2d", out_channels = 1, kernel_size = 1 }
conv = { op = "conv2d", inputs = "x", out_channels = 1, kernel_size = 1 }
join = { op = "add", inputs = ["conv", "proj"] }
''' + HEAD + 'one = { block = "b" }\n', [
        "net.toml:6: node 'one.join' (add, in block 'b' instantiated at net.toml:9): input "
        "'proj' names a node left out by its condition (its if at line 4); make the input "
        "conditional too"], id="input-left-out-by-condition"),
    pytest.param('''[blocks.a.nodes]
inner = { block = "b" }
[blocks.b.nodes]
inner = { block = "a" }
''' + HEAD + 'one = { block = "a" }\n', [
        "net.toml:2: block 'a' reaches itself: a -> b -> a; a block cannot contain itself"],
        id="recursion"),
    pytest.param('''[blocks.b]
inputs = ["x", "y"]
[blocks.b.nodes]
sum = { op = "add", inputs = ["x", "y"] }
''' + HEAD + 'one = { block = "b", inputs = ["image", "two"] }\n'
      + 'two = { op = "relu", inputs = "one" }\n', [
        "net.toml:4: node 'one.sum' (add, in block 'b' instantiated at net.toml:7): is on a "
        "cycle: one.sum -> two -> one.sum; a network must be acyclic"],
        id="cycle-across-a-block-boundary"),
    pytest.param('[blocks.b.nodes]\nr = { op = "relu" }\n' + HEAD
                 + 'many = { block = "b", repeat = 200000 }\n', [
        "net.toml:5: node 'many': this instance of block 'b' would make at least 200,000 "
        "nodes; a network may have at most 100,000, so it is refused before it is built"],
        id="expansion-bound"),
    pytest.param('''[blocks.b.nodes]
r = { op = "relu" }
s = { op = "relu" }
[blocks.c.nodes]
inner = { block = "b", repeat = 300 }
''' + HEAD + 'many = { block = "c", repeat = 300 }\n', [
        "net.toml:8: node 'many': this instance of block 'c' would make 180,000 nodes; a "
        "network may have at most 100,000, so it is refused before it is built"],
        id="expansion-bound-counted-through-nesting"),
    pytest.param('[blocks.b.nodes]\nr = { op = "relu" }\n' + HEAD
                 + 'one = { block = "b" }\n"one.r" = { op = "relu", inputs = "image" }\n', [
        "net.toml:6: node 'one.r': node id 'one.r' is made twice (first by net.toml:2); "
        "rename one of them"], id="node-made-twice"),
    pytest.param('[blocks.b]\narg = ["x"]\n[blocks.b.nodes]\nr = { op = "relu" }\n' + HEAD
                 + 'one = { block = "b" }\n', [
        "net.toml:2: block 'b': unknown key 'arg'; did you mean 'args'? (block keys: args, "
        "defaults, let, assert, inputs, output, nodes, description)"], id="unknown-block-key"),
    pytest.param('[blocks.b]\noutput = "rleu"\n[blocks.b.nodes]\nrelu = { op = "relu" }\n'
                 + HEAD + 'one = { block = "b" }\n', [
        "net.toml:2: block 'b': output 'rleu' names no node of the block; did you mean "
        "'relu'?"], id="unknown-block-output"),
    pytest.param('[vars]\nw = "= 3 // 0"\n' + HEAD + 'fc = { op = "flatten" }\n', [
        "net.toml:2: [vars] w: division by zero"], id="variable-error"),
    pytest.param('[vars]\nw = 3\n' + HEAD + 'f = { op = "flatten" }\n'
                 'fc = { op = "linear", out_features = "= w2" }\n', [
        "net.toml:6: node 'fc' (linear): out_features: unknown variable 'w2'; did you mean "
        "'w'? (known: w)"], id="top-level-expression"),
]


@pytest.mark.parametrize(("text", "expected"), DIAGNOSTICS)
def test_diagnostics(text, expected):
    assert messages(text) == expected


def test_independent_errors_of_blocks_come_out_together():
    text = UNIT.replace('block = "unit"', 'block = "unti"').replace(
        'out_features = 10', 'out_features = "= classes"')
    assert messages(text) == [
        "net.toml:15: node 'stage': unknown block 'unti'; did you mean 'unit'? (blocks: unit)",
        "net.toml:17: node 'fc' (linear): out_features: unknown variable 'classes' (known: "
        "depth, width)"]


def test_a_default_reading_a_shape_that_another_error_breaks_adds_no_error_of_its_own():
    # the second instance's default reads the first's output, whose node has its own error:
    # that error alone is said (vit_b_16 --set heads=5 said a second, knock-on one)
    text = ('[blocks.unit]\nargs = ["k"]\ndefaults = { planes = "= shape(x)[0]" }\n\n'
            '[blocks.unit.nodes]\nconv = { op = "conv2d", inputs = "x", '
            'out_channels = "= planes", kernel_size = "= k", padding = 1 }\n\n' + HEAD +
            'a = { block = "unit", k = 0 }\nb = { block = "unit", k = 3 }\n'
            'flat = { op = "flatten" }\nfc = { op = "linear", out_features = 10 }\n')
    assert messages(text) == [
        "net.toml:6: node 'a.conv' (conv2d, in block 'unit' instantiated at net.toml:10): "
        "kernel_size must be greater than 0, got 0"]


INCLUDES = {
    "lib/bad.toml": "[blocks.r\nx = 1\n",
    "lib/nodes.toml": "[nodes.a]\nop = 'relu'\n",
    "lib/loop.toml": "include = ['loop.toml']\n",
}


@pytest.mark.parametrize(("include", "expected"), [
    ("lib/nope.toml", ["net.toml:1: include 'lib/nope.toml' not found (looked for "
                       "{root}/lib/nope.toml)"]),
    ("../x.toml", ["net.toml:1: include '../x.toml' points outside {root}; an included file "
                   "must lie in the including file's directory or below it"]),
    ("lib/bad.toml", ["net.toml:1: include 'lib/bad.toml' is not a valid spec file (the "
                      "errors follow)",
                      "lib/bad.toml:1: invalid TOML: Expected ']' at the end of a table "
                      "declaration"]),
    ("lib/nodes.toml", ["lib/nodes.toml:1: an included file holds blocks and includes only, "
                        "not [nodes]; move it to the spec"]),
    ("lib/loop.toml", ["lib/loop.toml:1: include 'loop.toml' includes itself: net.toml -> "
                       "lib/loop.toml -> lib/loop.toml"]),
])
def test_include_diagnostics(tmp_path, include, expected):
    (tmp_path / "lib").mkdir()
    for name, text in INCLUDES.items():
        (tmp_path / name).write_text(text)
    got = messages(f'include = ["{include}"]\n' + HEAD, directory=tmp_path)
    assert got == [line.format(root=tmp_path.resolve()) for line in expected]


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"depht": 3}, ["--set depht: no variable of that name; did you mean 'depth'? "
                    "(variables: width, depth, train.<key>)"]),
    ({"depth": "x"}, ["--set depth: must be int like the spec's value 2, got string \"x\""]),
])
def test_set_diagnostics(overrides, expected):
    assert messages(UNIT, overrides=overrides) == expected


def test_set_of_an_unknown_name_on_the_command_line(capsys):
    assert main(["compile", "resnet18", "--set", "depht=[3,4,6,3]"]) == 1
    err = capsys.readouterr().err
    assert ("--set depht: no variable of that name; did you mean 'depths'? (variables: "
            "depths, classes, train.<key>)") in err
    assert "Traceback" not in err


# -- shipped architectures -----------------------------------------------------------------

SHIPPED = [path.stem for path in shipped_architectures()]


@pytest.mark.parametrize("name", SHIPPED)
def test_expand_compiles_to_the_same_plan(tmp_path, name):
    plan = compile_plan(name)
    flat_path = tmp_path / "flat.toml"
    flat_path.write_text(flat_toml(plan.spec))
    flat = compile_plan(flat_path)
    assert list(flat.nodes) == list(plan.nodes)
    for node_id, node in plan.nodes.items():
        other = flat.nodes[node_id]
        assert (other.op_name, other.inputs, other.shape) == (node.op_name, node.inputs,
                                                               node.shape)
        assert (other.params.model_dump(exclude={"inputs"})
                == node.params.model_dump(exclude={"inputs"}))
        assert ({k: s.shape for k, s in other.param_specs.items()}
                == {k: s.shape for k, s in node.param_specs.items()})
    assert flat.output == plan.output and flat.total_params == plan.total_params
    text = flat_path.read_text()
    assert "\nblock = " not in text and '= "=' not in text  # no instances, no expressions


def test_expand_command_prints_flat_toml(capsys):
    assert main(["expand", "resnet18"]) == 0
    out = capsys.readouterr().out
    assert '[nodes."layer2.0.downsample.0"]' in out and "block =" not in out


@pytest.mark.parametrize(("name", "params"), [("resnet18", 11_689_512),
                                              ("resnet34", 21_797_672)])
def test_resnets_have_torchvisions_parameter_count(name, params):
    assert compile_plan(name).total_params == params


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_resnet_specs_fit_in_28_significant_lines_with_their_includes(name):
    spec = load_spec(name)
    path = shipped_architectures()[SHIPPED.index(name)]
    texts = [path.read_text(), *spec.included.values()]
    significant = [line for text in texts for line in text.splitlines()
                   if line.strip() and not line.strip().startswith("#")]
    assert len(significant) <= 28
    # the blocks read their input's width: no argument restates it
    assert "in_planes" not in "".join(texts)


FLAT_BEFORE_BLOCKS = {
    # the flat spec of convnet_bn before it was written with blocks, node for node
    "convnet_bn": "\n".join(
        ['[nodes.image]\nop = "input"\nshape = [1, 28, 28]']
        + [f'[nodes.conv{i}]\nop = "conv2d"\nout_channels = {w}\nkernel_size = {k}\n'
           f'padding = {k // 2}\nbias = false\n[nodes.bn{i}]\nop = "batchnorm"\n'
           f'[nodes.relu{i}]\nop = "relu"\n[nodes.pool{i}]\nop = "maxpool2d"\nkernel_size = 2'
           for i, (w, k) in enumerate([(32, 5), (64, 3), (128, 3)], start=1)]
        + ['[nodes.flatten]\nop = "flatten"\n[nodes.fc1]\nop = "linear"\nout_features = 256\n'
           '[nodes.relu4]\nop = "relu"\n[nodes.dropout]\nop = "dropout"\np = 0.3\n'
           '[nodes.fc2]\nop = "linear"\nout_features = 10']),
}


def test_convnet_bn_with_blocks_starts_and_computes_as_its_flat_spec_did():
    blocks = Network(compile_plan("convnet_bn"), seed=0, dtype="float64")
    flat = Network(compile_plan(parse_spec(FLAT_BEFORE_BLOCKS["convnet_bn"], file=FILE)),
                   seed=0, dtype="float64")
    assert [v.shape for v in blocks.params.values()] == [v.shape for v in flat.params.values()]
    assert all(np.array_equal(a, b) for a, b in zip(blocks.params.values(),
                                                    flat.params.values()))
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28))
    assert np.array_equal(blocks.forward(x), flat.forward(x))


def test_a_thousand_instance_repeat_compiles():
    # the speed is measured by tools/bench_compile.py; here: it compiles, named and chained
    text = '[blocks.b.nodes]\nr = { op = "relu" }\n' + HEAD.replace("[1, 8, 8]", "[4]") + \
        'chain = { block = "b", repeat = 1000 }\n'
    start = time.perf_counter()
    plan = compile_plan(parse_spec(text, file=FILE))
    assert time.perf_counter() - start < 60  # a hang guard, not a speed test
    assert len(plan.nodes) == 1001 and plan.nodes["chain.999.r"].inputs == ("chain.998.r",)


def test_a_run_records_set_and_its_included_blocks(tmp_path):
    from netspec.train.loop import recorded_overrides

    spec = load_spec("resnet_mnist", {"depths": [1, 2, 1]})
    assert sum(1 for n in spec.nodes if n.endswith(".conv1")) == 4
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"set": {"depths": [1, 2, 1]}}')
    assert recorded_overrides(run) == {"depths": [1, 2, 1]}
    (run / "config.json").write_text('{"set": [1]}')
    with pytest.raises(NetspecError, match="'set' is not a table"):
        recorded_overrides(run)


def test_errors_never_escape_as_anything_but_spec_errors():
    with pytest.raises(SpecError):
        parse_spec(UNIT.replace('"= depth"', '"= depth ** 99"'), file=FILE)


def test_a_run_trained_with_set_resumes_and_evaluates_as_the_same_network(tmp_path, mnist_dir):
    from test_cli_train import run_cli
    from test_train import TINY

    from netspec.weights.checkpoint import read_checkpoint

    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY.replace('[nodes.image]', '[vars]\nhidden = 32\n\n[nodes.image]', 1)
                    .replace("out_features = 32", 'out_features = "= hidden"'))
    run = tmp_path / "run"
    code, _, err = run_cli("train", spec, "--out", run, "--data-dir", mnist_dir, "--no-plots",
                           "--set", "hidden=12", "--set", "train.epochs=1")
    assert code == 0, err
    saved = json.loads((run / "config.json").read_text())
    assert saved["set"] == {"hidden": 12, "train.epochs": 1}
    assert saved["config"]["epochs"] == 1
    assert read_checkpoint(run / "best.npz").params["fc1.weight"].shape == (12, 784)
    # evaluate rebuilds the run's network from the overrides it recorded
    code, out, err = run_cli("evaluate", spec, "--weights", run / "best.npz", "--data-dir",
                             mnist_dir)
    assert code == 0, err
    assert "using the overrides recorded by the run: --set hidden=12" in err
    assert out.startswith("test accuracy")
    # --resume takes the network from the run, and refuses a new --set
    code, _, err = run_cli("train", "--resume", run, "--set", "hidden=3")
    assert code == 1 and "drop --set" in err
