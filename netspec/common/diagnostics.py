"""Stable codes for the problems netspec finds in a spec, for tools that read diagnostics
(``netspec compile --json``, the language server) rather than people.

A diagnostic carries its code when the code that found it knows it (the compiler's shape
errors, expressions); otherwise the code is the first entry of ``CODES`` whose pattern matches
the message, which is how netspec words that kind of problem. ``docs/error_codes.md`` lists
them and tests/test_diagnostics.py produces each one from a spec, so that a reworded message
cannot silently change a code. A code, once published, keeps its meaning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

FALLBACK = "spec"


@dataclass(frozen=True)
class Code:
    name: str
    summary: str
    patterns: tuple[str, ...] = ()

    def matches(self, message: str) -> bool:
        return any(re.search(pattern, message) for pattern in self.patterns)


CODES: tuple[Code, ...] = (
    Code("file", "The spec file does not exist, is a directory or cannot be read.",
         (r": no such file", r": a directory, not a spec file", r"cannot read the spec")),
    Code("toml-syntax", "The file is not valid TOML.", (r"^invalid TOML",)),
    Code("duplicate", "A table, node, node id or block is defined twice.",
         (r"defined twice", r"is made twice", r"names two things")),
    Code("too-large", "A file, an expansion or an include chain exceeds netspec's bounds.",
         (r"^the network expands to more than", r"bytes; a spec file may have at most",
          r"included files; that is the limit")),
    Code("include", "An include cannot be read, points outside its directory, includes "
                    "itself or holds more than blocks.",
         (r"^include ", r"^an included file holds", r"cannot read the included file")),
    Code("unknown-table", "A top-level table netspec does not know ([trian]).",
         (r"^unknown top-level table",)),
    Code("no-nodes", "The spec has no [nodes].", (r"^no nodes",)),
    Code("no-input-node", "No node has op = \"input\", or the output reads none (a learned "
                          "tensor alone).", (r"^no input node", r"reads no input node")),
    Code("unknown-op", "op names no registered op.", (r"^unknown op ",)),
    Code("missing-op", "A node has no op.", (r"^missing 'op'",)),
    Code("unknown-block", "block names no block defined or included.", (r"^unknown block ",)),
    Code("block-argument", "An instance gives an unknown argument, misses a required one, or "
                           "one of the wrong type.",
         (r"^unknown argument ", r"needs argument\(s\)", r"^argument '.*' of block ")),
    Code("block-definition", "A block's own table is wrong: its keys, args, defaults, inputs, "
                             "output, or it contains itself.",
         (r"^block '[^']*'(:| has no nodes| reaches itself| must be a table)",
          r"^\[blocks\] must", r"^repeat chains instances", r"^block must be a block's name",
          r"^block '[^']*' takes \d+ input")),
    Code("variable", "A [vars] entry or a --set override is wrong.",
         (r"^\[vars\]", r"^variable name", r"^--set ")),
    Code("unknown-field", "A key the table does not have (kernal_size).",
         (r"unknown field", r"unknown key '")),
    Code("missing-field", "A required field is missing.", (r"missing required field",)),
    Code("unknown-input", "inputs (or [network] output) names no node.",
         (r"names no node",)),
    Code("input-count", "A node has more or fewer inputs than its op takes.",
         (r"takes exactly one input", r"takes (at least|exactly) \d+ inputs",
          r"takes \d+ to \d+ inputs", r"^inputs is empty",
          r"has no inputs and no node is defined before it", r"takes no inputs",
          r"conditional inputs leave it without input")),
    Code("cycle", "Nodes feed each other in a loop.", (r"is on a cycle",)),
    Code("weights", "Explicit weight values or a weight_file do not fit the weight.",
         (r"weight_file", r"^weight values", r"give either 'weight'", r"^weight has shape")),
    Code("out-of-range", "A number outside its allowed range, or a list of the wrong length.",
         (r"must be (greater|less) than", r"must have (at least|at most) \d+ item",
          r"must be a (finite|whole) number", r"must be at (least|most)",
          r"must be a whole number of at least")),
    Code("wrong-type", "A value of the wrong type (a string where a number goes), or an "
                       "invalid choice.",
         (r" must be ", r"should be a table", r"must not be empty")),
    Code("train", "The [train] table's recipe is inconsistent.", (r"^\[train",)),
    Code("shape-mismatch", "Shapes do not fit: an op's input has the wrong rank or size, or "
                           "an output axis is empty.", ()),
    Code("branch-rewired", "A warning: a node reads the node before it by default, but that "
                           "node ends a branch a join also reads; a forgotten inputs.",
         (r"ends a branch that",)),
    Code("assertion", "A spec's or a block's assertion does not hold; its message says "
                      "what it means.", ()),
    Code("expression", "An expression (\"= ...\") does not evaluate: bad syntax, an unknown "
                       "variable, a wrong type.", ()),
    Code(FALLBACK, "Any other problem of a spec.", ()),
)
BY_NAME = {code.name: code for code in CODES}


def classify(message: str) -> str:
    """The code of a problem worded as ``message``.

    >>> classify("unknown field 'kernal_size'; did you mean 'kernel_size'?")
    'unknown-field'
    >>> classify("is on a cycle: a -> b -> a; a network must be acyclic")
    'cycle'
    """
    for code in CODES:
        if code.matches(message):
            return code.name
    return FALLBACK


def split_hint(message: str) -> tuple[str, str | None]:
    """netspec words a problem as "what is wrong; what to do": the two parts.

    >>> split_hint("unknown op 'relux'; did you mean 'relu'? (known ops: relu)")
    ("unknown op 'relux'", "did you mean 'relu'? (known ops: relu)")
    >>> split_hint("no nodes")
    ('no nodes', None)
    """
    problem, separator, hint = message.partition("; ")
    return (problem, hint) if separator and hint else (message, None)


def with_columns(diagnostics: Iterable[Diagnostic],
                 texts: Mapping[str, str]) -> list[Diagnostic]:
    """Each diagnostic with the column its line's text starts at (1-based), where it has a
    line in one of ``texts`` (file name as the diagnostic names it -> text) and no column."""
    located = []
    for diagnostic in diagnostics:
        text = texts.get(diagnostic.file or "")
        if diagnostic.column is None and diagnostic.line and text is not None:
            lines = text.splitlines()
            if diagnostic.line <= len(lines):
                line = lines[diagnostic.line - 1]
                diagnostic = replace(diagnostic, column=len(line) - len(line.lstrip()) + 1)
        located.append(diagnostic)
    return located


def records(diagnostics: Iterable[Diagnostic],
            texts: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The JSON records of ``netspec compile --json`` (and the language server's data)."""
    return [d.to_dict() for d in with_columns(diagnostics, texts or {})]


def printable(text: str) -> str:
    r"""``text`` with invisible characters spelled out as escapes, so that a newline, a NUL
    or a zero-width character in a quoted TOML key can neither break a format's syntax (XML
    forbids most control characters) nor hide in a picture or a message.

    >>> printable("a\nb\x00 c\u200b")
    'a\\nb\\x00 c\\u200b'
    """
    return "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in text)


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
    # a stable code for tools (netspec.common.diagnostics.CODES); None: classified from the message
    code: str | None = None
    column: int | None = None  # 1-based, where the problem's text starts, when known

    @property
    def kind(self) -> str:
        """The diagnostic's code: given, or the one its message is worded for."""
        return self.code or classify(self.message)

    def to_dict(self) -> dict[str, object]:
        """The record of ``netspec compile --json`` and the language server: the problem and
        the hint (what to do) apart, and the whole line as printed."""
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
