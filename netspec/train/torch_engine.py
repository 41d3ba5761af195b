"""``netspec train --engine torch``: the spec's ``[train]`` recipe run by PyTorch.

The loop is netspec's own (:class:`netspec.train.loop.Trainer`): the same split, shuffling,
augmentation, learning-rate schedule, early stopping, run directory, checkpoints and
``--resume``. Only the arithmetic moves: the forward and backward passes, the loss, gradient
clipping and the optimizer step are PyTorch's (``torch.optim.SGD``/``Adam``/``AdamW`` with the
same settings), on ``--device cpu``, ``cuda`` or ``cuda:N``. Weights start as netspec's from
the spec's seed, and are written in netspec's format (``best.npz``, ``last.npz`` with the
optimizer state under netspec's names), so ``netspec evaluate``, ``predict`` and ``plot`` read
a torch run like any other.

Started by ``torchrun --nproc_per_node N``, the run is distributed with
DistributedDataParallel (gloo on CPU, nccl on CUDA). Every global batch is the configured one
and is split across the processes, each computing its share of the mean loss, so the gradient
is the single-process one (batchnorm normalises each process's share with its own statistics,
as DistributedDataParallel does, and the running statistics of process 0 are kept). Process 0
alone writes files and reports progress; all processes agree on every decision (stop requests,
early stopping, divergence) because they compute it from the same reduced numbers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from netspec.common.errors import NetspecError, TrainingError
from netspec.common.extras import require_torch
from netspec.train.config import AdamWConfig, OptimizerConfig, SGDConfig
from netspec.train.evaluate import EVALUATION_BATCH, Evaluation, evaluation_from_logits
from netspec.train.loop import Callbacks, Trainer, resume_run, start_run
from netspec.train.optim import decays_as_a_layer_weight

_DROPOUT = 3  # the loop's stream id for dropout draws
_SLOTS = {"sgd": ("momentum_buffer",), "adam": ("step", "exp_avg", "exp_avg_sq"),
          "adamw": ("step", "exp_avg", "exp_avg_sq")}


@dataclass(frozen=True)
class Placement:
    """Where this process trains: its device, and its rank among ``world`` processes."""

    device: str
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched_processes() -> int:
    """How many processes torchrun started (1 when run directly)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def place(device: str | None) -> Placement:
    """Check ``--device`` and, under torchrun, join the process group (gloo on CPU, nccl on
    CUDA). Every problem is a NetspecError saying what to change."""
    torch = require_torch("--engine torch")
    requested = device or "cpu"
    if requested != "cpu" and requested != "cuda" and not requested.startswith("cuda:"):
        raise NetspecError(f"--device {requested!r}: use cpu, cuda or cuda:N")
    world = launched_processes()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else \
                "a CPU-only build"
            raise NetspecError(f"--device {requested}: PyTorch finds no CUDA device (torch "
                               f"{torch.__version__}, {built}); train with --device cpu")
        count = torch.cuda.device_count()
        if requested == "cuda":
            index = local_rank if world > 1 else torch.cuda.current_device()
        else:
            if world > 1:
                raise NetspecError(f"--device {requested}: under torchrun give --device cuda; "
                                   f"each process takes the GPU of its local rank")
            try:
                index = int(requested.partition(":")[2])
            except ValueError:
                raise NetspecError(f"--device {requested!r}: use cuda:N with N a GPU "
                                   f"number") from None
        if not 0 <= index < count:
            raise NetspecError(f"--device {requested}: this machine has {count} CUDA "
                               f"device(s), numbered 0 to {count - 1}")
        requested = f"cuda:{index}"
        torch.cuda.set_device(index)
    if world > 1:
        import torch.distributed as dist

        backend = "nccl" if requested.startswith("cuda") else "gloo"
        available = dist.is_available() and (dist.is_nccl_available() if backend == "nccl"
                                             else dist.is_gloo_available())
        if not available:
            raise NetspecError(f"torchrun: this PyTorch build has no {backend} backend for "
                               f"{'CUDA' if backend == 'nccl' else 'CPU'} training")
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
    return Placement(requested, rank, world, local_rank)


