"""The executor through the public Network API: gradient flow through the DAG, inputs,
dtypes, live and fixed parameters, initialisers, determinism, errors, state and memory."""

from __future__ import annotations

import math
import re
import weakref
from pathlib import Path

import numpy as np
import pytest
from layer_harness import TWO_INPUTS, build_network, network_fd_gradients

import netspec
from netspec import NetspecError, SpecError

BRANCHING = """
[nodes.x]
op = "input"
shape = [4]

[nodes.fc1]
op = "linear"
out_features = 4

[nodes.act]
op = "tanh"

[nodes.fc2]
op = "linear"
out_features = 4

# fc1 feeds both act and this residual add
[nodes.res]
op = "add"
inputs = ["fc2", "fc1"]

# one node used twice by the same consumer
[nodes.twice]
op = "add"
inputs = ["res", "res"]

[nodes.cat]
op = "concat"
inputs = ["twice", "act", "twice"]

[nodes.out]
op = "linear"
out_features = 3
"""

STOCHASTIC = """
[nodes.x]
op = "input"
shape = [2, 6, 6]

[nodes.conv]
op = "conv2d"
out_channels = 3
kernel_size = 3

[nodes.bn]
op = "batchnorm"

[nodes.relu]
op = "relu"

[nodes.flat]
op = "flatten"

[nodes.drop]
op = "dropout"
p = 0.5

[nodes.fc]
op = "linear"
out_features = 4
"""


def _feed(net: netspec.Network, batch: int, seed: int) -> np.ndarray | dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feed = {k: rng.normal(size=(batch, *net.shapes[k])) for k in net.plan.inputs}
    return feed if len(feed) > 1 else feed[net.plan.inputs[0]]


def _fd_agrees(net: netspec.Network, x, projection: np.ndarray, dx, train: bool = False) -> None:
    numeric = network_fd_gradients(net, x, projection, train=train)
    given = dx if isinstance(dx, dict) else {net.plan.inputs[0]: dx}
    for key in net.params:
        np.testing.assert_allclose(net.grads[key], numeric[key], rtol=1e-6, atol=1e-8,
                                   err_msg=key)
    for input_id, grad in given.items():
        np.testing.assert_allclose(grad, numeric[f"input:{input_id}"], rtol=1e-6, atol=1e-8,
                                   err_msg=input_id)


def test_gradients_accumulate_where_a_node_feeds_several() -> None:
    net = build_network(BRANCHING)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4))
    y = net.forward(x, train=True)
    projection = rng.normal(size=y.shape)
    dx = net.backward(projection)
    _fd_agrees(net, x, projection, dx)


def test_a_node_used_twice_gets_twice_the_gradient() -> None:
    net = build_network("""
[nodes.x]
op = "input"
shape = [2]

[nodes.fc]
op = "linear"
out_features = 2
weight = [[1.0, 2.0], [3.0, 4.0]]
bias = false

[nodes.double]
op = "add"
inputs = ["fc", "fc"]
""")
    x = np.array([[1.0, -1.0]])
    np.testing.assert_allclose(net.forward(x, train=True), [[-2.0, -2.0]])
    dy = np.array([[1.0, 10.0]])
    dx = net.backward(dy)
    # y = 2 W x: dW = 2 dy^T x, dx = 2 dy W
    np.testing.assert_allclose(net.grads["fc.weight"], 2 * dy.T @ x)
    np.testing.assert_allclose(dx, 2 * dy @ np.array([[1.0, 2.0], [3.0, 4.0]]))


def test_several_inputs_are_fed_and_differentiated_by_name() -> None:
    net = build_network(TWO_INPUTS)
    assert net.plan.inputs == ("a", "b")
    rng = np.random.default_rng(1)
    x = {"a": rng.normal(size=(2, 3)), "b": rng.normal(size=(2, 2, 4, 4))}
    y = net.forward(x, train=True)
    projection = rng.normal(size=y.shape)
    dx = net.backward(projection)
    assert set(dx) == {"a", "b"}
    assert dx["a"].shape == (2, 3) and dx["b"].shape == (2, 2, 4, 4)
    _fd_agrees(net, x, projection, dx)


@pytest.mark.parametrize(("feed", "message"), [
    (lambda a, b: a, "pass a dict"),
    (lambda a, b: {"a": a}, "missing ['b']"),
    (lambda a, b: {"a": a, "b": b, "c": a}, "unknown ['c']"),
    (lambda a, b: {"a": a, "b": b[:1]}, "same batch size"),
    (lambda a, b: {"a": a, "b": b[:, :1]}, "input 'b' must have shape (N, 2, 4, 4)"),
])
def test_bad_feeds_of_a_two_input_network_are_netspec_errors(feed, message: str) -> None:
    net = build_network(TWO_INPUTS)
    with pytest.raises(NetspecError, match=re.escape(message)):
        net.forward(feed(np.zeros((2, 3)), np.zeros((2, 2, 4, 4))))


