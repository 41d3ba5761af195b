"""How long netspec takes to read, validate and compile a long chain spec.

Generates an N-node chain (an input, then alternating linear/relu or conv2d/relu pairs),
writes it to a temporary file, and times ``load_spec`` + ``compile_plan`` together: a few
warm-up runs, then the median of ``--repeat`` timed runs (time.perf_counter).

    python tools/bench_compile.py                      # 1,000 nodes, linear/relu
    python tools/bench_compile.py --kind conv --nodes 5000
    python tools/bench_compile.py --profile            # cProfile of one run, top functions
    python tools/bench_compile.py --kind repeat --instances 1000   # a block repeated

``--kind repeat`` times a spec of one residual block (conv, batchnorm, relu, conv, batchnorm,
add, relu: 7 nodes) instantiated with ``repeat = N``: expansion, validation and compilation.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

from netspec.lang.spec import load_spec
from netspec.plan.compiler import compile_plan


def chain_spec(nodes: int, kind: str = "linear") -> str:
    """TOML text of an input followed by ``nodes - 1`` layers, alternating a layer and a ReLU.
    Conv layers keep their 8x8 size (3x3, padding 1), so any length compiles."""
    if nodes < 2:
        raise ValueError("a chain needs at least 2 nodes")
    shape = "[64]" if kind == "linear" else "[3, 8, 8]"
    lines = ["[network]", f'name = "chain_{kind}_{nodes}"', "",
             "[nodes.x0]", 'op = "input"', f"shape = {shape}", ""]
    for index in range(1, nodes):
        lines.append(f"[nodes.x{index}]")
        if index % 2 == 0:
            lines.append('op = "relu"')
        elif kind == "linear":
            lines += ['op = "linear"', "out_features = 64"]
        else:
            lines += ['op = "conv2d"', "out_channels = 8", "kernel_size = 3", "padding = 1"]
        lines.append("")
    return "\n".join(lines)


def repeat_spec(instances: int) -> str:
    """TOML text of a 7-node residual block repeated ``instances`` times."""
    return "\n".join([
        "[blocks.res]", 'args = ["width"]', "[blocks.res.nodes]",
        'conv1 = { op = "conv2d", out_channels = "= width", kernel_size = 3, padding = 1 }',
        'bn1 = { op = "batchnorm" }', 'relu1 = { op = "relu" }',
        'conv2 = { op = "conv2d", out_channels = "= width", kernel_size = 3, padding = 1 }',
        'bn2 = { op = "batchnorm" }', 'add = { op = "add", inputs = ["bn2", "x"] }',
        'relu = { op = "relu" }', "[nodes]", 'x = { op = "input", shape = [8, 8, 8] }',
        f'chain = {{ block = "res", repeat = {instances}, width = 8 }}', ""])


def time_compile(path: Path, repeat: int, warmup: int) -> list[float]:
    """Seconds per load_spec + compile_plan, for each timed run."""
    for _ in range(warmup):
        compile_plan(load_spec(path))
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        compile_plan(load_spec(path))
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000, help="nodes in the chain")
    parser.add_argument("--kind", choices=("linear", "conv", "repeat"), default="linear")
    parser.add_argument("--instances", type=int, default=1000,
                        help="instances of the block for --kind repeat")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="also profile one run")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "chain.toml"
        text = (repeat_spec(args.instances) if args.kind == "repeat"
                else chain_spec(args.nodes, args.kind))
        path.write_text(text, encoding="utf-8")
        times = time_compile(path, args.repeat, args.warmup)
        plan = compile_plan(path)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(lambda: compile_plan(load_spec(path)))
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(15)
    what = (f"{args.instances} instances of a 7-node block ({len(plan.nodes):,} nodes"
            if args.kind == "repeat" else f"{args.nodes} nodes ({args.kind}/relu chain")
    print(f"{what}, {plan.total_params:,} params): "
          f"load_spec + compile_plan median {statistics.median(times) * 1e3:.1f} ms, "
          f"min {min(times) * 1e3:.1f} ms, max {max(times) * 1e3:.1f} ms over {args.repeat} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
