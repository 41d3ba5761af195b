"""Initialisers: each scheme's spread against its formula (fans as PyTorch computes them),
the defaults the compiler picks from the activation that follows, and constant biases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from layer_harness import build_network

from netspec import SpecError
from netspec.runtime.initializers import fans, initialise

CONV = (64, 32, 5, 3)  # fan_in 32*5*3 = 480, fan_out 64*5*3 = 960
LINEAR = (300, 700)  # fan_in 700, fan_out 300

# (scheme, shape, init_scale, standard deviation, half-width of a uniform or None)
SCHEMES = [
    ("he_normal", CONV, None, math.sqrt(2 / 480), None),
    ("he_normal", LINEAR, None, math.sqrt(2 / 700), None),
    ("he_uniform", CONV, None, math.sqrt(2 / 480), math.sqrt(6 / 480)),
    ("he_uniform", LINEAR, None, math.sqrt(2 / 700), math.sqrt(6 / 700)),
    ("glorot_normal", CONV, None, math.sqrt(2 / (480 + 960)), None),
    ("glorot_normal", LINEAR, None, math.sqrt(2 / 1000), None),
    ("glorot_uniform", CONV, None, math.sqrt(2 / 1440), math.sqrt(6 / 1440)),
    ("glorot_uniform", LINEAR, None, math.sqrt(2 / 1000), math.sqrt(6 / 1000)),
    ("lecun_normal", CONV, None, math.sqrt(1 / 480), None),
    ("lecun_normal", LINEAR, None, math.sqrt(1 / 700), None),
    ("normal", LINEAR, None, 0.01, None),
    ("normal", CONV, 0.2, 0.2, None),
    ("uniform", LINEAR, None, 0.05 / math.sqrt(3), 0.05),
    ("uniform", CONV, 0.3, 0.3 / math.sqrt(3), 0.3),
]


@pytest.mark.parametrize(("scheme", "shape", "scale", "std", "bound"), SCHEMES,
                         ids=[f"{s[0]}-{len(s[1])}d-{s[2]}" for s in SCHEMES])
def test_scheme_matches_its_formula(scheme: str, shape, scale, std: float, bound) -> None:
    values = initialise(scheme, shape, np.random.default_rng(0), scale)
    assert values.shape == shape and values.dtype == np.float64
    # over >= 2e5 draws the sample std is within ~0.2% of the truth; 2% leaves room
    assert abs(values.std() / std - 1) < 0.02
    assert abs(values.mean()) < 0.02 * std
    if bound is None:
        # a normal's fourth moment is 3 sigma^4, a uniform's only 1.8 sigma^4
        assert abs(np.mean(values**4) / values.var() ** 2 - 3.0) < 0.1
    else:
        assert np.abs(values).max() <= bound
        assert np.abs(values).max() > 0.999 * bound


def test_zeros_scheme() -> None:
    values = initialise("zeros", CONV, np.random.default_rng(0))
    assert values.shape == CONV and not values.any()


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown initialiser 'he'"):
        initialise("he", LINEAR, np.random.default_rng(0))


@pytest.mark.parametrize(("shape", "expected"), [(CONV, (480, 960)), (LINEAR, (700, 300)),
                                                 ((6, 1, 5, 5), (25, 150)), ((3, 2, 1, 1), (2, 3))])
def test_fans_follow_pytorch(shape, expected) -> None:
    assert fans(shape) == expected


def test_spreads_agree_with_torch() -> None:
    # torch's kaiming and xavier initialisers use its own fan_in and fan_out
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    pairs = [("he_normal", lambda t: torch.nn.init.kaiming_normal_(t, nonlinearity="relu")),
             ("he_uniform", lambda t: torch.nn.init.kaiming_uniform_(t, nonlinearity="relu")),
             ("glorot_normal", torch.nn.init.xavier_normal_),
             ("glorot_uniform", torch.nn.init.xavier_uniform_)]
    for (scheme, torch_init), shape in itertools.product(pairs, (CONV, LINEAR)):
        ours = initialise(scheme, shape, np.random.default_rng(0))
        theirs = torch_init(torch.empty(shape, dtype=torch.float64)).numpy()
        assert abs(ours.std() / theirs.std() - 1) < 0.03, (scheme, shape)
        assert abs(np.abs(ours).max() / np.abs(theirs).max() - 1) < 0.2, (scheme, shape)


DEFAULT_CASES = [
    # (what follows the layer, expected default)
    ('[nodes.after]\nop = "relu"', "he_normal"),
    ('[nodes.after]\nop = "leaky_relu"', "he_normal"),
    ('[nodes.bn]\nop = "batchnorm"\n\n[nodes.after]\nop = "relu"', "he_normal"),
    ('[nodes.drop]\nop = "dropout"\n\n[nodes.bn]\nop = "batchnorm"\n\n'
     '[nodes.after]\nop = "leaky_relu"', "he_normal"),
    ('[nodes.after]\nop = "sigmoid"', "glorot_uniform"),
    ('[nodes.after]\nop = "tanh"', "glorot_uniform"),
    ('[nodes.bn]\nop = "batchnorm"\n\n[nodes.after]\nop = "softmax"', "glorot_uniform"),
    ("", "glorot_uniform"),
]


@pytest.mark.parametrize(("after", "expected"), DEFAULT_CASES,
                         ids=[f"{c[1]}-{i}" for i, c in enumerate(DEFAULT_CASES)])
def test_default_linear_init_depends_on_the_activation_after(after: str, expected: str) -> None:
    net = build_network(f"""
