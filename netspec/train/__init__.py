"""Training: the ``[train]`` config, optimizers and learning-rate schedules.

The names below load their module on first use (PEP 562), so that checking a ``[train]`` table
(``netspec compile``, the language server) does not load the optimizers and NumPy with it.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULE_OF = {
    **dict.fromkeys((
        "AdamConfig", "AdamWConfig", "AugmentConfig", "ConstantScheduleConfig",
        "CosineScheduleConfig", "EarlyStoppingConfig", "ExponentialScheduleConfig",
        "MultiStepScheduleConfig", "OptimizerConfig", "SGDConfig", "ScheduleConfig",
        "StepScheduleConfig", "TrainConfig", "apply_overrides", "parse_train_config"),
        "netspec.train.config"),
    **dict.fromkeys(("SGD", "Adam", "AdamW", "Optimizer", "clip_grad_norm", "make_optimizer"),
                    "netspec.train.optim"),
    "learning_rate": "netspec.train.schedules",
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'netspec.train' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
