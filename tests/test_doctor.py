"""``netspec doctor``: the checks the library returns and the table the CLI prints."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from netspec.cli import main
from netspec.common.extras import install_line
from netspec.runtime import doctor
from netspec.runtime.doctor import MISSING, OK, diagnose

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

# the torch engine's devices and backends are reported where torch is installed
TORCH_LINES = ["torch CUDA", "torch distributed"] if importlib.util.find_spec("torch") else []
NAMES = ["python", "platform", "netspec", "numpy", "pydantic", "networkx", "BLAS",
         "BLAS threads", "CPUs", "memory", "MNIST", "plot extra", "image extra", "torch extra",
         "onnx extra", "lsp extra", "threads extra", "tensorboard extra",
         "test extra", *TORCH_LINES, "graphviz"]


REAL_TORCH_DEVICES = doctor._torch_devices


@pytest.fixture(scope="module")
def torch_probe() -> list:
    """The torch devices' checks, probed once: each probe imports torch in a child process
    (seconds), and only test_torch_devices_and_backends_are_reported is about them."""
    return doctor._torch_devices()


@pytest.fixture(autouse=True)
def probed_once(torch_probe, monkeypatch) -> None:
    monkeypatch.setattr(doctor, "_torch_devices", lambda: torch_probe)


def by_name(checks) -> dict:
    return {check.name: check for check in checks}


def test_every_check_is_reported_in_order(mnist_dir: Path) -> None:
    checks = diagnose(mnist_dir)
    assert [check.name for check in checks] == NAMES
    found = by_name(checks)
    assert found["numpy"].detail == np.__version__
    assert found["CPUs"].detail.startswith(str(os.cpu_count()))
    mnist = found["MNIST"]
    assert mnist.status == OK
    assert str(mnist_dir.resolve()) in mnist.detail and "checksums verified" in mnist.detail


def test_missing_mnist_says_where_it_looked_and_what_to_do(tmp_path: Path) -> None:
    mnist = by_name(diagnose(tmp_path / "nowhere"))["MNIST"]
    assert mnist.status == MISSING
    assert str(tmp_path / "nowhere") in mnist.detail and "--data-dir" in mnist.detail


def test_damaged_mnist_names_the_file(mnist_dir: Path, tmp_path: Path) -> None:
    for path in mnist_dir.iterdir():
        if "ubyte" in path.name:
            (tmp_path / path.name).symlink_to(path)
    labels = next(tmp_path.glob("t10k-labels*"))
    labels.unlink()
    labels.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07")
    mnist = by_name(diagnose(tmp_path))["MNIST"]
    assert mnist.status == MISSING
    assert labels.name in mnist.detail


def test_absent_extras_are_optional_and_say_what_they_are_for(monkeypatch) -> None:
    real_version, real_find_spec = doctor._version, doctor.importlib.util.find_spec
    monkeypatch.setattr(doctor, "_version",
                        lambda name: None if name in ("torch", "Pillow") else real_version(name))
    monkeypatch.setattr(doctor.importlib.util, "find_spec",
                        lambda name: None if name == "torch" else real_find_spec(name))
    monkeypatch.setattr(doctor, "_torch_devices", REAL_TORCH_DEVICES)
    monkeypatch.setattr(doctor.shutil, "which", lambda program: None)
    found = by_name(diagnose(verify_mnist=False))
    assert "torch CUDA" not in found
    for name, use in (("torch extra", "parity"), ("image extra", "predict"),
                      ("graphviz", "layout")):
        assert found[name].status == MISSING
        assert "optional" in found[name].detail and use in found[name].detail
    # an extra half there names what is missing and the line that installs it
    plot = found["plot extra"].detail
    assert "Pillow not installed (matplotlib" in plot and install_line("plot") in plot
    assert install_line("torch") in found["torch extra"].detail
    # netspec draws .png without Graphviz: the doctor does not say otherwise
    assert "without it netspec lays out every format itself" in found["graphviz"].detail


def test_every_extra_of_pyproject_is_reported() -> None:
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml")
                              .read_text(encoding="utf-8"))
    extras = pyproject["project"]["optional-dependencies"]
    assert set(doctor.EXTRAS) == set(extras)
    for extra, requirements in extras.items():
        named = {re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower()
                 for requirement in requirements}
        assert named == {package.lower() for package in doctor.EXTRAS[extra][0]}, extra


def test_blas_threads_follow_the_environment(monkeypatch) -> None:
    monkeypatch.setattr(doctor, "_threadpools", lambda: [])
    # whatever the shell (or a parallel test run) set
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    assert by_name(diagnose(verify_mnist=False))["BLAS threads"].detail == \
        "OPENBLAS_NUM_THREADS=3"
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    assert "not limited" in by_name(diagnose(verify_mnist=False))["BLAS threads"].detail


def test_blas_from_threadpoolctl_when_it_is_installed(monkeypatch) -> None:
    pools = [{"user_api": "blas", "internal_api": "openblas", "version": "0.3.99",
              "num_threads": 5, "filepath": "/lib/libopenblas.so"}]
    monkeypatch.setattr(doctor, "_threadpools", lambda: pools)
    found = by_name(diagnose(verify_mnist=False))
    assert found["BLAS"].detail == "openblas 0.3.99 (/lib/libopenblas.so)"
    assert found["BLAS threads"].detail == "openblas: 5"


def test_unknown_memory_is_said_to_switch_the_guard_off(monkeypatch) -> None:
    monkeypatch.setattr(doctor, "total_memory", lambda: None)
    monkeypatch.setattr(doctor, "available_memory", lambda: None)
    assert "guard is off" in by_name(diagnose(verify_mnist=False))["memory"].detail


def test_cli_prints_a_table(mnist_dir: Path, capsys) -> None:
    assert main(["doctor", "--data-dir", str(mnist_dir), "--quick"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["check", "status", "detail"]
    assert set(lines[1]) == {"-"}
    assert [line.split()[0] for line in lines[2:]] == [name.split()[0] for name in NAMES]


@pytest.mark.parametrize("quick", [True, False])
def test_cli_json(mnist_dir: Path, capsys, quick: bool) -> None:
    argv = ["doctor", "--json", "--data-dir", str(mnist_dir)] + (["--quick"] if quick else [])
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert [entry["name"] for entry in report] == NAMES
    assert {entry["name"]: entry["status"] for entry in report}["MNIST"] == OK


def test_torch_devices_and_backends_are_reported() -> None:
    torch = pytest.importorskip("torch")
    found = by_name(diagnose(verify_mnist=False))
    assert ("gloo (CPU) available" in found["torch distributed"].detail) == \
        torch.distributed.is_gloo_available()
    if torch.cuda.is_available():
        assert found["torch CUDA"].status == OK and "cuda:0" in found["torch CUDA"].detail
    else:
        assert "trains on --device cpu" in found["torch CUDA"].detail
