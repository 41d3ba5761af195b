"""A live ``torch.nn.Module`` built from a plan: what the torch engine trains.

Modules sit at the paths of their node ids (see :mod:`netspec.interchange.torch_paths`), and
a learned tensor is an ``nn.Parameter`` at its id's path (``encoder.pos_embedding`` is the
parameter ``pos_embedding`` of the container ``encoder``), so ``module.state_dict()`` has
netspec's keys plus the ``num_batches_tracked`` counter of each batchnorm; ``forward`` walks
the plan in its topological order with the forms of :mod:`netspec.interchange.torch_ops`.
Values, gradients and running statistics equal the NumPy executor's up to rounding (tests
compare them in float64).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import reduce
from operator import add
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - PyTorch's own spelling
from torch import nn

from netspec.common.errors import NetspecError
from netspec.interchange.torch_ops import (
    TRAINING,
    Call,
    Layer,
    Tensor,
    refused_nodes,
    torch_form,
)
from netspec.interchange.torch_paths import PROGRAM_ATTRIBUTE, check_module_paths
from netspec.plan.compiler import Plan

# batchnorm's step counter: PyTorch keeps it, netspec does not (its momentum is fixed)
BATCH_COUNTER = "num_batches_tracked"


def resolve_function(name: str) -> Any:
    """``"F.relu"`` -> ``torch.nn.functional.relu``; ``"torch.cat"`` -> ``torch.cat``."""
    root, _, attribute = name.partition(".")
    return getattr({"F": F, "torch": torch}[root], attribute)


def make_layer(form: Layer) -> nn.Module:
    module = getattr(nn, form.cls)(**form.kwargs)
    for name in form.frozen:
        getattr(module, name).requires_grad_(False)
    return module


def make_parameter(form: Tensor) -> nn.Parameter:
    """The learned tensor's parameter, drawn as netspec's initialiser draws it."""
    if form.init == "zeros":
        values = torch.zeros(form.shape)
    elif form.init == "full":
        values = torch.full(form.shape, form.scale)
    elif form.init == "normal":
        values = torch.empty(form.shape).normal_(0.0, form.scale)
    else:
        values = torch.empty(form.shape).uniform_(-form.scale, form.scale)
    return nn.Parameter(values, requires_grad=not form.frozen)


def install(root: nn.Module, path: str, module: nn.Module | nn.Parameter) -> None:
    """Put ``module`` (or a parameter) at dotted ``path`` under ``root``, creating containers
    on the way."""
    parts = path.split(".")
    parent = root
    for part in parts[:-1]:
        if part not in parent._modules:
            parent.add_module(part, nn.ModuleDict())
        parent = parent._modules[part]
    if isinstance(module, nn.Parameter):
        parent.register_parameter(parts[-1], module)
    else:
        parent.add_module(parts[-1], module)


class PlanModule(nn.Module):
    """The network of a plan as a PyTorch module; ``forward(x)`` takes one tensor per input
    node, in the plan's input order."""

    def __init__(self, plan: Plan):
        super().__init__()
        refused = refused_nodes(plan.nodes.values())
        if refused:
            raise NetspecError(f"{plan.name}: cannot run in PyTorch: {'; '.join(refused)}")
        check_module_paths(plan, plan.name)
        program = []
        for node in plan.nodes.values():
            form = torch_form(node)
            if isinstance(form, Layer):
                module = make_layer(form)
                install(self, node.id, module)
                program.append((node.id, (module, form.call), node.inputs))
            elif isinstance(form, Tensor):
                parameter = make_parameter(form)
                install(self, node.id, parameter)
                program.append((node.id, (parameter, form.sample_rank), node.inputs))
            else:
                program.append((node.id, form, node.inputs))
        # a plain attribute, not a module: it holds references to the modules installed above
        self.__dict__[PROGRAM_ATTRIBUTE] = (tuple(program), plan.inputs, plan.output)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        program, input_ids, output = self.__dict__[PROGRAM_ATTRIBUTE]
        if len(inputs) != len(input_ids):
            raise NetspecError(f"this network takes {len(input_ids)} input(s) "
                               f"{list(input_ids)}, got {len(inputs)}")
        values: dict[str, torch.Tensor] = dict(zip(input_ids, inputs))
        batch = inputs[0].shape[0]
        for node_id, step, sources in program:
            if node_id in values:
                continue
            xs = [values[source] for source in sources]
            if isinstance(step, tuple) and isinstance(step[0], nn.Parameter):
                parameter, sample_rank = step
                # every sample sees the same tensor: a view, as torchvision's class token
                values[node_id] = parameter.expand(batch, *(-1,) * sample_rank)
                continue
            if isinstance(step, tuple):
                values[node_id] = apply_layer(*step, xs)
                continue
            values[node_id] = _call(step, xs, self.training)
        return values[output]


def apply_layer(module: nn.Module, call: str, xs: list[torch.Tensor]) -> torch.Tensor:
    """A layer's module on its inputs, as ``Layer.call`` says (torch_module writes the same
    expressions into source)."""
    if call == "channels_first":
        return torch.permute(module(torch.permute(xs[0], (0, 2, 3, 1))), (0, 3, 1, 2))
    if call in ("attention", "causal"):
        query, key, value = xs * 3 if len(xs) == 1 else xs
        mask = None
        if call == "causal":
            mask = torch.ones(query.shape[1], key.shape[1], dtype=torch.bool).triu(1)
        return module(query, key, value, need_weights=False, attn_mask=mask)[0]
    return module(xs[0])


def _call(form: Call, xs: list[torch.Tensor], training: bool) -> torch.Tensor:
    if form.inputs == "sum":
        return reduce(add, xs)
    if form.function is None:
        return xs[0]
    function = resolve_function(form.function)
    kwargs = {key: (training if value == TRAINING else value)
              for key, value in form.kwargs.items()}
    if form.inputs == "list":
        return function(xs, **kwargs)
    if form.inputs == "args":
        return function(*xs, **kwargs)
    return function(xs[0], **kwargs)


def load_arrays(module: nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Copy netspec's parameters and buffers (``Network.state()``) into ``module``, keeping
    the module's dtype and device; every key must fit."""
    state = module.state_dict()
    own = {key for key in state if not key.endswith(f".{BATCH_COUNTER}")}
    missing, unexpected = sorted(own - set(arrays)), sorted(set(arrays) - own)
    if missing or unexpected:
        raise NetspecError(f"weights do not fit the module: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    with torch.no_grad():
        for key in own:
            target = state[key]
            target.copy_(torch.from_numpy(np.ascontiguousarray(arrays[key])).to(target.dtype))


def module_arrays(module: nn.Module, dtype: np.dtype) -> dict[str, np.ndarray]:
    """The module's parameters and buffers as netspec arrays of ``dtype`` (no batch counter)."""
    return {key: value.detach().cpu().numpy().astype(dtype, copy=True)
            for key, value in module.state_dict().items()
            if not key.endswith(f".{BATCH_COUNTER}")}
