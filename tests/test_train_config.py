"""The [train] table: defaults, a full table, and every kind of error with its line."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from netspec.common.errors import NetspecError, SpecError
from netspec.train import (
    AdamConfig,
    AdamWConfig,
    AugmentConfig,
    ConstantScheduleConfig,
    CosineScheduleConfig,
    EarlyStoppingConfig,
    MultiStepScheduleConfig,
    SGDConfig,
    TrainConfig,
    apply_overrides,
    parse_train_config,
)

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

FULL = """\
[train]
epochs = 12
batch_size = 64
seed = 0
validation = 5000
limit = 0
clip_grad_norm = 1.0
label_smoothing = 0.1
[train.optimizer]
type = "sgd"
lr = 0.05
momentum = 0.9
nesterov = true
weight_decay = 5e-4
[train.schedule]
type = "cosine"
warmup_epochs = 1
[train.early_stopping]
monitor = "val_accuracy"
patience = 3
min_delta = 0.001
[train.augment]
max_shift = 2
max_rotation = 10.0
"""


def _locator(text: str) -> Callable[[tuple[str, ...]], int | None]:
    """A stand-in for the spec loader's key -> line map, for simple TOML."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), 1):
        if header := re.fullmatch(r"\[([\w.]+)\]", line.strip()):
            table = tuple(header[1].split("."))
            lines[table] = number
        elif key := re.match(r"\s*(\w+)\s*=", line):
            lines[(*table, key[1])] = number
    return lines.get


def _parse(text: str) -> TrainConfig:
    raw = tomllib.loads(text).get("train", {})
    return parse_train_config(raw, file="net.toml", locate=_locator(text))


def _error(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        _parse(text)
    return info.value


def test_defaults() -> None:
    config = _parse("[train]\n")
    assert config == TrainConfig() == TrainConfig.model_validate({})
    assert (config.epochs, config.batch_size, config.seed, config.validation) == (10, 64, 0, 5000)
    assert (config.limit, config.clip_grad_norm, config.label_smoothing) == (0, None, 0.0)
    assert config.optimizer == SGDConfig(lr=0.01, momentum=0.9, nesterov=False, weight_decay=0)
    assert config.schedule == ConstantScheduleConfig(warmup_epochs=0)
    assert config.early_stopping is None
    assert config.augment == AugmentConfig(max_shift=0, max_rotation=0)


def test_full_table() -> None:
    config = _parse(FULL)
    assert (config.epochs, config.clip_grad_norm, config.label_smoothing) == (12, 1.0, 0.1)
    assert config.optimizer == SGDConfig(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    assert config.schedule == CosineScheduleConfig(warmup_epochs=1.0, min_lr=0.0)
    assert config.early_stopping == EarlyStoppingConfig(
        monitor="val_accuracy", patience=3, min_delta=0.001
    )
    assert config.augment == AugmentConfig(max_shift=2, max_rotation=10.0)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"optimizer": {"type": "adam", "betas": [0.8, 0.9]}},
         AdamConfig(lr=1e-3, betas=(0.8, 0.9), eps=1e-8, weight_decay=0)),
        ({"optimizer": {"type": "adamw"}}, AdamWConfig(weight_decay=0.01)),
        # A sub-table without `type` is the default kind.
        ({"optimizer": {"lr": 0.5}}, SGDConfig(lr=0.5, momentum=0.9)),
        ({"schedule": {"warmup_epochs": 0.5}}, ConstantScheduleConfig(warmup_epochs=0.5)),
        ({"schedule": {"type": "multistep", "milestones": [3, 6]}},
         MultiStepScheduleConfig(milestones=[3, 6], gamma=0.1)),
    ],
)
def test_sub_tables(table: dict, expected: object) -> None:
    config = TrainConfig.model_validate(table)
    value = config.optimizer if "optimizer" in table else config.schedule
    assert value == expected


