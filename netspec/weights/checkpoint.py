"""Weights and checkpoint files: plain ``.npz`` archives, loaded without pickle.

A file holds ``param/<key>``, ``buffer/<key>`` and ``optim/<key>`` arrays and one ``meta``
array: UTF-8 JSON bytes (epoch, position, normalisation, spec hash, history, ...). Writing goes
through a temporary file and a rename, so a crash leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from netspec.common.atomic import atomic_path
from netspec.common.errors import WeightsError
from netspec.plan.compiler import Plan
from netspec.runtime.executor import Network
from netspec.weights.torch_weights import is_torch_file

FORMAT_VERSION = 1


def spec_hash(plan: Plan) -> str:
    """A fingerprint of what weights depend on: node ids, ops, and parameter/buffer shapes."""
    layout = [
        [node.id, node.op_name,
         sorted((name, list(spec.shape)) for name, spec in node.param_specs.items()),
         sorted((name, list(spec.shape)) for name, spec in node.buffer_specs.items())]
        for node in plan.nodes.values()
    ]
    return hashlib.sha256(json.dumps(layout).encode()).hexdigest()[:16]


@dataclass
class Checkpoint:
    """What a weights file holds, split by role."""

    params: dict[str, np.ndarray]
    buffers: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: str | Path, net: Network, *, optimizer: dict[str, np.ndarray] | None
                    = None, meta: dict[str, Any] | None = None) -> None:
    """Write the network's parameters and buffers (and optional optimizer state) atomically."""
    meta = {"format": FORMAT_VERSION, "spec": net.plan.name, "spec_hash": spec_hash(net.plan),
            **(meta or {})}
    arrays = {f"param/{k}": v for k, v in net.params.items()}
    arrays |= {f"buffer/{k}": v for k, v in net.buffers.items()}
    arrays |= {f"optim/{k}": v for k, v in (optimizer or {}).items()}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a weights file, reporting a missing, truncated or tampered file as such."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    # np.load would read anything else as a bare array or a pickle, neither of which we write
    if not zipfile.is_zipfile(path):
        raise WeightsError(f"{path}: not a netspec weights file (not an .npz archive: "
                           f"truncated, or another format)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    # MemoryError: an array header may claim any shape; numpy allocates before reading
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, MemoryError) as exc:
        raise WeightsError(f"{path}: not a readable netspec weights file (truncated or "
                           f"corrupt .npz: {exc})") from None
    # NpzFile hands back members that are not .npy data as raw bytes
    not_arrays = sorted(name for name, value in arrays.items()
                        if not isinstance(value, np.ndarray))
    if not_arrays:
        raise WeightsError(f"{path}: not a netspec weights file ('{not_arrays[0]}' is not "
                           f"an array)")
    if "meta" not in arrays or arrays["meta"].dtype != np.uint8:
        raise WeightsError(f"{path}: not a netspec weights file (no metadata)")
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WeightsError(f"{path}: its metadata is corrupt") from None
    if not isinstance(meta, dict):
        raise WeightsError(f"{path}: its metadata is corrupt (not a JSON object)")
    if meta.get("format") != FORMAT_VERSION:
        raise WeightsError(f"{path}: unsupported weights format {meta.get('format')!r}")
    parts: dict[str, dict[str, np.ndarray]] = {"param": {}, "buffer": {}, "optim": {}}
    for name, array in arrays.items():
        role, _, key = name.partition("/")
        if role not in parts or not key:
            raise WeightsError(f"{path}: unexpected entry '{name}'")
        parts[role][key] = array
    return Checkpoint(parts["param"], parts["buffer"], parts["optim"], meta)


def load_weights(path: str | Path, net: Network) -> Checkpoint:
    """Load a weights file into ``net``, refusing one written for a different spec.

    A ``.pt``/``.pth`` PyTorch state_dict is mapped by key instead (see
    :mod:`netspec.weights.torch_weights`); its checkpoint has no optimizer state and no
    metadata.
    """
    if is_torch_file(path):
        from netspec.weights.torch_weights import fit_state_dict, read_state_dict

        arrays = fit_state_dict(read_state_dict(path), net.state(), path)
        net.load_state(arrays)
        return Checkpoint({key: arrays[key] for key in net.params},
                          {key: arrays[key] for key in net.buffers}, meta={})
    checkpoint = read_checkpoint(path)
    expected = spec_hash(net.plan)
    if checkpoint.meta.get("spec_hash") != expected:
        raise WeightsError(
            f"{path}: these weights belong to spec '{checkpoint.meta.get('spec')}' (layout "
            f"{checkpoint.meta.get('spec_hash')}), not to '{net.plan.name}' (layout {expected}); "
            f"pass the spec the weights were trained with")
    for key, array in {**checkpoint.params, **checkpoint.buffers}.items():
        if array.dtype.kind not in "biuf":
            raise WeightsError(f"{path}: '{key}' holds {array.dtype} values, not real numbers")
        if not np.all(np.isfinite(array)):
            raise WeightsError(f"{path}: '{key}' holds NaN or infinite values")
    try:
        net.load_state({**checkpoint.params, **checkpoint.buffers})
    except Exception as exc:  # noqa: BLE001 - any mismatch is the file's fault
        raise WeightsError(f"{path}: {exc}") from None
    return checkpoint
