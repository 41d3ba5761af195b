"""Weight initialisers, named as in the spec's ``init`` field.

Fan-in and fan-out follow PyTorch: for a weight of shape (out, in, *kernel), fan_in is
in * prod(kernel) and fan_out is out * prod(kernel).
"""

from __future__ import annotations

import math

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


def distribution(name: str, shape: Shape, scale: float | None = None) -> tuple[str, float]:
    """What the named scheme draws a tensor of ``shape`` from: ``("normal", std)``,
    ``("uniform", bound)`` (from -bound to bound) or ``("zeros", 0.0)``. The PyTorch export
    writes the same distribution.

    >>> distribution("he_normal", (6, 1, 5, 5))
    ('normal', 0.282842712474619)
    """
    fan_in, fan_out = fans(shape) if len(shape) >= 2 else (shape[0], shape[0])
    schemes = {
        "he_normal": lambda: ("normal", math.sqrt(2.0 / fan_in)),
        "he_uniform": lambda: ("uniform", math.sqrt(6.0 / fan_in)),
        "glorot_normal": lambda: ("normal", math.sqrt(2.0 / (fan_in + fan_out))),
        "glorot_uniform": lambda: ("uniform", math.sqrt(6.0 / (fan_in + fan_out))),
        "lecun_normal": lambda: ("normal", math.sqrt(1.0 / fan_in)),
        "normal": lambda: ("normal", scale if scale is not None else DEFAULT_NORMAL_STD),
        "uniform": lambda: ("uniform", scale if scale is not None else DEFAULT_UNIFORM_BOUND),
        "zeros": lambda: ("zeros", 0.0),
    }
    if name not in schemes:
        raise ValueError(f"unknown initialiser '{name}'; known: {', '.join(schemes)}")
    return schemes[name]()


def initialise(name: str, shape: Shape, rng: np.random.Generator,
               scale: float | None = None) -> np.ndarray:
    """A float64 array of ``shape`` drawn by the named scheme."""
    kind, width = distribution(name, shape, scale)
    if kind == "normal":
        return rng.normal(0.0, width, size=shape)
    if kind == "uniform":
        return rng.uniform(-width, width, size=shape)
    return np.zeros(shape)
