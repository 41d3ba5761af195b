"""PyTorch state_dict files (``.pt``/``.pth``) in and out of netspec's weights.

Reading never unpickles code: ``torch.load(weights_only=True)`` accepts tensors and plain
containers only. A file is mapped onto a network by key; missing, unexpected and mis-shaped
keys are all reported by name, at once. Accepted layouts: a state_dict (as
``model.state_dict()`` saves it), the same inside a ``{"state_dict": ...}`` or
``{"model_state_dict": ...}`` checkpoint, and keys prefixed ``module.`` (DistributedDataParallel
saves them so). Batchnorm's ``num_batches_tracked`` counters are ignored: netspec's momentum is
fixed, so they mean nothing to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from netspec.common.atomic import atomic_path
from netspec.common.errors import WeightsError
from netspec.common.extras import require_torch
from netspec.ops.shapes import format_shape

TORCH_SUFFIXES = (".pt", ".pth")
BATCH_COUNTER = "num_batches_tracked"
_WRAPPERS = ("state_dict", "model_state_dict")
_SHOWN = 8  # names listed per kind of mismatch before "and N more"


def is_torch_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in TORCH_SUFFIXES


def _listed(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a ``.pt``/``.pth`` state_dict as float arrays, keyed as saved (a
    ``module.`` prefix on every key removed; batch counters dropped)."""
    torch = require_torch(f"reading {path}")
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise WeightsError(f"{path}: claims more memory than this machine has; not a "
                           f"state_dict this network can use") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds on foreign files
        raise WeightsError(f"{path}: {_load_failure(exc)}") from None
    state = _unwrap(loaded, path)
    arrays: dict[str, np.ndarray] = {}
    bad: list[str] = []
    for key, value in state.items():
        if not isinstance(key, str):
            raise WeightsError(f"{path}: a key is a {type(key).__name__}, not a name")
        if key.rsplit(".", 1)[-1] == BATCH_COUNTER:
            continue
        if not isinstance(value, torch.Tensor):
            bad.append(f"{key!r} is a {type(value).__name__}, not a tensor")
            continue
        if value.is_complex() or not (value.is_floating_point() or value.dtype in (
                torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
            bad.append(f"{key!r} holds {value.dtype} values, not real numbers")
            continue
        # a view may claim more values than its storage holds (stride 0): refuse before
        # anything is allocated for it
        if value.numel() * value.element_size() > value.untyped_storage().nbytes():
            bad.append(f"{key!r} claims {value.numel():,} values but its data holds fewer")
            continue
        array = value.detach().to(torch.float64 if value.dtype == torch.float64
                                  else torch.float32).numpy()
        if not np.all(np.isfinite(array)):
            bad.append(f"{key!r} holds NaN or infinite values")
            continue
        arrays[key] = array
    if bad:
        raise WeightsError(f"{path}: {'; '.join(bad[:_SHOWN])}")
    prefix = "module."
    if arrays and all(key.startswith(prefix) for key in arrays):
        arrays = {key[len(prefix):]: value for key, value in arrays.items()}
    return arrays


def _load_failure(exc: Exception) -> str:
    """What went wrong in ``torch.load(weights_only=True)``, without its advice to load the
    file unsafely."""
    text = str(exc).strip()
    if "Weights only load failed" in text:
        skipped = ("Weights only load failed", "Please file an issue", "Check the documentation")
        details = [line.strip().removeprefix("WeightsUnpickler error:").strip()
                   for line in text.splitlines()]
        details = [line for line in details if line and not line.startswith(skipped)]
        return (f"holds something other than tensors and plain containers, which netspec "
                f"never unpickles ({'; '.join(details)[:200] or 'refused'}); save the weights "
                f"with torch.save(model.state_dict(), path)")
    first = text.split(". ")[0].splitlines()[0] if text else type(exc).__name__
    return f"not a readable PyTorch file (truncated, or another format: {first[:200]})"


def _unwrap(loaded: Any, path: Path) -> Mapping[str, Any]:
    if not isinstance(loaded, Mapping):
        raise WeightsError(f"{path}: holds a {type(loaded).__name__}, not a state_dict "
                           f"(a mapping of names to tensors)")
    for wrapper in _WRAPPERS:
        inner = loaded.get(wrapper)
        if isinstance(inner, Mapping):
            return inner
    return loaded


def fit_state_dict(arrays: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
                   path: str | Path) -> dict[str, np.ndarray]:
    """``arrays`` checked against a network's ``state()``: every problem by name at once."""
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    misshaped = [f"{key!r} is {format_shape(arrays[key].shape)}, the network needs "
                 f"{format_shape(target.shape)}"
                 for key, target in expected.items()
                 if key in arrays and arrays[key].shape != target.shape]
    problems = []
    if missing:
        problems.append(f"missing {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected {_listed(unexpected)}")
    if misshaped:
        problems.append("mis-shaped " + "; ".join(misshaped[:_SHOWN])
                        + (f" and {len(misshaped) - _SHOWN} more" if len(misshaped) > _SHOWN
                           else ""))
    if problems:
        raise WeightsError(f"{path}: does not fit this network: {'; '.join(problems)}")
    return {key: arrays[key] for key in expected}


def save_state_dict(path: str | Path, arrays: Mapping[str, np.ndarray],
                    batchnorm_nodes: list[str]) -> None:
    """Write netspec arrays as a PyTorch state_dict, atomically; each batchnorm node gets the
    ``num_batches_tracked`` counter that ``load_state_dict(strict=True)`` expects."""
    torch = require_torch(f"writing {path}")
    state = {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in arrays.items()}
    for node_id in batchnorm_nodes:
        state[f"{node_id}.{BATCH_COUNTER}"] = torch.tensor(0, dtype=torch.long)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
