"""What a training run shows: elapsed time and ETA in each epoch's progress, the run's ETA in
the epoch line, the best epoch marked, accuracy in percent, a readable learning rate; colour
on a terminal, none when piped or with NO_COLOR."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from netspec.cli import progress as progress_module
from netspec.cli.progress import (
    ProgressLine,
    TrainingDisplay,
    colour_wanted,
    duration,
    percent,
    readable_lr,
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("fraction", "shown"), [(0.9943, "99.43%"), (1.0, "100.00%"),
                                                 (0.0, "0.00%"), (0.12345, "12.35%")])
def test_accuracy_is_a_percentage(fraction, shown):
    assert percent(fraction) == shown


@pytest.mark.parametrize(("lr", "shown"), [(0.05, "0.05"), (0.1, "0.1"), (0.0482963, "0.0483"),
                                           (0.0001204, "1.20e-04"), (3e-7, "3.00e-07"),
                                           (0.0, "0"), (1.5, "1.5")])
def test_the_learning_rate_is_readable(lr, shown):
    assert readable_lr(lr) == shown


@pytest.mark.parametrize(("seconds", "shown"), [(0.4, "0s"), (42.2, "42s"), (185, "3m05s"),
                                                (3725, "1h02m")])
def test_durations(seconds, shown):
    assert duration(seconds) == shown


def batch(epoch: int, batch_number: int, seconds: float, epochs: int = 3, batches: int = 20):
    return SimpleNamespace(epoch=epoch, epochs=epochs, batch=batch_number, batches=batches,
                           loss=0.25, accuracy=0.9512, samples_per_second=1234.0, lr=0.05,
                           seconds=seconds)


def record(epoch: int, val_accuracy: float | None = 0.981) -> dict:
    return {"epoch": epoch, "train_loss": 0.1, "train_accuracy": 0.97, "lr": 0.0001204,
            "val_loss": None if val_accuracy is None else 0.07, "val_accuracy": val_accuracy,
            "seconds": 9.5}


def test_progress_shows_elapsed_time_and_the_epochs_eta(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    err = Terminal()
    display = TrainingDisplay(ProgressLine(err), out=io.StringIO())
    display.on_batch(batch(1, 5, seconds=10.0))
    shown = err.getvalue().rsplit("\r\x1b[2K", 1)[-1]
    assert shown.endswith("epoch 1/3 batch 5/20 loss 0.2500 acc 95.12% 1,234 img/s lr 0.05 "
                          "10s elapsed, ETA 30s")


def test_the_epoch_line_marks_the_best_epoch_and_gives_the_runs_eta(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    now = {"s": 100.0}
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now["s"])
    out = io.StringIO()
    display = TrainingDisplay(ProgressLine(io.StringIO()), out=out)
    best = {"epoch": 1}
    display.best_epoch = lambda: best["epoch"]
    display.on_batch(batch(1, 1, seconds=0.5))  # the epoch began at 99.5 s
    now["s"] = 112.0
    display.on_epoch(record(1))  # 12.5 s an epoch: 25 s for the two left
    now["s"] = 124.0
    display.on_epoch(record(2, 0.975))  # epoch 2 is no better; 12.25 s an epoch
    best["epoch"], now["s"] = 3, 136.0
    display.on_epoch(record(3, 0.99))  # the last: no ETA
    lines = out.getvalue().splitlines()
    assert lines == [
        "epoch   1: train loss 0.1000 acc 97.00% | val loss 0.0700 val acc 98.10% * best | "
        "lr 1.20e-04 | 9.5s | ETA 25s for 2 more epochs",
        "epoch   2: train loss 0.1000 acc 97.00% | val loss 0.0700 val acc 97.50% | "
        "lr 1.20e-04 | 9.5s | ETA 12s for 1 more epoch",
        "epoch   3: train loss 0.1000 acc 97.00% | val loss 0.0700 val acc 99.00% * best | "
        "lr 1.20e-04 | 9.5s",
    ]


def test_without_a_validation_set_nothing_is_marked(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    out = io.StringIO()
    display = TrainingDisplay(ProgressLine(io.StringIO()), out=out)
    display.best_epoch = lambda: 1
    display.on_epoch(record(1, None))
    assert out.getvalue() == ("epoch   1: train loss 0.1000 acc 97.00% | no validation set | "
                              "lr 1.20e-04 | 9.5s\n")


def test_colour_on_a_terminal_only(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert colour_wanted(Terminal()) and not colour_wanted(io.StringIO())
    out, err = Terminal(), Terminal()
    display = TrainingDisplay(ProgressLine(err), out=out)
    display.best_epoch = lambda: 1
    display.on_batch(batch(1, 5, seconds=10.0))
    display.on_epoch(record(1))
    assert "\x1b[32m98.10%\x1b[0m" in out.getvalue() and "\x1b[32m * best\x1b[0m" in out.getvalue()
    assert "\x1b[1mepoch   1\x1b[0m" in out.getvalue()
    assert "\x1b[2m10s elapsed, ETA 30s\x1b[0m" in err.getvalue()
    for variable, value in (("NO_COLOR", "1"), ("TERM", "dumb")):
        monkeypatch.setenv(variable, value)
        assert not colour_wanted(Terminal())
        monkeypatch.delenv(variable)
    monkeypatch.setenv("NO_COLOR", "")  # set but empty: no-color.org says colour stays
    assert colour_wanted(Terminal())
