"""The install lines name this project: ``netspec`` on the package registry is an unrelated
project, so every line says ``netspec-nn`` (from the registry) or this checkout (``pip install
-e``), quoted for zsh, and nothing in the repository or in netspec's messages says the old
form."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from netspec.common import extras
from netspec.common.errors import NetspecError
from netspec.common.extras import DISTRIBUTION, install_line, require, require_torch
from netspec.runtime.doctor import EXTRAS, diagnose

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
# the old forms, spelt so that this file does not match them itself: netspec followed by an
# extra in brackets, and a bare install of netspec (the registry's unrelated project)
OLD_FORMS = re.compile(r"netspec" + r"\[|pip install ['\"]?netspec(?![-\w])")


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    files = []
    for name in filter(None, listed):
        path = ROOT / name
        if path.suffix in {".py", ".md", ".toml", ".txt", ".json", ".cfg", ".sh", ".lua", ""}:
            files.append(path)
    return files


def test_the_distribution_has_a_name_of_its_own() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["name"] == DISTRIBUTION == "netspec-nn"
    # the command and the import keep the project's name
    assert project["scripts"] == {"netspec": "netspec.cli:main"}


def test_no_file_of_the_repository_says_the_old_install_line() -> None:
    found = []
    for path in tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if OLD_FORMS.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []


def test_the_line_names_the_registry_or_the_checkout(tmp_path, monkeypatch) -> None:
    assert install_line("torch", checkout=None) == 'pip install "netspec-nn[torch]"'
    assert install_line(checkout=None) == 'pip install "netspec-nn"'
    monkeypatch.chdir(ROOT)
    assert install_line("lsp") == 'pip install -e ".[lsp]"'
    monkeypatch.chdir(tmp_path)
    assert install_line("lsp") == f'pip install -e "{ROOT}[lsp]"'
    # an installed copy has no pyproject.toml of ours beside the package: the registry's line
    monkeypatch.setattr(extras, "_CHECKOUT", tmp_path)
    assert extras.checkout_root() is None
    assert install_line("onnx") == 'pip install "netspec-nn[onnx]"'
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "netspec"\n')
    assert install_line("onnx") == 'pip install "netspec-nn[onnx]"'


@pytest.mark.parametrize("checkout", [None, ROOT], ids=["registry", "checkout"])
def test_the_messages_give_the_new_line(checkout, monkeypatch) -> None:
    if checkout is None:
        monkeypatch.setattr(extras, "_CHECKOUT", Path("/nonexistent"))
    messages = []
    with pytest.raises(NetspecError) as raised:
        require("netspec_no_such_module", "onnx", "ONNX export")
    messages.append(str(raised.value))
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(NetspecError) as raised:
        require_torch("exporting to PyTorch")
    messages.append(str(raised.value))
    monkeypatch.setattr("netspec.runtime.doctor._version", lambda name: None)
    monkeypatch.setattr("netspec.runtime.doctor._torch_devices", lambda: [])  # seconds, unused
    messages += [check.detail for check in diagnose(verify_mnist=False)
                 if check.name.endswith(" extra")]
    assert len(messages) == 2 + len(EXTRAS)
    expected = 'pip install "netspec-nn[' if checkout is None else "pip install -e \""
    for message in messages:
        assert expected in message and not OLD_FORMS.search(message), message
