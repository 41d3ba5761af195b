"""``netspec train --engine torch``: the same recipe means the same training (float64 runs of
both engines agree step for step), the run directory is netspec's, resume continues exactly,
and torchrun with two gloo processes trains the single-process run and resumes after a kill."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from netspec.train.loop import Callbacks, start_run
from netspec.weights.checkpoint import read_checkpoint

torch = pytest.importorskip("torch")

from netspec.common.extras import install_line  # noqa: E402
from netspec.train.torch_engine import (  # noqa: E402 - after importorskip
    Placement,
    resume_torch_run,
    start_torch_run,
)

REPO = Path(__file__).resolve().parents[1]
CPU = Placement("cpu")

# a small network with every kind of trainable layer the recipes touch
SMALL = """
[network]
name = "small"

[nodes.image]
op = "input"
shape = [1, 28, 28]

[nodes.conv]
op = "conv2d"
out_channels = 4
kernel_size = 5
stride = 2
# a bias before batchnorm has a zero gradient up to rounding, which Adam scales up to full
# steps: the two engines' rounding would then drive it apart
bias = false

[nodes.bn]
op = "batchnorm"

[nodes.relu]
op = "relu"

[nodes.pool]
op = "maxpool2d"
kernel_size = 2

[nodes.flat]
op = "flatten"

[nodes.fc]
op = "linear"
out_features = 10

[train]
epochs = 2
batch_size = 32
limit = 400
validation = 80
seed = 3
{recipe}
"""

RECIPES = {
    "sgd-nesterov-cosine-warmup-smoothing-clip-shifts": """
label_smoothing = 0.1
clip_grad_norm = 0.5
[train.optimizer]
type = "sgd"
lr = 0.05
momentum = 0.9
nesterov = true
weight_decay = 5e-4
[train.schedule]
type = "cosine"
warmup_epochs = 0.5
[train.augment]
max_shift = 2
max_rotation = 10.0
""",
    "adamw-step": """
[train.optimizer]
type = "adamw"
lr = 0.003
[train.schedule]
type = "step"
step_size = 1
gamma = 0.5
""",
    "adam-decay-multistep-early-stopping": """
[train.optimizer]
type = "adam"
lr = 0.002
weight_decay = 1e-3
[train.schedule]
type = "multistep"
milestones = [1]
[train.early_stopping]
monitor = "val_accuracy"
patience = 1
""",
}


def _spec(tmp_path: Path, recipe: str) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(SMALL.replace("{recipe}", RECIPES[recipe]))
    return path


# learned tensors as ViT has them (a class token, a position embedding) and a per-channel
# scale beside a layer under one prefix, trained with the transformer recipe: AdamW that does
# not decay them, warmup and cosine
TOKENS = """
[network]
name = "tokens"

[nodes]
image = { op = "input", shape = [1, 28, 28] }
conv_proj = { op = "conv2d", out_channels = 8, kernel_size = 7, stride = 7 }
grid = { op = "reshape", shape = [8, 16] }
patches = { op = "permute", dims = [0, 2, 1] }
class_token = { op = "parameter", shape = [1, 1, 8], batch_axis = true }
tokens = { op = "concat", inputs = ["class_token", "patches"], dim = 1 }
"encoder.pos_embedding" = { op = "parameter", shape = [1, 17, 8], batch_axis = true, \
init = "normal", init_scale = 0.02 }
embedded = { op = "add", inputs = ["tokens", "encoder.pos_embedding"] }
"encoder.ln" = { op = "layernorm", normalized_shape = [8] }
first = { op = "select", dim = 1, index = 0 }
"head.scale" = { op = "parameter", shape = [8], value = 0.5 }
scaled = { op = "mul", inputs = ["first", "head.scale"] }
"head.fc" = { op = "linear", out_features = 10 }

[train]
epochs = 2
batch_size = 32
limit = 400
validation = 80
seed = 3

[train.optimizer]
type = "adamw"
lr = 0.01
weight_decay = 0.05
decay_norms_and_biases = false

