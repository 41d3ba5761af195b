"""Two versions of netspec side by side: the training step time of each architecture, in fresh
processes that alternate between the two checkouts.

On a shared machine whole-step times drift by 10-30% within minutes, more than most single
changes are worth; alternating processes (A, B, A, B, ...) puts both versions under the same
drift. Each process builds the network from the seed, runs a few warm-up steps and prints the
median of ``--steps`` timed training steps at batch ``--batch-size``.

    git worktree add ../before HEAD~3
    python tools/bench_versions.py ../before . lenet5 resnet_mini
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

STEP = """\
import sys, time
import numpy as np
from netspec.runtime.executor import compile
from netspec.train.profile import synthetic_batch, training_step
from netspec.runtime.threads import BlasThreads
from netspec.train.optim import SGD

name, batch, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
with BlasThreads(None if threads == "auto" else int(threads)):
    net = compile(name, seed=0)
    x, y = synthetic_batch(net, batch, np.random.default_rng(0))
    optimizer = SGD(lr=0.01, momentum=0.9)
    for _ in range(5):
        training_step(net, optimizer, x, y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        training_step(net, optimizer, x, y)
        times.append(time.perf_counter() - start)
print(1000 * float(np.median(times)))
"""


def step_ms(checkout: Path, name: str, args: argparse.Namespace) -> float:
    """The median training step of ``name`` (ms) with netspec imported from ``checkout``."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    run = subprocess.run([sys.executable, "-c", STEP, name, str(args.batch_size),
                          str(args.steps), str(args.threads)],
                         capture_output=True, text=True, env=env, check=False)
    if run.returncode != 0:
        raise SystemExit(f"{checkout}: {name}: {run.stderr.strip().splitlines()[-1]}")
    return float(run.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="checkout of the first version")
    parser.add_argument("after", type=Path, help="checkout of the second version")
    parser.add_argument("architectures", nargs="+", help="shipped names or .toml paths")
    parser.add_argument("--pairs", type=int, default=5, help="processes per version")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per process")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", default="auto",
                        help="BLAS threads (default: this process's share of the cores)")
    args = parser.parse_args()
    checkouts = {"before": args.before.resolve(), "after": args.after.resolve()}
    print(f"before: {checkouts['before']}\nafter:  {checkouts['after']}\n"
          f"median of {args.steps} training steps per process, batch {args.batch_size}, "
          f"{args.pairs} alternating processes per version (ms)")
    for name in args.architectures:
        times: dict[str, list[float]] = {"before": [], "after": []}
        for pair in range(args.pairs):
            order = ("before", "after") if pair % 2 == 0 else ("after", "before")
            for version in order:
                times[version].append(step_ms(checkouts[version], name, args))
        before = statistics.median(times["before"])
        after = statistics.median(times["after"])
        print(f"{name:<14} before {before:8.2f}  after {after:8.2f}  after/before "
              f"{after / before:5.3f}   (before {min(times['before']):.2f}-"
              f"{max(times['before']):.2f}, after {min(times['after']):.2f}-"
              f"{max(times['after']):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
