"""The op catalogue. Importing this package registers every op under its TOML name."""

from netspec.ops import (
    activations,
    adaptive_pool,
    attention,
    conv,
    conv_transpose,
    core,
    linear,
    modern_activations,
    mul,
    norm,
    pooling,
    regularization,
    stochastic_depth,
    tensor,
    upsample,
)
from netspec.ops.base import REGISTRY, Context, NodeParams, Op, ParamSpec, register

__all__ = [
    "REGISTRY",
    "Context",
    "NodeParams",
    "Op",
    "ParamSpec",
    "register",
    "activations",
    "conv",
    "core",
    "linear",
    "pooling",
    "regularization",
    "tensor",
    "attention",
    "norm",
    "adaptive_pool",
    "modern_activations",
    "mul",
    "stochastic_depth",
    "conv_transpose",
    "upsample",
]
