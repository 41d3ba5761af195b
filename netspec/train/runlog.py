"""What a run directory keeps besides its weights: where and how it ran (provenance), its
epochs as a CSV table, and, with the ``tensorboard`` extra, TensorBoard event files.

``metrics.csv`` is rewritten whole from the history at every epoch (atomically), so a resumed
run never holds an epoch twice. Event files are TensorBoard's own append-only logs, written
by its writer under ``tensorboard/``: a resumed run adds a new file beside the old ones, and
TensorBoard shows the epochs by their step.
"""

from __future__ import annotations

import csv
import io
import os
import platform
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from netspec.common.atomic import atomic_write_text
from netspec.common.version import __version__

METRICS_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
# one row per finished epoch; accuracies as fractions (0..1), seconds of that epoch
METRICS_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                   "seconds")
# what TensorBoard shows, under tags grouped as loss/..., accuracy/... and learning_rate
_TENSORBOARD_TAGS = {"train_loss": "loss/train", "val_loss": "loss/validation",
                     "train_accuracy": "accuracy/train", "val_accuracy": "accuracy/validation",
                     "lr": "learning_rate"}


def cpu_model() -> str:
    """The processor's name as the operating system gives it (``AMD EPYC 9454 ...``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def provenance(command: Sequence[str] | None = None,
               blas_threads: int | None = None) -> dict[str, Any]:
    """Where and how a run started: versions, the command line, the host, the start time."""
    import numpy as np

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "netspec": __version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "command": list(command) if command is not None else None,
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_threads": os.cpu_count(),
        "cpu_threads_usable": usable,
        "blas_threads": blas_threads,
        "started": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
    }


def write_metrics(run_dir: Path, history: Sequence[dict[str, Any]]) -> None:
    """``metrics.csv``: one row per finished epoch (an epoch without validation leaves its
    validation cells empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(METRICS_COLUMNS)
    for record in history:
        writer.writerow(["" if record.get(name) is None else _cell(record[name])
                         for name in METRICS_COLUMNS])
    atomic_write_text(run_dir / METRICS_FILE, buffer.getvalue())


def _cell(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def read_metrics(run_dir: Path) -> list[dict[str, float | None]]:
    """The rows of a run's ``metrics.csv`` as numbers (empty cells as None)."""
    with open(Path(run_dir) / METRICS_FILE, encoding="utf-8", newline="") as handle:
        return [{key: (float(value) if value != "" else None) for key, value in row.items()}
                for row in csv.DictReader(handle)]


class TensorBoardLog:
    """Scalars of each epoch in TensorBoard's event files, when ``tensorboard`` is installed
    (the ``tensorboard`` extra); otherwise it writes nothing."""

    def __init__(self, run_dir: Path) -> None:
        self.directory = Path(run_dir) / TENSORBOARD_DIR
        self._writer: Any = None
        self.available = _tensorboard_writer() is not None

    def add_epoch(self, record: dict[str, Any]) -> None:
        if not self.available:
            return
        if self._writer is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._writer = _tensorboard_writer()(str(self.directory))
        for key, tag in _TENSORBOARD_TAGS.items():
            if record.get(key) is not None:
                self._writer.add_scalar(tag, float(record[key]), step=int(record["epoch"]))
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _tensorboard_writer() -> Any:
    try:
        from tensorboard.summary import Writer
    except ImportError:
        return None
    return Writer
