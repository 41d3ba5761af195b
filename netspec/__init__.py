"""netspec: a framework-free neural-network compiler.

TOML architectures are validated, compiled to a shape-checked DAG, and run on NumPy.
"""

from netspec.compiler import Plan, compile_plan
from netspec.errors import NetspecError, SpecError
from netspec.executor import Network, compile
from netspec.losses import softmax_cross_entropy
from netspec.spec import Spec, load_spec, parse_spec

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
