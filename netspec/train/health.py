"""Where a diverging network first went wrong: the node whose output or gradient stopped being
finite. Used only after a step has failed, so its cost does not matter."""

from __future__ import annotations

import numpy as np

from netspec.ops import Context
from netspec.ops.base import param_key
from netspec.runtime.executor import Network


def first_nonfinite_output(net: Network, x: np.ndarray, rng: np.random.Generator,
                           train: bool = True) -> str | None:
    """Replay a forward pass node by node and return the first node whose output holds NaN or
    infinity (or None). Buffers are copied, so running statistics are left as they were."""
    ctx = Context(train=train, rng=rng, batch=len(x))
    values: dict[str, np.ndarray] = {}
    with np.errstate(all="ignore"):
        for node_id, node in net.plan.nodes.items():
            params = {name: net.params[param_key(node_id, name)] for name in node.param_specs}
            buffers = {name: net.buffers[param_key(node_id, name)].copy()
                       for name in node.buffer_specs}
            xs = [x] if node.op_name == "input" else [values[s] for s in node.inputs]
            values[node_id], _ = node.op.forward(xs, params, buffers, ctx)
            if not np.all(np.isfinite(values[node_id])):
                return node_id
    return None


def first_nonfinite_gradient(net: Network) -> str | None:
    """The parameter key, in topological order, whose gradient holds NaN or infinity."""
    return next((key for key in net.params
                 if key in net.grads and not np.all(np.isfinite(net.grads[key]))), None)


def describe_node(net: Network, node_id: str) -> str:
    return f"node '{node_id}' ({net.plan.nodes[node_id].op_name})"
