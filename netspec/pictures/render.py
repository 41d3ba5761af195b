"""Write a diagram in the format its file extension names, with Graphviz when it is there.

``.dot`` and ``.mmd`` are text netspec writes itself. ``.svg`` and ``.png`` are laid out by
Graphviz's ``dot`` when it is on PATH; without it both are drawn by netspec's own layout
(``.svg`` always works, ``.png`` needs Pillow, the ``plot`` extra).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from netspec.common.atomic import atomic_write_bytes, atomic_write_text
from netspec.common.diagram_formats import FORMATS, RANKDIRS
from netspec.common.errors import NetspecError
from netspec.lang.spec import Spec
from netspec.pictures.dot import to_dot
from netspec.pictures.mermaid import to_mermaid
from netspec.pictures.png import to_png
from netspec.pictures.svg import to_svg
from netspec.plan.compiler import Plan, compile_plan

GRAPHVIZ_TIMEOUT = 60.0
INSTALL_HINT = ("install Graphviz (Debian/Ubuntu: sudo apt-get install graphviz; macOS: brew "
                "install graphviz; conda: conda install graphviz) so that 'dot' is on PATH; "
                ".svg, .dot and .mmd work without it")


def graphviz() -> str | None:
    """The path of Graphviz's ``dot`` program, or None when it is not on PATH."""
    return shutil.which("dot")


def run_graphviz(dot_text: str, fmt: str, program: str,
                 timeout: float = GRAPHVIZ_TIMEOUT) -> bytes:
    """Lay out DOT text with Graphviz and return the image bytes in format ``fmt``."""
    try:
        result = subprocess.run([program, f"-T{fmt}"], input=dot_text.encode("utf-8"),
                                capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise NetspecError(f"Graphviz ({program}) took longer than {timeout:g} s; draw a .svg "
                           "without Graphviz by putting it off PATH, or write .dot and lay it "
                           "out yourself") from None
    except OSError as exc:
        raise NetspecError(f"cannot run Graphviz ({program}): {exc}; {INSTALL_HINT}") from None
    if result.returncode != 0 or not result.stdout:
        message = result.stderr.decode("utf-8", "replace").strip() or "no output"
        raise NetspecError(f"Graphviz ({program}) failed with exit code "
                           f"{result.returncode}: {message}")
    return result.stdout


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        problem = (f"unknown diagram format '{path.suffix}'" if path.suffix
                   else "no extension to tell the diagram format")
        raise NetspecError(f"{path}: {problem}; name the file with one of "
                           f"{', '.join(FORMATS)}")
    return suffix


def draw(network: Plan | Spec | str | os.PathLike[str], path: str | os.PathLike[str],
         rankdir: str = "TB", depth: int | None = None) -> str:
    """Write a diagram of ``network`` (a plan, a spec, a spec path or a shipped name) to
    ``path`` in the format its extension names, atomically; block instances are framed, and
    with ``depth`` those nested deeper are folded into one box. Return what drew it:
    ``"netspec"`` or ``"graphviz"``."""
    target = Path(path)
    suffix = _format(target)
    if rankdir not in RANKDIRS:
        raise NetspecError(f"rankdir must be one of {', '.join(RANKDIRS)}, got '{rankdir}'")
    plan = network if isinstance(network, Plan) else compile_plan(network)
    if suffix == ".dot":
        atomic_write_text(target, to_dot(plan, rankdir, depth))
        return "netspec"
    if suffix == ".mmd":
        atomic_write_text(target, to_mermaid(plan, rankdir, depth))
        return "netspec"
    program = graphviz()
    if program is not None:
        atomic_write_bytes(target, run_graphviz(to_dot(plan, rankdir, depth), suffix[1:], program))
        return "graphviz"
    if suffix == ".svg":
        atomic_write_text(target, to_svg(plan, rankdir, depth))
        return "netspec"
    try:
        image = to_png(plan, rankdir, depth)
    except NetspecError as exc:
        raise NetspecError(f"{target}: {exc}; or {INSTALL_HINT}") from None
    atomic_write_bytes(target, image)
    return "netspec"
