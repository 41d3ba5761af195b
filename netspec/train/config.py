"""The ``[train]`` table of a spec: pydantic models, and their errors turned into diagnostics.

Every model is strict (TOML values have types, so ``epochs = "12"`` is a mistake, not a
number), forbids unknown keys and is frozen; change a validated config with
:func:`apply_overrides`, which validates the result again.

>>> config = TrainConfig.model_validate({"epochs": 3, "optimizer": {"type": "adam"}})
>>> config.epochs, config.optimizer.lr, config.schedule.type
(3, 0.001, 'constant')
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    Strict,
    ValidationError,
    model_validator,
)

from netspec.common.errors import Diagnostic, SpecError, did_you_mean

Locate = Callable[[tuple[str, ...]], int | None]

_Rate = Annotated[float, Field(gt=0)]
_Beta = Annotated[float, Strict(), Field(ge=0, lt=1)]
_Gamma = Annotated[float, Field(gt=0, le=1)]


class _FieldError(ValueError):
    """A cross-field problem raised by a validator, aimed at ``loc`` inside the model."""

    def __init__(self, message: str, loc: tuple[str, ...]):
        super().__init__(message)
        self.loc = loc


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class SGDConfig(_Table):
    """``torch.optim.SGD`` without dampening."""

    type: Literal["sgd"] = "sgd"
    lr: _Rate = Field(0.01, description="Learning rate.")
    momentum: Annotated[float, Field(ge=0, lt=1)] = Field(0.9, description="Momentum factor.")
    nesterov: bool = Field(False, description="Nesterov momentum (needs momentum > 0).")
    weight_decay: NonNegativeFloat = Field(0.0, description="L2 penalty added to the gradient.")
    decay_norms_and_biases: bool = Field(
        True, description="Decay every parameter; false decays only the weights of linear and "
        "convolution layers (not biases, norm scales, tokens, embeddings), as transformers are "
        "trained.")

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGDConfig:
        if self.nesterov and self.momentum == 0:
            raise _FieldError("needs momentum > 0 (got momentum = 0)", ("nesterov",))
        return self


class _AdamBase(_Table):
    lr: _Rate = Field(1e-3, description="Learning rate.")
    # Strictness is lifted for the pair only, so a TOML array (a list) becomes a tuple.
    betas: Annotated[tuple[_Beta, _Beta], Field(strict=False)] = Field(
        (0.9, 0.999), description="Decay rates of the gradient's mean and square, [b1, b2].")
    eps: _Rate = Field(1e-8, description="Added to the denominator for stability.")


class AdamConfig(_AdamBase):
    """``torch.optim.Adam``: weight decay is L2 added to the gradient."""

    type: Literal["adam"] = "adam"
    weight_decay: NonNegativeFloat = Field(0.0, description="L2 penalty added to the gradient.")
    decay_norms_and_biases: bool = Field(
        True, description="Decay every parameter; false decays only the weights of linear and "
        "convolution layers (not biases, norm scales, tokens, embeddings), as transformers are "
        "trained.")


class AdamWConfig(_AdamBase):
    """``torch.optim.AdamW``: weight decay is decoupled from the gradient."""

    type: Literal["adamw"] = "adamw"
    weight_decay: NonNegativeFloat = Field(0.01, description="Decoupled weight decay.")
    decay_norms_and_biases: bool = Field(
        True, description="Decay every parameter; false decays only the weights of linear and "
        "convolution layers (not biases, norm scales, tokens, embeddings), as transformers are "
        "trained.")


OptimizerConfig = Annotated[SGDConfig | AdamConfig | AdamWConfig, Field(discriminator="type")]


class _ScheduleBase(_Table):
    warmup_epochs: NonNegativeFloat = Field(
        0.0, description="Linear warmup from ~0 to the base lr over this many (fractional) epochs."
    )


class ConstantScheduleConfig(_ScheduleBase):
    """The base lr throughout (after any warmup)."""

    type: Literal["constant"] = "constant"


class StepScheduleConfig(_ScheduleBase):
    """Multiply the lr by ``gamma`` every ``step_size`` epochs after warmup."""

    type: Literal["step"] = "step"
    step_size: PositiveInt = Field(description="Epochs between two decays.")
    gamma: _Gamma = Field(0.1, description="Factor applied to the lr at each decay.")


class MultiStepScheduleConfig(_ScheduleBase):
    """Multiply the lr by ``gamma`` at each milestone, counted in epochs after warmup."""

    type: Literal["multistep"] = "multistep"
    milestones: Annotated[list[PositiveInt], Field(min_length=1)] = Field(
        description="Epochs (after warmup) at which the lr decays, increasing.")
    gamma: _Gamma = Field(0.1, description="Factor applied to the lr at each milestone.")

    @model_validator(mode="after")
    def _increasing(self) -> MultiStepScheduleConfig:
        if any(a >= b for a, b in zip(self.milestones, self.milestones[1:], strict=False)):
            raise _FieldError(
                f"must be strictly increasing (got {self.milestones})", ("milestones",)
            )
        return self


class ExponentialScheduleConfig(_ScheduleBase):
    """Multiply the lr by ``gamma`` every epoch after warmup."""

    type: Literal["exponential"] = "exponential"
    gamma: _Gamma = Field(description="Factor applied to the lr every epoch.")


class CosineScheduleConfig(_ScheduleBase):
    """Cosine annealing from the base lr to ``min_lr`` over the epochs after warmup."""

    type: Literal["cosine"] = "cosine"
    min_lr: NonNegativeFloat = Field(0.0, description="The lr at the last epoch.")


ScheduleConfig = Annotated[
    ConstantScheduleConfig
    | StepScheduleConfig
    | MultiStepScheduleConfig
    | ExponentialScheduleConfig
    | CosineScheduleConfig,
    Field(discriminator="type"),
]


class EarlyStoppingConfig(_Table):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs."""

    monitor: Literal["val_loss", "val_accuracy"] = Field(
        "val_loss", description="The validation figure watched.")
    patience: PositiveInt = Field(3, description="Epochs without improvement before stopping.")
    min_delta: NonNegativeFloat = Field(0.0, description="Smallest change that counts as "
                                                         "an improvement.")


