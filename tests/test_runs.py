"""A run keeps its story: ``metrics.csv``, TensorBoard events, provenance in ``config.json``,
``netspec runs`` (list and compare), ``--resume`` keeping the run's options, and Ctrl-C
during the final test pass."""

from __future__ import annotations

import csv
import importlib.util
import json
import platform
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_cli_train import interrupt_at, run_cli

from netspec.common.version import __version__
from netspec.train import loop
from netspec.train.runlog import METRICS_COLUMNS, cpu_model, read_metrics

# a small convolutional network (so that the report has filters) with a quick recipe
CONV_SPEC = """\
[network]
name = "small_conv"

[nodes]
image = { op = "input", shape = [1, 28, 28] }
conv = { op = "conv2d", out_channels = 4, kernel_size = 5 }
relu = { op = "relu" }
pool = { op = "maxpool2d", kernel_size = 4 }
flatten = { op = "flatten" }
fc = { op = "linear", out_features = 10 }

[train]
epochs = 2
batch_size = 50
seed = 1
validation = 100
limit = 500

[train.optimizer]
type = "adam"
lr = 0.003
"""


def write_conv_spec(directory: Path) -> Path:
    path = directory / "small_conv.toml"
    path.write_text(CONV_SPEC, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory, mnist_dir) -> Path:
    """A directory of runs holding one finished run, ``a``, trained through the CLI."""
    directory = tmp_path_factory.mktemp("runs")
    spec = write_conv_spec(directory)
    code, _, err = run_cli("train", spec, "--out", directory / "runs" / "a", "--data-dir",
                           mnist_dir, "--no-plots")
    assert code == 0, err
    return directory / "runs"


def test_metrics_csv_has_one_row_per_epoch_matching_the_history(runs_dir):
    run = runs_dir / "a"
    with open(run / "metrics.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == METRICS_COLUMNS
    history = json.loads((run / "history.json").read_text())
    assert len(rows) == 1 + len(history) == 3
    for row, record in zip(read_metrics(run), history, strict=True):
        for column in METRICS_COLUMNS:
            assert row[column] == pytest.approx(record[column], rel=1e-12), column


def test_config_records_versions_command_host_and_start(runs_dir):
    saved = json.loads((runs_dir / "a" / "config.json").read_text())
    record = saved["provenance"]
    assert record["netspec"] == __version__
    assert record["numpy"] == np.__version__
    assert record["python"] == platform.python_version()
    assert record["command"][:2] == ["netspec", "train"]
    assert "--no-plots" in record["command"]
    assert record["cpu"] == cpu_model() and record["cpu"]
    assert isinstance(record["cpu_threads"], int) and record["cpu_threads"] >= 1
    assert "blas_threads" in record
    from datetime import datetime

    started = datetime.fromisoformat(record["started"])
    assert started.tzinfo is not None
    assert saved["options"] == {"plots": False}


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                    reason="the tensorboard extra is not installed (pip install tensorboard)")
def test_tensorboard_events_hold_loss_accuracy_and_learning_rate(runs_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(runs_dir / "a" / "tensorboard"))
    events.Reload()
    history = json.loads((runs_dir / "a" / "history.json").read_text())
    tags = {"loss/train": "train_loss", "loss/validation": "val_loss",
            "accuracy/train": "train_accuracy", "accuracy/validation": "val_accuracy",
            "learning_rate": "lr"}
    assert set(tags) <= set(events.Tags()["tensors"]) | set(events.Tags()["scalars"])
    for tag, key in tags.items():
        values = {event.step: float(np.frombuffer(event.tensor_proto.tensor_content,
                                                  dtype=np.float32)[0])
                  if event.tensor_proto.tensor_content else event.tensor_proto.float_val[0]
                  for event in events.Tensors(tag)}
        assert values == pytest.approx({r["epoch"]: r[key] for r in history}, rel=1e-6), tag


def test_without_tensorboard_a_run_writes_no_event_files(tmp_path, mnist_dir, monkeypatch):
    from netspec.train import runlog

    monkeypatch.setattr(runlog, "_tensorboard_writer", lambda: None)
    code, _, err = run_cli("train", write_conv_spec(tmp_path), "--out", tmp_path / "run",
                           "--data-dir", mnist_dir, "--no-plots", "--epochs", 1)
    assert code == 0, err
    assert not (tmp_path / "run" / "tensorboard").exists()
    assert (tmp_path / "run" / "metrics.csv").is_file()


