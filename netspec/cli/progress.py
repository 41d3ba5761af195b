"""Progress display for long work: a one-line bar on a terminal, sparse lines otherwise."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


class ProgressLine:
    """Redraws one status line at most every ``interval`` seconds."""

    def __init__(self, stream: TextIO | None = None, interval: float = 0.2, width: int = 24):
        # looked up per instance: sys.stderr may have been replaced since import
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.interval = interval if self.interactive else 10.0
        self.width = width
        # the monotonic clock may start near zero at boot: the first update always shows
        self._last = -math.inf
        self._shown = False

    def update(self, done: float, total: float | None, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        if total:
            filled = int(self.width * min(done / total, 1.0))
            bar = "[" + "#" * filled + "." * (self.width - filled) + "] "
        else:
            bar = ""
        line = f"{bar}{text}"
        if self.interactive:
            self.stream.write("\r\x1b[2K" + line)
            self._shown = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.interactive and self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._shown = False

    def finish(self) -> None:
        """Keep the line drawn last, ended with its newline (the next line starts below)."""
        if self.interactive and self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


class DownloadReport:
    """What a download tells the terminal: a bar per file, ended with its newline once the
    file is complete, and each step (the source tried, a failure and what comes next, where
    the files went) on a line of its own. :mod:`netspec.data.download` calls it."""

    def __init__(self, line: ProgressLine):
        self.line = line

    def __call__(self, name: str, done: int, total: int | None) -> None:
        size = f"{done / 2**20:.1f}" + (f"/{total / 2**20:.1f}" if total else "") + " MiB"
        complete = total is not None and done == total
        self.line.update(done, total, f"downloading {name}: {size}", force=complete)
        if complete:
            self.line.finish()

    def note(self, message: str) -> None:
        self.line.finish()
        self.line.stream.write(message + "\n")
        self.line.stream.flush()


def download_progress(line: ProgressLine) -> DownloadReport:
    """A data-download callback that draws on ``line``."""
    return DownloadReport(line)


def colour_wanted(stream: TextIO) -> bool:
    """Colour for a terminal that shows it; none when piped, with NO_COLOR set (any value,
    https://no-color.org) or on a dumb terminal."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("NO_COLOR") and \
        os.environ.get("TERM") != "dumb"


class Palette:
    """ANSI styles, or plain text when colour is off."""

    _CODES = {"bold": "1", "dim": "2", "green": "32", "yellow": "33", "cyan": "36"}

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __getattr__(self, style: str) -> Callable[[str], str]:
        code = self._CODES.get(style)
        if code is None:
            raise AttributeError(style)
        if not self.enabled:
            return str
        return lambda text: f"\x1b[{code}m{text}\x1b[0m"


def percent(fraction: float) -> str:
    """An accuracy as people read it: ``0.99431`` -> ``99.43%``."""
    return f"{100 * fraction:.2f}%"


def readable_lr(lr: float) -> str:
    """A learning rate without a wall of digits: 0.05, 0.00347, 1.20e-04."""
    if lr == 0 or 1e-3 <= abs(lr) < 1e4:
        return f"{lr:.3g}"
    return f"{lr:.2e}"


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class TrainingDisplay:
    """What a training run shows: a progress line per epoch with the elapsed time and the
    epoch's ETA, then one line per epoch with accuracies in percent, a readable lr, the best
    epoch so far marked and an ETA for the run. Colour where the terminal has it."""

    def __init__(self, line: ProgressLine, out: TextIO | None = None):
        self.line = line
        self.out = out or sys.stdout
        self.colour = Palette(colour_wanted(self.out))
        self.bar_colour = Palette(colour_wanted(line.stream))
        # set once the trainer exists: the epoch its rule (the monitored figure) calls best
        self.best_epoch: Callable[[], int] | None = None
        self._epoch_started: float | None = None
        self._epoch_walls: list[float] = []
        self._epochs = 0

    def on_batch(self, progress: Any) -> None:
        """``progress``: a :class:`netspec.train.loop.BatchProgress`."""
        now = time.monotonic()
        self._epochs = progress.epochs
        if progress.batch == 1 or self._epoch_started is None:
            self._epoch_started = now - progress.seconds
        left = progress.seconds / progress.batch * (progress.batches - progress.batch)
        paint = self.bar_colour
        self.line.update(
            progress.batch, progress.batches,
            f"epoch {progress.epoch}/{progress.epochs} batch {progress.batch}/"
            f"{progress.batches} loss {progress.loss:.4f} acc {percent(progress.accuracy)} "
            f"{progress.samples_per_second:,.0f} img/s lr {readable_lr(progress.lr)} "
            + paint.dim(f"{duration(progress.seconds)} elapsed, ETA {duration(left)}"))

    def on_epoch(self, record: dict[str, Any]) -> None:
        """``record``: one epoch of the run's history."""
        self.line.clear()
        now = time.monotonic()
        if self._epoch_started is not None:
            self._epoch_walls.append(now - self._epoch_started)
        self._epoch_started = now
        paint = self.colour
        epoch = record["epoch"]
        best = self.best_epoch is not None and self.best_epoch() == epoch
        if record["val_loss"] is not None:
            accuracy = percent(record["val_accuracy"])
            val = (f"val loss {record['val_loss']:.4f} val acc "
                   f"{paint.green(accuracy) if best else accuracy}")
        else:
            val = "no validation set"
        mark = paint.green(" * best") if best and record["val_loss"] is not None else ""
        left = max(self._epochs - epoch, 0)
        eta = ""
        if left and self._epoch_walls:
            mean = sum(self._epoch_walls) / len(self._epoch_walls)
            eta = paint.dim(f" | ETA {duration(left * mean)} for {left} more "
                            f"epoch{'s' if left > 1 else ''}")
        head = paint.bold(f"epoch {epoch:>3}")
        print(f"{head}: train loss {record['train_loss']:.4f} acc "
              f"{percent(record['train_accuracy'])} | {val}{mark} | lr "
              f"{readable_lr(record['lr'])} | {record['seconds']:.1f}s{eta}", file=self.out,
              flush=True)
