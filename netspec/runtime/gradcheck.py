"""Central-difference gradient checking of a whole network, in float64.

The checked scalar is a fixed random projection of the output, ``L = sum(R * y)``, so every
output element contributes and ``dL/dy = R`` exactly. An entry whose finite difference
straddles a ReLU or max-pool kink is retried with a ten times shorter step, and skipped for
another entry if the kink is still within reach.

Rounding in the forward pass limits a float64 finite difference to about 1e-9 of the
network's gradient scale, so an entry is compared relative to the larger of its own size and
FLOOR_FRACTION of the RMS of all the gradients checked: a gradient that is zero up to rounding
(a bias followed by batchnorm) is held to an absolute bound instead of a relative one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from netspec.runtime.executor import Network

TOLERANCE = 1e-6
FLOOR_FRACTION = 1e-1
# measured on the shipped architectures: rounding noise grows as the step shrinks (1e-6 leaves
# 1e-6 errors on batchnorm networks), curvature and kinks as it grows; 3e-5 keeps errors ~1e-8
STEP = 3e-5


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


def check_network(net: Network, x: np.ndarray | Mapping[str, np.ndarray], *, samples: int = 20,
                  seed: int = 0, step: float = STEP, train: bool = True,
                  backward_override: Callable[[Network, np.ndarray], np.ndarray] | None = None,
                  ) -> list[TensorCheck]:
    """Check the gradients of every parameter tensor and of every input.

    ``x`` is the batch, or a dict of batches by input id for a network with several inputs.

    Up to ``samples`` entries per tensor are checked (all of them in small tensors). The
    network must be float64. Dropout masks repeat exactly: its generator is re-seeded before
    every forward pass. Parameters, buffers and the generator are left as they were found.
    """
    if net.dtype != np.float64:
        raise ValueError("gradient checking needs a float64 network (dtype='float64')")
    rng = np.random.default_rng(seed)
    given = x if isinstance(x, Mapping) else {net.plan.inputs[0]: x}
    # copies, perturbed in place below; a single input is passed to the network as given
    inputs = {key: np.asarray(value, dtype=np.float64).copy() for key, value in given.items()}
    feed = inputs if isinstance(x, Mapping) else inputs[net.plan.inputs[0]]
    batch = len(next(iter(inputs.values())))
    projection = rng.normal(size=(batch, *net.output_shape))
    dropout_state = net.rng.bit_generator.state
    # training-mode passes move batchnorm's running statistics: put them back afterwards
    buffers = {key: value.copy() for key, value in net.buffers.items()}

    def output() -> np.ndarray:
        net.rng.bit_generator.state = dropout_state
        return net.forward(feed, train=train, keep=False).copy()

    def slope(later: np.ndarray, earlier: np.ndarray, width: float) -> float:
        # differencing outputs before projecting keeps untouched elements out of the rounding
        return float((projection * (later - earlier)).sum()) / width

    def smooth_slope(flat: np.ndarray, index: int, width: float) -> float | None:
        """The central difference at ``flat[index]``, or None when a kink lies within two
        widths: on a smooth path the two tests below vanish up to O(width^2), while a kink
        shows in one or the other however near the centre it lies."""
        original = flat[index]
        around = {}
        for multiple in (2, 1, -1, -2):
            flat[index] = original + multiple * width
            around[multiple] = output()
        flat[index] = original
        numeric = slope(around[1], around[-1], 2 * width)
        wider_gap = slope(around[2], around[-2], 4 * width) - numeric
        bend = slope(around[2] + around[-2] - 2 * centre,
                     4 * (around[1] + around[-1] - 2 * centre), width)
        # an undetected kink then costs at most about half the tolerance
        allowed = 0.5 * TOLERANCE * max(abs(numeric), floor)
        return None if max(abs(wider_gap), abs(bend)) > allowed else numeric

    net.rng.bit_generator.state = dropout_state
    net.forward(feed, train=train, keep=True)
    if backward_override is not None:
        dx = backward_override(net, projection)
    else:
        dx = net.backward(projection)
    input_grads = dx if isinstance(dx, Mapping) else {net.plan.inputs[0]: dx}
    analytic = {key: net.grads[key].copy() for key in net.trainable}
    tensors = {key: net.params[key] for key in net.trainable}
    for key, value in inputs.items():
        tensors[f"input:{key}"] = value
        analytic[f"input:{key}"] = np.asarray(input_grads[key])
    everything = np.concatenate([grad.reshape(-1) for grad in analytic.values()])
    floor = max(FLOOR_FRACTION * float(np.sqrt(np.mean(everything**2))), 1e-300)
    centre = output()

    results = []
    for name, tensor in tensors.items():
        flat = tensor.reshape(-1)
        candidates = rng.permutation(flat.size)
        worst, checked, kinks = 0.0, 0, 0
        for index in candidates:
            if checked >= samples:
                break
            # a kink within reach of the first step usually lies beyond a ten times shorter one
            for width in (step, step / 10):
                numeric = smooth_slope(flat, index, width)
                if numeric is not None:
                    break
            if numeric is None:
                kinks += 1
                continue
            exact = float(analytic[name].reshape(-1)[index])
            worst = max(worst, relative_error(exact, numeric, floor))
            checked += 1
        results.append(TensorCheck(name, tensor.shape, checked, kinks, worst))
    for key, value in buffers.items():
        net.buffers[key][...] = value
    net.rng.bit_generator.state = dropout_state
    return results
