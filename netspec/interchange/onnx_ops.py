"""The per-op mapping between netspec and ONNX, both ways, one small function per op.

``EXPORTERS`` maps every netspec op to the function that adds its ONNX nodes (or
``EXPORT_REFUSED`` says why it cannot be exported); ``IMPORTERS`` maps the ONNX ops netspec
reads to the function that turns one into netspec nodes, folds it into a constant, or refuses
it with the reason. ``CONSTANT_INPUTS`` names the inputs of an ONNX op that must be constants
(weights, shapes): netspec learns them, it does not compute them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from netspec.common.errors import NetspecError
from netspec.interchange.onnx_graph import onnx_module
from netspec.ops.base import WHOLE_NODE
from netspec.ops.core import MAX_INPUT_DIM
from netspec.ops.shapes import format_shape, pair

_GELU_CUBIC = 0.044715

if TYPE_CHECKING:
    from netspec.interchange.onnx_graph import Emitter
    from netspec.interchange.onnx_translator import Translator
    from netspec.plan.compiler import PlanNode


# ---------------------------------------------------------------- netspec -> ONNX

def _pads(padding: int | list[int]) -> list[int]:
    pad_h, pad_w = pair(padding)
    return [pad_h, pad_w, pad_h, pad_w]


def _export_conv2d(g: Emitter, node: PlanNode, x: list[str]) -> str:
    p = node.params
    inputs = [x[0], g.parameter(node, "weight")]
    if p.bias:
        inputs.append(g.parameter(node, "bias"))
    return g.node("Conv", inputs, node.id, node.id, kernel_shape=list(pair(p.kernel_size)),
                  strides=list(pair(p.stride)), pads=_pads(p.padding), group=p.groups,
                  dilations=list(pair(p.dilation)))


def _pool_attributes(node: PlanNode) -> dict[str, Any]:
    kernel, stride, padding = node.op.geometry
    return {"kernel_shape": list(kernel), "strides": list(stride),
            "pads": [padding[0], padding[1], padding[0], padding[1]],
            "ceil_mode": int(node.params.ceil_mode)}


def _export_maxpool2d(g: Emitter, node: PlanNode, x: list[str]) -> str:
    return g.node("MaxPool", x, node.id, node.id, **_pool_attributes(node))


def _export_avgpool2d(g: Emitter, node: PlanNode, x: list[str]) -> str:
    return g.node("AveragePool", x, node.id, node.id,
                  count_include_pad=int(node.params.count_include_pad), **_pool_attributes(node))


def _export_global_avgpool(g: Emitter, node: PlanNode, x: list[str]) -> str:
    # netspec's output is (C,): GlobalAveragePool, which keeps H and W as 1x1, then those
    # squeezed away; an import reads the two back as this op (a ReduceMean over H and W is
    # torch.mean, netspec's mean)
    pooled = g.node("GlobalAveragePool", x, f"{node.id}/pooled", f"{node.id}/pool")
    return g.node("Squeeze", [pooled, _ints(g, f"{node.id}/axes", [2, 3])], node.id, node.id)


def _export_linear(g: Emitter, node: PlanNode, x: list[str]) -> str:
    if len(node.input_shapes[0]) > 1:
        return _export_linear_rows(g, node, x)
    inputs = [x[0], g.parameter(node, "weight")]
    if node.params.bias:
        inputs.append(g.parameter(node, "bias"))
    return g.node("Gemm", inputs, node.id, node.id, transB=1)


def _export_flatten(g: Emitter, node: PlanNode, x: list[str]) -> str:
    if len(node.shape) > 1:
        return g.node("Reshape", [x[0], _ints(g, f"{node.id}/shape", [0, *node.shape])],
                      node.id, node.id)
    return g.node("Flatten", x, node.id, node.id, axis=1)


def _simple(op_type: str) -> Callable[[Emitter, PlanNode, list[str]], str]:
    def export(g: Emitter, node: PlanNode, x: list[str]) -> str:
        return g.node(op_type, x, node.id, node.id)
    return export


def _export_leaky_relu(g: Emitter, node: PlanNode, x: list[str]) -> str:
    return g.node("LeakyRelu", x, node.id, node.id, alpha=float(node.params.negative_slope))


def _export_softmax(g: Emitter, node: PlanNode, x: list[str]) -> str:
    # opset 13 on: over that one axis, as netspec's
    return g.node("Softmax", x, node.id, node.id, axis=node.params.dim)


def _export_dropout(g: Emitter, node: PlanNode, x: list[str]) -> str:
    # the identity in inference: consumers read the input's value directly
    return x[0]


def _export_batchnorm(g: Emitter, node: PlanNode, x: list[str]) -> str:
    inputs = [x[0], g.parameter(node, "weight"), g.parameter(node, "bias"),
              g.parameter(node, "running_mean"), g.parameter(node, "running_var")]
    # ONNX weighs the old running value by momentum; netspec weighs the new batch
    return g.node("BatchNormalization", inputs, node.id, node.id,
                  epsilon=float(node.params.eps), momentum=1.0 - float(node.params.momentum))


def _export_add(g: Emitter, node: PlanNode, x: list[str]) -> str:
    return g.node("Add" if len(x) == 2 else "Sum", x, node.id, node.id)


def _export_concat(g: Emitter, node: PlanNode, x: list[str]) -> str:
    # ONNX counts axes as PyTorch's dim does, the batch first and negatives from the end: the
    # dim as the spec writes it
    axis = node.params.dim if node.params.axis is None else node.params.axis + 1
    return g.node("Concat", x, node.id, node.id, axis=axis)


def _export_input(g: Emitter, node: PlanNode, x: list[str]) -> str:
    return node.id


# ---- tensors of any rank (issue 25)

_OPEN_END = 2**63 - 1


def _ints(g: Emitter, name: str, values: Any) -> str:
    """An int64 initializer (a shape, axes, an index) named ``name``."""
    array = np.asarray(values, dtype=np.int64)
    g.initializers.append(onnx_module().numpy_helper.from_array(array, name))
    return name


def _export_linear_rows(g: Emitter, node: PlanNode, x: list[str]) -> str:
    # Gemm takes 2-D inputs only; MatMul broadcasts over the leading axes as PyTorch does
    # the MatMul carries the node's name (an import makes the linear layer of it, and the Add
    # after it its bias); the last value, the node's output, is named by the node id
    weight_t = g.node("Transpose", [g.parameter(node, "weight")], f"{node.id}/weight_t",
                      f"{node.id}/weight_t", perm=[1, 0])
    if not node.params.bias:
        return g.node("MatMul", [x[0], weight_t], node.id, node.id)
    product = g.node("MatMul", [x[0], weight_t], f"{node.id}/product", node.id)
    return g.node("Add", [product, g.parameter(node, "bias")], node.id, f"{node.id}/bias")


def _export_reshape(g: Emitter, node: PlanNode, x: list[str]) -> str:
    # 0 keeps the batch axis as it is (allowzero is off); a -1 stays as the spec wrote it
    shape = _ints(g, f"{node.id}/shape", [0, *node.params.shape])
    return g.node("Reshape", [x[0], shape], node.id, node.id)


def _export_permute(g: Emitter, node: PlanNode, x: list[str]) -> str:
    return g.node("Transpose", x, node.id, node.id,
                  perm=list(node.op.axes(node.input_shapes[0])))


def _export_select(g: Emitter, node: PlanNode, x: list[str]) -> str:
    # a scalar index drops the axis, as torch.select does; dim and index as the spec writes
    # them (ONNX counts both from the end when negative, as PyTorch)
    p = node.params
    return g.node("Gather", [x[0], _ints(g, f"{node.id}/index", p.index)], node.id, node.id,
                  axis=p.dim)


def _export_slice(g: Emitter, node: PlanNode, x: list[str]) -> str:
    # ONNX's Slice clamps its bounds as Python's slices (and netspec's) do: the bounds as the
    # spec writes them, an open end as PyTorch writes x[:, 58:] (INT64_MAX)
    p = node.params
    end = _OPEN_END if p.end is None else p.end
    inputs = [x[0], _ints(g, f"{node.id}/starts", [p.start]),
              _ints(g, f"{node.id}/ends", [end]), _ints(g, f"{node.id}/axes", [p.dim]),
              _ints(g, f"{node.id}/steps", [p.step])]
    return g.node("Slice", inputs, node.id, node.id)


def _export_mean(g: Emitter, node: PlanNode, x: list[str]) -> str:
    # opset 17's ReduceMean takes its axes as an attribute (an input from opset 18)
    return g.node("ReduceMean", x, node.id, node.id, axes=list(node.params.dim),
                  keepdims=int(node.params.keepdim))


def _export_channel_shuffle(g: Emitter, node: PlanNode, x: list[str]) -> str:
    shape, groups = node.input_shapes[0], node.params.groups
    grouped_shape = [0, groups, shape[0] // groups, *shape[1:]]
    grouped = g.node("Reshape", [x[0], _ints(g, f"{node.id}/grouped_shape", grouped_shape)],
                     f"{node.id}/grouped", f"{node.id}/group")
    perm = [0, 2, 1, *range(3, len(shape) + 2)]
    swapped = g.node("Transpose", [grouped], f"{node.id}/swapped", f"{node.id}/swap",
                     perm=perm)
    return g.node("Reshape", [swapped, _ints(g, f"{node.id}/shape", [0, *shape])], node.id,
                  node.id)


def _export_parameter(g: Emitter, node: PlanNode, x: list[str]) -> str:
    # the stored tensor is the initializer named by its key, the node's path; the node's
    # value, that tensor broadcast to the batch of the network's first input, is named apart.
    # A tensor with its batch axis (1, ...) is expanded as it is; one without is reshaped to
    # (1, ...) first: an import tells the two apart by that Reshape
    tensor = g.parameter(node, WHOLE_NODE)
    sample = list(node.shape)
    if not node.params.batch_axis:
        tensor = g.node("Reshape", [tensor, _ints(g, f"{node.id}/one_shape", [1, *sample])],
                        f"{node.id}/one", f"{node.id}/one")
    batch_of = g.node("Shape", [g.plan.inputs[0]], f"{node.id}/input_shape",
                      f"{node.id}/input_shape", start=0, end=1)
    shape = g.node("Concat", [batch_of, _ints(g, f"{node.id}/sample_shape", sample)],
                   f"{node.id}/shape", f"{node.id}/shape", axis=0)
    return g.node("Expand", [tensor, shape], f"{node.id}/value", node.id)


def _floats(g: Emitter, name: str, values: Any) -> str:
    array = np.asarray(values, dtype=np.float32)
    g.initializers.append(onnx_module().numpy_helper.from_array(array, name))
    return name


def _layer_normalization(g: Emitter, node: PlanNode, x: str, output: str, name: str,
                         axis: int) -> str:
    shape = node.op.p_shape
    p = node.params
    scale = g.parameter(node, "weight") if p.elementwise_affine else \
        _floats(g, f"{node.id}/ones", np.ones(shape))
    inputs = [x, scale]
    if p.elementwise_affine and p.bias:
        inputs.append(g.parameter(node, "bias"))
    return g.node("LayerNormalization", inputs, output, name, axis=axis,
                  epsilon=float(p.eps))


def _export_layernorm(g: Emitter, node: PlanNode, x: list[str]) -> str:
    return _layer_normalization(g, node, x[0], node.id, node.id, -len(node.op.p_shape))


def _export_layernorm2d(g: Emitter, node: PlanNode, x: list[str]) -> str:
    # torchvision's LayerNorm2d: channels last, normalise the last axis, channels first
    last = g.node("Transpose", x, f"{node.id}/channels_last", f"{node.id}/to_last",
                  perm=[0, 2, 3, 1])
    normalised = _layer_normalization(g, node, last, f"{node.id}/normalised", f"{node.id}/norm",
                                      -1)
    return g.node("Transpose", [normalised], node.id, node.id, perm=[0, 3, 1, 2])


def _export_matmul(g: Emitter, node: PlanNode, x: list[str]) -> str:
    return g.node("MatMul", x, node.id, node.id)


def _export_multihead_attention(g: Emitter, node: PlanNode, x: list[str]) -> str:
    """PyTorch's attention, decomposed: in_proj_weight (and in_proj_bias), stored whole under
    their keys, split in the graph into the q, k and v projections; heads by Reshape and
    Transpose, scaled scores, the causal mask if any, Softmax, the weighted sum, out_proj.
    An import reads exactly this form back as one multihead_attention (onnx_patterns)."""
    p, i = node.params, node.id
    embed, heads = p.embed_dim, p.num_heads
    sources = x * 3 if len(x) == 1 else x
    weight_t = g.node("Transpose", [g.parameter(node, "in_proj_weight")], f"{i}/in_weight_t",
                      f"{i}/in_weight_t", perm=[1, 0])
    projections = g.split(weight_t, [embed] * 3, [f"{i}/{role}_weight_t" for role in "qkv"],
                          f"{i}/split_weight", axis=1)
    biases = g.split(g.parameter(node, "in_proj_bias"), [embed] * 3,
                     [f"{i}/{role}_bias" for role in "qkv"], f"{i}/split_bias", axis=0) \
        if p.bias else [None] * 3
    split = []
    for source, role, weight, bias in zip(sources, "qkv", projections, biases):
        projected = g.node("MatMul", [source, weight], f"{i}/{role}_product",
                           f"{i}/{role}_matmul")
        if bias is not None:
            projected = g.node("Add", [projected, bias], f"{i}/{role}", f"{i}/{role}_add")
        heads_shape = _ints(g, f"{i}/{role}_heads_shape", [0, 0, heads, embed // heads])
        grouped = g.node("Reshape", [projected, heads_shape], f"{i}/{role}_grouped",
                         f"{i}/{role}_reshape")
        perm = [0, 2, 3, 1] if role == "k" else [0, 2, 1, 3]
        split.append(g.node("Transpose", [grouped], f"{i}/{role}_heads", f"{i}/{role}_heads",
                            perm=perm))
    q, k_t, v = split
    scores = g.node("MatMul", [q, k_t], f"{i}/scores", f"{i}/scores")
    scaled = g.node("Mul", [scores, _floats(g, f"{i}/scale", 1.0 / np.sqrt(embed // heads))],
                    f"{i}/scaled", f"{i}/scale")
    if p.causal:
        tokens, keys = node.input_shapes[0][0], node.input_shapes[-1][0]
        mask = _floats(g, f"{i}/causal_mask", causal_mask(tokens, keys))
        scaled = g.node("Add", [scaled, mask], f"{i}/masked", f"{i}/mask")
    attention = g.node("Softmax", [scaled], f"{i}/weights", f"{i}/softmax", axis=-1)
    summed = g.node("MatMul", [attention, v], f"{i}/weighted", f"{i}/weighted")
    tokens_first = g.node("Transpose", [summed], f"{i}/tokens_first", f"{i}/tokens_first",
                          perm=[0, 2, 1, 3])
    joined = g.node("Reshape", [tokens_first, _ints(g, f"{i}/joined_shape", [0, 0, embed])],
                    f"{i}/joined", f"{i}/join")
    out_t = g.node("Transpose", [g.parameter(node, "out_proj.weight")], f"{i}/out_weight_t",
                   f"{i}/out_weight_t", perm=[1, 0])
    if not p.bias:
        return g.node("MatMul", [joined, out_t], i, i)
    product = g.node("MatMul", [joined, out_t], f"{i}/out_product", f"{i}/out_matmul")
    return g.node("Add", [product, g.parameter(node, "out_proj.bias")], i, i)


def causal_mask(tokens: int, keys: int) -> np.ndarray:
    """The additive mask by which token t attends to keys 0..t only (PyTorch's is_causal)."""
    return np.triu(np.full((tokens, keys), -np.inf, dtype=np.float32), 1)


EXPORTERS: dict[str, Callable[[Emitter, PlanNode, list[str]], str]] = {
    "input": _export_input,
    "conv2d": _export_conv2d,
    "maxpool2d": _export_maxpool2d,
    "avgpool2d": _export_avgpool2d,
    "global_avgpool": _export_global_avgpool,
    "linear": _export_linear,
    "flatten": _export_flatten,
    "relu": _simple("Relu"),
    "leaky_relu": _export_leaky_relu,
    "sigmoid": _simple("Sigmoid"),
    "tanh": _simple("Tanh"),
    "softmax": _export_softmax,
    "dropout": _export_dropout,
    "batchnorm": _export_batchnorm,
    "add": _export_add,
    "concat": _export_concat,
    # tensors of any rank (issue 25)
    "reshape": _export_reshape,
    "permute": _export_permute,
    "transpose": _export_permute,
    "select": _export_select,
    "slice": _export_slice,
    "mean": _export_mean,
    "channel_shuffle": _export_channel_shuffle,
    "parameter": _export_parameter,
    "layernorm": _export_layernorm,
    "layernorm2d": _export_layernorm2d,
    "matmul": _export_matmul,
    "multihead_attention": _export_multihead_attention,
}
# ---- the convolutional-network ops (issue 24)

def _export_adaptive_avgpool2d(g: Emitter, node: PlanNode, x: list[str]) -> str:
    out_hw = pair(node.params.output_size)
    if out_hw == (1, 1):
        return g.node("GlobalAveragePool", x, node.id, node.id)
    in_hw = node.input_shapes[0][1:]
    if any(size % out for size, out in zip(in_hw, out_hw)):
        raise NetspecError(
            f"node '{node.id}' (adaptive_avgpool2d): output size {out_hw[0]}x{out_hw[1]} "
            f"does not divide the input {in_hw[0]}x{in_hw[1]}; ONNX has no adaptive pooling, "
            f"and only equal windows are an AveragePool")
    kernel = [size // out for size, out in zip(in_hw, out_hw)]
    return g.node("AveragePool", x, node.id, node.id, kernel_shape=kernel, strides=kernel)


def _export_clip(low: float | None, high: float | None
                 ) -> Callable[[Emitter, PlanNode, list[str]], str]:
    def export(g: Emitter, node: PlanNode, x: list[str]) -> str:
        p = node.params
        bounds = (p.min_val, p.max_val) if low is None else (low, high)
        return g.node("Clip", [x[0], g.constant(f"{node.id}/min", bounds[0]),
                               g.constant(f"{node.id}/max", bounds[1])], node.id, node.id)
    return export


def _export_silu(g: Emitter, node: PlanNode, x: list[str]) -> str:
    gate = g.node("Sigmoid", x, f"{node.id}/sigmoid", f"{node.id}/sigmoid")
    return g.node("Mul", [x[0], gate], node.id, node.id)


def _export_gelu(g: Emitter, node: PlanNode, x: list[str]) -> str:
    # opset 17 has no Gelu: PyTorch's own decompositions, node for node, which the import
    # folds back into one gelu (fuse_gelu)
    n = node.id

    def mul(a: str, b: str, name: str) -> str:
        return g.node("Mul", [a, b], f"{n}/{name}", f"{n}/{name}")

    if node.params.approximate == "tanh":
        cube = mul(x[0], mul(x[0], x[0], "square"), "cube")
        inner = g.node("Add", [x[0], mul(g.constant(f"{n}/c", _GELU_CUBIC), cube, "cubic")],
                       f"{n}/inner", f"{n}/inner")
        scaled = mul(g.constant(f"{n}/k", math.sqrt(2 / math.pi)), inner, "scaled")
        curve = g.node("Tanh", [scaled], f"{n}/tanh", f"{n}/tanh")
    else:
        scaled = g.node("Div", [x[0], g.constant(f"{n}/sqrt2", math.sqrt(2))],
                        f"{n}/scaled", f"{n}/scaled")
        curve = g.node("Erf", [scaled], f"{n}/erf", f"{n}/erf")
    one_plus = g.node("Add", [curve, g.constant(f"{n}/one", 1.0)], f"{n}/one_plus",
                      f"{n}/one_plus")
    return g.node("Mul", [mul(x[0], one_plus, "x_one_plus"), g.constant(f"{n}/half", 0.5)],
                  n, n)


def _export_hardsigmoid(g: Emitter, node: PlanNode, x: list[str]) -> str:
    return g.node("HardSigmoid", x, node.id, node.id, alpha=1.0 / 6, beta=0.5)


def _export_log_softmax(g: Emitter, node: PlanNode, x: list[str]) -> str:
    return g.node("LogSoftmax", x, node.id, node.id, axis=node.params.dim)


def _export_conv_transpose2d(g: Emitter, node: PlanNode, x: list[str]) -> str:
    kernel, stride, padding, output_padding, dilation = node.op.geometry
    inputs = [x[0], g.parameter(node, "weight")]
    if node.params.bias:
        inputs.append(g.parameter(node, "bias"))
    return g.node("ConvTranspose", inputs, node.id, node.id, kernel_shape=list(kernel),
                  strides=list(stride), pads=[*padding, *padding],
                  output_padding=list(output_padding), dilations=list(dilation),
                  group=node.params.groups)


def _export_upsample(g: Emitter, node: PlanNode, x: list[str]) -> str:
    scales = g.constant(f"{node.id}/scales", [1.0, 1.0, *pair(node.params.scale_factor)])
    if node.params.mode == "nearest":
        # what PyTorch writes for nn.Upsample(mode="nearest")
        return g.node("Resize", [x[0], "", scales], node.id, node.id, mode="nearest",
                      coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    return g.node("Resize", [x[0], "", scales], node.id, node.id, mode="linear",
                  coordinate_transformation_mode="pytorch_half_pixel")


EXPORTERS.update({
    "conv_transpose2d": _export_conv_transpose2d,
    "upsample": _export_upsample,
    "mul": _simple("Mul"),
    "adaptive_avgpool2d": _export_adaptive_avgpool2d,
    "hardtanh": _export_clip(None, None),
    "relu6": _export_clip(0.0, 6.0),
    "silu": _export_silu,
    "gelu": _export_gelu,
    "hardswish": _simple("HardSwish"),
    "hardsigmoid": _export_hardsigmoid,
    "log_softmax": _export_log_softmax,
    # the identity in inference, as dropout
    "stochastic_depth": _export_dropout,
})

# netspec ops ONNX cannot express, with the reason shown to the user
EXPORT_REFUSED: dict[str, str] = {}


# ---------------------------------------------------------------- ONNX -> netspec
# Each importer reads one ONNX node through the translator ``t``: t.attr(...), t.tensor(i)
# (a value computed by the network), t.constant(i) (a folded constant), and either emits a
# netspec node (t.emit), aliases its output to an existing value (t.alias), sets a constant
# (t.set_constant), or refuses (t.refuse, which names the node and the reason).

def _import_conv(t: Translator, n: Any) -> None:
    t.only_attributes(n, "auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
    group = t.attr(n, "group", 1)
    if group < 1:
        t.refuse(n, f"group={group} is not a number of channel groups")
    dilations = tuple(t.attr(n, "dilations", [1, 1], list))
    if len(dilations) != 2 or any(d < 1 for d in dilations):
        t.refuse(n, f"dilations={list(dilations)} is not supported: a positive pair is "
                    f"needed")
    weight = t.constant(n, 1, "the weight")
    bias = t.constant(n, 2, "the bias") if len(n.input) > 2 and n.input[2] else None
    x = t.tensor(n, 0)
    if t.refused(n) or x is None or weight is None:
        return
    if weight.ndim != 4:
        t.refuse(n, f"a {weight.ndim - 2}-D convolution is not supported (netspec's conv2d "
                    f"is 2-D)")
        return
    kernel = tuple(int(k) for k in weight.shape[2:])
    declared = t.attr(n, "kernel_shape", None, list)
    if declared is not None and tuple(declared) != kernel:
        t.refuse(n, f"kernel_shape={list(declared)} does not match the weight's "
                    f"{list(weight.shape)}")
        return
    if not t.rank_is(n, x, 3, "Conv's input"):
        return
    if weight.shape[1] * group != x.shape[0] or weight.shape[0] % group:
        t.refuse(n, f"the weight {list(weight.shape)} in group={group} groups expects "
                    f"{weight.shape[1] * group} input channels, the input has {x.shape[0]}")
        return
    strides = tuple(t.attr(n, "strides", [1, 1]))
    extent = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilations))
    padding = t.symmetric_padding(n, x.shape[1:], extent, strides)
    if padding is None:
        return
    fields = {"out_channels": int(weight.shape[0]), "kernel_size": _size(kernel),
              "stride": _size(strides), "padding": _size(padding), "bias": bias is not None}
    if group != 1:
        fields["groups"] = int(group)
    if dilations != (1, 1):
        fields["dilation"] = _size(dilations)
    params = {"weight": weight}
    if bias is not None:
        if bias.shape != (weight.shape[0],):
            t.refuse(n, f"the bias has shape {list(bias.shape)}, not [{weight.shape[0]}]")
            return
        params["bias"] = bias
    t.emit(n, "conv2d", [x], fields, params)


def _size(pair_: tuple[int, ...]) -> int | list[int]:
    """A (h, w) pair as a spec writes it: one int when both agree."""
    first, second = (int(v) for v in pair_)
    return first if first == second else [first, second]


def _import_pool(op: str) -> Callable[[Translator, Any], None]:
    def convert(t: Translator, n: Any) -> None:
        allowed = ["auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "strides"]
        allowed += ["storage_order"] if op == "maxpool2d" else ["count_include_pad"]
        t.only_attributes(n, *allowed)
        if op == "maxpool2d" and t.output_used(n, 1):
            t.refuse(n, "the Indices output is not supported")
        dilations = t.attr(n, "dilations", None, list)
        if dilations is not None and any(d != 1 for d in dilations):
            t.refuse(n, f"dilations={list(dilations)} is not supported")
        kernel = tuple(t.attr(n, "kernel_shape", []))
        if len(kernel) != 2:
            t.refuse(n, f"kernel_shape={list(kernel)}: only 2-D pooling is supported")
        x = t.tensor(n, 0)
        if t.refused(n) or x is None or not t.rank_is(n, x, 3, f"{n.op_type}'s input"):
            return
        strides = tuple(t.attr(n, "strides", [1, 1]))
        padding = t.symmetric_padding(n, x.shape[1:], kernel, strides)
        if padding is None:
            return
        fields = {"kernel_size": _size(kernel), "padding": _size(padding)}
        if strides != kernel:  # netspec's stride defaults to the kernel size
            fields["stride"] = _size(strides)
        if t.attr(n, "ceil_mode", 0):
            fields["ceil_mode"] = True
        if op == "avgpool2d" and any(padding) and not t.attr(n, "count_include_pad", 0):
            # ONNX's default; without padding both count the same cells
            fields["count_include_pad"] = False
        t.emit(n, op, [x], fields, {})
    return convert


def _import_global_average_pool(t: Translator, n: Any) -> None:
    x = t.tensor(n, 0)
    if x is None or not t.rank_is(n, x, 3, "GlobalAveragePool's input"):
        return
    # the pooled 1x1 axes stay, as ONNX's: a 1x1 convolution may follow (squeeze-excitation)
    t.emit(n, "adaptive_avgpool2d", [x], {"output_size": 1}, {})


def _import_gemm(t: Translator, n: Any) -> None:
    t.only_attributes(n, "alpha", "beta", "transA", "transB")
    if t.attr(n, "transA", 0):
        t.refuse(n, "transA=1 is not supported: the first input must be (batch, features)")
    weight = t.constant(n, 1, "B (the weight)")
    bias = t.constant(n, 2, "C (the bias)") if len(n.input) > 2 and n.input[2] else None
    x = t.tensor(n, 0)
    if t.refused(n) or x is None or weight is None:
        return
    if weight.ndim != 2:
        t.refuse(n, f"B has shape {list(weight.shape)}; a 2-D weight is needed")
        return
    weight = weight if t.attr(n, "transB", 0) else weight.T
    weight = weight * np.float32(t.attr(n, "alpha", 1.0))
    _linear(t, n, x, weight, bias, float(t.attr(n, "beta", 1.0)))


def _linear(t: Translator, n: Any, x: Any, weight: np.ndarray, bias: np.ndarray | None,
            beta: float = 1.0) -> None:
    # netspec's linear acts on the last axis of any rank, as PyTorch's
    if x.shape != x.onnx_shape and not t.rank_is(n, x, 1, f"{n.op_type}'s first input"):
        return
    if weight.shape[1] != x.shape[-1]:
        t.refuse(n, f"the weight expects {weight.shape[1]} features, the input has "
                    f"{x.shape[-1]}")
        return
    params = {"weight": weight}
    if bias is not None:
        vector = t.bias_vector(n, bias, weight.shape[0])
        if vector is None:
            return
        params["bias"] = vector * np.float32(beta)
    t.emit(n, "linear", [x], {"out_features": int(weight.shape[0]), "bias": bias is not None},
           params)


def _import_matmul(t: Translator, n: Any) -> None:
    if len(n.input) == 2 and t.computed(n, 1):
        _import_tensor_matmul(t, n)
        return
    weight = t.constant(n, 1, "the second input (the weight)")
    x = t.tensor(n, 0)
    if x is None or weight is None:
        return
    if weight.ndim != 2:
        t.refuse(n, f"the second input has shape {list(weight.shape)}; only a 2-D weight "
                    f"(a linear layer) is supported")
        return
    # an Add of a bias vector right after it becomes the linear layer's bias (see _import_add)
    _linear(t, n, x, weight.T, None)


def _import_add(t: Translator, n: Any) -> None:
    if t.fold_bias(n):
        return
    _merge(t, n, "add")


def _import_sum(t: Translator, n: Any) -> None:
    if len(n.input) == 1:
        x = t.tensor(n, 0)
        if x is not None:
            t.alias(n, x)
        return
    _merge(t, n, "add")


def _merge(t: Translator, n: Any, op: str, fields: dict[str, Any] | None = None) -> None:
    inputs = [t.tensor(n, i) for i in range(len(n.input))]
    if any(x is None for x in inputs):
        return
    # netspec's add and mul broadcast as ONNX's do between inputs of one rank; emit refuses
    # the rest with netspec's own shape message
    t.emit(n, op, inputs, fields or {}, {})


def _import_concat(t: Translator, n: Any) -> None:
    if t.all_constant(n):
        t.set_constant(n, t.fold_concat(n))
        return
    _static_axis(t, n, 1, "it joins along the batch, which netspec does not do", allowed=None)
    inputs = [t.tensor(n, i) for i in range(len(n.input))]
    if any(x is None for x in inputs) or t.refused(n):
        return
    if len(inputs) == 1:
        t.alias(n, inputs[0])
        return
    rank = len(inputs[0].onnx_shape) + 1
    axis = t.attr(n, "axis", 1)
    if axis % rank == 0:
        t.refuse(n, f"axis={axis} joins along the batch, which netspec does not do")
        return
    squeezed = any(x.shape != x.onnx_shape for x in inputs)
    if squeezed and axis % rank != 1:
        t.refuse(n, f"axis={axis} on a pooled (C, 1, 1) value is not supported")
        return
    # the axis as written: netspec's concat counts it as ONNX does
    _merge(t, n, "concat", {"dim": axis})


def _import_flatten(t: Translator, n: Any) -> None:
    _static_axis(t, n, 1, "netspec flattens all but the batch axis (axis=1)")
    x = t.tensor(n, 0)
    if x is None or t.refused(n):
        return
    rank = len(x.onnx_shape) + 1
    axis = t.attr(n, "axis", 1)
    axis = axis + rank if axis < 0 else axis
    if axis != 1:
        t.refuse(n, f"axis={axis} is not supported; netspec flattens all but the batch axis "
                    f"(axis=1)")
        return
    t.flatten(n, x)


def _import_reshape(t: Translator, n: Any) -> None:
    t.only_attributes(n, "allowzero")
    x = t.tensor(n, 0)
    target = t.constant(n, 1, "the target shape", symbolic=True)
    if x is None or target is None:
        return
    t.reshape(n, x, list(target.reshape(-1)))


def _elementwise(op: str) -> Callable[[Translator, Any], None]:
    def convert(t: Translator, n: Any) -> None:
        x = t.tensor(n, 0)
        if x is not None:
            t.emit(n, op, [x], {}, {}, onnx_shape=x.onnx_shape)
    return convert


def _import_leaky_relu(t: Translator, n: Any) -> None:
    alpha = float(t.attr(n, "alpha", 0.01))
    if not 0 <= alpha < 1:
        t.refuse(n, f"alpha={alpha:g} is not supported (netspec's negative_slope is in [0, 1))")
    x = t.tensor(n, 0)
    if x is not None and not t.refused(n):
        t.emit(n, "leaky_relu", [x], {"negative_slope": alpha}, {}, onnx_shape=x.onnx_shape)


def _static_axis(t: Translator, n: Any, default: int, why: str,
                 allowed: int | None = 1) -> None:
    """Refuse a non-negative axis netspec never takes (``allowed``: the only axis it takes,
    None: any but the batch's), even where the input's rank is unknown after a refused
    node."""
    axis = t.attr(n, "axis", default)
    if axis >= 0 and ((allowed is not None and axis != allowed) or axis == 0):
        t.refuse(n, f"axis={axis} is not supported: {why}")


def _import_softmax(t: Translator, n: Any) -> None:
    _static_axis(t, n, -1 if t.opset >= 13 else 1, "it normalises over the batch",
                 allowed=None)
    x = t.tensor(n, 0)
    if x is None or t.refused(n):
        return
    rank = len(x.onnx_shape) + 1
    modern = t.opset >= 13
    written = t.attr(n, "axis", -1 if modern else 1)
    axis = written + rank if written < 0 else written
    # before opset 13 softmax ran over every axis from `axis` on, as one
    if not modern and rank > 2 and axis != rank - 1:
        t.refuse(n, f"axis={t.attr(n, 'axis', 1)} on a rank-{rank} input before opset 13 "
                    f"normalises several axes as one, which netspec's softmax does not")
        return
    if x.shape != x.onnx_shape and axis != 1:
        t.refuse(n, f"axis={axis} on a pooled (C, 1, 1) value is not supported")
        return
    # a value held as ONNX holds it keeps the axis as written (netspec counts it as ONNX)
    dim = written if modern and x.shape == x.onnx_shape else axis
    t.emit(n, "softmax", [x], {"dim": dim}, {}, onnx_shape=x.onnx_shape)


def _import_batch_normalization(t: Translator, n: Any) -> None:
    t.only_attributes(n, "epsilon", "momentum", "training_mode", "spatial")
    if t.attr(n, "training_mode", 0):
        t.refuse(n, "training_mode=1 is not supported: netspec imports inference graphs")
    if any(t.output_used(n, i) for i in range(1, len(n.output))):
        t.refuse(n, "the running-statistics outputs (training mode) are not supported")
    if t.attr(n, "spatial", 1) != 1:
        t.refuse(n, "spatial=0 is not supported")
    arrays = [t.constant(n, i, what) for i, what in
              enumerate(("scale", "B", "mean", "var"), start=1)]
    x = t.tensor(n, 0)
    if t.refused(n) or x is None or any(a is None for a in arrays):
        return
    if len(x.shape) not in (1, 3):
        t.refuse(n, f"the input has per-sample shape {tuple(x.onnx_shape)}; netspec's "
                    f"batchnorm takes (C,) or (C, H, W)")
        return
    channels = x.shape[0]
    if any(a.shape != (channels,) for a in arrays):
        t.refuse(n, f"scale, B, mean and var must have shape [{channels}], got "
                    f"{[list(a.shape) for a in arrays]}")
        return
    if np.any(arrays[3] < 0):
        t.refuse(n, "var holds negative values")
        return
    momentum = 1.0 - float(t.attr(n, "momentum", 0.9))
    fields = {"eps": float(t.attr(n, "epsilon", 1e-5))}
    # momentum only matters for fine-tuning; a value netspec cannot hold keeps its default
    if 0 < momentum <= 1:
        fields["momentum"] = round(momentum, 12)
    params = {"weight": arrays[0], "bias": arrays[1]}
    buffers = {"running_mean": arrays[2], "running_var": arrays[3]}
    t.emit(n, "batchnorm", [x], fields, params, buffers=buffers, onnx_shape=x.onnx_shape)


def _import_dropout(t: Translator, n: Any) -> None:
    t.only_attributes(n, "ratio", "seed", "is_test")
    if t.output_used(n, 1):
        t.refuse(n, "the mask output is not supported")
    ratio = float(t.attr(n, "ratio", 0.5))
    if len(n.input) > 1 and n.input[1]:
        given = t.constant(n, 1, "the ratio")
        ratio = float(given.reshape(-1)[0]) if given is not None and given.size else ratio
    if len(n.input) > 2 and n.input[2]:
        training = t.constant(n, 2, "training_mode")
        if training is not None and training.size and bool(training.reshape(-1)[0]):
            t.refuse(n, "training_mode=true is not supported: netspec imports inference "
                        "graphs")
    if not 0 <= ratio < 1:
        t.refuse(n, f"ratio={ratio:g} is not supported (netspec's dropout p is in [0, 1))")
    x = t.tensor(n, 0)
    if x is not None and not t.refused(n):
        t.emit(n, "dropout", [x], {"p": ratio}, {}, onnx_shape=x.onnx_shape)


def _import_identity(t: Translator, n: Any) -> None:
    if t.all_constant(n):
        t.set_constant(n, t.constant(n, 0, "the input", symbolic=True))
        return
    x = t.tensor(n, 0)
    if x is not None:
        t.alias(n, x)


# ---- tensors of any rank (issue 25)

def _plain(t: Translator, n: Any, x: Any) -> bool:
    """Whether ``x`` is held as ONNX holds it (not a pooled (C, 1, 1) kept as (C,))."""
    if x.shape != x.onnx_shape:
        t.refuse(n, f"{n.op_type} of a pooled {format_shape(x.onnx_shape)} value is not "
                    f"supported")
        return False
    return True


def _import_tensor_matmul(t: Translator, n: Any) -> None:
    a, b = t.tensor(n, 0), t.tensor(n, 1)
    if a is None or b is None or not (_plain(t, n, a) and _plain(t, n, b)):
        return
    t.emit(n, "matmul", [a, b], {}, {})


def _import_transpose(t: Translator, n: Any) -> None:
    if not t.computed(n, 0):
        # a weight laid out for a MatMul: folded
        value = t.constant(n, 0, "the input")
        if value is None:
            return
        perm = t.attr(n, "perm", list(reversed(range(value.ndim))), list)
        if sorted(perm) != list(range(value.ndim)):
            t.refuse(n, f"perm {perm} does not reorder the {value.ndim} axes of its input")
            return
        t.set_constant(n, np.transpose(value, perm))
        return
    x = t.tensor(n, 0)
    if x is None or not _plain(t, n, x):
        return
    rank = len(x.shape) + 1
    perm = list(t.attr(n, "perm", list(reversed(range(rank))), list))
    if not perm or perm[0] != 0:
        t.refuse(n, f"perm={perm} moves the batch axis; netspec keeps it first")
        return
    t.emit(n, "permute", [x], {"dims": [int(d) for d in perm]}, {})


def _import_layer_normalization(t: Translator, n: Any) -> None:
    t.only_attributes(n, "axis", "epsilon", "stash_type")
    if any(t.output_used(n, i) for i in range(1, len(n.output))):
        t.refuse(n, "the mean and inverse-deviation outputs are not supported")
    scale = t.constant(n, 1, "the scale")
    bias = t.constant(n, 2, "the bias") if len(n.input) > 2 and n.input[2] else None
    x = t.tensor(n, 0)
    if t.refused(n) or x is None or scale is None or not _plain(t, n, x):
        return
    rank = len(x.shape) + 1
    axis = t.attr(n, "axis", -1)
    axis = axis + rank if axis < 0 else axis
    if not 1 <= axis < rank:
        t.refuse(n, f"axis={t.attr(n, 'axis', -1)} " + (
            "normalises over the batch" if axis < 1 else
            f"is out of range for a rank-{rank} input"))
        return
    tail = [int(d) for d in x.shape[axis - 1:]]
    if any(v.size != math.prod(tail) for v in (scale, bias) if v is not None):
        t.refuse(n, f"the scale and bias must hold {math.prod(tail)} values, one per "
                    f"position of {tail}")
        return
    # a list, as PyTorch's LayerNorm holds it (torchvision's ViT and ConvNeXt write [D])
    fields = {"normalized_shape": tail,
              "eps": float(t.attr(n, "epsilon", 1e-5)), "bias": bias is not None}
    params = {"weight": scale.reshape(tail)}
    if bias is not None:
        params["bias"] = bias.reshape(tail)
    if fixed_scale(n, scale, bias):
        # no scale and no shift to learn (bias keeps its default: it says nothing then)
        del fields["bias"]
        fields["elementwise_affine"], params = False, {}
    t.emit(n, "layernorm", [x], fields, params)


def fixed_scale(n: Any, scale: np.ndarray, bias: np.ndarray | None) -> bool:
    """Whether a LayerNormalization's scale is no learned weight: ones, no bias, and not
    named as a weight (netspec and PyTorch write a constant of ones for
    elementwise_affine=False; a learned scale is named by its key, ``ln.weight``)."""
    return bias is None and bool(np.all(scale == 1)) and not n.input[1].endswith(".weight")


def _import_gather(t: Translator, n: Any) -> None:
    if not t.computed(n, 0):
        t.fold(n)  # shape arithmetic
        return
    index = t.constant(n, 1, "the indices")
    x = t.tensor(n, 0)
    if x is None or index is None or not _plain(t, n, x):
        return
    if index.ndim != 0:
        t.refuse(n, f"indices of shape {list(index.shape)} are not supported; netspec's "
                    f"select takes one position (a scalar index)")
        return
    rank = len(x.shape) + 1
    axis = t.attr(n, "axis", 0)
    if axis % rank == 0:
        t.refuse(n, f"axis={axis} picks samples of the batch, which netspec does not do")
        return
    # the axis and index as written: netspec's select counts them as ONNX does
    t.emit(n, "select", [x], {"dim": axis, "index": int(index)}, {})


def _import_slice(t: Translator, n: Any) -> None:
    if not t.computed(n, 0):
        t.fold(n)  # shape arithmetic
        return
    starts, ends = t.constant(n, 1, "starts"), t.constant(n, 2, "ends")
    axes = t.constant(n, 3, "axes") if len(n.input) > 3 and n.input[3] else None
    steps = t.constant(n, 4, "steps") if len(n.input) > 4 and n.input[4] else None
    x = t.tensor(n, 0)
    if x is None or starts is None or ends is None or not _plain(t, n, x):
        return
    rank = len(x.shape) + 1
    axes_list = list(range(len(starts))) if axes is None else \
        [int(a) for a in axes.reshape(-1)]
    steps_list = [1] * len(axes_list) if steps is None else [int(s) for s in steps.reshape(-1)]
    if len(axes_list) != 1:
        t.refuse(n, f"a slice along {len(axes_list)} axes is not supported; netspec's slice "
                    f"cuts one axis")
        return
    if not -rank <= axes_list[0] < rank or axes_list[0] % rank == 0 or steps_list[0] < 1:
        t.refuse(n, "a slice of the batch axis or with a negative step is not supported")
        return
    size = x.shape[axes_list[0] % rank - 1]
    # ONNX clamps out-of-range bounds as Python's slices (and netspec's slice) do: bounds
    # within netspec's range are kept as written, an end past it (INT64_MAX) is the end
    start, end = int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0])
    window = slice(start, end, steps_list[0]).indices(size)
    fields = {"dim": axes_list[0], "start": start if abs(start) <= MAX_INPUT_DIM else window[0],
              "step": steps_list[0]}
    if end < MAX_INPUT_DIM:
        fields["end"] = end if end >= -MAX_INPUT_DIM else window[1]
    t.emit(n, "slice", [x], fields, {})


IMPORTERS: dict[str, Callable[[Translator, Any], None]] = {
    "Conv": _import_conv,
    "MaxPool": _import_pool("maxpool2d"),
    "AveragePool": _import_pool("avgpool2d"),
    "GlobalAveragePool": _import_global_average_pool,
    "Gemm": _import_gemm,
    "MatMul": _import_matmul,
    "Add": _import_add,
    "Sum": _import_sum,
    "Relu": _elementwise("relu"),
    "LeakyRelu": _import_leaky_relu,
    "Sigmoid": _elementwise("sigmoid"),
    "Tanh": _elementwise("tanh"),
    "Softmax": _import_softmax,
    "BatchNormalization": _import_batch_normalization,
    "Concat": _import_concat,
    "Flatten": _import_flatten,
    "Reshape": _import_reshape,
    "Dropout": _import_dropout,
    "Identity": _import_identity,
}
# ops that only ever compute constants (shape arithmetic exporters emit): the translator
# folds them, and refuses them when an input is computed by the network
FOLDED = ("Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Cast", "Slice", "Split",
          "Trilu")
# inputs (by position) that must be constants: netspec holds them as parameters or shapes
CONSTANT_INPUTS: dict[str, tuple[int, ...]] = {
    "Conv": (1, 2),
    "Gemm": (1, 2),
    "MatMul": (1,),
    "BatchNormalization": (1, 2, 3, 4),
    "Reshape": (1,),
    "Dropout": (1, 2),
}
CONTROL_FLOW = frozenset({"If", "Loop", "Scan", "SequenceMap"})

# ---- the convolutional-network ops (issue 24)

def _import_mul(t: Translator, n: Any) -> None:
    inputs = [t.tensor(n, i) for i in range(len(n.input))]
    if len(inputs) != 2 or any(x is None for x in inputs):
        return
    if any(x.shape != x.onnx_shape for x in inputs):
        t.refuse(n, "a product with a pooled (C, 1, 1) value held flat is not supported")
        return
    t.emit(n, "mul", inputs, {}, {})


def _import_clip(t: Translator, n: Any) -> None:
    t.only_attributes(n, "min", "max")
    bounds = []
    for index, name in ((1, "min"), (2, "max")):
        value = t.attr(n, name, None, float)
        if index < len(n.input) and n.input[index]:
            given = t.constant(n, index, name)
            value = None if given is None or given.size != 1 else float(given.reshape(-1)[0])
        bounds.append(value)
    x = t.tensor(n, 0)
    if x is None or t.refused(n):
        return
    low, high = bounds
    if (low, high) == (0.0, 6.0):
        t.emit(n, "relu6", [x], {}, {}, onnx_shape=x.onnx_shape)
    elif low == 0.0 and high is None:
        t.emit(n, "relu", [x], {}, {}, onnx_shape=x.onnx_shape)
    elif low is not None and high is not None:
        t.emit(n, "hardtanh", [x], {"min_val": low, "max_val": high}, {},
               onnx_shape=x.onnx_shape)
    else:
        t.refuse(n, f"min={low} and max={high}: netspec clips between two bounds (hardtanh) "
                    f"or at 0 from below (relu)")


def _import_hard_sigmoid(t: Translator, n: Any) -> None:
    alpha, beta = float(t.attr(n, "alpha", 0.2)), float(t.attr(n, "beta", 0.5))
    if abs(alpha - 1 / 6) > 1e-6 or abs(beta - 0.5) > 1e-6:
        t.refuse(n, f"alpha={alpha:g}, beta={beta:g}: netspec's hardsigmoid is PyTorch's "
                    f"(alpha=1/6, beta=0.5)")
    x = t.tensor(n, 0)
    if x is not None and not t.refused(n):
        t.emit(n, "hardsigmoid", [x], {}, {}, onnx_shape=x.onnx_shape)


def _import_gelu(t: Translator, n: Any) -> None:
    approximate = t.attr(n, "approximate", "none")
    if approximate not in ("none", "tanh"):
        t.refuse(n, f"approximate={approximate!r} is not supported")
    x = t.tensor(n, 0)
    if x is not None and not t.refused(n):
        t.emit(n, "gelu", [x], {"approximate": approximate}, {}, onnx_shape=x.onnx_shape)


def _import_log_softmax(t: Translator, n: Any) -> None:
    x = t.tensor(n, 0)
    if x is None:
        return
    rank = len(x.onnx_shape) + 1
    modern = t.opset >= 13
    axis = t.attr(n, "axis", -1 if modern else 1)
    if not -rank <= axis < rank:
        t.refuse(n, f"axis={axis} is out of range for a rank-{rank} input")
        return
    # before opset 13 the op ran over every axis from `axis` on, as one
    if not modern and axis % rank != rank - 1:
        t.refuse(n, f"axis={axis} on a rank-{rank} input before opset 13 is not supported: it "
                    f"normalises over several axes at once")
        return
    if axis % rank == 0:
        t.refuse(n, f"axis={axis} is the batch axis; netspec normalises within each sample")
        return
    if x.shape != x.onnx_shape:
        t.refuse(n, "a pooled (C, 1, 1) value held flat is not supported here")
        return
    t.emit(n, "log_softmax", [x], {"dim": axis}, {})


def _import_reduce_mean(t: Translator, n: Any) -> None:
    t.only_attributes(n, "axes", "keepdims", "noop_with_empty_axes")
    axes = t.attr(n, "axes", None, list)
    if len(n.input) > 1 and n.input[1]:
        given = t.constant(n, 1, "axes")
        axes = None if given is None else [int(a) for a in given.reshape(-1)]
    keepdims = t.attr(n, "keepdims", 1)
    x = t.tensor(n, 0)
    if x is None or t.refused(n):
        return
    rank = len(x.onnx_shape) + 1
    if axes is None or x.shape != x.onnx_shape or any(a % rank == 0 for a in axes):
        t.refuse(n, f"axes={axes} on per-sample shape {format_shape(x.onnx_shape)}: netspec "
                    f"takes the mean over per-sample axes of a value it holds as ONNX does")
        return
    # torch.mean (ShuffleNet's and MNASNet's x.mean([2, 3])), any rank; the axes as written
    # (PyTorch's dims and ONNX's axes both count the batch, and from the end when negative).
    # PyTorch writes adaptive_avg_pool2d(x, 1) as GlobalAveragePool, and so does netspec
    t.emit(n, "mean", [x], {"dim": [int(a) for a in axes], "keepdim": bool(keepdims)}, {})


def _import_conv_transpose(t: Translator, n: Any) -> None:
    t.only_attributes(n, "auto_pad", "dilations", "group", "kernel_shape", "output_padding",
                      "pads", "strides")
    if t.attr(n, "auto_pad", "NOTSET") != "NOTSET":
        t.refuse(n, f"auto_pad={t.attr(n, 'auto_pad', '')} is not supported; give pads")
    group = t.attr(n, "group", 1)
    weight = t.constant(n, 1, "the weight")
    bias = t.constant(n, 2, "the bias") if len(n.input) > 2 and n.input[2] else None
    x = t.tensor(n, 0)
    if t.refused(n) or x is None or weight is None:
        return
    if weight.ndim != 4 or not t.rank_is(n, x, 3, "ConvTranspose's input"):
        if weight.ndim != 4:
            t.refuse(n, f"a {weight.ndim - 2}-D transposed convolution is not supported")
        return
    if group < 1 or weight.shape[0] != x.shape[0] or x.shape[0] % group:
        t.refuse(n, f"the weight {list(weight.shape)} in group={group} groups does not fit "
                    f"the input's {x.shape[0]} channels")
        return
    kernel = tuple(int(k) for k in weight.shape[2:])
    pads = list(t.attr(n, "pads", [0, 0, 0, 0]))
    if len(pads) != 4 or pads[0] != pads[2] or pads[1] != pads[3] or min(pads) < 0:
        t.refuse(n, f"pads={pads}: netspec pads both sides of an axis alike")
        return
    fields = {"out_channels": int(weight.shape[1]) * group, "kernel_size": _size(kernel),
              "stride": _size(t.attr(n, "strides", [1, 1])), "padding": _size(pads[:2]),
              "output_padding": _size(t.attr(n, "output_padding", [0, 0])),
              "dilation": _size(t.attr(n, "dilations", [1, 1])), "groups": int(group),
              "bias": bias is not None}
    params = {"weight": weight}
    if bias is not None:
        params["bias"] = bias
    t.emit(n, "conv_transpose2d", [x], fields, params)


_NEAREST_AS_PYTORCH = {("asymmetric", "floor"), ("half_pixel", "round_prefer_floor"),
                       ("half_pixel", "round_prefer_ceil"),
                       ("pytorch_half_pixel", "round_prefer_floor"),
                       ("pytorch_half_pixel", "round_prefer_ceil")}


def _import_resize(t: Translator, n: Any) -> None:
    t.only_attributes(n, "mode", "coordinate_transformation_mode", "nearest_mode",
                      "cubic_coeff_a", "exclude_outside", "extrapolation_value", "antialias")
    x = t.tensor(n, 0)
    old = n.op_type == "Upsample" or t.opset < 11  # scales as input 1, no roi
    scale_input = 1 if old else 2
    scales = t.constant(n, scale_input, "scales") \
        if len(n.input) > scale_input and n.input[scale_input] else None
    sizes = t.constant(n, 3, "sizes", symbolic=True) \
        if not old and len(n.input) > 3 and n.input[3] else None
    if x is None or t.refused(n):
        return
    if not t.rank_is(n, x, 3, "Resize's input"):
        return
    factors = None
    if scales is not None and scales.size == 4:
        factors = [float(v) for v in scales.reshape(-1)]
    elif sizes is not None and sizes.size == 4:
        wanted = list(sizes.reshape(-1))[2:]
        factors = [1.0, 1.0, *(float(w) / s for w, s in zip(wanted, x.shape[1:]))]
    if factors is None or factors[:2] != [1.0, 1.0] or any(
            f < 1 or f != int(f) for f in factors[2:]):
        t.refuse(n, f"scales {factors}: netspec upsamples H and W by integer factors only")
        return
    mode = t.attr(n, "mode", "nearest")
    # before opset 11 (and in Upsample) the source of output cell d was d / scale
    coordinates = t.attr(n, "coordinate_transformation_mode",
                         "asymmetric" if old else "half_pixel")
    nearest = t.attr(n, "nearest_mode", "floor" if old else "round_prefer_floor")
    if mode == "nearest" and (coordinates, nearest) in _NEAREST_AS_PYTORCH:
        netspec_mode = "nearest"
    elif mode == "linear" and coordinates in ("half_pixel", "pytorch_half_pixel"):
        netspec_mode = "bilinear"
    else:
        t.refuse(n, f"mode={mode} with coordinate_transformation_mode={coordinates}"
                    + (f", nearest_mode={nearest}" if mode == "nearest" else "")
                    + ": netspec's upsample is PyTorch's nearest, or bilinear with "
                      "align_corners=False")
        return
    t.emit(n, "upsample", [x], {"scale_factor": _size((int(factors[2]), int(factors[3]))),
                                "mode": netspec_mode}, {})


def _import_swish(t: Translator, n: Any) -> None:
    alpha = float(t.attr(n, "alpha", 1.0))
    if alpha != 1.0:
        t.refuse(n, f"alpha={alpha:g}: netspec's silu is x * sigmoid(x) (alpha 1)")
    x = t.tensor(n, 0)
    if x is not None and not t.refused(n):
        t.emit(n, "silu", [x], {}, {}, onnx_shape=x.onnx_shape)


IMPORTERS.update({
    "Swish": _import_swish,
    "ConvTranspose": _import_conv_transpose,
    "Resize": _import_resize,
    "Upsample": _import_resize,
    "Mul": _import_mul,
    "Clip": _import_clip,
    "HardSwish": _elementwise("hardswish"),
    "HardSigmoid": _import_hard_sigmoid,
    "Gelu": _import_gelu,
    "LogSoftmax": _import_log_softmax,
    "ReduceMean": _import_reduce_mean,
})
def _import_scaled_mul(t: Translator, n: Any) -> None:
    """Mul by one constant number (attention's 1/sqrt(head width)): netspec's mul by a fixed
    learned tensor of ones axes holding it; any other Mul is the convnets' importer's."""
    constant = next((i for i in range(len(n.input)) if not t.computed(n, i)), None)
    if len(n.input) != 2 or constant is None or not t.computed(n, 1 - constant):
        _import_mul(t, n)
        return
    factor = t.constant(n, constant, "the factor")
    x = t.tensor(n, 1 - constant)
    if factor is None or x is None or not _plain(t, n, x):
        return
    if factor.size != 1 or factor.dtype.kind != "f":
        _import_mul(t, n)
        return
    scale = t.emit(n, "parameter", [], {"shape": [1] * len(x.shape),
                                        "value": float(factor.reshape(-1)[0]),
                                        "trainable": False},
                   {"": factor.reshape([1] * len(x.shape))})
    if scale is not None:
        t.emit(n, "mul", [x, scale], {}, {})


IMPORTERS.update({
    "Mul": _import_scaled_mul,
    "Transpose": _import_transpose,
    "LayerNormalization": _import_layer_normalization,
    "Gather": _import_gather,
    "Slice": _import_slice,
})
CONSTANT_INPUTS.update({"Clip": (1, 2), "ReduceMean": (1,), "ConvTranspose": (1, 2),
                        "Resize": (1, 2, 3), "Upsample": (1,)})



def _scalar_constants(graph: Any) -> dict[str, float]:
    """The graph's one-value float constants (initializers and Constant nodes) by name."""
    from onnx import numpy_helper

    found = {}
    tensors = [(t.name, t) for t in graph.initializer]
    tensors += [(n.output[0], a.t) for n in graph.node if n.op_type == "Constant" and n.output
                for a in n.attribute if a.name == "value"]
    for name, tensor in tensors:
        if len(tensor.dims) <= 1 and math.prod(tensor.dims) == 1 and tensor.data_type in (1, 11):
            try:
                found[name] = float(numpy_helper.to_array(tensor).reshape(-1)[0])
            except ValueError:
                continue  # its bytes do not hold one value: the translator names that problem
    return found


def fuse_gelu(model: Any) -> Any:
    """``model`` with each GELU that an exporter wrote out at opset < 20 (PyTorch's
    decompositions: x * (1 + erf(x / sqrt 2)) * 0.5, and x * (1 + tanh(sqrt(2/pi) * (x +
    0.044715 x^3))) * 0.5) as one Gelu node, and each x * sigmoid(x) (PyTorch's SiLU) as one
    Swish; the model itself if it holds none."""
    graph = model.graph
    constants = _scalar_constants(graph)
    producer = {out: n for n in graph.node for out in n.output if out}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    outputs = {value.name for value in graph.output}

    def only_user(name: str, op_type: str) -> Any | None:
        users = consumers.get(name, [])
        if name in outputs or len(users) != 1 or users[0].op_type != op_type:
            return None
        return users[0]

    def is_constant(name: str, value: float) -> bool:
        return name in constants and math.isclose(constants[name], value, rel_tol=1e-6)

    def other(n: Any, known: str) -> str | None:
        """The input of a two-input node besides ``known``."""
        inputs = list(n.input)
        if len(inputs) != 2 or known not in inputs:
            return None
        return inputs[1] if inputs[0] == known else inputs[0]

    def fed(name: str, op_type: str) -> Any | None:
        n = producer.get(name)
        return n if n is not None and n.op_type == op_type \
            and len(consumers.get(name, [])) == 1 else None

    def erf_input(curve: Any) -> tuple[str, list[Any]] | None:
        divide = fed(curve.input[0], "Div")
        if divide is not None and is_constant(divide.input[1], math.sqrt(2)):
            return divide.input[0], [divide]
        scale = fed(curve.input[0], "Mul")
        if scale is not None:
            for x in scale.input:
                if is_constant(other(scale, x) or "", math.sqrt(0.5)):
                    return x, [scale]
        return None

    def tanh_input(curve: Any) -> tuple[str, list[Any]] | None:
        scaled = fed(curve.input[0], "Mul")
        if scaled is None:
            return None
        for k in scaled.input:
            inner = fed(other(scaled, k) or "", "Add") if is_constant(
                k, math.sqrt(2 / math.pi)) else None
            if inner is None:
                continue
            for x in inner.input:
                cubic = fed(other(inner, x) or "", "Mul")
                if cubic is None:
                    continue
                for c in cubic.input:
                    cube = fed(other(cubic, c) or "", "Mul") if is_constant(c, _GELU_CUBIC) \
                        else None
                    square = fed(other(cube, x) or "", "Mul") if cube is not None else None
                    if square is not None and list(square.input) == [x, x]:
                        return x, [square, cube, cubic, inner, scaled]
        return None

    fused: dict[int, Any] = {}  # id of the last node -> the Gelu replacing the pattern
    removed: set[int] = set()
    for curve in graph.node:
        if curve.op_type not in ("Erf", "Tanh") or not curve.input:
            continue
        found = (erf_input if curve.op_type == "Erf" else tanh_input)(curve)
        add = only_user(curve.output[0], "Add")
        times_x = only_user(add.output[0], "Mul") if add is not None else None
        half = only_user(times_x.output[0], "Mul") if times_x is not None else None
        if found is None or half is None or not is_constant(
                other(add, curve.output[0]) or "", 1.0):
            continue
        x, head = found
        if other(times_x, add.output[0]) != x or not is_constant(
                other(half, times_x.output[0]) or "", 0.5):
            continue
        approximate = "none" if curve.op_type == "Erf" else "tanh"
        # PyTorch names the parts after the module ("/act/Erf"): the Gelu is "/act/Gelu"
        name = curve.name[:-len(curve.op_type)] + "Gelu" \
            if curve.name.endswith(curve.op_type) else half.name
        from onnx import helper

        fused[id(half)] = helper.make_node("Gelu", [x], [half.output[0]], name=name,
                                           approximate=approximate)
        removed.update(id(n) for n in (*head, curve, add, times_x))
    # x * sigmoid(x), PyTorch's SiLU: ONNX's Swish (alpha 1)
    for gate in graph.node:
        if gate.op_type != "Sigmoid" or not gate.input or id(gate) in removed:
            continue
        times = only_user(gate.output[0], "Mul")
        if times is None or other(times, gate.output[0]) != gate.input[0]:
            continue
        name = gate.name[:-len("Sigmoid")] + "Swish" if gate.name.endswith("Sigmoid") \
            else times.name
        from onnx import helper

        fused[id(times)] = helper.make_node("Swish", [gate.input[0]], [times.output[0]],
                                            name=name, alpha=1.0)
        removed.add(id(gate))
    if not fused:
        return model
    from copy import deepcopy

    rewritten = deepcopy(model)
    nodes = [fused.get(id(n), n) for n in graph.node if id(n) not in removed]
    del rewritten.graph.node[:]
    rewritten.graph.node.extend(nodes)
    return rewritten
