"""``netspec runs`` (list runs, compare two) and ``netspec report`` (rebuild report.html)."""

from __future__ import annotations

import argparse
from pathlib import Path

from netspec.common.errors import NetspecError
from netspec.common.tables import Column, render_table


def register(subparsers: argparse._SubParsersAction) -> None:
    runs = subparsers.add_parser(
        "runs", help="list the runs in a directory as a table, or compare two runs",
        description="With one directory (default: runs), list its runs: architecture, data, "
        "epochs, best validation accuracy, test accuracy, training time and status. With two "
        "run directories, compare them side by side, with the settings that differ.")
    runs.add_argument("dirs", nargs="*", metavar="DIR", default=[],
                      help="a directory of runs (default: runs), or two run directories")
    runs.set_defaults(handler=run_runs)

    report = subparsers.add_parser(
        "report", help="rebuild a run's report.html (one self-contained page)",
        description="Write report.html into RUN: the network's table and diagram, the recipe "
        "and provenance, the curves, the confusion matrix with per-class precision, recall "
        "and F1, the mistakes with their confidences and the filters, every picture embedded.")
    report.add_argument("run", metavar="RUN", help="a run directory")
    report.add_argument("--data-dir", help="directory holding the files of the run's data set")
    report.set_defaults(handler=run_report)


def run_runs(args: argparse.Namespace) -> int:
    from netspec.train.runs import find_runs, read_run

    if len(args.dirs) > 2:
        raise NetspecError(f"give one directory of runs or two runs to compare, not "
                           f"{len(args.dirs)}")
    if len(args.dirs) == 2:
        _compare(read_run(args.dirs[0]), read_run(args.dirs[1]))
        return 0
    root = Path(args.dirs[0] if args.dirs else "runs")
    found = find_runs(root)
    if not found:
        print(f"no runs in {root}")
        return 0
    rows = [[str(run.path.relative_to(root)) if run.path != root else str(run.path),
             run.architecture, run.data, _epochs(run), _percent(run.best_validation),
             _percent(run.test_accuracy), _duration(run.seconds), run.status]
            for run in found]
    print(render_table([Column("run", "<"), Column("architecture", "<"), Column("data", "<"),
                        Column("epochs"), Column("best val"), Column("test acc"),
                        Column("time"), Column("status", "<")], rows))
    return 0


def _compare(a, b) -> None:  # noqa: ANN001 - two RunSummary
    from netspec.train.runs import differences

    rows = [["architecture", a.architecture, b.architecture],
            ["data", a.data, b.data],
            ["epochs", _epochs(a), _epochs(b)],
            ["best val", _percent(a.best_validation), _percent(b.best_validation)],
            ["test acc", _percent(a.test_accuracy), _percent(b.test_accuracy)],
            ["time", _duration(a.seconds), _duration(b.seconds)],
            ["status", a.status, b.status]]
    print(render_table([Column("", "<"), Column(str(a.path), "<"), Column(str(b.path), "<")],
                       rows))
    changed = differences(a, b)
    print()
    if not changed:
        print("same recipe and provenance")
        return
    print("settings that differ:")
    print(render_table([Column("setting", "<"), Column(str(a.path), "<"),
                        Column(str(b.path), "<")], [list(row) for row in changed]))
    epochs = max(len(a.history), len(b.history))
    if epochs:
        print()
        print("validation accuracy by epoch:")

        def at(history: list, index: int) -> str:
            return _percent(history[index].get("val_accuracy")) if index < len(history) else ""

        print(render_table([Column("epoch"), Column(str(a.path)), Column(str(b.path))],
                           [[str(index + 1), at(a.history, index), at(b.history, index)]
                            for index in range(epochs)]))


def _epochs(run) -> str:  # noqa: ANN001 - a RunSummary
    return f"{run.epochs_run}/{run.epochs_planned}" if run.epochs_planned else str(
        run.epochs_run)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{seconds:.1f}s"


def run_report(args: argparse.Namespace) -> int:
    from netspec.train.report_html import write_report

    print(f"report: {write_report(args.run, args.data_dir)}")
    return 0
