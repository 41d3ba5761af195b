"""Data meets network: which data a run uses, and whether it fits the network's input and
output before a single pixel is trained on. ``netspec.data`` knows nothing of networks; this
module is where the two are compared.
"""

from __future__ import annotations

import os
from typing import Any

from netspec.common.errors import Diagnostic, SpecError
from netspec.data.choice import (
    MNIST,
    DataChoice,
    check_data_dir,
    choose_data,
    data_info,
    load_data,
    parse_data_config,
)
from netspec.data.dataset import DataInfo, Dataset
from netspec.data.download import Progress
from netspec.lang.spec import Spec
from netspec.ops.shapes import format_shape
from netspec.plan.compiler import Plan


def spec_data_choice(spec: Spec) -> DataChoice | None:
    """The choice of the spec's ``[data]`` table, or None when it has none."""
    if spec.data is None:
        return None
    return parse_data_config(spec.data, file=spec.file, locate=spec.source.locate,
                             directory=spec.directory)


def data_choice(spec: Spec, override: str | None = None, recorded: DataChoice | None = None
                ) -> DataChoice:
    """``--data`` if given, else what a run recorded, else the spec's ``[data]``, else MNIST."""
    if override is not None:
        return choose_data(override)
    if recorded is not None:
        return recorded
    return spec_data_choice(spec) or MNIST


def input_channels(plan: Plan) -> int:
    """The channels the network's input takes (for a folder of pictures: 1 or 3)."""
    shape = plan.nodes[plan.inputs[0]].shape if len(plan.inputs) == 1 else ()
    return int(shape[0]) if len(shape) == 3 else 1


def check_fits(plan: Plan, info: DataInfo) -> None:
    """Raise a :class:`SpecError` at the input or output node's line unless the data's
    sample shape is what the input node takes and its classes what the output node gives."""
    spec = plan.spec
    problems = []
    if len(plan.inputs) != 1:
        problems.append(Diagnostic(
            f"{info.label} feeds one input node; {plan.name} has {len(plan.inputs)} "
            f"({', '.join(plan.inputs)})", file=spec.file))
    else:
        node = plan.nodes[plan.inputs[0]]
        if tuple(node.shape) != tuple(info.sample_shape):
            problems.append(Diagnostic(
                f"{info.label} gives {format_shape(info.sample_shape)}; input node "
                f"'{node.id}' takes {format_shape(node.shape)}", file=spec.file,
                line=spec.node_line(node.id, "shape")))
    output = plan.nodes[plan.output]
    if tuple(output.shape) != (info.classes,):
        problems.append(Diagnostic(
            f"{info.label} has {info.classes} classes; output node '{output.id}' gives "
            f"{format_shape(output.shape)}, it should give ({info.classes},)", file=spec.file,
            line=spec.node_line(output.id)))
    if problems:
        raise SpecError(problems)


def check_spec_data(plan: Plan) -> DataInfo | None:
    """For ``netspec compile``: the spec's ``[data]``, checked against the network (None
    without a ``[data]`` table)."""
    choice = spec_data_choice(plan.spec)
    if choice is None:
        return None
    info = data_info(choice, input_channels(plan))
    check_fits(plan, info)
    return info


def prepare_data(plan: Plan, choice: DataChoice, *, data_dir: str | os.PathLike[str] | None
                 = None, download: bool = True, progress: Progress | None = None) -> Dataset:
    """The data of ``choice``, checked against ``plan`` before and after it is read."""
    channels = input_channels(plan)
    check_data_dir(choice, data_dir)
    check_fits(plan, data_info(choice, channels))
    data = load_data(choice, channels, data_dir=data_dir, download=download, progress=progress)
    # the files may say otherwise than their headers or the catalogue promised
    check_fits(plan, DataInfo(data.label, data.sample_shape, data.class_names))
    return data


def recorded_choice(meta: dict[str, Any], where: str) -> DataChoice | None:
    """The data choice a weights file or run config recorded (None for runs that predate it:
    they were trained on MNIST)."""
    raw = meta.get("data")
    return None if raw is None else DataChoice.from_json(raw, where)
