"""The shipped VGG and DenseNet against torchvision: exactly its state_dict keys and shapes
(less num_batches_tracked), its parameter counts with --set making the deeper variants, the
same float64 outputs on 32x32 inputs, and each spec in at most 40 significant lines."""

from __future__ import annotations

import numpy as np
import pytest

from netspec.lang.shipped import SHIPPED_DIR
from netspec.lang.spec import load_spec, parse_spec
from netspec.plan.compiler import compile_plan
from netspec.runtime.executor import Network
from tests.torchvision_helpers import copy_into, torchvision_models

VARIANTS = [  # (shipped spec, --set, torchvision's model, its parameter count)
    ("vgg11_bn", {}, "vgg11_bn", 132_868_840),
    ("vgg11_bn", {"convs": [2, 2, 3, 3, 3]}, "vgg16_bn", 138_365_992),
    ("densenet121", {}, "densenet121", 7_978_856),
    ("densenet121", {"layers": [6, 12, 32, 32]}, "densenet169", 14_149_480),
]


def keys_and_shapes(plan) -> dict[str, tuple[int, ...]]:
    return {f"{node_id}.{key}": tuple(spec.shape) for node_id, node in plan.nodes.items()
            for key, spec in {**node.param_specs, **node.buffer_specs}.items()}


@pytest.mark.parametrize(("name", "overrides", "model", "params"), VARIANTS,
                         ids=[variant[2] for variant in VARIANTS])
def test_the_parameter_count_is_torchvisions(name, overrides, model, params):
    assert compile_plan(name, overrides).total_params == params


@pytest.mark.parametrize(("name", "overrides", "model", "params"), VARIANTS,
                         ids=[variant[2] for variant in VARIANTS])
def test_the_keys_and_shapes_are_torchvisions(name, overrides, model, params):
    models = torchvision_models()
    import torch

    with torch.device("meta"):  # shapes only: nothing allocated
        reference = getattr(models, model)()
    expected = {key: tuple(value.shape) for key, value in reference.state_dict().items()
                if not key.endswith("num_batches_tracked")}
    assert keys_and_shapes(compile_plan(name, overrides)) == expected


@pytest.mark.parametrize("name", ["vgg11_bn", "densenet121"])
def test_the_spec_fits_in_40_significant_lines(name):
    spec = load_spec(name)
    texts = [(SHIPPED_DIR / f"{name}.toml").read_text(), *spec.included.values()]
    significant = [line for text in texts for line in text.splitlines()
                   if line.strip() and not line.strip().startswith("#")]
    assert len(significant) <= 40


def small(name: str, size: int) -> Network:
    """The shipped spec on a size x size input, in float64 with random weights and batchnorm
    statistics."""
    text = (SHIPPED_DIR / f"{name}.toml").read_text().replace("[3, 224, 224]",
                                                               f"[3, {size}, {size}]")
    network = Network(compile_plan(parse_spec(text, file=f"{name}.toml",
                                              directory=SHIPPED_DIR)), seed=0, dtype="float64")
    rng = np.random.default_rng(1)
    network.load_state({key: (rng.uniform(0.5, 1.5, value.shape) if key.endswith("running_var")
                              else rng.normal(0, 0.1, value.shape) if key.endswith(
                                  ("running_mean", "bias")) else value)
                        for key, value in network.state().items()})
    return network


def test_densenet121_computes_torchvisions_output():
    models = torchvision_models()
    import torch

    network = small("densenet121", 32)  # the last dense block sees 1x1
    reference = models.densenet121().double().eval()
    copy_into(network.state(), reference)
    x = np.random.default_rng(2).normal(size=(1, 3, 32, 32))
    with torch.no_grad():
        expected = reference(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(network.forward(x), expected, rtol=1e-9, atol=1e-9)


def test_vgg11_bn_computes_torchvisions_output():
    # on 32x32 the features end at 1x1 and the adaptive pool spreads them to 7x7
    models = torchvision_models()
    import torch

    network = small("vgg11_bn", 32)
    with torch.device("meta"):  # its 133M weights are netspec's: nothing to initialise
        reference = models.vgg11_bn()
    reference = reference.to_empty(device="cpu").double().eval()
    copy_into(network.state(), reference)
    x = np.random.default_rng(3).normal(size=(1, 3, 32, 32))
    with torch.no_grad():
        expected = reference(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(network.forward(x), expected, rtol=1e-9, atol=1e-9)
