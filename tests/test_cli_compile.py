"""``netspec compile`` and ``netspec list`` as a user runs them: the table, the JSON contract,
errors on stderr with exit 1 and no traceback, shipped names from any directory."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from netspec.cli import main
from netspec.common.tables import human_bytes, human_count
from netspec.lang.spec import shipped_architectures
from netspec.ops import REGISTRY
from netspec.plan.compiler import compile_plan

SHIPPED = [path.stem for path in shipped_architectures()]

BAD_SPEC = """\
[nodes.image]
op = "input"
shape = [1, 8, 8]

[nodes.conv]
op = "conv2d"
out_channels = 4
kernel_size = 3

[nodes.big]
op = "conv2d"
out_channels = 4
kernel_size = 7

[nodes.act]
op = "relu"

[nodes.side]
op = "linear"
inputs = "conv"
out_features = 10
"""
BAD_ERRORS = [
    "bad.toml:10: node 'big' (conv2d): input shape (4, 6, 6): kernel 7x7 is larger than the "
    "padded input 6x6 (6x6 with padding 0x0); use a smaller kernel, more padding, or remove a "
    "pooling step",
    "bad.toml:18: node 'side' (linear): input has shape (4, 6, 6), an image (C, H, W); "
    "linear acts on the last axis only; add a flatten node before it (or a permute that puts "
    "the channels last, to act on them)",
]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(out: str, instances: bool = False) -> dict[str, list[str]]:
    """The node rows of a summary table: id -> cells (cells are 2+ spaces apart), without
    the rows of block instances (their op cell names the block: 'basic', 'basic ×2'), or
    only those with ``instances``. Ids are indented by nesting; the indent is dropped."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("node ")) + 2
    rows = {}
    for line in lines[start:]:
        if line.startswith("-"):
            break
        cells = re.split(r"\s{2,}", line.strip())
        is_instance = cells[1] not in REGISTRY
        if is_instance == instances:
            rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture
