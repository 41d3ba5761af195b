"""The training loop on real MNIST: learning, reproducibility, exact resume, run directories,
best weights and early stopping.

Most tests train a tiny dropout MLP on a few hundred images for a few epochs (a fraction of a
second each); one trains LeNet-5 on a few thousand to check that training really learns.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

import netspec.train.loop as loop
from netspec.common.errors import NetspecError, SpecError, TrainingError, WeightsError
from netspec.lang.spec import SHIPPED_DIR
from netspec.train.loop import Callbacks, TrainingInterrupted, resume_run, start_run
from netspec.weights.checkpoint import read_checkpoint

VALIDATION = 100

# dropout and augmentation (shift and rotation) make every batch draw random numbers, so
# resuming only matches if each draw is derived from (seed, epoch, batch)
TINY = f"""\
[network]
name = "tiny"

[nodes.image]
op = "input"
shape = [1, 28, 28]

[nodes.flatten]
op = "flatten"

[nodes.fc1]
op = "linear"
out_features = 32

[nodes.relu]
op = "relu"

[nodes.drop]
op = "dropout"
p = 0.3

[nodes.fc2]
op = "linear"
out_features = 10

[train]
epochs = 2
batch_size = 50
seed = 3
validation = {VALIDATION}
limit = 600

[train.optimizer]
type = "adam"
lr = 0.003

[train.augment]
max_shift = 2
max_rotation = 10.0
"""


def files(run: Path) -> dict[str, bytes]:
    """Every file of a run directory (its tensorboard/ folder too) by relative path."""
    return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}


def write_spec(directory: Path, text: str = TINY, name: str = "tiny.toml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def metrics(history: list[dict]) -> list[dict]:
    """History records without wall-clock time, which no two runs share."""
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def weights(path: Path) -> dict[str, np.ndarray]:
    checkpoint = read_checkpoint(path)
    return {**checkpoint.params, **checkpoint.buffers}


def assert_same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def start_stopping_at(epoch: int, batch: int, spec: Path, run_dir: Path,
                      **kwargs) -> loop.Trainer:
    """A new run's trainer that asks itself to stop once ``batch`` batches of ``epoch`` are
    done, as Ctrl-C does (the signal handler only sets the flag)."""
    trainer = start_run(spec, run_dir, **kwargs)

    def on_batch(progress: loop.BatchProgress) -> None:
        if (progress.epoch, progress.batch) == (epoch, batch):
            trainer._stop_requested = True

    trainer.callbacks.on_batch = on_batch
    return trainer


def lenet5_architecture() -> str:
    """The shipped LeNet-5 nodes without the shipped recipe, which is tuned for full runs."""
    text = (SHIPPED_DIR / "lenet5.toml").read_text(encoding="utf-8")
    recipe = re.search(r"^\[train", text, re.MULTILINE)
    return text[: recipe.start()] if recipe else text


def test_lenet5_learns_mnist_in_one_epoch(tmp_path, mnist_dir):
    spec = write_spec(tmp_path, lenet5_architecture() + """
[train]
epochs = 1
batch_size = 32
seed = 0
validation = 500
limit = 5500

