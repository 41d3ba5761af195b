"""``report.html``: one self-contained page per run, written at the end of ``netspec train``
and rebuilt by ``netspec report``; parsed here for every section, and opened in headless
Chromium (when installed) with no console error, no request to the network and a screenshot
of the curves."""

from __future__ import annotations

import html.parser
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
from chromium_page import chromium, visit
from test_cli_train import run_cli
from test_runs import write_conv_spec

from netspec.train.report_html import SECTIONS, class_metrics

needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                      reason="the report's pictures need matplotlib "
                                      "(pip install matplotlib)")


class Page(html.parser.HTMLParser):
    """What a report page holds: its section ids, every URL it names, its tags and tables."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.urls: list[tuple[str, str, str]] = []  # tag, attribute, value
        self.tags: set[str] = set()
        self.images_in: dict[str, int] = {}
        self.headers: list[str] = []
        self._section: str | None = None
        self._in_th = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        values = dict(attrs)
        if tag == "section":
            self._section = values.get("id")
            self.sections.append(self._section or "")
        for name in ("src", "href", "srcset", "action", "data", "poster"):
            if values.get(name):
                self.urls.append((tag, name, values[name] or ""))
        if tag == "img" and self._section:
            self.images_in[self._section] = self.images_in.get(self._section, 0) + 1
        self._in_th = tag == "th"

    def handle_endtag(self, tag: str) -> None:
        if tag == "th":
            self._in_th = False

    def handle_data(self, data: str) -> None:
        if self._in_th:
            self.headers.append(data)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, mnist_dir) -> tuple[Path, str]:
    """A run trained through the CLI with its pictures and report, and its stdout."""
    directory = tmp_path_factory.mktemp("report")
    code, out, err = run_cli("train", write_conv_spec(directory), "--out", directory / "run",
                             "--data-dir", mnist_dir)
    assert code == 0, err
    return directory / "run", out


@needs_matplotlib
def test_train_writes_a_report_with_every_section(finished_run):
    run, out = finished_run
    assert f"report: {run / 'report.html'}\n" in out
    page = Page((run / "report.html").read_text(encoding="utf-8"))
    assert page.sections == list(SECTIONS)
    # every picture drawn is embedded
    for section in ("diagram", "curves", "confusion", "mistakes", "filters"):
        assert page.images_in.get(section, 0) >= 1, section
    for header in ("precision", "recall", "F1", "confidence", "netspec", "numpy", "python",
                   "command", "cpu", "started", "optimizer.lr", "epochs"):
        assert header in page.headers, header


@needs_matplotlib
def test_the_report_is_self_contained(finished_run):
    run, _ = finished_run
    text = (run / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    assert not {"script", "link", "iframe", "object", "embed"} & page.tags
    for tag, attribute, value in page.urls:
        if tag == "a" and attribute == "href":
            assert value.startswith("#"), value  # links within the page only
        else:
            assert value.startswith("data:"), (tag, attribute, value[:60])
    assert "url(" not in text.split("</style>")[0]  # no stylesheet fetches anything


def test_class_metrics_match_a_naive_count():
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    predictions[:3] = 0  # class 3 may be predicted rarely; class 2 never below
    predictions[predictions == 2] = 1
    confusion = np.zeros((4, 4), dtype=int)
    np.add.at(confusion, (labels, predictions), 1)
    precision, recall, f1 = class_metrics(confusion)
    for c in range(4):
        hits = np.sum((labels == c) & (predictions == c))
        said = np.sum(predictions == c)
        present = np.sum(labels == c)
        p = hits / said if said else 0.0
        r = hits / present if present else 0.0
        assert precision[c] == pytest.approx(p)
        assert recall[c] == pytest.approx(r)
        assert f1[c] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)
    assert precision[2] == 0.0 and f1[2] == 0.0  # never predicted: 0, not a division error


@needs_matplotlib
def test_netspec_report_rebuilds_the_page(finished_run, tmp_path, mnist_dir):
    run, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "report.html").unlink()
    code, out, err = run_cli("report", copy, "--data-dir", mnist_dir)
    assert code == 0, err
    assert out == f"report: {copy / 'report.html'}\n"
    assert Page((copy / "report.html").read_text(encoding="utf-8")).sections == list(SECTIONS)


def test_report_of_a_directory_that_is_not_a_run_is_one_line(tmp_path):
    code, _, err = run_cli("report", tmp_path)
    assert code == 1
    assert err.startswith("netspec report: error: ") and "Traceback" not in err


@needs_matplotlib
@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (Debian: apt-get "
                    "install chromium; .ci/run installs it)")
def test_chromium_loads_the_report_offline_without_errors(finished_run, tmp_path):
    run, _ = finished_run
    page = visit(chromium(), run / "report.html", tmp_path / "profile", "curves")
    assert page.errors == []
    network = [url for url in page.requests
               if not url.startswith(("data:", "file:", "about:", "blob:"))]
    assert network == []
    assert page.requests[0] == (run / "report.html").resolve().as_uri()
    # the screenshot of the curves section: a PNG wide and tall enough to hold the plot,
    # and not blank (the plot's lines and labels)
    from PIL import Image

    shot = tmp_path / "curves.png"
    shot.write_bytes(page.screenshot)
    with Image.open(shot) as picture:
        width, height = picture.size
        pixels = np.asarray(picture.convert("L"))
    assert width >= 600 and height >= 250
    assert (pixels < 128).mean() > 0.005
    assert len(np.unique(pixels)) > 20


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (Debian: apt-get "
                    "install chromium; .ci/run installs it)")
def test_the_browser_check_sees_console_errors_and_network_requests(tmp_path):
    """The negative control of the check above: a page that logs an error, throws, and asks
    for a remote picture is caught on all three counts."""
    page_file = tmp_path / "bad.html"
    page_file.write_text(
        '<!DOCTYPE html><html><body><section id="curves"><h2>x</h2>'
        '<img src="http://netspec-test.invalid/curves.png" alt="remote"></section>'
        '<script>console.error("boom"); throw new Error("thrown");</script></body></html>',
        encoding="utf-8")
    page = visit(chromium(), page_file, tmp_path / "profile", "curves")
    assert any("boom" in error for error in page.errors)
    assert any("thrown" in error for error in page.errors)
    assert "http://netspec-test.invalid/curves.png" in page.requests
