"""Optimizers over dicts of NumPy arrays, with exactly PyTorch's update rules.

Parameters and gradients are ``dict[str, np.ndarray]`` with matching keys. ``step`` updates the
parameter arrays in place (they are the live network), reads the gradients without changing
them, and updates only the keys present in the gradients, so frozen parameters are left alone.
Per-parameter state lives in flat dicts of arrays; :meth:`Optimizer.state_dict` names each
entry ``"<slot>:<parameter>"`` (e.g. ``"exp_avg:conv1.weight"``) so it saves into an ``.npz``
with ``allow_pickle=False``.

>>> params = {"w": np.array([1.0, 2.0])}
>>> SGD(lr=0.5).step(params, {"w": np.array([1.0, -1.0])})
>>> params["w"]
array([0.5, 2.5])
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np

from netspec.common.errors import WeightsError
from netspec.train.config import AdamWConfig, OptimizerConfig, SGDConfig

Arrays = Mapping[str, np.ndarray]


class _Scratch:
    """Work arrays reused across parameters and steps, grown to the largest parameter seen."""

    def __init__(self) -> None:
        self._flat: dict[tuple[np.dtype, int], np.ndarray] = {}

    def get(self, like: np.ndarray, slot: int) -> np.ndarray:
        """A work array shaped like ``like``; distinct slots never share memory."""
        key = (like.dtype, slot)
        flat = self._flat.get(key)
        if flat is None or flat.size < like.size:
            flat = self._flat[key] = np.empty(like.size, like.dtype)
        return flat[: like.size].reshape(like.shape)


class Optimizer(ABC):
    """Common state handling; subclasses name their state ``_slots`` and implement ``_update``."""

    _slots: tuple[str, ...] = ()

    def __init__(self, lr: float, weight_decay: float) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.lr = lr
        self.weight_decay = weight_decay
        # parameters left out of weight decay (biases and norms, when a recipe says so)
        self.no_decay: frozenset[str] = frozenset()
        self._state: dict[str, dict[str, np.ndarray]] = {slot: {} for slot in self._slots}
        self._scratch = _Scratch()

    def step(self, params: Arrays, grads: Arrays, lr: float | None = None) -> None:
        """Update ``params[key]`` in place for every key of ``grads``.

        ``lr`` replaces the base learning rate for this step only (schedules drive it).
        """
        rate = self.lr if lr is None else lr
        for key, grad in grads.items():
            self._update(key, params[key], grad, rate)

    @abstractmethod
    def _update(self, key: str, param: np.ndarray, grad: np.ndarray, lr: float) -> None:
        """Update one parameter in place."""

    def _get(self, slot: str, key: str, param: np.ndarray) -> np.ndarray | None:
        """The state array ``slot`` of parameter ``key``, checked against the parameter."""
        value = self._state[slot].get(key)
        if value is not None and value.shape != param.shape:
            raise WeightsError(
                f"optimizer state '{slot}:{key}' has shape {value.shape}, "
                f"but the parameter has shape {param.shape}"
            )
        return value

    def state_dict(self) -> dict[str, np.ndarray]:
        """A snapshot of the state: flat, numeric arrays named ``"<slot>:<parameter>"``."""
        return {
            f"{slot}:{key}": value.copy()
            for slot, values in self._state.items()
            for key, value in values.items()
        }

    def load_state_dict(self, state: Arrays) -> None:
        """Replace the state with a copy of ``state`` (as returned by :meth:`state_dict`)."""
        loaded: dict[str, dict[str, np.ndarray]] = {slot: {} for slot in self._slots}
        name = type(self).__name__
        for entry, value in state.items():
            slot, sep, key = entry.partition(":")
            if not sep or slot not in loaded:
                expected = ", ".join(f"'{s}:<parameter>'" for s in self._slots) or "no entries"
                raise WeightsError(
                    f"optimizer state entry '{entry}' does not belong to {name} "
                    f"(expected {expected})"
                )
            array = np.array(value)
            if not np.issubdtype(array.dtype, np.number):
                raise WeightsError(f"optimizer state entry '{entry}' is not numeric")
            loaded[slot][key] = array
        keys = [set(values) for values in loaded.values()]
        if any(k != keys[0] for k in keys):
            missing = sorted(
                f"{slot}:{key}"
                for slot, values in loaded.items()
                for key in set().union(*keys) - set(values)
            )
            raise WeightsError(f"{name} state is incomplete: missing {', '.join(missing)}")
        self._state = loaded


class SGD(Optimizer):
    """``torch.optim.SGD`` (no dampening): the momentum buffer starts as the first gradient.

    With weight decay ``wd``: ``d = g + wd * p``; with momentum ``m``: ``b = m * b + d`` and
    ``d = b`` (or ``d + m * b`` for Nesterov); then ``p -= lr * d``.
    """

    _slots = ("momentum_buffer",)

    def __init__(
        self, lr: float, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0
    ) -> None:
        super().__init__(lr, weight_decay)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        self.momentum = momentum
        self.nesterov = nesterov

    def _update(self, key: str, param: np.ndarray, grad: np.ndarray, lr: float) -> None:
        direction = grad
        if self.weight_decay and key not in self.no_decay:
            direction = self._scratch.get(param, 0)
            np.multiply(param, self.weight_decay, out=direction)
            direction += grad
        work = self._scratch.get(param, 1)
        if self.momentum:
            buffer = self._get("momentum_buffer", key, param)
            if buffer is None:
                buffer = self._state["momentum_buffer"][key] = direction.copy()
            else:
                buffer *= self.momentum
                buffer += direction
            if self.nesterov:
                np.multiply(buffer, self.momentum, out=work)
                work += direction
                direction = work
            else:
                direction = buffer
        np.multiply(direction, lr, out=work)
        param -= work


class Adam(Optimizer):
    """``torch.optim.Adam`` (no amsgrad); weight decay adds ``wd * p`` to the gradient."""

    _slots = ("step", "exp_avg", "exp_avg_sq")
    _decoupled = False

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, weight_decay)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = eps

    def load_state_dict(self, state: Arrays) -> None:
        super().load_state_dict(state)
        for key, count in self._state["step"].items():
            if count.shape != () or not np.issubdtype(count.dtype, np.integer) or count < 0:
                raise WeightsError(f"optimizer state 'step:{key}' is not a step count: {count}")

    def _update(self, key: str, param: np.ndarray, grad: np.ndarray, lr: float) -> None:
        beta1, beta2 = self.betas
        exp_avg = self._get("exp_avg", key, param)
        exp_avg_sq = self._get("exp_avg_sq", key, param)
        if exp_avg is None or exp_avg_sq is None:
            exp_avg = self._state["exp_avg"][key] = np.zeros_like(param)
            exp_avg_sq = self._state["exp_avg_sq"][key] = np.zeros_like(param)
            self._state["step"][key] = np.zeros((), np.int64)
        count = self._state["step"][key]
        count += 1
        step = int(count)

        decay = self.weight_decay if key not in self.no_decay else 0.0
        if decay and self._decoupled:
            param *= 1 - lr * decay
        elif decay:
            decayed = self._scratch.get(param, 0)
            np.multiply(param, decay, out=decayed)
            decayed += grad
            grad = decayed

        work = self._scratch.get(param, 1)
        # exp_avg.lerp_(grad, 1 - beta1), in torch's form for weights below 0.5
        np.subtract(grad, exp_avg, out=work)
        work *= 1 - beta1
        exp_avg += work
        # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        exp_avg_sq *= beta2
        np.multiply(grad, 1 - beta2, out=work)
        work *= grad
        exp_avg_sq += work

        step_size = lr / (1 - beta1**step)
        np.sqrt(exp_avg_sq, out=work)
        work /= (1 - beta2**step) ** 0.5
        work += self.eps
        np.divide(exp_avg, work, out=work)
        work *= step_size
        param -= work


class AdamW(Adam):
    """``torch.optim.AdamW``: ``p *= 1 - lr * wd`` before the Adam step (decoupled decay)."""

    _decoupled = True

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(lr, betas, eps, weight_decay)


def make_optimizer(config: OptimizerConfig,
                   shapes: Mapping[str, tuple[int, ...]] | None = None) -> Optimizer:
    """The optimizer a validated ``[train.optimizer]`` table describes, for parameters of
    these ``shapes`` (key -> shape; needed only to leave some out of weight decay)."""
    optimizer: Optimizer
    if isinstance(config, SGDConfig):
        optimizer = SGD(config.lr, config.momentum, config.nesterov, config.weight_decay)
    else:
        adam = AdamW if isinstance(config, AdamWConfig) else Adam
        optimizer = adam(config.lr, config.betas, config.eps, config.weight_decay)
    if not config.decay_norms_and_biases:
        optimizer.no_decay = frozenset(key for key, shape in (shapes or {}).items()
                                       if not decays_as_a_layer_weight(key, shape))
    return optimizer


def decays_as_a_layer_weight(key: str, shape: tuple[int, ...]) -> bool:
    """Whether a parameter is the weight of a linear or convolution layer (a ``.weight`` of
    two axes or more), the only parameters transformer recipes decay: not biases, norm scales,
    class tokens, position embeddings or layer scales.

    >>> decays_as_a_layer_weight("fc.weight", (10, 64)), decays_as_a_layer_weight("fc.bias", (10,))
    (True, False)
    """
    return key.endswith(".weight") and len(shape) >= 2


def clip_grad_norm(grads: Arrays, max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: the scale is ``max_norm / (norm + 1e-6)`` when below
    1. Returns the norm before clipping; a non-finite norm leaves the gradients untouched, for
    the caller to report.
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    total = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    scale = max_norm / (total + 1e-6)
    if scale < 1 and math.isfinite(total):
        for grad in grads.values():
            grad *= scale
    return total
