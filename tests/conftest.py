"""Shared pytest fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_python() -> Callable[[str], None]:
    """Runs Python code in a fresh interpreter (this checkout importable) and fails the test
    with its stderr unless it exits 0: for what only a new process shows (lazy imports)."""
    def run(code: str) -> None:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
        assert done.returncode == 0, done.stderr
    return run


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The offline MNIST copy (``NETSPEC_DATA_DIR`` or ``shared/datasets/mnist`` beside the repo).

    Tests never download: without a copy they skip, saying where the copy was looked for.
    """
    from netspec.data import MNIST_FILES

    override = os.environ.get("NETSPEC_DATA_DIR")
    if override:
        directory = Path(override).expanduser()
    else:
        directory = Path(__file__).resolve().parents[1].parent / "shared/datasets/mnist"
    missing = [
        name
        for name in MNIST_FILES
        if not (directory / name).is_file() and not (directory / f"{name}.gz").is_file()
    ]
    if missing:
        pytest.skip(
            f"MNIST copy not found at {directory} (missing {', '.join(missing)}); set "
            "NETSPEC_DATA_DIR to a directory holding the four MNIST files to run these tests"
        )
    return directory
