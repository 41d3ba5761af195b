"""``netspec lsp``: the language server, for editors (see the README)."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from netspec.common.errors import NetspecError
from netspec.common.extras import install_line


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "lsp", help="run the language server (stdio) for editors: live shapes and errors",
        description="Speak the Language Server Protocol on standard input and output: every "
        "problem of the spec being edited at its line as you type, hover with output shapes, "
        "parameters and FLOPs, completion of ops, fields, node ids and blocks, and go to "
        "definition. Editors start it themselves; the README shows VS Code and Neovim.")
    parser.add_argument("--stdio", action="store_true",
                        help="accepted for editors that pass it; stdio is the only transport")
    parser.set_defaults(handler=run_lsp)


def run_lsp(args: argparse.Namespace) -> int:
    try:
        from netspec.editor.lsp import serve
    except ImportError as exc:
        if exc.name not in ("pygls", "lsprotocol") and not str(exc.name).startswith(
                ("pygls.", "lsprotocol.")):
            raise
        raise NetspecError(f"the language server needs pygls: {install_line('lsp')}"
                           ) from None
    if sys.stdin.isatty():
        # a person typed it: an editor starts the server with pipes, never at a terminal
        print("netspec lsp: speaking the Language Server Protocol on standard input and "
              "output; an editor starts it itself (the README shows VS Code and Neovim). "
              "Ctrl-C stops it.", file=sys.stderr, flush=True)
    # pygls swallows KeyboardInterrupt and then waits for its thread blocked reading stdin,
    # forever at a terminal; the server writes no file, so Ctrl-C ends the process at once
    signal.signal(signal.SIGINT, _stop)
    serve()
    return 0


def _stop(signum: int, frame: object) -> None:
    print("\nnetspec lsp: stopped", file=sys.stderr, flush=True)
    os._exit(128 + signum)
