"""Errors meant for people: each one says where (file:line, node) and what to do."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from netspec.common.diagnostics import Diagnostic, printable

__all__ = ["DataError", "Diagnostic", "NetspecError", "ShapeError", "SpecError",
           "TrainingError", "WeightsError", "closest", "did_you_mean", "printable"]


class NetspecError(Exception):
    """Base of every error netspec reports to a user; the CLI prints it without a traceback."""


class ShapeError(NetspecError):
    """Raised by ops when input shapes do not fit; the compiler adds node id and line."""


class SpecError(NetspecError):
    """One or more problems in a spec file, all reported together."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))

    def add(self, diagnostics: Iterable[Diagnostic]) -> None:
        """Report these problems too."""
        self.diagnostics += diagnostics
        self.args = ("\n".join(str(d) for d in self.diagnostics),)


class DataError(NetspecError):
    """A data file is missing, corrupt or cannot be fetched."""


class WeightsError(NetspecError):
    """A weights or checkpoint file is unreadable or does not fit the network."""


class TrainingError(NetspecError):
    """Training cannot go on (non-finite loss, bad configuration)."""


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most similar to ``name``, if any is reasonably close.

    >>> closest("kernal_size", ["kernel_size", "stride", "padding"])
    'kernel_size'
    >>> closest("xyz", ["kernel_size"]) is None
    True

    Case does not count: PyTorch's class names find netspec's op names.

    >>> closest("ReLU", ["relu", "gelu", "linear"])
    'relu'
    >>> closest("BatchNorm", ["batchnorm", "layernorm"])
    'batchnorm'
    """
    by_lower: dict[str, str] = {}
    for candidate in candidates:
        by_lower.setdefault(candidate.lower(), candidate)
    matches = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[matches[0]] if matches else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A ``"; did you mean 'x'?"`` suffix, or an empty string when nothing is close."""
    match = closest(name, candidates)
    return f"; did you mean '{match}'?" if match else ""
