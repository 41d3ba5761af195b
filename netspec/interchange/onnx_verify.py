"""Compare netspec's forward with onnxruntime's on the same model, when onnxruntime is
installed (a test dependency, not a requirement of export)."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from netspec.executor import Network


def compare_with_onnxruntime(model: Any, network: Network, batch: int = 2,
                             seed: int = 0) -> float | None:
    """max |netspec - onnxruntime| / max |netspec| on random float32 inputs, or None when
    onnxruntime is not installed."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime

    rng = np.random.default_rng(seed)
    feeds = {node_id: rng.standard_normal((batch, *network.plan.nodes[node_id].shape))
             .astype(np.float32) for node_id in network.plan.inputs}
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    theirs = session.run(None, feeds)[0]
    ours = network.forward(feeds if len(feeds) > 1 else next(iter(feeds.values())))
    scale = float(np.abs(ours).max()) or 1.0
    return float(np.abs(ours - theirs.reshape(ours.shape)).max()) / scale
