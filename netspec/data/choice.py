"""Which data a run uses: the ``[data]`` table of a spec, or ``--data`` on the command line.

A source is a data set name (``mnist``, ``fashion-mnist``, ``kmnist``, ``cifar10``), a
Keras-layout ``.npz`` file, or a directory of pictures (``train/`` and ``test/`` with one folder
per class). Names win over paths: a directory called ``mnist`` is ``./mnist``. A path in a spec
is relative to the spec's directory and must stay inside it, like ``weight_file``; a path on
the command line is the user's own and may be anywhere.

>>> choose_data("cifar10").describe()
'cifar10'
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from netspec.common.errors import DataError, Diagnostic, SpecError, did_you_mean
from netspec.data.catalog import NAMED_SETS, load_named, named_info
from netspec.data.dataset import DataInfo, Dataset
from netspec.data.download import Progress
from netspec.data.folder import folder_info, load_folder
from netspec.data.npz import inspect_npz, load_npz

Kind = Literal["named", "npz", "folder"]
Locate = Callable[[tuple[str, ...]], "int | None"]


class DataConfig(BaseModel):
    """The whole ``[data]`` table."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    source: str = Field("mnist", min_length=1, description=(
        "a data set name, a Keras-layout .npz file, or a directory with train/ and test/"))


@dataclass(frozen=True)
class DataChoice:
    """A resolved source: a known name, or an absolute path of a given kind."""

    kind: Kind
    source: str

    def describe(self) -> str:
        return self.source if self.kind == "named" else (
            Path(self.source).name if self.kind == "npz" else f"{self.source}/")

    @property
    def light_on_dark(self) -> bool:
        """Whether the pictures are drawn light on dark, as MNIST's digits are."""
        return self.kind == "named" and NAMED_SETS[self.source].light_on_dark

    def as_json(self) -> dict[str, str]:
        return {"kind": self.kind, "source": self.source}

    @classmethod
    def from_json(cls, raw: Any, where: str) -> DataChoice:
        """The choice recorded in a run (``config.json`` or a weights file), checked."""
        if not isinstance(raw, dict) or raw.get("kind") not in ("named", "npz", "folder") \
                or not isinstance(raw.get("source"), str) or not raw["source"]:
            raise DataError(f"{where}: the recorded data choice is corrupt: {raw!r}")
        if raw["kind"] == "named" and raw["source"] not in NAMED_SETS:
            raise DataError(f"{where}: records an unknown data set {raw['source']!r}")
        return cls(raw["kind"], raw["source"])


MNIST = DataChoice("named", "mnist")


def choose_data(source: str, *, base: str | os.PathLike[str] | None = None,
                confine: bool = False) -> DataChoice:
    """The choice a source string names; paths are taken relative to ``base`` (default: the
    working directory) and, with ``confine``, must not leave it."""
    if source in NAMED_SETS:
        return DataChoice("named", source)
    given = Path(source) if confine else Path(source).expanduser()
    root = Path(base) if base is not None else Path.cwd()
    path = (root / given).resolve()
    if confine and not path.is_relative_to(root.resolve()):
        raise DataError(f"'{source}' points outside the spec's directory {root}; name data "
                        "elsewhere with --data on the command line")
    if path.is_dir():
        return DataChoice("folder", str(path))
    if path.is_file():
        if path.suffix.lower() == ".npz" or zipfile.is_zipfile(path):
            return DataChoice("npz", str(path))
        raise DataError(f"{source}: neither an .npz file nor a directory of pictures")
    names = ", ".join(NAMED_SETS)
    raise DataError(f"'{source}': no such file or directory, and not a data set name"
                    f"{did_you_mean(source, NAMED_SETS)} (names: {names})")


def parse_data_config(raw: Any, *, file: str | None, locate: Locate,
                      directory: Path | None) -> DataChoice:
    """The choice of a spec's ``[data]`` table; problems are diagnostics at their line."""
    try:
        config = DataConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = str(error["loc"][0]) if error["loc"] else ""
            if error["type"] == "extra_forbidden":
                text = f"unknown field '{key}'{did_you_mean(key, DataConfig.model_fields)}" \
                       f" (valid fields: {', '.join(DataConfig.model_fields)})"
            else:
                value = error.get("input")
                text = f"{key}: {error['msg']}" + (
                    f" (got {value!r})" if isinstance(value, (bool, int, float, str)) else "")
            problems.append(Diagnostic(f"[data] {text}", file=file,
                                       line=locate(("data", key)) or locate(("data",))))
        raise SpecError(problems) from None
    try:
        return choose_data(config.source, base=directory, confine=True)
    except DataError as exc:
        raise SpecError([Diagnostic(f"[data] source: {exc}", file=file,
                                    line=locate(("data", "source")))]) from None


def data_info(choice: DataChoice, channels: int = 1) -> DataInfo:
    """What ``choice`` gives, without reading its pixels (a folder is read with ``channels``)."""
    if choice.kind == "named":
        return named_info(choice.source)
    if choice.kind == "npz":
        return inspect_npz(choice.source)
    return folder_info(choice.source, channels)


def check_data_dir(choice: DataChoice, data_dir: str | os.PathLike[str] | None) -> None:
    """Refuse a data directory that would be ignored: only named sets are looked up in one."""
    if choice.kind != "named" and data_dir is not None:
        raise DataError(f"--data-dir says where the files of a named data set are; "
                        f"{choice.describe()} is read from where it is")


def load_data(choice: DataChoice, channels: int = 1, *,
              data_dir: str | os.PathLike[str] | None = None, download: bool = True,
              progress: Progress | None = None) -> Dataset:
    """The data of ``choice``, checked. ``data_dir`` is where a named set's files are."""
    check_data_dir(choice, data_dir)
    if choice.kind == "named":
        return load_named(choice.source, data_dir, download=download, progress=progress)
    if choice.kind == "npz":
        return load_npz(choice.source)
    return load_folder(choice.source, channels)
