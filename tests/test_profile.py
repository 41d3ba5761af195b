"""The per-node profiler, ``netspec bench`` and the tools/bench.py comparison script."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from netspec.cli import main
from netspec.common.errors import NetspecError
from netspec.lang.spec import parse_spec
from netspec.runtime.executor import compile
from netspec.train.optim import SGD
from netspec.train.profile import profile_table, profile_training, synthetic_batch, training_step

BENCH_SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "bench.py"


def test_profile_times_every_node_in_both_passes() -> None:
    net = compile("lenet5", seed=0)
    profile = profile_training(net, SGD(lr=0.01, momentum=0.9), batch_size=8, steps=3,
                               warmup=1)
    assert [n.node for n in profile.nodes] == net.order
    assert profile.step > 0 and profile.loss > 0 and profile.update > 0
    timed = {n.node: n for n in profile.nodes}
    for node_id in ("conv1", "pool1", "fc3"):
        assert timed[node_id].forward > 0 and timed[node_id].backward > 0
    # the input needs no gradient in training: its backward is skipped
    assert timed["image"].backward == 0
    assert sum(n.total for n in profile.nodes) < 3 * profile.step
    assert profile.train_flops == 3 * net.plan.total_flops * 8
    assert net.node_timer is None


def test_profile_steps_train_the_network() -> None:
    net = compile("mlp", seed=0)
    x, labels = synthetic_batch(net, 16, np.random.default_rng(0))
    optimizer = SGD(lr=0.1, momentum=0.9)
    losses = [training_step(net, optimizer, x, labels) for _ in range(15)]
    assert losses[-1] < 0.5 * losses[0]


def test_profile_table_lists_nodes_loss_update_and_step() -> None:
    net = compile("mlp", seed=0)
    profile = profile_training(net, SGD(lr=0.01), batch_size=4, steps=2, warmup=0)
    table = profile_table(profile)
    for label in [*net.order, "(loss)", "(update)", "step", "batch 4"]:
        assert label in table


def test_profile_refuses_what_it_cannot_time() -> None:
    net = compile("mlp", seed=0)
    with pytest.raises(NetspecError, match="steps must be at least 1"):
        profile_training(net, SGD(lr=0.01), batch_size=4, steps=0)
    image = parse_spec('[nodes.x]\nop = "input"\nshape = [1, 4, 4]\n\n'
                       '[nodes.c]\nop = "conv2d"\nout_channels = 2\nkernel_size = 3\n')
    with pytest.raises(NetspecError, match="classifier"):
        synthetic_batch(compile(image), 2, np.random.default_rng(0))


def test_cli_bench_prints_a_row_per_node(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "lenet_caffe", "--batch-size", "4", "--steps", "2",
                 "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("lenet_caffe: training step per node, batch 4, float32")
    for node_id in ("conv1", "pool1", "conv2", "fc2", "(update)"):
        assert f"\n{node_id} " in out


@pytest.mark.parametrize(("argv", "message"), [
    (["bench", "lenet6"], "netspec bench: error: lenet6: no such file"),
    (["bench", "mlp", "--steps", "0"], "--steps: must be a positive integer"),
    (["bench", "mlp", "--batch-size", "x"], "--batch-size: 'x' is not an integer"),
])
def test_cli_bench_errors_are_one_line_without_traceback(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code != 0 and message in err and "Traceback" not in err


def _bench_module():
    spec = importlib.util.spec_from_file_location("netspec_tools_bench", BENCH_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_script_compares_with_torch_on_identical_networks(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    bench = _bench_module()
    out = tmp_path / "bench.json"
    bench.main(["lenet5", "resnet_mini", "--reps", "1", "--warmup", "0", "--block-seconds",
                "0.001", "--pause", "0", "--profile-steps", "1", "--batch-size", "4",
                "--infer-batch-size", "6", "--json", str(out)])
    report = json.loads(out.read_text())
    for result in report["architectures"]:
        # the torch twin holds the same weights: outputs agree to float32 rounding
        assert result["parity_max_abs_diff"] < 1e-4
        for mode in ("train", "infer", "infer_big"):
            entry = result[mode]
            assert entry["netspec"]["ms"] > 0 and entry["torch"]["ms"] > 0
            assert entry["ratio"] == pytest.approx(entry["netspec"]["ms"]
                                                   / entry["torch"]["ms"])
            low, high = entry["paired_ratio_quartiles"]
            assert 0 < low <= high
        assert [n["node"] for n in result["profile"]["nodes"]][0] == "image"
    assert report["peak_rss_mib"] > 0


def test_bench_script_epoch_mode_reports_time_and_peak_memory(tmp_path: Path) -> None:
    bench = _bench_module()
    out = tmp_path / "epoch.json"
    bench.main(["mlp", "--epoch", "--no-torch", "--epoch-batch-sizes", "8,32",
                "--epoch-steps", "3", "--json", str(out)])
    epochs = json.loads(out.read_text())["epochs"]
    assert [(e["batch_size"], e["steps"], e["framework"]) for e in epochs] == [
        (8, 3, "netspec"), (32, 3, "netspec")]
    assert all(e["peak_rss_kib"] >= e["rss_before_training_kib"] > 0 for e in epochs)


def test_paired_ratio_quartiles_pair_the_blocks_of_each_rep() -> None:
    bench = _bench_module()
    # a drift that doubles both frameworks' times from one rep to the next moves no paired
    # ratio: their quartiles show no spread
    ours, theirs = [1.0, 2.0, 4.0, 8.0], [2.0, 4.0, 8.0, 16.0]
    assert bench.paired_ratio_quartiles(ours, theirs) == [0.5, 0.5]
    low, high = bench.paired_ratio_quartiles([1.0, 1.0, 3.0, 3.0], [1.0, 1.0, 1.0, 1.0])
    assert (low, high) == (1.0, 3.0)
