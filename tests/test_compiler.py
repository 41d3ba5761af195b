"""The compiler: every op's shape rule, parameter count and FLOPs (a multiply-add counts 2),
graph and shape errors with their exact lines, errors of every phase reported together, the
partial result of a failed compile, deterministic order, and the shipped architectures."""

from __future__ import annotations

import json

import pytest
import tensor_cases

from netspec.common.errors import SpecError
from netspec.lang.spec import load_spec, parse_spec, shipped_architectures
from netspec.plan.compiler import INVALID_NODE, UPSTREAM_FAILED, CompileError, compile_plan


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def single_op_spec(op: str, params: dict, in_shapes: list[tuple[int, ...]]) -> str:
    """One input node per shape, then node ``x`` applying ``op`` to all of them (and, for a
    learned tensor, which has no inputs, an input of ones it is multiplied with: a network's
    output reads an input)."""
    rank = len(params.get("shape", [])) - bool(params.get("batch_axis"))
    lines = [] if in_shapes else ["[nodes.ones]", 'op = "input"', f"shape = {[1] * rank}", ""]
    for index, shape in enumerate(in_shapes):
        lines += [f"[nodes.in{index}]", 'op = "input"', f"shape = {list(shape)}", ""]
    lines += ["[nodes.x]", f'op = "{op}"',
              f"inputs = {json.dumps([f'in{i}' for i in range(len(in_shapes))])}"]
    lines += [f"{key} = {toml_value(value)}" for key, value in params.items()]
    if not in_shapes:
        lines += ["", "[nodes.scaled]", 'op = "mul"', 'inputs = ["x", "ones"]']
    return "\n".join(lines) + "\n"


def compile_text(text: str, file: str = "net.toml"):
    return compile_plan(parse_spec(text, file=file))


def compile_errors(tmp_path, monkeypatch, text: str) -> list[str]:
    """Every diagnostic of compiling ``text`` from file ``net.toml``, loader's and compiler's."""
    (tmp_path / "net.toml").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as caught:
        compile_plan("net.toml")
    return [str(d) for d in caught.value.diagnostics]


# ---------------------------------------------------------------------------- op catalogue