class AugmentConfig(_Table):
    """Random changes to training images; the defaults change nothing.

    Shifts and rotations suit digits; a horizontal flip and padded random crops suit natural
    images (a flipped digit is another glyph, so flips are never on unless asked for).
    """

    max_shift: NonNegativeInt = Field(0, description="Largest random shift, in pixels.")
    max_rotation: Annotated[float, Field(ge=0, le=180)] = Field(
        0.0, description="Largest random rotation, in degrees.")
    horizontal_flip: bool = Field(False, description="Flip images left-right at random "
                                                     "(natural images; never digits).")
    crop_padding: Annotated[int, Field(ge=0, le=64)] = Field(
        0, description="Pad by this many pixels, then crop back at a random offset.")
    pad_mode: Literal["zeros", "reflect"] = Field(
        "zeros", description="How crop_padding fills the border.")

    @property
    def any(self) -> bool:
        return bool(self.max_shift or self.max_rotation or self.horizontal_flip
                    or self.crop_padding)


class TrainConfig(_Table):
    """The whole ``[train]`` table."""

    epochs: PositiveInt = Field(10, description="Passes over the training set.")
    batch_size: PositiveInt = Field(64, description="Images per training step.")
    seed: NonNegativeInt = Field(0, description="Drives every random choice of the run.")
    validation: NonNegativeInt = Field(5000, description="Images held out of the training set.")
    limit: NonNegativeInt = Field(0, description="Train on N images only (the validation "
                                  "images are held out besides them); 0: all.")
    clip_grad_norm: _Rate | None = Field(
        None, description="Scale gradients down to this global norm; default no clipping.")
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.0, description="Share of the target spread evenly over the classes.")
    optimizer: OptimizerConfig = Field(
        default_factory=SGDConfig, description="[train.optimizer]: type = sgd (default), adam "
        "or adamw, and its settings.")
    schedule: ScheduleConfig = Field(
        default_factory=ConstantScheduleConfig, description="[train.schedule]: type = "
        "constant (default), step, multistep, exponential or cosine, and its settings.")
    early_stopping: EarlyStoppingConfig | None = Field(
        None, description="[train.early_stopping]: stop when validation stops improving.")
    augment: AugmentConfig = Field(default_factory=AugmentConfig,
                                   description="[train.augment]: random shifts and rotations.")

    @model_validator(mode="before")
    @classmethod
    def _default_types(cls, data: Any) -> Any:
        # A sub-table without `type` means the default kind, so `[train.schedule]` holding
        # only `warmup_epochs` is a constant schedule with warmup.
        if isinstance(data, dict):
            for key, default in (("optimizer", "sgd"), ("schedule", "constant")):
                table = data.get(key)
                if isinstance(table, dict) and "type" not in table:
                    data = {**data, key: {"type": default, **table}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.early_stopping is not None and self.validation == 0:
            raise _FieldError(
                "needs a validation set; set validation > 0 in [train]",
                ("early_stopping", "monitor"),
            )
        schedule = self.schedule
        if isinstance(schedule, CosineScheduleConfig) and schedule.min_lr > self.optimizer.lr:
            raise _FieldError(
                f"must not exceed the optimizer lr (got {schedule.min_lr:g} > "
                f"{self.optimizer.lr:g})",
                ("schedule", schedule.type, "min_lr"),
            )
        return self


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The model classes an annotation (a model, an optional model or a union) can hold."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [
        a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)
    ]


