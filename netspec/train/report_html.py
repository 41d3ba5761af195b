"""``report.html``: one self-contained page per run.

The page holds the network's summary table and diagram, the recipe and the run's provenance,
the curves, the confusion matrix with per-class precision, recall and F1, the mistakes with
their confidences and the first layer's filters. Every picture is embedded as a ``data:`` URI
and the page has no script, stylesheet or font from elsewhere, so it opens offline and
requests nothing. The pictures drawn by matplotlib (curves, confusion, mistakes, filters) need
the ``plot`` extra; without it their sections say so and keep their tables.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from netspec.common.atomic import atomic_write_text
from netspec.data.choice import MNIST
from netspec.pictures.plots import (
    PlotsUnavailable,
    plot_confusion,
    plot_curves,
    plot_filters,
    plot_mistakes,
)
from netspec.pictures.svg import to_svg
from netspec.plan.summary import summary_table
from netspec.train.data import prepare_data, recorded_choice
from netspec.train.evaluate import evaluation_from_logits, normalise_images, predict_logits
from netspec.train.loop import read_history
from netspec.train.report import run_network
from netspec.train.runs import flatten_table
from netspec.weights.checkpoint import load_weights

REPORT_FILE = "report.html"
# the sections every report has, in page order (tests/test_report.py finds each one)
SECTIONS = {"overview": "Overview", "summary": "Network", "diagram": "Diagram",
            "recipe": "Recipe", "provenance": "Provenance", "curves": "Curves",
            "confusion": "Confusion matrix", "mistakes": "Mistakes", "filters": "Filters"}
# mistakes listed with their confidences (the most confident first), and drawn
MAX_MISTAKES = 36

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 0 20px 40px; color: #1d232b; }
h1 { margin: 24px 0 4px; } h2 { margin-top: 34px; border-bottom: 1px solid #d8dde4; }
nav a { margin-right: 12px; } table { border-collapse: collapse; margin: 8px 0; }
td, th { border: 1px solid #d8dde4; padding: 2px 8px; text-align: right; }
th { background: #f2f4f7; } td.l, th.l { text-align: left; }
pre { background: #f6f8fa; padding: 10px; overflow-x: auto; font-size: 12px; }
img { max-width: 100%; } .note { color: #6a7380; } .diagram { overflow-x: auto; }
"""


def write_report(run_dir: str | Path, data_dir: str | Path | None = None) -> Path:
    """Build ``report.html`` in a run directory from its files (the test set is evaluated
    again with ``best.npz``; the data as the run recorded it, never downloaded here)."""
    run_dir = Path(run_dir)
    page = render_report(run_dir, data_dir)
    path = run_dir / REPORT_FILE
    atomic_write_text(path, page)
    return path