[train.schedule]
type = "cosine"
warmup_epochs = 0.5
"""


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_torch_engine_trains_as_the_numpy_engine_in_float64(tmp_path, mnist_dir, recipe):
    _trains_as_the_numpy_engine(_spec(tmp_path, recipe), tmp_path, mnist_dir)


def test_torch_engine_trains_learned_tensors_as_the_numpy_engine(tmp_path, mnist_dir):
    spec = tmp_path / "tokens.toml"
    spec.write_text(TOKENS)
    _trains_as_the_numpy_engine(spec, tmp_path, mnist_dir)
    trained = read_checkpoint(tmp_path / "torch" / "last.npz").params
    # the tensors trained (the class token started at zeros, the scale at 0.5)
    assert np.abs(trained["class_token"]).max() > 1e-3
    assert np.abs(trained["head.scale"] - 0.5).max() > 1e-3
    assert {"class_token", "encoder.pos_embedding", "head.scale"} <= set(trained)


def _trains_as_the_numpy_engine(spec: Path, tmp_path: Path, mnist_dir: Path) -> None:
    numpy_run = start_run(spec, tmp_path / "numpy", data_dir=mnist_dir, dtype="float64").run()
    torch_run = start_torch_run(spec, tmp_path / "torch", placement=CPU, data_dir=mnist_dir,
                                dtype="float64").run()
    assert len(numpy_run.history) == len(torch_run.history)
    for ours, theirs in zip(numpy_run.history, torch_run.history):
        for key in ("train_loss", "val_loss", "lr"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-9), (key, ours, theirs)
        assert ours["train_accuracy"] == theirs["train_accuracy"]
    last_numpy = read_checkpoint(tmp_path / "numpy" / "last.npz")
    last_torch = read_checkpoint(tmp_path / "torch" / "last.npz")
    for part in ("params", "buffers", "optimizer"):
        ours, theirs = getattr(last_numpy, part), getattr(last_torch, part)
        assert set(ours) == set(theirs), part
        # (a network without batchnorm has no buffers)
        scale = max((float(np.abs(value).max()) for value in ours.values()), default=0.0)
        for key in ours:
            assert float(np.abs(ours[key] - theirs[key]).max()) / scale < 1e-8, (part, key)
    result = json.loads((tmp_path / "torch" / "result.json").read_text())
    assert result["test"]["accuracy"] == pytest.approx(numpy_run.test.accuracy, abs=1e-4)


def test_torch_run_resumes_exactly_and_netspec_reads_its_files(tmp_path, mnist_dir, capsys):
    from netspec.cli import main
    from netspec.train.loop import TrainingInterrupted

    spec = _spec(tmp_path, "adamw-step")
    whole = start_torch_run(spec, tmp_path / "whole", placement=CPU, data_dir=mnist_dir).run()

    stopper: dict = {}

    def stop_midway(progress) -> None:
        if progress.epoch == 1 and progress.batch == 5:
            stopper["trainer"]._stop_requested = True

    trainer = start_torch_run(spec, tmp_path / "cut", placement=CPU, data_dir=mnist_dir,
                              callbacks=Callbacks(on_batch=stop_midway))
    stopper["trainer"] = trainer
    with pytest.raises(TrainingInterrupted):
        trainer.run()
    resumed = resume_torch_run(tmp_path / "cut", placement=CPU, data_dir=mnist_dir).run()
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in whole.history]
    a, b = read_checkpoint(tmp_path / "whole/last.npz"), read_checkpoint(tmp_path / "cut/last.npz")
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])
    for key in a.optimizer:
        np.testing.assert_array_equal(a.optimizer[key], b.optimizer[key])

    # netspec's own evaluate of the torch-trained best.npz agrees with the run's result
    result = json.loads((tmp_path / "cut/result.json").read_text())
    assert main(["evaluate", str(spec), "--weights", str(tmp_path / "cut/best.npz"),
                 "--data-dir", str(mnist_dir)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    accuracy = float(line.split()[2].rstrip(",%")) / 100
    assert abs(accuracy - result["test"]["accuracy"]) <= 1e-4  # one image of 10,000
    # and the CLI resumes a finished torch run as a torch run, refusing another engine
    assert main(["train", "--resume", str(tmp_path / "cut"), "--engine", "numpy",
                 "--data-dir", str(mnist_dir)]) == 1
    assert "trained with the torch engine" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["--engine", "torch", "--device", "cuda"], "no CUDA device"),
    (["--engine", "torch", "--device", "cuda:1"], "no CUDA device"),
    (["--engine", "torch", "--device", "tpu"], "use cpu, cuda or cuda:N"),
    (["--device", "cpu"], "add --engine torch"),
])
def test_device_errors_are_sentences(tmp_path, capsys, argv, message):
    from netspec.cli import main

    assert main(["train", "lenet5", "--out", str(tmp_path / "r"), *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_without_torch_the_engine_says_what_to_install(tmp_path, monkeypatch, capsys):
    from netspec.cli import main

    monkeypatch.setitem(sys.modules, "torch", None)
    assert main(["train", "lenet5", "--engine", "torch", "--out", str(tmp_path / "r")]) == 1
    assert install_line("torch") in capsys.readouterr().err


def test_torchrun_refuses_the_numpy_engine(tmp_path, monkeypatch, capsys):
    from netspec.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "lenet5", "--out", str(tmp_path / "r")]) == 1
    assert "add --engine torch" in capsys.readouterr().err


def _torchrun(args: list[str], mnist_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(29500 + os.getpid() % 1000), "-m", "netspec", "train", *args,
         "--data-dir", str(mnist_dir), "--no-plots"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit():
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a parent that is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _history(run: Path) -> list:
    try:
        return json.loads((run / "history.json").read_text())
    except (OSError, ValueError):
        return []


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds torchrun's workers in /proc")
def test_torchrun_two_processes_train_the_global_batch_and_resume_after_a_kill(tmp_path,
                                                                            mnist_dir):
    spec = tmp_path / "lenet.toml"
    spec.write_text((REPO / "netspec/architectures/lenet5.toml").read_text().replace(
        "epochs = 15", "epochs = 3\nlimit = 1200").replace("validation = 5000",
                                                            "validation = 200"))
    # one process, float64: what two processes must reproduce (lenet5 has no batchnorm)
    single = start_torch_run(spec, tmp_path / "single", placement=CPU, data_dir=mnist_dir,
                             dtype="float64").run()

    run = tmp_path / "ddp"
    first = _torchrun([str(spec), "--engine", "torch", "--dtype", "float64", "--out",
                       str(run)], mnist_dir)
    deadline = time.monotonic() + 300
    while len(_history(run)) < 1 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(_history(run)) == 1, first.communicate()[0][-3000:]
    # the launcher and both workers, mid-epoch 2 (torchrun starts each worker in a session of
    # its own: killing the launcher's group alone would leave them training)
    workers = _descendants(first.pid)
    assert len(workers) >= 2
    for pid in [first.pid, *workers]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    first.wait()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers)
    assert len(_history(run)) < 3 and not (run / "result.json").exists()

    second = _torchrun(["--resume", str(run)], mnist_dir)
    output = second.communicate(timeout=600)[0]
    assert second.returncode == 0, output[-3000:]
    history = _history(run)
    assert "resuming" in output
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert output.count("test accuracy") == 1  # process 0 alone reports
    for ours, theirs in zip(single.history, history):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-9)
        assert ours["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-9)
    config = json.loads((run / "config.json").read_text())
    assert config["engine"] == "torch" and config["processes"] == 2
    assert json.loads((run / "result.json").read_text())["epochs_run"] == 3


def test_a_diverging_torch_run_says_so_and_keeps_its_last_checkpoint(tmp_path, mnist_dir):
    from netspec.common.errors import TrainingError

    spec = _spec(tmp_path, "adamw-step")
    spec.write_text(spec.read_text().replace("lr = 0.003", "lr = 1e30"))
    with pytest.raises(TrainingError, match="training diverged at epoch 1") as caught:
        start_torch_run(spec, tmp_path / "run", placement=CPU, data_dir=mnist_dir).run()
    assert "is not finite" in str(caught.value) or "the loss is" in str(caught.value)
    assert "--lr" in str(caught.value)