def test_config_is_frozen() -> None:
    with pytest.raises(ValidationError):
        TrainConfig().epochs = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # unknown fields, with a suggestion or the list of valid fields
        ("[train]\nepoch = 3\n",
         "net.toml:2: [train] epoch: unknown field; did you mean 'epochs'?"),
        ("[train]\n[train.optimizer]\nmomentun = 0.9\n",
         "net.toml:3: [train.optimizer] momentun: unknown field; did you mean 'momentum'?"),
        ("[train.optimizer]\ntype = 'sgd'\nbetas = [0.9, 0.99]\n",
         "net.toml:3: [train.optimizer] betas: unknown field; "
         "valid fields: type, lr, momentum, nesterov, weight_decay, decay_norms_and_biases"),
        ("[train.augment]\nmax_shfit = 2\n",
         "net.toml:2: [train.augment] max_shfit: unknown field; did you mean 'max_shift'?"),
        # out-of-range values
        ("[train.optimizer]\ntype = 'adam'\nlr = -0.1\n",
         "net.toml:3: [train.optimizer] lr: Input should be greater than 0 (got -0.1)"),
        ("[train]\nbatch_size = 0\n",
         "net.toml:2: [train] batch_size: Input should be greater than 0 (got 0)"),
        ("[train]\nlabel_smoothing = 1.0\n",
         "net.toml:2: [train] label_smoothing: Input should be less than 1 (got 1.0)"),
        ("[train.optimizer]\ntype = 'adamw'\nbetas = [0.9, 1.5]\n",
         "net.toml:3: [train.optimizer] betas[1]: Input should be less than 1 (got 1.5)"),
        ("[train.schedule]\ntype = 'multistep'\nmilestones = [5, 0]\n",
         "net.toml:3: [train.schedule] milestones[1]: Input should be greater than 0 (got 0)"),
        # wrong types
        ("[train]\nepochs = 'ten'\n",
         "net.toml:2: [train] epochs: Input should be a valid integer (got 'ten')"),
        ("[train]\nepochs = 2.5\n",
         "net.toml:2: [train] epochs: Input should be a valid integer (got 2.5)"),
        ("[train]\noptimizer = 'adam'\n",
         "net.toml:2: [train] optimizer: should be a table (got 'adam'): optimizer = { type = "
         "\"adam\", lr = 0.001 } in [train], or the same keys under [train.optimizer]"),
        ("[train]\nschedule = 'cosine'\n",
         "net.toml:2: [train] schedule: should be a table (got 'cosine'): schedule = { type = "
         "\"cosine\", warmup_epochs = 1 } in [train], or the same keys under [train.schedule]"),
        # the optimizer's and the schedule's settings written at the top of [train]
        ("[train]\nepochs = 3\nlr = 0.1\n",
         "net.toml:3: [train] lr: unknown field; did you mean optimizer.lr? The optimizer "
         "settings are a table: optimizer = { type = \"adam\", lr = 0.001 } in [train], or the "
         "same keys under [train.optimizer]"),
        ("[train]\nmomentum = 0.5\n",
         "net.toml:2: [train] momentum: unknown field; did you mean optimizer.momentum? The "
         "optimizer settings are a table: optimizer = { type = \"adam\", lr = 0.001 } in "
         "[train], or the same keys under [train.optimizer]"),
        ("[train]\nwarmup_epochs = 1\n",
         "net.toml:2: [train] warmup_epochs: unknown field; did you mean schedule.warmup_epochs? "
         "The schedule settings are a table: schedule = { type = \"cosine\", warmup_epochs = 1 "
         "} in [train], or the same keys under [train.schedule]"),
        # PyTorch's word for the kind of optimizer
        ("[train]\noptimizer = { name = 'adam', lr = 0.001 }\n",
         "net.toml:2: [train.optimizer] name: unknown field; did you mean 'type'? For example: "
         "optimizer = { type = \"adam\", lr = 0.001 } in [train], or the same keys under "
         "[train.optimizer]"),
        ("[train.optimizer]\ntype = 'rmsprop'\n",
         "net.toml:2: [train.optimizer] type: unknown optimizer type 'rmsprop'; valid types: "
         "sgd, adam, adamw. For example: optimizer = { type = \"adam\", lr = 0.001 } in "
         "[train], or the same keys under [train.optimizer]"),
        # unknown types and literals, with suggestions
        ("[train.optimizer]\nlr = 0.1\ntype = 'adamm'\n",
         "net.toml:3: [train.optimizer] type: unknown optimizer type 'adamm'; "
         "valid types: sgd, adam, adamw; did you mean 'adam'?"),
        ("[train.schedule]\ntype = 'cosin'\n",
         "net.toml:2: [train.schedule] type: unknown schedule type 'cosin'; "
         "valid types: constant, step, multistep, exponential, cosine; did you mean 'cosine'?"),
        ("[train.early_stopping]\nmonitor = 'val_acc'\n",
         "net.toml:2: [train.early_stopping] monitor: Input should be 'val_loss' or "
         "'val_accuracy' (got 'val_acc'); did you mean 'val_accuracy'?"),
        # cross-field rules
        ("[train.optimizer]\nmomentum = 0.0\nnesterov = true\n",
         "net.toml:3: [train.optimizer] nesterov: needs momentum > 0 (got momentum = 0)"),
        ("[train.schedule]\ntype = 'multistep'\nmilestones = [5, 3]\n",
         "net.toml:3: [train.schedule] milestones: must be strictly increasing (got [5, 3])"),
        ("[train]\nvalidation = 0\n[train.early_stopping]\npatience = 2\n",
         "net.toml:3: [train.early_stopping] monitor: needs a validation set; "
         "set validation > 0 in [train]"),
        ("[train.optimizer]\nlr = 0.01\n[train.schedule]\ntype = 'cosine'\nmin_lr = 0.1\n",
         "net.toml:5: [train.schedule] min_lr: must not exceed the optimizer lr (got 0.1 > 0.01)"),
        # a missing field is reported on its table's header
        ("[train]\nepochs = 3\n[train.schedule]\ntype = 'step'\n",
         "net.toml:3: [train.schedule] step_size: Field required"),
    ],
)
def test_errors(text: str, expected: str) -> None:
    error = _error(text)
    assert str(error) == expected
    (diagnostic,) = error.diagnostics
    assert diagnostic.file == "net.toml" and diagnostic.node is None


