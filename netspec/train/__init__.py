"""Training: the ``[train]`` config, optimizers and learning-rate schedules."""

from netspec.train.config import (
    AdamConfig,
    AdamWConfig,
    AugmentConfig,
    ConstantScheduleConfig,
    CosineScheduleConfig,
    EarlyStoppingConfig,
    ExponentialScheduleConfig,
    MultiStepScheduleConfig,
    OptimizerConfig,
    ScheduleConfig,
    SGDConfig,
    StepScheduleConfig,
    TrainConfig,
    apply_overrides,
    parse_train_config,
)
from netspec.train.optim import SGD, Adam, AdamW, Optimizer, clip_grad_norm, make_optimizer
from netspec.train.schedules import learning_rate

__all__ = [
    "SGD",
    "Adam",
    "AdamConfig",
    "AdamW",
    "AdamWConfig",
    "AugmentConfig",
    "ConstantScheduleConfig",
    "CosineScheduleConfig",
    "EarlyStoppingConfig",
    "ExponentialScheduleConfig",
    "MultiStepScheduleConfig",
    "Optimizer",
    "OptimizerConfig",
    "SGDConfig",
    "ScheduleConfig",
    "StepScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "clip_grad_norm",
    "learning_rate",
    "make_optimizer",
    "parse_train_config",
]
