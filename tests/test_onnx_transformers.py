"""Transformers and the convolutional networks of 2020 through ONNX, both ways.

In: torchvision's ``convnext_tiny``, ``shufflenet_v2_x1_0`` and a small ``VisionTransformer``,
written by ``torch.onnx.export`` at its default opset from one example image (a static batch
of 1; ViT's attention decomposed into MatMul/Reshape/Transpose/Softmax with the batch folded
into the heads' axis), import into netspec and compute what onnxruntime computes. Out: the
shipped ``vit_b_16``, ``convnext_tiny`` and ``shufflenet_v2_x1_0`` export, pass the full checker
and equal onnxruntime.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

# --------------------------------------------------------------------------------------------
# The glue torchvision's exports need, on hand-built graphs


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
