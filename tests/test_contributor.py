"""What a contributor runs: a fast subset (``-m "not slow"``), a summary that says why each
test skipped, the README's list of what the full run needs, and MNIST found where
``netspec train`` put it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from conftest import SLOW_MODULES, mnist_candidates, pytest_collection_modifyitems

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"


def test_the_slow_marker_is_declared_and_skips_say_why() -> None:
    options = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
        "tool"]["pytest"]["ini_options"]
    # -r: failures and errors listed as by default, skips with their reasons too
    report = next(option for option in options["addopts"].split() if option.startswith("-r"))
    assert {"f", "E", "s"} <= set(report[2:])
    assert any(marker.startswith("slow:") for marker in options["markers"])
    assert {path.name for path in TESTS.glob("test_*.py")} >= SLOW_MODULES


def _skip_calls(tree: ast.AST) -> list[ast.Call]:
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("skip", "skipif"):
            calls.append(node)
    return calls


def test_every_skip_in_the_tests_gives_its_reason() -> None:
    """A skip without a reason shows up in the summary as a bare location."""
    silent = []
    for path in sorted(TESTS.glob("*.py")):
        for call in _skip_calls(ast.parse(path.read_text(encoding="utf-8"))):
            keywords = {keyword.arg for keyword in call.keywords}
            positional = call.args[1:] if call.func.attr == "skipif" else call.args
            if not positional and not keywords & {"reason", "msg"}:
                silent.append(f"{path.name}:{call.lineno}")
    assert silent == []


def test_a_skip_without_a_reason_would_be_found() -> None:
    tree = ast.parse("import pytest\n@pytest.mark.skipif(True)\ndef test_x(): pytest.skip()\n")
    assert len(_skip_calls(tree)) == 2


def test_mnist_is_also_found_in_the_users_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("NETSPEC_DATA_DIR", raising=False)
    monkeypatch.delenv("NETSPEC_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert mnist_candidates() == [ROOT.parent / "shared/datasets/mnist",
                                  tmp_path / ".cache" / "netspec" / "mnist"]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert mnist_candidates()[-1] == tmp_path / "xdg" / "netspec" / "mnist"
    monkeypatch.setenv("NETSPEC_DATA_DIR", str(tmp_path / "mine"))
    assert mnist_candidates() == [tmp_path / "mine"]


def test_the_readme_says_how_to_run_the_fast_subset_and_what_the_full_run_needs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert '    python -m pytest -m "not slow"\n' in readme
    assert "    sudo apt-get install graphviz neovim chromium\n" in readme
    assert "~/.cache/netspec/mnist" in readme


class FakeItem:
    def __init__(self, name: str, test: str = "test_it") -> None:
        self.path, self.markers = TESTS / name, []
        self.nodeid = f"tests/{name}::{test}"

    def add_marker(self, marker: pytest.MarkDecorator) -> None:
        self.markers.append(marker.name)


def test_the_tests_of_a_slow_module_are_marked_slow() -> None:
    slow, fast = FakeItem("test_train.py"), FakeItem("test_spec.py")
    pytest_collection_modifyitems([slow, fast])
    assert (slow.markers, fast.markers) == (["slow"], [])


def test_the_longest_tests_start_first_and_the_rest_keep_their_order() -> None:
    readme = FakeItem("test_readme.py", "test_every_readme_command_runs_in_a_fresh_environment")
    torchrun = FakeItem("test_torch_engine.py", "test_torchrun_two_processes_train_the_global_"
                                                "batch_and_resume_after_a_kill")
    others = [FakeItem("test_spec.py", f"test_{k}") for k in range(3)]
    items = [others[0], torchrun, others[1], readme, others[2]]
    pytest_collection_modifyitems(items)
    assert items == [torchrun, readme, *others]
