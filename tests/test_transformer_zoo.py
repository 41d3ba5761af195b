"""ViT-B/16, ConvNeXt-Tiny and ShuffleNetV2 x1.0 as netspec builds them from their block specs,
against torchvision's own models.

Keys and shapes are compared with torchvision's ``state_dict()`` (less ``num_batches_tracked``)
in full at torchvision's sizes; outputs are compared in float64 with every parameter and buffer
copied by key, in eval and in train mode (dropout and stochastic depth at 0), at sizes that two
shared cores run in seconds: ViT-B/16 with one encoder layer, the convolutional networks at
64x64 (a global pooling before the classifier makes their parameters independent of the size);
and, marked slow (a minute or two), the three whole networks at 224x224.
"""

from __future__ import annotations

import numpy as np
import pytest

import netspec
from netspec.lang.spec import load_spec, parse_spec, resolve_spec_path, shipped_architectures
from netspec.ops.base import param_key
from netspec.plan.compiler import compile_plan
from tests.torchvision_helpers import copy_into, torch_state, torchvision_models

TOLERANCE = 1e-9
SEED = 0
PARAMETERS = {"vit_b_16": 86_567_656, "convnext_tiny": 28_589_128,
              "shufflenet_v2_x1_0": 2_278_604}
SMALL_SIZE = 64


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    assert ours.shape == theirs.shape
    return float(np.max(np.abs(ours - theirs)) / max(np.max(np.abs(theirs)), 1e-300))


