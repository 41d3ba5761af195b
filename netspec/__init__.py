"""netspec: a framework-free neural-network compiler.

TOML architectures are validated, compiled to a shape-checked DAG, and run on NumPy.

The public names are imported on first use, so that ``netspec --help`` and other light commands
start without NumPy, pydantic or networkx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netspec.compiler import Plan, compile_plan
    from netspec.errors import NetspecError, SpecError
    from netspec.executor import Network, compile
    from netspec.losses import softmax_cross_entropy
    from netspec.spec import Spec, load_spec, parse_spec

_HOMES = {
    "Network": "netspec.executor",
    "NetspecError": "netspec.errors",
    "Plan": "netspec.compiler",
    "Spec": "netspec.spec",
    "SpecError": "netspec.errors",
    "compile": "netspec.executor",
    "compile_plan": "netspec.compiler",
    "load_spec": "netspec.spec",
    "parse_spec": "netspec.spec",
    "softmax_cross_entropy": "netspec.losses",
}
__all__ = [
    "Network",
    "NetspecError",
    "Plan",
    "Spec",
    "SpecError",
    "compile",
    "compile_plan",
    "load_spec",
    "parse_spec",
    "softmax_cross_entropy",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'netspec' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
