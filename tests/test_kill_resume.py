"""Kill ``netspec train`` at random moments; the run directory must stay loadable and the run,
resumed (or restarted when no epoch had finished), must end with exactly the weights of an
uninterrupted run with the same seed.

Kill points fall in three phases, in turn: while MNIST loads, during the epochs (random times
over the reference run's training span), and around checkpoint writes. For the last, the child
process waits a little before each rename of netspec.common.atomic, so that the parent can
SIGKILL it while a temporary file exists or just after the rename: fault injection that widens
the window without changing what is written. CI runs 3 kill points;
``NETSPEC_KILL_POINTS=25`` runs more, adding SIGTERM (the graceful stop) and kills of the
resumed run itself.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from netspec.lang.spec import parse_spec
from netspec.train.runlog import read_metrics
from netspec.weights.checkpoint import read_checkpoint

LOG = logging.getLogger(__name__)
KILL_POINTS = int(os.environ.get("NETSPEC_KILL_POINTS", "3"))
PHASES = ("load", "train", "checkpoint", "sigterm")
RUN_FILES = {"spec.toml", "config.json", "history.json", "last.npz", "best.npz", "result.json",
             "metrics.csv", "tensorboard"}
RENAME_DELAY = 0.05
TIMEOUT = 300

SPEC = """\
[network]
name = "tiny"

[nodes.image]
op = "input"
shape = [1, 28, 28]

[nodes.pool]
op = "avgpool2d"
kernel_size = 2

[nodes.conv]
op = "conv2d"
out_channels = 4
kernel_size = 3

[nodes.bn]
op = "batchnorm"

[nodes.relu]
op = "relu"

[nodes.flatten]
op = "flatten"

[nodes.drop]
op = "dropout"
p = 0.2

[nodes.fc]
op = "linear"
out_features = 10

[train]
batch_size = 16
seed = 7

[train.optimizer]
type = "adam"
"""

# the child: netspec's CLI with every rename delayed by $NETSPEC_TEST_RENAME_DELAY seconds
CHILD = """\
import os, sys, time
delay = float(os.environ.get("NETSPEC_TEST_RENAME_DELAY", "0"))
if delay:
    rename = os.replace
    def slow_replace(src, dst, **kwargs):
        time.sleep(delay)
        rename(src, dst, **kwargs)
    os.replace = slow_replace
