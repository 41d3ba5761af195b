"""ONNX export and import: every shipped architecture exports, passes ONNX's full checker and
matches onnxruntime; netspec -> ONNX -> netspec gives the same plan, weights and outputs; the
commands write what they say; hostile and unsupported models are refused with every reason
and without a file left behind."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from netspec.cli import main  # noqa: E402
from netspec.common.errors import NetspecError  # noqa: E402
from netspec.common.extras import install_line  # noqa: E402
from netspec.interchange.onnx_export import (  # noqa: E402
    check_exported,
    export_onnx,
)
from netspec.interchange.onnx_import import (  # noqa: E402
    OnnxImportError,
    clean_id,
    import_onnx,
    parse_onnx_bytes,
    toml_string,
    translate,
)
from netspec.interchange.onnx_ops import EXPORT_REFUSED, EXPORTERS  # noqa: E402
from netspec.lang.spec import shipped_architectures  # noqa: E402
from netspec.ops import REGISTRY  # noqa: E402
from netspec.ops.shapes import pair  # noqa: E402
from netspec.plan.compiler import Plan, compile_plan  # noqa: E402
from netspec.runtime.executor import Network  # noqa: E402
from netspec.weights.checkpoint import read_checkpoint, save_checkpoint  # noqa: E402

SHIPPED = [path.stem for path in shipped_architectures()]
# ViT-B/16 with two of its twelve encoder layers (every op it has; its full 346 MB file is
# exported by hand, see tests/test_onnx_transformers.py)
REDUCED = {"vit_b_16": {"layers": 2}}
# Known gaps, each an expected failure that fails the suite once fixed (strict), so that it is
# taken off this list: netspec's import does not yet read back its own ONNX forms of
# transpose/permute, layer norms, per-sample reshape, slice and attention node for node, and
# multihead_attention's ONNX form splits in_proj into q, k and v initializers
ROUND_TRIP_PENDING: set[str] = set()
KEYS_PENDING: set[str] = set()


def pending(names: set[str], reason: str) -> list:
    return [pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=reason))
            if name in names else name for name in SHIPPED]
# fields that say how weights start, not what the network computes: an import has the weights
INIT_FIELDS = {"init", "init_scale", "bias_init", "weight", "weight_file", "trainable", "value"}


def run_cli(*argv: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def trained_like(plan: Plan, seed: int = 1) -> Network:
    """The spec's network with batchnorm statistics that are not the identity's."""
    net = Network(plan, seed=0)
    rng = np.random.default_rng(seed)
    for key, value in net.buffers.items():
        value[...] = rng.uniform(0.5, 1.5, value.shape) if key.endswith("running_var") \
            else rng.normal(0, 0.2, value.shape)
    for key, value in net.params.items():
        if key.endswith(".bias"):
            value[...] = rng.normal(0, 0.1, value.shape)
    return net


def sample(plan: Plan, seed: int) -> np.ndarray:
    """Random inputs for ``plan``: two samples, one for the 224x224 ResNets (time in CI)."""
    shape = plan.nodes[plan.inputs[0]].shape
    batch = 1 if np.prod(shape) > 100_000 else 2
    return np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)


def onnxruntime_output(model, feeds: dict[str, np.ndarray]) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(ours).max())


# --------------------------------------------------------------------------------------------
# The per-op table


def test_every_registered_op_has_an_exporter_or_a_stated_refusal() -> None:
    for op in REGISTRY:
        assert (op in EXPORTERS) != (op in EXPORT_REFUSED), op
    assert set(EXPORTERS) | set(EXPORT_REFUSED) == set(REGISTRY)
    assert all(isinstance(reason, str) and reason for reason in EXPORT_REFUSED.values())


# --------------------------------------------------------------------------------------------
# Export


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_architectures_export_check_and_match_onnxruntime(name: str) -> None:
    plan = compile_plan(name, REDUCED.get(name))
    net = trained_like(plan)
    model = export_onnx(plan, net.state())
    check_exported(model)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    x = sample(plan, 2)
    ours = net.forward(x)
    theirs = onnxruntime_output(model, {plan.inputs[0]: x})
    assert theirs.shape == ours.shape
    assert relative_error(ours, theirs) <= 1e-5


@pytest.mark.parametrize("name", pending(KEYS_PENDING, "multihead_attention exports its "
                                          "in_proj as separate q, k, v initializers"))
def test_exported_names_are_netspecs(name: str) -> None:
    plan = compile_plan(name, REDUCED.get(name))
    net = Network(plan)
    model = export_onnx(plan, net.state())
    graph = model.graph
    # every parameter and buffer under its key; any other initializer is a constant an op's
    # ONNX form needs (a shape, an axis), named after its node
    initializers = {t.name for t in graph.initializer}
    assert set(net.state()) <= initializers
    assert all(name.split("/")[0] in plan.nodes for name in initializers - set(net.state()))
    node_names = {n.name for n in graph.node}
    # an input is the graph's input, a learned tensor an initializer; dropout and stochastic
    # depth are the identity of inference
    kept = {n.id for n in plan.nodes.values()
            if n.op_name not in ("input", "dropout", "stochastic_depth", "parameter")}
    assert kept <= node_names
    batch = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.HasField("dim_value")
    props = {p.key: p.value for p in model.metadata_props}
    assert props["name"] == plan.name and props["description"] == plan.spec.description
    # the inference graph: dropout gone, batchnorm with its running statistics
    assert "Dropout" not in {n.op_type for n in graph.node}
    for node in graph.node:
        if node.op_type == "BatchNormalization":
            assert node.input[3].endswith(".running_mean")
            assert node.input[4].endswith(".running_var")


def test_export_command_with_and_without_weights(tmp_path: Path) -> None:
    code, out, err = run_cli("export", "convnet_bn", "-o", tmp_path / "initial.onnx")
    assert code == 0, err
    assert f"wrote {tmp_path / 'initial.onnx'}" in out and "weights initial, seed" in out
    assert "checked against onnxruntime: max |difference|" in out
    assert "please report" not in out
    plan = compile_plan("convnet_bn")
    net = trained_like(plan)
    save_checkpoint(tmp_path / "w.npz", net, meta={"mean": 0.1307, "std": 0.3081})
    code, out, err = run_cli("export", "convnet_bn", "--weights", tmp_path / "w.npz", "-o",
                             tmp_path / "trained.onnx")
    assert code == 0, err
    model = onnx.load(tmp_path / "trained.onnx")
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for key, value in net.state().items():
        np.testing.assert_array_equal(weights[key], value)
    props = {p.key: p.value for p in model.metadata_props}
    assert float(props["netspec.mean"]) == pytest.approx(0.1307)
    initial = onnx.load(tmp_path / "initial.onnx")
    seeded = Network(plan, seed=0).state()
    for tensor in initial.graph.initializer:
        np.testing.assert_array_equal(numpy_helper.to_array(tensor), seeded[tensor.name])


@pytest.mark.parametrize("argv, message", [
    (["export", "lenet5", "-o", "net.txt"], "cannot tell the format from the suffix '.txt'"),
    (["export", "lenet5", "--weights", "missing.npz", "-o", "x.onnx"], "no such weights file"),
    (["export", "nosuchnet", "-o", "x.onnx"], "no shipped architecture of that name"),
])
def test_export_errors(argv: list[str], message: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(*argv)
    assert code == 1 and message in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_weights_of_another_spec_are_refused_by_export(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "w.npz", Network(compile_plan("mlp")))
    code, _, err = run_cli("export", "lenet5", "--weights", tmp_path / "w.npz", "-o",
                           tmp_path / "x.onnx")
    assert code == 1 and "these weights belong to spec 'mlp'" in err
    assert not (tmp_path / "x.onnx").exists()


# --------------------------------------------------------------------------------------------
# Round trips


def same_plan(a: Plan, b: Plan) -> None:
    assert a.name == b.name and a.output == b.output and a.inputs == b.inputs
    assert list(a.nodes) == list(b.nodes)
    for node_id, x in a.nodes.items():
        y = b.nodes[node_id]
        if (x.op_name, y.op_name) == ("adaptive_avgpool2d", "avgpool2d"):
            # equal windows (VGG's 7x7 of 7x7) are ONNX's AveragePool, which reads back as
            # the average pool it is
            assert (x.inputs, x.shape) == (y.inputs, y.shape), node_id
            windows = [size // out for size, out in zip(x.input_shapes[0][1:], x.shape[1:])]
            assert list(y.op.geometry[0]) == windows, node_id
            continue
        assert (x.op_name, x.inputs, x.shape) == (y.op_name, y.inputs, y.shape), node_id
        # the same tensors (how each starts is an init field: an import has the weights)
        assert shapes(x.param_specs) == shapes(y.param_specs), node_id
        assert shapes(x.buffer_specs) == shapes(y.buffer_specs), node_id
        # a window's geometry may be written several ways (3 or [3, 3]; stride omitted)
        assert getattr(x.op, "geometry", None) == getattr(y.op, "geometry", None), node_id
        written = INIT_FIELDS | {"inputs", "kernel_size", "stride", "padding"}
        assert as_float32(x.params.model_dump(exclude=written)) == \
            as_float32(y.params.model_dump(exclude=written)), node_id


def shapes(specs: dict) -> dict:
    return {name: spec.shape for name, spec in specs.items()}


def as_float32(fields: dict) -> dict:
    """Fields as ONNX holds them: its float attributes (a batchnorm's momentum and eps) are
    float32, so MNASNet's momentum 1 - 0.9997 comes back as 0.0003."""
    return {key: float(np.float32(value)) if isinstance(value, float) else value
            for key, value in fields.items()}


@pytest.mark.parametrize("name", pending(ROUND_TRIP_PENDING, "the import does not read back "
                                          "every new op's ONNX form yet"))
def test_netspec_onnx_netspec_gives_the_same_plan_weights_and_outputs(name: str) -> None:
    plan = compile_plan(name, REDUCED.get(name))
    net = trained_like(plan)
    model = parse_onnx_bytes(export_onnx(plan, net.state()).SerializeToString())
    imported = translate(model, source=f"{name}.onnx")
    same_plan(plan, imported.plan)
    assert imported.plan.spec.description == plan.spec.description
    for key, value in net.state().items():
        np.testing.assert_array_equal(imported.network.state()[key], value)
    x = sample(plan, 3)
    np.testing.assert_array_equal(imported.network.forward(x), net.forward(x))


# netspec's ONNX forms of the tensor ops, with the fields a round trip could lose: bounds and
# axes counted from the end, an open slice, a -1 in a reshape, learned tensors with and without
# their batch axis, attention with its causal mask, as cross-attention and without biases
TOKEN_OPS = """
[network]
name = "tokens"
[nodes.tokens]
op = "input"
shape = [6, 16]
[nodes.memory]
op = "linear"
inputs = "tokens"
out_features = 16
[nodes.offset]
op = "parameter"
shape = [6, 16]
[nodes.shifted]
op = "add"
inputs = ["tokens", "offset"]
[nodes.norm]
op = "layernorm"
normalized_shape = [16]
eps = 1e-6
[nodes.plain]
op = "layernorm"
normalized_shape = [16]
elementwise_affine = false
[nodes.masked]
op = "multihead_attention"
embed_dim = 16
num_heads = 4
causal = true
dropout = 0.25
[nodes.cross]
op = "multihead_attention"
inputs = ["masked", "memory", "memory"]
embed_dim = 16
num_heads = 2
bias = false
[nodes.start]
op = "parameter"
shape = [1, 1, 16]
batch_axis = true
[nodes.joined]
op = "concat"
inputs = ["start", "cross"]
dim = -2
[nodes.late]
op = "slice"
dim = -2
start = -4
[nodes.early]
op = "slice"
inputs = "joined"
dim = 1
end = 3
step = 2
[nodes.both]
op = "concat"
inputs = ["late", "early"]
dim = 1
[nodes.grid]
op = "reshape"
shape = [-1, 4, 4]
[nodes.swapped]
op = "permute"
dims = [0, 2, 3, 1]
[nodes.turned]
op = "transpose"
dim0 = -1
dim1 = 1
[nodes.merged]
op = "flatten"
start_dim = 2
[nodes.picked]
op = "select"
dim = -2
index = -1
[nodes.line]
op = "reshape"
shape = [-1]
[nodes.scores]
op = "softmax"
dim = -1
"""

IMAGE_OPS = """
[network]
name = "image"
[nodes.image]
op = "input"
shape = [8, 5, 5]
[nodes.norm]
op = "layernorm2d"
normalized_shape = 8
[nodes.shuffled]
op = "channel_shuffle"
groups = 4
[nodes.scale]
op = "parameter"
shape = [8, 1, 1]
value = 0.5
[nodes.scaled]
op = "mul"
inputs = ["scale", "shuffled"]
[nodes.pooled]
op = "global_avgpool"
[nodes.mean]
op = "mean"
inputs = "scaled"
dim = [2, 3]
[nodes.plain]
op = "layernorm2d"
inputs = "norm"
normalized_shape = 8
elementwise_affine = false
[nodes.kept]
op = "mean"
inputs = "plain"
dim = [-1, -2]
keepdim = true
[nodes.pool]
op = "adaptive_avgpool2d"
inputs = "kept"
output_size = 1
[nodes.flat]
op = "flatten"
[nodes.both]
op = "add"
inputs = ["pooled", "mean", "flat"]
"""


@pytest.mark.parametrize("text", [TOKEN_OPS, IMAGE_OPS], ids=["tokens", "image"])
def test_every_tensor_ops_onnx_form_reads_back_as_written(text: str) -> None:
    from netspec.lang.spec import parse_spec

    plan = compile_plan(parse_spec(text))
    net = trained_like(plan)
    rng = np.random.default_rng(4)
    for value in net.params.values():  # weights that are not their initial values
        value[...] = rng.normal(0, 0.5, value.shape)
    model = export_onnx(plan, net.state())
    check_exported(model)
    x = sample(plan, 5)
    assert relative_error(net.forward(x), onnxruntime_output(model, {plan.inputs[0]: x})) < 1e-5
    imported = translate(parse_onnx_bytes(model.SerializeToString()))
    same_plan(plan, imported.plan)
    for key, value in net.state().items():
        np.testing.assert_array_equal(imported.network.state()[key], value)
    np.testing.assert_array_equal(imported.network.forward(x), net.forward(x))


def test_a_recorded_form_is_taken_only_where_it_computes_what_the_graph_does() -> None:
    """The metadata names netspec's op where two share an ONNX form (transpose and permute,
    flatten and reshape); a record that does not compute what the graph computes is
    ignored: a transpose of two other axes of equal size, a reshape to another shape."""
    from netspec.lang.spec import parse_spec

    plan = compile_plan(parse_spec(TOKEN_OPS))
    model = export_onnx(plan, trained_like(plan).state())
    props = {p.key: p for p in model.metadata_props}
    records = {r["id"]: r for r in json.loads(props["netspec.forms"].value)}
    assert records["turned"] == {"id": "turned", "op": "transpose",
                                 "fields": {"dim0": -1, "dim1": 1}}
    assert translate(model).plan.nodes["turned"].op_name == "transpose"
    records["turned"]["fields"] = {"dim0": 1, "dim1": 2}  # (4, 4, 6): the same shape
    records["merged"] = {"id": "merged", "op": "reshape", "fields": {"shape": [16, 6]}}
    props["netspec.forms"].value = json.dumps(list(records.values()))
    imported = translate(model)
    assert imported.plan.nodes["turned"].op_name == "permute"
    assert imported.plan.nodes["merged"].op_name == "reshape"
    assert imported.plan.nodes["merged"].params.shape == [6, 16]
    x = sample(plan, 7)
    assert relative_error(imported.network.forward(x),
                          onnxruntime_output(model, {plan.inputs[0]: x})) < 1e-5


def test_an_attention_form_that_is_not_attention_is_read_op_by_op() -> None:
    """netspec's attention form with a scale other than 1/sqrt(head width) is no
    multihead_attention: it reads back as the ops it is, computing the same."""
    from netspec.lang.spec import parse_spec

    plan = compile_plan(parse_spec(TOKEN_OPS))
    net = trained_like(plan)
    model = export_onnx(plan, net.state())
    for tensor in model.graph.initializer:
        if tensor.name == "cross/scale":
            tensor.CopyFrom(numpy_helper.from_array(np.array(0.3, np.float32), tensor.name))
    imported = translate(parse_onnx_bytes(model.SerializeToString()))
    ops = [n.op_name for n in imported.plan.nodes.values()]
    assert ops.count("multihead_attention") == 1 and "softmax" in ops and "matmul" in ops
    x = sample(plan, 6)
    assert relative_error(imported.network.forward(x),
                          onnxruntime_output(model, {plan.inputs[0]: x})) < 1e-5


def test_import_command_writes_a_spec_and_weights_that_every_command_takes(
        tmp_path: Path, mnist_dir: Path) -> None:
    plan = compile_plan("lenet5")
    net = trained_like(plan)
    save_checkpoint(tmp_path / "w.npz", net, meta={"mean": 0.1307, "std": 0.3081})
    assert run_cli("export", "lenet5", "--weights", tmp_path / "w.npz", "-o",
                   tmp_path / "m.onnx")[0] == 0
    code, out, err = run_cli("import", tmp_path / "m.onnx", "-o", tmp_path / "net" / "net.toml")
    assert code == 0, err
    spec, weights = tmp_path / "net" / "net.toml", tmp_path / "net" / "net.npz"
    assert "12 ONNX nodes -> 13 netspec nodes, 61,706 params" in out
    assert "checked against onnxruntime: max |difference|" in out and "report" not in out
    assert "mean 0.1307, std 0.3081, from the model's metadata" in out
    checkpoint = read_checkpoint(weights)
    assert checkpoint.meta["mean"] == pytest.approx(0.1307)
    for key, value in net.params.items():
        np.testing.assert_array_equal(checkpoint.params[key], value)
    assert run_cli("compile", spec)[0] == 0
    code, out, err = run_cli("evaluate", spec, "--weights", weights, "--data-dir", mnist_dir)
    assert code == 0 and "test accuracy" in out, err
    digit = tmp_path / "digit.npy"
    np.save(digit, np.zeros((28, 28), dtype=np.uint8))
    code, out, err = run_cli("predict", spec, "--weights", weights, digit)
    assert code == 0 and str(digit) in out, err
    code, out, err = run_cli("train", spec, "--weights", weights, "--out", tmp_path / "run",
                             "--data-dir", mnist_dir, "--epochs", "1", "--limit", "200",
                             "--validation", "100", "--batch-size", "50", "--no-plots")
    assert code == 0 and "starting from" in out, err
    code, out, err = run_cli("export", spec, "--weights", weights, "-o", tmp_path / "again.onnx")
    assert code == 0, err
    again = onnx.load(tmp_path / "again.onnx")
    assert [n.op_type for n in again.graph.node] == [
        n.op_type for n in onnx.load(tmp_path / "m.onnx").graph.node]


def test_import_without_normalisation_says_what_it_assumed(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(export_onnx(compile_plan("mlp"), Network(compile_plan("mlp")).state()), path)
    code, out, _ = run_cli("import", path, "-o", tmp_path / "a.toml")
    assert code == 0 and "mean 0, std 1, pixels scaled to [0, 1] as they are" in out
    code, out, _ = run_cli("import", path, "-o", tmp_path / "b.toml", "--mean", "0.5",
                           "--std", "0.25")
    assert code == 0 and "mean 0.5, std 0.25, as given" in out
    assert read_checkpoint(tmp_path / "b.npz").meta["std"] == 0.25


# --------------------------------------------------------------------------------------------
# Hand-built models


def value(name: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def initializer(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def model_of(nodes: list, inputs: list, outputs: list, initializers: list = (),
             opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def conv_model(name: str = "/features/features.1/conv/conv.0/Conv", group: int = 1,
               **attributes) -> onnx.ModelProto:
    weight = np.ones((4, 4 // group, 3, 3))
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name=name, group=group, **attributes)]
    return model_of(nodes, [value("x", ["N", 4, 8, 8])], [value("y", None)],
                    [initializer("w", weight)])


def test_hierarchical_names_become_module_paths() -> None:
    assert clean_id("/layer1/layer1.0/conv1/Conv", "Conv") == "layer1.0.conv1"
    assert clean_id("/features/features.1/conv/conv.0/Conv", "Conv") == "features.1.conv.0"
    assert clean_id("/layer1/layer1.0/relu_1/Relu", "Relu") == "layer1.0.relu_1"
    assert clean_id("/Flatten", "Flatten") == "flatten"
    assert clean_id("conv 1\n\"x\"", "Conv") == "conv_1__x_"
    assert clean_id("", "Gemm") == "gemm"
    assert clean_id("a" * 500, "Relu") == "a" * 128


def test_toml_strings_escape_everything_that_could_break_out() -> None:
    import tomllib

    for text in ['a"b', "back\\slash", "new\nline", "\x00\x1f\x7f", "tab\t", "ünï"]:
        assert tomllib.loads(f"k = {toml_string(text)}")["k"] == text


def test_a_hostile_description_stays_data(tmp_path: Path) -> None:
    model = conv_model(name="c")
    model.doc_string = 'x"\n[nodes.evil]\nop = "relu"\n'
    helper.set_model_props(model, {"name": "n\nop = 1"})
    imported = translate(model)
    assert "evil" not in imported.plan.nodes and imported.plan.spec.description == \
        model.doc_string
    assert imported.name == "n_op___1"


def test_auto_pad_same_and_ceil_mode_are_honoured_where_netspec_can() -> None:
    imported = translate(conv_model(name="c", auto_pad="SAME_UPPER"))
    assert imported.plan.nodes["c"].shape == (4, 8, 8)
    pool = model_of([helper.make_node("MaxPool", ["x"], ["y"], name="p", kernel_shape=[2, 2],
                                      strides=[2, 2], ceil_mode=1)],
                    [value("x", ["N", 1, 8, 8])], [value("y", None)])
    assert translate(pool).plan.nodes["p"].shape == (1, 4, 4)


def test_grouped_and_dilated_convolutions_import_and_match_onnxruntime() -> None:
    rng = np.random.default_rng(0)
    for group, dilations, channels in ((4, [1, 1], 4), (2, [2, 1], 4), (1, [2, 2], 3),
                                       (6, [2, 2], 6)):
        weight = rng.standard_normal((6 if group != 4 else 8, channels // group, 3, 3))
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="c", group=group,
                                dilations=dilations, pads=[2, 1, 2, 1], strides=[1, 2])
        model = model_of([node], [value("x", ["N", channels, 9, 8])], [value("y", None)],
                         [initializer("w", weight), initializer("b", rng.standard_normal(
                             weight.shape[0]))])
        imported = translate(model)
        params = imported.plan.nodes["c"].params
        assert (params.groups, list(pair(params.dilation))) == (group, dilations)
        x = rng.standard_normal((2, channels, 9, 8)).astype(np.float32)
        ours = imported.network.forward(x)
        assert relative_error(ours, onnxruntime_output(model, {"x": x})) < 1e-5
        again = export_onnx(imported.plan, imported.network.state())
        onnx.checker.check_model(again, full_check=True)
        assert relative_error(ours, onnxruntime_output(again, {"x": x})) < 1e-5


@pytest.mark.parametrize("sizes", ["attribute", "input", "equal"])
def test_split_and_trilu_of_weights_are_folded(sizes: str) -> None:
    """A packed weight cut by Split (its sizes an attribute before opset 13, an input from it,
    or equal parts) and a triangle of one (Trilu, from opset 14) are constants: each product
    of the input by one is a linear layer."""
    rng = np.random.default_rng(0)
    opset = 11 if sizes == "attribute" else 14
    packed = rng.standard_normal((4, 8 if sizes == "equal" else 6))
    inputs = ["w", "sizes"] if sizes == "input" else ["w"]
    nodes = [helper.make_node("Split", inputs, ["w1", "w2"], name="cut", axis=1,
                              **({"split": [2, 4]} if sizes == "attribute" else {})),
             helper.make_node("MatMul", ["x", "w2"], ["h" if opset >= 14 else "y"],
                              name="first")]
    initializers = [initializer("w", packed),
                    numpy_helper.from_array(np.array([2, 4], np.int64), "sizes")]
    if opset >= 14:
        nodes += [helper.make_node("Trilu", ["square", "k"], ["lower"], name="tri", upper=0),
                  helper.make_node("MatMul", ["h", "lower"], ["y"], name="second")]
        initializers += [initializer("square", rng.standard_normal((4, 4))),
                         numpy_helper.from_array(np.array(-1, np.int64), "k")]
    model = model_of(nodes, [value("x", ["N", 4])], [value("y", None)], initializers, opset)
    imported = translate(model)
    assert [n.op_name for n in imported.plan.nodes.values()][1:] == \
        ["linear"] * (2 if opset >= 14 else 1)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    assert relative_error(imported.network.forward(x), onnxruntime_output(model, {"x": x})) \
        < 1e-5


def test_matmul_then_add_is_one_linear_layer() -> None:
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((6, 3)), rng.standard_normal(3)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="/fc/MatMul"),
             helper.make_node("Add", ["h", "b"], ["y"], name="/fc/Add")]
    model = model_of(nodes, [value("x", ["N", 6])], [value("y", None)],
                     [initializer("w", w), initializer("b", b)])
    imported = translate(model)
    assert list(imported.plan.nodes) == ["x", "fc"]
    x = rng.standard_normal((2, 6)).astype(np.float32)
    np.testing.assert_allclose(imported.network.forward(x), x @ w + b, rtol=1e-5)


def test_symbolic_input_axes_need_the_input_shape(tmp_path: Path) -> None:
    model = model_of([helper.make_node("Relu", ["x"], ["y"], name="r")],
                     [value("x", ["N", 1, "H", "W"])], [value("y", None)])
    with pytest.raises(OnnxImportError, match=r"symbolic axes \[.H., .W.\]; pass the "
                                              r"per-sample sizes with --input-shape, e.g. "
                                              r"1,224,224"):
        translate(model)
    assert translate(model, input_shape=(1, 28, 28)).plan.nodes["x"].shape == (1, 28, 28)
    onnx.save(model, tmp_path / "m.onnx")
    code, out, err = run_cli("import", tmp_path / "m.onnx", "-o", tmp_path / "n.toml",
                             "--input-shape", "1,28,28")
    assert code == 0, err


# --------------------------------------------------------------------------------------------
# Refusals: every reason at once, exit 1, no traceback, no file left behind


def external_model(location: str, length: int = 576) -> onnx.ModelProto:
    model = conv_model(name="c")
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, entry in (("location", location), ("offset", "0"), ("length", str(length))):
        tensor.external_data.add(key=key, value=entry)
    return model


def huge_model() -> onnx.ModelProto:
    model = conv_model(name="c")
    tensor = model.graph.initializer[0]
    del tensor.dims[:]
    tensor.dims.extend([2**30, 2**30])
    return model


def loop_model() -> onnx.ModelProto:
    body = helper.make_graph([helper.make_node("Identity", ["c"], ["c_out"])], "body",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                              helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                             [helper.make_tensor_value_info("c_out", TensorProto.BOOL, [])])
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="r"),
             helper.make_node("Loop", ["", ""], [], name="/loop/Loop", body=body),
             helper.make_node("Relu", ["r"], ["y"], name="r2")]
    return model_of(nodes, [value("x", ["N", 3])], [value("y", None)])


def many_problems_model() -> onnx.ModelProto:
    w = np.ones((8, 1, 3, 3))
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], group=3, pads=[1, 1, 1, 1],
                              name="/features/features.1/conv/conv.0/Conv"),
             helper.make_node("Erf", ["a"], ["b"], name="/act/Erf"),
             helper.make_node("MaxPool", ["b"], ["c"], name="/pool/MaxPool", kernel_shape=[2, 2],
                              dilations=[2, 2]),
             helper.make_node("Softmax", ["c"], ["y"], name="/head/Softmax", axis=3)]
    return model_of(nodes, [value("x", ["N", 8, 8, 8])], [value("y", None)],
                    [initializer("w", w)])


