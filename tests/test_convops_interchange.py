"""The convolutional-network ops (issue 24) through ONNX and PyTorch: a network of every one
exports, passes ONNX's checker and equals onnxruntime; the ONNX ops they come from in
PyTorch's exports (grouped Conv, Mul, Clip, HardSwish, HardSigmoid, LogSoftmax, ReduceMean,
GlobalAveragePool kept 4-D, Gelu) import and equal onnxruntime; the exported PyTorch module
and the torch engine equal netspec in float64, training and inference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from test_parity_torch import EVERY_CONV_OP  # noqa: E402
from torch_helpers import MaskedDropout, compare_with_netspec, import_file  # noqa: E402

from netspec.common.errors import NetspecError  # noqa: E402
from netspec.interchange.onnx_export import export_onnx  # noqa: E402
from netspec.interchange.onnx_import import parse_onnx_bytes, translate  # noqa: E402
from netspec.interchange.torch_classes import class_name  # noqa: E402
from netspec.interchange.torch_module import export_pytorch  # noqa: E402
from netspec.interchange.torch_runtime import PlanModule, load_arrays  # noqa: E402
from netspec.lang.spec import parse_spec  # noqa: E402
from netspec.plan.compiler import compile_plan  # noqa: E402
from netspec.runtime.executor import Network  # noqa: E402
from netspec.weights.checkpoint import save_checkpoint  # noqa: E402

# ONNX pools only equal windows: the adaptive pool's output divides its input here
ONNX_NET = EVERY_CONV_OP.replace("output_size = [3, 2]", "output_size = [5, 3]")


def _plan(text: str):
    return compile_plan(parse_spec(text, file="net.toml"))


def _onnxruntime(model, feeds):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _relative(ours, theirs) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def test_every_conv_op_exports_and_equals_onnxruntime_and_comes_back() -> None:
    plan = _plan(ONNX_NET)
    net = Network(plan, seed=1)
    model = export_onnx(plan, net.state())
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(0).standard_normal((3, *plan.nodes["image"].shape)) \
        .astype(np.float32)
    ours = net.forward(x)
    assert _relative(ours, _onnxruntime(model, {"image": x})) < 1e-5
    imported = translate(parse_onnx_bytes(model.SerializeToString()), source="net.onnx")
    assert _relative(imported.network.forward(x), ours) < 1e-5
    # the ops come back as themselves, the gelu decompositions as their parts
    ops = [node.op_name for node in imported.plan.nodes.values()]
    assert {"mul", "adaptive_avgpool2d", "hardtanh", "relu6", "hardswish", "hardsigmoid",
            "log_softmax", "silu"} <= set(ops)
    gelus = [node.params.approximate for node in imported.plan.nodes.values()
             if node.op_name == "gelu"]
    assert gelus == ["none", "tanh"]


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_pytorchs_own_gelu_export_comes_back_as_one_gelu(approximate: str, tmp_path) -> None:
    import warnings

    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GELU(approximate))
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), tmp_path / "m.onnx", opset_version=17, dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "N"}})
    model = onnx.load(tmp_path / "m.onnx")
    imported = translate(model)
    assert [node.op_name for node in imported.plan.nodes.values()] == ["input", "conv2d",
                                                                        "gelu"]
    ours = imported.network.forward(x.numpy())
    assert _relative(ours, _onnxruntime(model, {"x": x.numpy()})) < 1e-5


def test_an_adaptive_pool_onnx_cannot_express_is_refused_by_name() -> None:
    plan = _plan(EVERY_CONV_OP)
    with pytest.raises(NetspecError, match=r"node 'pooled' \(adaptive_avgpool2d\): output "
                                           r"size 3x2 does not divide the input 40x18"):
        export_onnx(plan, Network(plan).state())


def _model(nodes, inputs, initializers=(), opset: int = 17):
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(
        "y", TensorProto.FLOAT, None)], initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset <= 17 else 9
    return model


def _value(name: str, shape: list):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _constant(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


IMAGE = ["N", 4, 6, 5]
# ONNX graph -> the netspec op its node becomes
SINGLE_NODES = {
    "Clip 0..6": ([helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="n")], IMAGE,
                  [_constant("lo", 0.0), _constant("hi", 6.0)], 17, "relu6"),
    "Clip -1..2": ([helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="n")], IMAGE,
                   [_constant("lo", -1.0), _constant("hi", 2.0)], 17, "hardtanh"),
    "Clip min 0": ([helper.make_node("Clip", ["x", "lo"], ["y"], name="n")], IMAGE,
                   [_constant("lo", 0.0)], 17, "relu"),
    "Clip attributes (opset 9)": ([helper.make_node("Clip", ["x"], ["y"], name="n", min=0.0,
                                                    max=6.0)], IMAGE, [], 9, "relu6"),
    "HardSwish": ([helper.make_node("HardSwish", ["x"], ["y"], name="n")], IMAGE, [], 17,
                  "hardswish"),
    "HardSigmoid": ([helper.make_node("HardSigmoid", ["x"], ["y"], name="n",
                                      alpha=1 / 6, beta=0.5)], IMAGE, [], 17, "hardsigmoid"),
    "LogSoftmax": ([helper.make_node("LogSoftmax", ["x"], ["y"], name="n", axis=1)],
                   ["N", 10], [], 17, "log_softmax"),
    "LogSoftmax last axis": ([helper.make_node("LogSoftmax", ["x"], ["y"], name="n")],
                             IMAGE, [], 17, "log_softmax"),
    "ReduceMean keepdims": ([helper.make_node("ReduceMean", ["x"], ["y"], name="n",
                                              axes=[2, 3], keepdims=1)], IMAGE, [], 17,
                            "mean"),
    "ReduceMean axes input": ([helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="n",
                                                keepdims=0)], IMAGE,
                              [numpy_helper.from_array(np.array([-1, -2]), "axes")], 18,
                              "mean"),  # torch.mean (netspec writes global_avgpool otherwise)
    "GlobalAveragePool": ([helper.make_node("GlobalAveragePool", ["x"], ["y"], name="n")],
                          IMAGE, [], 17, "adaptive_avgpool2d"),
    "Gelu (opset 20)": ([helper.make_node("Gelu", ["x"], ["y"], name="n")], IMAGE, [], 20,
                        "gelu"),
    "Gelu tanh (opset 20)": ([helper.make_node("Gelu", ["x"], ["y"], name="n",
                                               approximate="tanh")], IMAGE, [], 20, "gelu"),
    "x * sigmoid(x) (PyTorch's SiLU)": ([
        helper.make_node("Sigmoid", ["x"], ["s"], name="/act/Sigmoid"),
        helper.make_node("Mul", ["x", "s"], ["y"], name="/act/Mul")], IMAGE, [], 17, "silu"),
    "squeeze-excitation": ([
        helper.make_node("GlobalAveragePool", ["x"], ["s"], name="squeeze"),
        helper.make_node("Conv", ["s", "w"], ["e"], name="excite"),
        helper.make_node("Sigmoid", ["e"], ["g"], name="gate"),
        helper.make_node("Mul", ["x", "g"], ["y"], name="n")], IMAGE,
        [_constant("w", np.random.default_rng(0).standard_normal((4, 4, 1, 1)))], 17, "mul"),
    "Split of the network's values": ([
        helper.make_node("Split", ["x", "sizes"], ["a", "b"], name="split", axis=1),
        helper.make_node("Concat", ["b", "a"], ["y"], name="n", axis=1)], IMAGE,
        [numpy_helper.from_array(np.array([1, 3]), "sizes")], 17, "concat"),
    "Add broadcasting a per-channel value": ([
        helper.make_node("GlobalAveragePool", ["x"], ["s"], name="squeeze"),
        helper.make_node("Conv", ["s", "w"], ["e"], name="excite"),
        helper.make_node("Add", ["x", "e"], ["y"], name="n")], IMAGE,
        [_constant("w", np.random.default_rng(0).standard_normal((4, 4, 1, 1)))], 17, "add"),
}


@pytest.mark.parametrize("case", SINGLE_NODES)
def test_the_onnx_ops_of_pytorchs_exports_import_and_equal_onnxruntime(case: str) -> None:
    nodes, shape, initializers, opset, op = SINGLE_NODES[case]
    model = _model(nodes, [_value("x", shape)], initializers, opset)
    imported = translate(parse_onnx_bytes(model.SerializeToString()))
    assert imported.plan.nodes[imported.plan.output].op_name == op
    x = np.random.default_rng(1).standard_normal((2, *shape[1:])).astype(np.float32) * 4
    theirs = _onnxruntime(model, {"x": x})
    ours = imported.network.forward(x)
    assert ours.shape == theirs.shape
    assert _relative(ours, theirs) < 1e-5


def _flat_gather(positions: np.ndarray) -> onnx.ModelProto:
    """A batch-1 value flattened whole and gathered back, as the newer exporter writes an
    as_strided view."""
    return _model([helper.make_node("Reshape", ["x", "flat"], ["f"], name="flatten"),
                   helper.make_node("Gather", ["f", "at"], ["y"], name="n", axis=0)],
                  [_value("x", [1, 4, 6, 5])],
                  [numpy_helper.from_array(np.array([-1]), "flat"),
                   numpy_helper.from_array(positions, "at")])


def test_a_flat_gather_of_every_position_in_order_is_a_reshape() -> None:
    model = _flat_gather(np.arange(120).reshape(1, 4, 30))
    imported = translate(parse_onnx_bytes(model.SerializeToString()))
    node = imported.plan.nodes[imported.plan.output]
    assert (node.op_name, node.shape) == ("reshape", (4, 30))
    x = np.random.default_rng(1).standard_normal((1, 4, 6, 5)).astype(np.float32)
    assert _relative(imported.network.forward(x), _onnxruntime(model, {"x": x})) < 1e-6


def test_a_flat_gather_that_reorders_is_refused() -> None:
    model = _flat_gather(np.arange(120)[::-1].reshape(1, 4, 30).copy())
    with pytest.raises(NetspecError, match=r"reshape to \[-1\] changes the batch axis"):
        translate(parse_onnx_bytes(model.SerializeToString()))


REFUSED_NODES = {
    "Clip max only": ([helper.make_node("Clip", ["x", "", "hi"], ["y"], name="n")],
                      [_constant("hi", 6.0)], "min=None and max=6.0: netspec clips between "
                      "two bounds (hardtanh) or at 0 from below (relu)"),
    "HardSigmoid ONNX's default": ([helper.make_node("HardSigmoid", ["x"], ["y"], name="n")],
                                   [], "alpha=0.2, beta=0.5: netspec's hardsigmoid is "
                                   "PyTorch's (alpha=1/6, beta=0.5)"),
    "Add of different ranks": ([helper.make_node("ReduceMean", ["x"], ["m"], name="mean",
                                                 axes=[1], keepdims=0),
                                helper.make_node("Add", ["x", "m"], ["y"], name="n")], [],
                               "as netspec's add: inputs have shapes (4, 6, 5) and (6, 5) of "
                               "different ranks; add broadcasts axes of size 1 between inputs "
                               "of one rank"),
    "LogSoftmax over the batch": ([helper.make_node("LogSoftmax", ["x"], ["y"], name="n",
                                                    axis=0)], [],
                                  "axis=0 is the batch axis"),
}


@pytest.mark.parametrize("case", REFUSED_NODES)
def test_what_netspec_cannot_hold_is_refused_with_the_reason(case: str) -> None:
    nodes, initializers, message = REFUSED_NODES[case]
    model = _model(nodes, [_value("x", IMAGE)], initializers)
    with pytest.raises(NetspecError) as refusal:
        translate(parse_onnx_bytes(model.SerializeToString()))
    assert f"node 'n' ({nodes[-1].op_type}): {message}" in str(refusal.value)


@pytest.fixture(autouse=False)
def _float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_the_exported_module_and_the_engine_equal_netspec(tmp_path: Path, train: bool,
                                                          monkeypatch, _float64) -> None:
    plan = _plan(EVERY_CONV_OP)
    net = Network(plan, seed=0, dtype="float64")
    save_checkpoint(tmp_path / "w.npz", net)
    py_path, pt_path = export_pytorch(plan, tmp_path / "model.py", weights=tmp_path / "w.npz")
    module = import_file(py_path)
    model = getattr(module, class_name(plan.name))().double()
    model.load_state_dict(torch.load(pt_path, weights_only=True), strict=True)

    def use_masks(masks: MaskedDropout) -> None:
        module.F = masks

    errors = compare_with_netspec(net, model, train, use_masks)
    assert max(errors.values()) < 1e-9, errors
    engine = PlanModule(plan).double()
    load_arrays(engine, net.state())

    def patch(masks: MaskedDropout) -> None:
        for name in ("dropout1d", "dropout3d"):
            monkeypatch.setattr(torch.nn.functional, name, getattr(masks, name))

    errors = compare_with_netspec(net, engine, train, patch)
    assert max(errors.values()) < 1e-9, errors


def test_stochastic_depths_pytorch_form_drops_whole_samples() -> None:
    # the form PyTorch runs (channel dropout with the batch as the channels) is what
    # torchvision's StochasticDepth(p, "row") computes: whole samples, scaled by 1/(1-p)
    torch.manual_seed(0)
    x = torch.ones(64, 3, 4, 5)
    y = torch.nn.functional.dropout3d(x, 0.25, True)
    per_sample = y.reshape(64, -1)
    assert torch.all((per_sample == 0).all(1) | (per_sample == 1 / 0.75).all(1))
    assert 0 < int((per_sample == 0).all(1).sum()) < 64
    v = torch.nn.functional.dropout1d(torch.ones(64, 7), 0.25, True)
    assert torch.all((v == 0).all(1) | (v == 1 / 0.75).all(1))
    assert math.isclose(float(y.mean()), 1.0, abs_tol=0.3)


POOLS = """
[nodes.image]
op = "input"
shape = [3, 13, 12]

