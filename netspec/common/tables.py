"""The one place that formats tables for the terminal (compile, gradcheck, train, bench)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_RULE = 100


@dataclass(frozen=True)
class Column:
    """A column's title and alignment ('<' left, '>' right)."""

    title: str
    align: str = ">"


def render_table(columns: Sequence[Column], rows: Sequence[Sequence[object]],
                 footer: Sequence[Sequence[object]] = ()) -> str:
    """Rows under a header rule, with optional footer rows under a second rule.

    >>> print(render_table([Column("node", "<"), Column("params")], [["fc1", "48,120"]]))
    node  params
    ------------
    fc1   48,120
    """
    cells = [[str(value) for value in row] for row in [*rows, *footer]]
    widths = [len(c.title) for c in columns]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row)]

    def line(values: Sequence[str]) -> str:
        parts = [f"{value:{column.align}{width}}"
                 for value, column, width in zip(values, columns, widths)]
        return "  ".join(parts).rstrip()

    # a table with one long free-text cell should not draw a rule across several screens
    rule = ("-" * (sum(widths) + 2 * (len(widths) - 1)))[:MAX_RULE]
    out = [line([c.title for c in columns]), rule]
    out += [line(row) for row in cells[: len(rows)]]
    if footer:
        out.append(rule)
        out += [line(row) for row in cells[len(rows):]]
    return "\n".join(out)


def human_count(value: float) -> str:
    """A count with a metric suffix.

    >>> human_count(852370), human_count(61706), human_count(12)
    ('852.4K', '61.7K', '12')
    """
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= threshold:
            return f"{value / threshold:.1f}{suffix}"
    return f"{value:g}"


def human_bytes(value: float) -> str:
    """A byte count in binary units.

    >>> human_bytes(3136), human_bytes(40 * 2**30)
    ('3.1 KiB', '40.0 GiB')
    """
    for threshold, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if value >= threshold:
            return f"{value / threshold:.1f} {suffix}"
    return f"{int(value)} B"