@pytest.mark.parametrize("bad", [np.zeros((2, 3)), np.zeros((2, 2, 6)), np.zeros((2, 6, 6)),
                                 np.zeros((2, 2, 6, 6, 1)), np.zeros(72)])
def test_input_shape_mismatch_is_a_netspec_error(bad: np.ndarray) -> None:
    net = build_network(STOCHASTIC)
    with pytest.raises(NetspecError, match=r"input 'x' must have shape \(N, 2, 6, 6\)"):
        net.forward(bad)


def test_backward_needs_a_kept_forward_and_a_dy_of_the_output_shape() -> None:
    net = build_network(STOCHASTIC)
    x = np.zeros((3, 2, 6, 6))
    with pytest.raises(NetspecError, match="backward needs a forward"):
        net.backward(np.zeros((3, 4)))
    net.forward(x)  # inference keeps no caches
    with pytest.raises(NetspecError, match="backward needs a forward"):
        net.backward(np.zeros((3, 4)))
    net.forward(x, train=True)
    for wrong in (np.zeros((3, 5)), np.zeros((1, 4)), np.zeros((4, 4)), np.zeros(4)):
        with pytest.raises(NetspecError, match=r"dy must have the shape .* \(3, 4\)"):
            net.backward(wrong)
    net.backward(np.zeros((3, 4)))
    with pytest.raises(NetspecError, match="backward needs a forward"):
        net.backward(np.zeros((3, 4)))
    net.forward(x, keep=True)
    net.backward(np.zeros((3, 4)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_holds_end_to_end(dtype: str) -> None:
    net = build_network(TWO_INPUTS, dtype=dtype)
    other = np.float64 if dtype == "float32" else np.float32
    x = {"a": np.ones((2, 3), dtype=other), "b": np.ones((2, 2, 4, 4), dtype=other)}
    y = net.forward(x, train=True)
    dx = net.backward(np.ones(y.shape, dtype=other))
    arrays = [y, *dx.values(), *net.params.values(), *net.grads.values()]
    assert {a.dtype for a in arrays} == {np.dtype(dtype)}
    stochastic = build_network(STOCHASTIC, dtype=dtype)
    stochastic.forward(np.ones((2, 2, 6, 6)), train=True)
    assert {a.dtype for a in stochastic.buffers.values()} == {np.dtype(dtype)}


def test_unknown_dtype_is_refused() -> None:
    with pytest.raises(NetspecError, match="dtype must be one of float32, float64"):
        build_network(STOCHASTIC, dtype="float16")


def test_float64_network_matches_finite_differences_in_training_mode() -> None:
    # batchnorm in training mode and a dropout mask fixed by the rewound generator
    net = build_network(STOCHASTIC, seed=3)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 2, 6, 6))
    state = net.rng.bit_generator.state
    y = net.forward(x, train=True)
    net.rng.bit_generator.state = state
    projection = rng.normal(size=y.shape)
    dx = net.backward(projection)
    # a step short enough that no ReLU input of these seeds crosses zero
    numeric = network_fd_gradients(net, x, projection, train=True, step=1e-6)
    for key in [*net.params, "input:x"]:
        analytic = net.grads[key] if key in net.params else dx
        np.testing.assert_allclose(analytic, numeric[key], rtol=1e-5, atol=1e-7, err_msg=key)


def test_params_and_buffers_are_live() -> None:
    net = build_network(STOCHASTIC)
    x = np.random.default_rng(0).normal(size=(2, 2, 6, 6))
    before = net.forward(x)
    net.params["fc.weight"][...] = 0.0
    net.params["fc.bias"][...] = [1.0, 2.0, 3.0, 4.0]
    np.testing.assert_array_equal(net.forward(x), np.tile([1.0, 2.0, 3.0, 4.0], (2, 1)))
    assert not np.allclose(before, net.forward(x))
    conv_out = build_network("""
[nodes.x]
op = "input"
shape = [1, 2, 2]

[nodes.bn]
op = "batchnorm"
""")
    conv_out.buffers["bn.running_mean"][...] = 5.0
    conv_out.buffers["bn.running_var"][...] = 4.0 - 1e-5
    np.testing.assert_allclose(conv_out.forward(np.full((1, 1, 2, 2), 7.0)), 1.0)