[nodes.x]
op = "input"
shape = [800]

[nodes.layer]
op = "linear"
out_features = 400

{after}
""")
    assert net.plan.nodes["layer"].weight_init == expected
    std = math.sqrt(2 / 800) if expected == "he_normal" else math.sqrt(2 / 1200)
    assert abs(net.params["layer.weight"].std() / std - 1) < 0.02


@pytest.mark.parametrize("pool", ["maxpool2d", "avgpool2d"])
def test_default_conv_init_sees_through_batchnorm_and_pooling(pool: str) -> None:
    net = build_network(f"""
[nodes.x]
op = "input"
shape = [64, 4, 4]

[nodes.conv]
op = "conv2d"
out_channels = 128
kernel_size = 3
padding = 1

[nodes.bn]
op = "batchnorm"

[nodes.pool]
op = "{pool}"
kernel_size = 2

[nodes.act]
op = "relu"
""")
    assert net.plan.nodes["conv"].weight_init == "he_normal"
    std = math.sqrt(2 / (64 * 9))
    assert abs(net.params["conv.weight"].std() / std - 1) < 0.02


def test_biases_start_at_zero_unless_bias_init_says_otherwise() -> None:
    net = build_network("""
[nodes.x]
op = "input"
shape = [2, 5, 5]

[nodes.conv]
op = "conv2d"
out_channels = 3
kernel_size = 3

[nodes.shifted]
op = "conv2d"
out_channels = 4
kernel_size = 3
bias_init = 0.25

[nodes.bn]
op = "batchnorm"

[nodes.flat]
op = "flatten"

[nodes.fc]
op = "linear"
out_features = 5
bias_init = -1.5

[nodes.out]
op = "linear"
out_features = 2
""")
    np.testing.assert_array_equal(net.params["conv.bias"], np.zeros(3))
    np.testing.assert_array_equal(net.params["shifted.bias"], np.full(4, 0.25))
    np.testing.assert_array_equal(net.params["fc.bias"], np.full(5, -1.5))
    np.testing.assert_array_equal(net.params["out.bias"], np.zeros(2))
    np.testing.assert_array_equal(net.params["bn.weight"], np.ones(4))
    np.testing.assert_array_equal(net.params["bn.bias"], np.zeros(4))
    np.testing.assert_array_equal(net.buffers["bn.running_mean"], np.zeros(4))
    np.testing.assert_array_equal(net.buffers["bn.running_var"], np.ones(4))


def test_unknown_init_in_a_spec_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match=r"test.toml:8: node 'fc' \(linear\): init"):
        build_network("""
[nodes.x]
op = "input"
shape = [3]

[nodes.fc]
op = "linear"
init = "he_norml"
out_features = 2
""")