def bad_spec(tmp_path, monkeypatch):
    (tmp_path / "bad.toml").write_text(BAD_SPEC, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return "bad.toml"


def test_compile_prints_the_table_and_totals(capsys):
    code, out, err = run(capsys, "compile", "lenet5")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == ("lenet5: LeNet-5: 6@5x5 pad 2, 16@5x5, 120, 84, 10 with ReLU and max "
                        "pooling")
    assert lines[1].split() == ["node", "op", "inputs", "output", "shape", "params", "FLOPs@1",
                                "share", "act@1"]
    rows = table_rows(out)
    assert list(rows) == list(compile_plan("lenet5").nodes)
    assert rows["conv1"] == ["conv2d", "image", "(6, 28, 28)", "156", "239.9K", "28.1%",
                             "18.4 KiB"]
    assert rows["fc1"][:4] == ["linear", "flatten", "(120,)", "48,120"]
    total = next(line for line in lines if line.startswith("total"))
    assert total.split() == ["total", "61,706", "852.4K", "100%", "61.7", "KiB"]
    assert lines[-2] == "61,706 trainable parameters, 852.4K FLOPs per sample (forward)"
    assert lines[-1].startswith("memory: training at batch 1 needs about ")


def test_compile_shows_vit_b_16_with_its_tokens_through_the_encoder(capsys):
    """Issue 25's first check, as a user sees it: 86,567,656 parameters and (197, 768)
    through every encoder layer."""
    code, out, err = run(capsys, "compile", "vit_b_16")
    assert (code, err) == (0, "")
    rows = table_rows(out)
    assert rows["tokens"][:3] == ["concat", "class_token, patches", "(197, 768)"]
    assert rows["class_token"][:3] == ["parameter", "-", "(1, 768)"]
    layers = [f"encoder.layers.encoder_layer_{i}.{node}" for i in range(12)
              for node in ("ln_1", "self_attention", "attended", "ln_2", "add")]
    assert all(rows[node][2] == "(197, 768)" for node in layers)
    assert rows["encoder.layers.encoder_layer_11.mlp.0"][2] == "(197, 3072)"
    assert rows["class_output"][:3] == ["select", "encoder.ln", "(768,)"]
    assert "86,567,656 trainable parameters" in out.splitlines()[-2]


@pytest.mark.parametrize("name", SHIPPED)
def test_table_and_json_agree_for_every_shipped_architecture(capsys, name):
    code, out, _ = run(capsys, "compile", name)
    assert code == 0
    rows = table_rows(out)
    code, text, _ = run(capsys, "compile", name, "--json")
    assert code == 0
    data = json.loads(text)
    assert list(rows) == [node["id"] for node in data["nodes"]]
    for node in data["nodes"]:
        op, inputs, shape, params, flops = rows[node["id"]][:5]
        assert op == node["op"]
        assert inputs == (", ".join(node["inputs"]) or "-")
        assert shape == str(tuple(node["shape"]))
        assert params == f"{node['params']:,}"
        assert flops == human_count(node["flops"])
    assert f"{data['total_params']:,} trainable parameters" in out
    assert f"{human_count(data['total_flops'])} FLOPs per sample" in out
    # every block instance has a row with its subtotal, its nodes indented under it
    instances = {node["instance"] for node in data["nodes"] if "instance" in node}
    subtotals = table_rows(out, instances=True)
    assert instances <= set(subtotals)
    # every other row is a repeat's group or an instance holding only instances (RegNet's
    # trunk_output.block1): it holds some of them
    assert all(any((inner + ".").startswith(path + ".") for inner in instances)
               for path in subtotals)
    for path, cells in subtotals.items():
        # by whole path steps: denselayer1 does not hold denselayer10's nodes
        inside = [n for n in data["nodes"]
                  if (n.get("instance", "") + ".").startswith(path + ".")]
        assert cells[-4] == f"{sum(n['params'] for n in inside):,}", path


def test_json_follows_the_contract(capsys):
    code, text, err = run(capsys, "compile", "resnet_mini", "--json")
    assert (code, err) == (0, "")
    data = json.loads(text)
    assert set(data) == {"name", "output", "total_params", "total_flops", "nodes"}
    assert (data["name"], data["output"]) == ("resnet_mini", "fc")
    seen: set[str] = set()
    for node in data["nodes"]:
        assert set(node) - {"block", "instance"} == {"id", "op", "inputs", "shape", "params",
                                                      "flops"}
        assert all(isinstance(node[key], int) for key in ("params", "flops"))
        assert all(isinstance(d, int) and d > 0 for d in node["shape"])
        assert set(node["inputs"]) <= seen, f"{node['id']} comes before its inputs"
        seen.add(node["id"])
    assert data["total_params"] == sum(node["params"] for node in data["nodes"])
    assert data["total_flops"] == sum(node["flops"] for node in data["nodes"])
    conv = next(node for node in data["nodes"] if node["id"] == "block1.conv1")
    assert (conv["block"], conv["instance"], conv["inputs"]) == ("basic", "block1", ["stem_relu"])
    joined = next(node for node in data["nodes"] if node["id"] == "joined")
    assert (joined["op"], joined["inputs"], joined["shape"]) == (
        "concat", ["branch3x3", "branch5x5"], [32, 14, 14])


def test_batch_size_scales_flops_and_activation_memory(capsys):
    plan = compile_plan("lenet5")
    _, out, _ = run(capsys, "compile", "lenet5", "--batch-size", "8")
    assert "FLOPs@8" in out and "act@8" in out
    total = next(line for line in out.splitlines() if line.startswith("total"))
    activations = sum(node.activation_bytes for node in plan.nodes.values())
    assert human_count(8 * plan.total_flops) in total
    assert human_bytes(8 * activations) in total
    assert table_rows(out)["conv1"][3] == "156"  # parameters do not scale
    assert out.splitlines()[-2].endswith(f"852.4K FLOPs per sample (forward), "
                                         f"{human_count(8 * plan.total_flops)} per batch of 8")
    _, text, _ = run(capsys, "compile", "lenet5", "--json", "--batch-size", "8")
    data = json.loads(text)
    assert data["total_flops"] == 8 * plan.total_flops
    assert data["total_params"] == plan.total_params


@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_batch_size_must_be_a_positive_integer(capsys, value):
    with pytest.raises(SystemExit) as caught:
        main(["compile", "lenet5", "--batch-size", value])
    assert caught.value.code == 2
    assert "--batch-size" in capsys.readouterr().err


def test_errors_go_to_stderr_with_exit_1_after_the_partial_table(capsys, bad_spec):
    code, out, err = run(capsys, "compile", bad_spec)
    assert code == 1
    assert err == "netspec compile: 2 errors:\n" + "\n".join(BAD_ERRORS) + "\n"
    assert "Traceback" not in out + err
    assert out.startswith("bad: compiled up to the failing node(s)")
    rows = table_rows(out)
    assert list(rows) == ["image", "conv", "big", "act", "side"]
    assert rows["conv"][:3] == ["conv2d", "image", "(4, 6, 6)"]
    assert rows["big"] == ["conv2d", "conv", "FAILED"]
    assert rows["act"] == ["relu", "big", "not compiled"]
    assert rows["side"] == ["linear", "conv", "FAILED"]


def test_json_mode_prints_the_errors_as_json_when_the_spec_is_bad(capsys, bad_spec):
    code, out, err = run(capsys, "compile", bad_spec, "--json")
    assert code == 1
    assert [e["text"] for e in json.loads(out)["errors"]] == BAD_ERRORS
    assert BAD_ERRORS[0] in err  # and for a person reading the terminal, as without --json


def test_one_error_is_printed_on_one_line(capsys, tmp_path, monkeypatch):
    (tmp_path / "typo.toml").write_text(
        '[nodes.image]\nop = "input"\nshape = [1, 8, 8]\n[nodes.c]\nop = "conv2d"\n'
        'out_channels = 2\nkernal_size = 3\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "compile", "typo.toml")
    assert code == 1
    assert err == ("netspec compile: error: typo.toml:7: node 'c' (conv2d): unknown field "
                   "'kernal_size'; did you mean 'kernel_size'?\n")
    assert rows_marked(out) == {"c": "FAILED"}


def rows_marked(out: str) -> dict[str, str]:
    return {node: cells[2] for node, cells in table_rows(out).items()
            if len(cells) == 3 and cells[2] in ("FAILED", "not compiled")}


def test_malformed_toml_is_reported_at_the_parser_line(capsys, tmp_path, monkeypatch):
    (tmp_path / "broken.toml").write_text('[nodes.image]\nop = "input"\nshape = [1, 2\n'
                                          '[nodes.x]\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "compile", "broken.toml")
    assert (code, out) == (1, "")
    assert re.fullmatch(r"netspec compile: error: broken\.toml:4: invalid TOML: .+\n", err)


def test_bare_name_works_from_any_directory(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "compile", "lenet_caffe")
    assert (code, err) == (0, "")
    assert "431,080 trainable parameters" in out


def test_unknown_bare_name_suggests_the_closest(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "compile", "lenet_cafe")
    assert (code, out) == (1, "")
    assert err == ("netspec compile: error: lenet_cafe: no such file and no shipped "
                   f"architecture of that name; did you mean 'lenet_caffe'? (shipped: "
                   f"{', '.join(SHIPPED)})\n")


def test_missing_path_is_an_error(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "compile", "nets/none.toml") == (
        1, "", "netspec compile: error: nets/none.toml: no such file\n")


def test_unused_nodes_are_noted_on_stderr(capsys, tmp_path, monkeypatch):
    (tmp_path / "dead.toml").write_text(
        '[network]\noutput = "fc"\n[nodes.image]\nop = "input"\nshape = [4]\n'
        '[nodes.fc]\nop = "linear"\nout_features = 2\n[nodes.extra]\nop = "relu"\n',
        encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code, text, err = run(capsys, "compile", "dead.toml", "--json")
    assert code == 0
    assert [node["id"] for node in json.loads(text)["nodes"]] == ["image", "fc"]
    assert err == "netspec compile: note: extra not used by the output 'fc'; left out of the " \
                  "network\n"


def test_list_shows_every_shipped_architecture_with_its_parameters(capsys, tmp_path,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "list")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["name", "params", "FLOPs", "description"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert list(rows) == SHIPPED
    assert rows["lenet5"][1] == "61,706"
    assert rows["lenet_caffe"][1] == "431,080"
    for name in SHIPPED:
        plan = compile_plan(name)
        assert rows[name][1:3] == [f"{plan.total_params:,}", human_count(plan.total_flops)]
        assert out.count(plan.spec.description) == 1


COMMANDS = [pytest.param([sys.executable, "-m", "netspec"], id="python -m netspec")]
if shutil.which("netspec"):
    COMMANDS.append(pytest.param([shutil.which("netspec")], id="console script"))


@pytest.mark.parametrize("command", COMMANDS)
def test_installed_command_exits_1_without_traceback(command, tmp_path):
    (tmp_path / "bad.toml").write_text(BAD_SPEC, encoding="utf-8")
    result = subprocess.run([*command, "compile", "bad.toml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.splitlines()[1:] == BAD_ERRORS


def test_compile_refuses_a_batch_that_cannot_fit_in_memory(capsys):
    code = main(["compile", "lenet5", "--batch-size", "100000000"])
    err = capsys.readouterr().err
    assert code == 1
    assert "lenet5: training needs about" in err and "use a batch size of at most" in err
    assert "Traceback" not in err


def test_a_bad_train_table_fails_compile_at_its_lines(capsys, tmp_path, monkeypatch):
    # the language server flags these; compile, its command-line twin, must too
    monkeypatch.chdir(tmp_path)
    text = (shipped_architectures()[0].parent / "lenet5.toml").read_text(encoding="utf-8")
    text = re.sub(r"(?m)^epochs = .*$", 'epochs = "many"', text)
    text = re.sub(r"(?m)^lr = .*$", "lr = -1", text)
    (tmp_path / "net.toml").write_text(text, encoding="utf-8")
    lines = text.splitlines()
    epochs_line = next(i for i, line in enumerate(lines, 1) if line.startswith("epochs ="))
    lr_line = next(i for i, line in enumerate(lines, 1) if line.startswith("lr ="))
    code, out, err = run(capsys, "compile", "net.toml")
    assert code == 1
    assert f"net.toml:{epochs_line}: [train] epochs: Input should be a valid integer" in err
    assert f"net.toml:{lr_line}: [train.optimizer] lr: Input should be greater than 0" in err
    code, out, err = run(capsys, "compile", "net.toml", "--json")
    assert code == 1
    records = json.loads(out)["errors"]
    assert [(r["line"], r["code"]) for r in records] == [(epochs_line, "train"),
                                                         (lr_line, "train")]


def test_shape_and_train_problems_are_reported_together(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.toml").write_text(
        '[nodes]\nimage = { op = "input", shape = [1, 8, 8] }\n'
        'fc = { op = "linear", out_features = 2 }\n\n[train]\nepochs = 0\n', encoding="utf-8")
    code, out, err = run(capsys, "compile", "net.toml", "--json")
    assert code == 1
    records = json.loads(out)["errors"]
    assert [(r["line"], r["code"]) for r in records][1] == (6, "train")
    assert records[0]["line"] == 3 and records[0]["node"] == "fc"
    code, out, err = run(capsys, "compile", "net.toml")
    assert "2 errors" in err and "net.toml:6: [train] epochs" in err
