"""The README's command blocks run as written, in order, in a fresh environment.

Every indented command block of README.md is run line by line with bash, in README order, in
a copy of this checkout (the README's commands are written for its root: `docs/digits/...`,
`tools/...`), with an empty HOME (so no cache of an earlier run is found) and the MNIST copy
the other tests use as ``NETSPEC_DATA_DIR``. `netspec` is this checkout's, through a small
launcher on PATH.

What the test changes, and why (the README's text stays literal):

- **Trainings are short.** The launcher appends ``--epochs 1 --limit 1200 --validation 200``
  to every ``netspec train`` that starts a run (options given last win in argparse), so each
  takes seconds instead of minutes. ``--resume`` gets nothing (it refuses options).
- **Skipped commands**, each named with its reason in ``SKIPPED`` (and the test fails if an
  entry no longer matches any README command): package installs (the network), the
  Fashion-MNIST download (the network), CUDA and torchrun lines (a GPU), the test suite
  itself, and the full benchmark against PyTorch (many minutes).

A command block is a markdown block indented by four spaces whose lines start with a command
(``netspec``, ``python``, ``pip``, ``torchrun``); the other indented blocks show error
messages and are not run. A block mixing the two fails the test, so that no command hides in
an example.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
COMMANDS = ("netspec", "python", "pip", "torchrun")
# appended to each `netspec train` that starts a run (see the module's docstring)
SHORT_TRAINING = ["--epochs", "1", "--limit", "1200", "--validation", "200"]
# (a regular expression a command matches, why it is not run here)
SKIPPED = [
    (r"^pip install", "installs packages from the package registry: needs the network"),
    (r"--data fashion-mnist", "downloads Fashion-MNIST from its publisher: needs the network"),
    (r"--device cuda", "needs a CUDA GPU"),
    (r"^torchrun", "needs CUDA GPUs for 4 processes"),
    (r"^python -m pytest", "the test suite itself"),
    (r"^python tools/bench\.py", "benchmarks every shipped architecture against PyTorch: "
     "many minutes of CPU, not a step of a sequence"),
]
LAUNCHER = """\
#!{python}
# netspec of the checkout under test; a new training run is made short (tests/test_readme.py)
import sys
sys.path.insert(0, {root!r})
from netspec.cli import main
argv = sys.argv[1:]
if argv[:1] == ["train"] and "--resume" not in argv:
    argv += {short!r}
sys.exit(main(argv))
"""


def command_blocks(text: str) -> list[list[str]]:
    """The README's indented blocks of commands, each as its lines, in order."""
    blocks: list[list[str]] = []
    current: list[str] = []
    fenced = False
    previous_blank = True
    for line in text.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not fenced and line.startswith("    ") and (current or previous_blank):
            current.append(line[4:])
        else:
            if current:
                blocks.append(current)
            current = []
        previous_blank = not line.strip()
    if current:
        blocks.append(current)
    runnable = []
    for block in blocks:
        commands = [line.split(" ", 1)[0] in COMMANDS for line in block if line.strip()]
        assert all(commands) or not any(commands), f"a block mixes commands and text: {block}"
        if all(commands):
            runnable.append([line for line in block if line.strip()])
    return runnable


def steps(line: str) -> list[str]:
    """A README line's commands (``a && b`` is two), without its trailing comment."""
    command = re.sub(r"\s+#.*$", "", line).strip()
    return [part.strip() for part in command.split(" && ")]


def skip_reason(command: str) -> str | None:
    return next((why for pattern, why in SKIPPED if re.search(pattern, command)), None)


def test_the_readme_blocks_are_found_and_every_skip_still_applies():
    blocks = command_blocks(README.read_text(encoding="utf-8"))
    commands = [c for block in blocks for line in block for c in steps(line)]
    assert len(blocks) >= 10 and len(commands) >= 40
    for pattern, _ in SKIPPED:
        assert any(re.search(pattern, command) for command in commands), pattern


@pytest.mark.slow
def test_every_readme_command_runs_in_a_fresh_environment(tmp_path, mnist_dir):
    work = tmp_path / "checkout"
    shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(
        ".git", "runs", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache"))
    home = tmp_path / "home"
    home.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "netspec"
    launcher.write_text(LAUNCHER.format(python=sys.executable, root=str(work),
                                        short=SHORT_TRAINING), encoding="utf-8")
    launcher.chmod(0o755)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("NETSPEC_") and key not in ("XDG_CACHE_HOME", "PYTHONPATH")}
    env |= {"HOME": str(home), "NETSPEC_DATA_DIR": str(mnist_dir), "PYTHONPATH": str(work),
            "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
                    f"{env.get('PATH', '')}",
            "MPLBACKEND": "Agg", "NO_COLOR": "1"}
    ran, skipped = [], []
    for block in command_blocks((work / "README.md").read_text(encoding="utf-8")):
        for line in block:
            for command in steps(line):
                why = skip_reason(command)
                if why:
                    skipped.append(f"{command}: {why}")
                    continue
                done = subprocess.run(["bash", "-c", command], cwd=work, env=env,
                                      capture_output=True, text=True, timeout=600)
                assert done.returncode == 0, (f"README command failed: {command}\n"
                                              f"stdout: {done.stdout[-3000:]}\n"
                                              f"stderr: {done.stderr[-3000:]}")
                assert "Traceback" not in done.stderr, (command, done.stderr)
                ran.append(command)
    print("\nran:\n  " + "\n  ".join(ran) + "\nskipped:\n  " + "\n  ".join(skipped))
    # what the sequences leave behind, where the README says
    assert (work / "runs" / "lenet5" / "report.html").is_file()
    assert (work / "lenet5.pt").is_file() and (work / "net.npz").is_file()
    assert not (home / ".cache" / "netspec").exists()  # the data came from NETSPEC_DATA_DIR
