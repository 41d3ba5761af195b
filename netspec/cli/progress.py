"""Progress display for long work: a one-line bar on a terminal, sparse lines otherwise."""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO


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