def _tags(models: list[type[BaseModel]]) -> dict[str, type[BaseModel]]:
    """Discriminator value -> model, for the members of a ``type``-tagged union."""
    return {
        typing.get_args(m.model_fields["type"].annotation)[0]: m
        for m in models
        if "type" in m.model_fields
    }


def _split(loc: tuple[str | int, ...]) -> tuple[type[BaseModel], list[str], list[str | int]]:
    """Split a pydantic error location into (table model, table path, field path).

    Union tags that pydantic inserts (``("optimizer", "sgd", "lr")``) are dropped.
    """
    model: type[BaseModel] = TrainConfig
    table: list[str] = []
    field: list[str | int] = []
    i = 0
    while i < len(loc):
        item, rest = loc[i], loc[i + 1 :]
        info = model.model_fields.get(item) if isinstance(item, str) and not field else None
        members = _models(info.annotation) if info is not None else []
        tags = _tags(members) if len(members) > 1 else {}
        if rest and rest[0] in tags:
            model, i = tags[str(rest[0])], i + 2
            table.append(str(item))
        elif rest and len(members) == 1:
            model, i = members[0], i + 1
            table.append(str(item))
        else:
            field.append(item)
            i += 1
    return model, table, field


def _field_name(path: list[str | int]) -> str:
    """``["betas", 1]`` -> ``"betas[1]"``."""
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else part)
    return name


_TABLE_ERRORS = ("model_type", "model_attributes_type", "dict_type")
# the right form of each [train] sub-table, shown where one is written wrongly
EXAMPLES = {
    "optimizer": 'optimizer = { type = "adam", lr = 0.001 }',
    "schedule": 'schedule = { type = "cosine", warmup_epochs = 1 }',
    "early_stopping": 'early_stopping = { monitor = "val_loss", patience = 3 }',
    "augment": "augment = { max_shift = 2, max_rotation = 10 }",
}


def _example(table: str) -> str:
    return f"{EXAMPLES[table]} in [train], or the same keys under [train.{table}]"


def _sub_table_of(name: str) -> str | None:
    """The [train] sub-table that has a field ``name`` (``lr``: the optimizer's)."""
    for table in EXAMPLES:
        if any(name in model.model_fields
               for model in _models(TrainConfig.model_fields[table].annotation)):
            return table
    return None


