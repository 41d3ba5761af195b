"""Shared pytest fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]

# Hypothesis' examples: ``ci`` (the default) draws the same ones at every run, from a seed
# fixed per test, so that a run's outcome depends on the code alone (a landing is never refused
# for a draw the previous run did not make); ``long`` (NETSPEC_HYPOTHESIS_PROFILE=long) draws
# fresh ones each time, and the property suites scale their counts by 20 under it: the search
# for what the fixed draws miss.
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("long", derandomize=False)
settings.load_profile(os.environ.get("NETSPEC_HYPOTHESIS_PROFILE", "ci"))


def worker_threads() -> int | None:
    """Under pytest-xdist (``-n auto``), each worker's share of the cores, which its BLAS and
    torch's OpenMP keep to: two workers whose threads each take every core wait on each
    other's spinning threads at every matrix product (see netspec/runtime/threads.py). None
    when the tests run in one process."""
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if "PYTEST_XDIST_WORKER" not in os.environ or not count:
        return None
    from netspec.runtime.threads import usable_cores

    return max(1, usable_cores() // int(count))


WORKER_THREADS = worker_threads()
if WORKER_THREADS is not None:
    # read by torch when it is first imported, and by the processes the tests start
    os.environ.setdefault("OMP_NUM_THREADS", str(WORKER_THREADS))


@pytest.fixture(scope="session", autouse=True)
def worker_share_of_the_cores():
    """Registers a worker as a netspec process that asked for its share, so that the CLI
    processes its tests start count it and take what is left (one thread at least)."""
    if WORKER_THREADS is None:
        yield
        return
    from netspec.runtime.threads import BlasThreads

    with BlasThreads(WORKER_THREADS):
        yield


@pytest.fixture
def fresh_python() -> Callable[[str], None]:
    """Runs Python code in a fresh interpreter (this checkout importable) and fails the test
    with its stderr unless it exits 0: for what only a new process shows (lazy imports)."""
    def run(code: str) -> None:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
        assert done.returncode == 0, done.stderr
    return run


# Modules whose tests take long, together or each: they train on MNIST, run PyTorch or
# onnxruntime, start other processes (the CLI as a user runs it, Neovim, torchrun), search with
# Hypothesis, check every op against finite differences and naive loops, or render pictures.
# `python -m pytest -m "not slow"` leaves them out: the fast subset (the language, the
# compiler, data, checkpoints, the CLI's parsing and messages) that a contributor runs while
# working (README, "Run the tests"); CI runs everything.
SLOW_MODULES = frozenset({
    "test_bad_inputs.py", "test_blocks_properties.py", "test_blocks_zoo.py",
    "test_blocks_zoo_properties.py", "test_mnist_copies.py",
    "test_cli_behaviour.py", "test_cli_train.py", "test_convops.py",
    "test_convops_interchange.py", "test_data_properties.py", "test_data_sources.py",
    "test_executor.py", "test_fast_paths.py", "test_fusion.py", "test_gradcheck.py",
    "test_initializers.py", "test_kill_resume.py", "test_lsp.py", "test_lsp_neovim.py",
    "test_onnx.py", "test_onnx_conformance.py", "test_onnx_import_checks.py",
    "test_onnx_torch.py", "test_onnx_transformers.py", "test_ops.py", "test_optim.py",
    "test_parity_torch.py", "test_pictures.py", "test_plots.py", "test_png.py",
    "test_predict.py", "test_profile.py", "test_properties.py", "test_report.py",
    "test_resnet_twin.py", "test_runs.py", "test_schema.py", "test_startup.py",
    "test_tensor_ops.py", "test_threads.py", "test_torch_engine.py", "test_torch_export.py",
    "test_torchvision_convnets.py", "test_train.py", "test_transformer_zoo.py",
    "test_zoo_torchvision.py",
})


# the longest tests by far (the README's sequences take minutes), started first so that under
# `-n auto` no worker is still running one of them after the others have finished
LONGEST_FIRST = (
    "tests/test_readme.py::test_every_readme_command_runs_in_a_fresh_environment",
    "tests/test_torch_engine.py::test_torchrun_two_processes_train_the_global_batch_and_resume",
)
# a worker holds up to 4 GB at its peak (the full-size torchvision comparisons)
MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    from netspec.runtime.threads import usable_cores

    return min(MAX_WORKERS, usable_cores())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: not item.nodeid.startswith(LONGEST_FIRST))


def mnist_candidates() -> list[Path]:
    """Where the tests look for MNIST: ``NETSPEC_DATA_DIR`` when set; else
    ``shared/datasets/mnist`` beside the repository, then the copy ``netspec train``
    downloaded into the user's cache (``~/.cache/netspec/mnist``)."""
    from netspec.data import default_cache_dir

    override = os.environ.get("NETSPEC_DATA_DIR")
    if override:
        return [Path(override).expanduser()]
    return [ROOT.parent / "shared/datasets/mnist", default_cache_dir()]


# read before any test changes the environment (tests of the cache set NETSPEC_CACHE_DIR)
MNIST_CANDIDATES = mnist_candidates()


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The offline MNIST copy: the first of :func:`mnist_candidates` holding the four files.

    Tests never download: without a copy they skip, saying where the copy was looked for.
    """
    from netspec.data import MNIST_FILES

    looked = []
    for directory in MNIST_CANDIDATES:
        missing = [name for name in MNIST_FILES
                   if not (directory / name).is_file() and not (directory / f"{name}.gz").is_file()]
        if not missing:
            return directory
        looked.append(f"{directory} (missing {', '.join(missing)})")
    pytest.skip(f"MNIST copy not found in {'; nor in '.join(looked)}; run `netspec train "
                f"lenet5` once to download it, or set NETSPEC_DATA_DIR to a directory holding "
                f"the four MNIST files")
