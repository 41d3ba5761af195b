"""Weight initialisers, named as in the spec's ``init`` field.

Fan-in and fan-out follow PyTorch: for a weight of shape (out, in, *kernel), fan_in is
in * prod(kernel) and fan_out is out * prod(kernel).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from netspec.ops.shapes import Shape

DEFAULT_NORMAL_STD = 0.01
DEFAULT_UNIFORM_BOUND = 0.05


def fans(shape: Shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight shape.

    >>> fans((6, 1, 5, 5))
    (25, 150)
    >>> fans((10, 84))
    (84, 10)
    """
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _normal(std: float) -> Callable[[Shape, np.random.Generator], np.ndarray]:
    return lambda shape, rng: rng.normal(0.0, std, size=shape)


def _uniform(bound: float) -> Callable[[Shape, np.random.Generator], np.ndarray]:
    return lambda shape, rng: rng.uniform(-bound, bound, size=shape)


def initialise(name: str, shape: Shape, rng: np.random.Generator,
               scale: float | None = None) -> np.ndarray:
    """A float64 array of ``shape`` drawn by the named scheme."""
    fan_in, fan_out = fans(shape) if len(shape) >= 2 else (shape[0], shape[0])
    schemes = {
        "he_normal": lambda: _normal(math.sqrt(2.0 / fan_in)),
        "he_uniform": lambda: _uniform(math.sqrt(6.0 / fan_in)),
        "glorot_normal": lambda: _normal(math.sqrt(2.0 / (fan_in + fan_out))),
        "glorot_uniform": lambda: _uniform(math.sqrt(6.0 / (fan_in + fan_out))),
        "lecun_normal": lambda: _normal(math.sqrt(1.0 / fan_in)),
        "normal": lambda: _normal(scale if scale is not None else DEFAULT_NORMAL_STD),
        "uniform": lambda: _uniform(scale if scale is not None else DEFAULT_UNIFORM_BOUND),
        "zeros": lambda: lambda shape_, rng_: np.zeros(shape_),
    }
    if name not in schemes:
        raise ValueError(f"unknown initialiser '{name}'; known: {', '.join(schemes)}")
    return schemes[name]()(shape, rng)
