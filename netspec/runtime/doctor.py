"""What this machine offers netspec: versions, BLAS and threads, CPUs, memory, MNIST, extras.

``netspec doctor`` prints these checks; bug reports start with them. Nothing here downloads,
and optional packages are looked up without importing them (importing torch takes seconds).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from netspec.common.errors import DataError
from netspec.common.extras import install_line
from netspec.common.tables import human_bytes
from netspec.common.version import __version__
from netspec.data import MNIST_FILES, load_mnist
from netspec.data.mnist import DATA_DIR_ENV
from netspec.lang.shipped import PACKAGE_DIR
from netspec.plan.budget import available_memory, total_memory

OK, MISSING, INFO, PROBLEM = "ok", "missing", "info", "problem"
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# each optional extra of pyproject.toml: its distributions, and what netspec uses it for
# (tests/test_doctor.py checks the names against pyproject.toml)
EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "plot": (("matplotlib", "Pillow"), "training plots and netspec plot"),
    "image": (("Pillow",), "netspec predict and folder data on picture files (.png, .jpg)"),
    "torch": (("torch",), "--engine torch, .py/.pt export, .pt weights and parity tests"),
    "onnx": (("onnx", "onnxruntime"), "netspec export to .onnx (checked against onnxruntime) "
                                      "and netspec import"),
    "lsp": (("pygls",), "netspec lsp, the language server for editors"),
    "threads": (("threadpoolctl",), "--threads and sharing the cores between netspec "
                                    "processes"),
    "tensorboard": (("tensorboard",), "TensorBoard event files in each run directory"),
    "test": (("pytest", "pytest-xdist", "hypothesis", "ruff", "onnxruntime", "jsonschema",
              "taplo", "onnxscript"),
             "running the tests"),
}


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, how it stands, and the details."""

    name: str
    status: str
    detail: str


def diagnose(data_dir: str | os.PathLike[str] | None = None, *,
             verify_mnist: bool = True) -> list[Check]:
    """Every check, in the order ``netspec doctor`` prints them."""
    checks = [
        Check("python", OK, f"{platform.python_version()} ({sys.executable})"),
        Check("platform", INFO, platform.platform()),
        Check("netspec", OK, f"{__version__} ({PACKAGE_DIR})"),
    ]
    checks += [_package(name) for name in ("numpy", "pydantic", "networkx")]
    checks += _blas()
    checks.append(_cpus())
    checks.append(_memory())
    checks.append(_mnist(data_dir, verify_mnist))
    checks += [_extra(name, *packages_and_use) for name, packages_and_use in EXTRAS.items()]
    checks += _torch_devices()
    checks.append(_graphviz())
    return checks


def as_dicts(checks: list[Check]) -> list[dict[str, Any]]:
    return [asdict(check) for check in checks]


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _package(name: str) -> Check:
    version = _version(name)
    return Check(name, OK, version) if version else Check(name, PROBLEM, "not installed; "
                                                          f"{install_line()}")


def _extra(extra: str, packages: tuple[str, ...], use: str) -> Check:
    """One optional extra: the version of each of its packages, or what is missing and the
    line that installs it. Looked up in the installed metadata: nothing is imported."""
    versions = {package: _version(package) for package in packages}
    missing = [package for package, version in versions.items() if version is None]
    found = ", ".join(f"{package} {version}" for package, version in versions.items()
                      if version is not None)
    name = f"{extra} extra"
    if not missing:
        return Check(name, OK, f"{found}, for {use}")
    lacking = f"{', '.join(missing)} not installed" + (f" ({found} is)" if found else "")
    return Check(name, MISSING, f"optional, for {use}; {lacking}: {install_line(extra)}")


# run in a child process: importing torch takes seconds, and a broken install must not take
# the report down with it
_TORCH_PROBE = """
import json, torch, torch.distributed as dist
cuda = torch.cuda.is_available()
devices = [[torch.cuda.get_device_name(i), torch.cuda.get_device_properties(i).total_memory]
           for i in range(torch.cuda.device_count())] if cuda else []
print(json.dumps({"cuda_build": torch.version.cuda, "devices": devices,
                  "distributed": dist.is_available(),
                  "gloo": dist.is_available() and dist.is_gloo_available(),
                  "nccl": dist.is_available() and dist.is_nccl_available()}))
"""


