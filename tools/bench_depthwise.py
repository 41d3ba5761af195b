"""Depthwise convolutions (conv2d with groups = channels) of netspec against PyTorch, in one
process, on the layer shapes of MobileNet and EfficientNet: a training step (forward and
backward) and inference, medians of interleaved repetitions; ratio = netspec / torch.

    python tools/bench_depthwise.py
    python tools/bench_depthwise.py --reps 9 --threads 2
"""

from __future__ import annotations

import argparse
from statistics import median
from time import perf_counter

import numpy as np

from netspec.ops import REGISTRY, Context

# (batch, channels, size, kernel, stride): MobileNetV2's first and a middle depthwise layer,
# EfficientNet-B0's last 5x5, and a 14x14 layer at a training batch
LAYERS = [(8, 32, 112, 3, 1), (8, 144, 56, 3, 2), (8, 960, 7, 5, 1), (64, 64, 14, 3, 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch's threads")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"{'layer':<28} {'mode':<6} {'netspec ms':>10} {'torch ms':>9} {'ratio':>6}")
    for layer in LAYERS:
        for line in bench_layer(layer, args.reps, torch):
            print(line)


def bench_layer(layer: tuple[int, int, int, int, int], reps: int, torch) -> list[str]:
    """The table's lines for one layer: training step and inference."""
    n, c, size, k, s = layer
    params = {"op": "conv2d", "out_channels": c, "kernel_size": k, "groups": c,
              "stride": s, "padding": k // 2}
    op = REGISTRY["conv2d"](REGISTRY["conv2d"].Params.model_validate(params))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, size, size)).astype(np.float32)
    weights = {"weight": rng.standard_normal((c, 1, k, k)).astype(np.float32),
               "bias": np.zeros(c, np.float32)}
    tx = torch.from_numpy(x).requires_grad_()
    tw = torch.from_numpy(weights["weight"]).requires_grad_()
    tb = torch.from_numpy(weights["bias"]).requires_grad_()

    def ours(train: bool) -> None:
        y, cache = op.forward([x], weights, {}, Context(train=train, rng=rng))
        if train:
            op.backward(cache, np.ones_like(y))

    def theirs(train: bool) -> None:
        with torch.set_grad_enabled(train):
            y = torch.nn.functional.conv2d(tx, tw, tb, stride=s, padding=k // 2, groups=c)
            if train:
                y.backward(torch.ones_like(y))

    lines = []
    for train in (True, False):
        times: dict[str, list[float]] = {"ours": [], "theirs": []}
        for rep in range(reps + 1):
            for name, run in (("ours", ours), ("theirs", theirs)):
                start = perf_counter()
                run(train)
                if rep:  # the first repetition warms up
                    times[name].append(perf_counter() - start)
        mine, torch_ms = median(times["ours"]) * 1e3, median(times["theirs"]) * 1e3
        label = f"N{n} C{c} {size}x{size} k{k} s{s}"
        lines.append(f"{label:<28} {'train' if train else 'infer':<6} {mine:>10.2f} "
                     f"{torch_ms:>9.2f} {mine / torch_ms:>6.2f}")
    return lines

if __name__ == "__main__":
    main()