def render_report(run_dir: Path, data_dir: str | Path | None = None) -> str:
    history = read_history(run_dir)
    net, saved = run_network(run_dir)
    result = _json(run_dir / "result.json")
    plan = net.plan
    parts = [f"<h1>{_e(plan.name)}</h1>",
             f'<p class="note">{_e(str(run_dir))}</p>',
             "<nav>" + "".join(f'<a href="#{key}">{_e(title)}</a>'
                               for key, title in SECTIONS.items()) + "</nav>"]
    parts += _section("overview", _overview(plan, saved, history, result))
    parts += _section("summary", f"<pre>{_e(summary_table(plan.nodes, chains=plan.chains))}"
                      "</pre>")
    parts += _section("diagram", '<div class="diagram">' + _image(
        "image/svg+xml", to_svg(plan, "TB", depth=1).encode(), f"{plan.name} diagram") +
        "</div>")
    parts += _section("recipe", _key_values(flatten_table(saved.get("config") or {})) +
                      _key_values({"dtype": saved.get("dtype"), "data": _data_label(saved),
                                   "--set": saved.get("set") or {},
                                   "engine": saved.get("engine", "numpy")}))
    parts += _section("provenance", _key_values(saved.get("provenance") or {})
                      if saved.get("provenance") else
                      '<p class="note">this run predates recorded provenance</p>')
    parts += _section("curves", _drawn(lambda path: plot_curves(history, path), "curves") +
                      _epoch_table(history))

    weights = run_dir / "best.npz"
    if weights.exists():
        checkpoint = load_weights(weights, net)
        choice = recorded_choice(saved, str(run_dir / "config.json")) or MNIST
        data = prepare_data(plan, choice, data_dir=data_dir, download=False)
        x = normalise_images(data.test_images, checkpoint.meta["mean"], checkpoint.meta["std"])
        labels = data.test_labels.astype(np.int64)
        logits = predict_logits(net, x).astype(np.float64)
        evaluation = evaluation_from_logits(logits, labels)
        names = [str(name) for name in data.class_names]
        probabilities = _softmax(logits)
        parts += _section("confusion", _drawn(
            lambda path: plot_confusion(evaluation.confusion, path, names), "confusion matrix")
            + _class_table(evaluation.confusion, names))
        parts += _section("mistakes", _mistakes(data.test_images, labels,
                                                evaluation.predictions, probabilities, names,
                                                choice.light_on_dark))
        first_conv = next((key for key, value in net.params.items() if value.ndim == 4), None)
        parts += _section("filters", _drawn(
            lambda path: plot_filters(net.params[first_conv], path), f"filters of {first_conv}")
            if first_conv else '<p class="note">the network has no convolution</p>')
    else:
        missing = '<p class="note">no best.npz: the run has not finished an epoch</p>'
        for key in ("confusion", "mistakes", "filters"):
            parts += _section(key, missing)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(plan.name)} · netspec run</title><style>{_STYLE}</style></head>"
            "<body>\n" + "\n".join(parts) + "\n</body></html>\n")