# name -> (how to make the file in a directory, what the user must read)
BAD_FILES = {
    "empty": (lambda d: (d / "m.onnx").write_bytes(b""), "the file is empty"),
    "text": (lambda d: (d / "m.onnx").write_text("hello, this is not a model\n" * 20),
             "not a"),
    "truncated": (lambda d: (d / "m.onnx").write_bytes(
        conv_model().SerializeToString()[:-37]), "not a readable ONNX model"),
    "npz": (lambda d: save_checkpoint(d / "m.onnx", Network(compile_plan("mlp"))), "not a"),
    "control flow": (lambda d: onnx.save(loop_model(), d / "m.onnx"),
                     "node '/loop/Loop' (Loop): control flow is not supported"),
    "2^60 values": (lambda d: onnx.save(huge_model(), d / "m.onnx"),
                    "claims 1,152,921,504,606,846,976 values"),
    "external data outside": (lambda d: onnx.save(external_model("../secret.bin"), d / "m.onnx"),
                              "outside the model's directory"),
    "external data absolute": (lambda d: onnx.save(external_model("/etc/passwd"), d / "m.onnx"),
                               "must be a path relative to the model's directory"),
    "external data missing": (lambda d: onnx.save(external_model("w.bin"), d / "m.onnx"),
                              "'w.bin', which does not exist"),
    "external data short": (lambda d: ((d / "w.bin").write_bytes(b"\0" * 10),
                                       onnx.save(external_model("w.bin"), d / "m.onnx")),
                            "of 'w.bin', which holds 10"),
    "groups that do not fit the weight": (
        lambda d: onnx.save(conv_model(group=3), d / "m.onnx"),
        "node '/features/features.1/conv/conv.0/Conv' (Conv): the weight [4, 1, 3, 3] in "
        "group=3 groups expects 3 input channels, the input has 4"),
    "old opset": (lambda d: onnx.save(model_of(
        [helper.make_node("Relu", ["x"], ["y"], name="r")], [value("x", ["N", 3])],
        [value("y", None)], opset=6), d / "m.onnx"), "opset 6 is older than netspec reads"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_are_refused_without_a_traceback_or_a_file(case: str, tmp_path: Path) -> None:
    make, message = BAD_FILES[case]
    make(tmp_path)
    before = set(tmp_path.iterdir())
    with pytest.raises(NetspecError, match=None) as refusal:
        import_onnx(tmp_path / "m.onnx")
    assert message in str(refusal.value)
    code, out, err = run_cli("import", tmp_path / "m.onnx", "-o", tmp_path / "net.toml")
    assert code == 1 and message in err and "Traceback" not in err, err
    assert set(tmp_path.iterdir()) == before


def test_external_data_beside_the_model_is_read(tmp_path: Path) -> None:
    model = conv_model(name="c")
    weight = numpy_helper.to_array(model.graph.initializer[0])
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, location="w.bin",
              size_threshold=0)
    assert (tmp_path / "w.bin").exists()
    imported = import_onnx(tmp_path / "m.onnx")
    np.testing.assert_array_equal(imported.network.params["c.weight"], weight)


@pytest.mark.parametrize("case", ["empty", "truncated", "external data outside"])
def test_bad_files_in_a_real_process_exit_1_without_a_traceback(case: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    BAD_FILES[case][0](tmp_path)
    done = subprocess.run([sys.executable, "-m", "netspec", "import", str(tmp_path / "m.onnx"),
                           "-o", str(tmp_path / "net.toml")], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert BAD_FILES[case][1] in done.stderr
    assert not (tmp_path / "net.toml").exists()


def test_weights_too_large_for_one_onnx_file_are_refused(monkeypatch) -> None:
    import netspec.interchange.onnx_export as onnx_export

    monkeypatch.setattr(onnx_export, "MAX_PROTOBUF_BYTES", 1000)
    plan = compile_plan("lenet5")
    with pytest.raises(NetspecError, match="do not fit in one ONNX file"):
        export_onnx(plan, Network(plan).state())


def test_every_unsupported_op_and_attribute_is_listed_by_node_name(tmp_path: Path) -> None:
    onnx.save(many_problems_model(), tmp_path / "m.onnx")
    code, _, err = run_cli("import", tmp_path / "m.onnx", "-o", tmp_path / "net.toml")
    assert code == 1
    # softmax over axis 3 imports now (softmax takes any dim)
    assert "cannot import (3 problems)" in err
    assert ("node '/features/features.1/conv/conv.0/Conv' (Conv): the weight [8, 1, 3, 3] in "
            "group=3 groups expects 3 input channels, the input has 8") in err
    assert "node '/act/Erf' (Erf): the op Erf is not supported" in err
    assert "node '/pool/MaxPool' (MaxPool): dilations=[2, 2] is not supported" in err
    assert not (tmp_path / "net.toml").exists() and not (tmp_path / "net.npz").exists()


def test_the_memory_guard_answers_before_allocating(monkeypatch) -> None:
    import netspec.interchange.onnx_translator as onnx_translator

    model = conv_model(name="c")
    tensor = model.graph.initializer[0]
    tensor.dims[0] = 10**7  # 3.6e8 values: within the per-tensor bound, not within memory
    monkeypatch.setattr(onnx_translator, "available_memory", lambda: 2**30)
    with pytest.raises(OnnxImportError, match="claim 1,440,000,000 bytes; this machine has "
                                              "1,073,741,824 available"):
        translate(model)


def test_missing_onnx_says_what_to_install(monkeypatch, tmp_path: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if it were not installed
    for argv in (["export", "lenet5", "-o", tmp_path / "x.onnx"],
                 ["import", tmp_path / "x.onnx", "-o", tmp_path / "x.toml"]):
        code, _, err = run_cli(*argv)
        assert code == 1 and install_line("onnx") in err, err
    assert not list(tmp_path.iterdir())


def test_import_refuses_a_spec_path_that_is_not_toml(tmp_path: Path) -> None:
    code, _, err = run_cli("import", tmp_path / "m.onnx", "-o", tmp_path / "net.json")
    assert code == 1 and "must be a .toml file" in err


def test_dropout_metadata_that_does_not_fit_is_ignored() -> None:
    plan = compile_plan("convnet_bn")
    model = export_onnx(plan, Network(plan).state())
    for prop in model.metadata_props:
        if prop.key == "netspec.dropout":
            prop.value = json.dumps([{"id": "x", "input": "nowhere", "p": 0.5,
                                      "consumers": ["fc2"]}, "junk", {"id": 3}])
    imported = translate(model)
    assert "dropout" not in {n.op_name for n in imported.plan.nodes.values()}


# --------------------------------------------------------------------------------------------
# Damaged models, at random


def small_models() -> list[bytes]:
    """A netspec export using most ops, a PyTorch-style flatten by shape arithmetic, and
    netspec's exports of the tensor ops."""
    from netspec.lang.spec import parse_spec

    spec = parse_spec("""
[nodes.x]
op = "input"
shape = [2, 6, 6]
[nodes.c]
op = "conv2d"
out_channels = 3
kernel_size = 3
padding = 1
[nodes.b]
op = "batchnorm"
[nodes.r]
op = "leaky_relu"
[nodes.p]
op = "maxpool2d"
kernel_size = 2
[nodes.a]
op = "avgpool2d"
inputs = "r"
kernel_size = 2
[nodes.j]
op = "concat"
inputs = ["p", "a"]
[nodes.f]
op = "flatten"
[nodes.d]
op = "dropout"
[nodes.l]
op = "linear"
out_features = 4
[nodes.s]
op = "softmax"
""")
    plan = compile_plan(spec)
    exported = export_onnx(plan, Network(plan).state()).SerializeToString()
    shape_chain = [
        helper.make_node("Shape", ["x"], ["s"], name="/Shape"),
        helper.make_node("Constant", [], ["i"], name="/Constant",
                         value=numpy_helper.from_array(np.array(0, dtype=np.int64))),
        helper.make_node("Gather", ["s", "i"], ["n"], name="/Gather", axis=0),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="/Unsqueeze"),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], name="/Concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"], name="/Reshape"),
    ]
    flattening = model_of(shape_chain, [value("x", ["N", 2, 3, 3])], [value("y", None)],
                          [numpy_helper.from_array(np.array([0], dtype=np.int64), "axes"),
                           numpy_helper.from_array(np.array([-1], dtype=np.int64), "minus1")])
    # netspec's multi-node forms (attention, learned tensors, channel shuffle, ...), which the
    # import recognises as regions
    forms = [export_onnx(compile_plan(parse_spec(text)),
                         Network(compile_plan(parse_spec(text))).state()).SerializeToString()
             for text in (TOKEN_OPS, IMAGE_OPS)]
    return [exported, flattening.SerializeToString(), *forms]