[nodes.maxc]
op = "maxpool2d"
kernel_size = 3
stride = 2
ceil_mode = true

[nodes.avgc]
op = "avgpool2d"
kernel_size = 3
stride = 2
padding = 1
ceil_mode = true
count_include_pad = false

[nodes.avgi]
op = "avgpool2d"
inputs = "maxc"
kernel_size = 2
stride = 2
padding = 1
ceil_mode = true

[nodes.joined]
op = "concat"
inputs = ["avgc", "avgi"]
"""


def test_ceil_mode_and_count_include_pad_go_through_onnx_both_ways() -> None:
    plan = _plan(POOLS)
    assert plan.nodes["maxc"].shape == (3, 6, 6) and plan.nodes["avgc"].shape == (3, 4, 4)
    net = Network(plan, seed=0)
    model = export_onnx(plan, net.state())
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(2).standard_normal((2, 3, 13, 12)).astype(np.float32)
    ours = net.forward(x)
    assert _relative(ours, _onnxruntime(model, {"image": x})) < 1e-6
    imported = translate(parse_onnx_bytes(model.SerializeToString()))
    for node_id in ("maxc", "avgc", "avgi"):
        mine, theirs = plan.nodes[node_id], imported.plan.nodes[node_id]
        assert mine.op.geometry == theirs.op.geometry
        assert mine.params.ceil_mode == theirs.params.ceil_mode
        assert getattr(mine.params, "count_include_pad", None) == \
            getattr(theirs.params, "count_include_pad", None)
    np.testing.assert_array_equal(imported.network.forward(x), ours)


RESIZES = {
    # (attributes, scales, opset) -> the netspec mode
    "PyTorch's nearest": ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                           "nearest_mode": "floor"}, [1, 1, 2, 3], 17, "nearest"),
    "ONNX's default nearest": ({"mode": "nearest"}, [1, 1, 3, 2], 17, "nearest"),
    "bilinear, pytorch_half_pixel": ({"mode": "linear",
                                      "coordinate_transformation_mode": "pytorch_half_pixel"},
                                     [1, 1, 2, 2], 17, "bilinear"),
    "bilinear, half_pixel": ({"mode": "linear",
                              "coordinate_transformation_mode": "half_pixel"},
                             [1, 1, 4, 3], 13, "bilinear"),
}


@pytest.mark.parametrize("case", RESIZES)
def test_resize_imports_as_upsample_and_equals_onnxruntime(case: str) -> None:
    attributes, scales, opset, mode = RESIZES[case]
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], name="n", **attributes)
    model = _model([node], [_value("x", IMAGE)], [_constant("s", scales)], opset)
    imported = translate(parse_onnx_bytes(model.SerializeToString()))
    assert imported.plan.nodes["n"].params.mode == mode
    x = np.random.default_rng(3).standard_normal((2, *IMAGE[1:])).astype(np.float32)
    assert _relative(imported.network.forward(x), _onnxruntime(model, {"x": x})) < 1e-6


def test_resize_that_is_no_pytorch_upsample_is_refused() -> None:
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], name="n", mode="linear",
                            coordinate_transformation_mode="align_corners")
    model = _model([node], [_value("x", IMAGE)], [_constant("s", [1, 1, 2, 2])])
    with pytest.raises(NetspecError, match="mode=linear with coordinate_transformation_mode="
                                           "align_corners: netspec's upsample is PyTorch's"):
        translate(parse_onnx_bytes(model.SerializeToString()))
    half = _model([helper.make_node("Resize", ["x", "", "s"], ["y"], name="n")],
                  [_value("x", IMAGE)], [_constant("s", [1, 1, 1.5, 2])])
    with pytest.raises(NetspecError, match="netspec upsamples H and W by integer factors"):
        translate(parse_onnx_bytes(half.SerializeToString()))


def test_a_small_unet_from_pytorch_imports_and_equals_onnxruntime(tmp_path) -> None:
    import warnings

    class UNet(torch.nn.Module):
        """Down by a strided convolution, up three ways, joined with the input (a skip)."""

        def __init__(self) -> None:
            super().__init__()
            self.down = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.up = torch.nn.ConvTranspose2d(8, 4, 2, stride=2)
            self.near = torch.nn.Upsample(scale_factor=2, mode="nearest")
            self.smooth = torch.nn.Upsample(scale_factor=2, mode="bilinear")
            self.head = torch.nn.Conv2d(3 + 4 + 8 + 8, 2, 1)

        def forward(self, x):
            deep = torch.relu(self.down(x))
            return self.head(torch.cat([x, self.up(deep), self.near(deep),
                                        self.smooth(deep)], dim=1))

    simple = UNet().eval()
    x = torch.randn(2, 3, 16, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(simple, (x,), tmp_path / "u.onnx", opset_version=17, dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "N"}})
    onnx_model = onnx.load(tmp_path / "u.onnx")
    imported = translate(onnx_model)
    ops = sorted(node.op_name for node in imported.plan.nodes.values())
    assert ops == ["concat", "conv2d", "conv2d", "conv_transpose2d", "input", "relu",
                   "upsample", "upsample"]
    ours = imported.network.forward(x.numpy())
    assert _relative(ours, _onnxruntime(onnx_model, {"x": x.numpy()})) < 1e-5
    with torch.no_grad():
        assert _relative(ours, simple(x).numpy()) < 1e-5
    again = export_onnx(imported.plan, imported.network.state())
    onnx.checker.check_model(again, full_check=True)
