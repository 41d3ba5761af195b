"""``netspec plot RUN_DIR``: the pictures of a training run."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plot", help="draw curves, confusion matrix, filters and mistakes of a run",
        description="Write curves.png, confusion.png, filters.png and mistakes.png into "
        "RUN_DIR (needs matplotlib: the plot extra).")
    parser.add_argument("run_dir")
    parser.add_argument("--data-dir", help="directory holding the files of the run's named "
                        "data set (MNIST's IDX files, say)")
    parser.set_defaults(handler=run_plot)


def run_plot(args: argparse.Namespace) -> int:
    from netspec.train.report import plot_run

    for path in plot_run(args.run_dir, args.data_dir):
        print(path)
    return 0