# (op, params, input shapes, output shape, trainable params, forward FLOPs per sample)
OP_CASES = [
    ("conv2d", {"out_channels": 6, "kernel_size": 5, "padding": 2}, [(1, 28, 28)],
     (6, 28, 28), 6 * 25 + 6, (2 * 25 + 1) * 6 * 28 * 28),
    ("conv2d", {"out_channels": 16, "kernel_size": 5}, [(6, 14, 14)],
     (16, 10, 10), 16 * 6 * 25 + 16, (2 * 6 * 25 + 1) * 16 * 100),
    ("conv2d", {"out_channels": 4, "kernel_size": [3, 5], "stride": [2, 1],
                "padding": [1, 2], "bias": False}, [(3, 10, 12)],
     (4, 5, 12), 4 * 3 * 15, 2 * 3 * 15 * 4 * 5 * 12),
    ("conv2d", {"out_channels": 2, "kernel_size": 3, "stride": 2}, [(1, 8, 8)],
     (2, 3, 3), 2 * 9 + 2, (2 * 9 + 1) * 2 * 9),
    ("conv2d", {"out_channels": 2, "kernel_size": 4, "padding": 0}, [(1, 4, 4)],
     (2, 1, 1), 2 * 16 + 2, (2 * 16 + 1) * 2),
    ("conv2d", {"out_channels": 3, "kernel_size": 1, "trainable": False}, [(2, 4, 4)],
     (3, 4, 4), 3, (2 * 2 + 1) * 3 * 16),
    # groups: each output sees in/groups channels (depthwise: one); dilation widens the span
    ("conv2d", {"out_channels": 32, "kernel_size": 3, "groups": 32, "padding": 1},
     [(32, 14, 14)], (32, 14, 14), 32 * 9 + 32, (2 * 9 + 1) * 32 * 196),
    ("conv2d", {"out_channels": 8, "kernel_size": 3, "groups": 2, "bias": False},
     [(4, 6, 6)], (8, 4, 4), 8 * 2 * 9, 2 * 2 * 9 * 8 * 16),
    ("conv2d", {"out_channels": 2, "kernel_size": 3, "dilation": 2}, [(1, 9, 9)],
     (2, 5, 5), 2 * 9 + 2, (2 * 9 + 1) * 2 * 25),
    # ceil mode: GoogLeNet's 112 -> 56 (floor would give 55); a last window that would
    # start in the padding is dropped (5 + 2 -> 3 windows of 2, not 4)
    ("maxpool2d", {"kernel_size": 3, "stride": 2, "ceil_mode": True}, [(64, 112, 112)],
     (64, 56, 56), 0, 9 * 64 * 56 * 56),
    ("maxpool2d", {"kernel_size": 2, "stride": 2, "padding": 1, "ceil_mode": True},
     [(1, 4, 5)], (1, 3, 3), 0, 4 * 9),
    ("avgpool2d", {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False},
     [(2, 7, 7)], (2, 4, 4), 0, 9 * 32),
    # transposed convolution: (H-1)*s - 2p + d*(k-1) + output_padding + 1; each input cell
    # times (out/groups)*k*k weights
    ("conv_transpose2d", {"out_channels": 4, "kernel_size": 2, "stride": 2}, [(8, 7, 7)],
     (4, 14, 14), 8 * 4 * 4 + 4, 2 * 4 * 4 * 8 * 49 + 4 * 196),
    ("conv_transpose2d", {"out_channels": 6, "kernel_size": 3, "stride": 2, "padding": 1,
                          "output_padding": 1, "groups": 2, "bias": False}, [(4, 5, 5)],
     (6, 10, 10), 4 * 3 * 9, 2 * 3 * 9 * 4 * 25),
    ("upsample", {"scale_factor": 2}, [(3, 4, 5)], (3, 8, 10), 0, 0),
    ("upsample", {"scale_factor": [2, 3], "mode": "bilinear"}, [(3, 4, 5)], (3, 8, 15), 0,
     7 * 3 * 8 * 15),
    ("mul", {}, [(8, 1, 1), (8, 5, 5)], (8, 5, 5), 0, 200),
    ("mul", {}, [(3, 4), (1, 4)], (3, 4), 0, 12),
    # adaptive pooling: every input cell added into each window holding it, then a division
    ("adaptive_avgpool2d", {"output_size": 1}, [(16, 7, 7)], (16, 1, 1), 0, 16 * 49 + 16),
    ("adaptive_avgpool2d", {"output_size": [3, 2]}, [(2, 7, 4)], (2, 3, 2), 0,
     2 * (3 + 3 + 3) * (2 + 2) + 12),
    ("hardtanh", {"min_val": 0, "max_val": 6}, [(4,)], (4,), 0, 4),
    ("relu6", {}, [(3, 2, 2)], (3, 2, 2), 0, 12),
    ("silu", {}, [(10,)], (10,), 0, 50),
    ("gelu", {}, [(10,)], (10,), 0, 80),
    ("hardswish", {}, [(10,)], (10,), 0, 40),
    ("hardsigmoid", {}, [(10,)], (10,), 0, 30),
    ("log_softmax", {"dim": -1}, [(2, 5)], (2, 5), 0, 50),
    ("stochastic_depth", {"p": 0.2}, [(8, 4, 4)], (8, 4, 4), 0, 0),
    ("linear", {"out_features": 120}, [(400,)], (120,), 400 * 120 + 120, (2 * 400 + 1) * 120),
    ("linear", {"out_features": 10, "bias": False}, [(84,)], (10,), 840, 2 * 84 * 10),
    ("relu", {}, [(6, 28, 28)], (6, 28, 28), 0, 6 * 28 * 28),
    ("leaky_relu", {"negative_slope": 0.2}, [(10,)], (10,), 0, 10),
    ("sigmoid", {}, [(3, 2, 2)], (3, 2, 2), 0, 4 * 12),
    ("tanh", {}, [(7,)], (7,), 0, 4 * 7),
    ("softmax", {}, [(10,)], (10,), 0, 5 * 10),
    ("maxpool2d", {"kernel_size": 2}, [(6, 28, 28)], (6, 14, 14), 0, 4 * 6 * 14 * 14),
    ("maxpool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, [(4, 7, 7)],
     (4, 4, 4), 0, 9 * 64),
    ("maxpool2d", {"kernel_size": 2}, [(1, 5, 5)], (1, 2, 2), 0, 4 * 4),
    ("avgpool2d", {"kernel_size": [2, 3], "stride": 1}, [(2, 6, 6)], (2, 5, 4), 0, 6 * 40),
    ("global_avgpool", {}, [(32, 7, 7)], (32,), 0, 32 * 49),
    ("flatten", {}, [(16, 5, 5)], (400,), 0, 0),
    ("flatten", {}, [(10,)], (10,), 0, 0),
    ("dropout", {"p": 0.2}, [(32,)], (32,), 0, 0),
    ("batchnorm", {}, [(16, 28, 28)], (16, 28, 28), 32, 2 * 16 * 784),
    ("batchnorm", {"eps": 1e-3, "momentum": 0.2}, [(10,)], (10,), 20, 20),
    ("add", {}, [(4, 3, 3), (4, 3, 3)], (4, 3, 3), 0, 36),
    ("add", {}, [(5,), (5,), (5,)], (5,), 0, 10),
    ("concat", {}, [(2, 4, 4), (3, 4, 4)], (5, 4, 4), 0, 0),
    ("concat", {"axis": 1}, [(2, 4, 4), (2, 3, 4)], (2, 7, 4), 0, 0),
    ("concat", {}, [(3,), (5,), (1,)], (9,), 0, 0),
    *tensor_cases.OP_CASES,
]