def release(placement: Placement) -> None:
    """Leave the process group, if this process joined one."""
    if placement.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def agree(placement: Placement, text: str) -> str:
    """Process 0's ``text`` on every process (a default run directory named by the clock)."""
    if not placement.distributed:
        return text
    import torch
    import torch.distributed as dist

    device = placement.device if placement.device.startswith("cuda") else "cpu"
    data = torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8, device=device)
    size = torch.tensor([data.numel()], dtype=torch.int64, device=device)
    dist.broadcast(size, 0)
    if placement.rank != 0:
        data = torch.zeros(int(size.item()), dtype=torch.uint8, device=device)
    dist.broadcast(data, 0)
    return bytes(data.cpu().tolist()).decode("utf-8")


def _torch_optimizer(config: OptimizerConfig, named: Mapping[str, Any]) -> Any:
    import torch

    # the parameters left out of weight decay form a second group without it
    decayed = [p for key, p in named.items() if config.decay_norms_and_biases
               or decays_as_a_layer_weight(key, tuple(p.shape))]
    kept = [p for p in named.values() if all(p is not d for d in decayed)]
    groups = [{"params": decayed}] + ([{"params": kept, "weight_decay": 0.0}] if kept else [])
    if isinstance(config, SGDConfig):
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov, weight_decay=config.weight_decay)
    kind = torch.optim.AdamW if isinstance(config, AdamWConfig) else torch.optim.Adam
    return kind(groups, lr=config.lr, betas=config.betas, eps=config.eps,
                weight_decay=config.weight_decay)


