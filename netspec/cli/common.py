"""Options shared by the commands that read a spec."""

from __future__ import annotations

import argparse
from typing import Any


def add_set_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE",
        help="override a [vars] variable or a [train] key by dotted path, the value read as "
        "TOML: --set depths=[3,4,6,3], --set train.optimizer.lr=0.1 (repeatable)")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--set`` overrides of a command line."""
    from netspec.lang.spec import parse_overrides

    return parse_overrides(getattr(args, "set", None))


def positive(text: str) -> int:
    """An argparse type for whole numbers above zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value
