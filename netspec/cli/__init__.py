"""The ``netspec`` command: argument parsing and printing over library calls.

Each command group lives in its own module with a ``register(subparsers)`` function that adds
its parser and sets ``handler``. Every NetspecError becomes a message on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from netspec.errors import NetspecError
from netspec.threads import BlasThreads

COMMAND_MODULES = ("compile", "expand", "gradcheck", "train", "draw", "plot", "bench", "doctor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netspec",
        description="Compile, check, train and draw neural networks written as TOML files.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"netspec.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if not hasattr(args, "threads"):
            return int(args.handler(args) or 0)
        # a command that computes: its BLAS threads are limited while it runs
        with BlasThreads(args.threads) as threads:
            args.blas_threads = threads
            return int(args.handler(args) or 0)
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
    except BrokenPipeError:
        return 0


def _describe_error(command: str, exc: NetspecError) -> str:
    diagnostics = getattr(exc, "diagnostics", [])
    if len(diagnostics) > 1:
        return f"netspec {command}: {len(diagnostics)} errors:\n{exc}"
    return f"netspec {command}: error: {exc}"


if __name__ == "__main__":
    sys.exit(main())
