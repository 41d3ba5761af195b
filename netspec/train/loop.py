"""The training loop: mini-batch SGD-family training on image data with a resumable run directory.

Every random choice of a batch (shuffling, augmentation, dropout) is drawn from a generator
seeded by ``(seed, epoch, batch)``, so a run resumed at any batch boundary continues exactly as
the uninterrupted run would have. A run directory holds:

``spec.toml``, ``config.json``   the spec text, the resolved ``[train]`` config, the data,
                                 the command's options and the run's provenance
``history.json``, ``metrics.csv`` one record (row) per finished epoch
``tensorboard/``                 TensorBoard event files (with the ``tensorboard`` extra)
``last.npz``, ``best.npz``       weights, buffers, optimizer state and the loop's position
``result.json``                  the final test evaluation with the best weights
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from netspec.common.atomic import atomic_write_text
from netspec.common.errors import DataError, NetspecError, SpecError, TrainingError, WeightsError
from netspec.data import split_train_validation
from netspec.data.batches import augment_batch, random_crop, random_flip
from netspec.data.choice import MNIST, DataChoice
from netspec.data.dataset import Dataset, channel_stats, unit_scale
from netspec.lang.spec import load_spec, parse_spec, resolve_spec_path
from netspec.plan.budget import check_memory
from netspec.plan.compiler import compile_plan
from netspec.runtime.executor import Network
from netspec.runtime.losses import softmax_cross_entropy
from netspec.train.config import TrainConfig, parse_train_config
from netspec.train.data import data_choice, prepare_data, recorded_choice
from netspec.train.evaluate import Evaluation, evaluate, normalise_images, standardise
from netspec.train.health import (
    describe_node,
    first_nonfinite_gradient,
    first_nonfinite_output,
)
from netspec.train.optim import Optimizer, clip_grad_norm, make_optimizer
from netspec.train.runlog import TensorBoardLog, provenance, write_metrics
from netspec.train.schedules import learning_rate
from netspec.weights.checkpoint import load_weights, read_checkpoint, save_checkpoint

# stream ids keep the per-batch generators of different purposes independent
_SHUFFLE, _AUGMENT, _DROPOUT = 1, 2, 3


class TrainingInterrupted(NetspecError):
    """Training stopped on request (Ctrl-C or SIGTERM) after saving its position."""


@dataclass(frozen=True)
class BatchProgress:
    epoch: int
    epochs: int
    batch: int
    batches: int
    loss: float
    accuracy: float
    samples_per_second: float
    lr: float
    # seconds of training in this epoch so far
    seconds: float = 0.0


@dataclass
class Callbacks:
    """Hooks through which the caller (the CLI) shows progress; the loop never prints."""

    on_batch: Callable[[BatchProgress], None] | None = None
    on_epoch: Callable[[dict[str, Any]], None] | None = None
    on_download: Callable[[str, int, int | None], None] | None = None


@dataclass
class LoopState:
    """The loop's position and what it has learned so far; saved inside ``last.npz``."""

    epoch: int = 0
    batch: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    finished: bool = False
    stopped_early: bool = False


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    history: list[dict[str, Any]]
    test: Evaluation
    best_epoch: int
    stopped_early: bool


