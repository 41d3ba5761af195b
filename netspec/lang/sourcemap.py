"""Where each table header and key of a TOML text stands: the line numbers errors point at."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

KeyPath = tuple[str, ...]

# One alternative per TOML token class that matters for locating keys; strings and comments
# are consumed whole so that brackets, '=' or '#' inside them are never mistaken for structure.
_TOKEN = re.compile(
    r'(?P<mlstring>"""(?:\\.|[^\\])*?"{3,5}|\'\'\'.*?\'{3,5})'
    r'|(?P<string>"(?:\\.|[^"\\\n])*"|\'[^\'\n]*\')'
    r"|(?P<comment>#[^\n]*)"
    r"|(?P<newline>\n)"
    r"|(?P<punct>\[\[|\]\]|[\[\]{}=.])"
    r"|(?P<blank>[ \t\r,]+)"
    r"|(?P<bare>[^\s\"'#\[\]{}=.,]+)"
    r"|(?P<other>.)",
    re.DOTALL,
)
_DEPTH_CHANGE = {"[": 1, "{": 1, "[[": 2, "]": -1, "}": -1, "]]": -2}


def _key_part(token: str) -> str:
    """A bare or quoted key segment as tomllib reads it."""
    if token[0] not in "\"'":
        return token
    if token[0] == '"' and "\\" in token:
        try:
            return tomllib.loads(f"k = {token}")["k"]
        except tomllib.TOMLDecodeError:
            pass
    return token[1:-1]


@dataclass
class SourceMap:
    """Where each table header and key stands in the TOML text (1-based lines)."""

    tables: dict[KeyPath, int] = field(default_factory=dict)
    keys: dict[KeyPath, int] = field(default_factory=dict)
    duplicate_tables: list[tuple[KeyPath, int, int]] = field(default_factory=list)
    headers: dict[KeyPath, int] = field(default_factory=dict)

    @classmethod
    def scan(cls, text: str) -> SourceMap:
        """Find every table header and key with a small tokenizer, so that errors can point at
        lines tomllib does not give. Strings (one-line and multi-line), comments, and the
        insides of arrays and inline tables are skipped; malformed text never raises."""
        source = cls()
        table: KeyPath = ()
        line = 1
        depth = 0  # brackets and braces open in the current value
        state = "start"  # start of a line, inside a header, inside a key, or in a value
        parts: list[str] = []
        first_line = 1
        array_header = False
        for match in _TOKEN.finditer(text):
            kind, token = match.lastgroup, match.group()
            if kind == "newline":
                line += 1
                if depth == 0:
                    state = "start"
                continue
            if kind == "mlstring":
                line += token.count("\n")
                state = "value"
                continue
            if kind in ("blank", "comment"):
                continue
            if state == "start":
                first_line, parts = line, []
                if token in ("[", "[["):
                    state, array_header = "header", token == "[["
                elif kind in ("bare", "string"):
                    state, parts = "key", [_key_part(token)]
                else:
                    state = "value"
                continue
            if state in ("header", "key"):
                if kind in ("bare", "string"):
                    parts.append(_key_part(token))
                elif token == ".":
                    pass
                elif state == "header" and token in ("]", "]]"):
                    table = tuple(parts)
                    source._add_table(table, first_line, array_header)
                    state = "value"
                elif state == "key" and token == "=":
                    source._add_key(table + tuple(parts), len(table), first_line)
                    state = "value"
                else:
                    state = "value"
                continue
            depth = max(0, depth + _DEPTH_CHANGE.get(token, 0)) if kind == "punct" else depth
        return source

    def _add_table(self, table: KeyPath, line: int, array: bool) -> None:
        for depth in range(1, len(table) + 1):
            self.tables.setdefault(table[:depth], line)
        if array:
            return
        if table in self.headers:
            self.duplicate_tables.append((table, line, self.headers[table]))
        else:
            self.headers[table] = line

    def _add_key(self, path: KeyPath, table_depth: int, line: int) -> None:
        self.keys.setdefault(path, line)
        # a dotted key (conv1.op = ...) also opens the tables it passes through
        for depth in range(table_depth + 1, len(path)):
            self.tables.setdefault(path[:depth], line)

    def locate(self, path: KeyPath) -> int | None:
        """The line of a key, else of its closest enclosing table that the text names."""
        for depth in range(len(path), 0, -1):
            prefix = path[:depth]
            if prefix in self.keys:
                return self.keys[prefix]
            if prefix in self.tables:
                return self.tables[prefix]
        return None
