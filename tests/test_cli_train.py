"""``netspec train`` and ``netspec evaluate``: runs, Ctrl-C (in-process and as a real signal to
a child process), resume, evaluation output, the errors users see, and progress output."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_train import assert_same_arrays, files, metrics, weights, write_spec

from netspec.cli import main
from netspec.cli.progress import ProgressLine, download_progress
from netspec.runtime.executor import compile
from netspec.weights.checkpoint import load_weights, save_checkpoint


def run_cli(*argv: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, mnist_dir) -> tuple[Path, Path, str, str]:
    """(spec, run directory, stdout, stderr) of one uninterrupted CLI run of the tiny spec."""
    directory = tmp_path_factory.mktemp("cli-run")
    spec = write_spec(directory)
    code, out, err = run_cli("train", spec, "--out", directory / "run", "--data-dir", mnist_dir,
                             "--no-plots")
    assert code == 0, err
    return spec, directory / "run", out, err


def test_train_prints_the_plan_epochs_and_result(finished_run):
    _, run, out, _ = finished_run
    lines = out.splitlines()
    # the BLAS threads: this process's share of the cores, with threadpoolctl installed
    threads = r", \d+ BLAS threads?" if importlib.util.find_spec("threadpoolctl") else ""
    assert re.fullmatch(re.escape("training tiny (25,450 params) for 2 epochs, batch 50, adam "
                                  "lr 0.003, 600 training / 100 validation images") + threads
                        + re.escape(f" -> {run}"), lines[0])
    # accuracies in percent, the best epoch so far marked, an ETA for the run until its end
    epoch_line = re.compile(r"epoch +(\d+): train loss \d\.\d{4} acc \d+\.\d\d% \| val loss "
                            r"\d\.\d{4} val acc \d+\.\d\d%( \* best)? \| lr 0\.003 \| \d+\.\ds"
                            r"( \| ETA \d+s for 1 more epoch)?")
    matches = [epoch_line.fullmatch(line) for line in lines[1:3]]
    assert [int(match[1]) for match in matches] == [1, 2]
    assert matches[0][2] == " * best" and matches[0][3] and not matches[1][3]
    result = json.loads((run / "result.json").read_text())
    assert (matches[1][2] == " * best") == (result["best_epoch"] == 2)
    assert re.search(rf"^test accuracy {100 * result['test']['accuracy']:.2f}% "
                     rf"\(loss \d\.\d{{4}}\) "
                     rf"with the weights of epoch {result['best_epoch']}; 2 epochs in \d+s of "
                     rf"training$", out, re.MULTILINE)
    assert out.rstrip().endswith(f"run directory: {run}")


def test_progress_without_a_terminal_is_sparse_plain_lines(finished_run):
    _, _, _, err = finished_run
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    # one line every 10 s at most, the first at the first batch
    assert 1 <= len(lines) <= 3
    assert re.fullmatch(r"\[#*\.*\] epoch 1/2 batch 1/12 loss \d+\.\d{4} acc \d+\.\d\d% "
                        r"[\d,]+ img/s lr 0\.003 \d+s elapsed, ETA \d+s", lines[0])


def interrupt_at(monkeypatch, calls: int, signals: int = 1) -> None:
    """Send this process SIGINT ``signals`` times during the ``calls``-th progress update,
    that is after that many batches."""
    real_update = ProgressLine.update
    seen = 0

    def update(self, *args, **kwargs):
        nonlocal seen
        seen += 1
        if seen == calls:
            for _ in range(signals):
                signal.raise_signal(signal.SIGINT)
        real_update(self, *args, **kwargs)

    monkeypatch.setattr(ProgressLine, "update", update)


@pytest.mark.parametrize(("signals", "message", "position"), [
    # one Ctrl-C: the batch in progress finishes and its position is saved
    (1, "\ninterrupted: stopped at epoch 2, batch 3/12; saved {run}/last.npz; continue with: "
        "netspec train --resume {run}\n", (1, 3)),
    # a second Ctrl-C stops at once; last.npz is still the end of epoch 1
    (2, "\ninterrupted\n", (1, 0)),
], ids=["once", "twice"])
def test_ctrl_c_then_resume_matches_the_uninterrupted_run(tmp_path, mnist_dir, finished_run,
                                                          monkeypatch, signals, message,
                                                          position):
    _, straight, _, _ = finished_run
    run = tmp_path / "run"
    handler = signal.getsignal(signal.SIGINT)
    interrupt_at(monkeypatch, 15, signals)
    code, _, err = run_cli("train", write_spec(tmp_path), "--out", run, "--data-dir", mnist_dir)
    assert code == 130
    assert err.endswith(message.format(run=run))
    assert "Traceback" not in err
    assert signal.getsignal(signal.SIGINT) is handler
    state = load_weights(run / "last.npz", compile(run / "spec.toml")).meta["state"]
    assert (state["epoch"], state["batch"]) == position
    monkeypatch.undo()

    code, out, err = run_cli("train", "--resume", run, "--data-dir", mnist_dir, "--no-plots")
    assert code == 0, err
    assert out.startswith(f"resuming {run} at epoch 2, batch {position[1]}\n")
    assert not list(run.glob("*.png"))  # --no-plots holds for a resumed run too
    assert metrics(json.loads((run / "history.json").read_text())) == \
        metrics(json.loads((straight / "history.json").read_text()))
    for name in ("best.npz", "last.npz"):
        assert_same_arrays(weights(run / name), weights(straight / name))
    assert json.loads((run / "result.json").read_text())["test"] == \
        json.loads((straight / "result.json").read_text())["test"]


def wait_for_line(process: subprocess.Popen, pattern: str, timeout: float) -> None:
    """Read the child's stdout (unbuffered, so nothing waits in a Python buffer) until a line
    matches ``pattern``."""
    deadline = time.monotonic() + timeout
    received = b""
    fd = process.stdout.fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        chunk = os.read(fd, 4096) if ready else b""
        if not chunk:
            break
        received += chunk
        complete_lines = received.decode().split("\n")[:-1]
        if any(re.match(pattern, line) for line in complete_lines):
            return
    process.kill()
    pytest.fail(f"no line matching {pattern!r} within {timeout} s; got {received!r} and "
                f"stderr {process.communicate()[1]!r}")


@contextlib.contextmanager
def netspec_process(*argv: str | Path) -> Iterator[subprocess.Popen]:
    """``python -m netspec ARGV``, killed if the test fails while it runs."""
    process = subprocess.Popen([sys.executable, "-m", "netspec", *map(str, argv)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_to_a_training_process_saves_and_resume_completes(tmp_path, mnist_dir):
    run = tmp_path / "run"
    # enough epochs that the signal always lands mid-training, few images so each is quick
    with netspec_process("train", write_spec(tmp_path), "--out", run, "--data-dir", mnist_dir,
                         "--epochs", 12, "--limit", 300, "--no-plots") as process:
        wait_for_line(process, r"epoch +1:", timeout=120)
        process.send_signal(signal.SIGINT)
        out, err = (stream.decode() for stream in process.communicate(timeout=120))
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert re.search(rf"interrupted: stopped at epoch \d+, batch \d+/6; saved "
                     rf"{re.escape(str(run / 'last.npz'))}; continue with: netspec train "
                     rf"--resume {re.escape(str(run))}$", err.strip())
    checkpoint = load_weights(run / "last.npz", compile(run / "spec.toml"))
    stopped_at = checkpoint.meta["state"]["epoch"]
    assert 1 <= stopped_at < 12

    with netspec_process("train", "--resume", run, "--data-dir", mnist_dir,
                         "--no-plots") as process:
        out, err = (stream.decode() for stream in process.communicate(timeout=300))
    assert process.returncode == 0, err
    assert out.startswith(f"resuming {run} at epoch {stopped_at + 1}, batch ")
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == list(range(1, 13))
    assert (run / "result.json").exists()


def test_train_help():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as caught:
        main(["train", "--help"])
    assert caught.value.code == 0
    text = out.getvalue()
    assert text.startswith("usage: netspec train [-h]")
    for option in ("--out", "--resume RUN_DIR", "--data-dir", "--epochs", "--lr", "--limit",
                   "--dtype {float32,float64}", "--no-plots", "Ctrl-C saves last.npz"):
        assert option in text


def test_a_new_run_never_overwrites_an_existing_one(finished_run, mnist_dir):
    spec, run, _, _ = finished_run
    before = files(run)
    code, out, err = run_cli("train", spec, "--out", run, "--data-dir", mnist_dir, "--seed", 5)
    assert (code, out) == (1, "")
    assert err == (f"netspec train: error: {run} already holds a run; continue it with "
                   f"--resume {run}, or choose another --out\n")
    assert files(run) == before


@pytest.mark.parametrize(("argv", "message"), [
    (["train"], r"give a spec to train, or --resume RUN_DIR"),
    (["train", "--resume", "{tmp}"], r"{tmp} is not a resumable run: spec.toml is missing"),
    (["train", "--resume", "{tmp}/nowhere"], r"{tmp}/nowhere is not a resumable run"),
    (["train", "{tmp}/nowhere.toml"], r"{tmp}/nowhere.toml: no such file"),
    (["train", "lenet6"], r"lenet6: no such file and no shipped architecture of that name; "
                          r"did you mean 'lenet5'\?"),
    (["train", "mlp", "--lr", "-1", "--out", "{tmp}/run"], r"after overrides: \[train."
                                                            r"optimizer\] lr: "),
    (["train", "mlp", "--epochs", "0", "--out", "{tmp}/run"], r"after overrides: \[train\] "
                                                              r"epochs: "),
])
def test_train_errors_are_one_line_messages(tmp_path, argv, message):
    code, out, err = run_cli(*(a.format(tmp=tmp_path) for a in argv))
    assert (code, out) == (1, "")
    assert re.fullmatch(r"netspec train: (error: )?" + message.format(tmp=re.escape(
        str(tmp_path))) + r"[^\n]*\n", err)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("extra", "given"), [
    (["mlp"], "the spec"),
    (["--epochs", "5"], "--epochs"),
    (["--out", "elsewhere", "--batch-size", "8", "--weight-decay", "0"],
     "--out, --batch-size, --weight-decay"),
])
def test_resume_refuses_settings_it_would_ignore(finished_run, extra, given):
    _, run, _, _ = finished_run
    code, out, err = run_cli("train", "--resume", run, *extra)
    assert (code, out) == (1, "")
    assert err == (f"netspec train: error: --resume continues a run as it was set up; drop "
                   f"{given} (or start a new run with --out instead)\n")


def evaluation(out: str) -> tuple[float, np.ndarray, np.ndarray]:
    """Accuracy, per-class accuracy and confusion matrix from ``netspec evaluate`` output."""
    head = re.match(r"test accuracy (\d+\.\d\d)%, loss \d+\.\d{4} \(10,000 images\)\n\n", out)
    assert head, out
    lines = out[head.end():].splitlines()
    assert lines[0].split() == ["true", "accuracy", *(f"p{d}" for d in range(10))]
    assert set(lines[1]) == {"-"}
    rows = [line.split() for line in lines[2:]]
    assert [int(row[0]) for row in rows] == list(range(10))
    assert all(row[1].endswith("%") for row in rows)
    return (float(head[1]) / 100, np.array([float(row[1][:-1]) / 100 for row in rows]),
            np.array([[int(v) for v in row[2:]] for row in rows]))


def test_evaluate_prints_accuracy_per_class_and_confusion(finished_run, mnist_dir):
    spec, run, _, _ = finished_run
    code, out, err = run_cli("evaluate", spec, "--weights", run / "best.npz", "--data-dir",
                             mnist_dir)
    assert (code, err) == (0, "")
    accuracy, per_class, confusion = evaluation(out)
    assert confusion.shape == (10, 10) and confusion.sum() == 10_000
    # the MNIST test set's class sizes
    assert confusion.sum(axis=1).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974,
                                              1009]
    np.testing.assert_allclose(per_class, np.diag(confusion) / confusion.sum(axis=1), atol=6e-5)
    assert accuracy == pytest.approx(np.trace(confusion) / 10_000, abs=5e-5)
    saved = json.loads((run / "result.json").read_text())["test"]
    assert accuracy == pytest.approx(saved["accuracy"], abs=5e-5)
    assert confusion.tolist() == saved["confusion"]


def test_evaluate_with_the_wrong_spec_says_whose_weights_they_are(finished_run, mnist_dir):
    _, run, _, _ = finished_run
    code, out, err = run_cli("evaluate", "mlp", "--weights", run / "best.npz", "--data-dir",
                             mnist_dir)
    assert (code, out) == (1, "")
    assert err.startswith(f"netspec evaluate: error: {run / 'best.npz'}: these weights belong "
                          f"to spec 'tiny' (layout ")
    assert "not to 'mlp' (layout " in err and "Traceback" not in err


@pytest.mark.parametrize(("prepare", "message"), [
    (lambda d, spec: None, r"{w}: no such weights file"),
    (lambda d, spec: (d / "w.npz").write_bytes(b"garbage"), r"{w}: not a netspec weights file"),
    (lambda d, spec: save_checkpoint(d / "w.npz", compile(spec)),
     r"{w}: holds no normalisation \(mean/std\); was it written by netspec train\?"),
])
def test_evaluate_reports_unusable_weights(tmp_path, mnist_dir, prepare, message):
    spec = write_spec(tmp_path)
    prepare(tmp_path, spec)
    code, out, err = run_cli("evaluate", spec, "--weights", tmp_path / "w.npz", "--data-dir",
                             mnist_dir)
    assert (code, out) == (1, "")
    assert re.fullmatch(r"netspec evaluate: error: " + message.format(
        w=re.escape(str(tmp_path / "w.npz"))) + r".*\n", err, re.DOTALL)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def fake_clock(monkeypatch, times: list[float]) -> None:
    ticks = iter(times)
    monkeypatch.setattr("netspec.cli.progress.time", SimpleNamespace(monotonic=lambda: next(ticks)))


def bar(done: int, total: int = 10) -> str:
    return f"[{'#' * int(24 * done / total):.<24}]"


@pytest.mark.parametrize("stream", [io.StringIO(), FakeTerminal()], ids=["log", "terminal"])
def test_progress_line(stream, monkeypatch):
    # a clock near zero, as just after boot, must not hide the first update
    fake_clock(monkeypatch, [0.0, 0.1, 0.3, 5.0, 11.0, 11.1])
    line = ProgressLine(stream)
    for done in range(1, 7):
        line.update(done, 10, f"step {done}", force=done == 6)
    line.clear()
    if stream.isatty():
        # redrawn in place every 0.2 s, and when forced; cleared at the end
        assert stream.getvalue() == "".join(f"\r\x1b[2K{bar(d)} step {d}"
                                            for d in (1, 3, 4, 5, 6)) + "\r\x1b[2K"
    else:
        # a log gets one line every 10 s, and the forced ones
        assert stream.getvalue() == "".join(f"{bar(d)} step {d}\n" for d in (1, 5, 6))


def test_download_progress_shows_sizes_and_always_the_end(monkeypatch):
    fake_clock(monkeypatch, [100.0, 101.0, 102.0, 103.0])
    stream = io.StringIO()
    show = download_progress(ProgressLine(stream))
    mib = 2**20
    show("train-images-idx3-ubyte.gz", mib, 10 * mib)
    show("train-images-idx3-ubyte.gz", 2 * mib, 10 * mib)
    show("train-images-idx3-ubyte.gz", 10 * mib, 10 * mib)
    show("t10k-labels-idx1-ubyte.gz", 5000, None)
    assert stream.getvalue().splitlines() == [
        f"{bar(1)} downloading train-images-idx3-ubyte.gz: 1.0/10.0 MiB",
        f"{bar(10)} downloading train-images-idx3-ubyte.gz: 10.0/10.0 MiB",
    ]


def test_train_with_weights_fine_tunes_from_them(finished_run, mnist_dir, tmp_path):
    spec, run, _, _ = finished_run
    code, out, err = run_cli("train", spec, "--weights", run / "best.npz", "--out",
                             tmp_path / "tuned", "--data-dir", mnist_dir, "--no-plots",
                             "--epochs", "1", "--lr", "1e-12")
    assert code == 0, err
    assert out.splitlines()[0].endswith(f", starting from {run / 'best.npz'}")
    # a vanishing learning rate leaves the starting weights: those of the file, not the seed's
    start, tuned = weights(run / "best.npz"), weights(tmp_path / "tuned" / "last.npz")
    for key, value in start.items():
        np.testing.assert_allclose(tuned[key], value, atol=1e-6, err_msg=key)
    fresh = compile(spec)
    assert any(not np.allclose(fresh.params[k], start[k]) for k in fresh.params)


def test_train_with_weights_of_another_spec_leaves_no_run(finished_run, mnist_dir, tmp_path):
    spec, run, _, _ = finished_run
    code, _, err = run_cli("train", "mlp", "--weights", run / "best.npz", "--out",
                           tmp_path / "tuned", "--data-dir", mnist_dir, "--no-plots")
    assert code == 1 and "these weights belong to spec" in err
    assert not (tmp_path / "tuned").exists()


def test_resume_refuses_weights(tmp_path):
    code, _, err = run_cli("train", "--resume", tmp_path, "--weights", tmp_path / "w.npz")
    assert code == 1 and "drop --weights" in err
