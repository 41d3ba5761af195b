"""The runs in a directory, read from their files: what ``netspec runs`` lists and compares.

Reading a run needs only its JSON files (``config.json``, ``history.json``, ``result.json``)
and whether ``last.npz`` exists; nothing is compiled or loaded, so listing a hundred runs is
quick. A directory that is not a run (no ``config.json``) is left out of a listing.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netspec.common.errors import NetspecError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# a run's own files are bounded; a bigger one is not a run's (and is not read)
_MAX_JSON_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class RunSummary:
    """One run directory, as far as its files tell."""

    path: Path
    architecture: str
    data: str
    epochs_run: int
    epochs_planned: int | None
    best_validation: float | None
    test_accuracy: float | None
    seconds: float
    status: str
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def is_run(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "spec.toml").is_file()


def read_run(path: str | Path) -> RunSummary:
    """What a run directory's files say about it."""
    path = Path(path)
    if not is_run(path):
        raise NetspecError(f"{path} is not a run directory (it has no config.json and "
                           "spec.toml; netspec train writes them)")
    saved = _json(path / "config.json", {})
    history = _json(path / "history.json", [])
    history = [r for r in history if isinstance(r, dict)] if isinstance(history, list) else []
    result = _json(path / "result.json", {})
    config = saved.get("config") if isinstance(saved.get("config"), dict) else {}
    validation = [r["val_accuracy"] for r in history
                  if isinstance(r.get("val_accuracy"), (int, float))]
    test = result.get("test") if isinstance(result.get("test"), dict) else {}
    data = saved.get("data")
    planned = config.get("epochs")
    return RunSummary(
        path=path,
        architecture=_architecture(path),
        data=str(data.get("source", "mnist")) if isinstance(data, dict) else "mnist",
        epochs_run=len(history),
        epochs_planned=planned if isinstance(planned, int) else None,
        best_validation=max(validation) if validation else None,
        test_accuracy=test.get("accuracy") if isinstance(test.get("accuracy"), float) else None,
        seconds=sum(float(r.get("seconds") or 0) for r in history),
        status=_status(path, result),
        config=config,
        provenance=saved.get("provenance") if isinstance(saved.get("provenance"), dict)
        else {},
        history=history,
    )


def find_runs(root: str | Path) -> list[RunSummary]:
    """The runs in ``root`` (its subdirectories, or ``root`` itself when it is one), oldest
    first by their start time (else their directory's time)."""
    root = Path(root)
    if not root.is_dir():
        raise NetspecError(f"{root}: no such directory")
    if is_run(root):
        return [read_run(root)]
    runs = [read_run(child) for child in sorted(root.iterdir())
            if child.is_dir() and is_run(child)]
    return sorted(runs, key=lambda run: (str(run.provenance.get("started") or ""),
                                         (run.path / "config.json").stat().st_mtime))


def differences(a: RunSummary, b: RunSummary) -> list[tuple[str, str, str]]:
    """The recipe settings and provenance fields whose values differ, as (name, a, b)."""
    rows = []
    for prefix, left, right in (("", flatten_table(a.config), flatten_table(b.config)),
                                ("provenance.", a.provenance, b.provenance)):
        for key in sorted(set(left) | set(right)):
            if key in ("started", "command"):
                continue
            if left.get(key) != right.get(key):
                rows.append((prefix + key, _shown(left.get(key)), _shown(right.get(key))))
    return rows


def _status(path: Path, result: dict[str, Any]) -> str:
    if result:
        return "stopped early" if result.get("stopped_early") else "finished"
    if (path / "last.npz").exists():
        return "interrupted"
    return "not started"


def _architecture(path: Path) -> str:
    """The ``[network] name`` of the run's spec (its directory name when unreadable)."""
    try:
        spec = tomllib.loads((path / "spec.toml").read_text(encoding="utf-8"))
        name = spec.get("network", {}).get("name")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
        name = None
    return name if isinstance(name, str) and name else path.name


def _json(path: Path, default: Any) -> Any:
    try:
        if path.stat().st_size > _MAX_JSON_BYTES:
            return default
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return default


def flatten_table(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as one level of dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict) and value:
            flat |= flatten_table(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
