"""Optimizers, gradient clipping and learning-rate schedules (PyTorch parity where installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import TypeAdapter

from netspec.common.errors import WeightsError
from netspec.train import (
    SGD,
    Adam,
    AdamW,
    ScheduleConfig,
    TrainConfig,
    clip_grad_norm,
    learning_rate,
    make_optimizer,
)

SHAPES = {"conv.weight": (4, 3, 3, 3), "conv.bias": (4,), "fc.weight": (10, 36)}
# Per-step lr overrides, None meaning the base lr: schedules drive optimizers this way.
LRS = [None, 0.05, None, 0.02, 0.07]

CASES = {
    "sgd": {"type": "sgd", "lr": 0.1, "momentum": 0.0},
    "sgd_momentum": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
    "sgd_nesterov": {"type": "sgd", "lr": 0.1, "momentum": 0.8, "nesterov": True},
    "sgd_weight_decay": {"type": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.05},
    "sgd_nesterov_weight_decay": {
        "type": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.05,
    },
    "adam": {"type": "adam", "lr": 0.01},
    "adam_l2": {"type": "adam", "lr": 0.01, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.1},
    "adamw": {"type": "adamw", "lr": 0.01, "weight_decay": 0.1},
}


def _optimizer(case: dict):
    return make_optimizer(TrainConfig.model_validate({"optimizer": case}).optimizer)


def _params(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s) for k, s in SHAPES.items()}


def _grads(steps: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(s) for k, s in SHAPES.items()} for _ in range(steps)]


def _torch_optimizer(torch, case: dict, tensors: list):
    kwargs = {k: v for k, v in case.items() if k != "type"}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    if case["type"] == "sgd":
        return torch.optim.SGD(tensors, **kwargs)
    cls = torch.optim.Adam if case["type"] == "adam" else torch.optim.AdamW
    return cls(tensors, foreach=False, **kwargs)


# --- optimizers --------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_matches_torch(name: str) -> None:
    torch = pytest.importorskip("torch")
    case = CASES[name]
    params = _params()
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    ours = _optimizer(case)
    theirs = _torch_optimizer(torch, case, list(tensors.values()))
    for grads, lr in zip(_grads(len(LRS)), LRS, strict=True):
        ours.step(params, grads, lr=lr)
        for group in theirs.param_groups:
            group["lr"] = case["lr"] if lr is None else lr
        for key, tensor in tensors.items():
            tensor.grad = torch.from_numpy(grads[key].copy())
        theirs.step()
    for key, tensor in tensors.items():
        np.testing.assert_allclose(params[key], tensor.detach().numpy(), rtol=1e-12, atol=0)


def test_sgd_by_hand() -> None:
    params = {"w": np.array([1.0, -2.0])}
    sgd = SGD(lr=0.5, momentum=0.9, weight_decay=0.1)
    # d = g + 0.1 p = [0.6, 0.8]; the buffer starts as d; p -= 0.5 d
    sgd.step(params, {"w": np.array([0.5, 1.0])})
    np.testing.assert_allclose(params["w"], [0.7, -2.4], rtol=1e-12)
    # d = [0.07, -1.24]; buffer = 0.9 [0.6, 0.8] + d = [0.61, -0.52]; p -= 0.5 buffer
    sgd.step(params, {"w": np.array([0.0, -1.0])})
    np.testing.assert_allclose(params["w"], [0.395, -2.14], rtol=1e-12)


def test_adam_by_hand() -> None:
    params = {"w": np.array([1.0, 2.0])}
    grad = np.array([0.5, -2.0])
    adam = Adam(lr=0.1, betas=(0.9, 0.999), eps=1e-8)
    adam.step(params, {"w": grad})
    # First step: bias correction undoes (1 - beta), so the update is lr * g / (|g| + eps).
    expected = [1 - 0.1 * 0.5 / (0.5 + 1e-8), 2 + 0.1 * 2 / (2 + 1e-8)]
    np.testing.assert_allclose(params["w"], expected, rtol=1e-12)
    state = adam.state_dict()
    np.testing.assert_allclose(state["exp_avg:w"], 0.1 * grad, rtol=1e-12)
    np.testing.assert_allclose(state["exp_avg_sq:w"], 0.001 * grad**2, rtol=1e-12)
    assert state["step:w"] == 1 and state["step:w"].dtype == np.int64


def test_adamw_decays_before_the_step() -> None:
    params = {"w": np.array([1.0])}
    AdamW(lr=0.1, weight_decay=0.5).step(params, {"w": np.array([1.0])})
    np.testing.assert_allclose(params["w"], [1 * (1 - 0.05) - 0.1 / (1 + 1e-8)], rtol=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_updates_in_place_and_leaves_grads_and_frozen_keys(name: str) -> None:
    params = _params()
    params["frozen"] = np.ones(3)
    arrays = dict(params)
    before = {k: v.copy() for k, v in params.items()}
    grads = _grads(1)[0]
    saved_grads = {k: v.copy() for k, v in grads.items()}
    optimizer = _optimizer(CASES[name])
    optimizer.step(params, grads)
    for key in SHAPES:
        assert params[key] is arrays[key]
        assert not np.array_equal(params[key], before[key])
        np.testing.assert_array_equal(grads[key], saved_grads[key])
    np.testing.assert_array_equal(params["frozen"], before["frozen"])
    assert not any(entry.endswith(":frozen") for entry in optimizer.state_dict())


def test_float32_parameters_stay_float32() -> None:
    params = {"w": np.ones((2, 3), np.float32)}
    for optimizer in (SGD(0.1, momentum=0.9, weight_decay=0.1), Adam(0.1, weight_decay=0.1)):
        optimizer.step(params, {"w": np.full((2, 3), 0.5, np.float32)})
        assert params["w"].dtype == np.float32
        assert all(v.dtype in (np.float32, np.int64) for v in optimizer.state_dict().values())


@pytest.mark.parametrize("name", CASES)
def test_state_dict_round_trip_through_npz(name: str, tmp_path) -> None:
    grads = _grads(5)
    params = _params()
    first = _optimizer(CASES[name])
    for g in grads[:3]:
        first.step(params, g)
    np.savez(tmp_path / "optim.npz", **first.state_dict())
    with np.load(tmp_path / "optim.npz", allow_pickle=False) as data:
        state = dict(data)
    resumed = _optimizer(CASES[name])
    resumed.load_state_dict(state)
    copy = {k: v.copy() for k, v in params.items()}
    for g in grads[3:]:
        first.step(params, g)
        resumed.step(copy, g)
    for key in SHAPES:
        np.testing.assert_array_equal(copy[key], params[key])


def test_state_dict_is_a_snapshot() -> None:
    params = {"w": np.zeros(2)}
    sgd = SGD(0.1, momentum=0.9)
    sgd.step(params, {"w": np.ones(2)})
    state = sgd.state_dict()
    sgd.step(params, {"w": np.ones(2)})
    np.testing.assert_array_equal(state["momentum_buffer:w"], [1.0, 1.0])


@pytest.mark.parametrize(
    ("optimizer", "state", "message"),
    [
        (Adam(0.1), {"momentum_buffer:w": np.zeros(2)}, "does not belong to Adam"),
        (SGD(0.1, momentum=0.9), {"w": np.zeros(2)}, "'w' does not belong to SGD"),
        (Adam(0.1), {"step:w": np.array(1), "exp_avg:w": np.zeros(2)}, "missing exp_avg_sq:w"),
        (Adam(0.1), {"step:w": np.array(1.5), "exp_avg:w": np.zeros(2),
                     "exp_avg_sq:w": np.zeros(2)}, "not a step count"),
        (SGD(0.1, momentum=0.9), {"momentum_buffer:w": np.array(["a"])}, "not numeric"),
    ],
)
def test_load_state_dict_rejects_foreign_state(optimizer, state, message) -> None:
    with pytest.raises(WeightsError, match=message):
        optimizer.load_state_dict(state)


def test_state_of_the_wrong_shape_is_reported_at_the_next_step() -> None:
    sgd = SGD(0.1, momentum=0.9)
    sgd.load_state_dict({"momentum_buffer:w": np.zeros(3)})
    with pytest.raises(WeightsError, match=r"'momentum_buffer:w' has shape \(3,\).*\(2,\)"):
        sgd.step({"w": np.zeros(2)}, {"w": np.ones(2)})


@pytest.mark.parametrize(
    "make",
    [
        lambda: SGD(0.0),
        lambda: SGD(0.1, momentum=1.0),
        lambda: SGD(0.1, nesterov=True),
        lambda: SGD(0.1, weight_decay=-1),
        lambda: Adam(0.1, betas=(0.9, 1.0)),
        lambda: Adam(0.1, eps=0),
    ],
)
def test_bad_hyperparameters(make) -> None:
    with pytest.raises(ValueError):
        make()


def test_make_optimizer_types() -> None:
    assert type(_optimizer({"type": "sgd"})) is SGD
    assert type(_optimizer({"type": "adam"})) is Adam
    adamw = _optimizer({"type": "adamw", "betas": [0.5, 0.6]})
    assert type(adamw) is AdamW and adamw.betas == (0.5, 0.6) and adamw.weight_decay == 0.01


# --- gradient clipping ---------------------------------------------------------------------


def test_clip_grad_norm_by_hand() -> None:
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    assert clip_grad_norm(grads, 1.0) == 5.0
    np.testing.assert_allclose(grads["a"], [3 / (5 + 1e-6), 0.0], rtol=1e-15)
    np.testing.assert_allclose(grads["b"], [[4 / (5 + 1e-6)]], rtol=1e-15)
    assert clip_grad_norm(grads, 10.0) == pytest.approx(1.0)
    np.testing.assert_allclose(grads["a"], [3 / (5 + 1e-6), 0.0], rtol=1e-15)


def test_clip_grad_norm_leaves_non_finite_gradients() -> None:
    grads = {"a": np.array([np.inf, 1.0])}
    assert clip_grad_norm(grads, 1.0) == math.inf
    np.testing.assert_array_equal(grads["a"], [np.inf, 1.0])


@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_grad_norm_matches_torch(max_norm: float) -> None:
    torch = pytest.importorskip("torch")
    grads = _grads(1)[0]
    tensors = []
    for g in grads.values():
        tensor = torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
        tensor.grad = torch.from_numpy(g.copy())
        tensors.append(tensor)
    expected = torch.nn.utils.clip_grad_norm_(tensors, max_norm).item()
    assert clip_grad_norm(grads, max_norm) == pytest.approx(expected, rel=1e-12)
    for g, tensor in zip(grads.values(), tensors, strict=True):
        np.testing.assert_allclose(g, tensor.grad.numpy(), rtol=1e-12, atol=0)


# --- learning-rate schedules ---------------------------------------------------------------


def _schedule(**table):
    return TypeAdapter(ScheduleConfig).validate_python({"type": "constant", **table})


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"type": "constant"}, {0: 1.0, 3.5: 1.0, 11.9: 1.0}),
        ({"type": "step", "step_size": 3, "gamma": 0.5}, {0: 1.0, 2.9: 1.0, 3: 0.5, 6.5: 0.25}),
        ({"type": "multistep", "milestones": [2, 5]}, {1.99: 1.0, 2: 0.1, 4.5: 0.1, 5: 0.01}),
        ({"type": "exponential", "gamma": 0.9}, {0: 1.0, 1: 0.9, 2.5: 0.81}),
        ({"type": "cosine", "min_lr": 0.2}, {0: 1.0, 4: 0.8, 6: 0.6, 8: 0.4, 12: 0.2}),
        # After warmup the schedule restarts its count: decays at 1 + 2 and 1 + 4 epochs.
        ({"type": "step", "step_size": 2, "gamma": 0.5, "warmup_epochs": 1},
         {1: 1.0, 2.9: 1.0, 3: 0.5, 5: 0.25}),
        ({"type": "cosine", "warmup_epochs": 2}, {2: 1.0, 7: 0.5, 12: 0.0}),
    ],
)
def test_schedule_values(table: dict, expected: dict) -> None:
    schedule = _schedule(**table)
    for epoch, lr in expected.items():
        got = learning_rate(schedule, 1.0, epoch, total_epochs=12)
        assert got == pytest.approx(lr, rel=1e-12, abs=1e-15), epoch


@pytest.mark.parametrize("kind", ["constant", "cosine", "exponential"])
def test_warmup_ramps_per_step(kind: str) -> None:
    extra = {"gamma": 0.5} if kind == "exponential" else {}
    schedule = _schedule(type=kind, warmup_epochs=2, **extra)
    lrs = [learning_rate(schedule, 0.4, e / 4, 10, steps_per_epoch=4) for e in range(8)]
    np.testing.assert_allclose(lrs, [0.4 * (s + 1) / 8 for s in range(8)], rtol=1e-12)
    assert learning_rate(schedule, 0.4, 2.0, 10, steps_per_epoch=4) == pytest.approx(0.4)


def test_warmup_per_epoch_and_fractional() -> None:
    per_epoch = _schedule(warmup_epochs=4)
    assert [learning_rate(per_epoch, 1.0, e, 10) for e in range(5)] == [0.25, 0.5, 0.75, 1, 1]
    half = _schedule(warmup_epochs=0.5)
    assert learning_rate(half, 1.0, 0.0, 10, steps_per_epoch=10) == pytest.approx(0.2)
    assert learning_rate(half, 1.0, 0.4, 10, steps_per_epoch=10) == pytest.approx(1.0)


def test_cosine_is_monotone_and_continuous() -> None:
    schedule = _schedule(type="cosine", warmup_epochs=1, min_lr=0.01)
    positions = np.arange(0, 10 * 50) / 50
    lrs = np.array([learning_rate(schedule, 0.1, e, 10, steps_per_epoch=50) for e in positions])
    after = lrs[positions >= 1]
    assert np.all(np.diff(lrs[positions < 1]) > 0)
    assert np.all(np.diff(after) < 0) and after[-1] > 0.01
    assert after[0] == pytest.approx(0.1, rel=1e-15)
    # No jumps: steps are bounded by the slope of the cosine, (0.1 - 0.01) pi / 2 per 9 epochs.
    assert np.max(np.abs(np.diff(after))) <= (0.1 - 0.01) * math.pi / 2 / 9 / 50 * (1 + 1e-9)


@pytest.mark.parametrize(
    ("table", "make"),
    [
        ({"type": "step", "step_size": 3, "gamma": 0.5},
         lambda s, o: s.StepLR(o, step_size=3, gamma=0.5)),
        ({"type": "multistep", "milestones": [2, 5, 9], "gamma": 0.3},
         lambda s, o: s.MultiStepLR(o, milestones=[2, 5, 9], gamma=0.3)),
        ({"type": "exponential", "gamma": 0.8}, lambda s, o: s.ExponentialLR(o, gamma=0.8)),
        ({"type": "cosine", "min_lr": 0.001},
         lambda s, o: s.CosineAnnealingLR(o, T_max=12, eta_min=0.001)),
    ],
)
def test_schedules_match_torch(table: dict, make) -> None:
    torch = pytest.importorskip("torch")
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = make(torch.optim.lr_scheduler, optimizer)
    schedule = _schedule(**table)
    for epoch in range(12):
        expected = scheduler.get_last_lr()[0]
        assert learning_rate(schedule, 0.1, epoch, 12) == pytest.approx(expected, rel=1e-12), epoch
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_weight_decay_may_leave_out_biases_norms_and_learned_tensors(kind: str) -> None:
    torch = pytest.importorskip("torch")
    shapes = {"conv.weight": (4, 3, 3, 3), "conv.bias": (4,), "ln.weight": (8,),
              "ln.bias": (8,), "class_token": (1, 1, 8), "features.1.0.layer_scale": (4, 1, 1),
              "fc.weight": (10, 8)}
    case = {"type": kind, "lr": 0.05, "weight_decay": 0.3,
            **({"momentum": 0.9} if kind == "sgd" else {})}
    config = TrainConfig.model_validate(
        {"optimizer": {**case, "decay_norms_and_biases": False}}).optimizer
    ours = make_optimizer(config, shapes)
    assert ours.no_decay == {"conv.bias", "ln.weight", "ln.bias", "class_token",
                             "features.1.0.layer_scale"}
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(s) for k, s in shapes.items()}
    everything = {k: v.copy() for k, v in params.items()}
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    groups = [{"params": [tensors["conv.weight"], tensors["fc.weight"]]},
              {"params": [t for k, t in tensors.items() if k in ours.no_decay],
               "weight_decay": 0.0}]
    theirs = _torch_optimizer(torch, case, groups)
    decays_all = make_optimizer(TrainConfig.model_validate({"optimizer": case}).optimizer,
                                shapes)
    assert decays_all.no_decay == frozenset()
    for _ in range(3):
        grads = {k: rng.standard_normal(s) for k, s in shapes.items()}
        ours.step(params, grads)
        decays_all.step(everything, grads)
        for key, tensor in tensors.items():
            tensor.grad = torch.from_numpy(grads[key].copy())
        theirs.step()
    for key, tensor in tensors.items():
        np.testing.assert_allclose(params[key], tensor.detach().numpy(), rtol=1e-12, atol=0)
    # the weights decay alike; the rest decays only when told to
    for key in shapes:
        same = np.array_equal(params[key], everything[key])
        assert same == (key in ("conv.weight", "fc.weight")), key


def test_the_torch_engine_leaves_the_same_parameters_out_of_weight_decay() -> None:
    torch = pytest.importorskip("torch")
    from netspec.train.torch_engine import _torch_optimizer as engine_optimizer

    named = {"fc.weight": torch.zeros(3, 2, requires_grad=True),
             "fc.bias": torch.zeros(3, requires_grad=True),
             "encoder.pos_embedding": torch.zeros(1, 4, 2, requires_grad=True)}
    for skip in (False, True):
        config = TrainConfig.model_validate({"optimizer": {
            "type": "adamw", "weight_decay": 0.1, "decay_norms_and_biases": not skip}}).optimizer
        groups = engine_optimizer(config, named).param_groups
        decayed = [p for g in groups if g["weight_decay"] > 0 for p in g["params"]]
        expected = [named["fc.weight"]] if skip else list(named.values())
        assert len(decayed) == len(expected) and all(
            any(p is e for e in expected) for p in decayed)
