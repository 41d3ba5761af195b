"""What real exports showed `netspec import` getting wrong: a file that fixes its batch at 1
(checked against onnxruntime at that batch, its `Reshape [1, -1]` the batch-preserving
flatten), refusals said once per kind with the node names, users of a refused node not blamed
again, and weights whose type the graph does not allow refused instead of converted."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from netspec.cli import main  # noqa: E402
from netspec.common.errors import NetspecError  # noqa: E402
from netspec.interchange.onnx_import import (  # noqa: E402
    OnnxImportError,
    import_onnx,
    parse_onnx_bytes,
    translate,
)
from netspec.interchange.onnx_verify import compare_with_onnxruntime  # noqa: E402


def run_cli(*argv: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def value(name: str, shape: list | None, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def tensor(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def model_of(nodes: list, inputs: list, initializers: list = ()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, [value("y", None)],
                              initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def flatten_model(batch: int | str, target: list[int]) -> onnx.ModelProto:
    """Conv, then Reshape to ``target``, then Gemm: what `x.view(x.size(0), -1)` exports."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="/conv/Conv"),
             helper.make_node("Reshape", ["c", "shape"], ["f"], name="/Reshape"),
             helper.make_node("Gemm", ["f", "fc.w"], ["y"], name="/fc/Gemm", transB=1)]
    return model_of(nodes, [value("x", [batch, 2, 5, 5])],
                    [tensor("w", rng.standard_normal((3, 2, 3, 3)).astype(np.float32)),
                     tensor("shape", np.array(target, dtype=np.int64)),
                     tensor("fc.w", rng.standard_normal((4, 27)).astype(np.float32))])


# -------------------------------------------------------------------- a batch the file fixes

@pytest.mark.parametrize("target", [[1, -1], [1, 27], [-1, 27]])
def test_a_static_batch_of_1_reshape_to_1_by_minus_1_is_the_batch_flatten(target) -> None:
    imported = translate(flatten_model(1, target))
    assert imported.plan.nodes["reshape"].op_name == "flatten"
    assert imported.static_batch == 1
    # the network takes any batch, though the file fixes 1
    x = np.random.default_rng(1).standard_normal((3, 2, 5, 5)).astype(np.float32)
    assert imported.network.forward(x).shape == (3, 4)
    error = compare_with_onnxruntime(flatten_model(1, target), imported.network)
    if error is not None:
        assert error < 1e-6


@pytest.mark.parametrize(("batch", "target", "message"), [
    # a batch-free file: [1, -1] would fold the whole batch into one sample
    ("N", [1, -1], r"reshape to \[1, -1\] changes the batch axis"),
    # the file fixes 1: 3 is no batch of it
    (1, [3, -1], r"reshape to \[3, -1\] changes the batch axis"),
])
def test_reshapes_that_move_the_batch_are_still_refused(batch, target, message) -> None:
    with pytest.raises(OnnxImportError, match=message):
        translate(flatten_model(batch, target))