class TorchTrainer(Trainer):
    """A :class:`Trainer` whose steps and evaluations PyTorch computes (see module notes).
    ``self.net`` stays the NumPy network: it receives the weights before every save, so
    checkpoints are netspec's."""

    def __init__(self, net, config, run_dir, data, callbacks=None, state=None,
                 optimizer_state=None, *, placement: Placement, choice=None):
        import torch

        from netspec.interchange.torch_runtime import PlanModule, load_arrays

        super().__init__(net, config, run_dir, data, callbacks, state, optimizer_state,
                         choice=choice)
        self.placement = placement
        self.torch = torch
        self.device = torch.device(placement.device)
        self.dtype = torch.float64 if net.dtype == np.float64 else torch.float32
        self.module = PlanModule(net.plan).to(device=self.device, dtype=self.dtype)
        load_arrays(self.module, net.state())
        named = dict(self.module.named_parameters())
        self.keys = [key for key in net.trainable if key in named]
        self.parameters = [named[key] for key in self.keys]
        self.torch_optimizer = _torch_optimizer(
            config.optimizer, {key: named[key] for key in self.keys})
        if optimizer_state:
            self._load_optimizer(optimizer_state)
        self.model = self.module
        if placement.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.module, device_ids=ids)
            self._check_shards()
        self._signal_pending = False

    # ---- what each process computes -------------------------------------------------------

    def _check_shards(self) -> None:
        """Every global batch must give every process at least one image."""
        n, batch, world = len(self.splits.train_images), self.config.batch_size, \
            self.placement.world
        last = n % batch or batch
        if min(batch, last, n) < world:
            raise TrainingError(
                f"with {world} processes every batch needs at least {world} images, but "
                f"{'the batch size is' if batch < world else 'the last batch of each epoch has'}"
                f" {min(batch, last)} ({n} training images, batch {batch}); change batch_size, "
                f"limit or validation, or start fewer processes")

    def _shard(self, count: int) -> slice:
        bounds = np.linspace(0, count, self.placement.world + 1).round().astype(int)
        return slice(int(bounds[self.placement.rank]), int(bounds[self.placement.rank + 1]))

    def _step(self, x: np.ndarray, labels: np.ndarray, lr: float, epoch: int,
              batch: int) -> tuple[float, int]:
        torch = self.torch
        placement = self.placement
        count = len(labels)
        part = self._shard(count)
        # dropout draws from torch's generator, seeded per batch (and process) like the loop's
        seed = np.random.default_rng([self.config.seed, _DROPOUT, epoch, batch,
                                      placement.rank]).integers(2**62)
        torch.manual_seed(int(seed))
        inputs = torch.from_numpy(np.ascontiguousarray(x[part])).to(self.device, self.dtype)
        targets = torch.from_numpy(labels[part]).to(self.device)
        for group in self.torch_optimizer.param_groups:
            group["lr"] = lr
        self.torch_optimizer.zero_grad(set_to_none=True)
        self.model.train()
        logits = self.model(inputs)
        loss_sum = torch.nn.functional.cross_entropy(
            logits, targets, reduction="sum", label_smoothing=self.config.label_smoothing)
        # each process's share of the global mean; DistributedDataParallel averages the
        # gradients over processes, hence the factor world
        (loss_sum * (placement.world / count)).backward()
        totals = torch.stack([loss_sum.detach().double(),
                              (logits.argmax(dim=1) == targets).sum().double(),
                              torch.tensor(float(self._signal_pending), dtype=torch.float64,
                                           device=self.device)])
        if placement.distributed:
            import torch.distributed as dist

            dist.all_reduce(totals)
        loss_total, correct, stops = totals.tolist()
        self._stop_requested = self._stop_requested or stops > 0
        loss = loss_total / count
        if not math.isfinite(loss):
            self._non_finite(f"the loss is {loss}", epoch, batch)
        total = torch.nn.utils.get_total_norm(
            [p.grad for p in self.parameters if p.grad is not None])
        if not math.isfinite(float(total)):
            bad = next((key for key, p in zip(self.keys, self.parameters)
                        if p.grad is not None and not bool(torch.isfinite(p.grad).all())), None)
            self._non_finite(f"the gradient of '{bad}' is not finite" if bad
                             else "a gradient is not finite", epoch, batch)
        if self.config.clip_grad_norm:
            # torch.nn.utils.clip_grad_norm_ in two steps, so a non-finite norm is named first
            torch.nn.utils.clip_grads_with_norm_(self.parameters, self.config.clip_grad_norm,
                                                 total)
        self.torch_optimizer.step()
        return loss, int(correct)

    def _request_stop(self) -> None:
        if not self.placement.distributed:
            super()._request_stop()
            return
        # the processes stop together, at the batch after the one whose totals carry it
        self._signal_pending = True

    def _evaluate(self, x: np.ndarray, labels: np.ndarray) -> Evaluation:
        torch = self.torch
        self._share_running_statistics()
        self.module.eval()
        outputs = []
        with torch.no_grad():
            for start in range(0, len(x), EVALUATION_BATCH):
                chunk = torch.from_numpy(np.ascontiguousarray(x[start:start + EVALUATION_BATCH]))
                outputs.append(self.module(chunk.to(self.device, self.dtype)).double().cpu())
        logits = torch.cat(outputs).numpy() if outputs else np.zeros((0, *self.net.output_shape))
        return evaluation_from_logits(logits, labels)

    def _share_running_statistics(self) -> None:
        """Process 0's batchnorm statistics on every process, so all evaluate alike."""
        if self.placement.distributed:
            import torch.distributed as dist

            for buffer in self.module.buffers():
                dist.broadcast(buffer, 0)

    # ---- netspec's files -------------------------------------------------------------------

    @property
    def writes_files(self) -> bool:
        return self.placement.main

    def _sync_to_network(self) -> None:
        from netspec.interchange.torch_runtime import module_arrays

        self._share_running_statistics()
        state = self.net.state()
        for key, value in module_arrays(self.module, self.net.dtype).items():
            state[key][...] = value

    def _end_epoch(self, lr: float) -> None:
        self._sync_to_network()
        super()._end_epoch(lr)

    def _save_last(self) -> None:
        self._sync_to_network()
        if not self.writes_files:
            return
        from netspec.weights.checkpoint import save_checkpoint

        save_checkpoint(self.run_dir / "last.npz", self.net, optimizer=self._optimizer_arrays(),
                        meta=self._meta())

    def _finish(self):
        from netspec.interchange.torch_runtime import load_arrays
        from netspec.weights.checkpoint import load_weights

        if self.placement.distributed:
            import torch.distributed as dist

            dist.barrier()  # process 0 has written best.npz
        if (self.run_dir / "best.npz").exists():
            load_weights(self.run_dir / "best.npz", self.net)
            load_arrays(self.module, self.net.state())
        try:
            return super()._finish()
        finally:
            if self.placement.distributed:
                import torch.distributed as dist

                dist.barrier()  # no process leaves before process 0 has written the result

    def _optimizer_arrays(self) -> dict[str, np.ndarray]:
        """The torch optimizer's state under netspec's names (``"exp_avg:fc1.weight"``)."""
        arrays = {}
        for key, parameter in zip(self.keys, self.parameters):
            for slot, value in self.torch_optimizer.state.get(parameter, {}).items():
                if slot == "step":
                    arrays[f"step:{key}"] = np.asarray(int(value), dtype=np.int64)
                elif value is not None:
                    arrays[f"{slot}:{key}"] = value.detach().cpu().numpy().astype(
                        self.net.dtype)
        return arrays

    def _load_optimizer(self, arrays: dict[str, np.ndarray]) -> None:
        torch = self.torch
        slots = _SLOTS[self.config.optimizer.type]
        by_key = dict(zip(self.keys, self.parameters))
        for entry, value in arrays.items():
            slot, _, key = entry.partition(":")
            if slot not in slots or key not in by_key:
                raise NetspecError(f"optimizer state entry '{entry}' does not belong to this "
                                   f"run's {self.config.optimizer.type} optimizer")
            parameter = by_key[key]
            state = self.torch_optimizer.state[parameter]
            if slot == "step":
                state["step"] = torch.tensor(float(value), dtype=torch.float32)
            else:
                state[slot] = torch.from_numpy(np.array(value)).to(self.device, self.dtype)


