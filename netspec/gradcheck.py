"""Central-difference gradient checking of a whole network, in float64.

The checked scalar is a fixed random projection of the output, ``L = sum(R * y)``, so every
output element contributes and ``dL/dy = R`` exactly. Entries whose finite difference straddles
a ReLU or max-pool kink (the one-sided slopes disagree) are skipped for another entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from netspec.executor import Network

TOLERANCE = 1e-6


@dataclass(frozen=True)
class TensorCheck:
    """The result of checking one tensor: parameter key, or ``input:<id>``."""

    name: str
    shape: tuple[int, ...]
    checked: int
    skipped_kinks: int
    worst_relative_error: float

    @property
    def passed(self) -> bool:
        return self.worst_relative_error < TOLERANCE


def relative_error(analytic: float, numeric: float, floor: float = 1e-8) -> float:
    """|a - n| / max(|a|, |n|, floor): the floor keeps near-zero gradients from dividing by ~0.

    >>> relative_error(1.0, 1.0 + 1e-9) < 1e-8
    True
    """
    return abs(analytic - numeric) / max(abs(analytic), abs(numeric), floor)


def check_network(net: Network, x: np.ndarray, *, samples: int = 20, seed: int = 0,
                  step: float = 1e-6, train: bool = True,
                  backward_override: Callable[[Network, np.ndarray], np.ndarray] | None = None,
                  ) -> list[TensorCheck]:
    """Check the gradients of every parameter tensor and of the input.

    Up to ``samples`` entries per tensor are checked (all of them in small tensors). The
    network must be float64. Dropout masks repeat exactly: its generator is re-seeded before
    every forward pass.
    """
    if net.dtype != np.float64:
        raise ValueError("gradient checking needs a float64 network (dtype='float64')")
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float64).copy()
    projection = rng.normal(size=(x.shape[0], *net.output_shape))
    dropout_state = net.rng.bit_generator.state

    def loss() -> float:
        net.rng.bit_generator.state = dropout_state
        return float((net.forward(x, train=train, keep=False) * projection).sum())

    net.rng.bit_generator.state = dropout_state
    net.forward(x, train=train, keep=True)
    if backward_override is not None:
        dx = backward_override(net, projection)
    else:
        dx = net.backward(projection)
    analytic = {key: net.grads[key].copy() for key in net.trainable}
    tensors = {key: net.params[key] for key in net.trainable}
    tensors[f"input:{net.plan.inputs[0]}"] = x
    analytic[f"input:{net.plan.inputs[0]}"] = np.asarray(dx)

    results = []
    for name, tensor in tensors.items():
        flat = tensor.reshape(-1)
        candidates = rng.permutation(flat.size)
        worst, checked, kinks = 0.0, 0, 0
        for index in candidates:
            if checked >= samples:
                break
            original = flat[index]
            flat[index] = original + step
            plus = loss()
            flat[index] = original - step
            minus = loss()
            flat[index] = original
            centre = loss()
            forward_slope = (plus - centre) / step
            backward_slope = (centre - minus) / step
            numeric = (plus - minus) / (2 * step)
            if abs(forward_slope - backward_slope) > 1e-4 * max(1.0, abs(numeric)):
                kinks += 1
                continue
            worst = max(worst, relative_error(float(analytic[name].reshape(-1)[index]), numeric))
            checked += 1
        results.append(TensorCheck(name, tensor.shape, checked, kinks, worst))
    return results
