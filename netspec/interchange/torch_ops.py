"""How each netspec op is computed in PyTorch: the per-op table shared by the module that the
torch engine runs (:mod:`netspec.interchange.torch_runtime`) and the source file that
``netspec export -o model.py`` writes (:mod:`netspec.interchange.torch_module`).

A node with parameters or buffers becomes a ``torch.nn`` module (a :class:`Layer`), so its
state_dict keys are netspec's ``"<node id>.<name>"``; a learned tensor is an ``nn.Parameter``
at the node's path (a :class:`Tensor`), so its key is the node id itself; a node without
parameters is a call of a torch function on its inputs (a :class:`Call`). The table holds only
plain values (names, ints, floats, bools, tuples), so both consumers render or build the same
thing. Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from netspec.ops.shapes import batched_axis, pair
from netspec.plan.compiler import PlanNode
from netspec.runtime.initializers import distribution

# a keyword value that stands for "the module is in training mode"
TRAINING = "<training>"


@dataclass(frozen=True)
class Layer:
    """A node computed by ``torch.nn.<cls>(**kwargs)``; ``frozen`` names the parameters
    that do not train (``trainable = false``). ``call`` is how the module is applied:
    ``"one"`` as ``module(x)``; ``"attention"`` as ``module(q, k, v, need_weights=False)[0]``
    (one input is q = k = v); ``"causal"`` the same with a mask hiding later tokens;
    ``"channels_first"`` as ``module`` on the channels of each pixel of (N, C, H, W) (a layer
    norm permuted to channels-last and back, torchvision's LayerNorm2d)."""

    cls: str
    kwargs: dict[str, Any]
    frozen: tuple[str, ...] = ()
    call: Literal["one", "attention", "causal", "channels_first"] = "one"


@dataclass(frozen=True)
class Call:
    """A node computed by a function of its inputs: ``function(x, **kwargs)`` for one input,
    ``function([a, b], **kwargs)`` (``inputs="list"``), ``function(a, b, **kwargs)``
    (``"args"``), or ``a + b + ...`` (``"sum"``).
    ``function`` is a dotted name under ``torch`` or ``F`` (``torch.nn.functional``);
    ``None`` passes the input through (the network's inputs)."""

    function: str | None
    kwargs: dict[str, Any] = field(default_factory=dict)
    inputs: Literal["one", "list", "args", "sum"] = "one"


@dataclass(frozen=True)
class Tensor:
    """A learned tensor (op ``parameter``): ``nn.Parameter`` of ``shape`` (as netspec stores
    it) at the node's path, its value per sample the parameter expanded over the batch,
    ``parameter.expand(N, -1, ...)`` with one ``-1`` per axis of the per-sample shape (with
    ``batch_axis`` the stored first axis, of size 1, is the batch's, as ViT's class token).
    It starts as netspec's initialiser draws: zeros, ``("full", value)``, ``("normal", std)``
    or ``("uniform", bound)`` from -bound to bound; ``frozen`` when ``trainable = false``."""

    shape: tuple[int, ...]
    batch_axis: bool
    init: Literal["zeros", "full", "normal", "uniform"]
    scale: float
    frozen: bool

    @property
    def sample_rank(self) -> int:
        return len(self.shape) - int(self.batch_axis)


Form = Layer | Call | Tensor


def _frozen(node: PlanNode) -> tuple[str, ...]:
    return tuple(name for name in node.param_specs if name not in node.trainable_names)


def _conv2d(node: PlanNode) -> Form:
    kernel, stride, padding = node.op.geometry
    return Layer("Conv2d", {"in_channels": node.input_shapes[0][0],
                            "out_channels": node.params.out_channels, "kernel_size": kernel,
                            "stride": stride, "padding": padding, "bias": node.params.bias,
                            "groups": node.params.groups,
                            "dilation": pair(node.params.dilation)},
                 _frozen(node))


def _linear(node: PlanNode) -> Form:
    return Layer("Linear", {"in_features": node.input_shapes[0][-1],
                            "out_features": node.params.out_features, "bias": node.params.bias},
                 _frozen(node))


def _batchnorm(node: PlanNode) -> Form:
    # (F,) per sample is BatchNorm1d over (N, F); (C, H, W) is BatchNorm2d
    cls = "BatchNorm1d" if len(node.input_shapes[0]) == 1 else "BatchNorm2d"
    return Layer(cls, {"num_features": node.input_shapes[0][0], "eps": node.params.eps,
                       "momentum": node.params.momentum})


def _pool(function: str, extra: Callable[[PlanNode], dict[str, Any]] = lambda node: {}
          ) -> Callable[[PlanNode], Form]:
    def form(node: PlanNode) -> Form:
        kernel, stride, padding = node.op.geometry
        return Call(function, {"kernel_size": kernel, "stride": stride, "padding": padding,
                               "ceil_mode": node.params.ceil_mode, **extra(node)})
    return form


def _fixed(function: str | None, inputs: Literal["one", "list", "args", "sum"] = "one",
           **kwargs: Any) -> Callable[[PlanNode], Form]:
    return lambda node: Call(function, dict(kwargs), inputs)


# op name -> its PyTorch form; every op in netspec.ops.REGISTRY is here or in TORCH_REFUSED
TORCH_FORMS: dict[str, Callable[[PlanNode], Form]] = {
    "input": _fixed(None),
    "conv2d": _conv2d,
    "linear": _linear,
    "batchnorm": _batchnorm,
    "maxpool2d": _pool("F.max_pool2d"),
    "avgpool2d": _pool("F.avg_pool2d", lambda node: {
        "count_include_pad": node.params.count_include_pad}),
    "global_avgpool": _fixed("torch.mean", dim=(2, 3)),
    "flatten": lambda node: _flatten(node),
    "relu": _fixed("F.relu"),
    "leaky_relu": lambda node: Call("F.leaky_relu",
                                    {"negative_slope": node.params.negative_slope}),
    "sigmoid": _fixed("torch.sigmoid"),
    "tanh": _fixed("torch.tanh"),
    "softmax": lambda node: Call("F.softmax", {"dim": _dim(node, node.params.dim)}),
    "dropout": lambda node: Call("F.dropout", {"p": node.params.p, "training": TRAINING}),
    "add": _fixed(None, "sum"),
    "concat": lambda node: Call("torch.cat", {"dim": node.op.axis(node.input_shapes[0])},
                                "list"),
}

# ---- tensors of any rank (issue 25): dims as positive axes of the batched value


def _dim(node: PlanNode, dim: int) -> int:
    return batched_axis(dim, node.input_shapes[0])


def _flatten(node: PlanNode) -> Form:
    start, end = _dim(node, node.params.start_dim), _dim(node, node.params.end_dim)
    # the default (every per-sample axis) keeps the call it always had
    extra = {} if end == len(node.input_shapes[0]) else {"end_dim": end}
    return Call("torch.flatten", {"start_dim": start, **extra})


def _slice(node: PlanNode) -> Form:
    p = node.params
    size = node.input_shapes[0][_dim(node, p.dim) - 1]
    start, stop, step = slice(p.start, p.end, p.step).indices(size)
    return Call("torch.slice_copy", {"dim": _dim(node, p.dim), "start": start, "end": stop,
                                     "step": step})


def _layernorm(node: PlanNode) -> Form:
    p = node.params
    return Layer("LayerNorm", {"normalized_shape": node.op.p_shape, "eps": p.eps,
                               "elementwise_affine": p.elementwise_affine, "bias": p.bias},
                 call="channels_first" if node.op_name == "layernorm2d" else "one")


def _attention(node: PlanNode) -> Form:
    p = node.params
    return Layer("MultiheadAttention", {"embed_dim": p.embed_dim, "num_heads": p.num_heads,
                                        "dropout": p.dropout, "bias": p.bias,
                                        "batch_first": True},
                 call="causal" if p.causal else "attention")


TORCH_FORMS.update({
    "layernorm": _layernorm,
    "layernorm2d": _layernorm,
    "matmul": _fixed("torch.matmul", "args"),
    "multihead_attention": _attention,
    "reshape": lambda node: Call("torch.reshape", {"shape": (-1, *node.shape)}),
    "permute": lambda node: Call("torch.permute", {"dims": tuple(
        node.op.axes(node.input_shapes[0]))}),
    "transpose": lambda node: Call("torch.transpose", {
        "dim0": _dim(node, node.params.dim0), "dim1": _dim(node, node.params.dim1)}),
    "select": lambda node: Call("torch.select", dict(zip(
        ("dim", "index"), node.op.position(node.input_shapes[0])))),
    "slice": _slice,
    "mean": lambda node: Call("torch.mean", {"dim": node.op.axes(node.input_shapes[0]),
                                             "keepdim": node.params.keepdim}),
    "channel_shuffle": lambda node: Call("F.channel_shuffle", {"groups": node.params.groups}),
})


# ---- the convolutional-network ops (issue 24)


def _stochastic_depth(node: PlanNode) -> Form:
    # torchvision's StochasticDepth (mode "row") is channel dropout with the batch as the
    # channels: an unbatched (C, D, H, W) to dropout3d, an unbatched (C, L) to dropout1d
    rank = len(node.input_shapes[0])
    return Call("F.dropout3d" if rank == 3 else "F.dropout1d",
                {"p": node.params.p, "training": TRAINING})


def _conv_transpose2d(node: PlanNode) -> Form:
    kernel, stride, padding, output_padding, dilation = node.op.geometry
    return Layer("ConvTranspose2d", {
        "in_channels": node.input_shapes[0][0], "out_channels": node.params.out_channels,
        "kernel_size": kernel, "stride": stride, "padding": padding,
        "output_padding": output_padding, "groups": node.params.groups,
        "bias": node.params.bias, "dilation": dilation}, _frozen(node))


def _upsample(node: PlanNode) -> Form:
    settings: dict[str, Any] = {"scale_factor": pair(node.params.scale_factor),
                                "mode": node.params.mode}
    if node.params.mode == "bilinear":
        settings["align_corners"] = False
    return Call("F.interpolate", settings)


TORCH_FORMS.update({
    "conv_transpose2d": _conv_transpose2d,
    "upsample": _upsample,
    "mul": _fixed("torch.mul", "args"),
    "adaptive_avgpool2d": lambda node: Call("F.adaptive_avg_pool2d",
                                            {"output_size": pair(node.params.output_size)}),
    "hardtanh": lambda node: Call("F.hardtanh", {"min_val": node.params.min_val,
                                                 "max_val": node.params.max_val}),
    "relu6": _fixed("F.relu6"),
    "silu": _fixed("F.silu"),
    "gelu": lambda node: Call("F.gelu", {"approximate": node.params.approximate}),
    "hardswish": _fixed("F.hardswish"),
    "hardsigmoid": _fixed("F.hardsigmoid"),
    "log_softmax": lambda node: Call("F.log_softmax", {"dim": node.params.dim}),
    "stochastic_depth": _stochastic_depth,
})



def _learned_tensor(node: PlanNode) -> Form:
    p = node.params
    frozen = bool(_frozen(node))
    if p.value is not None:
        return Tensor(tuple(p.shape), p.batch_axis, "full", float(p.value), frozen)
    kind, width = distribution(node.weight_init, tuple(p.shape), p.init_scale)
    return Tensor(tuple(p.shape), p.batch_axis, kind, float(width), frozen)


TORCH_FORMS["parameter"] = _learned_tensor

# op name -> why it has no PyTorch form (none today: every registered op has one)
TORCH_REFUSED: dict[str, str] = {}


def torch_form(node: PlanNode) -> Form:
    """The PyTorch form of one plan node (see :func:`refused_nodes` for ops without one)."""
    return TORCH_FORMS[node.op_name](node)


def refused_nodes(nodes: Any) -> list[str]:
    """A sentence per node (of an iterable of PlanNode) whose op has no PyTorch form."""
    problems = []
    for node in nodes:
        if node.op_name in TORCH_REFUSED:
            problems.append(f"node {node.id!r} ({node.op_name}): "
                            f"{TORCH_REFUSED[node.op_name]}")
        elif node.op_name not in TORCH_FORMS:
            problems.append(f"node {node.id!r} ({node.op_name}): no PyTorch form for this op")
    return problems