def _torch_devices() -> list[Check]:
    """What the torch engine can use: CUDA devices and the distributed backends."""
    if importlib.util.find_spec("torch") is None:
        return []
    try:
        done = subprocess.run([sys.executable, "-c", _TORCH_PROBE], capture_output=True,
                              text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [Check("torch devices", PROBLEM, f"importing torch failed: {exc}")]
    try:
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return [Check("torch devices", PROBLEM, f"importing torch failed: {reason}")]
    devices = found["devices"]
    if devices:
        listed = ", ".join(f"cuda:{i} {name} ({human_bytes(memory)})"
                           for i, (name, memory) in enumerate(devices))
        cuda = Check("torch CUDA", OK, f"{len(devices)} device(s): {listed}")
    else:
        build = f"CUDA {found['cuda_build']} build" if found["cuda_build"] else "a CPU-only build"
        cuda = Check("torch CUDA", INFO, f"no CUDA device ({build}); --engine torch trains "
                                         f"on --device cpu")
    backends = [f"gloo (CPU) {'available' if found['gloo'] else 'missing'}",
                f"nccl (CUDA) {'available' if found['nccl'] else 'missing'}"]
    status = OK if found["gloo"] or found["nccl"] else MISSING
    detail = "; ".join(backends) if found["distributed"] else \
        "torch.distributed is not built in: torchrun cannot train"
    return [cuda, Check("torch distributed", status, f"{detail} (for torchrun ... "
                                                     f"--engine torch)")]


def _graphviz() -> Check:
    dot = shutil.which("dot")
    use = "Graphviz's layout of netspec draw's .svg and .png"
    if dot is None:
        return Check("graphviz", MISSING, f"optional, for {use} (install Graphviz so that "
                                          f"`dot` is on PATH); without it netspec lays out "
                                          f"every format itself")
    try:
        done = subprocess.run([dot, "-V"], capture_output=True, text=True, timeout=10)
        version = (done.stderr or done.stdout).strip().replace("dot - graphviz version ", "")
    except (OSError, subprocess.SubprocessError):
        version = "version unknown"
    return Check("graphviz", OK, f"{version} ({dot}), for {use}")


def _blas() -> list[Check]:
    """The BLAS NumPy uses and its thread count: threadpoolctl knows both when installed;
    otherwise NumPy's build configuration names it and the environment sets the threads."""
    pools = _threadpools()
    if pools:
        return [Check("BLAS", OK, f"{pool.get('internal_api')} {pool.get('version') or ''} "
                                  f"({pool.get('filepath')})".replace("  ", " "))
                for pool in pools if pool.get("user_api") == "blas"] + [
            Check("BLAS threads", INFO, ", ".join(
                f"{pool.get('internal_api')}: {pool.get('num_threads')}" for pool in pools))]
    blas = _numpy_blas()
    name = f"{blas.get('name', 'unknown')} {blas.get('version', '')}".strip() if blas \
        else "unknown (this NumPy does not report its build configuration)"
    set_by = [f"{v}={os.environ[v]}" for v in THREAD_VARIABLES if os.environ.get(v)]
    threads = ", ".join(set_by) if set_by else (
        f"not limited: the BLAS default, usually one per CPU ({os.cpu_count()}); set "
        f"OPENBLAS_NUM_THREADS or OMP_NUM_THREADS to change it")
    return [Check("BLAS", OK if blas else INFO, name), Check("BLAS threads", INFO, threads)]


def _threadpools() -> list[dict[str, Any]]:
    if importlib.util.find_spec("threadpoolctl") is None:
        return []
    from threadpoolctl import threadpool_info

    from netspec.runtime.threads import load_blas

    load_blas()
    return list(threadpool_info())


def _numpy_blas() -> dict[str, Any]:
    try:
        config = np.show_config(mode="dicts")
    except TypeError:  # NumPy before 1.26 only prints its configuration
        return {}
    blas = (config or {}).get("Build Dependencies", {}).get("blas", {})
    return blas if isinstance(blas, dict) and blas.get("found", True) else {}


def _cpus() -> Check:
    count = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    if count is None:
        return Check("CPUs", INFO, "unknown")
    detail = f"{count}" + (f" ({usable} usable by this process)" if usable not in (None, count)
                           else "")
    return Check("CPUs", OK, detail)


def _memory() -> Check:
    total, available = total_memory(), available_memory()
    if total is None and available is None:
        return Check("memory", INFO, "unknown on this platform; the memory guard is off")
    parts = []
    if total is not None:
        parts.append(f"{human_bytes(total)} total")
    if available is not None:
        parts.append(f"{human_bytes(available)} available")
    return Check("memory", OK, ", ".join(parts))


def _mnist(data_dir: str | os.PathLike[str] | None, verify: bool) -> Check:
    """Where MNIST is, and whether its checksums hold; never downloads."""
    try:
        if not verify:
            from netspec.data import locate_mnist

            return Check("MNIST", OK, f"found in {locate_mnist(data_dir, download=False)} "
                                      f"(not verified)")
        data = load_mnist(data_dir, download=False)
    except DataError as exc:
        explicit = data_dir is not None or os.environ.get(DATA_DIR_ENV)
        download = "" if explicit else (" netspec train downloads it when it has to; this "
                                        "check never does.")
        return Check("MNIST", MISSING, f"{exc}{download}")
    images = len(data.train_images) + len(data.test_images)
    return Check("MNIST", OK, f"{data.source}: {len(MNIST_FILES)} files, {images:,} images, "
                              f"checksums verified")


__all__ = ["Check", "as_dicts", "diagnose"]
