"""Memory guard rails: estimate what running a plan will allocate, and refuse before allocating.

A network that cannot fit should stop with a sentence naming the sizes, not with a NumPy
``MemoryError`` halfway through the first batch (or the kernel's OOM killer). The estimate
follows the executor's memory use per op, in bytes:

* training keeps every node's output and its backward cache (the lowered windows of a conv,
  the mask of a dropout, ...) until backward, and needs the largest single node's scratch space
  (padded copies, gradient arrays) on top;
* inference frees each output once its last consumer has run, so what counts is the largest set
  of outputs alive at once, plus the scratch space of the node running; a large batch runs in
  chunks of ``INFERENCE_CHUNK_BYTES`` of that (at least ``MIN_INFERENCE_CHUNK`` samples), so
  only its inputs and outputs grow with it;
* parameters count once for inference; training adds their gradients and the optimizer's
  state (``optimizer_slots`` arrays per parameter: 2 for Adam, an upper bound for SGD).

It is an estimate: within a small factor of the truth, meant to catch the 10x mistakes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from netspec.common.errors import NetspecError
from netspec.common.tables import human_bytes
from netspec.ops.shapes import numel, pair
from netspec.plan.compiler import Plan, PlanNode

DTYPE_BYTES = {"float32": 4, "float64": 8}
# inference splits a large batch so that each part's activations and scratch arrays fit in
# about this much memory: measured 1.5-2x faster than one pass for the LeNets at batch 1000
INFERENCE_CHUNK_BYTES = 12 * 2**20
# but never fewer samples than this: each layer's weights are read once per chunk, and a
# convolution's matrix products have (output width x samples) columns, which run slower the
# fewer there are. Against chunks of 16 (or 30-31, what 12 MiB allowed), 64 samples made batch
# 1000 14-33% faster for resnet_mini, resnet_mnist and convnet_bn
# (tools/bench.py and interleaved runs of both sizes)
MIN_INFERENCE_CHUNK = 64
# ...as long as that many samples need no more than this (a 224x224 ResNet-18 needs 15 MiB a
# sample, and takes 17 at once)
MIN_CHUNK_CEILING_BYTES = 256 * 2**20
MEMINFO = Path("/proc/meminfo")
# cgroup v2 limits of the container the process runs in, when there is one
CGROUP_MAX = Path("/sys/fs/cgroup/memory.max")
CGROUP_CURRENT = Path("/sys/fs/cgroup/memory.current")


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a plan needs at a batch size.

    ``per_sample_bytes`` and ``workspace_bytes`` count for each sample that runs through the
    network at once: the whole batch, or in inference at most ``chunk_samples`` of it. A
    chunked batch adds ``io_bytes_per_sample`` for every sample: its inputs and outputs.
    """

    plan_name: str
    batch_size: int
    training: bool
    per_sample_bytes: int
    workspace_bytes: int
    parameter_bytes: int
    available_bytes: int | None
    chunk_samples: int | None = None
    io_bytes_per_sample: int = 0

    @property
    def samples_at_once(self) -> int:
        if self.chunk_samples is None:
            return self.batch_size
        return min(self.batch_size, self.chunk_samples)

    @property
    def activation_bytes(self) -> int:
        """Outputs and caches at this batch size (training) or the peak live set (inference)."""
        whole_batch = self.io_bytes_per_sample * self.batch_size \
            if self.samples_at_once < self.batch_size else 0
        return self.per_sample_bytes * self.samples_at_once + whole_batch

    @property
    def total_bytes(self) -> int:
        return self.activation_bytes + self.workspace_bytes * self.samples_at_once \
            + self.parameter_bytes

    @property
    def fits(self) -> bool:
        """True unless the available memory is known and too small."""
        return self.available_bytes is None or self.total_bytes <= self.available_bytes

    @property
    def max_batch_size(self) -> int | None:
        """The largest batch that fits the available memory (0: not even one sample)."""
        if self.available_bytes is None:
            return None
        per_sample = self.per_sample_bytes + self.workspace_bytes
        spare = self.available_bytes - self.parameter_bytes
        if not per_sample:
            return None
        unchunked = max(spare // per_sample, 0)
        if self.chunk_samples is None or unchunked <= self.chunk_samples:
            return unchunked
        # beyond one chunk, the chunk's working set is fixed and only inputs and outputs grow
        spare -= per_sample * self.chunk_samples
        return max(spare // max(self.io_bytes_per_sample, 1), self.chunk_samples)

    def describe(self) -> str:
        """One line for people, e.g. ``training at batch 64: about 1.2 GiB (...)``."""
        mode = "training" if self.training else "inference"
        parameters = "parameters, gradients and optimizer state" if self.training \
            else "parameters"
        what = "activations and caches" if self.training else "live activations"
        text = (f"{mode} at batch {self.batch_size} needs about {human_bytes(self.total_bytes)} "
                f"({human_bytes(self.total_bytes - self.parameter_bytes)} "
                f"of {what}, {human_bytes(self.parameter_bytes)} of {parameters})")
        if self.available_bytes is not None:
            text += f"; {human_bytes(self.available_bytes)} available"
        return text


def available_memory() -> int | None:
    """Bytes this process could still allocate, or None when the platform does not say.

    The smaller of the kernel's ``MemAvailable`` and the room left under a cgroup limit.
    """
    candidates = []
    meminfo = _meminfo_bytes("MemAvailable")
    if meminfo is not None:
        candidates.append(meminfo)
    elif hasattr(os, "sysconf"):
        candidates.append(_sysconf_bytes("SC_AVPHYS_PAGES"))
    limit, used = _read_int(CGROUP_MAX), _read_int(CGROUP_CURRENT)
    if limit is not None and used is not None:
        candidates.append(max(limit - used, 0))
    known = [c for c in candidates if c is not None]
    return min(known) if known else None


def total_memory() -> int | None:
    """Installed memory in bytes, or None when the platform does not say."""
    meminfo = _meminfo_bytes("MemTotal")
    if meminfo is not None:
        return meminfo
    return _sysconf_bytes("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None


def _meminfo_bytes(field: str) -> int | None:
    try:
        lines = MEMINFO.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if name == field and parts and parts[0].isdigit():
            return int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return None


def _sysconf_bytes(pages: str) -> int | None:
    try:
        value = os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
    return value if value > 0 else None


def _read_int(path: Path) -> int | None:
    """An integer file such as a cgroup limit; None when absent or 'max' (no limit)."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _padded_input(node: PlanNode) -> int:
    channels, height, width = node.input_shapes[0]
    pad_h, pad_w = pair(getattr(node.params, "padding", 0))
    return channels * (height + 2 * pad_h) * (width + 2 * pad_w)


def _window_values(node: PlanNode) -> int:
    """Elements of the (out, kh, kw) window matrix an op copies out of its input."""
    kernel_h, kernel_w = pair(node.params.kernel_size)
    channels = node.input_shapes[0][0]
    out_h, out_w = node.shape[1], node.shape[2]
    return out_h * out_w * channels * kernel_h * kernel_w


def _conv_memory(node: PlanNode, item: int) -> tuple[int, int]:
    channels = node.input_shapes[0][0]
    kernel_h, kernel_w = pair(node.params.kernel_size)
    stride_h = pair(node.params.stride)[0]
    out_h, out_w = node.shape[1], node.shape[2]
    lowered = (stride_h * (out_h - 1) + kernel_h) * channels * kernel_w * out_w * item
    # forward pads the input; backward transposes dy and makes the window gradients and dx
    # on the padded grid
    scratch = (numel(node.shape) + 2 * _padded_input(node) + _window_values(node)) * item
    return lowered, scratch


def _maxpool_memory(node: PlanNode, item: int) -> tuple[int, int]:
    padded = _padded_input(node) * item
    has_padding = any(pair(node.params.padding))
    # a padded copy of the input stays for backward; backward needs two boolean masks, dy in
    # the input's layout and dx
    scratch = 2 * numel(node.shape) + numel(node.shape) * item + padded
    return (padded if has_padding else 0), scratch


def _avgpool_memory(node: PlanNode, item: int) -> tuple[int, int]:
    return 0, (2 * _padded_input(node) + numel(node.shape)) * item


def _mask_memory(node: PlanNode, item: int) -> tuple[int, int]:
    # dropout keeps a mask (float), batchnorm the normalised input: one output's worth each
    return numel(node.shape) * item, 2 * numel(node.shape) * item


def _bool_mask_memory(node: PlanNode, item: int) -> tuple[int, int]:
    return numel(node.shape), 2 * numel(node.shape) * item


# op -> (bytes cached for backward, scratch bytes while it runs), per sample; ops not listed
# cache references only and need an output-sized gradient and one temporary
_OP_MEMORY: dict[str, Callable[[PlanNode, int], tuple[int, int]]] = {
    "conv2d": _conv_memory,
    "maxpool2d": _maxpool_memory,
    "avgpool2d": _avgpool_memory,
    "dropout": _mask_memory,
    "batchnorm": _mask_memory,
    "leaky_relu": _bool_mask_memory,
}
# ops whose output is a view of their input: no new memory
_VIEWS = frozenset({"flatten"})


def _node_memory(node: PlanNode, item: int) -> tuple[int, int, int]:
    """(output, cache, scratch) bytes per sample of one node."""
    output = 0 if node.op_name in _VIEWS else numel(node.shape) * item
    rule = _OP_MEMORY.get(node.op_name)
    if rule is not None:
        cache, scratch = rule(node, item)
    else:
        cache = 0
        inputs = sum(numel(shape) for shape in node.input_shapes) * item
        scratch = max(inputs, numel(node.shape) * item) + numel(node.shape) * item
    return output, cache, scratch


def _peak_inference(plan: Plan, item: int) -> tuple[int, int]:
    """(peak live outputs, scratch at that moment) per sample, following the executor's frees."""
    remaining = dict.fromkeys(plan.nodes, 0)
    for node in plan.nodes.values():
        for source in node.inputs:
            remaining[source] += 1
    live: dict[str, int] = {}
    peak, peak_scratch = 0, 0
    for node_id, node in plan.nodes.items():
        output, _, scratch = _node_memory(node, item)
        live[node_id] = output
        if sum(live.values()) + scratch > peak + peak_scratch:
            peak, peak_scratch = sum(live.values()), scratch
        for source in node.inputs:
            remaining[source] -= 1
            if remaining[source] == 0 and source != plan.output:
                live.pop(source, None)
    return peak, peak_scratch


def inference_chunk(plan: Plan, dtype: str = "float32") -> int:
    """How many samples inference runs through ``plan`` at once (see ``INFERENCE_CHUNK_BYTES``)."""
    live, scratch = _peak_inference(plan, DTYPE_BYTES[dtype])
    per_sample = max(1, live + scratch)
    floor = max(1, min(MIN_INFERENCE_CHUNK, MIN_CHUNK_CEILING_BYTES // per_sample))
    return max(floor, INFERENCE_CHUNK_BYTES // per_sample)


def estimate_memory(plan: Plan, batch_size: int, *, training: bool, dtype: str = "float32",
                    optimizer_slots: int = 2, available: int | None = None) -> MemoryEstimate:
    """What running ``plan`` at ``batch_size`` needs; ``available`` defaults to this machine's
    free memory (see :func:`available_memory`)."""
    if batch_size <= 0:
        raise NetspecError(f"batch size must be a positive integer, got {batch_size}")
    if dtype not in DTYPE_BYTES:
        raise NetspecError(f"dtype must be one of {', '.join(DTYPE_BYTES)}, got '{dtype}'")
    item = DTYPE_BYTES[dtype]
    param_values = sum(node.n_param_values for node in plan.nodes.values())
    buffer_values = sum(numel(spec.shape) for node in plan.nodes.values()
                        for spec in node.buffer_specs.values())
    if training:
        per_node = [_node_memory(node, item) for node in plan.nodes.values()]
        per_sample = sum(output + cache for output, cache, _ in per_node)
        scratch = max((s for _, _, s in per_node), default=0)
        trainable = plan.total_params
        parameters = (param_values + buffer_values + trainable * (1 + optimizer_slots)) * item
        chunk, io_bytes = None, 0
    else:
        per_sample, scratch = _peak_inference(plan, item)
        parameters = (param_values + buffer_values) * item
        chunk = inference_chunk(plan, dtype)
        io_bytes = sum(numel(plan.nodes[node_id].shape)
                       for node_id in (*plan.inputs, plan.output)) * item
    return MemoryEstimate(
        plan_name=plan.name,
        batch_size=batch_size,
        training=training,
        per_sample_bytes=per_sample,
        workspace_bytes=scratch,
        parameter_bytes=parameters,
        available_bytes=available if available is not None else available_memory(),
        chunk_samples=chunk,
        io_bytes_per_sample=io_bytes,
    )


def check_memory(plan: Plan, batch_size: int, *, training: bool, dtype: str = "float32",
                 optimizer_slots: int = 2, available: int | None = None) -> MemoryEstimate:
    """The estimate of :func:`estimate_memory`, or a NetspecError saying why it cannot fit.

    Call it after compiling and before building the :class:`~netspec.runtime.executor.Network`: the
    parameters alone may not fit.
    """
    estimate = estimate_memory(plan, batch_size, training=training, dtype=dtype,
                               optimizer_slots=optimizer_slots, available=available)
    if estimate.fits:
        return estimate
    mode = "training" if training else "running"
    room = human_bytes(estimate.available_bytes or 0)
    if estimate.parameter_bytes > (estimate.available_bytes or 0):
        raise NetspecError(
            f"{plan.name}: {mode} needs {human_bytes(estimate.parameter_bytes)} for the "
            f"parameters alone ({plan.total_params:,} trainable values"
            f"{', with gradients and optimizer state' if training else ''}); this machine has "
            f"{room} available. Make the largest layers smaller (fewer out_channels or "
            f"out_features, or a pooling step before a linear layer)")
    fits = estimate.max_batch_size or 0
    advice = (f"use a batch size of at most {fits}" if fits else
              "not even one sample fits; use smaller inputs, fewer channels or more pooling")
    activations = estimate.total_bytes - estimate.parameter_bytes
    raise NetspecError(
        f"{plan.name}: {mode} needs about {human_bytes(estimate.total_bytes)} "
        f"({human_bytes(activations)} of activations at batch {batch_size}, "
        f"{human_bytes(estimate.parameter_bytes)} of parameters); this machine has {room} "
        f"available; {advice}")


__all__ = ["MemoryEstimate", "available_memory", "check_memory", "estimate_memory",
           "total_memory"]
