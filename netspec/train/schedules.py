"""Learning rate as a pure function of the position in training, so a resumed run matches.

The position is a fractional epoch taken at the *start* of a step:
``epoch + batch / steps_per_epoch``.

Warmup (``warmup_epochs = w > 0``) ramps linearly, one increment per step: step ``s`` (from 0)
gets ``base_lr * (s + 1) / (w * steps_per_epoch)``, i.e. ``base_lr * (epoch + 1 /
steps_per_epoch) / w``, capped at ``base_lr``. The first step thus runs at a small non-zero
rate and the last warmup step at ``base_lr``. Called once per epoch (``steps_per_epoch=1``),
epoch ``k`` gets ``base_lr * (k + 1) / w``.

After warmup the schedule runs on ``t = epoch - w``, the epochs since warmup ended, as if
training started there (torch's ``SequentialLR([warmup, schedule], milestones=[w])``). Step,
multistep and exponential decay change the rate once per whole epoch of ``t``, like torch's
per-epoch schedulers; cosine annealing is continuous in ``t`` and reaches ``min_lr`` at the
end of training. Without warmup, integer epochs give torch's ``StepLR``, ``MultiStepLR``,
``ExponentialLR`` and ``CosineAnnealingLR(T_max=total_epochs)`` values (up to rounding).

>>> from netspec.train.config import CosineScheduleConfig
>>> cosine = CosineScheduleConfig(warmup_epochs=1)
>>> [learning_rate(cosine, 1.0, e, total_epochs=3, steps_per_epoch=4) for e in (0, 0.5, 1, 2)]
[0.25, 0.75, 1.0, 0.5]
"""

from __future__ import annotations

import bisect
import math

from netspec.train.config import (
    CosineScheduleConfig,
    ExponentialScheduleConfig,
    MultiStepScheduleConfig,
    ScheduleConfig,
    StepScheduleConfig,
)


def learning_rate(
    schedule: ScheduleConfig,
    base_lr: float,
    epoch: float,
    total_epochs: int,
    *,
    steps_per_epoch: int = 1,
) -> float:
    """The learning rate for the step that starts at fractional ``epoch`` (see module notes)."""
    warmup = schedule.warmup_epochs
    if epoch < warmup:
        return base_lr * min(1.0, (epoch + 1 / steps_per_epoch) / warmup)
    since = epoch - warmup
    whole = math.floor(since)
    if isinstance(schedule, StepScheduleConfig):
        return base_lr * schedule.gamma ** (whole // schedule.step_size)
    if isinstance(schedule, MultiStepScheduleConfig):
        return base_lr * schedule.gamma ** bisect.bisect_right(schedule.milestones, whole)
    if isinstance(schedule, ExponentialScheduleConfig):
        return base_lr * schedule.gamma**whole
    if isinstance(schedule, CosineScheduleConfig):
        span = total_epochs - warmup
        progress = min(since / span, 1.0) if span > 0 else 1.0
        low = schedule.min_lr
        return low + (base_lr - low) * (1 + math.cos(math.pi * progress)) / 2
    return base_lr
