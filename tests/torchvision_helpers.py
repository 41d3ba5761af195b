"""torchvision's model code as the reference for shipped torchvision architectures.

torchvision's compiled ops do not load beside this torch build, and the models do not need
them: with ``torch.library.register_fake`` made a no-op decorator before the import, its
Python model code loads. Tests call :func:`torchvision_models`, which skips without torch or
torchvision.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType

import numpy as np
import pytest


def torchvision_models() -> ModuleType:
    """``torchvision.models``, or a skip saying what is missing."""
    torch = pytest.importorskip("torch")
    # patched before the first import: without its compiled ops, torchvision's import stops
    # with a RuntimeError (operator torchvision::nms does not exist) half-way, not ImportError
    original = torch.library.register_fake
    torch.library.register_fake = lambda *args, **kwargs: (lambda function: function)
    try:
        import torchvision  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"torchvision is not installed ({exc})")
    finally:
        torch.library.register_fake = original
    import torchvision.models

    return torchvision.models


def torch_state(model: object) -> dict[str, np.ndarray]:
    """A torch module's state_dict as float64 arrays, less ``num_batches_tracked``."""
    return {key: value.detach().double().numpy() for key, value in model.state_dict().items()
            if not key.endswith("num_batches_tracked")}


def copy_into(arrays: Mapping[str, np.ndarray], model: object) -> None:
    """Load netspec arrays into a torch module by key (num_batches_tracked left as it is)."""
    import torch

    state = model.state_dict()
    missing = set(k for k in state if not k.endswith("num_batches_tracked")) - set(arrays)
    assert not missing, f"keys netspec lacks: {sorted(missing)[:5]}"
    for key in state:
        if key in arrays:
            state[key] = torch.as_tensor(arrays[key])
    # the state_dict itself, metadata and all: MNASNet reads its version from the metadata
    model.load_state_dict(state)
