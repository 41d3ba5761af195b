"""``netspec compile`` and ``netspec list``.

Like every command module, this one imports only the standard library and light netspec
modules at the top; each handler imports what it needs, so that ``netspec --help`` and argument
errors start at once (tests/test_startup.py checks it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from netspec.cli.common import add_set_option, overrides, positive
from netspec.common.errors import Diagnostic, NetspecError, SpecError
from netspec.common.tables import Column, human_count, render_table

if TYPE_CHECKING:
    from netspec.lang.spec import Spec


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compile", help="validate a spec, infer every shape, print a summary",
        description="Validate SPEC (a path, or the name of a shipped architecture), infer "
        "every node's shape, and print parameters, FLOPs and activation memory per node.")
    parser.add_argument("spec", help="a .toml file or a shipped name such as lenet5")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--depth", type=positive, metavar="N",
                        help="fold block instances nested deeper than N levels into one row "
                        "with their totals (1: top-level rows only)")
    parser.add_argument("--batch-size", type=positive, default=1,
                        help="batch size for the FLOPs (table and --json) and activation "
                        "memory (default 1)")
    add_set_option(parser)
    parser.set_defaults(handler=run_compile)

    listing = subparsers.add_parser("list", help="list the shipped architectures")
    listing.set_defaults(handler=run_list)


def run_compile(args: argparse.Namespace) -> int:
    from netspec.ops.shapes import format_shape
    from netspec.plan.budget import check_memory
    from netspec.plan.compiler import CompileError, compile_plan
    from netspec.plan.summary import partial_summary, summary_table

    try:
        plan = compile_plan(args.spec, overrides(args))
    except CompileError as exc:
        # the [train] table's problems too, as the language server reports them
        exc.add(_train_diagnostics(exc.spec))
        if args.json:
            return _print_errors(args.spec, exc, exc.spec.included)
        # the table helps find the failing nodes; when none failed (an unknown --set name, a
        # [train] problem) it is the whole network, and would push the error off the screen
        if exc.partial and exc.failed:
            print(f"{exc.spec.name}: compiled up to the failing node(s)\n")
            print(partial_summary(exc, args.batch_size, args.depth))
            print()
        raise
    except NetspecError as exc:
        if args.json:
            return _print_errors(args.spec, exc, {})
        raise
    spec = plan.spec
    train_problems = _train_diagnostics(spec)
    if train_problems:
        error = SpecError(train_problems)
        if args.json:
            return _print_errors(args.spec, error, spec.included)
        raise error
    # shapes are checked before any number is computed: the data's too, when the spec names it
    data = None
    if spec.data is not None:
        # the data modules are a tenth of a plain compile's start; most specs name no data
        from netspec.train.data import check_spec_data
        data = check_spec_data(plan)
    for warning in spec.warnings:
        print(f"netspec compile: warning: {warning}", file=sys.stderr)
    unused = [node_id for node_id in spec.nodes if node_id not in plan.nodes]
    if unused:
        print(f"netspec compile: note: {', '.join(unused)} not used by the output "
              f"'{plan.output}'; left out of the network", file=sys.stderr)
    if args.json:
        json.dump(plan.to_dict(args.batch_size), sys.stdout, indent=2)
        print()
        return 0
    print(f"{plan.name}" + (f": {spec.description}" if spec.description else ""))
    print(summary_table(plan.nodes, args.batch_size, chains=plan.chains, depth=args.depth))
    per_batch = (f", {human_count(plan.total_flops * args.batch_size)} per batch of "
                 f"{args.batch_size}" if args.batch_size > 1 else "")
    print(f"\n{plan.total_params:,} trainable parameters, {human_count(plan.total_flops)} "
          f"FLOPs per sample (forward){per_batch}")
    print(f"memory: {check_memory(plan, args.batch_size, training=True).describe()}")
    if data is not None:
        print(f"data: {data.label} gives {format_shape(data.sample_shape)} in "
              f"{data.classes} classes, as the network takes them")
    return 0


def _train_diagnostics(spec: Spec) -> list[Diagnostic]:
    from netspec.train.config import train_table_problems

    return train_table_problems(spec.train, file=spec.file, locate=spec.source.locate)


def _print_errors(source: str, exc: NetspecError, included: dict[str, str]) -> int:
    """``--json`` on a spec that does not compile: {"errors": [record, ...]} on stdout (the
    records of netspec.common.diagnostics, with stable codes), exit status 1."""
    from netspec.common.diagnostics import records
    from netspec.lang.spec import resolve_spec_path

    diagnostics = getattr(exc, "diagnostics", None) or [Diagnostic(str(exc))]
    texts = dict(included)
    try:
        path = resolve_spec_path(source)
        texts[source if Path(source).exists() else path.name] = path.read_text(encoding="utf-8")
    except (NetspecError, OSError, UnicodeDecodeError):
        pass  # the records say what is wrong with the file; columns need its text only
    json.dump({"errors": records(diagnostics, texts)}, sys.stdout, indent=2)
    print()
    # and for a person at the terminal, as without --json
    print(f"netspec compile: {exc}", file=sys.stderr)
    return 1


def run_list(args: argparse.Namespace) -> int:
    from netspec.plan.catalog import listing

    rows = []
    for entry in listing():
        if entry.error is not None:
            rows.append([entry.name, "-", "-", entry.error])
        else:
            rows.append([entry.name, f"{entry.params:,}", human_count(entry.flops),
                         entry.description])
    print(render_table([Column("name", "<"), Column("params"), Column("FLOPs"),
                        Column("description", "<")], rows))
    return 0