@dataclass(frozen=True)
class Splits:
    """Training and validation images ``(N, C, H, W)`` with labels, and the per-channel
    normalisation computed from the training split."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    mean: tuple[float, ...]
    std: tuple[float, ...]


def make_splits(data: Dataset, config: TrainConfig) -> Splits:
    images, labels = data.train_images, data.train_labels
    if config.limit:
        # limit counts the training images; the validation images are held out besides them
        kept = config.limit + config.validation
        images, labels = images[:kept], labels[:kept]
    if config.validation >= len(images):
        raise TrainingError(f"validation = {config.validation} leaves no training images out "
                            f"of the {len(images)} of {data.label}; lower it")
    train_idx, val_idx = split_train_validation(len(images), config.validation, config.seed)
    mean, std = channel_stats(images[train_idx])
    flat = [c for c, s in enumerate(std) if s == 0]
    if flat:
        raise DataError(f"{data.label}: channel {flat[0]} has the same value in every training "
                        "image; there is nothing to learn from it")
    return Splits(images[train_idx], labels[train_idx].astype(np.int64), images[val_idx],
                  labels[val_idx].astype(np.int64), mean, std)


def stats_meta(values: tuple[float, ...]) -> float | list[float]:
    """Per-channel statistics as a weights file stores them: a number for one channel (as
    before colour data existed), a list otherwise."""
    return values[0] if len(values) == 1 else list(values)


def recipe_normalisation(spec_path: str | Path, data: Dataset,
                         spec_overrides: dict[str, Any] | None = None
                         ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input normalisation a run of the spec's ``[train]`` recipe computes: for weights
    that carry none (a PyTorch state_dict)."""
    spec = load_spec(spec_path, spec_overrides)
    config = parse_train_config(spec.train or {}, file=spec.file,
                                locate=lambda path: spec.source.locate(path))
    splits = make_splits(data, config)
    return splits.mean, splits.std


