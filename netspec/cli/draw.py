"""``netspec draw``: a diagram of a network, in the format the output file's name says."""

from __future__ import annotations

import argparse
from pathlib import Path

from netspec.cli.common import add_set_option, overrides, positive
from netspec.common.diagram_formats import FORMATS, RANKDIRS


def register(subparsers: argparse._SubParsersAction) -> None:
    formats = "; ".join(f"{suffix}: {what}" for suffix, what in FORMATS.items())
    parser = subparsers.add_parser(
        "draw", help="draw a network as .svg, .png, .dot or .mmd",
        description=f"Draw SPEC (a path, or the name of a shipped architecture) with every "
        f"node's op, key settings, output shape and parameters, and the tensor shape on every "
        f"edge. The format comes from the output file's extension ({formats}).")
    parser.add_argument("spec", metavar="SPEC",
                        help="a .toml file or a shipped name such as resnet_mini")
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="where to write the diagram (.svg, .png, .dot or .mmd)")
    parser.add_argument("--rankdir", choices=RANKDIRS, default="TB",
                        help="TB: inputs at the top (default); LR: inputs on the left")
    parser.add_argument("--depth", type=positive, metavar="N",
                        help="fold block instances nested deeper than N levels into one box "
                        "with their shape and totals (1: top level only)")
    add_set_option(parser)
    parser.set_defaults(handler=run_draw)


def run_draw(args: argparse.Namespace) -> int:
    from netspec.pictures.render import draw
    from netspec.pictures.svg import readable_depth
    from netspec.plan.compiler import compile_plan

    plan = compile_plan(args.spec, overrides(args))
    depth = args.depth
    folded = ""
    if depth is None and Path(args.output).suffix.lower() in (".svg", ".png"):
        depth = readable_depth(plan, args.rankdir)
        if depth is not None:
            folded = (f"; blocks nested deeper than {depth} level{'s' if depth > 1 else ''} "
                      f"are folded into boxes to keep the horizontal drawing readable "
                      f"(--depth N chooses, --rankdir TB draws it top to bottom)")
    drawn_by = draw(plan, args.output, args.rankdir, depth)
    how = "Graphviz" if drawn_by == "graphviz" else "netspec"
    print(f"wrote {args.output} (drawn by {how}){folded}")
    return 0