from netspec.cli import main
sys.exit(main(sys.argv[1:]))
"""


def train_args(spec: Path, mnist_dir: Path, out: Path) -> list[str]:
    return ["train", str(spec), "--data-dir", str(mnist_dir), "--limit", "1800",
            "--validation", "200", "--epochs", "3", "--out", str(out), "--no-plots"]


def resume_args(mnist_dir: Path, out: Path) -> list[str]:
    return ["train", "--resume", str(out), "--data-dir", str(mnist_dir), "--no-plots"]


def start(args: list[str], delay: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "NETSPEC_TEST_RENAME_DELAY": str(delay)}
    return subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env, text=True)


def finish(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


@dataclass(frozen=True)
class Reference:
    run_dir: Path
    spec: Path
    trained_at: float  # seconds from start until the run directory appeared (data loaded)
    ended_at: float


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mnist_dir: Path) -> Reference:
    """An uninterrupted run, timed: when its directory appears and when it ends."""
    root = tmp_path_factory.mktemp("kill")
    spec = root / "tiny.toml"
    spec.write_text(SPEC, encoding="utf-8")
    run_dir = root / "reference"
    began = time.monotonic()
    process = start(train_args(spec, mnist_dir, run_dir))
    trained_at = None
    while process.poll() is None:
        if trained_at is None and (run_dir / "config.json").exists():
            trained_at = time.monotonic() - began
        time.sleep(0.002)
    ended_at = time.monotonic() - began
    assert process.returncode == 0, process.stderr.read()
    return Reference(run_dir, spec, trained_at or ended_at / 2, ended_at)


def check_loadable(run_dir: Path) -> None:
    """What a kill may leave: complete files (each parses) and hidden temporaries only."""
    if not run_dir.exists():
        return
    for entry in run_dir.iterdir():
        assert entry.name in RUN_FILES or (entry.name.startswith(".")
                                           and entry.name.endswith(".tmp")), entry.name
    if (run_dir / "spec.toml").exists():
        parse_spec((run_dir / "spec.toml").read_text(encoding="utf-8"))
    for name in ("config.json", "history.json", "result.json"):
        if (run_dir / name).exists():
            json.loads((run_dir / name).read_text(encoding="utf-8"))
    if (run_dir / "metrics.csv").exists():
        # rewritten whole from the history after history.json: a kill between them leaves it
        # an epoch behind (and a history cut short by hand, as below, an epoch ahead)
        rows = read_metrics(run_dir)
        epochs = len(json.loads((run_dir / "history.json").read_text(encoding="utf-8")))
        assert abs(len(rows) - epochs) <= 1
        assert [row["epoch"] for row in rows] == list(range(1, len(rows) + 1))
    last = read_checkpoint(run_dir / "last.npz") if (run_dir / "last.npz").exists() else None
    best = read_checkpoint(run_dir / "best.npz") if (run_dir / "best.npz").exists() else None
    if last is None:
        return
    state = last.meta["state"]
    history = json.loads((run_dir / "history.json").read_text()) if (
        run_dir / "history.json").exists() else []
    # history.json is written after last.npz: at most one epoch behind it
    assert len(history) in (len(state["history"]), len(state["history"]) - 1)
    if state["best_epoch"]:
        # best.npz is written before last.npz: of the best epoch, or of the epoch after
        assert best is not None
        assert best.meta["state"]["epoch"] in (state["best_epoch"], state["epoch"] + 1)


def without_seconds(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in records]


def assert_same_run(run_dir: Path, reference: Path) -> None:
    for name in ("last.npz", "best.npz"):
        ours, theirs = read_checkpoint(run_dir / name), read_checkpoint(reference / name)
        for part in ("params", "buffers", "optimizer"):
            a, b = getattr(ours, part), getattr(theirs, part)
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name} {key}")
        assert ours.meta["state"]["epoch"] == theirs.meta["state"]["epoch"]
    history = [json.loads((d / "history.json").read_text()) for d in (run_dir, reference)]
    assert without_seconds(history[0]) == without_seconds(history[1])
    # metrics.csv is the history again, whatever the kills left between the two
    assert [row["epoch"] for row in read_metrics(run_dir)] == [r["epoch"] for r in history[0]]
    assert [row["val_loss"] for row in read_metrics(run_dir)] == [r["val_loss"]
                                                                 for r in history[0]]
    results = [json.loads((d / "result.json").read_text())["test"] for d in (run_dir, reference)]
    assert results[0] == results[1]


@dataclass(frozen=True)
class Kill:
    phase: str
    at: float = 0.0  # seconds after start (load), after the run directory appears (others)
    write: int = 0  # the n-th atomic write (checkpoint)
    after_rename: bool = False

    def __str__(self) -> str:
        if self.phase == "checkpoint":
            return f"SIGKILL {'after' if self.after_rename else 'before'} write #{self.write}"
        if self.phase == "load":
            return f"SIGKILL {self.at:.2f}s after start (loading)"
        signal_name = "SIGTERM" if self.phase == "sigterm" else "SIGKILL"
        return f"{signal_name} {self.at:.2f}s into training"


def plan_kills(point: int, reference: Reference) -> list[Kill]:
    """The kill(s) of one point: phases in turn, random moments within each."""
    rng = random.Random(point)
    phase = PHASES[point % (3 if KILL_POINTS <= 3 else 4)]
    span = reference.ended_at - reference.trained_at
    kills = []
    for _ in range(2 if point >= 4 and point % 3 == 0 else 1):
        if phase == "load":
            kills.append(Kill(phase, at=rng.uniform(0.05, reference.trained_at)))
        elif phase == "checkpoint":
            kills.append(Kill(phase, write=rng.randint(1, 10), after_rename=rng.random() < 0.4))
        else:
            kills.append(Kill(phase, at=rng.uniform(0.0, span)))
    return kills


def interrupt(args: list[str], kill: Kill, run_dir: Path) -> bool:
    """Run ``args`` and kill it as planned; False if it finished first."""
    left_over = temporaries(run_dir)  # from earlier kills: never renamed, never removed
    process = start(args, RENAME_DELAY if kill.phase == "checkpoint" else 0.0)
    began = time.monotonic()
    started = None  # when the run directory appeared (for a resumed run: at once)
    if (run_dir / "config.json").exists():
        started = began
    seen: set[str] = set()
    try:
        while process.poll() is None:
            if time.monotonic() - began > TIMEOUT:
                raise AssertionError(f"training did not end within {TIMEOUT}s")
            if kill.phase == "checkpoint":
                fresh = temporaries(run_dir) - left_over - seen
                seen |= fresh
                if fresh and len(seen) >= kill.write:
                    while kill.after_rename and process.poll() is None and any(
                            (run_dir / name).exists() for name in fresh):
                        time.sleep(0.0005)
                    process.send_signal(signal.SIGKILL)
                    break
            else:
                if kill.phase != "load" and started is None and (run_dir / "config.json").exists():
                    started = time.monotonic()
                since = began if kill.phase == "load" else started
                # a load kill comes at the latest as the run directory appears
                loaded = kill.phase == "load" and (run_dir / "config.json").exists()
                if loaded or since is not None and time.monotonic() - since >= kill.at:
                    process.send_signal(signal.SIGTERM if kill.phase == "sigterm"
                                        else signal.SIGKILL)
                    break
            time.sleep(0.001)
        code = process.wait(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = process.stderr.read()
    # SIGTERM between batches saves and exits 130; outside the epochs it ends the process
    assert "Traceback" not in stderr, stderr
    return code != 0


def temporaries(run_dir: Path) -> set[str]:
    return {name for name in os.listdir(run_dir) if name.endswith(".tmp")} if \
        run_dir.exists() else set()


@pytest.mark.parametrize("point", range(KILL_POINTS))
def test_a_killed_run_stays_loadable_and_resumes_to_the_same_weights(
        point: int, reference: Reference, mnist_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = train_args(reference.spec, mnist_dir, run_dir)
    kills = plan_kills(point, reference)
    for kill in kills:
        interrupted = interrupt(args, kill, run_dir)
        left = sorted(p.name for p in run_dir.iterdir()) if run_dir.exists() else []
        # shown with a failure, or live with --log-cli-level=INFO
        LOG.info("point %d: %s: %s, left %s", point, kill,
                 "killed" if interrupted else "finished first", left)
        check_loadable(run_dir)
        if not interrupted:
            break
        # what a user does next: resume if an epoch was saved, else start the run again
        args = resume_args(mnist_dir, run_dir) if (run_dir / "last.npz").exists() else args
    else:
        finish(args)
    check_loadable(run_dir)
    assert_same_run(run_dir, reference.run_dir)


def test_a_kill_between_the_last_checkpoint_and_its_history_is_mended_on_resume(
        reference: Reference, mnist_dir: Path, tmp_path: Path) -> None:
    """Regression: the final epoch's last.npz was written, its history.json was not; the
    resumed run has nothing left to train and used to leave history.json an epoch short."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference.run_dir, run_dir)
    history = json.loads((run_dir / "history.json").read_text())
    (run_dir / "history.json").write_text(json.dumps(history[:-1]))
    (run_dir / "result.json").unlink()
    check_loadable(run_dir)
    finish(resume_args(mnist_dir, run_dir))
    assert_same_run(run_dir, reference.run_dir)
