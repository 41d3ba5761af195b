"""The ``netspec`` command: argument parsing and printing over library calls.

Each command group lives in its own module with a ``register(subparsers)`` function that adds
its parser and sets ``handler``. Every NetspecError becomes a message on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from collections.abc import Sequence

from netspec.common.errors import NetspecError, did_you_mean
from netspec.common.version import __version__
from netspec.runtime.threads import BlasThreads

# A command module imports only the standard library and light netspec modules at its top;
# its handler imports the rest, so that --help and argument errors start at once.
# Commands that read a spec, print and end within a second or so. Their start is mostly
# imports, which allocate hundreds of thousands of objects and free none; the cyclic garbage
# collector would walk them again and again for nothing (about a sixth of `netspec compile`'s
# CPU time), so it stays off while they run. Long commands (train, lsp, ...) keep it on.
QUICK_COMMANDS = frozenset({"compile", "list", "expand", "schema", "draw"})
# which module registers each command (tests/test_startup.py checks it against the modules), so
# that a command's run builds its own parser only, not the other fourteen
MODULE_OF_COMMAND = {
    "compile": "compile", "list": "compile", "expand": "expand", "gradcheck": "gradcheck",
    "train": "train", "evaluate": "train", "predict": "train", "draw": "draw", "plot": "plot",
    "bench": "bench", "doctor": "doctor", "export": "export", "import": "importer",
    "schema": "schema", "lsp": "lsp", "runs": "runs", "report": "runs", "copy": "copy",
    "completion": "completion",
}
# every command module, in the order --help lists their commands
COMMAND_MODULES = tuple(dict.fromkeys(MODULE_OF_COMMAND.values()))


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or, when ``argv`` names a command before any other
    positional argument, of that command alone (what parsing ``argv`` needs)."""
    parser = argparse.ArgumentParser(
        prog="netspec",
        description="Compile, check, train and draw neural networks written as TOML files.",
        epilog="`netspec COMMAND --help` tells more about each command.",
    )
    parser.add_argument("--version", action="version", version=f"netspec {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    command = command_word(argv)
    if command in MODULE_OF_COMMAND:
        modules: Sequence[str] = (MODULE_OF_COMMAND[command],)
    else:
        modules = COMMAND_MODULES
    for name in modules:
        importlib.import_module(f"netspec.cli.{name}").register(subparsers)
    return parser


def command_word(argv: Sequence[str] | None) -> str | None:
    """The command ``argv`` names: its first word that is not an option."""
    return next((arg for arg in argv or () if not arg.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    # netspec uses no pydantic plugins, and looking for them reads the metadata of every
    # installed distribution when the first model is built (tens of ms of each command's
    # start); a user who wants theirs sets the variable to the empty string
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    collecting = gc.isenabled()
    gc.disable()
    try:
        if argv is None:
            argv = sys.argv[1:]
        argv = [os.fspath(arg) for arg in argv]
        parser = build_parser(argv)
        if not argv:
            # a bare `netspec` (or `python -m netspec`) asks what it can do
            parser.print_help()
            return 0
        command = command_word(argv)
        if command is not None and command not in MODULE_OF_COMMAND:
            parser.error(f"argument COMMAND: invalid choice: '{command}'"
                         f"{did_you_mean(command, MODULE_OF_COMMAND)} (commands: "
                         f"{', '.join(MODULE_OF_COMMAND)})")
        args = parser.parse_args(argv)
    finally:
        if collecting:
            gc.enable()
    # the command line as given, for the records a command keeps (a run's provenance)
    args.argv = list(argv)
    if collecting and args.command in QUICK_COMMANDS:
        gc.disable()
    try:
        if not hasattr(args, "threads"):
            code = int(args.handler(args) or 0)
        else:
            # a command that computes: its BLAS threads are limited while it runs
            with BlasThreads(args.threads) as threads:
                args.blas_threads = threads
                code = int(args.handler(args) or 0)
        # what is still buffered is written here, where a closed pipe is caught
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # `netspec compile lenet5 --json | head`: the reader has what it wanted. Later writes
        # (the interpreter flushes stdout as it exits) go nowhere instead of failing again.
        _silence_stdout()
        return 0
    except NetspecError as exc:
        print(_describe_error(args.command, exc), file=sys.stderr)
        return 1
    except OSError as exc:
        # a disk full, a permission denied: the user can act on the message, not a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"netspec {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if collecting:
            gc.enable()


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is no file (a test's capture): nothing to flush
        pass


def _describe_error(command: str, exc: NetspecError) -> str:
    diagnostics = getattr(exc, "diagnostics", [])
    if len(diagnostics) > 1:
        text = f"netspec {command}: {len(diagnostics)} errors:\n{exc}"
    else:
        text = f"netspec {command}: error: {exc}"
    return text + _shipped_note(diagnostics)


def _shipped_note(diagnostics: Sequence[object]) -> str:
    """A note when the problems are in a shipped spec: it is part of the installed package,
    and the way to change it is a copy of one's own."""
    from pathlib import Path

    from netspec.lang.shipped import SHIPPED_DIR

    for diagnostic in diagnostics:
        file = getattr(diagnostic, "file", None)
        if file and Path(file).parent == SHIPPED_DIR:
            name = Path(file).stem
            return (f"\n({name} is a shipped spec, installed with netspec in {SHIPPED_DIR}; "
                    f"to change it, copy it into your directory: netspec copy {name})")
    return ""


if __name__ == "__main__":
    sys.exit(main())