class Trainer:
    """Trains one network in one run directory; :meth:`run` returns when training is done."""

    def __init__(self, net: Network, config: TrainConfig, run_dir: Path, data: Dataset,
                 callbacks: Callbacks | None = None, state: LoopState | None = None,
                 optimizer_state: dict[str, np.ndarray] | None = None,
                 choice: DataChoice | None = None):
        self.net = net
        self.config = config
        self.run_dir = run_dir
        self.data = data
        self.choice = choice
        self.callbacks = callbacks or Callbacks()
        self.state = state or LoopState()
        self.splits = make_splits(data, config)
        self.optimizer: Optimizer = make_optimizer(
            config.optimizer, {key: net.params[key].shape for key in net.trainable})
        if optimizer_state:
            self.optimizer.load_state_dict(optimizer_state)
        self.val_x = normalise_images(self.splits.val_images, self.splits.mean, self.splits.std,
                                      net.dtype.type)
        self._stop_requested = False
        self.tensorboard = TensorBoardLog(run_dir)

    @property
    def monitor(self) -> str:
        stopping = self.config.early_stopping
        return stopping.monitor if stopping else "val_accuracy"

    def run(self) -> TrainResult:
        # a diverging step is reported by _non_finite, not by NumPy warnings before it
        with self._deferred_interrupts(), np.errstate(over="ignore", invalid="ignore",
                                                      divide="ignore"):
            while not self.state.finished:
                self._run_epoch()
        try:
            return self._finish()
        except KeyboardInterrupt:
            # the epochs are all saved in last.npz; a resume only runs the test pass again
            raise TrainingInterrupted(
                f"stopped during the final test evaluation, after all "
                f"{self.state.epoch} epochs (saved in {self.run_dir / 'last.npz'}); finish "
                f"with: netspec train --resume {self.run_dir}") from None
        finally:
            self.tensorboard.close()

    def _run_epoch(self) -> None:
        config, state, splits = self.config, self.state, self.splits
        n = len(splits.train_images)
        batches = math.ceil(n / config.batch_size)
        order = np.random.default_rng([config.seed, _SHUFFLE, state.epoch]).permutation(n)
        started = time.perf_counter()
        lr = config.optimizer.lr
        for batch in range(state.batch, batches):
            if self._stop_requested:
                state.seconds += time.perf_counter() - started
                self._save_last()
                raise TrainingInterrupted(
                    f"stopped at epoch {state.epoch + 1}, batch {batch}/{batches}; saved "
                    f"{self.run_dir / 'last.npz'}; continue with: netspec train --resume "
                    f"{self.run_dir}")
            idx = order[batch * config.batch_size:(batch + 1) * config.batch_size]
            lr = learning_rate(config.schedule, config.optimizer.lr,
                               state.epoch + batch / batches, config.epochs,
                               steps_per_epoch=batches)
            loss, correct = self._step(self._batch_inputs(idx, state.epoch, batch),
                                       splits.train_labels[idx], lr, state.epoch, batch)
            state.loss_sum += loss * len(idx)
            state.correct += correct
            state.seen += len(idx)
            state.batch = batch + 1
            if self.callbacks.on_batch:
                elapsed = state.seconds + time.perf_counter() - started
                self.callbacks.on_batch(BatchProgress(
                    state.epoch + 1, config.epochs, batch + 1, batches,
                    state.loss_sum / state.seen, state.correct / state.seen,
                    state.seen / max(elapsed, 1e-9), lr, elapsed))
        state.seconds += time.perf_counter() - started
        self._end_epoch(lr)

    def _batch_inputs(self, idx: np.ndarray, epoch: int, batch: int) -> np.ndarray:
        dtype = self.net.dtype.type
        images = unit_scale(self.splits.train_images[idx], dtype)
        augment = self.config.augment
        if augment.any:
            # one generator, drawn from in a fixed order: shifts and rotations, crops, flips
            rng = np.random.default_rng([self.config.seed, _AUGMENT, epoch, batch])
            if augment.max_shift or augment.max_rotation:
                images = augment_batch(images, rng, augment.max_shift, augment.max_rotation)
            if augment.crop_padding:
                images = random_crop(images, rng, augment.crop_padding, augment.pad_mode)
            if augment.horizontal_flip:
                images = random_flip(images, rng)
        return standardise(images, self.splits.mean, self.splits.std)

    def _step(self, x: np.ndarray, labels: np.ndarray, lr: float, epoch: int,
              batch: int) -> tuple[float, int]:
        net = self.net
        net.rng = np.random.default_rng([self.config.seed, _DROPOUT, epoch, batch])
        logits = net.forward(x, train=True)
        loss, dlogits = softmax_cross_entropy(logits, labels, self.config.label_smoothing)
        if not math.isfinite(loss):
            culprit = first_nonfinite_output(
                net, x, np.random.default_rng([self.config.seed, _DROPOUT, epoch, batch]))
            where = (f"; {describe_node(net, culprit)} was the first whose output is not "
                     f"finite" if culprit else "")
            self._non_finite(f"the loss is {loss}{where}", epoch, batch)
        net.backward(dlogits, need_input_grad=False)
        grads = {key: net.grads[key] for key in net.trainable}
        if self.config.clip_grad_norm:
            norm = clip_grad_norm(grads, self.config.clip_grad_norm)
        else:
            norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
        if not math.isfinite(norm):
            key = first_nonfinite_gradient(net)
            what = f"the gradient of '{key}' is not finite" if key else "a gradient is not finite"
            self._non_finite(what, epoch, batch)
        self.optimizer.step(net.params, grads, lr)
        return loss, int((logits.argmax(axis=1) == labels).sum())

    def _non_finite(self, what: str, epoch: int, batch: int) -> None:
        last = self.run_dir / "last.npz"
        kept = (f"The last good weights are in {last} (the last checkpoint)" if last.exists()
                else "No checkpoint had been saved yet")
        raise TrainingError(
            f"training diverged at epoch {epoch + 1}, batch {batch}: {what}. {kept}. Try a "
            f"lower learning rate (--lr), gradient clipping (clip_grad_norm in [train]), or a "
            f"warmup (warmup_epochs in [train.schedule])")

    def _end_epoch(self, lr: float) -> None:
        state = self.state
        record: dict[str, Any] = {
            "epoch": state.epoch + 1,
            "train_loss": state.loss_sum / state.seen,
            "train_accuracy": state.correct / state.seen,
            "val_loss": None,
            "val_accuracy": None,
            "lr": lr,
            "seconds": state.seconds,
        }
        improved = True
        if len(self.val_x):
            val = self._evaluate(self.val_x, self.splits.val_labels)
            record["val_loss"], record["val_accuracy"] = val.loss, val.accuracy
            improved = self._improved(record)
        state.history.append(record)
        state.epoch += 1
        state.batch, state.loss_sum, state.correct, state.seen, state.seconds = 0, 0.0, 0, 0, 0.0
        stopping = self.config.early_stopping
        if improved:
            state.best_epoch, state.bad_epochs = state.epoch, 0
            state.best_value = record[self.monitor] if len(self.val_x) else None
        else:
            state.bad_epochs += 1
        if stopping and state.bad_epochs >= stopping.patience:
            state.stopped_early = True
        state.finished = state.stopped_early or state.epoch >= self.config.epochs
        # best.npz before last.npz: a kill between the two never leaves a last.npz that
        # claims a best epoch whose weights were not written
        if improved and self.writes_files:
            save_checkpoint(self.run_dir / "best.npz", self.net, meta=self._meta())
        self._save_last()
        if self.writes_files:
            atomic_write_text(self.run_dir / "history.json",
                              json.dumps(state.history, indent=1))
            write_metrics(self.run_dir, state.history)
            self.tensorboard.add_epoch(record)
        if self.callbacks.on_epoch:
            self.callbacks.on_epoch(record)

    def _improved(self, record: dict[str, Any]) -> bool:
        best = self.state.best_value
        if best is None:
            return True
        delta = self.config.early_stopping.min_delta if self.config.early_stopping else 0.0
        if self.monitor == "val_loss":
            return record["val_loss"] < best - delta
        return record["val_accuracy"] > best + delta

    @property
    def writes_files(self) -> bool:
        """Whether this trainer writes the run directory (one process of several does)."""
        return True

    def _evaluate(self, x: np.ndarray, labels: np.ndarray) -> Evaluation:
        """Metrics of the current weights on standardised inputs (an engine may override)."""
        return evaluate(self.net, x, labels)

    def _request_stop(self) -> None:
        """Ctrl-C or SIGTERM: stop at the next batch boundary; a second one stops now."""
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True

    def _meta(self) -> dict[str, Any]:
        meta = {"state": self.state.__dict__, "mean": stats_meta(self.splits.mean),
                "std": stats_meta(self.splits.std)}
        if self.choice is not None:
            meta |= {"data": self.choice.as_json(), "class_names": list(self.data.class_names)}
        return meta

    def _save_last(self) -> None:
        if not self.writes_files:
            return
        save_checkpoint(self.run_dir / "last.npz", self.net,
                        optimizer=self.optimizer.state_dict(), meta=self._meta())

    def _finish(self) -> TrainResult:
        if (self.run_dir / "best.npz").exists():
            load_weights(self.run_dir / "best.npz", self.net)
        test_x = normalise_images(self.data.test_images, self.splits.mean, self.splits.std,
                                  self.net.dtype.type)
        test = self._evaluate(test_x, self.data.test_labels.astype(np.int64))
        result = {"test": test.as_dict(), "class_names": list(self.data.class_names),
                  "best_epoch": self.state.best_epoch,
                  "epochs_run": self.state.epoch, "stopped_early": self.state.stopped_early,
                  "train_seconds": sum(r["seconds"] for r in self.state.history)}
        # a kill after the last epoch's last.npz but before its history.json is only mended here
        if self.writes_files:
            atomic_write_text(self.run_dir / "history.json",
                              json.dumps(self.state.history, indent=1))
            write_metrics(self.run_dir, self.state.history)
            atomic_write_text(self.run_dir / "result.json", json.dumps(result, indent=1))
        return TrainResult(self.run_dir, self.state.history, test, self.state.best_epoch,
                           self.state.stopped_early)

    @contextlib.contextmanager
    def _deferred_interrupts(self) -> Iterator[None]:
        """Turn Ctrl-C and SIGTERM into a request honoured between batches, so the weights
        are never saved halfway through an optimizer step."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum: int, frame: Any) -> None:
            self._request_stop()

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT,
                                                                       signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def start_run(spec_path: str | Path, run_dir: str | Path, *, overrides: dict[str, Any] | None
              = None, data_dir: str | Path | None = None, dtype: str = "float32",
              callbacks: Callbacks | None = None,
              spec_overrides: dict[str, Any] | None = None, data: str | None = None,
              initial_weights: str | Path | None = None,
              trainer_factory: Callable[..., Trainer] | None = None,
              engine: dict[str, Any] | None = None,
              command: Sequence[str] | None = None, blas_threads: int | None = None,
              options: dict[str, Any] | None = None) -> Trainer:
    """Set up a new run directory for ``spec_path`` and return its trainer. ``overrides`` are
    the command line's recipe options; ``spec_overrides`` its ``--set`` (variables and
    ``train.`` keys), recorded in the run so that --resume and evaluate rebuild the same
    network. ``data`` (``--data``) overrides the spec's ``[data]`` table; the data is loaded
    and checked against the network before anything is written to ``run_dir``. With
    ``initial_weights`` (a weights file of the same spec) training starts from them.

    ``trainer_factory`` (default :class:`Trainer`) builds the trainer from the same arguments;
    ``engine`` is recorded in ``config.json`` (the torch engine's name and device), with the
    run's provenance (versions, ``command``, the host, ``blas_threads``, the start time) and
    ``options``, the command's own options that ``--resume`` keeps (``{"plots": False}``).
    """
    from netspec.train.config import apply_overrides

    spec = load_spec(spec_path, spec_overrides)
    plan = compile_plan(spec)
    config = parse_train_config(spec.train or {}, file=spec.file,
                                locate=lambda path: spec.source.locate(path))
    config = apply_overrides(config, **(overrides or {}))
    run_dir = Path(run_dir)
    if (run_dir / "last.npz").exists():
        raise NetspecError(f"{run_dir} already holds a run; continue it with --resume "
                           f"{run_dir}, or choose another --out")
    # refuse a batch that cannot fit before allocating anything, not by an out-of-memory kill
    check_memory(plan, config.batch_size, training=True, dtype=dtype)
    callbacks = callbacks or Callbacks()
    choice = data_choice(spec, data)
    dataset = prepare_data(plan, choice, data_dir=data_dir, progress=callbacks.on_download)
    # the trainer checks the data split, so a bad [train] table leaves no half-made run behind
    net = Network(plan, seed=config.seed, dtype=dtype)
    if initial_weights is not None:
        load_weights(initial_weights, net)
    trainer = (trainer_factory or Trainer)(net, config, run_dir, dataset, callbacks,
                                           choice=choice)
    if not trainer.writes_files:
        return trainer
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NetspecError(f"{run_dir}: cannot create the run directory: "
                           f"{exc.strerror or exc}; choose another --out") from None
    # the spec's own text, read through any symlink, so that --resume parses the same spec
    source_text = resolve_spec_path(spec_path).read_text(encoding="utf-8")
    atomic_write_text(run_dir / "spec.toml", source_text)
    # the included block libraries beside it, so that the run's spec.toml reads on its own
    for relative, text in spec.included.items():
        (run_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / relative, text)
    atomic_write_text(run_dir / "config.json", json.dumps(
        {"config": config.model_dump(mode="json"), "dtype": dtype,
         "spec_dir": str(spec.directory) if spec.directory else None,
         "set": spec.overrides, "data": choice.as_json(), **(engine or {}),
         "options": options or {},
         "provenance": provenance(command, blas_threads)}, indent=1))
    return trainer


def resume_run(run_dir: str | Path, *, data_dir: str | Path | None = None,
               callbacks: Callbacks | None = None,
               trainer_factory: Callable[..., Trainer] | None = None) -> Trainer:
    """The trainer of an interrupted run, positioned where ``last.npz`` left it."""
    run_dir = Path(run_dir)
    for name in ("spec.toml", "config.json", "last.npz"):
        if not (run_dir / name).exists():
            raise NetspecError(f"{run_dir} is not a resumable run: {name} is missing")
    try:
        saved = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        config = parse_train_config(saved["config"], file=None, locate=lambda _: None)
    except SpecError as exc:
        problems = "; ".join(d.message for d in exc.diagnostics)
        raise NetspecError(f"{run_dir / 'config.json'} is corrupt: {problems}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise NetspecError(f"{run_dir / 'config.json'} is corrupt: {exc}") from None
    spec_dir = Path(saved["spec_dir"]) if saved.get("spec_dir") else run_dir
    spec = parse_spec((run_dir / "spec.toml").read_text(encoding="utf-8"),
                      file=str(run_dir / "spec.toml"), directory=spec_dir,
                      overrides=_recorded(saved, run_dir))
    plan = compile_plan(spec)
    dtype = saved.get("dtype", "float32")
    check_memory(plan, config.batch_size, training=True, dtype=dtype)
    net = Network(plan, seed=config.seed, dtype=dtype)
    checkpoint = load_weights(run_dir / "last.npz", net)
    raw_state = checkpoint.meta.get("state")
    try:
        state = LoopState(**raw_state)
    except TypeError:
        raise NetspecError(f"{run_dir / 'last.npz'} holds no training position") from None
    callbacks = callbacks or Callbacks()
    # a run that predates the choice of data was trained on MNIST
    choice = recorded_choice(saved, str(run_dir / "config.json")) or MNIST
    dataset = prepare_data(plan, choice, data_dir=data_dir, progress=callbacks.on_download)
    try:
        trainer = (trainer_factory or Trainer)(net, config, run_dir, dataset, callbacks,
                                               state=state,
                                               optimizer_state=checkpoint.optimizer,
                                               choice=choice)
    except WeightsError as exc:
        raise WeightsError(f"{run_dir / 'last.npz'}: {exc}") from None
    saved_stats = (checkpoint.meta.get("mean"), checkpoint.meta.get("std"))
    if saved_stats != (stats_meta(trainer.splits.mean), stats_meta(trainer.splits.std)):
        raise DataError(f"{dataset.label} is not the data this run started with (its training "
                        f"images have other statistics than {run_dir / 'last.npz'} records); "
                        "resume with the same files")
    return trainer


def run_engine(run_dir: str | Path) -> str:
    """The engine a run directory was trained with: ``"numpy"`` or ``"torch"``."""
    try:
        saved = json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "numpy"  # resume_run reports what is wrong with the directory
    return saved.get("engine", "numpy") if isinstance(saved, dict) else "numpy"


def recorded_overrides(run_dir: str | Path) -> dict[str, Any]:
    """The ``--set`` overrides a run directory was started with ({} when it is none)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return _recorded(saved, Path(run_dir)) if isinstance(saved, dict) else {}


def _recorded(saved: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    overrides = saved.get("set") or {}
    if not isinstance(overrides, dict):
        raise NetspecError(f"{run_dir / 'config.json'} is corrupt: 'set' is not a table")
    return overrides


def recorded_options(run_dir: str | Path) -> dict[str, Any]:
    """The command options a run directory was started with (``{"plots": False}``), which
    ``--resume`` keeps; {} for a run that recorded none."""
    path = Path(run_dir) / "config.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    options = saved.get("options") if isinstance(saved, dict) else None
    return options if isinstance(options, dict) else {}


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "history.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NetspecError(f"{path}: no history; has this run finished an epoch?") from None
    except ValueError as exc:
        raise NetspecError(f"{path} is corrupt: {exc}") from None


__all__ = ["Callbacks", "LoopState", "TrainResult", "Trainer", "TrainingInterrupted",
           "read_checkpoint", "read_history", "recorded_options", "recorded_overrides",
           "resume_run", "start_run"]
