"""netspec.pictures.plots: each plot is a decodable, non-blank PNG; bad input is a NetspecError;
without matplotlib every function raises PlotsUnavailable saying how to install it."""

from __future__ import annotations

import builtins
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netspec.common.errors import NetspecError
from netspec.common.extras import install_line
from netspec.pictures.plots import (
    PlotsUnavailable,
    plot_confusion,
    plot_curves,
    plot_filters,
    plot_mistakes,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def history(epochs: int, validation: bool = True) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"epoch": e, "train_loss": 2.0 / e + 0.01 * rng.random(),
             "train_accuracy": 1 - 0.8 / e,
             "val_loss": 2.1 / e if validation else None,
             "val_accuracy": 1 - 0.85 / e if validation else None,
             "lr": 0.1 * 0.9 ** e, "seconds": 1.5} for e in range(1, epochs + 1)]


def confusion() -> np.ndarray:
    rng = np.random.default_rng(1)
    matrix = rng.integers(0, 15, size=(10, 10))
    matrix[np.arange(10), np.arange(10)] = rng.integers(900, 1100, size=10)
    return matrix


def mnist_like(count: int) -> np.ndarray:
    """Blobs at different places, so tiles differ from each other."""
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:28, :28]
    centres = rng.uniform(6, 22, size=(count, 2))
    return np.exp(-((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2) / 20)


def filters(out: int, channels: int) -> np.ndarray:
    return np.random.default_rng(3).normal(size=(out, channels, 5, 5))


CASES = {
    "curves": lambda path: plot_curves(history(12), path),
    "curves without validation": lambda path: plot_curves(history(3, validation=False), path),
    "curves of one epoch": lambda path: plot_curves(history(1), path),
    "confusion": lambda path: plot_confusion(confusion(), path),
    "confusion with names": lambda path: plot_confusion(
        confusion(), path, class_names=[f"digit {i}" for i in range(10)]),
    "filters": lambda path: plot_filters(filters(6, 1), path),
    "filters of 3 channels": lambda path: plot_filters(filters(20, 3), path),
    "mistakes": lambda path: plot_mistakes(mnist_like(40), np.arange(40) % 10,
                                           (np.arange(40) + 3) % 10, path),
    "mistakes with a channel axis": lambda path: plot_mistakes(
        mnist_like(5)[:, None], np.arange(5), np.arange(5)[::-1], path, max_items=4),
    "no mistakes": lambda path: plot_mistakes(np.zeros((0, 28, 28)), np.zeros(0, int),
                                              np.zeros(0, int), path),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_plot_is_a_non_blank_png_written_atomically(case, tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    target = tmp_path / "plot.png"
    CASES[case](target)
    assert target.read_bytes()[:8] == PNG_MAGIC
    pixels = imread(target)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 10
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_mistake_grid_grows_with_the_items_shown(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    sizes = []
    for shown in (4, 36):
        target = tmp_path / f"{shown}.png"
        plot_mistakes(mnist_like(50), np.zeros(50, int), np.ones(50, int), target,
                      max_items=shown)
        sizes.append(imread(target).shape[0])
    assert sizes[1] > 2 * sizes[0]


@pytest.mark.filterwarnings("error")
def test_constant_filters_are_drawn_without_dividing_by_zero(tmp_path):
    pytest.importorskip("matplotlib")
    weight = filters(4, 1)
    weight[1] = 0.25
    plot_filters(weight, tmp_path / "filters.png")
    assert (tmp_path / "filters.png").exists()


@pytest.mark.parametrize("call, message", [
    (lambda p: plot_curves([], p), "history is empty"),
    (lambda p: plot_curves([{"epoch": 1, "train_loss": 1.0}], p),
     "lack lr, train_accuracy"),
    (lambda p: plot_confusion(np.zeros((3, 4), int), p), "must be square"),
    (lambda p: plot_confusion(np.eye(3, dtype=int), p, class_names=["a", "b"]),
     "2 class names for a 3×3"),
    (lambda p: plot_filters(np.zeros((6, 5, 5)), p), r"\(out, in, kh, kw\)"),
    (lambda p: plot_mistakes(np.zeros((3, 28, 28)), np.zeros(3), np.zeros(2), p),
     "counts must match"),
    (lambda p: plot_mistakes(np.zeros((3, 2, 28, 28)), np.zeros(3), np.zeros(3), p),
     r"\(N, H, W\) or \(N, 1, H, W\)"),
    (lambda p: plot_mistakes(np.zeros((3, 28, 28)), np.zeros(3), np.zeros(3), p,
                             max_items=0), "at least 1"),
])
def test_bad_input_is_a_netspec_error(call, message, tmp_path):
    pytest.importorskip("matplotlib")
    with pytest.raises(NetspecError, match=message):
        call(tmp_path / "plot.png")
    assert not (tmp_path / "plot.png").exists()


@pytest.fixture
def no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import matplotlib`` fail as it does where it is not installed."""
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    real_import = builtins.__import__

    def blocked(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", blocked)


@pytest.mark.parametrize("case", ["curves", "confusion", "filters", "mistakes"])
def test_without_matplotlib_each_plot_says_how_to_install_it(case, tmp_path, no_matplotlib):
    target = tmp_path / "plot.png"
    with pytest.raises(PlotsUnavailable, match=re.escape(install_line("plot"))):
        CASES[case](target)
    assert not target.exists()
    assert issubclass(PlotsUnavailable, NetspecError)


def test_importing_the_plots_module_does_not_import_matplotlib():
    code = ("import sys, netspec.pictures.plots, netspec.cli; "
            "sys.exit(any(m.startswith('matplotlib') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_png_paths_may_be_str(tmp_path):
    pytest.importorskip("matplotlib")
    target = Path(tmp_path) / "c.png"
    plot_confusion(np.eye(2, dtype=int), str(target))
    assert target.read_bytes()[:8] == PNG_MAGIC