def test_grads_and_trainable_keys_follow_params() -> None:
    net = build_network(STOCHASTIC)
    net.forward(np.ones((2, 2, 6, 6)), train=True)
    net.backward(np.ones((2, 4)))
    assert set(net.grads) == set(net.params) == set(net.trainable)
    assert {k: v.shape for k, v in net.grads.items()} == {k: v.shape
                                                           for k, v in net.params.items()}
    net.zero_grads()
    assert net.grads == {}


FIXED = """
[nodes.x]
op = "input"
shape = [2]

[nodes.fc]
op = "linear"
out_features = 2
weight = [[1.0, 2.0], [3.0, 4.0]]
trainable = false
bias_init = 0.5
"""


def test_fixed_explicit_weights() -> None:
    net = build_network(FIXED)
    np.testing.assert_array_equal(net.params["fc.weight"], [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(net.params["fc.bias"], [0.5, 0.5])
    assert net.trainable == ["fc.bias"]
    assert net.plan.total_params == 2
    np.testing.assert_allclose(net.forward(np.array([[1.0, 1.0]])), [[3.5, 7.5]])


def test_explicit_conv_weight_in_pytorch_layout() -> None:
    # out=1, in=2, 1x2 kernel: channel 0 weighs (1, 2), channel 1 weighs (0, -1)
    net = build_network("""
[nodes.x]
op = "input"
shape = [2, 1, 3]

[nodes.conv]
op = "conv2d"
out_channels = 1
kernel_size = [1, 2]
weight = [[[[1.0, 2.0]], [[0.0, -1.0]]]]
bias = false
""")
    x = np.array([[[[1.0, 2.0, 3.0]], [[4.0, 5.0, 6.0]]]])
    np.testing.assert_allclose(net.forward(x), [[[[1 + 4 - 5, 2 + 6 - 6]]]])


def _write_spec(directory: Path, weight_line: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "net.toml"
    path.write_text(f"""[nodes.x]
op = "input"
shape = [3]

[nodes.fc]
op = "linear"
out_features = 2
{weight_line}
""")
    return path


def test_weight_file_is_read_relative_to_the_spec(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    weights = np.arange(6.0).reshape(2, 3)
    (tmp_path / "nets" / "w").mkdir(parents=True)
    np.save(tmp_path / "nets" / "w" / "fc.npy", weights)
    path = _write_spec(tmp_path / "nets", 'weight_file = "w/fc.npy"\ntrainable = false')
    monkeypatch.chdir(tmp_path)
    net = netspec.compile(path)
    np.testing.assert_array_equal(net.params["fc.weight"], weights)
    assert "fc.weight" not in net.trainable


def test_weight_file_of_the_wrong_shape_names_file_and_line(tmp_path: Path) -> None:
    np.save(tmp_path / "fc.npy", np.zeros((3, 2)))
    path = _write_spec(tmp_path, 'weight_file = "fc.npy"')
    with pytest.raises(SpecError) as error:
        netspec.compile(path)
    # weight_file stands on line 8 of the spec written above
    assert str(error.value).startswith(f"{path}:8: node 'fc' (linear): weight_file has shape "
                                       f"(3, 2), the weight needs (2, 3)")


@pytest.mark.parametrize("where", ["../outside.npy", "{outside}", "link.npy"])
def test_weight_file_outside_the_spec_directory_is_refused(tmp_path: Path, where: str) -> None:
    outside = tmp_path / "outside.npy"
    np.save(outside, np.zeros((2, 3)))
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    (spec_dir / "link.npy").symlink_to(outside)
    path = _write_spec(spec_dir, f'weight_file = "{where.format(outside=outside)}"')
    with pytest.raises(SpecError, match=r"net.toml:8: node 'fc' \(linear\): weight_file .* "
                                        r"points outside the spec's directory"):
        netspec.compile(path)


@pytest.mark.parametrize(("weight_line", "message"), [
    ("weight = [[1.0, 2.0, 3.0]]", r":8: .*weight has shape \(1, 3\), the weight needs \(2, 3\)"),
    ("weight = [[1.0, 2.0], [3.0]]", r":8: .*weight values must be a rectangular"),
    ("weight = [[1.0, nan, 3.0], [1.0, 2.0, 3.0]]", r":8: .*NaN or infinite"),
    ('weight = [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]\nweight_file = "w.npy"', r"either 'weight'"),
    ('weight_file = "missing.npy"', r":8: .*'missing.npy' not found"),
])
def test_bad_explicit_weights_are_reported_with_their_line(tmp_path: Path, weight_line: str,
                                                           message: str) -> None:
    with pytest.raises(SpecError, match=message):
        netspec.compile(_write_spec(tmp_path, weight_line))


INIT_CASES = [
    # (init, init_scale, std, uniform half-width or None); the layer is 400 in, 100 out
    ("he_normal", None, math.sqrt(2 / 400), None),
    ("he_uniform", None, math.sqrt(2 / 400), math.sqrt(6 / 400)),
    ("glorot_normal", None, math.sqrt(2 / 500), None),
    ("glorot_uniform", None, math.sqrt(2 / 500), math.sqrt(6 / 500)),
    ("lecun_normal", None, math.sqrt(1 / 400), None),
    ("normal", None, 0.01, None),
    ("normal", 0.3, 0.3, None),
    ("uniform", None, 0.05 / math.sqrt(3), 0.05),
    ("uniform", 0.2, 0.2 / math.sqrt(3), 0.2),
    ("zeros", None, 0.0, None),
]


@pytest.mark.parametrize(("init", "scale", "std", "bound"), INIT_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in INIT_CASES])
def test_init_scheme_is_selected_by_the_spec(init: str, scale, std: float, bound) -> None:
    scale_line = f"init_scale = {scale}" if scale is not None else ""
    net = build_network(f"""
[nodes.x]
op = "input"
shape = [400]

[nodes.fc]
op = "linear"
out_features = 100
init = "{init}"
{scale_line}

[nodes.relu]
op = "relu"
""")
    weight = net.params["fc.weight"]
    assert net.plan.nodes["fc"].weight_init == init
    if std == 0.0:
        assert not weight.any()
        return
    assert abs(weight.std() / std - 1) < 0.03
    if bound is not None:
        assert np.abs(weight).max() <= bound
        assert np.abs(weight).max() > 0.99 * bound
    else:
        # 40,000 normal draws reach past 3.5 standard deviations
        assert np.abs(weight).max() > 3.5 * std
    np.testing.assert_array_equal(net.params["fc.bias"], 0.0)


def test_same_seed_same_network_and_dropout_masks() -> None:
    x = np.random.default_rng(0).normal(size=(2, 2, 6, 6))
    first, second, other = (build_network(STOCHASTIC, seed=s) for s in (5, 5, 6))
    for key in first.params:
        np.testing.assert_array_equal(first.params[key], second.params[key])
    for key in ("conv.weight", "fc.weight"):
        assert not np.array_equal(first.params[key], other.params[key])
    other.load_state(first.state())  # same weights: only the dropout masks can differ now
    runs = [[net.forward(x, train=True) for _ in range(2)] for net in (first, second, other)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0][0], runs[2][0])
    # the generator moves on between passes: a fresh mask each step
    assert not np.array_equal(runs[0][0], runs[0][1])
    np.testing.assert_array_equal(first.forward(x), second.forward(x))


def test_state_round_trips_through_a_file(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(4, 2, 6, 6))
    source = build_network(STOCHASTIC, seed=1)
    source.forward(x, train=True)  # moves the batchnorm running statistics
    np.savez(tmp_path / "weights.npz", **source.state())
    target = build_network(STOCHASTIC, seed=2)
    live = dict(target.params)
    with np.load(tmp_path / "weights.npz") as arrays:
        target.load_state(dict(arrays))
    np.testing.assert_array_equal(target.forward(x), source.forward(x))
    assert all(target.params[k] is live[k] for k in live), "load_state must copy in place"
    assert set(target.state()) == set(source.params) | set(source.buffers)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.pop("fc.bias"), r"missing \['fc.bias'\]"),
    (lambda s: s.update(extra=np.zeros(1)), r"unexpected \['extra'\]"),
    (lambda s: s.update({"bn.running_mean": np.zeros(4)}), r"'bn.running_mean' has shape"),
])
def test_load_state_refuses_what_does_not_fit_and_changes_nothing(edit, message: str) -> None:
    net = build_network(STOCHASTIC, seed=1)
    state = {k: v + 1.0 for k, v in net.state().items()}
    edit(state)
    before = {k: v.copy() for k, v in net.state().items()}
    with pytest.raises(NetspecError, match=message):
        net.load_state(state)
    for key, value in net.state().items():
        np.testing.assert_array_equal(value, before[key])


