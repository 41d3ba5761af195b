"""What ONNX export and import share: the onnx module, the opset, netspec's metadata keys, and
the graph under construction that each op's exporter adds to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from netspec.common.extras import require
from netspec.ops.base import param_key
from netspec.plan.compiler import Plan, PlanNode

OPSET = 17
# the IR version of opset 17's ONNX release: readable by every runtime since 2022
IR_VERSION = 8
BATCH_DIM = "N"
# protobuf's limit on one message, less room for the graph itself
MAX_PROTOBUF_BYTES = 2**31 - 2**24
# metadata keys a netspec import reads back
META_NAME, META_DESCRIPTION = "name", "description"
META_MEAN, META_STD = "netspec.mean", "netspec.std"
META_DROPOUT = "netspec.dropout"
# the op of each node whose ONNX form another netspec op shares (transpose and permute, flatten
# and reshape), with its fields: an import takes it where it computes what the graph computes
META_FORMS = "netspec.forms"
# the ops of those nodes
SHARED_FORMS = frozenset({"transpose", "permute", "flatten", "reshape"})


def onnx_module() -> Any:
    return require("onnx", "onnx", "ONNX export and import")


@dataclass
class Emitter:
    """The graph under construction: what each op's exporter adds to."""

    plan: Plan
    state: Mapping[str, np.ndarray]
    nodes: list[Any] = field(default_factory=list)
    initializers: list[Any] = field(default_factory=list)
    # netspec node id -> the ONNX value holding its output
    values: dict[str, str] = field(default_factory=dict)

    def node(self, op_type: str, inputs: list[str], output: str, name: str,
             **attributes: Any) -> str:
        onnx = onnx_module()
        self.nodes.append(onnx.helper.make_node(op_type, inputs, [output], name=name,
                                                **attributes))
        return output

    def split(self, value: str, sizes: list[int], outputs: list[str], name: str,
              axis: int) -> list[str]:
        """``value`` cut along ``axis`` into pieces of ``sizes``, named ``outputs``."""
        onnx = onnx_module()
        sizes_name = f"{name}/sizes"
        self.initializers.append(onnx.numpy_helper.from_array(
            np.asarray(sizes, dtype=np.int64), sizes_name))
        self.nodes.append(onnx.helper.make_node("Split", [value, sizes_name], outputs,
                                                name=name, axis=axis))
        return outputs

    def constant(self, name: str, value: Any) -> str:
        """A float32 initializer that is no parameter (a bound, a scale), named ``name``."""
        array = np.asarray(value, dtype=np.float32)
        self.initializers.append(onnx_module().numpy_helper.from_array(array, name))
        return name

    def parameter(self, node: PlanNode, name: str) -> str:
        """An initializer named by the parameter's netspec key."""
        key = param_key(node.id, name)
        array = np.asarray(self.state[key], dtype=np.float32)
        self.initializers.append(onnx_module().numpy_helper.from_array(array, key))
        return key
