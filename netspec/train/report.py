"""The pictures of a finished run: curves, confusion matrix, first-layer filters, mistakes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from netspec.common.errors import NetspecError
from netspec.data.choice import MNIST
from netspec.lang.spec import parse_spec
from netspec.pictures.plots import plot_confusion, plot_curves, plot_filters, plot_mistakes
from netspec.plan.compiler import compile_plan
from netspec.runtime.executor import Network
from netspec.train.data import prepare_data, recorded_choice
from netspec.train.evaluate import evaluate, normalise_images
from netspec.train.loop import read_history
from netspec.weights.checkpoint import load_weights


def plot_run(run_dir: str | Path, data_dir: str | Path | None = None) -> list[Path]:
    """Write ``curves.png``, ``confusion.png``, ``filters.png`` and ``mistakes.png`` into a run
    directory and return their paths.

    The test set is evaluated again with ``best.npz`` (a couple of seconds), so the pictures
    need nothing but the run directory and its data (as recorded in the run; never downloaded
    here). Raises PlotsUnavailable without matplotlib.
    """
    run_dir = Path(run_dir)
    written = []
    plot_curves(read_history(run_dir), run_dir / "curves.png")
    written.append(run_dir / "curves.png")

    weights = run_dir / "best.npz"
    if not weights.exists():
        return written
    net, saved = run_network(run_dir)
    checkpoint = load_weights(weights, net)
    first_conv = next((key for key, value in net.params.items() if value.ndim == 4), None)
    if first_conv is not None:
        plot_filters(net.params[first_conv], run_dir / "filters.png")
        written.append(run_dir / "filters.png")

    choice = recorded_choice(saved, str(run_dir / "config.json")) or MNIST
    data = prepare_data(net.plan, choice, data_dir=data_dir, download=False)
    x = normalise_images(data.test_images, checkpoint.meta["mean"], checkpoint.meta["std"])
    labels = data.test_labels.astype(np.int64)
    result = evaluate(net, x, labels)
    plot_confusion(result.confusion, run_dir / "confusion.png", data.class_names)
    wrong = np.flatnonzero(result.predictions != labels)
    plot_mistakes(data.test_images[wrong], labels[wrong], result.predictions[wrong],
                  run_dir / "mistakes.png", class_names=data.class_names,
                  light_on_dark=choice.light_on_dark)
    written += [run_dir / "confusion.png", run_dir / "mistakes.png"]
    return written


def run_network(run_dir: Path) -> tuple[Network, dict]:
    """A run directory's network (with its seed's weights) and its ``config.json``."""
    try:
        saved = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        text = (run_dir / "spec.toml").read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise NetspecError(f"{run_dir} is not a complete run directory: {exc}") from None
    spec_dir = Path(saved["spec_dir"]) if saved.get("spec_dir") else run_dir
    spec = parse_spec(text, file=str(run_dir / "spec.toml"), directory=spec_dir,
                      overrides=saved.get("set") or {})
    return Network(compile_plan(spec), dtype=saved.get("dtype", "float32")), saved