@pytest.mark.parametrize(("op", "params", "in_shapes", "shape", "n_params", "flops"), OP_CASES)
def test_op_shape_params_and_flops(op, params, in_shapes, shape, n_params, flops):
    plan = compile_text(single_op_spec(op, params, in_shapes))
    node = plan.nodes["x"]
    assert (node.shape, node.n_params, node.flops) == (shape, n_params, flops)
    assert node.input_shapes == tuple(in_shapes)


def test_every_registered_op_is_in_the_table():
    from netspec.ops import REGISTRY

    assert set(REGISTRY) - {"input"} <= {case[0] for case in OP_CASES}


def test_input_node():
    plan = compile_text('[nodes.image]\nop = "input"\nshape = [1, 28, 28]\n')
    node = plan.nodes["image"]
    assert (node.shape, node.inputs, node.n_params, node.flops) == ((1, 28, 28), (), 0, 0)
    assert plan.inputs == ("image",) and plan.output == "image"


# (op, params, input shapes, the message after "node 'x' (op): ")
SHAPE_ERRORS = [
    ("add", {}, [(2, 2, 2), (3, 2, 2)],
     "inputs of shapes (2, 2, 2) and (3, 2, 2) do not broadcast: axis 0 has 2 and 3; each "
     "axis must match or be 1 in one of them; insert a 1x1 conv2d or a pooling node on the "
     "mismatched branch"),
    ("add", {}, [(2, 2, 2), (2, 1, 2), (2, 2)],
     "inputs have shapes (2, 2, 2), (2, 1, 2) and (2, 2) of different ranks; add broadcasts "
     "axes of size 1 between inputs of one rank"),
    ("concat", {}, [(2, 4, 4), (3, 4, 5)],
     "inputs have shapes (2, 4, 4), (3, 4, 5); joined along dim 1, every other axis must "
     "match, but dim 3 has 4 and 5"),
    ("concat", {"axis": 0}, [(2, 4, 4), (3, 4, 5)],
     "inputs must match on every axis but 0, got (2, 4, 4), (3, 4, 5)"),
    ("concat", {"axis": 2}, [(4,), (4,)],
     "cannot concatenate along axis 2: inputs have shapes (4,), (4,)"),
    ("concat", {}, [(2, 4, 4), (8,)],
     "inputs have shapes (2, 4, 4), (8,), of different ranks; concat joins values of one "
     "rank (reshape or flatten one of them first)"),
    ("concat", {"axis": 0}, [(2, 4, 4), (8,)],
     "cannot concatenate along axis 0: inputs have shapes (2, 4, 4), (8,)"),
    ("conv2d", {"out_channels": 2, "kernel_size": 5}, [(1, 4, 4)],
     "input shape (1, 4, 4): kernel 5x5 is larger than the padded input 4x4 (4x4 with "
     "padding 0x0); use a smaller kernel, more padding, or remove a pooling step"),
    ("conv2d", {"out_channels": 2, "kernel_size": [3, 7], "padding": 1}, [(1, 4, 4)],
     "input shape (1, 4, 4): kernel 3x7 is larger than the padded input 6x6 (4x4 with "
     "padding 1x1); use a smaller kernel, more padding, or remove a pooling step"),
    ("maxpool2d", {"kernel_size": 2}, [(8, 1, 1)],
     "input shape (8, 1, 1): kernel 2x2 is larger than the padded input 1x1 (1x1 with "
     "padding 0x0); use a smaller kernel, more padding, or remove a pooling step"),
    ("linear", {"out_features": 10}, [(16, 5, 5)],
     "input has shape (16, 5, 5), an image (C, H, W); linear acts on the last axis only; "
     "add a flatten node before it (or a permute that puts the channels last, to act on "
     "them)"),
    ("conv2d", {"out_channels": 2, "kernel_size": 3}, [(784,)],
     "conv2d input must be 3-D per sample, got shape (784,); it takes an image (C, H, W): "
     "reshape, flatten or permute the value first"),
    ("global_avgpool", {}, [(10,)], "global_avgpool input must be 3-D per sample, got shape "
                                    "(10,); it takes an image (C, H, W): reshape, flatten or "
                                    "permute the value first"),
    ("batchnorm", {}, [(3, 4)], "batchnorm input must be 1-D or 3-D per sample, got shape "
                                "(3, 4); it takes a vector (D,) or an image (C, H, W): "
                                "reshape, flatten or permute the value first"),
    *tensor_cases.SHAPE_ERRORS,
]


