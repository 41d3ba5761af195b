"""``netspec train``, ``netspec evaluate`` and ``netspec predict``."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

import numpy as np

from netspec.budget import check_memory
from netspec.cli.common import add_set_option
from netspec.cli.common import overrides as spec_settings
from netspec.cli.progress import ProgressLine, download_progress
from netspec.cli.threads import add_threads_option, threads_note
from netspec.compiler import compile_plan
from netspec.data import load_mnist
from netspec.errors import NetspecError
from netspec.executor import Network
from netspec.pictures.plots import PlotsUnavailable
from netspec.spec import load_spec
from netspec.tables import Column, render_table
from netspec.threads import BlasThreads
from netspec.train.checkpoint import load_weights
from netspec.train.evaluate import (
    EVALUATION_BATCH,
    evaluate,
    normalise_images,
    predict_logits,
)
from netspec.train.loop import (
    BatchProgress,
    Callbacks,
    TrainingInterrupted,
    recorded_overrides,
    resume_run,
    start_run,
)
from netspec.train.report import plot_run


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train", help="train a network on MNIST with the recipe in its [train] table",
        description="Train SPEC on MNIST. The recipe comes from the spec's [train] table; "
        "options override it. A run directory keeps the spec, config, history, best.npz and "
        "last.npz; Ctrl-C saves last.npz and --resume continues exactly.")
    train.add_argument("spec", nargs="?", help="a .toml file or a shipped name (omit with "
                       "--resume)")
    train.add_argument("--out", help="run directory (default runs/<name>-<timestamp>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    train.add_argument("--data-dir", help="directory holding the MNIST IDX files "
                       "(default: $NETSPEC_DATA_DIR, else the cache, else download)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--momentum", type=float)
    train.add_argument("--weight-decay", type=float)
    train.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    train.add_argument("--seed", type=int)
    train.add_argument("--validation", type=int, help="images held out for validation")
    train.add_argument("--limit", type=int, help="train on the first N images only")
    train.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    train.add_argument("--no-plots", action="store_true", help="do not write plot images")
    add_threads_option(train)
    add_set_option(train)
    train.set_defaults(handler=run_train)

    evaluate_parser = subparsers.add_parser(
        "evaluate", help="test accuracy, per-class accuracy and confusion matrix")
    evaluate_parser.add_argument("spec")
    evaluate_parser.add_argument("--weights", required=True, help="a .npz from a run")
    evaluate_parser.add_argument("--data-dir")
    add_threads_option(evaluate_parser)
    add_set_option(evaluate_parser)
    evaluate_parser.set_defaults(handler=run_evaluate)

    predict = subparsers.add_parser(
        "predict", help="classify 28x28 greyscale images (.png or .npy)")
    predict.add_argument("spec")
    predict.add_argument("--weights", required=True)
    predict.add_argument("inputs", nargs="+", metavar="INPUT")
    add_threads_option(predict)
    add_set_option(predict)
    predict.set_defaults(handler=run_predict)


def _callbacks(progress: ProgressLine, threads: BlasThreads) -> Callbacks:
    def on_batch(p: BatchProgress) -> None:
        # a netspec process started beside this one since: give it its share of the cores
        threads.refresh()
        progress.update(p.batch, p.batches,
                        f"epoch {p.epoch}/{p.epochs} batch {p.batch}/{p.batches} "
                        f"loss {p.loss:.4f} acc {p.accuracy:.4f} "
                        f"{p.samples_per_second:,.0f} img/s lr {p.lr:.4g}")

    def on_epoch(record: dict) -> None:
        progress.clear()
        val = (f"val loss {record['val_loss']:.4f} val acc {record['val_accuracy']:.4f}"
               if record["val_loss"] is not None else "no validation set")
        print(f"epoch {record['epoch']:>3}: train loss {record['train_loss']:.4f} "
              f"acc {record['train_accuracy']:.4f} | {val} | lr {record['lr']:.4g} | "
              f"{record['seconds']:.1f}s", flush=True)

    return Callbacks(on_batch=on_batch, on_epoch=on_epoch,
                     on_download=download_progress(progress))


def run_train(args: argparse.Namespace) -> int:
    progress = ProgressLine()
    callbacks = _callbacks(progress, args.blas_threads)
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                 "momentum": args.momentum, "weight_decay": args.weight_decay,
                 "optimizer": args.optimizer, "seed": args.seed,
                 "validation": args.validation, "limit": args.limit}
    if args.resume:
        ignored = (["the spec"] if args.spec else []) + (["--out"] if args.out else []) + (
            ["--set"] if args.set else []) + [
            "--" + name.replace("_", "-") for name, value in overrides.items()
            if value is not None]
        if ignored:
            raise NetspecError(f"--resume continues a run as it was set up; drop "
                               f"{', '.join(ignored)} (or start a new run with --out instead)")
        trainer = resume_run(args.resume, data_dir=args.data_dir, callbacks=callbacks)
        print(f"resuming {trainer.run_dir} at epoch {trainer.state.epoch + 1}, "
              f"batch {trainer.state.batch}")
    else:
        if not args.spec:
            raise NetspecError("give a spec to train, or --resume RUN_DIR")
        spec_overrides = spec_settings(args)
        name = load_spec(args.spec, spec_overrides).name
        out = args.out or Path("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
        trainer = start_run(args.spec, out, overrides=overrides, data_dir=args.data_dir,
                            dtype=args.dtype, callbacks=callbacks,
                            spec_overrides=spec_overrides)
        config = trainer.config
        print(f"training {trainer.net.plan.name} ({trainer.net.plan.total_params:,} params) "
              f"for {_plural(config.epochs, 'epoch')}, batch {config.batch_size}, "
              f"{config.optimizer.type} lr {config.optimizer.lr:g}, "
              f"{len(trainer.splits.train_images):,} training / "
              f"{len(trainer.splits.val_images):,} validation images"
              f"{threads_note(args.blas_threads)} -> {trainer.run_dir}")
    try:
        result = trainer.run()
    except TrainingInterrupted as exc:
        progress.clear()
        print(f"\ninterrupted: {exc}", file=sys.stderr)
        return 130
    progress.clear()
    seconds = sum(r["seconds"] for r in result.history)
    stop = " (stopped early)" if result.stopped_early else ""
    print(f"\ntest accuracy {result.test.accuracy:.4f} (loss {result.test.loss:.4f}) with the "
          f"weights of epoch {result.best_epoch}{stop}; {_plural(len(result.history), 'epoch')} in "
          f"{seconds:.0f}s of training")
    print(f"run directory: {result.run_dir}")
    if not args.no_plots:
        _write_plots(result.run_dir, args.data_dir)
    return 0


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _write_plots(run_dir: Path, data_dir: str | None) -> None:
    try:
        written = plot_run(run_dir, data_dir)
    except PlotsUnavailable as exc:
        print(f"plots skipped: {exc}")
        return
    print("plots: " + ", ".join(str(p) for p in written))


def run_evaluate(args: argparse.Namespace) -> int:
    net = _inference_network(args.spec, EVALUATION_BATCH, _settings_for(args))
    checkpoint = load_weights(args.weights, net)
    mean, std = _normalisation(checkpoint.meta, args.weights)
    data = load_mnist(args.data_dir, progress=download_progress(ProgressLine()))
    x = normalise_images(data.test_images, mean, std)
    result = evaluate(net, x, data.test_labels.astype(np.int64))
    print(f"test accuracy {result.accuracy:.4f}, loss {result.loss:.4f} "
          f"({len(result.labels):,} images)\n")
    rows = [[digit, f"{acc:.4f}", *result.confusion[digit]]
            for digit, acc in enumerate(result.per_class_accuracy)]
    columns = [Column("true"), Column("accuracy")] + [Column(f"p{d}") for d in range(10)]
    print(render_table(columns, rows))
    return 0


def _inference_network(spec: str, batch_size: int, settings: dict) -> Network:
    plan = compile_plan(spec, settings)
    check_memory(plan, batch_size, training=False)
    return Network(plan)


def _settings_for(args: argparse.Namespace) -> dict:
    """The command line's --set, else those recorded by the run the weights come from (so
    that a run trained with --set is evaluated as the same network)."""
    given = spec_settings(args)
    if given:
        return given
    recorded = recorded_overrides(Path(args.weights).parent)
    if recorded:
        shown = " ".join(f"--set {name}={value!r}" for name, value in recorded.items())
        print(f"using the overrides recorded by the run: {shown}", file=sys.stderr)
    return recorded


def _normalisation(meta: dict, path: str) -> tuple[float, float]:
    try:
        return float(meta["mean"]), float(meta["std"])
    except (KeyError, TypeError, ValueError):
        raise NetspecError(f"{path}: holds no normalisation (mean/std); was it written by "
                           f"netspec train?") from None


def run_predict(args: argparse.Namespace) -> int:
    from netspec.data.images import load_digit_images

    net = _inference_network(args.spec, EVALUATION_BATCH, _settings_for(args))
    checkpoint = load_weights(args.weights, net)
    mean, std = _normalisation(checkpoint.meta, args.weights)
    # one file may hold a stack of images: each row names the image it is about
    names: list[str] = []
    stacks = []
    for path in args.inputs:
        stack = load_digit_images([path])
        stacks.append(stack)
        names += [path] if len(stack) == 1 else [f"{path}[{i}]" for i in range(len(stack))]
    x = normalise_images(np.concatenate(stacks), mean, std)
    logits = predict_logits(net, x, EVALUATION_BATCH).astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    rows = [[name, int(p.argmax()), f"{p.max():.3f}", " ".join(f"{v:.2f}" for v in p)]
            for name, p in zip(names, probs, strict=True)]
    print(render_table([Column("input", "<"), Column("digit"), Column("confidence"),
                        Column("probabilities 0..9", "<")], rows))
    return 0
