"""Copying a shipped architecture into the user's directory, to start a design from it.

The copy keeps the shipped layout (``DIR/NAME.toml``, ``DIR/blocks/...``,
``DIR/netspec.schema.json``), so that its ``include`` lines and ``#:schema`` lines read as
they do in the package.
"""

from __future__ import annotations

from pathlib import Path

from netspec.common.atomic import atomic_write_text
from netspec.common.errors import NetspecError, did_you_mean
from netspec.lang.shipped import SCHEMA_FILE, SHIPPED_DIR, shipped_architectures
from netspec.lang.spec import load_spec


def shipped_files(name: str) -> dict[str, str]:
    """The files of a shipped architecture, by their path relative to the shipped folder:
    the spec, every file it includes, and the JSON Schema its ``#:schema`` line names."""
    path = SHIPPED_DIR / f"{name}.toml"
    if Path(name).name != name or not path.is_file():
        known = [p.stem for p in shipped_architectures()]
        raise NetspecError(f"{name}: no shipped architecture of that name"
                           f"{did_you_mean(name, known)} (shipped: {', '.join(known)})")
    spec = load_spec(path)
    files = {path.name: path.read_text(encoding="utf-8")}
    files |= dict(sorted(spec.included.items()))
    if SCHEMA_FILE.is_file():
        files[SCHEMA_FILE.name] = SCHEMA_FILE.read_text(encoding="utf-8")
    return files


def copy_shipped(name: str, directory: str | Path, force: bool = False) -> list[Path]:
    """Write a shipped architecture's files into ``directory`` and return the paths written.

    A file already there with other content is refused (all of them named, nothing written)
    unless ``force``; one with the same content (the schema beside an earlier copy) is left
    as it is. Every path stays inside ``directory``.
    """
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise NetspecError(f"{root}: not a directory")
    files = shipped_files(name)
    targets = {}
    for relative, text in files.items():
        target = root / relative
        if not target.resolve().is_relative_to(root.resolve()):
            raise NetspecError(f"{relative}: outside {root}; not copied")
        targets[target] = text
    conflicts = [str(target) for target, text in targets.items()
                 if target.exists() and _text(target) != text]
    if conflicts and not force:
        verb = "exists" if len(conflicts) == 1 else "exist"
        raise NetspecError(f"{', '.join(conflicts)} already {verb} with other content; nothing "
                           "copied (add --force to overwrite, or copy into another directory)")
    written = []
    for target, text in targets.items():
        if target.exists() and _text(target) == text:
            continue
        atomic_write_text(target, text)
        written.append(target)
    return written


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
