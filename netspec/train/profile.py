"""Where a training step spends its time: per-node forward and backward seconds.

A training step is what ``netspec train`` repeats: forward in training mode, softmax
cross-entropy, backward (no input gradient needed), and an optimizer update.
:func:`profile_training` times whole steps and, through the executor's ``node_timer`` hook,
every node's share of them; medians over the steps keep a stray slow step (another process
waking up) from skewing the numbers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from time import perf_counter

import numpy as np

from netspec.common.errors import NetspecError
from netspec.common.tables import Column, render_table
from netspec.ops.shapes import format_shape
from netspec.runtime.executor import Network
from netspec.runtime.losses import softmax_cross_entropy
from netspec.train.optim import Optimizer


@dataclass(frozen=True)
class NodeTime:
    """Median seconds one node spends per step, and its forward FLOPs for the whole batch."""

    node: str
    op: str
    forward: float
    backward: float
    flops: int

    @property
    def total(self) -> float:
        return self.forward + self.backward


@dataclass(frozen=True)
class StepProfile:
    """Median timings of ``steps`` training steps at ``batch_size``, all in seconds."""

    batch_size: int
    steps: int
    step: float
    loss: float
    update: float
    nodes: tuple[NodeTime, ...]
    forward_flops: int

    @property
    def train_flops(self) -> int:
        """FLOPs of one step: backward costs about twice the forward (input and weight grads)."""
        return 3 * self.forward_flops

    @property
    def samples_per_second(self) -> float:
        return self.batch_size / self.step

    @property
    def gflops(self) -> float:
        return self.train_flops / self.step / 1e9


def synthetic_batch(net: Network, batch_size: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal inputs and uniform labels shaped for ``net`` (a classifier)."""
    if len(net.output_shape) != 1:
        raise NetspecError(f"profiling needs a classifier with (N, classes) output; "
                           f"'{net.plan.name}' outputs {format_shape(net.output_shape)} per "
                           f"sample")
    x = rng.standard_normal((batch_size, *net.shapes[net.plan.inputs[0]]), dtype=np.float32)
    labels = rng.integers(0, net.output_shape[0], size=batch_size)
    return x.astype(net.dtype, copy=False), labels


def training_step(net: Network, optimizer: Optimizer, x: np.ndarray,
                  labels: np.ndarray) -> float:
    """Forward, softmax cross-entropy, backward without the input gradient, and an update of
    the trainable parameters; returns the loss."""
    logits = net.forward(x, train=True)
    loss, dlogits = softmax_cross_entropy(logits, labels)
    net.backward(dlogits, need_input_grad=False)
    optimizer.step(net.params, trainable_grads(net))
    return loss


def trainable_grads(net: Network) -> dict[str, np.ndarray]:
    return {key: net.grads[key] for key in net.trainable}


def profile_training(net: Network, optimizer: Optimizer, batch_size: int, steps: int,
                     warmup: int = 3, seed: int = 0) -> StepProfile:
    """Time ``steps`` training steps on synthetic data after ``warmup`` untimed ones."""
    if steps < 1:
        raise NetspecError(f"steps must be at least 1, got {steps}")
    x, labels = synthetic_batch(net, batch_size, np.random.default_rng(seed))
    for _ in range(warmup):
        training_step(net, optimizer, x, labels)
    per_node: dict[tuple[str, str], list[float]] = defaultdict(list)
    phases: dict[str, list[float]] = defaultdict(list)

    def record(node_id: str, phase: str, seconds: float) -> None:
        per_node[node_id, phase].append(seconds)

    previous, net.node_timer = net.node_timer, record
    try:
        for step in range(steps):
            start = perf_counter()
            logits = net.forward(x, train=True)
            forward_done = perf_counter()
            _, dlogits = softmax_cross_entropy(logits, labels)
            loss_done = perf_counter()
            net.backward(dlogits, need_input_grad=False)
            backward_done = perf_counter()
            optimizer.step(net.params, trainable_grads(net))
            end = perf_counter()
            phases["step"].append(end - start)
            phases["loss"].append(loss_done - forward_done)
            phases["update"].append(end - backward_done)
            # a node absent from a pass (no gradient reaches it) counts as zero seconds
            for node_id in net.plan.nodes:
                for phase in ("forward", "backward"):
                    if len(per_node[node_id, phase]) == step:
                        per_node[node_id, phase].append(0.0)
    finally:
        net.node_timer = previous
    nodes = tuple(
        NodeTime(node_id, node.op_name, float(np.median(per_node[node_id, "forward"])),
                 float(np.median(per_node[node_id, "backward"])), node.flops * batch_size)
        for node_id, node in net.plan.nodes.items())
    return StepProfile(batch_size=batch_size, steps=steps, step=float(np.median(phases["step"])),
                       loss=float(np.median(phases["loss"])),
                       update=float(np.median(phases["update"])), nodes=nodes,
                       forward_flops=net.plan.total_flops * batch_size)


def profile_table(profile: StepProfile) -> str:
    """Per-node milliseconds of a step, each node's share of it, and the GFLOP/s it reaches
    (forward and backward together, counting backward as twice the forward FLOPs)."""
    step = profile.step
    rows = []
    for node in profile.nodes:
        rate = 3 * node.flops / node.total / 1e9 if node.flops and node.total else None
        rows.append([node.node, node.op, f"{1e3 * node.forward:.3f}",
                     f"{1e3 * node.backward:.3f}", f"{100 * node.total / step:.1f}%",
                     "-" if rate is None else f"{rate:.2f}"])
    rows.append(["(loss)", "", f"{1e3 * profile.loss:.3f}", "",
                 f"{100 * profile.loss / step:.1f}%", ""])
    rows.append(["(update)", "", "", f"{1e3 * profile.update:.3f}",
                 f"{100 * profile.update / step:.1f}%", ""])
    footer = [["step", f"batch {profile.batch_size}", "", "", f"{1e3 * step:.3f} ms",
               f"{profile.gflops:.2f}"],
              ["", "", "", "", f"{profile.samples_per_second:,.0f}/s", ""]]
    columns = [Column("node", "<"), Column("op", "<"), Column("fwd ms"), Column("bwd ms"),
               Column("share"), Column("GFLOP/s")]
    return render_table(columns, rows, footer)
