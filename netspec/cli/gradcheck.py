"""``netspec gradcheck``: finite differences against backprop for every tensor."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from netspec.cli.common import add_set_option, overrides
from netspec.cli.threads import add_threads_option
from netspec.common.tables import Column, render_table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gradcheck", help="check backprop against finite differences (float64)",
        description="Build SPEC in float64 and compare every parameter's and the input's "
        "gradient with central finite differences. Exit 1 if any relative error exceeds "
        "the tolerance printed with the result.")
    parser.add_argument("spec")
    parser.add_argument("--seed", type=_at_least(0), default=0)
    parser.add_argument("--samples", type=_at_least(1), default=20,
                        help="entries checked per tensor (default 20)")
    parser.add_argument("--batch", type=_at_least(1), default=4,
                        help="batch size of the random input")
    add_threads_option(parser)
    add_set_option(parser)
    parser.set_defaults(handler=run_gradcheck)


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type for whole numbers >= ``minimum`` (0 samples would check nothing)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def run_gradcheck(args: argparse.Namespace) -> int:
    import numpy as np

    from netspec.runtime.executor import compile
    from netspec.runtime.gradcheck import TOLERANCE, check_network

    net = compile(args.spec, seed=args.seed, dtype="float64", overrides=overrides(args))
    rng = np.random.default_rng(args.seed)
    x = {key: rng.normal(size=(args.batch, *net.shapes[key])) for key in net.plan.inputs}
    results = check_network(net, x, samples=args.samples, seed=args.seed)
    rows = [[r.name, str(r.shape), r.checked, r.skipped_kinks,
             f"{r.worst_relative_error:.2e}", "ok" if r.passed else "FAIL"] for r in results]
    print(render_table([Column("tensor", "<"), Column("shape", "<"), Column("checked"),
                        Column("kinks skipped"), Column("worst rel. error"),
                        Column("", "<")], rows))
    worst = max(r.worst_relative_error for r in results)
    failed = [r.name for r in results if not r.passed]
    print(f"\nworst relative error {worst:.2e} (tolerance {TOLERANCE:g}): "
          + ("passed" if not failed else f"FAILED for {', '.join(failed)}"))
    return 1 if failed else 0
