"""Transformers and the convolutional networks of 2020 through ONNX, both ways.

In: torchvision's ``convnext_tiny``, ``shufflenet_v2_x1_0`` and a small ``VisionTransformer``,
written by ``torch.onnx.export`` at its default opset from one example image (a static batch
of 1; ViT's attention decomposed into MatMul/Reshape/Transpose/Softmax with the batch folded
into the heads' axis), by the TorchScript exporter and by the newer default one, import into
netspec and compute what onnxruntime computes. Out: the
shipped ``vit_b_16``, ``convnext_tiny`` and ``shufflenet_v2_x1_0`` export, pass the full checker
and equal onnxruntime.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from netspec.interchange.onnx_export import export_onnx  # noqa: E402
from netspec.interchange.onnx_import import import_onnx  # noqa: E402
from netspec.plan.compiler import compile_plan  # noqa: E402
from netspec.runtime.executor import Network  # noqa: E402
from tests.torchvision_helpers import torchvision_models  # noqa: E402

TOLERANCE = 1e-5
# the convolutional networks at 64x64: the same weights as at 224 (a global pooling before the
# classifier), a twelfth of the work on two shared cores
SIZE = 64


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    assert ours.shape == theirs.shape
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def small_vit():
    models = torchvision_models()
    return models.vision_transformer.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
        num_classes=10)


def randomise(model) -> None:
    """Norm scales, shifts and running statistics, and the class token, away from their
    initial values (ones, zeros), so that each of them counts in the comparison."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            # (ViT's classifier starts at zero: it would hide everything before it)
            if tensor.ndim <= 1 or "class_token" in name or "layer_scale" in name \
                    or not tensor.any():
                shift = 1.0 if name.endswith(("weight", "running_var", "layer_scale")) else 0.0
                tensor.copy_(shift + 0.3 * torch.rand(tensor.shape, generator=generator))


# name -> (torchvision model, per-sample input shape)
MODELS = {
    "vit": (small_vit, (3, 32, 32)),
    "convnext_tiny": (lambda: torchvision_models().convnext_tiny(), (3, SIZE, SIZE)),
    "shufflenet_v2_x1_0": (lambda: torchvision_models().shufflenet_v2_x1_0(), (3, SIZE, SIZE)),
}


def export(name: str, directory: Path, dynamo: bool) -> tuple[Path, object]:
    """torchvision's model ``name``, randomised, written by one of torch.onnx.export's two
    exporters from one example image."""
    torch.manual_seed(0)
    torch.set_num_threads(2)
    make, shape = MODELS[name]
    model = make().eval()
    randomise(model)
    path = directory / f"{name}{'-dynamo' if dynamo else ''}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, *shape),), str(path), dynamo=dynamo,
                          input_names=["input"], output_names=["logits"], verbose=False)
    return path, model


@pytest.fixture(scope="module", params=list(MODELS))
def exported(request, tmp_path_factory) -> tuple[str, Path, object]:
    """The TorchScript exporter at its default opset."""
    path, model = export(request.param, tmp_path_factory.mktemp(request.param), dynamo=False)
    return request.param, path, model


def test_torchvision_exports_import_and_equal_onnxruntime(exported) -> None:
    name, path, _ = exported
    imported = import_onnx(path)
    x = np.random.default_rng(0).standard_normal((1, *MODELS[name][1])).astype(np.float32)
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0]
    ours = imported.network.forward(x)
    assert relative_error(ours, theirs) < TOLERANCE
    # the imported network is batch-generic: each sample of a batch computes as it alone does
    batch = np.concatenate([x, -x, 0.5 * x])
    alone = [imported.network.forward(sample[None]) for sample in batch]
    assert relative_error(imported.network.forward(batch), np.concatenate(alone)) < TOLERANCE


@pytest.fixture(scope="module", params=list(MODELS))
def exported_by_dynamo(request, tmp_path_factory) -> tuple[str, Path]:
    """The same models as torch.onnx.export's default, newer exporter writes them: a Split
    of the channels (ShuffleNet), a Reshape to [-1] and a Gather for an as_strided view
    (ConvNeXt's pooled features), attention without the TorchScript exporter's layout."""
    pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript")
    path, _ = export(request.param, tmp_path_factory.mktemp(request.param), dynamo=True)
    return request.param, path


def test_the_newer_exporters_files_import_and_equal_onnxruntime(exported_by_dynamo) -> None:
    name, path = exported_by_dynamo
    imported = import_onnx(path)
    x = np.random.default_rng(0).standard_normal((1, *MODELS[name][1])).astype(np.float32)
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0]
    assert relative_error(imported.network.forward(x), theirs) < TOLERANCE