@pytest.mark.parametrize(("op", "params", "in_shapes", "message"), SHAPE_ERRORS)
def test_shape_errors_name_the_node_its_header_line_and_the_shapes(op, params, in_shapes,
                                                                   message):
    text = single_op_spec(op, params, in_shapes)
    header = text.splitlines().index("[nodes.x]") + 1
    with pytest.raises(CompileError) as caught:
        compile_text(text)
    assert [str(d) for d in caught.value.diagnostics] == [
        f"net.toml:{header}: node 'x' ({op}): {message}"]


# ---------------------------------------------------------------------------- graph errors

GRAPH_ERRORS = [
    pytest.param("""\
[nodes.image]
op = "input"
shape = [4]

[nodes.a]
op = "linear"
inputs = "c"
out_features = 4

[nodes.b]
op = "relu"

[nodes.c]
op = "relu"
""", ["net.toml:7: node 'a' (linear): is on a cycle: a -> b -> c -> a; a network must be "
      "acyclic"], id="cycle"),
    pytest.param("""\
[nodes.image]
op = "input"
shape = [4]
[nodes.loop]
op = "relu"
inputs = "loop"
[nodes.p]
op = "relu"
inputs = "q"
[nodes.q]
op = "relu"
inputs = ["p"]
""", ["net.toml:6: node 'loop' (relu): is on a cycle: loop -> loop; a network must be acyclic",
      "net.toml:9: node 'p' (relu): is on a cycle: p -> q -> p; a network must be acyclic"],
        id="self-loop-and-second-cycle"),
    pytest.param("""\
# no input anywhere
[nodes.a]
op = "relu"
inputs = "b"
[nodes.b]
op = "relu"
inputs = "a"
""", ['net.toml:2: no input node: add a node with op = "input" and its shape, e.g. '
      "shape = [1, 28, 28]",
      "net.toml:4: node 'a' (relu): is on a cycle: a -> b -> a; a network must be acyclic"],
        id="no-input-and-cycle"),
]


@pytest.mark.parametrize(("text", "expected"), GRAPH_ERRORS)
def test_graph_errors(tmp_path, monkeypatch, text, expected):
    assert compile_errors(tmp_path, monkeypatch, text) == expected