def class_metrics(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 of a confusion matrix (rows true, columns
    predicted); 0 where a class was never predicted or never present.

    >>> [m.tolist() for m in class_metrics(np.array([[3, 1], [0, 2]]))]
    [[1.0, 0.6666666666666666], [0.75, 1.0], [0.8571428571428571, 0.8]]
    """
    counts = np.asarray(confusion, dtype=np.float64)
    hits = np.diag(counts)
    predicted, actual = counts.sum(axis=0), counts.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(hits), where=both > 0)
    return precision, recall, f1


def _section(key: str, body: str) -> list[str]:
    return [f'<section id="{key}"><h2>{_e(SECTIONS[key])}</h2>', body, "</section>"]


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _image(mime: str, data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:{mime};base64,{encoded}">'


def _drawn(draw: Callable[[Path], None], alt: str) -> str:
    """A matplotlib picture drawn into a temporary file and embedded, or a note without
    matplotlib."""
    try:
        with tempfile.TemporaryDirectory(prefix="netspec-report-") as scratch:
            path = Path(scratch) / "picture.png"
            draw(path)
            return _image("image/png", path.read_bytes(), alt)
    except PlotsUnavailable as exc:
        return f'<p class="note">{_e(exc)}</p>'


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _percent(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "-"


def _overview(plan: Any, saved: dict[str, Any], history: Sequence[dict[str, Any]],
              result: dict[str, Any]) -> str:
    validation = [r["val_accuracy"] for r in history if r.get("val_accuracy") is not None]
    test = result.get("test") if isinstance(result.get("test"), dict) else {}
    seconds = sum(float(r.get("seconds") or 0) for r in history)
    planned = (saved.get("config") or {}).get("epochs")
    return _key_values({
        "parameters": f"{plan.total_params:,}",
        "data": _data_label(saved),
        "epochs": f"{len(history)}" + (f" of {planned}" if planned else ""),
        "best validation accuracy": _percent(max(validation)) if validation else "-",
        "test accuracy": _percent(test.get("accuracy")) + (
            f" (weights of epoch {result['best_epoch']})" if "best_epoch" in result else ""),
        "training time": f"{seconds:.1f} s",
        "status": ("finished" + (", stopped early" if result.get("stopped_early") else ""))
        if result else "not finished (continue with netspec train --resume)",
    })


def _data_label(saved: dict[str, Any]) -> str:
    data = saved.get("data")
    if isinstance(data, dict) and data.get("source"):
        return str(data["source"])
    return "mnist"


def _key_values(values: dict[str, Any]) -> str:
    rows = "".join(f'<tr><th class="l">{_e(key)}</th><td class="l">{_e(_shown(value))}</td>'
                   "</tr>" for key, value in values.items())
    return f"<table>{rows}</table>"


def _shown(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "-" if value is None else str(value)


def _epoch_table(history: Sequence[dict[str, Any]]) -> str:
    head = ("<tr><th>epoch</th><th>train loss</th><th>train accuracy</th><th>val loss</th>"
            "<th>val accuracy</th><th>learning rate</th><th>seconds</th></tr>")

    def number(value: Any, digits: int = 4) -> str:
        return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"

    rows = "".join(
        f"<tr><td>{r['epoch']}</td><td>{number(r.get('train_loss'))}</td>"
        f"<td>{_percent(r.get('train_accuracy'))}</td><td>{number(r.get('val_loss'))}</td>"
        f"<td>{_percent(r.get('val_accuracy'))}</td><td>{_rate(r.get('lr'))}</td>"
        f"<td>{number(r.get('seconds'), 1)}</td></tr>" for r in history)
    return f"<table>{head}{rows}</table>"


def _rate(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else "-"


def _class_table(confusion: np.ndarray, names: Sequence[str]) -> str:
    precision, recall, f1 = class_metrics(confusion)
    head = ('<tr><th class="l">class</th><th>images</th><th>precision</th><th>recall</th>'
            "<th>F1</th>" + "".join(f"<th>p{index}</th>" for index in range(len(names))) +
            "</tr>")
    rows = "".join(
        f'<tr><td class="l">{_e(name if name == str(index) else f"{index} {name}")}</td>'
        f"<td>{int(confusion[index].sum())}</td>"
        f"<td>{_percent(precision[index])}</td><td>{_percent(recall[index])}</td>"
        f"<td>{_percent(f1[index])}</td>"
        + "".join(f"<td>{int(count)}</td>" for count in confusion[index]) + "</tr>"
        for index, name in enumerate(names))
    return (f"<table>{head}{rows}</table><p class=\"note\">rows: the true class; columns "
            "p0, p1, ...: the predicted class</p>")


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _mistakes(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
              probabilities: np.ndarray, names: Sequence[str], light_on_dark: bool) -> str:
    wrong = np.flatnonzero(predictions != labels)
    if not len(wrong):
        return '<p class="note">no test image was misclassified</p>'
    confidence = probabilities[wrong, predictions[wrong]]
    # the most confident mistakes first: the ones worth looking at
    shown = wrong[np.argsort(-confidence, kind="stable")][:MAX_MISTAKES]
    picture = _drawn(lambda path: plot_mistakes(
        images[shown], labels[shown], predictions[shown], path, max_items=MAX_MISTAKES,
        class_names=names, light_on_dark=light_on_dark), "mistakes")
    rows = "".join(
        f"<tr><td>{index}</td><td class=\"l\">{_e(names[labels[index]])}</td>"
        f"<td class=\"l\">{_e(names[predictions[index]])}</td>"
        f"<td>{_percent(probabilities[index, predictions[index]])}</td>"
        f"<td>{_percent(probabilities[index, labels[index]])}</td></tr>" for index in shown)
    return (f"<p>{len(wrong):,} of {len(labels):,} test images misclassified; the "
            f"{len(shown)} most confident mistakes:</p>{picture}"
            '<table><tr><th>test image</th><th class="l">true</th><th class="l">predicted</th>'
            "<th>confidence</th><th>probability of the true class</th></tr>"
            f"{rows}</table>")
