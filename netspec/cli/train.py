"""``netspec train``, ``netspec evaluate`` and ``netspec predict``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from netspec.cli.common import add_set_option
from netspec.cli.common import overrides as spec_settings
from netspec.cli.progress import ProgressLine, TrainingDisplay, download_progress, percent
from netspec.cli.threads import add_threads_option, threads_note
from netspec.common.errors import NetspecError
from netspec.common.tables import Column, render_table
from netspec.runtime.threads import BlasThreads


def _load() -> None:
    """Import what the commands of this module run on. They are imported when a command runs,
    not when the parser is built: --help and argument errors must not load NumPy, pydantic or
    networkx (tests/test_startup.py)."""
    global np, EVALUATION_BATCH, evaluate, normalise_images, predict_logits, BatchProgress
    global Callbacks, TrainingInterrupted, recorded_overrides, resume_run, start_run, check_memory
    global compile_plan, DIGITS, data_info, Dataset, load_images, Network, PlotsUnavailable
    global format_shape, load_spec, load_weights, data_choice, input_channels, prepare_data
    global recorded_choice, plot_run, recipe_normalisation, run_engine, launched_processes
    global is_torch_file, recorded_options, write_report
    import numpy as np

    from netspec.data.catalog import DIGITS
    from netspec.data.choice import data_info
    from netspec.data.dataset import Dataset
    from netspec.data.images import load_images
    from netspec.lang.spec import load_spec
    from netspec.ops.shapes import format_shape
    from netspec.pictures.plots import PlotsUnavailable
    from netspec.plan.budget import check_memory
    from netspec.plan.compiler import compile_plan
    from netspec.runtime.executor import Network
    from netspec.train.data import data_choice, input_channels, prepare_data, recorded_choice
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
        recipe_normalisation,
        recorded_options,
        recorded_overrides,
        resume_run,
        run_engine,
        start_run,
    )
    from netspec.train.report import plot_run
    from netspec.train.report_html import write_report
    from netspec.train.torch_engine import launched_processes
    from netspec.weights.checkpoint import load_weights
    from netspec.weights.torch_weights import is_torch_file

def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train", help="train a network with the recipe in its [train] table",
        description="Train SPEC on MNIST. The recipe comes from the spec's [train] table; "
        "options override it. A run directory keeps the spec, config, history, best.npz and "
        "last.npz; Ctrl-C saves last.npz and --resume continues exactly. Other data: "
        "[data] in the spec, or --data.")
    train.add_argument("spec", nargs="?", help="a .toml file or a shipped name (omit with "
                       "--resume)")
    train.add_argument("--out", help="run directory (default runs/<name>-<timestamp>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    train.add_argument("--data", metavar="SOURCE", help=DATA_HELP)
    train.add_argument("--data-dir", help="directory holding the files of a named data set "
                       "(default for MNIST: $NETSPEC_DATA_DIR; else the cache, else download)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--momentum", type=float)
    train.add_argument("--weight-decay", type=float)
    train.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    train.add_argument("--seed", type=int)
    train.add_argument("--validation", type=int, help="images held out for validation")
    train.add_argument("--limit", type=int, metavar="N", help="train on N images only "
                       "(the validation images are held out besides them)")
    train.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    train.add_argument("--engine", choices=["numpy", "torch"],
                       help="who computes: netspec's NumPy executor (default) or PyTorch "
                       "(the torch extra); under torchrun, torch trains with "
                       "DistributedDataParallel")
    train.add_argument("--device", help="with --engine torch: cpu (default), cuda or cuda:N")
    train.add_argument("--no-plots", action="store_true", help="write neither the plot images nor "
                       "report.html (kept by --resume; netspec plot and netspec report write "
                       "them later)")
    train.add_argument("--weights", metavar="W.npz", help="start from these weights "
                       "(fine-tuning): a .npz of the same spec, from a run or netspec import")
    add_threads_option(train)
    add_set_option(train)
    train.set_defaults(handler=run_train)

    evaluate_parser = subparsers.add_parser(
        "evaluate", help="test accuracy, per-class accuracy and confusion matrix")
    evaluate_parser.add_argument("spec")
    evaluate_parser.add_argument("--weights", required=True,
                                 help="a .npz from a run, or a PyTorch .pt/.pth state_dict")
    evaluate_parser.add_argument("--data", metavar="SOURCE", help=DATA_HELP + " (default: "
                                 "the data the weights were trained on)")
    evaluate_parser.add_argument("--data-dir", help="directory holding the files of a named "
                                 "data set")
    add_threads_option(evaluate_parser)
    add_set_option(evaluate_parser)
    evaluate_parser.set_defaults(handler=run_evaluate)

    predict = subparsers.add_parser(
        "predict", help="classify images (.png, .jpg or .npy) with trained weights")
    predict.add_argument("spec")
    predict.add_argument("--weights", required=True,
                         help="a .npz from a run, or a PyTorch .pt/.pth state_dict")
    predict.add_argument("--data", metavar="SOURCE", help="the data whose class names and "
                         "drawing convention apply (default: the data the weights were "
                         "trained on)")
    predict.add_argument("inputs", nargs="+", metavar="INPUT")
    predict.add_argument("--data-dir", help="the files of a named data set, for the "
                         "normalisation of .pt weights (which carry none)")
    add_threads_option(predict)
    add_set_option(predict)
    predict.set_defaults(handler=run_predict)


DATA_HELP = ("the data: mnist, fashion-mnist, kmnist, cifar10, a Keras-layout .npz file, or a "
             "directory with train/ and test/ holding one folder per class (default: the "
             "spec's [data], else mnist)")


def _callbacks(display: TrainingDisplay, threads: BlasThreads) -> Callbacks:
    def on_batch(p: BatchProgress) -> None:
        # a netspec process started beside this one since: give it its share of the cores
        threads.refresh()
        display.on_batch(p)

    return Callbacks(on_batch=on_batch, on_epoch=display.on_epoch,
                     on_download=download_progress(display.line))


def run_train(args: argparse.Namespace) -> int:
    _load()
    engine = args.engine
    if args.resume:
        recorded = run_engine(args.resume)
        if engine is not None and engine != recorded:
            raise NetspecError(f"{args.resume} was trained with the {recorded} engine; "
                               f"--resume continues it so, drop --engine {engine}")
        engine = recorded
    if engine != "torch":
        if args.device:
            raise NetspecError("--device chooses where PyTorch trains; add --engine torch")
        if launched_processes() > 1:
            raise NetspecError(f"started as {launched_processes()} processes (torchrun): "
                               f"add --engine torch to train with DistributedDataParallel")
        return _train(args, None)
    from netspec.train import torch_engine

    placement = torch_engine.place(args.device)
    try:
        return _train(args, placement)
    finally:
        torch_engine.release(placement)


def _train(args: argparse.Namespace, placement) -> int:  # noqa: ANN001 - a torch Placement
    main = placement is None or placement.main
    say = print if main else _silent
    progress = ProgressLine()
    display = TrainingDisplay(progress)
    callbacks = _callbacks(display, args.blas_threads) if main else None
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                 "momentum": args.momentum, "weight_decay": args.weight_decay,
                 "optimizer": args.optimizer, "seed": args.seed,
                 "validation": args.validation, "limit": args.limit}
    if args.resume:
        ignored = (["the spec"] if args.spec else []) + (["--out"] if args.out else []) + (
            ["--data"] if args.data else []) + (["--set"] if args.set else []) + (
            ["--weights"] if args.weights else []) + [
            "--" + name.replace("_", "-") for name, value in overrides.items()
            if value is not None]
        if ignored:
            raise NetspecError(f"--resume continues a run as it was set up; drop "
                               f"{', '.join(ignored)} (or start a new run with --out instead)")
        plots = not args.no_plots and recorded_options(args.resume).get("plots", True)
        if placement is None:
            trainer = resume_run(args.resume, data_dir=args.data_dir, callbacks=callbacks)
        else:
            from netspec.train.torch_engine import resume_torch_run

            trainer = resume_torch_run(args.resume, placement=placement,
                                       data_dir=args.data_dir, callbacks=callbacks)
        say(f"resuming {trainer.run_dir} at epoch {trainer.state.epoch + 1}, "
            f"batch {trainer.state.batch}")
    else:
        if not args.spec:
            raise NetspecError("give a spec to train, or --resume RUN_DIR")
        spec_overrides = spec_settings(args)
        name = load_spec(args.spec, spec_overrides).name
        out = args.out or Path("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
        plots = not args.no_plots
        recorded = {"command": ["netspec", *args.argv], "blas_threads": args.blas_threads.threads,
                    "options": {"plots": plots}}
        if placement is None:
            trainer = start_run(args.spec, out, overrides=overrides, data_dir=args.data_dir,
                                dtype=args.dtype, callbacks=callbacks,
                                spec_overrides=spec_overrides, data=args.data,
                                initial_weights=args.weights, **recorded)
            where = ""
        else:
            from netspec.train.torch_engine import agree, start_torch_run

            if args.data is not None or args.weights is not None:
                raise NetspecError("--engine torch trains on the spec's data from its initial "
                                   "weights; drop --data and --weights")
            # the processes of one run must name the same directory, whatever their clocks
            out = Path(agree(placement, str(out)))
            trainer = start_torch_run(args.spec, out, placement=placement, overrides=overrides,
                                      data_dir=args.data_dir, dtype=args.dtype,
                                      callbacks=callbacks, spec_overrides=spec_overrides,
                                      **recorded)
            where = (f" on PyTorch ({placement.device}"
                     + (f", {placement.world} processes" if placement.distributed else "")
                     + ")")
        config = trainer.config
        say(f"training {trainer.net.plan.name} ({trainer.net.plan.total_params:,} params) "
              f"for {_plural(config.epochs, 'epoch')}, batch {config.batch_size}, "
              f"{config.optimizer.type} lr {config.optimizer.lr:g}, "
              f"{len(trainer.splits.train_images):,} training / "
              f"{len(trainer.splits.val_images):,} validation images{_of(trainer.data)}{where}"
              f"{threads_note(args.blas_threads)} -> {trainer.run_dir}"
              + (f", starting from {args.weights}" if args.weights else ""))
    display.best_epoch = lambda: trainer.state.best_epoch
    try:
        result = trainer.run()
    except TrainingInterrupted as exc:
        progress.clear()
        if main:
            print(f"\ninterrupted: {exc}", file=sys.stderr)
        return 130
    progress.clear()
    if not main:
        return 0
    seconds = sum(r["seconds"] for r in result.history)
    stop = " (stopped early)" if result.stopped_early else ""
    print(f"\ntest accuracy {percent(result.test.accuracy)} (loss {result.test.loss:.4f}) with the "
          f"weights of epoch {result.best_epoch}{stop}; {_plural(len(result.history), 'epoch')} in "
          f"{seconds:.0f}s of training")
    print(f"run directory: {result.run_dir}")
    if plots:
        _write_plots(result.run_dir, args.data_dir)
        _write_report(result.run_dir, args.data_dir)
    return 0


def _silent(*args: object, **kwargs: object) -> None:
    """``print`` for the processes of a distributed run other than process 0."""


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "es" if noun.endswith("s") else "s")


def _of(data: Dataset) -> str:
    """Which data, said when it is not the default MNIST."""
    if data.label == "mnist":
        return ""
    return f" of {data.label} ({_plural(len(data.class_names), 'class')})"


def _write_plots(run_dir: Path, data_dir: str | None) -> None:
    try:
        written = plot_run(run_dir, data_dir)
    except PlotsUnavailable as exc:
        print(f"plots skipped: {exc}")
        return
    print("plots: " + ", ".join(str(p) for p in written))


def _write_report(run_dir: Path, data_dir: str | None) -> None:
    try:
        path = write_report(run_dir, data_dir)
    except NetspecError as exc:
        print(f"report skipped: {exc}")
        return
    print(f"report: {path}")


def run_evaluate(args: argparse.Namespace) -> int:
    _load()
    net = _inference_network(args.spec, EVALUATION_BATCH, _settings_for(args))
    checkpoint = load_weights(args.weights, net)
    choice = data_choice(net.plan.spec, args.data, recorded_choice(checkpoint.meta,
                                                                    args.weights))
    data = prepare_data(net.plan, choice, data_dir=args.data_dir,
                        progress=download_progress(ProgressLine()))
    mean, std = _normalisation(checkpoint.meta, args.weights, args, lambda: data)
    x = normalise_images(data.test_images, mean, std)
    result = evaluate(net, x, data.test_labels.astype(np.int64))
    print(f"test accuracy {percent(result.accuracy)}, loss {result.loss:.4f} "
          f"({len(result.labels):,} images{_of(data)})\n")
    names = _row_names(data.class_names)
    rows = [[names[index], percent(acc), *result.confusion[index]]
            for index, acc in enumerate(result.per_class_accuracy)]
    columns = [Column("true", "<" if names != list(DIGITS) else ">"), Column("accuracy")] + [
        Column(f"p{d}") for d in range(len(names))]
    print(render_table(columns, rows))
    return 0


def _row_names(class_names: tuple[str, ...]) -> list[str]:
    """Class names as table rows: MNIST's are their indices; others carry the index, which
    the columns p0, p1, ... refer to."""
    if list(class_names) == [str(i) for i in range(len(class_names))]:
        return list(class_names)
    return [f"{index} {name}" for index, name in enumerate(class_names)]


def _inference_network(spec: str, batch_size: int, settings: dict) -> Network:
    plan = compile_plan(spec, settings)
    check_memory(plan, batch_size, training=False)
    return Network(plan)


def _shown(values: tuple[float, ...] | list[float]) -> str:
    return ", ".join(f"{v:.4f}" for v in values)


def _settings_for(args: argparse.Namespace, quiet: bool = False) -> dict:
    """The command line's --set, else those recorded by the run the weights come from (so
    that a run trained with --set is evaluated as the same network)."""
    given = spec_settings(args)
    if given:
        return given
    recorded = recorded_overrides(Path(args.weights).parent)
    if recorded and not quiet:
        shown = " ".join(f"--set {name}={value!r}" for name, value in recorded.items())
        print(f"using the overrides recorded by the run: {shown}", file=sys.stderr)
    return recorded


def _normalisation(meta: dict, path: str, args: argparse.Namespace,
                   data: Callable[[], Dataset]) -> tuple[list[float], list[float]]:
    if is_torch_file(path) and "mean" not in meta:
        # a state_dict holds tensors only: use what a run of the spec's recipe computes
        mean, std = recipe_normalisation(args.spec, data(), _settings_for(args, quiet=True))
        print(f"{path} holds no input normalisation; using the spec's [train] recipe's: "
              f"mean {_shown(mean)}, std {_shown(std)} of its training images",
              file=sys.stderr)
        return list(mean), list(std)

    def channels(value: object) -> list[float]:
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                 for v in values):
            raise ValueError
        return [float(v) for v in values]

    try:
        mean, std = channels(meta["mean"]), channels(meta["std"])
    except (KeyError, TypeError, ValueError):
        raise NetspecError(f"{path}: holds no normalisation (mean/std); was it written by "
                           f"netspec train?") from None
    if len(mean) != len(std) or not all(s > 0 for s in std):
        raise NetspecError(f"{path}: its normalisation (mean/std) is corrupt")
    return mean, std


def run_predict(args: argparse.Namespace) -> int:
    _load()
    net = _inference_network(args.spec, EVALUATION_BATCH, _settings_for(args))
    checkpoint = load_weights(args.weights, net)
    recorded = recorded_choice(checkpoint.meta, args.weights)
    choice = data_choice(net.plan.spec, args.data, recorded)
    mean, std = _normalisation(checkpoint.meta, args.weights, args, lambda: prepare_data(
        net.plan, choice, data_dir=args.data_dir))
    names = checkpoint.meta.get("class_names") if args.data is None and recorded else None
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        names = list(data_info(choice, input_channels(net.plan)).class_names)
    shape = net.plan.nodes[net.plan.inputs[0]].shape if len(net.plan.inputs) == 1 else ()
    if len(shape) != 3:
        raise NetspecError(f"{net.plan.name} does not take images: its input takes "
                           f"{format_shape(shape) if shape else 'several inputs'}")
    if len(names) != net.output_shape[0]:
        raise NetspecError(f"{choice.describe()} has {len(names)} classes; {net.plan.name} "
                           f"gives {net.output_shape[0]} outputs")
    # one file may hold a stack of images: each row names the image it is about
    labels: list[str] = []
    stacks = []
    notes: list[str] = []
    for path in args.inputs:
        stack = load_images([path], tuple(shape), light_on_dark=choice.light_on_dark,
                            notes=notes)
        stacks.append(stack)
        labels += [path] if len(stack) == 1 else [f"{path}[{i}]" for i in range(len(stack))]
    for note in notes:
        print(note, file=sys.stderr)
    x = normalise_images(np.concatenate(stacks), mean, std)
    logits = predict_logits(net, x, EVALUATION_BATCH).astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    digits = names == list(DIGITS)
    shown = _row_names(tuple(names))
    rows = [[label, shown[int(p.argmax())], f"{p.max():.3f}", " ".join(f"{v:.2f}" for v in p)]
            for label, p in zip(labels, probs, strict=True)]
    print(render_table([Column("input", "<"),
                        Column("digit", ">") if digits else Column("class", "<"),
                        Column("confidence"),
                        Column(f"probabilities 0..{len(names) - 1}", "<")], rows))
    return 0