def test_the_imported_spec_says_what_the_module_was(exported) -> None:
    name, path, model = exported
    imported = import_onnx(path)
    nodes = imported.plan.nodes
    if name == "vit":
        attention = nodes["encoder.layers.encoder_layer_1.self_attention"]
        assert attention.op_name == "multihead_attention"
        assert attention.params.num_heads == 4
        # the attention's weights come back under torchvision's keys
        state = imported.network.state()
        theirs = model.state_dict()
        for key in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"):
            full = f"encoder.layers.encoder_layer_1.self_attention.{key}"
            np.testing.assert_array_equal(state[full], theirs[full].numpy())
        assert nodes["encoder.layers.encoder_layer_0.self_attention"].shape == (17, 64)
    # the exporter folds each batchnorm into the bias-less convolution before it: its scale
    # and shift go, the convolution gains a bias
    assert imported.plan.total_params == sum(p.numel() for p in model.parameters()) - sum(
        m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_an_attention_with_another_head_count_is_read_as_such(tmp_path) -> None:
    """The heads come from the file, not from a default: 8 heads of 8 give another output
    than 4 heads of 16 with the same weights."""
    torch.manual_seed(0)
    models = torchvision_models()
    outputs = {}
    for heads in (4, 8):
        torch.manual_seed(0)
        model = models.vision_transformer.VisionTransformer(
            image_size=32, patch_size=8, num_layers=1, num_heads=heads, hidden_dim=64,
            mlp_dim=128, num_classes=10).eval()
        randomise(model)
        path = tmp_path / f"heads{heads}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), str(path), dynamo=False,
                              input_names=["input"], output_names=["logits"])
        imported = import_onnx(path)
        attention = imported.plan.nodes["encoder.layers.encoder_layer_0.self_attention"]
        assert attention.params.num_heads == heads
        x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
        outputs[heads] = imported.network.forward(x)
    assert relative_error(outputs[4], outputs[8]) > 1e-3


# the shipped architectures; vit_b_16 with two of its twelve layers (every op, a sixth of the
# 346 MB file); the convolutional networks at 64x64
EXPORTED = {"vit_b_16": ({"layers": 2}, None),
            "convnext_tiny": ({}, SIZE), "shufflenet_v2_x1_0": ({}, SIZE)}


@pytest.mark.parametrize("name", list(EXPORTED))
def test_shipped_architectures_export_pass_the_checker_and_equal_onnxruntime(name) -> None:
    overrides, size = EXPORTED[name]
    plan = compile_plan(name, overrides)
    if size is not None:
        from netspec.lang.spec import parse_spec, resolve_spec_path

        path = resolve_spec_path(name)
        text = path.read_text().replace("shape = [3, 224, 224]", f"shape = [3, {size}, {size}]")
        plan = compile_plan(parse_spec(text, file=path.name, directory=path.parent))
    network = Network(plan, seed=0)
    rng = np.random.default_rng(1)
    for key, value in {**network.params, **network.buffers}.items():
        if value.ndim <= 1 or key.endswith(("layer_scale", "class_token")):
            value[...] = rng.uniform(0.5, 1.5, value.shape) if key.endswith(
                ("weight", "running_var", "layer_scale")) else rng.normal(0, 0.2, value.shape)
    model = export_onnx(plan, network.state())
    onnx.checker.check_model(model, full_check=True)
    shape = plan.nodes[plan.inputs[0]].shape
    x = rng.standard_normal((2, *shape)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert relative_error(network.forward(x), theirs) < TOLERANCE


# --------------------------------------------------------------------------------------------
# The glue the exports above need, on hand-built graphs

from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def graph_model(nodes: list, shape: list, initializers: dict | None = None) -> object:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.asarray(v), k)
                     for k, v in (initializers or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    return model


def constant(name: str, values: list, dtype=np.int64) -> object:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(
        np.asarray(values, dtype=dtype), name))


