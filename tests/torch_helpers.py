"""Helpers shared by the PyTorch interchange and engine tests (imported after importorskip)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from netspec.runtime.executor import Network


def toml_string(text: str) -> str:
    """A TOML basic string holding ``text`` exactly (any code point but surrogates)."""
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04X}")
        else:
            out.append(f"\\U{code:08X}")
    return '"' + "".join(out) + '"'


def import_file(path: Path) -> ModuleType:
    """Import a generated module file under a fresh name."""
    name = f"netspec_generated_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def relative_error(ours: np.ndarray, theirs: Any, scale: float | None = None) -> float:
    theirs = theirs.detach().cpu().numpy() if isinstance(theirs, torch.Tensor) else theirs
    assert np.shape(ours) == np.shape(theirs), (np.shape(ours), np.shape(theirs))
    scale = scale or max(float(np.abs(theirs).max(initial=0.0)), 1e-300)
    return float(np.abs(np.asarray(ours) - theirs).max(initial=0.0)) / scale


class MaskedDropout:
    """Stands in for ``torch.nn.functional`` in a module under test: ``dropout`` multiplies
    by netspec's own masks, in plan order (the two libraries' generators differ); every other
    function is PyTorch's."""

    def __init__(self, masks: list[np.ndarray]):
        self.masks = list(masks)

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.nn.functional, name)

    def dropout(self, x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
        if not training or p == 0:
            return x
        return x * torch.from_numpy(self.masks.pop(0))

    # stochastic depth's forms: channel dropout with the batch as the channels
    dropout1d = dropout3d = dropout


def dropout_masks(net: Network, caches: dict[str, Any]) -> list[np.ndarray]:
    return [caches[node_id] for node_id, node in net.plan.nodes.items()
            if node.op_name in ("dropout", "stochastic_depth")
            and caches.get(node_id) is not None]


def compare_with_netspec(net: Network, model: torch.nn.Module, train: bool,
                         use_masks: Callable[[MaskedDropout], None],
                         seed: int = 0) -> dict[str, float]:
    """Forward (and, in train mode, backward and running statistics) of a float64 netspec
    network and a float64 torch module holding the same weights: the largest relative error
    of each."""
    rng = np.random.default_rng(seed)
    # two ImageNet-sized samples keep the float64 NumPy side of a ResNet within seconds
    big = any(int(np.prod(net.plan.nodes[i].shape)) > 100_000 for i in net.plan.inputs)
    batch = 2 if big else 5
    xs = {i: rng.standard_normal((batch, *net.plan.nodes[i].shape)) for i in net.plan.inputs}
    ours = net.forward(xs, train=train)
    use_masks(MaskedDropout(dropout_masks(net, net._caches or {})))
    model.train(train)
    tensors = [torch.from_numpy(xs[i]).requires_grad_(train) for i in net.plan.inputs]
    theirs = model(*tensors)
    errors = {"output": relative_error(ours, theirs)}
    if not train:
        return errors
    dy = rng.standard_normal(ours.shape)
    input_grads = net.backward(dy)
    if not isinstance(input_grads, dict):
        input_grads = {net.plan.inputs[0]: input_grads}
    (theirs * torch.from_numpy(dy)).sum().backward()
    errors["input gradients"] = max(relative_error(input_grads[i], t.grad)
                                    for i, t in zip(net.plan.inputs, tensors))
    grads = dict(model.named_parameters())
    scale = max(float(np.abs(net.grads[k]).max()) for k in net.trainable)
    errors["gradients"] = max(relative_error(net.grads[k], grads[k].grad, scale)
                              for k in net.trainable)
    state = model.state_dict()
    errors["running statistics"] = max(
        (relative_error(value, state[key]) for key, value in net.buffers.items()), default=0.0)
    return errors


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
