"""Errors meant for people: each one says where (file:line, node) and what to do."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a spec, located as precisely as the source allows."""

    message: str
    file: str | None = None
    line: int | None = None
    node: str | None = None
    op: str | None = None
    # where a node made by a block was written: "in block 'basic' defined at a.toml:12"
    context: str | None = None
    # a stable code for tools (netspec.diagnostics.CODES); None: classified from the message
    code: str | None = None
    column: int | None = None  # 1-based, where the problem's text starts, when known

    @property
    def kind(self) -> str:
        """The diagnostic's code: given, or the one its message is worded for."""
        from netspec.diagnostics import classify

        return self.code or classify(self.message)

    def to_dict(self) -> dict[str, object]:
        """The record of ``netspec compile --json`` and the language server: the problem and
        the hint (what to do) apart, and the whole line as printed."""
        from netspec.diagnostics import split_hint

        problem, hint = split_hint(self.message)
        return {"file": self.file, "line": self.line, "column": self.column, "node": self.node,
                "op": self.op, "context": self.context, "code": self.kind,
                "message": problem, "hint": hint, "text": str(self)}

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        if self.node is not None:
            about = ", ".join(part for part in (self.op, self.context) if part)
            subject = f"node '{printable(self.node)}'" + (f" ({about})" if about else "")
            return f"{where}{subject}: {self.message}"
        return f"{where}{self.message}"


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


def printable(text: str) -> str:
    r"""``text`` with invisible characters spelled out as escapes, so that a newline, a NUL
    or a zero-width character in a quoted TOML key can neither break a format's syntax (XML
    forbids most control characters) nor hide in a picture or a message.

    >>> printable("a\nb\x00 c\u200b")
    'a\\nb\\x00 c\\u200b'
    """
    return "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in text)


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most similar to ``name``, if any is reasonably close.

    >>> closest("kernal_size", ["kernel_size", "stride", "padding"])
    'kernel_size'
    >>> closest("xyz", ["kernel_size"]) is None
    True
    """
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A ``"; did you mean 'x'?"`` suffix, or an empty string when nothing is close."""
    match = closest(name, candidates)
    return f"; did you mean '{match}'?" if match else ""