def test_errors_of_every_phase_are_reported_together(tmp_path, monkeypatch):
    text = """\
[network]
description = \"\"\"
Branches that fail independently.
[nodes.not_a_node]
\"\"\"

[nodes.image]
op = "input"
shape = [1, 8, 8]

[nodes.typo]
op = "conv2d"
out_channels = 4
kernal_size = 3

[nodes.big]
op = "conv2d"
inputs = "image"
out_channels = 4
kernel_size = [
    9,
    3,
]

[nodes.left]
op = "conv2d"
inputs = "image"
out_channels = 4
kernel_size = 3

[nodes.right]
op = "conv2d"
inputs = "image"
out_channels = 2
kernel_size = 3

[nodes.sum]
op = "add"
inputs = ["left", "right"]

[nodes.head]
op = "linear"
inputs = "left"
out_features = 10

[nodes.after_typo]
op = "relu"
inputs = "typo"

[nodes.orphan]
op = "relu"
inputs = "lfet"
"""
    assert compile_errors(tmp_path, monkeypatch, text) == [
        "net.toml:14: node 'typo' (conv2d): unknown field 'kernal_size'; did you mean "
        "'kernel_size'?",
        "net.toml:16: node 'big' (conv2d): input shape (1, 8, 8): kernel 9x3 is larger than "
        "the padded input 8x8 (8x8 with padding 0x0); use a smaller kernel, more padding, or "
        "remove a pooling step",
        "net.toml:37: node 'sum' (add): inputs of shapes (4, 6, 6) and (2, 6, 6) do not "
        "broadcast: axis 0 has 4 and 2; each axis must match or be 1 in one of them; insert a "
        "1x1 conv2d or a pooling node on the mismatched branch",
        "net.toml:41: node 'head' (linear): input has shape (4, 6, 6), an image (C, H, W); "
        "linear acts on the last axis only; add a flatten node before it (or a permute that "
        "puts the channels last, to act on them)",
        "net.toml:52: node 'orphan' (relu): input 'lfet' names no node; did you mean 'left'?",
    ]


def test_a_failed_compile_keeps_what_compiled_in_topological_order(tmp_path, monkeypatch):
    text = """\
[nodes.image]
op = "input"
shape = [1, 4, 4]
[nodes.bad]
op = "conv2d"
out_channels = 2
kernel_size = 5
[nodes.after]
op = "relu"
[nodes.good]
op = "conv2d"
inputs = "image"
out_channels = 2
kernel_size = 3
[nodes.typo]
op = "relux"
inputs = "good"
[nodes.tail]
op = "relu"
"""
    (tmp_path / "net.toml").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CompileError) as caught:
        compile_plan("net.toml")
    error = caught.value
    assert list(error.partial) == ["image", "good"]
    assert error.partial["good"].shape == (2, 2, 2)
    assert error.failed == {"bad": error.failed["bad"], "after": UPSTREAM_FAILED,
                            "typo": INVALID_NODE, "tail": UPSTREAM_FAILED}
    assert "kernel 5x5 is larger" in error.failed["bad"]
    assert error.order == ("image", "bad", "after", "good", "typo", "tail")
    assert [d.line for d in error.diagnostics] == [4, 16]


def test_compile_plan_of_a_spec_object_and_of_a_path_agree(tmp_path):
    path = tmp_path / "chain.toml"
    path.write_text(single_op_spec("linear", {"out_features": 3}, [(5,)]), encoding="utf-8")
    assert compile_plan(path).to_dict() == compile_plan(load_spec(path)).to_dict()


# ---------------------------------------------------------------------------- determinism

BRANCHES = """\
[nodes.image]
op = "input"
shape = [1, 8, 8]

[nodes.sum]
op = "add"
inputs = ["b2", "a2"]

[nodes.a1]
op = "conv2d"
inputs = "image"
out_channels = 2
kernel_size = 3
padding = 1

[nodes.b1]
op = "conv2d"
inputs = "image"
out_channels = 2
kernel_size = 1

[nodes.a2]
op = "relu"
inputs = "a1"

[nodes.b2]
op = "relu"
inputs = "b1"

[nodes.out]
op = "flatten"
inputs = "sum"
"""


