"""Training pictures as PNG files: curves, a confusion matrix, first-layer filters, mistakes.

matplotlib is an optional extra (the ``plot`` extra): it is imported inside each
function, with the non-interactive Agg backend, so the rest of netspec never needs it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from netspec.common.atomic import atomic_path
from netspec.common.errors import NetspecError
from netspec.common.extras import install_line

DPI = 110


class PlotsUnavailable(NetspecError):
    """matplotlib is not installed, so no plot can be drawn."""


def _pyplot() -> Any:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotsUnavailable(
            f"plots need matplotlib, which is not installed ({exc}); install it with: "
            f"{install_line('plot')}") from None
    return plt


def _save(plt: Any, figure: Any, path: str | os.PathLike[str]) -> None:
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", dpi=DPI)
    finally:
        plt.close(figure)


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """Epochs and values of one metric, leaving out epochs where it is missing."""
    pairs = [(int(r["epoch"]), float(r[key])) for r in history if r.get(key) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Loss, accuracy and learning rate per epoch, train and validation side by side.

    ``history`` holds one record per epoch, as training writes them: ``epoch``,
    ``train_loss``, ``train_accuracy``, ``val_loss``, ``val_accuracy`` (None without a
    validation split) and ``lr``.
    """
    if not history:
        raise NetspecError("no epochs to plot: the history is empty")
    missing = sorted({"epoch", "train_loss", "train_accuracy", "lr"} - set(history[0]))
    if missing:
        raise NetspecError(f"history records lack {', '.join(missing)}; expected the records "
                           "training writes to history.json")
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    figure, (loss_ax, acc_ax, lr_ax) = plt.subplots(1, 3, figsize=(13, 3.8))
    # a marker per epoch while they can be told apart; a lone epoch is a point, not a line
    style = {"marker": "o", "markersize": 4 if len(history) <= 30 else 0}
    for ax, metric, heading in ((loss_ax, "loss", "loss"),
                                (acc_ax, "accuracy", "accuracy (%)")):
        for split, colour in (("train", "#3d68b8"), ("val", "#c2652a")):
            epochs, values = _series(history, f"{split}_{metric}")
            if metric == "accuracy":
                values = [100 * v for v in values]
            if epochs:
                ax.plot(epochs, values, color=colour, label=split, **style)
        ax.set_title(heading)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    epochs, rates = _series(history, "lr")
    lr_ax.plot(epochs, rates, color="#2f8a4f", **style)
    lr_ax.set_title("learning rate")
    lr_ax.set_xlabel("epoch")
    lr_ax.grid(alpha=0.3)
    if rates and min(rates) > 0 and max(rates) / min(rates) > 50:
        lr_ax.set_yscale("log")
    else:
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    first, last = int(history[0]["epoch"]), int(history[-1]["epoch"])
    for ax in (loss_ax, acc_ax, lr_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if first == last:
            ax.set_xlim(first - 1, last + 1)
    figure.tight_layout()
    _save(plt, figure, path)


def plot_confusion(matrix: np.ndarray, path: str | os.PathLike[str],
                   class_names: Sequence[str] | None = None) -> None:
    """A confusion matrix (rows: true class, columns: predicted) with the count in each cell.

    The colour is the share of the row, so rare classes read as well as common ones, on a
    power scale, so that a 2% confusion stands out from a 0% one next to a 98% diagonal.
    """
    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise NetspecError(f"a confusion matrix must be square, got shape {counts.shape}")
    n = counts.shape[0]
    names = [str(i) for i in range(n)] if class_names is None else [str(c) for c in class_names]
    if len(names) != n:
        raise NetspecError(f"{len(names)} class names for a {n}×{n} confusion matrix")
    plt = _pyplot()
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
    size = max(4.5, 0.55 * n + 1.5)
    figure, ax = plt.subplots(figsize=(size + 1.0, size))
    from matplotlib.colors import PowerNorm

    norm = PowerNorm(gamma=0.4, vmin=0.0, vmax=1.0)
    image = ax.imshow(share, cmap="Blues", norm=norm)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    font = max(5, min(10, int(100 / n)))
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=font,
                    color="white" if norm(share[i, j]) > 0.6 else "#222222")
    ax.set_xticks(range(n), names)
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total = int(counts.sum())
    accuracy = np.trace(counts) / total if total else 0.0
    ax.set_title(f"confusion matrix · {total:,} samples · accuracy {100 * accuracy:.2f}%")
    figure.tight_layout()
    _save(plt, figure, path)


def _scaled(tiles: np.ndarray) -> np.ndarray:
    """Each tile stretched to [0, 1] on its own; a constant tile has no contrast to show
    and becomes mid-grey rather than a division by zero."""
    axes = tuple(range(1, tiles.ndim))
    low = tiles.min(axis=axes, keepdims=True)
    span = tiles.max(axis=axes, keepdims=True) - low
    return np.divide(tiles - low, span, out=np.full(tiles.shape, 0.5), where=span > 0)


