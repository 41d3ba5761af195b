"""The op catalogue. Importing this package registers every op under its TOML name."""

from netspec.ops import (
    activations,
    attention,
    conv,
    core,
    linear,
    norm,
    pooling,
    regularization,
    tensor,
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
]