def test_topological_order_follows_file_order_among_independent_nodes():
    plan = compile_text(BRANCHES)
    assert plan.order == ["image", "a1", "b1", "a2", "b2", "sum", "out"]
    position = {node_id: index for index, node_id in enumerate(plan.order)}
    for node in plan.nodes.values():
        assert all(position[source] < position[node.id] for source in node.inputs)


def test_topological_order_is_the_same_on_every_compile():
    orders = {tuple(compile_text(BRANCHES).order) for _ in range(5)}
    assert len(orders) == 1


def test_file_order_decides_between_independent_branches():
    swapped = BRANCHES.replace("[nodes.a1]", "[nodes.tmp]").replace("[nodes.b1]", "[nodes.a1]")
    swapped = swapped.replace("[nodes.tmp]", "[nodes.b1]")
    # b1 is now defined first (with a1's params); it must also come first
    assert compile_text(swapped).order == ["image", "b1", "a1", "a2", "b2", "sum", "out"]


def test_output_defaults_to_the_last_node_and_unused_nodes_are_left_out():
    text = BRANCHES + '\n[nodes.side]\nop = "relu"\ninputs = "a2"\n'
    plan = compile_text(text)
    assert plan.output == "side"
    assert plan.order == ["image", "a1", "a2", "side"]
    chosen = compile_text('[network]\noutput = "out"\n' + text)
    assert chosen.output == "out" and "side" not in chosen.nodes


def test_to_dict_matches_the_plan_and_scales_flops_with_batch_size():
    plan = compile_text(BRANCHES)
    data = plan.to_dict()
    assert list(data) == ["name", "output", "total_params", "total_flops", "nodes"]
    assert [n["id"] for n in data["nodes"]] == plan.order
    assert data["total_params"] == sum(n["params"] for n in data["nodes"]) == plan.total_params
    assert data["total_flops"] == sum(n["flops"] for n in data["nodes"]) == plan.total_flops
    scaled = plan.to_dict(batch_size=8)
    assert scaled["total_flops"] == 8 * data["total_flops"]
    assert scaled["total_params"] == data["total_params"]
    assert [n["flops"] for n in scaled["nodes"]] == [8 * n["flops"] for n in data["nodes"]]


def test_a_long_chain_compiles_without_quadratic_work():
    # 2,000 see-through nodes between a layer and its ReLU once took seconds
    lines = ['[nodes.x]\nop = "input"\nshape = [4]\n[nodes.fc]\nop = "linear"\nout_features = 4']
    lines += [f'[nodes.d{i}]\nop = "dropout"' for i in range(2000)]
    lines.append('[nodes.act]\nop = "relu"')
    plan = compile_text("\n".join(lines) + "\n")
    assert len(plan.nodes) == 2003
    assert plan.nodes["fc"].weight_init == "he_normal"


# ---------------------------------------------------------------------------- shipped specs

@pytest.mark.parametrize("path", shipped_architectures(), ids=lambda p: p.stem)
def test_every_shipped_architecture_compiles_in_file_order(path):
    plan = compile_plan(path)
    spec = plan.spec
    assert plan.name == path.stem
    assert plan.order == list(spec.nodes)
    assert plan.output == list(spec.nodes)[-1]
    assert spec.description
    assert plan.total_params == sum(node.n_params for node in plan.nodes.values()) > 0


@pytest.mark.parametrize(("name", "params"), [("lenet5", 61_706), ("lenet_caffe", 431_080)])
def test_shipped_parameter_counts(name, params):
    assert compile_plan(name).total_params == params


def test_lenet5_shapes():
    plan = compile_plan("lenet5")
    assert plan.shapes == {
        "image": (1, 28, 28), "conv1": (6, 28, 28), "relu1": (6, 28, 28),
        "pool1": (6, 14, 14), "conv2": (16, 10, 10), "relu2": (16, 10, 10),
        "pool2": (16, 5, 5), "flatten": (400,), "fc1": (120,), "relu3": (120,),
        "fc2": (84,), "relu4": (84,), "fc3": (10,),
    }
    assert plan.total_flops == 852_370