[train.optimizer]
type = "sgd"
lr = 0.01
momentum = 0.9
""", name="lenet5.toml")
    result = start_run(spec, tmp_path / "run", data_dir=mnist_dir).run()
    assert len(result.test.labels) == 10_000
    assert result.test.accuracy > 0.90
    assert result.history[0]["val_accuracy"] > 0.85


OPTIMIZERS = {"adam": {"optimizer": "adam", "lr": 0.003},
              "sgd": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9}}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, mnist_dir):
    """The uninterrupted run of the tiny spec with each optimizer, made once per module."""
    runs: dict[str, tuple[Path, loop.TrainResult]] = {}

    def run(optimizer: str) -> tuple[Path, loop.TrainResult]:
        if optimizer not in runs:
            directory = tmp_path_factory.mktemp(f"straight-{optimizer}")
            result = start_run(write_spec(directory), directory / "run", data_dir=mnist_dir,
                               overrides=OPTIMIZERS[optimizer]).run()
            runs[optimizer] = directory / "run", result
        return runs[optimizer]

    return run


def test_same_seed_same_run_other_seed_other_run(tmp_path, mnist_dir, uninterrupted):
    first_dir, first = uninterrupted("adam")
    spec = write_spec(tmp_path)
    again = start_run(spec, tmp_path / "again", data_dir=mnist_dir).run()
    other = start_run(spec, tmp_path / "other", data_dir=mnist_dir, overrides={"seed": 4}).run()

    assert metrics(first.history) == metrics(again.history)
    assert_same_arrays(weights(first_dir / "last.npz"), weights(tmp_path / "again/last.npz"))
    assert first.test.accuracy == again.test.accuracy

    assert metrics(first.history) != metrics(other.history)
    assert not np.array_equal(weights(first_dir / "last.npz")["fc1.weight"],
                              weights(tmp_path / "other/last.npz")["fc1.weight"])


@pytest.mark.parametrize(("optimizer", "epoch", "batch"), [
    ("adam", 1, 5),   # mid-epoch: partial loss sums and the shuffled order carry over
    ("sgd", 1, 5),
    ("sgd", 1, 12),   # after the last batch: the stop lands at batch 0 of epoch 2
    ("adam", 2, 1),   # right after a finished epoch's checkpoint
])
def test_resume_after_stop_matches_uninterrupted_run(tmp_path, mnist_dir, uninterrupted,
                                                     optimizer, epoch, batch):
    straight_dir, straight = uninterrupted(optimizer)
    trainer = start_stopping_at(epoch, batch, write_spec(tmp_path), tmp_path / "stopped",
                                data_dir=mnist_dir, overrides=OPTIMIZERS[optimizer])
    with pytest.raises(TrainingInterrupted, match="netspec train --resume"):
        trainer.run()
    position = read_checkpoint(tmp_path / "stopped/last.npz").meta["state"]
    assert (position["epoch"], position["batch"]) == ((epoch - 1, batch) if batch < 12
                                                      else (epoch, 0))
    assert len(position["history"]) == position["epoch"]

    resumed = resume_run(tmp_path / "stopped", data_dir=mnist_dir)
    assert resumed.config == trainer.config
    finished = resumed.run()

    assert metrics(finished.history) == metrics(straight.history)
    for name in ("last.npz", "best.npz"):
        assert_same_arrays(weights(straight_dir / name), weights(tmp_path / "stopped" / name))
    assert_same_arrays(read_checkpoint(straight_dir / "last.npz").optimizer,
                       read_checkpoint(tmp_path / "stopped/last.npz").optimizer)
    assert finished.test.accuracy == straight.test.accuracy
    assert json.loads((tmp_path / "stopped/history.json").read_text()) == finished.history


def test_stopped_run_accounts_for_time_before_the_stop(tmp_path, mnist_dir):
    trainer = start_stopping_at(1, 6, write_spec(tmp_path), tmp_path / "run",
                                data_dir=mnist_dir)
    with pytest.raises(TrainingInterrupted):
        trainer.run()
    assert read_checkpoint(tmp_path / "run/last.npz").meta["state"]["seconds"] > 0


def test_run_directory_contents(tmp_path, mnist_dir):
    spec = write_spec(tmp_path)
    run = tmp_path / "run"
    epochs_seen: list[dict] = []
    result = start_run(spec, run, data_dir=mnist_dir,
                       callbacks=Callbacks(on_epoch=epochs_seen.append)).run()

    # tensorboard/: the event files, with the tensorboard extra (tests/test_runs.py)
    assert sorted(p.name for p in run.iterdir() if p.name != "tensorboard") == [
        "best.npz", "config.json", "history.json", "last.npz", "metrics.csv", "result.json",
        "spec.toml"]
    assert (run / "spec.toml").read_text(encoding="utf-8") == TINY
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["optimizer"] == {"type": "adam", "lr": 0.003, "betas": [0.9, 0.999],
                                             "eps": 1e-8, "weight_decay": 0.0,
                                             "decay_norms_and_biases": True}
    assert config["dtype"] == "float32"

    history = json.loads((run / "history.json").read_text())
    assert history == result.history == epochs_seen
    assert [r["epoch"] for r in history] == [1, 2]
    for record in history:
        assert set(record) == {"epoch", "train_loss", "train_accuracy", "val_loss",
                               "val_accuracy", "lr", "seconds"}
        assert 0 < record["train_loss"] < 5 and 0 < record["val_loss"] < 5
        assert 0.1 < record["train_accuracy"] <= 1 and 0.1 < record["val_accuracy"] <= 1
        assert record["lr"] == 0.003 and record["seconds"] > 0

    saved = json.loads((run / "result.json").read_text())
    assert saved["test"]["accuracy"] == result.test.accuracy > 0.5
    assert np.array(saved["test"]["confusion"]).sum() == 10_000
    assert len(saved["test"]["per_class_accuracy"]) == 10
    assert saved["epochs_run"] == 2 and saved["stopped_early"] is False
    assert saved["train_seconds"] == pytest.approx(sum(r["seconds"] for r in history))

    meta = read_checkpoint(run / "last.npz").meta
    assert meta["spec"] == "tiny" and meta["state"]["finished"] is True
    assert 0 < meta["mean"] < 1 and 0 < meta["std"] < 1


def test_without_a_validation_set_the_last_epoch_is_the_best(tmp_path, mnist_dir):
    result = start_run(write_spec(tmp_path), tmp_path / "run", data_dir=mnist_dir,
                       overrides={"validation": 0, "limit": 300}).run()
    assert [(r["val_loss"], r["val_accuracy"]) for r in result.history] == [(None, None)] * 2
    assert result.best_epoch == 2
    assert_same_arrays(weights(tmp_path / "run/best.npz"), weights(tmp_path / "run/last.npz"))


def scripted_validation(monkeypatch, values: list[tuple[float, float]]) -> None:
    """Make validation report ``values`` (loss, accuracy) epoch after epoch; training and the
    test evaluation stay real."""
    real = loop.evaluate
    queue = iter(values)

    def evaluate(net, x, labels, *args, **kwargs):
        result = real(net, x, labels, *args, **kwargs)
        if len(labels) != VALIDATION:
            return result
        loss, accuracy = next(queue)
        return dataclasses.replace(result, loss=loss, accuracy=accuracy)

    monkeypatch.setattr(loop, "evaluate", evaluate)


def test_best_npz_holds_the_best_validation_epoch(tmp_path, mnist_dir, monkeypatch):
    scripted_validation(monkeypatch, [(1.0, 0.5), (0.8, 0.7), (0.7, 0.6)])
    snapshots: list[dict[str, np.ndarray]] = []
    trainer = start_run(write_spec(tmp_path), tmp_path / "run", data_dir=mnist_dir,
                        overrides={"epochs": 3, "limit": 200})
    trainer.callbacks.on_epoch = lambda record: snapshots.append(
        {k: v.copy() for k, v in trainer.net.params.items()})
    result = trainer.run()

    # without [train.early_stopping] the best epoch is the one of highest validation accuracy
    accuracies = [r["val_accuracy"] for r in result.history]
    best = accuracies.index(max(accuracies)) + 1
    assert best == result.best_epoch == 2
    assert_same_arrays(read_checkpoint(tmp_path / "run/best.npz").params, snapshots[best - 1])
    assert_same_arrays(read_checkpoint(tmp_path / "run/last.npz").params, snapshots[-1])
    assert json.loads((tmp_path / "run/result.json").read_text())["best_epoch"] == 2
    # the test evaluation is of the best weights, not the last
    assert_same_arrays(trainer.net.params, snapshots[best - 1])


@pytest.mark.parametrize(("stopping", "losses", "epochs", "epochs_run", "best_epoch",
                          "stopped_early"), [
    ("patience = 2", [1.0, 1.1, 1.2], 10, 3, 1, True),
    ("patience = 2", [1.0, 0.9, 0.95, 0.8, 0.85, 0.9], 10, 6, 4, True),
    ("patience = 2\nmin_delta = 0.05", [1.0, 0.97, 0.96], 10, 3, 1, True),
    ("patience = 1", [1.0, 1.0], 10, 2, 1, True),  # equal is not better
    ("patience = 3", [1.0, 0.9, 0.8, 0.7], 4, 4, 4, False),
    ("patience = 2", [1.0, 1.1], 2, 2, 1, False),  # the epochs run out first
])
def test_early_stopping_on_validation_loss(tmp_path, mnist_dir, monkeypatch, stopping, losses,
                                           epochs, epochs_run, best_epoch, stopped_early):
    # the scripted values run out if the loop validates more often than expected
    scripted_validation(monkeypatch, [(loss, 0.5) for loss in losses])
    spec = write_spec(tmp_path, TINY.replace("epochs = 2", f"epochs = {epochs}")
                      + f"\n[train.early_stopping]\nmonitor = \"val_loss\"\n{stopping}\n")
    result = start_run(spec, tmp_path / "run", data_dir=mnist_dir,
                       overrides={"limit": 200}).run()
    assert len(result.history) == epochs_run
    assert result.best_epoch == best_epoch
    assert result.stopped_early is stopped_early
    saved = json.loads((tmp_path / "run/result.json").read_text())
    assert (saved["epochs_run"], saved["best_epoch"], saved["stopped_early"]) == (
        epochs_run, best_epoch, stopped_early)


def test_early_stopping_on_validation_accuracy(tmp_path, mnist_dir, monkeypatch):
    scripted_validation(monkeypatch, [(1.0, 0.5), (2.0, 0.6), (0.1, 0.6), (0.1, 0.55)])
    spec = write_spec(tmp_path, TINY.replace("epochs = 2", "epochs = 10")
                      + '\n[train.early_stopping]\nmonitor = "val_accuracy"\npatience = 2\n')
    result = start_run(spec, tmp_path / "run", data_dir=mnist_dir,
                       overrides={"limit": 200}).run()
    assert (len(result.history), result.best_epoch, result.stopped_early) == (4, 2, True)


def test_an_existing_run_is_never_overwritten(tmp_path, mnist_dir):
    spec = write_spec(tmp_path)
    run = tmp_path / "run"
    start_run(spec, run, data_dir=mnist_dir).run()
    before = files(run)
    with pytest.raises(NetspecError, match=r"already holds a run; continue it with --resume"):
        start_run(spec, run, data_dir=mnist_dir, overrides={"seed": 9})
    assert files(run) == before


@pytest.mark.parametrize(("setup", "message"), [
    (lambda d: None, r"is not a resumable run: spec.toml is missing"),
    (lambda d: (d / "spec.toml").write_text(TINY), r"is not a resumable run: config.json is "),
    (lambda d: ((d / "spec.toml").write_text(TINY), (d / "config.json").write_text("{}")),
     r"is not a resumable run: last.npz is missing"),
])
def test_resume_refuses_a_directory_that_is_not_a_run(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(NetspecError, match=message):
        resume_run(tmp_path)


@pytest.mark.parametrize(("damage", "error", "message"), [
    (lambda d: (d / "config.json").write_text("{not json"), NetspecError,
     r"config.json is corrupt"),
    # one line naming the setting, not pydantic's multi-line report
    (lambda d: (d / "config.json").write_text('{"config": {"epochs": 0}}'), NetspecError,
     r"config.json is corrupt: \[train\] epochs: Input should be greater than 0 \(got 0\)$"),
    (lambda d: (d / "last.npz").write_bytes(b"PK\x03\x04 truncated"), WeightsError,
     r"last.npz: not a netspec weights file"),
])
def test_resume_reports_a_damaged_run(tmp_path, mnist_dir, damage, error, message):
    trainer = start_stopping_at(1, 2, write_spec(tmp_path), tmp_path / "run",
                                data_dir=mnist_dir)
    with pytest.raises(TrainingInterrupted):
        trainer.run()
    damage(tmp_path / "run")
    with pytest.raises(error, match=message):
        resume_run(tmp_path / "run", data_dir=mnist_dir)


@pytest.mark.parametrize(("change", "line", "message"), [
    (("batch_size = 50", "batch_size = 0"), 28, r"\[train\] batch_size: .*greater than 0"),
    (('type = "adam"', 'type = "adma"'), 34, r"unknown optimizer type 'adma'.*did you mean "
                                             r"'adam'"),
    (("lr = 0.003", "lr = -1.0"), 35, r"\[train.optimizer\] lr: .*greater than 0"),
    (("limit = 600", "limt = 600"), 31, r"\[train\] limt: unknown field; did you mean 'limit'"),
    (("max_shift = 2", 'max_shift = "2"'), 38, r"\[train.augment\] max_shift: .*integer"),
])
def test_bad_train_values_point_at_the_spec_line(tmp_path, change, line, message):
    spec = write_spec(tmp_path, TINY.replace(*change))
    assert spec.read_text().splitlines()[line - 1] == change[1]
    with pytest.raises(SpecError, match=message) as caught:
        start_run(spec, tmp_path / "run")
    assert str(caught.value).startswith(f"{spec}:{line}: ")
    assert not (tmp_path / "run").exists()


def test_a_validation_set_as_large_as_the_data_is_refused_before_any_file_is_written(
        tmp_path, mnist_dir):
    # limit counts the training images: the validation images are taken besides them, so
    # only the whole data set can be too small
    with pytest.raises(TrainingError, match=r"validation = 60000 leaves no training images "
                                            r"out of the 60000 of mnist"):
        start_run(write_spec(tmp_path), tmp_path / "run", data_dir=mnist_dir,
                  overrides={"validation": 60000})
    assert not (tmp_path / "run").exists()


ADVICE = (r"Try a lower learning rate \(--lr\), gradient clipping \(clip_grad_norm in "
          r"\[train\]\), or a warmup \(warmup_epochs in \[train.schedule\]\)$")


def test_divergence_in_the_first_epoch_stops_with_advice(tmp_path, mnist_dir):
    with pytest.raises(TrainingError, match=r"^training diverged at epoch 1, batch \d+: .* No "
                                            r"checkpoint had been saved yet. " + ADVICE):
        start_run(write_spec(tmp_path), tmp_path / "run", data_dir=mnist_dir,
                  overrides={"optimizer": "sgd", "lr": 1e30}).run()


def test_divergence_later_points_at_the_last_checkpoint(tmp_path, mnist_dir):
    trainer = start_run(write_spec(tmp_path), tmp_path / "run", data_dir=mnist_dir)

    def poison(record: dict) -> None:
        trainer.net.params["fc2.weight"][0, 0] = np.inf

    trainer.callbacks.on_epoch = poison
    last = re.escape(str(tmp_path / "run/last.npz"))
    expected = (r"^training diverged at epoch 2, batch 0: the loss is nan; node 'fc2' "
                r"\(linear\) was the first whose output is not finite. The last good weights "
                rf"are in {last} \(the last checkpoint\). " + ADVICE)
    with pytest.raises(TrainingError, match=expected):
        trainer.run()


def test_a_spec_reached_through_a_symlink_is_copied_into_the_run(tmp_path, mnist_dir):
    (tmp_path / "specs").mkdir()
    target = write_spec(tmp_path / "specs", name="real.toml")
    link = tmp_path / "link.toml"
    link.symlink_to(target)
    trainer = start_stopping_at(1, 1, link, tmp_path / "run", data_dir=mnist_dir)
    with pytest.raises(TrainingInterrupted):
        trainer.run()
    assert (tmp_path / "run/spec.toml").read_text(encoding="utf-8") == TINY
    assert len(resume_run(tmp_path / "run", data_dir=mnist_dir).run().history) == 2


def test_a_non_finite_gradient_names_its_parameter(tmp_path, mnist_dir):
    from netspec.train.health import first_nonfinite_gradient, first_nonfinite_output

    trainer = start_run(write_spec(tmp_path), tmp_path / "run", data_dir=mnist_dir)
    net = trainer.net
    x = np.zeros((2, 1, 28, 28), dtype=np.float32)
    assert first_nonfinite_output(net, x, np.random.default_rng(0)) is None
    net.params["fc2.weight"][0, 0] = np.nan
    assert first_nonfinite_output(net, x, np.random.default_rng(0)) == "fc2"
    net.grads.update({key: np.zeros_like(value) for key, value in net.params.items()})
    assert first_nonfinite_gradient(net) is None
    net.grads["fc2.bias"][0] = np.inf
    assert first_nonfinite_gradient(net) == "fc2.bias"


def test_limit_counts_the_training_images(tmp_path, mnist_dir):
    """``--limit N`` trains on N images, as its help says; validation is held out besides."""
    trainer = start_run(write_spec(tmp_path), tmp_path / "run", data_dir=mnist_dir,
                        overrides={"limit": 250, "validation": 50})
    assert (len(trainer.splits.train_images), len(trainer.splits.val_images)) == (250, 50)
    # the first limit + validation images of the set, split between the two
    seen = np.concatenate([trainer.splits.train_labels, trainer.splits.val_labels])
    first = trainer.data.train_labels[:300]
    assert sorted(seen.tolist()) == sorted(first.tolist())
