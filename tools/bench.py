"""Benchmark netspec's NumPy executor against PyTorch on the same networks, weights and data.

For every architecture (all shipped ones, or those named) this times training steps (forward,
softmax cross-entropy, backward, SGD momentum 0.9 at lr 0.01) at the training batch size, and
inference at that batch size and at a larger one. Where torch is installed the identical
network runs in torch in the same process, with the same weights copied in; netspec and torch
repetitions alternate so that drift of a shared machine hits both alike, and the medians and
their ratio (netspec / torch, below 1 means netspec is faster) are reported.

    python tools/bench.py                         # every shipped architecture
    python tools/bench.py lenet_caffe mlp --json bench.json
    python tools/bench.py --epoch lenet_caffe     # one synthetic MNIST epoch per batch size,
                                                  # each in a fresh process: time and peak RSS
    python tools/bench.py mobilenet_mnist mobilenet_v2:size=28,classes=10 mobilenet_v2
                                                  # the mobile networks at MNIST size, and
                                                  # MobileNetV2 at 224 (inference, batch 8)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from time import perf_counter, sleep
from typing import Any

import numpy as np

from netspec.common.atomic import atomic_write_text
from netspec.common.tables import Column, render_table
from netspec.lang.spec import parse_overrides, shipped_architectures
from netspec.runtime.executor import Network, compile
from netspec.runtime.threads import BlasThreads, usable_cores
from netspec.train.optim import SGD
from netspec.train.profile import StepProfile, profile_training, synthetic_batch, training_step

LR = 0.01
MOMENTUM = 0.9
MNIST_TRAIN_IMAGES = 60_000
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
# inputs with more values per sample than this (ImageNet-sized) are timed in inference only,
# at --large-batch-size
LARGE_INPUT_VALUES = 3 * 64 * 64


def make_optimizer() -> SGD:
    return SGD(lr=LR, momentum=MOMENTUM)


# --------------------------------------------------------------------------- torch twin


def torch_twin(net: Network) -> Any:
    """The same DAG as a torch.nn.Module, holding a copy of ``net``'s parameters and buffers.

    Networks of the ops below are written here with plain torch modules; any other (grouped
    convolutions, squeeze-excitation, hard-swish, ...) runs as netspec's own PyTorch module
    (``netspec.interchange.torch_runtime.PlanModule``: the same torch layers and functions
    that ``netspec export`` writes).
    A Vision Transformer (vit_b_16, vit_mnist) runs as torchvision's own, with its keys."""
    if "encoder.layers.encoder_layer_0.self_attention" in net.plan.nodes:
        return vit_twin(net)
    import torch
    from torch import nn
    from torch.nn import functional

    plain = {"input", "add", "concat", "conv2d", "linear", "maxpool2d", "avgpool2d",
             "batchnorm", "dropout", "leaky_relu", "relu", "sigmoid", "tanh", "softmax",
             "flatten", "global_avgpool"}
    if any(node.op_name not in plain or _beyond_plain(node)
           for node in net.plan.nodes.values()):
        return _plan_module(net)

    def module_for(node: Any) -> nn.Module | None:
        p, in_shape = node.params, node.input_shapes[0] if node.input_shapes else None
        if node.op_name == "conv2d":
            return nn.Conv2d(in_shape[0], p.out_channels, p.kernel_size, p.stride, p.padding,
                             bias=p.bias)
        if node.op_name == "linear":
            return nn.Linear(in_shape[0], p.out_features, bias=p.bias)
        if node.op_name in ("maxpool2d", "avgpool2d"):
            cls = nn.MaxPool2d if node.op_name == "maxpool2d" else nn.AvgPool2d
            return cls(p.kernel_size, p.stride, p.padding)
        if node.op_name == "batchnorm":
            cls = nn.BatchNorm1d if len(in_shape) == 1 else nn.BatchNorm2d
            return cls(in_shape[0], eps=p.eps, momentum=p.momentum)
        if node.op_name == "dropout":
            return nn.Dropout(p.p)
        if node.op_name == "leaky_relu":
            return nn.LeakyReLU(p.negative_slope)
        return None

    stateless: dict[str, Callable[..., Any]] = {
        "relu": functional.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
        "softmax": lambda x: torch.softmax(x, dim=1), "flatten": lambda x: x.flatten(1),
        "global_avgpool": lambda x: x.mean(dim=(2, 3)),
    }

    def batched_dim(node: Any) -> int:
        """torch.cat's dim for a concat (its per-sample axis shifted past the batch)."""
        axis = getattr(node.params, "axis", None)
        return axis + 1 if axis is not None else getattr(node.params, "dim", 1)

    class Twin(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleDict()
            self.steps: list[tuple[str, str, tuple[str, ...], Any]] = []
            for node_id, node in net.plan.nodes.items():
                module = module_for(node)
                if module is not None:
                    self.layers[module_key(node_id)] = module
                    self.steps.append((node_id, "module", node.inputs, module))
                elif node.op_name in stateless:
                    self.steps.append((node_id, "fn", node.inputs, stateless[node.op_name]))
                elif node.op_name in ("input", "add", "concat"):
                    self.steps.append((node_id, node.op_name, node.inputs, batched_dim(node)))
                else:
                    raise NotImplementedError(f"no torch twin for op '{node.op_name}'")

        def forward(self, x: Any) -> Any:
            values: dict[str, Any] = {}
            for node_id, kind, inputs, fn in self.steps:
                if kind == "input":
                    values[node_id] = x
                elif kind == "add":
                    values[node_id] = sum(values[s] for s in inputs)
                elif kind == "concat":
                    values[node_id] = torch.cat([values[s] for s in inputs], dim=fn)
                else:
                    values[node_id] = fn(values[inputs[0]])
            return values[net.plan.output]

    twin = Twin()
    with torch.no_grad():
        for key, value in net.state().items():
            node_id, name = key.rsplit(".", 1)
            getattr(twin.layers[module_key(node_id)], name).copy_(
                torch.from_numpy(value.copy()))
    for key in net.params:
        if key not in net.trainable:
            node_id, name = key.rsplit(".", 1)
            getattr(twin.layers[module_key(node_id)], name).requires_grad_(False)
    return twin


def vit_twin(net: Network) -> Any:
    """torchvision's VisionTransformer of the plan's sizes (vit_b_16, vit_mnist: the same
    state_dict keys), holding a copy of ``net``'s weights; a one-channel input gets its own
    conv_proj, and the MLP's GELU is the plan's (exact or tanh)."""
    import torch

    torch.library.register_fake = lambda *args, **kwargs: (lambda function: function)
    from torchvision.models.vision_transformer import VisionTransformer

    nodes = net.plan.nodes
    channels, size, _ = nodes[net.plan.inputs[0]].shape
    stem, first = nodes["conv_proj"].params, "encoder.layers.encoder_layer_0"
    twin = VisionTransformer(
        image_size=size, patch_size=stem.kernel_size, hidden_dim=stem.out_channels,
        num_layers=sum(node.endswith(".self_attention") for node in nodes),
        num_heads=nodes[f"{first}.self_attention"].params.num_heads,
        mlp_dim=nodes[f"{first}.mlp.0"].params.out_features,
        num_classes=nodes["heads.head"].params.out_features)
    twin.conv_proj = torch.nn.Conv2d(channels, stem.out_channels, stem.kernel_size,
                                     stem.kernel_size)
    for layer in twin.encoder.layers:
        layer.mlp[1] = torch.nn.GELU(approximate=nodes[f"{first}.mlp.1"].params.approximate)
    twin.load_state_dict({key: torch.from_numpy(np.array(value, dtype=np.float32))
                          for key, value in net.state().items()})
    return twin


def _beyond_plain(node: Any) -> bool:
    """A field of a plain op that the hand-written twin does not pass on."""
    p = node.params
    return (getattr(p, "groups", 1) != 1 or getattr(p, "dilation", 1) not in (1, [1, 1])
            or getattr(p, "ceil_mode", False) or not getattr(p, "count_include_pad", True)
            or getattr(p, "dim", 1) != 1)


def _plan_module(net: Network) -> Any:
    from netspec.interchange.torch_runtime import PlanModule, load_arrays

    module = PlanModule(net.plan)
    load_arrays(module, net.state())
    for name, parameter in module.named_parameters():
        if name not in net.trainable:
            parameter.requires_grad_(False)
    return module


def module_key(node_id: str) -> str:
    """A node id as a torch module name, which may not hold dots (block-built nodes do:
    ``layer1.0.conv1``)."""
    return node_id.replace(".", "/")


# --------------------------------------------------------------------------- timing


def median_per_call(run: Callable[[], Any], calls: int) -> Callable[[], float]:
    """A timer that runs ``run`` ``calls`` times and returns the seconds per call."""
    def block() -> float:
        start = perf_counter()
        for _ in range(calls):
            run()
        return (perf_counter() - start) / calls
    return block


def interleaved(blocks: dict[str, Callable[[], float]], reps: int,
                pause: float) -> dict[str, list[float]]:
    """Seconds per call of each block in every rep, alternating which one runs first.

    ``pause`` seconds of sleep before each block let the other framework's worker threads
    (OpenBLAS and OpenMP spin for a while after their last task) go idle first.
    """
    samples: dict[str, list[float]] = {name: [] for name in blocks}
    names = list(blocks)
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            sleep(pause)
            samples[name].append(blocks[name]())
    return samples


def paired_ratio_quartiles(ours: list[float], theirs: list[float]) -> list[float]:
    """The first and third quartiles of ``ours[i] / theirs[i]`` over the reps.

    The two blocks of one rep run back to back, so a shared machine's drift, which moves
    whole-step times by 10-30% within minutes, falls on both alike: how widely these
    ratios spread says how far to trust the ratio of the medians.
    """
    ratios = np.asarray(ours) / np.asarray(theirs)
    return [float(q) for q in np.quantile(ratios, [0.25, 0.75])]


def calls_for(run: Callable[[], Any], target_seconds: float) -> int:
    """How many calls of ``run`` fill about ``target_seconds`` (runs it twice to warm up)."""
    run()
    start = perf_counter()
    run()
    return max(1, round(target_seconds / max(perf_counter() - start, 1e-6)))


def is_large(net: Network) -> bool:
    return int(np.prod(net.shapes[net.plan.inputs[0]])) > LARGE_INPUT_VALUES


def split_overrides(argument: str) -> tuple[str, dict[str, Any]]:
    """``mobilenet_v2:size=28`` -> ("mobilenet_v2", {"size": 28}): a shipped name or path with
    variables set as ``--set`` sets them (values read as TOML)."""
    name, _, settings = argument.partition(":")
    return name, parse_overrides([s for s in settings.split(",") if s]) if settings else {}


def bench_architecture(argument: str, args: argparse.Namespace, torch: Any) -> dict[str, Any]:
    name, overrides = split_overrides(argument)
    net = compile(name, seed=args.seed, overrides=overrides)
    rng = np.random.default_rng(args.seed)
    large = is_large(net)
    batches = ({"infer_large": args.large_batch_size} if large else
               {"train": args.batch_size, "infer": args.batch_size,
                "infer_big": args.infer_batch_size})
    x, labels = synthetic_batch(net, min(batches.values()), rng)
    x_big, _ = synthetic_batch(net, max(batches.values()), rng)
    optimizer = make_optimizer()
    runs: dict[str, dict[str, Callable[[], Any]]] = (
        {"infer_large": {"netspec": lambda: net.forward(x)}} if large else {
            "train": {"netspec": lambda: training_step(net, optimizer, x, labels)},
            "infer": {"netspec": lambda: net.forward(x)},
            "infer_big": {"netspec": lambda: net.forward(x_big)},
        })
    shown = net.plan.name + "".join(f" {key}={value}" for key, value in overrides.items())
    result: dict[str, Any] = {"architecture": shown,
                              "forward_flops_per_sample": net.plan.total_flops}
    if torch is not None:
        twin = torch_twin(net)
        twin_inference = torch_twin(net).eval()
        tx, tlabels, tx_big = (torch.from_numpy(a) for a in (x, labels, x_big))
        with torch.inference_mode():
            expected = twin_inference(tx).numpy()
        result["parity_max_abs_diff"] = float(np.abs(net.forward(x) - expected).max())
        torch_optimizer = torch.optim.SGD(
            [p for p in twin.parameters() if p.requires_grad], lr=LR, momentum=MOMENTUM)
        twin.train()

        def torch_train() -> None:
            torch_optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(twin(tx), tlabels)
            loss.backward()
            torch_optimizer.step()

        def torch_infer(batch: Any) -> Callable[[], Any]:
            def run() -> Any:
                with torch.inference_mode():
                    return twin_inference(batch)
            return run

        if large:
            runs["infer_large"]["torch"] = torch_infer(tx)
        else:
            runs["train"]["torch"] = torch_train
            runs["infer"]["torch"] = torch_infer(tx)
            runs["infer_big"]["torch"] = torch_infer(tx_big)

    flops_factor = {"train": 3, "infer": 1, "infer_big": 1, "infer_large": 1}
    for mode, frameworks in runs.items():
        if args.modes and mode not in args.modes and mode != "infer_large":
            continue
        for _ in range(args.warmup):
            for run in frameworks.values():
                run()
        calls = calls_for(frameworks["netspec"], args.block_seconds)
        samples = interleaved({fw: median_per_call(run, calls) for fw, run in frameworks.items()},
                              args.reps, args.pause)
        seconds = {fw: float(np.median(values)) for fw, values in samples.items()}
        batch = batches[mode]
        flops = flops_factor[mode] * net.plan.total_flops * batch
        entry: dict[str, Any] = {"batch_size": batch, "calls_per_rep": calls,
                                 "reps": args.reps}
        for framework, value in seconds.items():
            entry[framework] = {"ms": 1e3 * value, "samples_per_s": batch / value,
                                "gflops": flops / value / 1e9}
        if "torch" in seconds:
            entry["ratio"] = seconds["netspec"] / seconds["torch"]
            entry["paired_ratio_quartiles"] = paired_ratio_quartiles(samples["netspec"],
                                                                     samples["torch"])
        entry["netspec"]["peak_mib"] = traced_peak_mib(frameworks["netspec"])
        result[mode] = entry
    if not large and args.profile_steps:
        profile = profile_training(compile(name, seed=args.seed, overrides=overrides),
                                   make_optimizer(),
                                   args.batch_size, steps=args.profile_steps, seed=args.seed)
        result["profile"] = profile_dict(profile)
    return result


def traced_peak_mib(run: Callable[[], Any]) -> float:
    """The most memory one call of ``run`` holds at once beyond what was held before it, as
    NumPy reports its allocations to tracemalloc (arrays alive before the call, such as the
    parameters and a training step's reused buffers, are not counted again)."""
    run()
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def gemm_peak_gflops(size: int = 1536, reps: int = 7) -> float:
    """The best float32 matrix-product rate of NumPy's BLAS here: square products of
    ``size``, the best of ``reps``, with the BLAS threads the benchmark runs with."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = a @ b
    best = float("inf")
    for _ in range(reps):
        start = perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, perf_counter() - start)
    return 2 * size**3 / best / 1e9


def profile_dict(profile: StepProfile) -> dict[str, Any]:
    return {"batch_size": profile.batch_size, "steps": profile.steps,
            "step_ms": 1e3 * profile.step, "loss_ms": 1e3 * profile.loss,
            "update_ms": 1e3 * profile.update, "gflops": profile.gflops,
            "nodes": [{"node": n.node, "op": n.op, "forward_ms": 1e3 * n.forward,
                       "backward_ms": 1e3 * n.backward, "forward_flops": n.flops}
                      for n in profile.nodes]}


# --------------------------------------------------------------------------- epoch mode


def epoch_worker(framework: str, name: str, batch_size: int, steps: int, seed: int) -> None:
    """Train ``steps`` batches of synthetic MNIST-shaped uint8 images; print the time, the
    resident memory once everything is set up and the peak after training (JSON)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(MNIST_TRAIN_IMAGES, 1, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=MNIST_TRAIN_IMAGES)
    net = compile(name, seed=seed)
    order = np.concatenate([rng.permutation(MNIST_TRAIN_IMAGES)
                            for _ in range(-(-steps * batch_size // MNIST_TRAIN_IMAGES))])

    def batch(step: int) -> tuple[np.ndarray, np.ndarray]:
        index = order[step * batch_size:(step + 1) * batch_size]
        x = images[index].astype(np.float32)
        x *= np.float32(1 / 255)
        x -= np.float32(MNIST_MEAN)
        x *= np.float32(1 / MNIST_STD)
        return x, labels[index]

    if framework == "torch":
        import torch
        torch.set_num_threads(2)
        twin = torch_twin(net).train()
        optimizer = torch.optim.SGD(twin.parameters(), lr=LR, momentum=MOMENTUM)

        def step_once(x: np.ndarray, y: np.ndarray) -> float:
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)),
                                                     torch.from_numpy(y))
            loss.backward()
            optimizer.step()
            return float(loss)
    else:
        sgd = make_optimizer()

        def step_once(x: np.ndarray, y: np.ndarray) -> float:
            return training_step(net, sgd, x, y)

    rss_before = memory_kib("VmRSS")
    start = perf_counter()
    loss = 0.0
    for step in range(steps):
        loss = step_once(*batch(step))
    seconds = perf_counter() - start
    print(json.dumps({"framework": framework, "architecture": name, "batch_size": batch_size,
                      "steps": steps, "seconds": seconds, "final_loss": loss,
                      "rss_before_training_kib": rss_before,
                      "peak_rss_kib": memory_kib("VmHWM")}))


def memory_kib(field: str) -> int:
    """This process's resident memory now (VmRSS) or at its peak (VmHWM), in KiB.

    /proc rather than getrusage: a child's ru_maxrss starts at its parent's peak on Linux.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_epochs(args: argparse.Namespace, torch_available: bool) -> list[dict[str, Any]]:
    results = []
    frameworks = ["netspec"] + (["torch"] if torch_available else [])
    for name in args.architectures or ["lenet_caffe"]:
        for batch_size in args.epoch_batch_sizes:
            steps = args.epoch_steps or MNIST_TRAIN_IMAGES // batch_size
            for framework in frameworks:
                command = [sys.executable, __file__, "--epoch-worker", framework, name,
                           str(batch_size), str(steps), "--seed", str(args.seed)]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    sys.exit(f"epoch worker failed: {' '.join(command)}\n{done.stderr}")
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def epoch_table(results: list[dict[str, Any]]) -> str:
    rows = [[r["architecture"], r["framework"], r["batch_size"], r["steps"],
             f"{r['seconds']:.2f}", f"{r['steps'] * r['batch_size'] / r['seconds']:,.0f}",
             f"{r['rss_before_training_kib'] / 1024:.0f}", f"{r['peak_rss_kib'] / 1024:.0f}",
             f"{(r['peak_rss_kib'] - r['rss_before_training_kib']) / 1024:.0f}"]
            for r in results]
    columns = [Column("architecture", "<"), Column("framework", "<"), Column("batch"),
               Column("steps"), Column("seconds"), Column("samples/s"),
               Column("RSS before MiB"), Column("peak RSS MiB"), Column("peak - before MiB")]
    return render_table(columns, rows)


# --------------------------------------------------------------------------- output


def summary_table(results: list[dict[str, Any]], peak_gflops: float) -> str:
    labels = {"train": "train", "infer": "infer", "infer_big": "infer", "infer_large": "infer"}
    rows = []
    for result in results:
        for mode in ("train", "infer", "infer_big", "infer_large"):
            if mode not in result:
                continue
            entry = result[mode]
            ours, theirs = entry["netspec"], entry.get("torch")
            rows.append([
                result["architecture"], f"{labels[mode]} b{entry['batch_size']}",
                f"{ours['ms']:.3f}", f"{theirs['ms']:.3f}" if theirs else "-",
                f"{entry['ratio']:.2f}" if theirs else "-",
                "{:.2f}-{:.2f}".format(*entry["paired_ratio_quartiles"]) if theirs else "-",
                f"{ours['samples_per_s']:,.0f}",
                f"{theirs['samples_per_s']:,.0f}" if theirs else "-",
                f"{ours['gflops']:.1f}", f"{100 * ours['gflops'] / peak_gflops:.0f}%",
                f"{theirs['gflops']:.1f}" if theirs else "-", f"{ours['peak_mib']:.1f}"])
    columns = [Column("architecture", "<"), Column("mode", "<"), Column("netspec ms"),
               Column("torch ms"), Column("ratio"), Column("rep ratios IQR"),
               Column("netspec samples/s"),
               Column("torch samples/s"), Column("netspec GFLOP/s"), Column("of peak"),
               Column("torch GFLOP/s"), Column("netspec peak MiB")]
    return render_table(columns, rows)


def profile_table(result: dict[str, Any]) -> str:
    profile = result["profile"]
    step = profile["step_ms"]
    rows = []
    for node in profile["nodes"]:
        total = node["forward_ms"] + node["backward_ms"]
        rows.append([node["node"], node["op"], f"{node['forward_ms']:.3f}",
                     f"{node['backward_ms']:.3f}", f"{100 * total / step:.1f}%",
                     f"{3 * node['forward_flops'] / total / 1e6:.2f}"
                     if node["forward_flops"] and total else "-"])
    rows.append(["(loss)", "", f"{profile['loss_ms']:.3f}", "",
                 f"{100 * profile['loss_ms'] / step:.1f}%", ""])
    rows.append(["(update)", "", "", f"{profile['update_ms']:.3f}",
                 f"{100 * profile['update_ms'] / step:.1f}%", ""])
    footer = [["step", f"b{profile['batch_size']}", "", "", f"{step:.3f} ms",
               f"{profile['gflops']:.1f}"]]
    columns = [Column("node", "<"), Column("op", "<"), Column("fwd ms"), Column("bwd ms"),
               Column("share"), Column("GFLOP/s")]
    return render_table(columns, rows, footer)


def machine_info(torch: Any) -> dict[str, Any]:
    return {"python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__ if torch is not None else None,
            "torch_threads": torch.get_num_threads() if torch is not None else None,
            "cpus": os.cpu_count(), "load_average": list(os.getloadavg()),
            "openblas_env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("architectures", nargs="*",
                        help="shipped names or .toml paths (default: every shipped one), each "
                        "optionally with variables: mobilenet_v2:size=28,classes=10")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--infer-batch-size", type=int, default=1000)
    parser.add_argument("--large-batch-size", type=int, default=8,
                        help="inference batch of architectures with ImageNet-sized inputs "
                        "(resnet18, resnet34), which are timed in inference only")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS threads for netspec and torch's threads (default: this "
                        "process's share of the cores, as netspec's --threads)")
    parser.add_argument("--reps", type=int, default=9, help="interleaved repetitions")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--block-seconds", type=float, default=0.25,
                        help="approximate length of one timed repetition")
    parser.add_argument("--pause", type=float, default=0.1,
                        help="seconds of idle before each timed repetition")
    parser.add_argument("--profile-steps", type=int, default=30,
                        help="steps of the per-node table (0: no table)")
    parser.add_argument("--modes", type=lambda text: text.split(","), default=None,
                        help="only these of train, infer, infer_big (comma-separated; "
                        "ImageNet-sized architectures always run their inference)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-torch", action="store_true", help="skip the torch comparison")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--epoch", action="store_true",
                        help="time one synthetic MNIST epoch per batch size (fresh processes)")
    parser.add_argument("--epoch-batch-sizes", type=lambda s: [int(v) for v in s.split(",")],
                        default=[64, 256])
    parser.add_argument("--epoch-steps", type=int, default=0,
                        help="steps per epoch run (default 60000 // batch size)")
    parser.add_argument("--epoch-worker", nargs=4, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.epoch_worker:
        framework, name, batch_size, steps = args.epoch_worker
        epoch_worker(framework, name, int(batch_size), int(steps), args.seed)
        return
    with BlasThreads(args.threads) as threads:
        run_benchmarks(args, threads.threads)


def run_benchmarks(args: argparse.Namespace, threads: int | None) -> None:
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch is not installed: timing netspec alone")
    if torch is not None:
        torch.set_num_threads(threads or usable_cores())
    report: dict[str, Any] = {"machine": machine_info(torch)}
    report["machine"]["blas_threads"] = threads
    if args.epoch:
        epochs = run_epochs(args, torch is not None)
        report["epochs"] = epochs
        print(epoch_table(epochs))
    else:
        names = args.architectures or [path.stem for path in shipped_architectures()]
        peak = gemm_peak_gflops()
        report["machine"]["gemm_peak_gflops"] = peak
        print(f"GEMM peak of NumPy's BLAS here: {peak:.0f} GFLOP/s (float32, "
              f"{threads or 'default'} threads)")
        results = []
        for name in names:
            results.append(bench_architecture(name, args, torch))
            if "profile" in results[-1]:
                print(f"\n{results[-1]['architecture']}: training step per node (netspec, "
                      f"batch {args.batch_size}, medians of {args.profile_steps} steps)")
                print(profile_table(results[-1]))
        report["architectures"] = results
        report["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("\nnetspec vs torch (medians of interleaved repetitions; ratio = netspec / "
              "torch, below 1 is faster; rep ratios IQR: quartiles of the ratios of the two "
              "blocks run back to back in each repetition; GFLOP/s of peak: against the GEMM "
              "peak above; peak MiB: the most NumPy memory one call holds, tracemalloc)")
        print(summary_table(results, peak))
        print(f"\npeak RSS of this process (netspec and torch together): "
              f"{report['peak_rss_mib']:.0f} MiB")
    report["machine"]["load_average_after"] = list(os.getloadavg())
    load = report["machine"]
    print(f"load average before {load['load_average'][0]:.2f}, after "
          f"{load['load_average_after'][0]:.2f} on {load['cpus']} CPUs")
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