SMALL_MODELS = small_models()


def test_the_small_models_import() -> None:
    for blob in SMALL_MODELS:
        translate(parse_onnx_bytes(blob))
    flat = translate(parse_onnx_bytes(SMALL_MODELS[1]))
    assert [n.op_name for n in flat.plan.nodes.values()] == ["input", "flatten"]


# as in test_properties.py: NETSPEC_HYPOTHESIS_PROFILE=long runs 20 times as many
DAMAGED_EXAMPLES = 200 * (20 if os.environ.get("NETSPEC_HYPOTHESIS_PROFILE") == "long" else 1)


@settings(max_examples=DAMAGED_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_damaged_models_are_imported_or_refused_never_crash(data) -> None:
    blob = bytearray(data.draw(st.sampled_from(SMALL_MODELS)))
    for _ in range(data.draw(st.integers(1, 4))):
        if len(blob) < 2:
            break
        where = data.draw(st.integers(0, len(blob) - 1))
        kind = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if kind == "flip":
            blob[where] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set":
            blob[where] = data.draw(st.integers(0, 255))
        elif kind == "insert":
            blob[where:where] = data.draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del blob[where:where + data.draw(st.integers(1, 8))]
        else:
            del blob[max(where, 1):]
    try:
        imported = translate(parse_onnx_bytes(bytes(blob)))
    except NetspecError:
        return
    # what imports is a network netspec can run
    imported.network.forward(np.zeros((1, *imported.plan.nodes[imported.plan.inputs[0]].shape),
                                      dtype=np.float32))


def _small_integer(data) -> int:
    return data.draw(st.sampled_from([-5, -2, -1, 0, 1, 2, 3, 4, 7, 100, 2**31, -2**40]))


def _damage_an_attribute(data, graph) -> None:
    attributes = [a for n in graph.node for a in n.attribute]
    if not attributes:
        return
    attribute = data.draw(st.sampled_from(attributes))
    if attribute.type == onnx.AttributeProto.INT:
        attribute.i = _small_integer(data)
    elif attribute.type == onnx.AttributeProto.INTS and len(attribute.ints):
        attribute.ints[data.draw(st.integers(0, len(attribute.ints) - 1))] = _small_integer(data)
        if data.draw(st.booleans()):
            attribute.ints.append(_small_integer(data))
    elif attribute.type == onnx.AttributeProto.FLOAT:
        attribute.f = data.draw(st.sampled_from([0.0, -1.0, 1e30, float("nan"), float("inf")]))


def _give_an_attribute(data, graph) -> None:
    node = data.draw(st.sampled_from(list(graph.node)))
    name = data.draw(st.sampled_from(["axis", "perm", "axes", "group", "alpha", "keepdims",
                                      "transB", "epsilon", "split"]))
    kind = data.draw(st.sampled_from(["int", "ints", "float"]))
    if kind == "int":
        given = _small_integer(data)
    elif kind == "ints":
        given = [_small_integer(data) for _ in range(data.draw(st.integers(1, 4)))]
    else:
        given = data.draw(st.floats(-2, 2))
    node.attribute.append(helper.make_attribute(name, given))


def _change_an_op(data, graph) -> None:
    node = data.draw(st.sampled_from(list(graph.node)))
    node.op_type = data.draw(st.sampled_from(sorted({n.op_type for n in graph.node} |
                                                    {"Split", "Gather", "Transpose"})))


def _rewire_an_input(data, graph) -> None:
    node = data.draw(st.sampled_from(list(graph.node)))
    if len(node.input) and data.draw(st.booleans()):
        del node.input[data.draw(st.integers(0, len(node.input) - 1))]
    else:
        names = [o for n in graph.node for o in n.output] + [t.name for t in graph.initializer]
        node.input.append(data.draw(st.sampled_from(names)))


def _damage_a_constant(data, graph) -> None:
    if not graph.initializer:
        return
    tensor = data.draw(st.sampled_from(list(graph.initializer)))
    array = numpy_helper.to_array(tensor).copy()
    if array.dtype.kind in "iu" and array.size:
        array.flat[data.draw(st.integers(0, array.size - 1))] = _small_integer(data)
    else:  # a weight of another shape
        array = array.reshape(-1)[:data.draw(st.integers(0, array.size))].copy()
    tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))