def start_torch_run(spec_path: str | Path, run_dir: str | Path, *, placement: Placement,
                    overrides: dict[str, Any] | None = None, data_dir: str | Path | None = None,
                    dtype: str = "float32", callbacks: Callbacks | None = None,
                    spec_overrides: dict[str, Any] | None = None,
                    **recorded: Any) -> TorchTrainer:
    """A new run of ``spec_path`` on the torch engine (see :func:`netspec.train.loop.start_run`;
    ``recorded`` are its ``command``, ``blas_threads`` and ``options``)."""
    def factory(*args: Any, **kwargs: Any) -> TorchTrainer:
        return TorchTrainer(*args, placement=placement, **kwargs)

    return start_run(spec_path, run_dir, overrides=overrides, data_dir=data_dir, dtype=dtype,
                     callbacks=callbacks, spec_overrides=spec_overrides, trainer_factory=factory,
                     engine={"engine": "torch", "device": placement.device,
                             "processes": placement.world}, **recorded)


def resume_torch_run(run_dir: str | Path, *, placement: Placement,
                     data_dir: str | Path | None = None,
                     callbacks: Callbacks | None = None) -> TorchTrainer:
    """An interrupted torch run, continued where ``last.npz`` left it (any device, any number
    of processes: the global batch stays the configured one)."""
    def factory(*args: Any, **kwargs: Any) -> TorchTrainer:
        return TorchTrainer(*args, placement=placement, **kwargs)

    return resume_run(run_dir, data_dir=data_dir, callbacks=callbacks, trainer_factory=factory)
