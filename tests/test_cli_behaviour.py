"""The command line behaves like one: ``--version``, help when called bare, "did you mean"
for a misspelt command, completion scripts for bash and zsh, quiet ends on a closed pipe, an
argument error without the network's table before it, and ``netspec lsp`` at a terminal.
Each case runs the command as a user would, in its own process."""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netspec.cli.completion import architecture_names, commands, completion_script
from netspec.common.version import __version__

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def netspec(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netspec", *argv], capture_output=True,
                          text=True, env=ENV, timeout=120, **kwargs)


def test_version() -> None:
    done = netspec("--version")
    assert done.returncode == 0 and done.stdout == f"netspec {__version__}\n"


def test_bare_netspec_prints_the_help(tmp_path) -> None:
    for argv in ([sys.executable, "-m", "netspec"],
                 [sys.executable, "-c", "import sys; from netspec.cli import main; "
                                        "sys.exit(main())"]):
        done = subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=tmp_path,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("usage: netspec") and "train" in done.stdout
        assert "--version" in done.stdout and done.stderr == ""


def test_a_misspelt_command_gets_did_you_mean() -> None:
    done = netspec("trian", "lenet5")
    assert done.returncode == 2
    assert "invalid choice: 'trian'; did you mean 'train'?" in done.stderr
    far = netspec("xyzzy")
    assert far.returncode == 2 and "did you mean" not in far.stderr
    assert "invalid choice: 'xyzzy'" in far.stderr and "compile" in far.stderr


def test_an_unknown_set_name_prints_the_error_without_the_table() -> None:
    done = netspec("compile", "resnet18", "--set", "depth=3")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip() == (
        "netspec compile: error: --set depth: no variable of that name; did you mean "
        "'depths'? (variables: depths, classes, train.<key>)")


@pytest.mark.parametrize("argv", [["compile", "resnet34", "--json"], ["list"],
                                  ["compile", "lenet5", "--json"]])
def test_a_closed_pipe_ends_quietly(argv) -> None:
    """``netspec compile resnet34 --json | head -1``: the reader closes the pipe early."""
    process = subprocess.Popen([sys.executable, "-m", "netspec", *argv],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    first = process.stdout.readline()
    process.stdout.close()
    err = process.stderr.read()
    process.stderr.close()
    assert process.wait(timeout=120) == 0, err
    assert first and err == b""


def test_bash_completion_completes_commands_options_values_and_architectures(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed: the bash completion script cannot be run")
    done = netspec("completion", "bash")
    assert done.returncode == 0, done.stderr
    script = tmp_path / "netspec.bash"
    script.write_text(done.stdout)
    driver = f"""
source {script}
compopt() {{ :; }}   # only valid inside a real completion
try() {{ COMP_WORDS=("$@"); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMPREPLY=(); _netspec
        echo "${{COMPREPLY[*]}}"; }}
try netspec com
try netspec train le
try netspec train lenet5 --opt
try netspec train lenet5 --optimizer adam --dt
try netspec train lenet5 --optimizer a
try netspec completion ""
try netspec draw resnet_m
"""
    lines = subprocess.run(["bash", "-c", driver], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path).stdout.splitlines()
    assert lines == ["compile completion", "lenet5 lenet_caffe", "--optimizer", "--dtype",
                     "adam adamw", "bash zsh", "resnet_mini resnet_mnist"]


def test_zsh_completion_is_a_valid_script_naming_everything():
    script = completion_script("zsh")
    assert script.startswith("#compdef netspec\n")
    for command in commands():
        assert f"'{command.name}:" in script and f"        {command.name})\n" in script
    assert "'--optimizer[" in script and ":value:(sgd adam adamw)" in script
    assert " ".join(architecture_names()) in script and "lenet5" in architecture_names()
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed: the zsh script's syntax is not checked")
    checked = subprocess.run(["zsh", "-n"], input=script, capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stderr
    # -D: no dump file (compinit -d FILE replaces FILE by a move)
    loaded = subprocess.run(["zsh", "-fc", f"autoload -Uz compinit && compinit -u -D"
                                           f"\n{script}\nprint -r -- $_comps[netspec]"],
                            capture_output=True, text=True, timeout=60)
    assert loaded.stdout.strip() == "_netspec", loaded.stderr


def test_completion_refuses_another_shell() -> None:
    done = netspec("completion", "fish")
    assert done.returncode == 2 and "invalid choice: 'fish'" in done.stderr


def test_lsp_at_a_terminal_says_what_it_is_and_stops_on_ctrl_c() -> None:
    pytest.importorskip("pygls", reason="pygls (the lsp extra) is not installed")
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "netspec", "lsp"], stdin=terminal,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    os.close(terminal)
    try:
        said = b""
        deadline = time.monotonic() + 60
        while b"Ctrl-C stops it" not in said and time.monotonic() < deadline:
            ready, _, _ = select.select([process.stderr], [], [], 1.0)
            if ready:
                said += os.read(process.stderr.fileno(), 4096)
        assert b"speaking the Language Server Protocol on standard input" in said
        time.sleep(0.5)  # the server is reading its standard input
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 130
        assert b"stopped" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
