"""The shipped architectures and their listing, readable without NumPy, pydantic or networkx.

``netspec list`` shows each shipped spec's parameters and FLOPs. Compiling them takes the
heavy imports, so the figures are kept in ``catalog.json`` beside the package together with a
digest of every file under ``architectures/``. The listing uses the stored figures only while
that digest matches the files on disk; otherwise (an edited install, a new spec) it compiles
them again, so it is never stale. ``python tools/update_catalog.py`` rewrites the file and a
test fails while it is out of date.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from netspec.lang.shipped import CATALOG_FILE, SCHEMA_FILE, SHIPPED_DIR, shipped_architectures

__all__ = ["CATALOG_FILE", "SCHEMA_FILE", "SHIPPED_DIR", "Entry", "listing",
           "shipped_architectures", "write_catalog"]


@dataclass(frozen=True)
class Entry:
    """One shipped architecture as ``netspec list`` shows it; ``error`` when it does not
    compile (params and flops are then None)."""

    name: str
    params: int | None
    flops: int | None
    description: str
    error: str | None = None


def architectures_digest(directory: Path = SHIPPED_DIR) -> str:
    """A digest of every TOML file under ``directory`` (specs and the files they include)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*.toml") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def compile_entries(paths: list[Path]) -> list[Entry]:
    """Compile each spec for its listing; one broken file does not hide the others."""
    from netspec.common.errors import NetspecError
    from netspec.plan.compiler import compile_plan

    entries = []
    for path in paths:
        try:
            plan = compile_plan(path)
        except NetspecError as exc:
            first = str(exc).splitlines()[0]
            entries.append(Entry(path.stem, None, None, "", f"does not compile: {first}"))
            continue
        entries.append(Entry(path.stem, plan.total_params, plan.total_flops,
                             plan.spec.description))
    return entries


def stored_entries(directory: Path | None = None,
                   catalog: Path | None = None) -> list[Entry] | None:
    """The stored listing, or None when it is missing, unreadable or not of these files."""
    directory, catalog = directory or SHIPPED_DIR, catalog or CATALOG_FILE
    try:
        stored = json.loads(catalog.read_text(encoding="utf-8"))
        if stored.get("digest") != architectures_digest(directory):
            return None
        return [Entry(**entry) for entry in stored["architectures"]]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def listing(directory: Path | None = None, catalog: Path | None = None) -> list[Entry]:
    """Every shipped architecture with its parameters and FLOPs, compiled only when the stored
    figures are not of the files on disk."""
    directory = directory or SHIPPED_DIR
    stored = stored_entries(directory, catalog)
    if stored is not None:
        return stored
    return compile_entries(sorted(directory.glob("*.toml")))


def catalog_text(directory: Path = SHIPPED_DIR) -> str:
    """The contents ``catalog.json`` must have for the files under ``directory``."""
    entries = compile_entries(sorted(directory.glob("*.toml")))
    document = {"digest": architectures_digest(directory),
                "architectures": [asdict(entry) for entry in entries]}
    return json.dumps(document, indent=1) + "\n"


def write_catalog(catalog: Path = CATALOG_FILE) -> None:
    from netspec.common.atomic import atomic_write_text

    atomic_write_text(catalog, catalog_text())
