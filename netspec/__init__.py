"""netspec: a framework-free neural-network compiler.

TOML architectures are validated, compiled to a shape-checked DAG, and run on NumPy.

The public names are imported on first use, so that ``netspec --help`` and other light commands
start without NumPy, pydantic or networkx.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from netspec.common.version import __version__ as __version__

if TYPE_CHECKING:
    from netspec.common.errors import NetspecError, SpecError
    from netspec.lang.spec import Spec, load_spec, parse_spec
    from netspec.plan.compiler import Plan, compile_plan
    from netspec.runtime.executor import Network, compile
    from netspec.runtime.losses import softmax_cross_entropy

_HOMES = {
    "Network": "netspec.runtime.executor",
    "NetspecError": "netspec.common.errors",
    "Plan": "netspec.plan.compiler",
    "Spec": "netspec.lang.spec",
    "SpecError": "netspec.common.errors",
    "compile": "netspec.runtime.executor",
    "compile_plan": "netspec.plan.compiler",
    "load_spec": "netspec.lang.spec",
    "parse_spec": "netspec.lang.spec",
    "softmax_cross_entropy": "netspec.runtime.losses",
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


# modules that moved into the stage folders (docs/architecture.md), by their old import path; an
# old ``import netspec.compiler`` gets the module at its new home
MOVED_MODULES = {
    "netspec.atomic": "netspec.common.atomic",
    "netspec.blocks": "netspec.lang.blocks",
    "netspec.budget": "netspec.plan.budget",
    "netspec.catalog": "netspec.plan.catalog",
    "netspec.compiler": "netspec.plan.compiler",
    "netspec.diagnostics": "netspec.common.diagnostics",
    "netspec.diagram_formats": "netspec.common.diagram_formats",
    "netspec.doctor": "netspec.runtime.doctor",
    "netspec.errors": "netspec.common.errors",
    "netspec.executor": "netspec.runtime.executor",
    "netspec.expressions": "netspec.lang.expressions",
    "netspec.flat": "netspec.lang.flat",
    "netspec.gradcheck": "netspec.runtime.gradcheck",
    "netspec.hierarchy": "netspec.lang.hierarchy",
    "netspec.initializers": "netspec.runtime.initializers",
    "netspec.interchange.torch_weights": "netspec.weights.torch_weights",
    "netspec.lazy": "netspec.common.lazy",
    "netspec.losses": "netspec.runtime.losses",
    "netspec.lsp": "netspec.editor.lsp",
    "netspec.profile": "netspec.train.profile",
    "netspec.schema": "netspec.editor.schema",
    "netspec.shapes": "netspec.ops.shapes",
    "netspec.sourcemap": "netspec.lang.sourcemap",
    "netspec.spec": "netspec.lang.spec",
    "netspec.summary": "netspec.plan.summary",
    "netspec.tables": "netspec.common.tables",
    "netspec.threads": "netspec.runtime.threads",
    "netspec.train.checkpoint": "netspec.weights.checkpoint",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds a moved module under its old name: the very module object of its new home."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec: Any) -> ModuleType:
        return importlib.import_module(MOVED_MODULES[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """The module ran at its new home already."""


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'netspec' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
