"""Optional dependencies, imported on first use, with the install line that brings each one.

netspec's distribution on the package registry is ``netspec-nn`` (``netspec`` there is an
unrelated project): the command stays ``netspec`` and the import ``import netspec``. An install
line names the registry's distribution, or this checkout when netspec runs from one (an
editable install or PYTHONPATH), since installing the registry's copy beside a checkout would
shadow it.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

from netspec.common.errors import NetspecError

DISTRIBUTION = "netspec-nn"
# the folder above the package: a checkout when it holds this project's pyproject.toml
_CHECKOUT = Path(__file__).resolve().parents[2]


class FormatUnavailable(NetspecError):
    """The package a format needs is not installed."""


def checkout_root() -> Path | None:
    """The source checkout netspec runs from, or None when it runs from an installed copy."""
    try:
        text = (_CHECKOUT / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return _CHECKOUT if f'name = "{DISTRIBUTION}"' in text else None


def install_line(extra: str | None = None, *, checkout: Path | None | bool = True) -> str:
    """The pip command that installs netspec with ``extra`` (several joined by commas),
    quoted so that zsh does not read the brackets as a pattern. ``checkout`` is the source
    checkout to name (True: the one netspec runs from, if any; None: the registry)."""
    root = checkout_root() if checkout is True else checkout or None
    brackets = f"[{extra}]" if extra else ""
    if root is None:
        return f'pip install "{DISTRIBUTION}{brackets}"'
    try:
        here = Path.cwd().resolve() == Path(root).resolve()
    except OSError:  # the working directory was removed
        here = False
    where = "." if here else os.fspath(root)
    return f'pip install -e "{where}{brackets}"'



def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or say which install line brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise FormatUnavailable(f"{purpose} needs the '{module}' package; install it with "
                                f"{install_line(extra)}") from None


def require_torch(what: str):  # noqa: ANN201 - returns the torch module
    """Import torch, or say which extra ``what`` needs."""
    try:
        import torch
    except ImportError:
        raise NetspecError(f"{what} needs PyTorch, which is not installed: "
                           f"{install_line('torch')}") from None
    return torch