def _describe(error: Any) -> tuple[tuple[str, ...], str]:
    """The key path (inside ``[train]``) and message for one pydantic error."""
    loc = tuple(error["loc"])
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, _FieldError):
        loc += cause.loc
    model, table, field = _split(loc)
    kind, text, value = error["type"], error["msg"], error.get("input")
    if kind == "union_tag_invalid":
        # The error sits on the union field itself; report it at that table's `type` key.
        union = str(field[-1])
        valid = list(_tags(_models(model.model_fields[union].annotation)))
        tag = value.get("type") if isinstance(value, dict) else None
        suggestion = did_you_mean(tag, valid) if isinstance(tag, str) else ""
        text = (f"unknown {union} type {tag!r}; valid types: {', '.join(valid)}{suggestion}"
                + (f". For example: {_example(union)}" if union in EXAMPLES and not suggestion
                   else ""))
        table, field = [*table, union], ["type"]
    elif kind == "extra_forbidden":
        fields = sorted(model.model_fields, key=lambda f: f != "type")
        name = str(field[-1])
        owner = _sub_table_of(name) if model is TrainConfig and not table else None
        if owner is not None:
            # `lr = 0.1` at the top of [train]: it belongs to the optimizer's table
            text = (f"unknown field; did you mean {owner}.{name}? The {owner} settings are a "
                    f"table: {_example(owner)}")
        elif name == "name" and "type" in fields:
            text = f"unknown field; did you mean 'type'? For example: {_example(table[-1])}"
        else:
            hint = did_you_mean(name, fields) or f"; valid fields: {', '.join(fields)}"
            text = f"unknown field{hint}"
    elif isinstance(cause, ValueError):
        text = str(cause)
    else:
        if kind in _TABLE_ERRORS:
            text = "should be a table"
        if kind != "missing" and isinstance(value, (bool, int, float, str)):
            text += f" (got {value!r})"
        if kind in _TABLE_ERRORS and not table and field and field[-1] in EXAMPLES:
            text += f": {_example(str(field[-1]))}"
        if kind == "literal_error" and isinstance(value, str):
            choices = typing.get_args(model.model_fields[str(field[0])].annotation)
            text += did_you_mean(value, choices)
    section = ".".join(["train", *table])
    name = _field_name(field)
    message = f"[{section}] {name}: {text}" if name else f"[{section}] {text}"
    return (*table, *(p for p in field if isinstance(p, str))), message


def _line(locate: Locate, keys: tuple[str, ...]) -> int | None:
    """The line of the longest prefix of ``("train", *keys)`` that ``locate`` knows."""
    path = ("train", *keys)
    for n in range(len(path), 0, -1):
        line = locate(path[:n])
        if line is not None:
            return line
    return None


def _diagnostics(exc: ValidationError, file: str | None, locate: Locate) -> list[Diagnostic]:
    diagnostics = []
    for error in exc.errors():
        keys, message = _describe(error)
        diagnostics.append(Diagnostic(message, file=file, line=_line(locate, keys)))
    return diagnostics


def parse_train_config(raw: Any, *, file: str | None, locate: Locate) -> TrainConfig:
    """Validate the contents of a spec's ``[train]`` table (not the whole document).

    ``locate`` maps a key path such as ``("train", "optimizer", "lr")`` to its line in the TOML
    source, or ``None``; a problem is reported at the deepest path it knows. All problems are
    raised together as one :class:`~netspec.common.errors.SpecError`.
    """
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_diagnostics(exc, file, locate)) from None


def train_table_problems(raw: Any, *, file: str | None, locate: Locate) -> list[Diagnostic]:
    """Every problem of a spec's ``[train]`` table (``None``: no table, no problem), for the
    commands and the language server that report them beside the network's."""
    if raw is None:
        return []
    try:
        parse_train_config(raw, file=file, locate=locate)
    except SpecError as exc:
        return exc.diagnostics
    return []


def apply_overrides(
    config: TrainConfig,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    validation: int | None = None,
    limit: int | None = None,
    clip_grad_norm: float | None = None,
    label_smoothing: float | None = None,
    optimizer: str | None = None,
    lr: float | None = None,
    momentum: float | None = None,
    weight_decay: float | None = None,
) -> TrainConfig:
    """A copy of ``config`` with command-line overrides applied and validated again.

    ``None`` leaves a setting as it is, so parsed CLI options can be passed straight through.
    A new ``optimizer`` type starts from that type's defaults (an SGD learning rate is rarely
    right for Adam); ``lr``, ``momentum`` and ``weight_decay`` then apply to it. Invalid
    results raise :class:`~netspec.common.errors.SpecError`.
    """
    data = config.model_dump()
    top = {
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "validation": validation,
        "limit": limit,
        "clip_grad_norm": clip_grad_norm,
        "label_smoothing": label_smoothing,
    }
    data.update({k: v for k, v in top.items() if v is not None})
    if optimizer is not None and optimizer != config.optimizer.type:
        data["optimizer"] = {"type": optimizer}
    opt = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
    data["optimizer"].update({k: v for k, v in opt.items() if v is not None})
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        diagnostics = _diagnostics(exc, None, lambda _: None)
        raise SpecError(Diagnostic(f"after overrides: {d.message}") for d in diagnostics) from None
