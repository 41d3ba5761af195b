"""Modules loaded on first use.

The compiler runs nothing, so ``netspec compile`` need not load NumPy, a fifth of its start-up
(tools/bench_startup.py). The ops import NumPy through :func:`lazy_import`: the module object
exists at once, and NumPy itself is loaded the first time one of its attributes is read, that
is, the first time an op computes. After that it is the ordinary module.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_import(name: str) -> ModuleType:
    """The module ``name``, loaded now if it already was, else on its first attribute access."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
