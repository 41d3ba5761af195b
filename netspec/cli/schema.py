"""``netspec schema``: the JSON Schema of the spec language, for editors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "schema", help="write the JSON Schema of spec files (for editor completion)",
        description="Print the JSON Schema (draft 07) of netspec's TOML specs, or write it to "
        "FILE. Name it in a spec's first line, '#:schema ./netspec.schema.json', and editors "
        "that use Taplo (Even Better TOML in VS Code, Neovim's taplo server, Helix, Zed) "
        "complete and check the spec as you type.")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write the schema to FILE (default: standard output)")
    parser.set_defaults(handler=run_schema)


def run_schema(args: argparse.Namespace) -> int:
    # the schema is generated from the pydantic models when netspec is built and ships with
    # it, so that this command needs neither pydantic nor the ops
    from netspec.common.atomic import atomic_write_text
    from netspec.lang.shipped import SCHEMA_FILE

    text = SCHEMA_FILE.read_text(encoding="utf-8")
    if args.output is None or args.output == "-":
        sys.stdout.write(text)
        return 0
    atomic_write_text(args.output, text)
    name = Path(args.output).name
    print(f"wrote {args.output}; a spec beside it names it in its first line: "
          f"#:schema ./{name}")
    return 0
