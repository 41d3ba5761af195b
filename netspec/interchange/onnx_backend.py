"""netspec as an ONNX backend (``onnx.backend.base.Backend``), for ONNX's conformance tests.

A model is imported the way ``netspec import`` imports it and run by netspec's executor in
float32. The node tests pass weights (a convolution's W, a batchnorm's statistics) as graph
inputs; netspec holds those as parameters, so they are bound as constants at each run and the
model is translated then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from netspec.interchange.onnx_graph import onnx_module
from netspec.interchange.onnx_import import translate
from netspec.interchange.onnx_ops import CONSTANT_INPUTS

try:
    from onnx.backend.base import Backend, BackendRep
except ImportError:  # without the onnx extra the module still imports; prepare() says why not
    Backend = BackendRep = object


def _constant_inputs(model: Any) -> set[str]:
    """Graph inputs that feed an input netspec holds as a constant."""
    names = set()
    for node in model.graph.node:
        for index in CONSTANT_INPUTS.get(node.op_type, ()):
            if index < len(node.input) and node.input[index]:
                names.add(node.input[index])
    return names


class NetspecRep(BackendRep):
    """A model ready to run: its inputs split into data and bound constants."""

    def __init__(self, model: Any):
        self.model = model
        initialised = {tensor.name for tensor in model.graph.initializer}
        self.input_names = [v.name for v in model.graph.input if v.name not in initialised]
        self.constants = _constant_inputs(model) & set(self.input_names)
        onnx = onnx_module()
        output = model.graph.output[0].type.tensor_type.elem_type if model.graph.output else 0
        # netspec computes float32; a non-tensor output is refused when the model is imported
        self.output_dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(output)) \
            if output else np.dtype(np.float32)

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        given = dict(inputs) if isinstance(inputs, Mapping) else \
            dict(zip(self.input_names, _as_list(inputs)))
        bound = {name: np.asarray(value) for name, value in given.items()
                 if name in self.constants}
        data = {name: np.asarray(value) for name, value in given.items()
                if name not in self.constants}
        imported = translate(self.model, source="<backend>", bound=bound)
        network = imported.network
        feeds = {imported.input_ids[name]: value for name, value in data.items()
                 if imported.input_ids.get(name) in network.plan.inputs}
        out = network.forward(feeds if len(feeds) > 1 else next(iter(feeds.values())))
        batch = out.shape[0]
        return (out.reshape(batch, *imported.output_onnx_shape).astype(self.output_dtype),)


def _as_list(inputs: Any) -> Sequence[Any]:
    return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]


class NetspecBackend(Backend):
    """prepare() keeps the model; each run translates it with that run's constants."""

    @classmethod
    def prepare(cls, model: Any, device: str = "CPU", **kwargs: Any) -> NetspecRep:
        onnx_module()
        super().prepare(model, device, **kwargs)
        return NetspecRep(model)

    @classmethod
    def run_model(cls, model: Any, inputs: Any, device: str = "CPU",
                  **kwargs: Any) -> tuple[np.ndarray, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"


prepare = NetspecBackend.prepare
run_model = NetspecBackend.run_model
supports_device = NetspecBackend.supports_device
