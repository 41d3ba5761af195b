"""The command line starts at once: ``--help``, ``list``, ``schema`` and every argument error
load none of the heavy libraries, and a command loads what it uses only. Each case runs in a
fresh interpreter, which records the modules loaded when it exits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netspec.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("numpy", "networkx", "pydantic", "matplotlib", "PIL", "torch", "onnx", "pygls")
RECORD = """\
import atexit, json, sys
atexit.register(lambda: print("\\nMODULES " + json.dumps(sorted(sys.modules))))
from netspec.cli import main
sys.exit(main(sys.argv[1:]))
"""


def loaded_modules(*argv: str, cwd: Path | None = None) -> tuple[int, set[str], str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", RECORD, *argv], capture_output=True,
                         text=True, env=env, cwd=cwd or ROOT, timeout=120)
    line = next(line for line in run.stdout.splitlines() if line.startswith("MODULES "))
    return run.returncode, set(json.loads(line.removeprefix("MODULES "))), run.stderr


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(name for name in modules if name.split(".")[0] in HEAVY)


def commands() -> list[str]:
    """Every command the parser offers, so that a new command is checked too."""
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


LIGHT = [
    ["--help"],
    ["list"],
    ["schema"],
    ["nosuchcommand"],
    [],
    ["compile"],
    ["compile", "lenet5", "--batch-size", "zero"],
]


@pytest.mark.parametrize("argv", LIGHT, ids=lambda argv: " ".join(argv) or "(nothing)")
def test_light_commands_and_argument_errors_import_no_heavy_library(argv, tmp_path):
    code, modules, err = loaded_modules(*argv, cwd=tmp_path)
    assert code in (0, 2), err
    assert heavy_in(modules) == []


def test_schema_to_a_file_imports_no_heavy_library(tmp_path):
    code, modules, err = loaded_modules("schema", "-o", str(tmp_path / "s.json"))
    assert code == 0, err
    assert heavy_in(modules) == []
    assert (tmp_path / "s.json").is_file()


@pytest.mark.parametrize("command", commands())
def test_every_command_parses_its_arguments_without_heavy_imports(command):
    for argv in ([command, "--help"], [command, "--no-such-option"]):
        code, modules, err = loaded_modules(*argv)
        assert code in (0, 2), err
        assert heavy_in(modules) == [], argv


def test_each_command_is_registered_by_the_module_the_table_names():
    import argparse

    from netspec.cli import COMMAND_MODULES, MODULE_OF_COMMAND

    registered = {}
    for module in COMMAND_MODULES:
        parser = argparse.ArgumentParser()
        __import__(f"netspec.cli.{module}", fromlist=["register"]).register(
            parser.add_subparsers(dest="command"))
        action = next(a for a in parser._actions if a.dest == "command")
        registered.update(dict.fromkeys(action.choices, module))
    assert registered == MODULE_OF_COMMAND
    assert set(commands()) == set(MODULE_OF_COMMAND)


@pytest.mark.parametrize("command", commands())
def test_a_command_alone_parses_as_with_every_command_registered(command):
    whole = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    from netspec.cli import MODULE_OF_COMMAND

    alone = next(a for a in build_parser([command, "x"])._actions if a.dest == "command").choices
    module = MODULE_OF_COMMAND[command]
    assert set(alone) == {name for name, of in MODULE_OF_COMMAND.items() if of == module}
    assert alone[command].format_help() == whole.format_help()


def test_an_unknown_command_still_lists_every_command(capsys):
    from netspec.cli import main

    with pytest.raises(SystemExit):
        main(["compil", "lenet5"])
    err = capsys.readouterr().err
    assert "invalid choice: 'compil'" in err and "train" in err and "lsp" in err


def test_compile_loads_the_compiler_but_nothing_it_does_not_use():
    code, modules, err = loaded_modules("compile", "lenet5")
    assert code == 0, err
    assert {"networkx", "pydantic"} <= modules
    # the compiler computes nothing: NumPy is named (lazily) by the ops but never loaded
    assert "numpy._core" not in modules and "numpy.linalg" not in modules
    for unused in ("matplotlib", "PIL", "torch", "onnx", "pygls", "netspec.runtime.executor",
                   "netspec.train.loop", "netspec.pictures"):
        assert unused not in modules, unused


def test_list_compiles_only_when_the_stored_figures_are_stale(tmp_path, capsys, monkeypatch):
    from netspec.cli import main
    from netspec.plan import catalog

    shipped = tmp_path / "architectures"
    shutil.copytree(catalog.SHIPPED_DIR, shipped)
    stored = tmp_path / "catalog.json"
    stored.write_text(catalog.CATALOG_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    assert catalog.stored_entries(shipped, stored) is not None

    # an edited spec (an install changed by hand): the figures are computed again, not trusted
    mlp = shipped / "mlp.toml"
    mlp.write_text(mlp.read_text(encoding="utf-8").replace("out_features = 256",
                                                           "out_features = 100"),
                   encoding="utf-8")
    assert catalog.stored_entries(shipped, stored) is None
    entries = {entry.name: entry for entry in catalog.listing(shipped, stored)}
    assert entries["mlp"].params == 784 * 100 + 100 + 100 * 128 + 128 + 128 * 10 + 10

    # a broken one is listed as such, the others still are
    mlp.write_text("[nodes.x]\nop = 'nope'\n", encoding="utf-8")
    entries = {entry.name: entry for entry in catalog.listing(shipped, stored)}
    assert entries["mlp"].error.startswith("does not compile: ")
    assert entries["lenet5"].params == 61706

    monkeypatch.setattr(catalog, "SHIPPED_DIR", shipped)
    monkeypatch.setattr(catalog, "CATALOG_FILE", stored)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "does not compile" in out and "61,706" in out


def test_an_unreadable_catalog_means_compiling(tmp_path):
    from netspec.plan import catalog

    stored = tmp_path / "catalog.json"
    wrong_entry = json.dumps({"digest": catalog.architectures_digest(),
                              "architectures": [{"x": 1}]})
    for text in ("", "[]", '{"digest": 1}', wrong_entry):
        stored.write_text(text, encoding="utf-8")
        assert catalog.stored_entries(catalog.SHIPPED_DIR, stored) is None
    entries = catalog.listing(catalog.SHIPPED_DIR, stored)
    assert [e.name for e in entries] == [p.stem for p in catalog.shipped_architectures()]


def test_a_lazy_module_loads_on_first_use_and_is_then_the_module_itself(fresh_python):
    code = (
        "import sys; from netspec.common.lazy import lazy_import; json = lazy_import('json'); "
        "assert 'json.decoder' not in sys.modules; "
        "assert json.dumps([1]) == '[1]' and 'json.decoder' in sys.modules; "
        "assert lazy_import('json') is json is sys.modules['json']; "
        "from netspec.ops import REGISTRY; import numpy; "
        "assert numpy.ones(2).sum() == 2.0"
    )
    fresh_python(code)


def test_a_lazy_import_of_a_missing_module_fails_at_once():
    from netspec.common.lazy import lazy_import

    with pytest.raises(ModuleNotFoundError, match="no_such_module_here"):
        lazy_import("no_such_module_here")