def test_runs_lists_each_run_with_its_status(runs_dir, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(runs_dir / "a", root / "a")
    # an interrupted run: no result yet
    shutil.copytree(runs_dir / "a", root / "b")
    (root / "b" / "result.json").unlink()
    (root / "not-a-run").mkdir()
    code, out, err = run_cli("runs", root)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["run", "architecture", "data", "epochs", "best", "val", "test",
                                "acc", "time", "status"]
    result = json.loads((root / "a" / "result.json").read_text())
    best = max(r["val_accuracy"] for r in json.loads((root / "a" / "history.json").read_text()))
    row_a = next(line for line in lines if line.startswith("a "))
    assert row_a.split()[:4] == ["a", "small_conv", "mnist", "2/2"]
    assert f"{100 * best:.2f}%" in row_a
    assert f"{100 * result['test']['accuracy']:.2f}%" in row_a
    assert row_a.endswith("finished")
    row_b = next(line for line in lines if line.startswith("b "))
    assert row_b.endswith("interrupted")
    assert not any(line.startswith("not-a-run") for line in lines)


def test_runs_compares_two_runs_and_names_the_settings_that_differ(runs_dir, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(runs_dir / "a", a)
    shutil.copytree(runs_dir / "a", b)
    saved = json.loads((b / "config.json").read_text())
    saved["config"]["optimizer"]["lr"] = 0.01
    (b / "config.json").write_text(json.dumps(saved))
    code, out, err = run_cli("runs", a, b)
    assert code == 0, err
    assert "settings that differ:" in out
    changed = next(line for line in out.splitlines() if line.startswith("optimizer.lr"))
    assert changed.split() == ["optimizer.lr", "0.003", "0.01"]
    assert "validation accuracy by epoch:" in out


def test_runs_of_a_missing_directory_is_one_line(tmp_path):
    code, _, err = run_cli("runs", tmp_path / "nothing")
    assert code == 1
    assert err.strip() == f"netspec runs: error: {tmp_path / 'nothing'}: no such directory"
    code, _, err = run_cli("runs", tmp_path, tmp_path / "x")
    assert code == 1 and "is not a run directory" in err


def test_resume_keeps_no_plots(tmp_path, mnist_dir, monkeypatch):
    run = tmp_path / "run"
    interrupt_at(monkeypatch, 3)
    code, _, err = run_cli("train", write_conv_spec(tmp_path), "--out", run, "--data-dir",
                           mnist_dir, "--no-plots")
    assert code == 130, err
    monkeypatch.undo()
    code, out, err = run_cli("train", "--resume", run, "--data-dir", mnist_dir)
    assert code == 0, err
    assert (run / "result.json").is_file()
    assert not list(run.glob("*.png")) and not (run / "report.html").exists()
    assert "plots:" not in out and "report:" not in out


def test_ctrl_c_during_the_final_test_pass_says_how_to_resume(tmp_path, mnist_dir,
                                                              monkeypatch):
    run = tmp_path / "run"
    real_evaluate = loop.Trainer._evaluate

    def evaluate(self, x, labels):
        if len(labels) == len(self.data.test_labels):  # the test set, after the last epoch
            raise KeyboardInterrupt
        return real_evaluate(self, x, labels)

    monkeypatch.setattr(loop.Trainer, "_evaluate", evaluate)
    code, _, err = run_cli("train", write_conv_spec(tmp_path), "--out", run, "--data-dir",
                           mnist_dir, "--no-plots")
    assert code == 130
    assert err.endswith(f"\ninterrupted: stopped during the final test evaluation, after all 2 "
                   f"epochs (saved in {run / 'last.npz'}); finish with: netspec train "
                   f"--resume {run}\n")
    assert not (run / "result.json").exists()
    monkeypatch.undo()
    code, out, err = run_cli("train", "--resume", run, "--data-dir", mnist_dir)
    assert code == 0, err
    assert out.startswith(f"resuming {run} at epoch 3, batch 0\n")
    assert json.loads((run / "result.json").read_text())["epochs_run"] == 2