def test_a_torch_export_from_one_image_imports_and_is_checked_at_batch_1(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.fc = torch.nn.Linear(4 * 6 * 6, 5)

        def forward(self, x):
            x = torch.relu(self.conv(x))
            return self.fc(x.view(x.size(0), -1))

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation
        torch.onnx.export(Net().eval(), torch.zeros(1, 3, 8, 8), str(tmp_path / "m.onnx"),
                          dynamo=False, opset_version=17)
    code, out, err = run_cli("import", tmp_path / "m.onnx", "-o", tmp_path / "m.toml")
    assert code == 0, err
    assert "the model fixes its batch at 1; the imported network takes any batch" in out
    assert "checked against onnxruntime: max |difference|" in out, out
    assert "could not run" not in out
    assert compare_with_onnxruntime(tmp_path / "m.onnx", import_onnx(tmp_path / "m.onnx")
                                    .network) < 1e-5


def test_when_onnxruntime_cannot_run_the_file_its_whole_reason_is_shown(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    model = model_of([helper.make_node("Relu", ["x"], ["y"], name="r")], [value("x", [1, 3, 8])])
    onnx.save(model, tmp_path / "m.onnx")
    # --input-shape overrides what the file fixes: onnxruntime keeps to the file
    code, out, err = run_cli("import", tmp_path / "m.onnx", "-o", tmp_path / "m.toml",
                             "--input-shape", "3,9")
    assert code == 0, err
    line = next(li for li in out.splitlines() if "could not run" in li)
    assert "Got invalid dimensions" in line and "Got: 9 Expected: 8" in line, line


# -------------------------------------------------------------------- refusals, once each

def erf_chain(count: int) -> onnx.ModelProto:
    """``count`` blocks of Erf -> MatMul -> Add(bias): only the Erf is netspec's problem."""
    nodes, inits, last = [], [], "x"
    for i in range(count):
        nodes += [helper.make_node("Erf", [last], [f"e{i}"], name=f"/block{i}/Erf"),
                  helper.make_node("MatMul", [f"e{i}", f"w{i}"], [f"m{i}"],
                                   name=f"/block{i}/MatMul"),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"], name=f"/block{i}/Add")]
        inits += [tensor(f"w{i}", np.eye(3, dtype=np.float32)),
                  tensor(f"b{i}", np.ones(3, np.float32))]
        last = f"a{i}"
    nodes.append(helper.make_node("Concat", [last, "k"], ["y"], name="/Concat", axis=1))
    inits.append(tensor("k", np.ones((1, 2), np.float32)))
    return model_of(nodes, [value("x", ["N", 3])], inits)


def test_users_of_a_refused_node_are_not_blamed_again() -> None:
    with pytest.raises(OnnxImportError) as refusal:
        translate(erf_chain(1))
    assert refusal.value.problems == ["node '/block0/Erf' (Erf): the op Erf is not supported"]
    assert "adds two constants" not in str(refusal.value)
    assert "is a constant" not in str(refusal.value)


def test_one_line_per_kind_of_problem_with_its_count_and_nodes() -> None:
    with pytest.raises(OnnxImportError) as refusal:
        translate(erf_chain(7))
    assert refusal.value.problems == [
        "7 Erf nodes ('/block0/Erf', '/block1/Erf', '/block2/Erf', '/block3/Erf', "
        "'/block4/Erf' and 2 more): the op Erf is not supported"]
    text = str(refusal.value)
    # the ops netspec reads are listed once, after the problems
    assert text.count("netspec reads") == 1
    assert text.splitlines()[-1].startswith("  (netspec reads Add, AveragePool, ")


def test_different_reasons_for_one_op_stay_apart() -> None:
    nodes = [helper.make_node("Erf", ["x"], ["a"], name="e1"),
             helper.make_node("Softmax", ["x"], ["b"], name="s1", axis=0),
             helper.make_node("Softmax", ["x"], ["c"], name="s2", axis=0),
             helper.make_node("Erf", ["x"], ["y"], name="e2")]
    with pytest.raises(OnnxImportError) as refusal:
        translate(model_of(nodes, [value("x", ["N", 3])]))
    assert refusal.value.problems == [
        "2 Erf nodes ('e1', 'e2'): the op Erf is not supported",
        "2 Softmax nodes ('s1', 's2'): axis=0 is not supported: it normalises over the batch"]


# -------------------------------------------------------------------- weights of a wrong type

def conv_with_weight(weight: np.ndarray, *, cast: bool = False) -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "wc" if cast else "w"], ["y"], name="/conv/Conv")]
    if cast:
        nodes.insert(0, helper.make_node("Cast", ["w"], ["wc"], name="/Cast",
                                         to=TensorProto.FLOAT))
    return model_of(nodes, [value("x", ["N", 2, 4, 4])], [tensor("w", weight)])


@pytest.mark.parametrize(("dtype", "message"), [
    (np.int8, "node '/conv/Conv' (Conv): the weight ('w') holds INT8 values; Conv takes "
              "DOUBLE, FLOAT, FLOAT16 there, so the model is not valid ONNX"),
    (np.float16, "node '/conv/Conv' (Conv): the weight ('w') holds FLOAT16 values; Conv "
                 "needs the type of input 'x', which the network computes in FLOAT"),
    (np.float64, "node '/conv/Conv' (Conv): the weight ('w') holds DOUBLE values"),
])
def test_a_weight_of_a_type_the_graph_does_not_allow_is_refused(dtype, message) -> None:
    weight = np.arange(-36, 36).reshape(4, 2, 3, 3).astype(dtype)
    with pytest.raises(OnnxImportError) as refusal:
        translate(conv_with_weight(weight))
    assert message in str(refusal.value)


def test_a_weight_cast_to_float_in_the_graph_is_read_by_its_value() -> None:
    weight = (np.arange(72).reshape(4, 2, 3, 3) / 8).astype(np.float16)
    imported = translate(conv_with_weight(weight, cast=True))
    np.testing.assert_array_equal(imported.network.params["conv.weight"],
                                  weight.astype(np.float32))


def test_a_bias_of_a_type_the_graph_does_not_allow_is_refused() -> None:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="/fc/MatMul"),
             helper.make_node("Add", ["h", "b"], ["y"], name="/fc/Add")]
    model = model_of(nodes, [value("x", ["N", 3])],
                     [tensor("w", np.eye(3, dtype=np.float32)),
                      tensor("b", np.array([1, 2, 3], np.int8))])
    with pytest.raises(OnnxImportError, match=r"node '/fc/Add' \(Add\): the bias \('b'\) holds "
                                              r"INT8 values; Add needs the type of input 'h'"):
        translate(model)