def _tile_figure(plt: Any, tiles: np.ndarray, titles: Sequence[str], heading: str,
                 cmap: str, title_colour: str) -> Any:
    """One image of all tiles (with a title above each) on one axis: a figure of many small
    axes costs seconds to lay out, a mosaic costs milliseconds."""
    from matplotlib import patches

    count, height, width = tiles.shape[:3]
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    inches = 1.2 * columns + 0.3           # a column is about 1.2 inches wide
    gap = max(1, math.ceil(width / 5))
    cell_w = width + gap
    head = math.ceil(0.24 * cell_w / 1.2)  # about 0.24 inches above each tile for its title
    cell_h = height + head
    # one blank pixel around the mosaic keeps the frames of edge tiles inside the picture
    # colour tiles sit on a white canvas; greyscale ones on NaN, which the colour map draws white
    canvas = np.full((rows * cell_h + 1, columns * cell_w - gap + 2, *tiles.shape[3:]),
                     1.0 if tiles.ndim == 4 else np.nan)
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = row * cell_h + head, column * cell_w + 1
        canvas[top:top + height, left:left + width] = tiles[index]
    colours = plt.get_cmap(cmap).with_extremes(bad="white")
    room = 0.12 + 0.2 * (heading.count("\n") + 1)  # inches above the mosaic for the heading
    margin = 0.1
    figure = plt.figure(figsize=(inches, 0.98 * inches * canvas.shape[0] / canvas.shape[1]
                                 + room + margin))
    high = figure.get_figheight()
    ax = figure.add_axes((0.01, margin / high, 0.98, 1 - (room + margin) / high))
    ax.imshow(canvas, cmap=colours, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.axis("off")
    for index, text in enumerate(titles):
        row, column = divmod(index, columns)
        top, left = row * cell_h + head, column * cell_w + 1
        # a frame, so that white pixels at a tile's edge are not lost in the background
        ax.add_patch(patches.Rectangle((left - 0.5, top - 0.5), width, height, fill=False,
                                       edgecolor="#9aa3b0", linewidth=0.6))
        ax.text(left + width / 2 - 0.5, top - 0.5 - 0.1 * head, text, ha="center",
                va="bottom", fontsize=9, color=title_colour)
    figure.suptitle(heading, fontsize=10, y=1 - 0.08 / high, va="top")
    return figure


def plot_filters(weight: np.ndarray, path: str | os.PathLike[str]) -> None:
    """The filters of a convolution (``(out, in, kh, kw)``) as a grid of small images, each
    scaled to its own range. With several input channels each tile is their mean."""
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim != 4 or w.shape[0] == 0:
        raise NetspecError(f"conv filters must have shape (out, in, kh, kw), got {w.shape}")
    plt = _pyplot()
    channels = "" if w.shape[1] == 1 else f", mean of {w.shape[1]} input channels"
    heading = (f"{w.shape[0]} filters of {w.shape[2]}×{w.shape[3]}{channels}\n"
               "(each scaled to its own range: black low, white high)")
    figure = _tile_figure(plt, _scaled(w.mean(axis=1)), [str(i) for i in range(len(w))],
                          heading, "gray", "#333333")
    _save(plt, figure, path)


def plot_mistakes(images: np.ndarray, true: np.ndarray, predicted: np.ndarray,
                  path: str | os.PathLike[str], max_items: int = 36,
                  class_names: Sequence[str] | None = None,
                  light_on_dark: bool = True) -> None:
    """Misclassified images in a grid titled ``true→predicted`` (the first ``max_items``).

    Images are ``(N, H, W)``, ``(N, 1, H, W)`` or colour ``(N, 3, H, W)``; titles use
    ``class_names`` when given. Greyscale drawn ``light_on_dark`` (MNIST) is shown as dark ink
    on white; other pictures as they are.
    """
    pictures = np.asarray(images, dtype=np.float64)
    if pictures.ndim == 4 and pictures.shape[1] == 1:
        pictures = pictures[:, 0]
    elif pictures.ndim == 4 and pictures.shape[1] == 3:
        pictures = pictures.transpose(0, 2, 3, 1)
    if pictures.ndim != 3 and not (pictures.ndim == 4 and pictures.shape[3] == 3):
        raise NetspecError(f"images must have shape (N, H, W) or (N, 1, H, W), or "
                           f"(N, 3, H, W) in colour, got {np.asarray(images).shape}")
    true, predicted = np.asarray(true).reshape(-1), np.asarray(predicted).reshape(-1)
    if not len(pictures) == len(true) == len(predicted):
        raise NetspecError(f"{len(pictures)} images, {len(true)} true labels and "
                           f"{len(predicted)} predictions: the counts must match")
    if max_items < 1:
        raise NetspecError(f"max_items must be at least 1, got {max_items}")
    shown = min(len(pictures), max_items)
    plt = _pyplot()
    if shown == 0:
        figure, ax = plt.subplots(figsize=(4, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no mistakes to show", ha="center", va="center")
        _save(plt, figure, path)
        return
    more = f" (first {shown} of {len(pictures)})" if shown < len(pictures) else ""

    def name(index: int) -> str:
        if class_names is None or not 0 <= index < len(class_names):
            return str(index)
        return str(class_names[index])

    titles = [f"{name(int(t))}→{name(int(p))}" for t, p in zip(true[:shown], predicted[:shown])]
    # MNIST digits are white on black; ink reads better dark on white
    figure = _tile_figure(plt, _scaled(pictures[:shown]), titles,
                          f"mistakes, true→predicted{more}",
                          "gray_r" if light_on_dark else "gray", "#b83d4f")
    _save(plt, figure, path)