def _swap_two_nodes(data, graph) -> None:
    first, second = (data.draw(st.integers(0, len(graph.node) - 1)) for _ in range(2))
    a, b = onnx.NodeProto(), onnx.NodeProto()
    a.CopyFrom(graph.node[first])
    b.CopyFrom(graph.node[second])
    graph.node[first].CopyFrom(b)
    graph.node[second].CopyFrom(a)


STRUCTURAL_DAMAGE = [_damage_an_attribute, _give_an_attribute, _change_an_op, _rewire_an_input,
                     _damage_a_constant, _swap_two_nodes]


@settings(max_examples=DAMAGED_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_well_formed_but_wrong_models_are_imported_or_refused_never_crash(data) -> None:
    """Damage that keeps the file readable (a byte flip mostly breaks the protobuf): wrong
    attributes, ops and wiring, weights of other shapes, nodes out of order."""
    model = onnx.ModelProto()
    model.ParseFromString(data.draw(st.sampled_from(SMALL_MODELS)))
    for _ in range(data.draw(st.integers(1, 3))):
        data.draw(st.sampled_from(STRUCTURAL_DAMAGE))(data, model.graph)
    try:
        imported = translate(parse_onnx_bytes(model.SerializeToString()))
    except NetspecError:
        return
    imported.network.forward(np.zeros((1, *imported.plan.nodes[imported.plan.inputs[0]].shape),
                                      dtype=np.float32))