@pytest.mark.parametrize(("target", "imported"), [
    ([1, -1], "flatten"),  # x.view(x.size(0), -1) traced from one image
    ([1, 48], "flatten"),
    ([-1, 48], "flatten"),
])
def test_a_traced_batch_of_one_is_the_batch_axis(target, imported) -> None:
    from netspec.interchange.onnx_import import translate

    model = graph_model([constant("t", target), helper.make_node("Reshape", ["x", "t"], ["y"])],
                        [1, 3, 4, 4])
    result = translate(model)
    assert [n.op_name for n in result.plan.nodes.values()] == ["input", imported]
    x = np.random.default_rng(0).standard_normal((3, 3, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(result.network.forward(x), x.reshape(3, 48))


@pytest.mark.parametrize("target", [[2, -1], [1, 5, -1], [1, 47]])
def test_a_reshape_that_mixes_samples_is_still_refused(target) -> None:
    from netspec.interchange.onnx_import import OnnxImportError, translate

    model = graph_model([constant("t", target), helper.make_node("Reshape", ["x", "t"], ["y"])],
                        [1, 3, 4, 4])
    with pytest.raises(OnnxImportError, match="Reshape"):
        translate(model)


def test_shape_arithmetic_on_constants_is_folded() -> None:
    """What torch.onnx.export writes around ViT's class token and a split's sizes: Equal,
    Where, ConstantOfShape, Mul, Mod, Add, Div (integer, rounding toward zero), Sqrt, Expand,
    Reshape of constants; the result reshapes the input to (N, 48)."""
    from netspec.interchange.onnx_import import translate

    nodes = [
        constant("three", [3]),
        helper.make_node("ConstantOfShape", ["three"], ["ones"], value=numpy_helper.from_array(
            np.array([1], np.int64))),                                    # [1, 1, 1]
        constant("minus", -1),
        helper.make_node("Mul", ["ones", "minus"], ["negative"]),         # [-1, -1, -1]
        constant("wanted", [1, -1, -1]),
        helper.make_node("Equal", ["wanted", "negative"], ["same"]),      # [F, T, T]
        helper.make_node("Where", ["same", "ones", "wanted"], ["mask"]),  # [1, 1, 1]
        constant("seven", [7]), constant("two", [2]),
        helper.make_node("Mod", ["seven", "two"], ["one"]),               # [1]
        constant("minus_seven", [-7]),
        helper.make_node("Div", ["minus_seven", "two"], ["minus_three"]),  # [-3], not [-4]
        helper.make_node("Add", ["minus_three", "two"], ["minus_one"]),   # [-1]
        constant("sixteen", [16.0], np.float32),
        helper.make_node("Sqrt", ["sixteen"], ["four"]),                  # [4.0]
        helper.make_node("Expand", ["one", "mask"], ["block"]),           # [[[1]]]
        constant("flat", [1]),
        helper.make_node("Reshape", ["block", "flat"], ["batch"]),        # [1]
        helper.make_node("Concat", ["batch", "minus_one"], ["target"], axis=0),  # [1, -1]
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    result = translate(graph_model(nodes, [1, 3, 4, 4]))
    assert result.plan.nodes[result.plan.output].shape == (48,)


class Attending(torch.nn.Module):
    """Tokens with a class token in front and a position embedding, one self-attention as
    torchvision's encoder calls it, and a learned scale."""

    def __init__(self, tokens: int = 16, dim: int = 32, heads: int = 4):
        super().__init__()
        self.class_token = torch.nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embedding = torch.nn.Parameter(torch.randn(1, tokens + 1, dim))
        self.attention = torch.nn.MultiheadAttention(dim, heads, batch_first=True)
        self.layer_scale = torch.nn.Parameter(torch.rand(1, tokens + 1, dim) + 0.5)

    def forward(self, x):
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embedding
        x, _ = self.attention(x, x, x, need_weights=False)
        return self.layer_scale * x


def test_attention_and_learned_tensors_from_torch_onnx_export(tmp_path) -> None:
    """nn.MultiheadAttention as torch.onnx.export decomposes it (the batch moved to the
    second axis and folded into the heads') reads back as one multihead_attention node with
    PyTorch's keys; the class token, position embedding and layer scale as learned tensors
    keyed by their state_dict names."""
    from netspec.interchange.onnx_import import import_onnx

    torch.manual_seed(0)
    model = Attending().eval()
    path = tmp_path / "attending.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 16, 32),), str(path), dynamo=False,
                          input_names=["input"], output_names=["logits"])
    imported = import_onnx(path)
    nodes = imported.plan.nodes
    assert nodes["attention"].op_name == "multihead_attention"
    assert nodes["attention"].params.num_heads == 4
    for key in ("class_token", "pos_embedding", "layer_scale"):
        assert nodes[key].op_name == "parameter", key
    ours = imported.network.state()
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(ours[key], value.numpy())
    x = np.random.default_rng(0).standard_normal((1, 16, 32)).astype(np.float32)
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0]
    assert relative_error(imported.network.forward(x), theirs) < TOLERANCE
    # any batch, each sample as it alone computes
    batch = np.concatenate([x, 0.5 * x])
    expected = np.concatenate([imported.network.forward(s[None]) for s in batch])
    assert relative_error(imported.network.forward(batch), expected) < TOLERANCE


def test_an_attention_whose_out_projection_has_no_bias_reads_a_zero_bias(tmp_path) -> None:
    """The newer exporter drops out_proj's bias where it is all zeros, as
    nn.MultiheadAttention starts it: the Gemm then has two inputs."""
    from netspec.interchange.onnx_import import import_onnx

    torch.manual_seed(0)
    model = Attending().eval()
    full = tmp_path / "attending.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 16, 32),), str(full), dynamo=False,
                          input_names=["input"], output_names=["logits"])
    proto = onnx.load(str(full))
    projection = next(n for n in proto.graph.node
                      if n.op_type == "Gemm" and "out_proj" in " ".join(n.input))
    del projection.input[2]
    path = tmp_path / "no_bias.onnx"
    onnx.save(proto, str(path))
    imported = import_onnx(path)
    assert imported.plan.nodes["attention"].op_name == "multihead_attention"
    assert not imported.network.state()["attention.out_proj.bias"].any()
    x = np.random.default_rng(0).standard_normal((1, 16, 32)).astype(np.float32)
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0]
    assert relative_error(imported.network.forward(x), theirs) < TOLERANCE


