"""Fused nodes (Network(fuse=True), the default) against the same network node by node.

In training the fusions keep the bits: batchnorm centring a convolution's output in place,
a ReLU run inside the batchnorm or add before it, a ReLU clipping a linear layer's output in
place, concat and add writing into reused buffers. In inference a batchnorm after a
convolution is folded into its weight and bias, equal up to rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
from layer_harness import build_network

from netspec.lang.spec import parse_spec, shipped_architectures
from netspec.runtime.executor import Network, compile

SHIPPED = [path.stem for path in shipped_architectures()]
# MNIST-sized: trained here twice each way; the ImageNet-sized ones (resnet18, resnet34) run
# one small inference each way
SMALL = [name for name in SHIPPED
         if np.prod(next(iter(compile(name).plan.nodes.values())).shape) <= 28 * 28]
LARGE = [name for name in SHIPPED if name not in SMALL]

# every fusion at least once: conv -> batchnorm -> relu, conv (with bias) -> batchnorm,
# add -> relu with three inputs, concat -> batchnorm -> relu, linear -> relu, a 1-D batchnorm
# -> relu, and a relu read by two nodes (which nothing may overwrite)
EVERY_FUSION = """
[nodes.image]
op = "input"
shape = [2, 8, 8]

[nodes.stem]
op = "conv2d"
out_channels = 4
kernel_size = 3
padding = 1
bias = false

[nodes.stem_bn]
op = "batchnorm"

[nodes.stem_relu]
op = "relu"

[nodes.conv_a]
op = "conv2d"
out_channels = 4
kernel_size = 3
padding = 1

[nodes.bn_a]
op = "batchnorm"

[nodes.conv_b]
op = "conv2d"
inputs = "stem_relu"
out_channels = 4
kernel_size = 3
stride = 2
padding = 1
bias = false

[nodes.bn_b]
op = "batchnorm"

[nodes.up]
op = "conv2d"
inputs = "bn_b"
out_channels = 4
kernel_size = 1

[nodes.pooled]
op = "avgpool2d"
inputs = "bn_a"
kernel_size = 2

[nodes.short]
op = "avgpool2d"
inputs = "stem_relu"
kernel_size = 2

[nodes.sum]
op = "add"
inputs = ["pooled", "short", "up"]

[nodes.sum_relu]
op = "relu"

[nodes.branch]
op = "conv2d"
inputs = "sum_relu"
out_channels = 3
kernel_size = 3
padding = 1

[nodes.joined]
op = "concat"
inputs = ["sum_relu", "branch"]

[nodes.joined_bn]
op = "batchnorm"

[nodes.joined_relu]
op = "relu"

[nodes.flatten]
op = "flatten"

[nodes.fc1]
op = "linear"
out_features = 12

[nodes.fc1_relu]
op = "relu"

[nodes.fc2]
op = "linear"
out_features = 6

[nodes.fc2_bn]
op = "batchnorm"

[nodes.fc2_relu]
op = "relu"

