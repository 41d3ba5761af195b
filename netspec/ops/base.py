"""What every op is made of, and the registry that maps TOML op names to op classes.

An op is one class: its pydantic params model, its shape rule, its parameter and buffer
shapes, its FLOP count, and its forward and backward passes side by side. Forward returns
``(output, cache)``; backward takes that cache back, so an op keeps no hidden state between
the two passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

from netspec.common.lazy import lazy_import
from netspec.ops.shapes import Shape

np = lazy_import("numpy")

# a string, so that naming the type does not load NumPy
Array: TypeAlias = "np.ndarray"
Grads = dict[str, Array]

InitName = Literal[
    "he_normal",
    "he_uniform",
    "glorot_normal",
    "glorot_uniform",
    "lecun_normal",
    "normal",
    "uniform",
    "zeros",
]


class NodeParams(BaseModel):
    """Fields every node has. Subclasses add ``op: Literal[name]`` and their own fields."""

    # defer_build: a model's validator is built when a spec first uses its op, so that a
    # command pays only for the ops it meets (16 models take ~60 ms to build)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)

    inputs: str | list[str] | None = Field(
        default=None, description="Input node id(s); omitted means the node defined just before."
    )


class WeightedParams(NodeParams):
    """Fields of ops with a weight tensor: how it starts and whether it trains."""

    init: InitName | None = Field(
        default=None,
        description="Weight initialiser; default he_normal before a ReLU-family op, "
        "glorot_uniform otherwise.",
    )
    init_scale: PositiveFloat | None = Field(
        default=None, allow_inf_nan=False,
        description="Standard deviation for 'normal', half-width for 'uniform'.",
    )
    weight: list[Any] | None = Field(
        default=None, description="Explicit weight values (nested lists in the weight's shape)."
    )
    weight_file: str | None = Field(
        default=None, description="A .npy file, relative to the spec, holding the weight."
    )
    bias_init: float = Field(
        default=0.0, allow_inf_nan=False, description="Constant the bias starts at."
    )
    trainable: bool = Field(default=True, description="false keeps the weights fixed.")


@dataclass(frozen=True)
class ParamSpec:
    """A parameter or buffer tensor an op needs: its shape and how it starts.

    ``init`` is ``"weight"`` for tensors initialised by the node's chosen scheme, or a
    constant scheme (``"zeros"``, ``"ones"``, ``"bias"``, or ``"value"``: the node's
    ``value`` field) that ignores it.
    """

    shape: Shape
    init: Literal["weight", "zeros", "ones", "bias", "value"]


# the name of a node's one parameter when that parameter is the node itself (a learned
# tensor): its key is then the node's path alone, as torchvision's ``class_token``
WHOLE_NODE = ""


def param_key(node_id: str, name: str) -> str:
    """The state key of parameter or buffer ``name`` of node ``node_id``: ``"conv1.weight"``,
    or the node's own path for its :data:`WHOLE_NODE` tensor.

    >>> param_key("conv1", "weight")
    'conv1.weight'
    >>> param_key("encoder.pos_embedding", WHOLE_NODE)
    'encoder.pos_embedding'
    """
    return f"{node_id}.{name}" if name != WHOLE_NODE else node_id


@dataclass
class Context:
    """What a forward pass may depend on besides its inputs."""

    train: bool
    rng: np.random.Generator
    # samples in the batch: what an op without inputs (a learned tensor) broadcasts to
    batch: int = 1


@dataclass(frozen=True)
class Fusion:
    """What the executor lets one node do beyond its own op (see :meth:`Op.fused_forward`).

    ``relu``: apply a ReLU to the output, which then stands for the ReLU node too (the node's
    only consumer), and the backward takes the ReLU's gradient. ``overwrite_input``: the
    node is the only reader of its first input, which nothing else (no cache) refers to, so
    it may work in that array's memory.
    """

    relu: bool = False
    overwrite_input: bool = False


NO_FUSION = Fusion()


class Op:
    """Base of every op. One instance per node, holding that node's validated params."""

    name: ClassVar[str]
    Params: ClassVar[type[NodeParams]]
    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int | None] = 1
    # an element-wise op f that may run after a max pooling instead of before it:
    # max(f(a), f(b)) == f(max(a, b)) exactly, and every input gradient is the same whichever
    # of the window's tied cells the pooling sends it to. The executor then applies f to the
    # pooled values only (a quarter of them under 2x2 pooling).
    commutes_with_max_pool: ClassVar[bool] = False
    # a max pooling, which such an op may be moved behind
    is_max_pool: ClassVar[bool] = False
    # fused_forward honours Fusion.relu: the ReLU that is this node's only consumer runs
    # inside it, on its output in place
    absorbs_relu: ClassVar[bool] = False
    # the output is a new array that neither the cache nor anything else refers to, so its
    # only consumer may overwrite it (Fusion.overwrite_input)
    fresh_output: ClassVar[bool] = False
    # whether an image (C, H, W) in gives an image out: false for ops that move values
    # between axes (reshape, permute, ...), whose output is a plain tensor of any rank
    keeps_image: ClassVar[bool] = True
    # why the op refuses an image (C, H, W), though its rule takes any rank: a linear layer
    # straight after a convolution acts on the width axis, which is the missing flatten in
    # practice; after a permute or reshape the value is a plain tensor and passes
    image_refusal: ClassVar[str | None] = None

    def __init__(self, params: NodeParams):
        self.p: Any = params

    def output_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        raise NotImplementedError

    def param_specs(self, in_shapes: Sequence[Shape]) -> dict[str, ParamSpec]:
        return {}

    def buffer_specs(self, in_shapes: Sequence[Shape]) -> dict[str, ParamSpec]:
        return {}

    def flops(self, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        """Forward FLOPs per sample; a multiply-add counts as 2."""
        return 0

    def forward(
        self, xs: list[Array], params: dict[str, Array], buffers: dict[str, Array], ctx: Context
    ) -> tuple[Array, Any]:
        raise NotImplementedError

    def backward(self, cache: Any, dy: Array) -> tuple[list[Array | None], Grads]:
        raise NotImplementedError

    def output_is_fresh(self, fusion: Fusion) -> bool:
        """Whether the output, run with ``fusion``, is an array nothing else refers to (see
        ``fresh_output``)."""
        return self.fresh_output

    def fused_forward(self, xs: list[Array], params: dict[str, Array],
                      buffers: dict[str, Array], ctx: Context,
                      fusion: Fusion) -> tuple[Array, Any]:
        """:meth:`forward` with the liberties of ``fusion``; the same values, bit for bit.
        Ops that take none ignore it; backward takes the cache either way."""
        return self.forward(xs, params, buffers, ctx)


REGISTRY: dict[str, type[Op]] = {}


def register(cls: type[Op]) -> type[Op]:
    """Register an op class under its TOML name (``cls.name``)."""
    if cls.name in REGISTRY:
        raise ValueError(f"op '{cls.name}' registered twice")
    REGISTRY[cls.name] = cls
    return cls
