"""``netspec compile`` and ``netspec list``."""

from __future__ import annotations

import argparse
import json
import sys

from netspec.budget import check_memory
from netspec.cli.common import add_set_option, overrides
from netspec.compiler import CompileError, compile_plan
from netspec.errors import NetspecError
from netspec.spec import shipped_architectures
from netspec.summary import partial_summary, summary_table
from netspec.tables import Column, human_count, render_table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compile", help="validate a spec, infer every shape, print a summary",
        description="Validate SPEC (a path, or the name of a shipped architecture), infer "
        "every node's shape, and print parameters, FLOPs and activation memory per node.")
    parser.add_argument("spec", help="a .toml file or a shipped name such as lenet5")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--batch-size", type=_positive, default=1,
                        help="batch size for the FLOPs (table and --json) and activation "
                        "memory (default 1)")
    add_set_option(parser)
    parser.set_defaults(handler=run_compile)

    listing = subparsers.add_parser("list", help="list the shipped architectures")
    listing.set_defaults(handler=run_list)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def run_compile(args: argparse.Namespace) -> int:
    try:
        plan = compile_plan(args.spec, overrides(args))
    except CompileError as exc:
        if not args.json and exc.partial:
            print(f"{exc.spec.name}: compiled up to the failing node(s)\n")
            print(partial_summary(exc, args.batch_size))
            print()
        raise
    spec = plan.spec
    unused = [node_id for node_id in spec.nodes if node_id not in plan.nodes]
    if unused:
        print(f"netspec compile: note: {', '.join(unused)} not used by the output "
              f"'{plan.output}'; left out of the network", file=sys.stderr)
    if args.json:
        json.dump(plan.to_dict(args.batch_size), sys.stdout, indent=2)
        print()
        return 0
    print(f"{plan.name}" + (f": {spec.description}" if spec.description else ""))
    print(summary_table(plan.nodes, args.batch_size))
    per_batch = (f", {human_count(plan.total_flops * args.batch_size)} per batch of "
                 f"{args.batch_size}" if args.batch_size > 1 else "")
    print(f"\n{plan.total_params:,} trainable parameters, {human_count(plan.total_flops)} "
          f"FLOPs per sample (forward){per_batch}")
    print(f"memory: {check_memory(plan, args.batch_size, training=True).describe()}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    rows = []
    for path in shipped_architectures():
        try:
            plan = compile_plan(path)
            rows.append([path.stem, f"{plan.total_params:,}", human_count(plan.total_flops),
                         plan.spec.description])
        except NetspecError as exc:  # one broken file must not hide the others
            first = str(exc).splitlines()[0]
            rows.append([path.stem, "-", "-", f"does not compile: {first}"])
    print(render_table([Column("name", "<"), Column("params"), Column("FLOPs"),
                        Column("description", "<")], rows))
    return 0