def torchvision_model(name: str, **kwargs):
    """torchvision's model in float64, its weights left as torchvision initialises them."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(SEED)
    return getattr(torchvision_models(), name)(**kwargs).double()


def plan_state_shapes(name: str, overrides: dict | None = None) -> dict[str, tuple[int, ...]]:
    """Every parameter and buffer key of the compiled spec with its shape, nothing allocated."""
    plan = compile_plan(name, overrides)
    return {param_key(node_id, key): tuple(spec.shape) for node_id, node in plan.nodes.items()
            for key, spec in {**node.param_specs, **node.buffer_specs}.items()}


@pytest.mark.parametrize("name", list(PARAMETERS))
def test_parameter_count_keys_and_shapes_are_torchvisions(name):
    model = torchvision_model(name)
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()
                if not key.endswith("num_batches_tracked")}
    plan = compile_plan(name)
    assert plan.total_params == PARAMETERS[name]
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS[name]
    assert plan_state_shapes(name) == expected
    assert list(plan_state_shapes(name)) == list(expected)  # in torchvision's order too


def test_vit_b_16_carries_197_tokens_of_768_through_its_encoder():
    plan = compile_plan("vit_b_16")
    layers = [node for node in plan.nodes if node.startswith("encoder.layers.encoder_layer_")]
    assert {node.split(".")[2] for node in layers} == {f"encoder_layer_{i}" for i in range(12)}
    assert all(plan.nodes[node].shape == (197, 768) for node in layers
               if plan.nodes[node].op_name not in ("linear", "gelu", "dropout")
               or node.endswith(("mlp.3", "mlp.4")))
    assert plan.nodes["encoder.ln"].shape == (197, 768)
    assert plan.nodes[plan.output].shape == (1000,)


@pytest.mark.parametrize("name", list(PARAMETERS))
def test_specs_fit_in_70_significant_lines_with_their_includes(name):
    spec = load_spec(name)
    path = next(p for p in shipped_architectures() if p.stem == name)
    texts = [path.read_text(), *spec.included.values()]
    significant = [line for text in texts for line in text.splitlines()
                   if line.strip() and not line.strip().startswith("#")]
    assert len(significant) <= 70


def randomise(network: netspec.Network, rng: np.random.Generator) -> None:
    """Scales, shifts, layer scales, tokens and running statistics away from their initial
    0 and 1 (a layer scale of 1e-6 would hide its block), so that every one of them counts."""
    for key, array in {**network.params, **network.buffers}.items():
        if key.endswith("running_var"):
            array[...] = rng.uniform(0.5, 2.0, array.shape)
        elif array.ndim <= 1 or key.endswith(("layer_scale", "class_token", "pos_embedding")):
            array[...] = rng.normal(0.0, 0.5, array.shape) + (
                1.0 if key.endswith(("weight", "layer_scale")) else 0.0)


# name -> (torchvision constructor arguments, netspec overrides, image size, batch)
SMALL = {
    # one encoder layer of ViT-B/16: every op of the twelve, at the full 224 and 197 tokens
    "vit_b_16": ({"num_layers": 1}, {"layers": 1}, 224, 2),
    "convnext_tiny": ({"stochastic_depth_prob": 0.0}, {"stochastic_depth_prob": 0.0},
                      SMALL_SIZE, 2),
    "shufflenet_v2_x1_0": ({}, {}, SMALL_SIZE, 2),
}


# the same at full size: ViT-B/16's twelve layers, the convolutional networks at 224x224
FULL = {
    "vit_b_16": ({"num_layers": 12}, {}, 224, 1),  # no batchnorm: one sample is enough
    # layer norms only, like ViT's: one sample is enough
    "convnext_tiny": ({"stochastic_depth_prob": 0.0}, {"stochastic_depth_prob": 0.0}, 224, 1),
    "shufflenet_v2_x1_0": ({}, {}, 224, 2),
}


def small_pair(name: str, sizes: dict | None = None):
    """netspec's network and torchvision's model in float64 holding the same weights."""
    kwargs, overrides, size, _ = (sizes or SMALL)[name]
    path = resolve_spec_path(name)
    text = path.read_text()
    if size != 224:
        assert text.count("shape = [3, 224, 224]") == 1
        text = text.replace("shape = [3, 224, 224]", f"shape = [3, {size}, {size}]")

    spec = parse_spec(text, file=path.name, directory=path.parent, overrides=overrides)
    network = netspec.compile(spec, seed=SEED, dtype="float64")
    randomise(network, np.random.default_rng(SEED + 2))
    if name == "vit_b_16":
        model = torchvision_models().vision_transformer.VisionTransformer(
            image_size=224, patch_size=16, hidden_dim=768, mlp_dim=3072, num_heads=12,
            **kwargs).double()
    else:
        model = torchvision_model(name, **kwargs)
    copy_into(network.state(), model)
    return network, model


@pytest.mark.parametrize("sizes", [
    SMALL, pytest.param(FULL, marks=pytest.mark.slow, id="full")], ids=["small", "full"])
@pytest.mark.parametrize("name", list(SMALL))
def test_outputs_and_gradients_equal_torchvisions_in_eval_and_train_mode(name, sizes):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    network, model = small_pair(name, sizes)
    _, _, size, batch = sizes[name]
    x = np.random.default_rng(SEED + 1).standard_normal((batch, 3, size, size))

    model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    eval_error = relative_error(network.forward(x, train=False), expected)
    assert eval_error < TOLERANCE, f"{name} eval: relative error {eval_error:.3g}"

    model.train()
    x_torch = torch.from_numpy(x.copy()).requires_grad_(True)
    expected_train = model(x_torch)
    ours = network.forward(x, train=True)
    train_error = relative_error(ours, expected_train.detach().numpy())
    assert train_error < TOLERANCE, f"{name} train: relative error {train_error:.3g}"
    state = torch_state(model)
    for key, value in network.buffers.items():
        assert relative_error(value, state[key]) < TOLERANCE, key

    dy = np.random.default_rng(SEED + 3).standard_normal(ours.shape)
    expected_train.backward(torch.from_numpy(dy))
    dx_error = relative_error(network.backward(dy), x_torch.grad.numpy())
    assert dx_error < TOLERANCE, f"{name} input gradient: relative error {dx_error:.3g}"
    grads = {key: p.grad.numpy() for key, p in model.named_parameters()}
    assert set(network.grads) == set(grads)
    # a bias before a batchnorm in training has a gradient of rounding noise (the norm's
    # input gradient sums to zero per channel): errors are measured against the larger of
    # a tensor's own gradient and a thousandth of the largest anywhere
    floor = 1e-3 * max(np.abs(g).max() for g in grads.values())
    errors = {key: float(np.abs(grad - grads[key]).max() / max(np.abs(grads[key]).max(), floor))
              for key, grad in network.grads.items()}
    worst = max(errors, key=errors.__getitem__)
    assert errors[worst] < TOLERANCE, f"{name} gradient of {worst}: {errors[worst]:.3g}"


# a weight whose transpose has its shape: exchanging its axes must change the output
PERMUTED = {"vit_b_16": "encoder.layers.encoder_layer_0.self_attention.out_proj.weight",
            "convnext_tiny": "features.3.1.block.0.weight",
            "shufflenet_v2_x1_0": "stage3.2.branch2.5.weight"}


@pytest.mark.parametrize("name", list(SMALL))
def test_a_permuted_weight_does_not_match(name):
    torch = pytest.importorskip("torch")
    network, model = small_pair(name)
    _, _, size, _ = SMALL[name]
    x = np.random.default_rng(SEED + 1).standard_normal((1, 3, size, size))
    ours = network.forward(x, train=False)
    key = PERMUTED[name]
    state = network.state()
    weight = state[key]
    state[key] = np.ascontiguousarray(np.swapaxes(weight, 0, 1) if weight.shape[0] ==
                                      weight.shape[1] else weight[::-1])
    copy_into(state, model)
    model.eval()
    with torch.no_grad():
        error = relative_error(ours, model(torch.from_numpy(x)).numpy())
    assert error > 1e-4
