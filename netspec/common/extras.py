"""Optional dependencies, imported on first use, with the install line that brings each one."""

from __future__ import annotations

import importlib
from types import ModuleType

from netspec.common.errors import NetspecError

TORCH_EXTRA = "pip install netspec[torch]"


class FormatUnavailable(NetspecError):
    """The package a format needs is not installed."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or say which ``pip install netspec[extra]`` brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise FormatUnavailable(f"{purpose} needs the '{module}' package; install it with "
                                f"pip install 'netspec[{extra}]'") from None


def require_torch(what: str):  # noqa: ANN201 - returns the torch module
    """Import torch, or say which extra ``what`` needs."""
    try:
        import torch
    except ImportError:
        raise NetspecError(f"{what} needs PyTorch, which is not installed: "
                           f"{TORCH_EXTRA}") from None
    return torch
