"""netspec plan + weights -> an ONNX model (inference graph, opset 17, symbolic batch).

Initializers carry netspec's parameter keys (``conv1.weight``) and nodes its node ids, so a
model viewer shows the spec's names; each node's output value is named by its node id too.
Batchnorm exports with its running statistics; dropout, the identity of inference, is left
out of the graph and recorded in the model's metadata so that an import restores it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from netspec.common.atomic import atomic_write_bytes
from netspec.common.errors import NetspecError
from netspec.common.version import __version__
from netspec.interchange.onnx_graph import (
    BATCH_DIM,
    IR_VERSION,
    MAX_PROTOBUF_BYTES,
    META_DESCRIPTION,
    META_DROPOUT,
    META_FORMS,
    META_NAME,
    OPSET,
    SHARED_FORMS,
    Emitter,
    onnx_module,
)
from netspec.interchange.onnx_ops import EXPORT_REFUSED, EXPORTERS
from netspec.ops.base import param_key
from netspec.plan.compiler import Plan, PlanNode


def export_onnx(plan: Plan, state: Mapping[str, np.ndarray], *,
                metadata: Mapping[str, str] | None = None) -> Any:
    """The ONNX ModelProto of ``plan`` with ``state`` (parameters and buffers by key)."""
    onnx = onnx_module()
    refused = [f"node '{node.id}' ({node.op_name}): {EXPORT_REFUSED[node.op_name]}"
               for node in plan.nodes.values() if node.op_name in EXPORT_REFUSED]
    if refused:
        raise NetspecError("cannot export to ONNX:\n" + "\n".join(refused))
    missing = [param_key(node.id, name) for node in plan.nodes.values()
               for name in (*node.param_specs, *node.buffer_specs)
               if param_key(node.id, name) not in state]
    if missing:
        raise NetspecError(f"weights lack {', '.join(missing[:5])}")
    size = sum(np.asarray(state[key]).size * 4 for key in state)
    if size > MAX_PROTOBUF_BYTES:
        raise NetspecError(f"{plan.name}: {size:,} bytes of float32 weights do not fit in one "
                           f"ONNX file (protobuf holds at most {MAX_PROTOBUF_BYTES:,}); netspec "
                           f"does not write ONNX external data")
    emitter = Emitter(plan, state)
    graph_inputs, value_info = [], []
    dropped = []
    for node in plan.nodes.values():
        sources = [emitter.values[s] for s in node.inputs]
        output = EXPORTERS[node.op_name](emitter, node, sources)
        emitter.values[node.id] = output
        if node.op_name == "input":
            graph_inputs.append(_typed_value(node.id, node.shape))
        elif node.op_name in ("dropout", "stochastic_depth") or (
                node.op_name == "multihead_attention" and node.params.dropout):
            dropped.append(node)
        elif output == node.id:
            value_info.append(_typed_value(node.id, node.shape))
    output_node = plan.nodes[plan.output]
    output_value = emitter.values[plan.output]
    if output_value != output_node.id:
        # the output is another node's value (a dropout at the end): name it after the node
        output_value = emitter.node("Identity", [output_value], output_node.id, output_node.id)
    value_info = [v for v in value_info if v.name != output_value]
    graph = onnx.helper.make_graph(
        emitter.nodes, plan.name, graph_inputs,
        [_typed_value(output_value, output_node.shape)],
        initializer=emitter.initializers, value_info=value_info)
    model = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
        producer_name="netspec", producer_version=__version__,
        doc_string=plan.spec.description)
    model.ir_version = IR_VERSION
    props = {META_NAME: plan.name, META_DESCRIPTION: plan.spec.description}
    if dropped:
        props[META_DROPOUT] = json.dumps(_dropout_record(plan, dropped))
    forms = [{"id": node.id, "op": node.op_name,
              "fields": node.params.model_dump(exclude={"op", "inputs"}, exclude_defaults=True)}
             for node in plan.nodes.values() if node.op_name in SHARED_FORMS]
    if forms:
        props[META_FORMS] = json.dumps(forms)
    props.update(metadata or {})
    onnx.helper.set_model_props(model, props)
    return model


def _dropout_record(plan: Plan, dropped: list[PlanNode]) -> list[dict[str, Any]]:
    """Where each dropout (or stochastic depth) stood: its op, input, rate, and the nodes that
    read it; and the dropout rate of each attention that has one (its ONNX form is the
    inference graph's, without it)."""
    return [{"id": node.id, "op": node.op_name, "p": node.params.dropout}
            if node.op_name == "multihead_attention" else
            {"id": node.id, "op": node.op_name, "input": node.inputs[0], "p": node.params.p,
             "consumers": [other.id for other in plan.nodes.values() if node.id in other.inputs]}
            for node in dropped]


def _typed_value(name: str, shape: tuple[int, ...]) -> Any:
    onnx = onnx_module()
    return onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                              [BATCH_DIM, *shape])


def check_exported(model: Any) -> None:
    """ONNX's full checker (with strict shape inference) on an exported model."""
    onnx = onnx_module()
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise NetspecError(f"the exported model fails ONNX's checker: {exc}") from None


def write_onnx(model: Any, path: str | Path) -> int:
    """Write ``model`` atomically; returns the bytes written."""
    data = model.SerializeToString()
    atomic_write_bytes(path, data)
    return len(data)


__all__ = ["OPSET", "check_exported", "export_onnx", "write_onnx"]
