"""Interchange formats: carry a compiled plan to other tools, and bring their models in.

A format reads a :class:`~netspec.compiler.Plan` (and weights) and never feeds back into the
compiler; an import produces spec text that netspec's own loader then checks like any other.
Each format's optional dependency is imported lazily, so netspec works without it, and each
keeps its per-op mapping beside it as a table (``onnx_ops``, ``torch_ops.TORCH_FORMS``) in
which every registered op has an entry or an explicit refusal.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from netspec.errors import NetspecError


class FormatUnavailable(NetspecError):
    """The package a format needs is not installed."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or say which ``pip install netspec[extra]`` brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise FormatUnavailable(f"{purpose} needs the '{module}' package; install it with "
                                f"pip install 'netspec[{extra}]'") from None
