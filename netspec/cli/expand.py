"""``netspec expand``: a spec's blocks, variables and includes written out as flat TOML."""

from __future__ import annotations

import argparse

from netspec.cli.common import add_set_option, overrides


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "expand", help="print a spec with its blocks expanded, as flat TOML",
        description="Expand SPEC's blocks, repeats, variables and includes and print the "
        "equivalent flat spec: every node by its full path (layer1.0.conv1) with its fields. "
        "It compiles to the same plan.")
    parser.add_argument("spec", help="a .toml file or a shipped name such as resnet18")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write the flat spec to FILE instead of printing it")
    add_set_option(parser)
    parser.set_defaults(handler=run_expand)


def run_expand(args: argparse.Namespace) -> int:
    from netspec.common.atomic import atomic_write_text
    from netspec.lang.flat import flat_toml
    from netspec.lang.spec import load_spec

    text = flat_toml(load_spec(args.spec, overrides(args)))
    if args.output:
        atomic_write_text(args.output, text)
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    return 0
