"""Compare netspec's forward with onnxruntime's on the same model, when onnxruntime is
installed (a test dependency, not a requirement of export)."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from netspec.runtime.executor import Network


def compare_with_onnxruntime(model: Any, network: Network, batch: int = 2, seed: int = 0,
                             input_names: Mapping[str, str] | None = None) -> float | None:
    """max |netspec - onnxruntime| / max |netspec| on random float32 inputs, or None when
    onnxruntime is not installed. ``model`` is a ModelProto or a path (a model with external
    data must be given by path); ``input_names`` maps the model's input names to netspec's
    input ids where they differ (an import)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime

    names = {node_id: name for name, node_id in (input_names or {}).items()}
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    source = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    # a file that fixes its batch (torch.onnx.export from one example image fixes 1) is fed
    # that batch; netspec's network takes any
    fixed = {shape[0] for shape in (value.shape for value in session.get_inputs())
             if shape and isinstance(shape[0], int) and shape[0] > 0}
    batch = fixed.pop() if len(fixed) == 1 else batch
    rng = np.random.default_rng(seed)
    feeds = {node_id: rng.standard_normal((batch, *network.plan.nodes[node_id].shape))
             .astype(np.float32) for node_id in network.plan.inputs}
    theirs = session.run(None, {names.get(key, key): value for key, value in feeds.items()})[0]
    ours = network.forward(feeds if len(feeds) > 1 else next(iter(feeds.values())))
    scale = float(np.abs(ours).max()) or 1.0
    return float(np.abs(ours - theirs.reshape(ours.shape)).max()) / scale


# float32 sums in another order differ by about 1e-7 of the output's size; far more is a bug
AGREEMENT = 1e-5


def verdict(error: float) -> str:
    """What a relative difference means, for the line that reports it."""
    return "" if error <= AGREEMENT else (f" - more than float32 rounding ({AGREEMENT:g}); "
                                          f"please report it")
