"""The shipped mobile and Inception networks are torchvision's, key for key and value for value.

For each: the parameter count is torchvision's (and the one torchvision documents), the
parameter keys are torchvision's in its order and the buffers its buffers (less
``num_batches_tracked``); then netspec's float64 network, with its batchnorms randomised, is
copied into torchvision's model by key, and the outputs agree to a relative 1e-9 in eval and in
train mode, and so do the running statistics a training pass leaves. Dropout and stochastic
depth are random in training: the train-mode comparison sets both to 0 on both sides, through
the variable that has torchvision's argument name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomllib

import netspec
from netspec.lang.spec import resolve_spec_path
from tests.torchvision_helpers import copy_into, torch_state, torchvision_models

TOLERANCE = 1e-9
SEED = 0

# name: (torchvision's arguments, parameters, comparison image size, comparison batch)
CASES: dict[str, tuple[dict[str, Any], int, int, int]] = {
    "efficientnet_b0": ({}, 5_288_548, 64, 2),
    "mobilenet_v2": ({}, 3_504_872, 64, 2),
    "mobilenet_v3_small": ({}, 2_542_856, 64, 2),
    "regnet_x_400mf": ({}, 5_495_976, 64, 2),
    # at 224, where its ceil-mode poolings keep partial windows, batch 1 to stay quick
    "googlenet": ({"aux_logits": False, "init_weights": False}, 6_624_904, 224, 1),
    "mnasnet0_5": ({}, 2_218_512, 64, 2),
}
# the variables (torchvision's argument names) that make training deterministic
RANDOM_IN_TRAINING = {"dropout": 0.0, "stochastic_depth_prob": 0.0}


def torchvision_model(name: str, **arguments: Any) -> Any:
    models = torchvision_models()
    return getattr(models, name)(**{**CASES[name][0], **arguments})


def compiled(name: str, overrides: dict[str, Any] | None = None) -> netspec.Network:
    return netspec.compile(name, seed=SEED, dtype="float64", overrides=overrides)


def randomise_batchnorms(network: netspec.Network, rng: np.random.Generator) -> None:
    """Scales, shifts and running statistics away from 1 and 0, so that both modes use them."""
    for key, array in {**network.params, **network.buffers}.items():
        node, _, name = key.rpartition(".")
        if network.plan.nodes[node].op_name != "batchnorm":
            continue
        low, high = {"weight": (0.5, 1.5), "bias": (-0.2, 0.2), "running_mean": (-0.2, 0.2),
                     "running_var": (0.5, 2.0)}[name]
        array[...] = rng.uniform(low, high, array.shape)


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    assert ours.shape == theirs.shape
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.mark.parametrize("name", sorted(CASES))
def test_parameter_count_and_keys_are_torchvisions(name: str) -> None:
    model = torchvision_model(name)
    network = netspec.compile(name, seed=SEED)
    parameters = CASES[name][1]
    assert network.plan.total_params == parameters
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert list(network.params) == [key for key, _ in model.named_parameters()]
    assert sorted(network.buffers) == sorted(
        key for key, _ in model.named_buffers() if not key.endswith("num_batches_tracked"))
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert {key: value.shape for key, value in network.state().items()} == {
        key: shapes[key] for key in network.state()}
    assert network.plan.nodes[network.plan.inputs[0]].shape == (3, 224, 224)
    assert network.output_shape == (1000,)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_float64_outputs_equal_torchvisions_with_weights_copied_by_key(name: str,
                                                                       mode: str) -> None:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    _, _, size, batch = CASES[name]
    variables = tomllib.loads(resolve_spec_path(name).read_text())["vars"]
    overrides: dict[str, Any] = {"size": size}
    arguments: dict[str, Any] = {}
    if mode == "train":
        for variable, value in RANDOM_IN_TRAINING.items():
            if variable in variables:
                overrides[variable] = arguments[variable] = value
    network = compiled(name, overrides)
    randomise_batchnorms(network, np.random.default_rng(SEED + 1))
    model = torchvision_model(name, **arguments).double()
    copy_into(network.state(), model)
    x = np.random.default_rng(SEED + 2).standard_normal((batch, 3, size, size))
    model.train(mode == "train")
    with torch.no_grad():
        theirs = model(torch.from_numpy(x)).numpy()
    ours = network.forward(x, train=mode == "train")
    error = relative_error(ours, theirs)
    print(f"{name} at {size}x{size}, batch {batch}, {mode}: relative error {error:.2e}")
    assert error < TOLERANCE
    if mode == "train":
        # the running statistics a training pass leaves, with torchvision's momentum and eps
        after = torch_state(model)
        for key, value in network.buffers.items():
            assert relative_error(np.asarray(value), after[key]) < TOLERANCE, key


def significant_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines()
               if line.strip() and not line.strip().startswith("#"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_is_at_most_70_significant_lines_with_what_it_includes(name: str) -> None:
    path = resolve_spec_path(name)
    included = tomllib.loads(path.read_text()).get("include", [])
    total = significant_lines(path) + sum(significant_lines(path.parent / i) for i in included)
    assert total <= 70, f"{name}: {total} significant lines"