# --------------------------------------------------------------------------------------------
# Causal attention: a mask that is exactly causal is netspec's causal multihead_attention;
# any other mask is refused with the reason


class MaskedAttention(torch.nn.Module):
    """nn.MultiheadAttention as a decoder calls it, with one kind of attention mask."""

    def __init__(self, mask: str, dim: int = 32, heads: int = 4):
        super().__init__()
        self.attention = torch.nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mask = mask

    def forward(self, x):
        tokens = x.shape[1]
        causal = torch.nn.Transformer.generate_square_subsequent_mask(tokens)
        masks = {
            "attn_mask": {"attn_mask": causal},
            "boolean attn_mask": {"attn_mask": torch.triu(torch.ones(tokens, tokens,
                                                                     dtype=torch.bool), 1)},
            "is_causal": {"attn_mask": causal, "is_causal": True},
            "a step too far": {"attn_mask": torch.triu(torch.full((tokens, tokens),
                                                                  float("-inf")), 2)},
            "a bias": {"attn_mask": torch.linspace(-1, 1, tokens * tokens).reshape(tokens,
                                                                                   tokens)},
        }
        y, _ = self.attention(x, x, x, need_weights=False, **masks[self.mask])
        return y


def masked_attention_file(mask: str, directory: Path) -> tuple[Path, object]:
    torch.manual_seed(0)
    model = MaskedAttention(mask).eval()
    randomise(model)
    path = directory / "masked.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 6, 32),), str(path), dynamo=False,
                          input_names=["input"], output_names=["y"])
    return path, model


@pytest.mark.parametrize("mask", ["attn_mask", "boolean attn_mask", "is_causal"])
def test_a_causal_mask_is_read_as_the_causal_attention(mask: str, tmp_path) -> None:
    path, model = masked_attention_file(mask, tmp_path)
    imported = import_onnx(path)
    attention = imported.plan.nodes["attention"]
    assert attention.op_name == "multihead_attention" and attention.params.causal
    state = imported.network.state()
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(state[key], value.numpy())
    x = np.random.default_rng(0).standard_normal((1, 6, 32)).astype(np.float32)
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0]
    ours = imported.network.forward(x)
    assert relative_error(ours, theirs) < TOLERANCE
    # the mask counts: the same weights without it compute something else
    assert relative_error(ours, model.attention(*[torch.from_numpy(x)] * 3,
                                                need_weights=False)[0].detach().numpy()) > 1e-3
    # and PyTorch's own module agrees, on a batch of several
    batch = np.concatenate([x, -x, 0.5 * x])
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    assert relative_error(imported.network.forward(batch), expected) < TOLERANCE


@pytest.mark.parametrize("mask", ["a step too far", "a bias"])
def test_any_other_mask_is_refused_with_the_reason(mask: str, tmp_path) -> None:
    from netspec.interchange.onnx_import import OnnxImportError

    path, _ = masked_attention_file(mask, tmp_path)
    with pytest.raises(OnnxImportError) as refusal:
        import_onnx(path)
    message = str(refusal.value)
    assert "node '/attention/Add_2' (Add): the attention mask (shape [1, 1, 6, 6]) is not the " \
           "causal one (0 on and below the diagonal, -inf above); netspec's " \
           "multihead_attention has the causal mask only" in message, message
    assert "cannot import:" in message  # one problem: the nodes inside are not blamed