def test_batchnorm_statistics_of_their_own_type_are_read_as_onnx_allows() -> None:
    # BatchNormalization gives scale and B a type parameter of their own (T1): float16 is
    # valid beside a float input, and read by its value
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"],
                              name="bn")]
    model = model_of(nodes, [value("x", ["N", 4, 2, 2])],
                     [tensor("s", np.full(4, 1.5, np.float16)),
                      tensor("b", np.full(4, 0.5, np.float16)),
                      tensor("m", np.zeros(4, np.float32)), tensor("v", np.ones(4, np.float32))])
    imported = translate(model)
    np.testing.assert_array_equal(imported.network.params["bn.weight"], np.full(4, 1.5))
    error = compare_with_onnxruntime(model, imported.network)
    if error is not None:
        assert error < 1e-6


# ------------------------------------------------- damaged files the fuzzing test turned up

def layer_norm_between_transposes(back_outputs: list[str]) -> onnx.ModelProto:
    """netspec's layernorm2d as ONNX writes it, its last Transpose given ``back_outputs``."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], name="last", perm=[0, 2, 3, 1]),
             helper.make_node("LayerNormalization", ["t", "s", "b"], ["l"], name="norm",
                              axis=-1),
             helper.make_node("Transpose", ["l"], back_outputs, name="back", perm=[0, 3, 1, 2])]
    return model_of(nodes, [value("x", ["N", 4, 2, 2])],
                    [tensor("s", np.ones(4, np.float32)), tensor("b", np.zeros(4, np.float32))])


def test_the_layernorm2d_pattern_still_imports() -> None:
    imported = translate(layer_norm_between_transposes(["y"]))
    assert [n.op_name for n in imported.plan.nodes.values()] == ["input", "layernorm2d"]


@pytest.mark.parametrize(("nodes", "inputs", "initializers", "message"), [
    # a constant transposed by a perm that does not reorder its axes
    ([helper.make_node("Transpose", ["w"], ["wt"], name="turn", perm=[0, 3]),
      helper.make_node("MatMul", ["x", "wt"], ["y"], name="fc")],
     [value("x", ["N", 3])], [tensor("w", np.eye(3, dtype=np.float32))],
     r"node 'turn' \(Transpose\): perm \[0, 3\] does not reorder the 2 axes of its input"),
    # an op given fewer inputs than ONNX defines it with
    ([helper.make_node("Concat", [], ["c"], name="join", axis=1),
      helper.make_node("Add", ["x", "c"], ["y"], name="sum")],
     [value("x", ["N", 3])], [],
     r"node 'join' \(Concat\): has 0 inputs; Concat takes 1 or more, so the model is not "
     r"valid ONNX"),
    ([helper.make_node("Relu", ["x", "x"], ["y"], name="act")], [value("x", ["N", 3])], [],
     r"node 'act' \(Relu\): has 2 inputs; Relu takes 1, so the model is not valid ONNX"),
    # the pieces of a split of the network's values, as floats
    ([helper.make_node("Split", ["x", "sizes"], ["a", "y"], name="cut", axis=1)],
     [value("x", ["N", 4, 2])], [tensor("sizes", np.array([2.0, 2.0], np.float32))],
     r"node 'cut' \(Split\): cannot split: the sizes are float32 values, not numbers of "
     r"positions"),
    # a node that writes nothing, where a pattern (layernorm2d) would look for its output
    (list(layer_norm_between_transposes([]).graph.node), [value("x", ["N", 4, 2, 2])],
     [tensor("s", np.ones(4, np.float32)), tensor("b", np.zeros(4, np.float32))],
     r"node 'back' \(Transpose\): the node has no output"),
])
def test_damaged_graphs_are_refused_with_what_is_wrong(nodes, inputs, initializers,
                                                       message) -> None:
    with pytest.raises(OnnxImportError, match=message):
        translate(model_of(nodes, inputs, initializers))


def test_a_scalar_whose_bytes_hold_more_than_one_value_is_named() -> None:
    # read first by the GELU fusion, which must leave the problem to the translator
    scale = onnx.TensorProto(name="c", data_type=TensorProto.FLOAT, dims=[],
                             raw_data=np.array([2.0, 3.0], np.float32).tobytes())
    model = model_of([helper.make_node("Mul", ["x", "c"], ["y"], name="scale")],
                     [value("x", ["N", 3])], [scale])
    with pytest.raises(OnnxImportError, match=r"'c' claims 1 values of FLOAT \(4 bytes\) but "
                                              r"holds 8 bytes"):
        translate(model)


def test_a_value_name_that_is_not_utf8_is_refused_when_the_file_is_read() -> None:
    model = model_of([helper.make_node("Relu", ["x"], ["y"], name="act")],
                     [value("x", ["N", 3])])
    model.graph.node[0].input[0] = "x@@@"
    blob = model.SerializeToString().replace(b"x@@@", b"x\xba\xbb\xbc")
    with pytest.raises(NetspecError, match=r"the value name 'x\\xba\\xbb\\xbc' is not UTF-8 "
                                           r"text; is the file damaged\?"):
        parse_onnx_bytes(blob)
