"""``netspec copy``: a shipped architecture's files into your directory, to edit."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    copy = subparsers.add_parser(
        "copy", help="copy a shipped architecture (with its includes and schema) to edit it",
        description="Write the shipped spec NAME into DIR with the block files it includes and "
        "the JSON Schema its first line names, in the shipped layout, so that it compiles, "
        "trains and completes in an editor as it is. Files already there with other content "
        "are refused unless --force.")
    copy.add_argument("name", metavar="NAME", help="a shipped architecture (netspec list)")
    copy.add_argument("dir", metavar="DIR", nargs="?", default=".",
                      help="where to write (default: the current directory)")
    copy.add_argument("--force", action="store_true", help="overwrite files already there")
    copy.set_defaults(handler=run_copy)


def run_copy(args: argparse.Namespace) -> int:
    from pathlib import Path

    from netspec.lang.shipped_copy import copy_shipped

    written = copy_shipped(args.name, args.dir, force=args.force)
    spec = Path(args.dir) / f"{args.name}.toml"
    if written:
        print("wrote " + ", ".join(str(path) for path in written))
    else:
        print(f"{args.dir} already holds these files, unchanged")
    print(f"next: netspec compile {spec}")
    return 0