LONG_CHAIN = "\n".join(
    ['[nodes.x]\nop = "input"\nshape = [8]\n']
    + [f'[nodes.fc{i}]\nop = "linear"\nout_features = 8\n\n[nodes.act{i}]\nop = "tanh"\n'
       for i in range(6)]
)


@pytest.mark.parametrize("keep", [False, True])
def test_inference_frees_activations_as_it_goes(keep: bool,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    net = build_network(LONG_CHAIN)
    x = np.random.default_rng(0).normal(size=(3, 8))
    expected = net.forward(x, train=True)
    outputs: list[weakref.ref] = []
    alive: list[int] = []  # earlier activations still in memory as each node starts
    for node in net.plan.nodes.values():
        if node.op_name == "input":
            continue

        def recording(xs, params, buffers, ctx, forward=node.op.forward):
            alive.append(sum(ref() is not None for ref in outputs))
            out, cache = forward(xs, params, buffers, ctx)
            outputs.append(weakref.ref(out))
            return out, cache

        monkeypatch.setattr(node.op, "forward", recording)
    np.testing.assert_allclose(net.forward(x, keep=keep), expected, rtol=1e-12)
    if keep:
        assert alive == list(range(12))
    else:
        # the node's input, and at most the previous node's (held until the next cache)
        assert max(alive) <= 2


@pytest.mark.parametrize("spec", [STOCHASTIC, TWO_INPUTS, BRANCHING])
def test_inference_in_chunks_equals_one_pass(spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # a budget of one byte makes every sample its own chunk
    monkeypatch.setattr(netspec.plan.budget, "INFERENCE_CHUNK_BYTES", 1)
    monkeypatch.setattr(netspec.plan.budget, "MIN_INFERENCE_CHUNK", 1)
    net = build_network(spec)
    net.forward(_feed(net, 4, seed=1), train=True)  # running statistics away from 0 and 1
    x = _feed(net, 5, seed=2)
    np.testing.assert_allclose(net.forward(x), net.forward(x, keep=True), rtol=1e-12,
                               atol=1e-15)


@pytest.mark.parametrize("spec", [STOCHASTIC, TWO_INPUTS, BRANCHING])
def test_backward_without_input_gradient_gives_the_same_parameter_gradients(spec: str) -> None:
    net = build_network(spec)
    x = _feed(net, 3, seed=0)
    state = net.rng.bit_generator.state
    y = net.forward(x, train=True)
    dy = np.random.default_rng(1).normal(size=y.shape)
    net.backward(dy)
    full = {key: value.copy() for key, value in net.grads.items()}
    net.zero_grads()
    net.rng.bit_generator.state = state
    net.forward(x, train=True)
    assert net.backward(dy, need_input_grad=False) is None
    assert set(net.grads) == set(full)
    for key, value in full.items():
        np.testing.assert_allclose(net.grads[key], value, rtol=1e-12, atol=1e-15, err_msg=key)


def test_an_empty_batch_is_refused_with_a_message() -> None:
    net = netspec.compile("mlp")
    with pytest.raises(NetspecError, match=r"input 'image' holds no samples \(batch size 0\)"):
        net.forward(np.zeros((0, 1, 28, 28), dtype=np.float32))


def test_input_gradients_of_a_shared_add_are_separate_arrays() -> None:
    net = build_network("""
[nodes.a]
op = "input"
shape = [3]

[nodes.b]
op = "input"
shape = [3]

[nodes.sum]
op = "add"
inputs = ["a", "b"]
""")
    x = {"a": np.ones((2, 3)), "b": np.ones((2, 3))}
    net.forward(x, train=True)
    dy = np.full((2, 3), 2.0)
    grads = net.backward(dy)
    grads["a"][0, 0] = 99.0
    assert grads["b"][0, 0] == 2.0 and dy[0, 0] == 2.0


def test_inference_frees_activations_when_a_relu_runs_behind_its_pooling(
        monkeypatch: pytest.MonkeyPatch) -> None:
    net = netspec.compile("lenet5", dtype="float64")
    outputs: dict[str, weakref.ref] = {}
    alive: dict[str, set[str]] = {}  # the node outputs still in memory as each node starts
    in_place: dict[str, bool] = {}
    for node_id, node in net.plan.nodes.items():
        def recording(xs, params, buffers, ctx, fusion, forward=node.op.fused_forward,
                      node_id=node_id):
            alive[node_id] = {key for key, ref in outputs.items() if ref() is not None}
            out, cache = forward(xs, params, buffers, ctx, fusion)
            outputs[node_id] = weakref.ref(out)
            in_place[node_id] = any(np.shares_memory(out, x) for x in xs)
            return out, cache

        monkeypatch.setattr(node.op, "fused_forward", recording)
    net.forward(np.random.default_rng(0).normal(size=(2, 1, 28, 28)))
    # each ReLU runs inside its pooling, on the pooled output
    assert alive["conv2"] == {"image", "pool1"}
    assert alive["flatten"] == {"image", "pool2"}
    assert "relu1" not in outputs and not in_place["pool1"]