def test_all_problems_are_reported_together() -> None:
    error = _error("[train]\nepochs = 0\nseed = -1\n[train.optimizer]\nlr = 0\n")
    assert [d.line for d in error.diagnostics] == [2, 3, 5]
    assert isinstance(error, NetspecError)


def test_train_table_that_is_not_a_table() -> None:
    with pytest.raises(SpecError, match=r"^net.toml:1: \[train\] should be a table \(got 3\)$"):
        parse_train_config(3, file="net.toml", locate=lambda path: 1)


def test_line_falls_back_to_known_prefixes() -> None:
    seen: list[tuple[str, ...]] = []

    def locate(path: tuple[str, ...]) -> int | None:
        seen.append(path)
        return None

    with pytest.raises(SpecError) as info:
        parse_train_config({"optimizer": {"lr": 0}}, file=None, locate=locate)
    assert seen == [("train", "optimizer", "lr"), ("train", "optimizer"), ("train",)]
    assert info.value.diagnostics[0].line is None
    assert str(info.value) == "[train.optimizer] lr: Input should be greater than 0 (got 0)"


def test_overrides() -> None:
    config = _parse(FULL)
    changed = apply_overrides(config, epochs=3, batch_size=8, seed=7, validation=100, limit=1000,
                              lr=0.2, momentum=0.5, weight_decay=0.0, clip_grad_norm=None)
    assert (changed.epochs, changed.batch_size, changed.seed) == (3, 8, 7)
    assert (changed.validation, changed.limit, changed.clip_grad_norm) == (100, 1000, 1.0)
    assert changed.optimizer == SGDConfig(lr=0.2, momentum=0.5, nesterov=True, weight_decay=0)
    assert changed.schedule == config.schedule and config.epochs == 12
    assert apply_overrides(config) == config


def test_new_optimizer_type_starts_from_its_defaults() -> None:
    config = _parse(FULL)
    assert apply_overrides(config, optimizer="adam").optimizer == AdamConfig()
    assert apply_overrides(config, optimizer="adamw", lr=0.003).optimizer == AdamWConfig(lr=0.003)
    assert apply_overrides(config, optimizer="sgd").optimizer == config.optimizer


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"lr": -1.0}, "after overrides: [train.optimizer] lr: Input should be greater than 0 "
                       "(got -1.0)"),
        ({"optimizer": "adamm"},
         "after overrides: [train.optimizer] type: unknown optimizer type 'adamm'; "
         "valid types: sgd, adam, adamw; did you mean 'adam'?"),
        ({"optimizer": "adam", "momentum": 0.9},
         "after overrides: [train.optimizer] momentum: unknown field; "
         "valid fields: type, lr, betas, eps, weight_decay, decay_norms_and_biases"),
        ({"validation": 0}, "after overrides: [train.early_stopping] monitor: needs a validation "
                            "set; set validation > 0 in [train]"),
        ({"epochs": 0}, "after overrides: [train] epochs: Input should be greater than 0 (got 0)"),
    ],
)
def test_bad_overrides(overrides: dict, expected: str) -> None:
    with pytest.raises(SpecError) as info:
        apply_overrides(_parse(FULL), **overrides)
    assert str(info.value) == expected


def test_unknown_override_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        apply_overrides(TrainConfig(), epoch=3)  # type: ignore[call-arg]
