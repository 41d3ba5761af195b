"""Export every shipped architecture to ONNX and compare onnxruntime's output with netspec's.

    python tools/onnx_parity.py                 # every shipped architecture
    python tools/onnx_parity.py lenet5 resnet18 --batch 8

Weights are the spec's seed initialisation with batchnorm statistics and biases moved away
from their identity values (as after training), so every parameter and buffer matters. Each
model passes ``onnx.checker.check_model(full_check=True)`` first; the table gives the max
|difference| over the batch, absolute and relative to the output's largest magnitude
(the export's contract: relative <= 1e-5 in float32).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from netspec.interchange.onnx_export import check_exported, export_onnx
from netspec.lang.spec import shipped_architectures
from netspec.plan.compiler import compile_plan
from netspec.runtime.executor import Network


def trained_like(net: Network, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for key, value in net.buffers.items():
        value[...] = rng.uniform(0.5, 1.5, value.shape) if key.endswith("running_var") \
            else rng.normal(0, 0.2, value.shape)
    for key, value in net.params.items():
        if key.endswith(".bias"):
            value[...] = rng.normal(0, 0.1, value.shape)


def main(argv: list[str] | None = None) -> int:
    try:
        import onnx  # noqa: F401 - the export needs it
        import onnxruntime
    except ImportError as exc:
        print(f"onnx_parity: needs onnx and onnxruntime ({exc.name} is not installed); "
              f'install them with: pip install -e ".[onnx]"', file=sys.stderr)
        return 1
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="shipped architectures (default: all)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    names = args.names or [path.stem for path in shipped_architectures()]
    print(f"{'architecture':<14} {'ONNX nodes':>10} {'params':>12} {'max |diff|':>11} "
          f"{'relative':>9} {'seconds':>8}")
    worst = 0.0
    for name in names:
        start = time.perf_counter()
        plan = compile_plan(name)
        net = Network(plan, seed=args.seed)
        trained_like(net, args.seed + 1)
        model = export_onnx(plan, net.state())
        check_exported(model)
        rng = np.random.default_rng(args.seed)
        x = rng.standard_normal((args.batch, *plan.nodes[plan.inputs[0]].shape))
        x = x.astype(np.float32)
        session = onnxruntime.InferenceSession(model.SerializeToString(),
                                               providers=["CPUExecutionProvider"])
        theirs = session.run(None, {plan.inputs[0]: x})[0]
        ours = net.forward(x)
        difference = float(np.abs(ours - theirs).max())
        relative = difference / float(np.abs(ours).max())
        worst = max(worst, relative)
        print(f"{name:<14} {len(model.graph.node):>10} {plan.total_params:>12,} "
              f"{difference:>11.2e} {relative:>9.2e} {time.perf_counter() - start:>8.1f}",
              flush=True)
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