[nodes.out]
op = "linear"
out_features = 5
"""


def twins(spec: str | None, dtype: str, name: str | None = None) -> tuple[Network, Network]:
    """The same network fused and unfused, with the same parameters."""
    if name is not None:
        return compile(name, dtype=dtype), compile(name, dtype=dtype, fuse=False)
    plan_source = parse_spec(spec, file="fusion.toml")
    return compile(plan_source, dtype=dtype), compile(plan_source, dtype=dtype, fuse=False)


def ran_nodes(net: Network, x: np.ndarray, train: bool) -> list[str]:
    order: list[str] = []
    net.node_timer = lambda node_id, phase, seconds: order.append(node_id)
    net.forward(x, train=train)
    net.node_timer = None
    return order


def batch_for(net: Network, seed: int = 1, batch: int = 5) -> np.ndarray:
    shape = net.shapes[net.plan.inputs[0]]
    return np.random.default_rng(seed).normal(size=(batch, *shape)).astype(net.dtype)


def test_the_fusions_are_planned() -> None:
    fused, plain = twins(EVERY_FUSION, "float64")
    assert fused._absorbed == {"stem_relu", "sum_relu", "joined_relu", "fc2_relu"}
    overwriting = {node for node, f in fused._fusions.items() if f.overwrite_input}
    # batchnorms after a conv, a concat or a linear layer, the relu after fc1, and the only
    # readers of batchnorms without a relu (which a conv and a pooling are free to ignore)
    assert overwriting == {"stem_bn", "bn_a", "bn_b", "joined_bn", "fc1_relu", "fc2_bn",
                           "up", "pooled"}
    # bn_a feeds a pooling, which runs on its own
    assert not fused._fusions["pooled"].relu and "pooled" not in fused._absorbed
    assert fused._folded == {"stem": "stem_bn", "conv_a": "bn_a", "conv_b": "bn_b"}
    x = batch_for(fused)
    assert "stem_relu" not in ran_nodes(fused, x, train=True)
    assert "stem_bn" not in ran_nodes(fused, x, train=False)
    assert ran_nodes(plain, x, train=True) == list(plain.plan.order)


def test_nothing_read_by_two_nodes_is_fused() -> None:
    spec = EVERY_FUSION.replace('[nodes.sum_relu]\nop = "relu"',
                                '[nodes.sum_relu]\nop = "relu"\n\n[nodes.sum_copy]\n'
                                'op = "relu"\ninputs = "sum"')
    spec = spec.replace('inputs = ["sum_relu", "branch"]', 'inputs = ["sum_copy", "branch"]')
    spec = spec.replace('[nodes.fc1_relu]\nop = "relu"',
                        '[nodes.fc1_relu]\nop = "relu"\n\n[nodes.fc1_twice]\nop = "add"\n'
                        'inputs = ["fc1_relu", "fc1"]')
    spec += '\n[nodes.last]\nop = "relu"\n'
    net, _ = twins(spec, "float64")
    # 'sum' feeds two relus; fc1 feeds its relu and an add; 'out' is read by the output relu
    assert net._consumers["sum"] == ["sum_relu", "sum_copy"]
    assert "sum_relu" not in net._absorbed and "sum" not in net._fusions
    assert "fc1_relu" not in net._fusions
    # the output may clip the linear output before it in place, but is absorbed by nothing
    assert net.plan.output == "last" and "last" not in net._absorbed
    assert net._fusions["last"].overwrite_input


def run_training(net: Network, x: np.ndarray, steps: int = 2) -> list[np.ndarray]:
    """Outputs, input gradients, parameter gradients and buffers of ``steps`` passes, with
    the parameters moved between them (so that reused buffers meet new values)."""
    results = []
    for step in range(steps):
        y = net.forward(x + step, train=True)
        dy = np.random.default_rng(10 + step).normal(size=y.shape).astype(net.dtype)
        dx = net.backward(dy)
        results += [y, dx]
        results += [net.grads[key].copy() for key in sorted(net.grads)]
        results += [value.copy() for _, value in sorted(net.buffers.items())]
        for key in net.trainable:
            net.params[key] -= 0.1 * net.grads[key]
    return results


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", [None, *SMALL])
def test_training_gives_the_same_bits_fused_and_unfused(name: str | None, dtype: str) -> None:
    fused, plain = twins(EVERY_FUSION, dtype, name)
    x = batch_for(fused)
    x_before = x.copy()
    got, want = run_training(fused, x), run_training(plain, x)
    assert len(got) == len(want)
    for index, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(a, b, err_msg=f"result {index}")
    # the caller's batch is never overwritten
    np.testing.assert_array_equal(x, x_before)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", [None, *SMALL])
def test_inference_folded_matches_node_by_node(name: str | None, dtype: str) -> None:
    fused, plain = twins(EVERY_FUSION, dtype, name)
    x = batch_for(fused, batch=7)
    # trained statistics and moved parameters, so that the folding has work to do
    run_training(fused, x)
    run_training(plain, x)
    x_before = x.copy()
    got, want = fused.forward(x), plain.forward(x)
    tolerance = {"float32": 2e-5, "float64": 1e-12}[dtype]
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance * np.abs(want).max())
    np.testing.assert_array_equal(x, x_before)
    # an inference that keeps its caches for a backward runs node by node: the same bits
    dy = np.ones_like(want)
    fused.forward(x, keep=True)
    plain.forward(x, keep=True)
    np.testing.assert_array_equal(fused.backward(dy), plain.backward(dy))


def test_folding_a_batchnorm_is_a_real_change() -> None:
    """A negative control: folding with the wrong statistics is caught."""
    fused, plain = twins(EVERY_FUSION, "float64")
    x = batch_for(fused)
    run_training(fused, x)
    run_training(plain, x)
    op = fused.plan.nodes["bn_a"].op
    real = op.inference_affine

    def off_by_a_little(params, buffers):
        scale, shift = real(params, buffers)
        return scale * 1.001, shift

    op.inference_affine = off_by_a_little
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(fused.forward(x), plain.forward(x), rtol=1e-9)


def test_a_network_whose_output_is_a_batchnorm_keeps_it() -> None:
    net = build_network("""
[nodes.image]
op = "input"
shape = [1, 4, 4]

[nodes.conv]
op = "conv2d"
out_channels = 2
kernel_size = 3

[nodes.bn]
op = "batchnorm"
""")
    assert net._folded == {"conv": "bn"}
    assert not net._fusions["bn"].relu
    x = np.random.default_rng(0).normal(size=(3, 1, 4, 4))
    y = net.forward(x, train=True)
    net.backward(np.ones_like(y))
    plain = Network(net.plan, fuse=False, dtype="float64")
    plain.load_state(net.state())
    np.testing.assert_allclose(net.forward(x), plain.forward(x), rtol=1e-12)


# DenseNet's batchnorms come before their convolutions (pre-activation) and VGG has no add:
# folding every batchnorm is a ResNet's property
@pytest.mark.parametrize("name", [name for name in LARGE if name.startswith("resnet")])
def test_imagenet_sized_networks_fold_every_batchnorm(name: str) -> None:
    fused, plain = twins(EVERY_FUSION, "float32", name)
    norms = {n for n, node in fused.plan.nodes.items() if node.op_name == "batchnorm"}
    # every batchnorm of a ResNet follows its convolution, and every block ends add -> relu
    assert set(fused._folded.values()) == norms
    adds = {n for n, node in fused.plan.nodes.items() if node.op_name == "add"}
    assert adds <= set(fused._fusions) and all(fused._fusions[a].relu for a in adds)
    # statistics as if trained, so that the folding has work to do
    rng = np.random.default_rng(0)
    for value in fused.buffers.values():
        value[...] = rng.uniform(0.5, 1.5, value.shape)
    plain.load_state(fused.state())
    x = batch_for(fused, batch=1)
    got, want = fused.forward(x), plain.forward(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
