"""``netspec bench``: where a training step spends its time, node by node."""

from __future__ import annotations

import argparse

from netspec.cli.common import add_set_option, overrides
from netspec.cli.threads import add_threads_option, threads_note

LR = 0.01
MOMENTUM = 0.9


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="time a training step per node (forward and backward)",
        description="Run training steps of SPEC (forward, softmax cross-entropy, backward, "
        f"SGD with momentum {MOMENTUM}) on random data and print the median milliseconds "
        "each node spends in forward and backward. tools/bench.py compares against PyTorch.")
    parser.add_argument("spec", help="a .toml file or a shipped name such as lenet5")
    parser.add_argument("--batch-size", type=_positive, default=64,
                        help="batch size (default 64)")
    parser.add_argument("--steps", type=_positive, default=20,
                        help="timed steps, after --warmup untimed ones (default 20)")
    parser.add_argument("--warmup", type=_non_negative, default=3,
                        help="untimed steps first (default 3)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--seed", type=int, default=0)
    add_threads_option(parser)
    add_set_option(parser)
    parser.set_defaults(handler=run_bench)


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def run_bench(args: argparse.Namespace) -> int:
    from netspec.runtime.executor import compile
    from netspec.train.optim import SGD
    from netspec.train.profile import profile_table, profile_training

    net = compile(args.spec, seed=args.seed, dtype=args.dtype, overrides=overrides(args))
    profile = profile_training(net, SGD(lr=LR, momentum=MOMENTUM), args.batch_size,
                               steps=args.steps, warmup=args.warmup, seed=args.seed)
    print(f"{net.plan.name}: training step per node, batch {args.batch_size}, {args.dtype}, "
          f"median of {args.steps} steps{threads_note(args.blas_threads)}")
    print(profile_table(profile))
    return 0
