"""Starting from a shipped design: ``netspec copy``, errors that say a spec is shipped, and
the shipped CIFAR ResNet-20."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from test_cli_train import run_cli

from netspec.lang.shipped import SCHEMA_FILE, SHIPPED_DIR
from netspec.plan.compiler import compile_plan
from netspec.runtime.executor import Network

ROOT = SHIPPED_DIR.parents[1]


def test_copy_writes_the_spec_its_includes_and_its_schema(tmp_path):
    code, out, err = run_cli("copy", "resnet18", tmp_path / "mine")
    assert code == 0, err
    mine = tmp_path / "mine"
    for relative in ("resnet18.toml", "blocks/resnet.toml", "netspec.schema.json"):
        assert (mine / relative).read_bytes() == (SHIPPED_DIR / relative).read_bytes()
    assert out == (f"wrote {mine / 'resnet18.toml'}, {mine / 'blocks/resnet.toml'}, "
                   f"{mine / 'netspec.schema.json'}\nnext: netspec compile "
                   f"{mine / 'resnet18.toml'}\n")
    # the copy compiles on its own, as the shipped one does, and its schema line resolves
    copied, shipped = compile_plan(mine / "resnet18.toml"), compile_plan("resnet18")
    assert copied.total_params == shipped.total_params == 11_689_512
    schema_line = (mine / "resnet18.toml").read_text().splitlines()[0]
    assert (mine / schema_line.removeprefix("#:schema ")).resolve() == \
        (mine / SCHEMA_FILE.name).resolve()


def test_copy_into_the_current_directory_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("copy", "lenet5")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet5.toml", "netspec.schema.json"]


def test_copy_refuses_to_overwrite_without_force(tmp_path):
    assert run_cli("copy", "resnet18", tmp_path)[0] == 0
    # a second copy beside it shares the unchanged schema and block file: nothing to refuse
    code, out, err = run_cli("copy", "resnet34", tmp_path)
    assert code == 0, err
    assert out.startswith(f"wrote {tmp_path / 'resnet34.toml'}\n")
    edited = tmp_path / "resnet18.toml"
    edited.write_text("# my edits\n", encoding="utf-8")
    (tmp_path / "blocks" / "resnet.toml").write_text("# mine too\n", encoding="utf-8")
    code, _, err = run_cli("copy", "resnet18", tmp_path)
    assert code == 1
    assert err == (f"netspec copy: error: {edited}, {tmp_path / 'blocks' / 'resnet.toml'} "
                   "already exist with other content; nothing copied (add --force to "
                   "overwrite, or copy into another directory)\n")
    assert edited.read_text() == "# my edits\n"
    code, _, err = run_cli("copy", "resnet18", tmp_path, "--force")
    assert code == 0, err
    assert edited.read_bytes() == (SHIPPED_DIR / "resnet18.toml").read_bytes()


@pytest.mark.parametrize(("name", "message"), [
    ("resnet1", "resnet1: no shipped architecture of that name; did you mean 'resnet18'?"),
    ("../lenet5", "../lenet5: no shipped architecture of that name"),
    ("blocks/resnet", "blocks/resnet: no shipped architecture of that name"),
])
def test_copy_of_an_unknown_name_is_refused(tmp_path, name, message):
    code, _, err = run_cli("copy", name, tmp_path)
    assert code == 1
    assert err.startswith(f"netspec copy: error: {message}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix", reason="symbolic links")
def test_copy_stays_inside_its_directory(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "blocks").symlink_to(outside)  # blocks/resnet.toml would land outside
    code, _, err = run_cli("copy", "resnet18", mine)
    assert code == 1
    assert err == (f"netspec copy: error: blocks/resnet.toml: outside {mine}; not copied\n")
    assert list(outside.iterdir()) == [] and not (mine / "resnet18.toml").exists()


def test_an_error_in_a_shipped_spec_points_into_the_package_and_says_so():
    code, _, err = run_cli("compile", "lenet5", "--set", "train.epochs=0")
    assert code == 1
    shipped = SHIPPED_DIR / "lenet5.toml"
    assert re.match(rf"netspec compile: error: {re.escape(str(shipped))}:\d+: \[train\] epochs",
                    err)
    assert err.endswith(f"\n(lenet5 is a shipped spec, installed with netspec in {SHIPPED_DIR}; "
                        "to change it, copy it into your directory: netspec copy lenet5)\n")


def test_an_error_in_ones_own_copy_has_no_shipped_note(tmp_path):
    assert run_cli("copy", "lenet5", tmp_path)[0] == 0
    code, _, err = run_cli("compile", tmp_path / "lenet5.toml", "--set", "train.epochs=0")
    assert code == 1
    assert err.startswith(f"netspec compile: error: {tmp_path / 'lenet5.toml'}:")
    assert "shipped" not in err


def test_resnet20_cifar_is_he_et_als_network_with_projection_shortcuts():
    plan = compile_plan("resnet20_cifar")
    assert plan.nodes[plan.inputs[0]].shape == (3, 32, 32)
    assert plan.total_params == 272_474  # 0.27 M: option A's 269,722 and two projections
    projections = sorted(node for node in plan.nodes if ".downsample." in node)
    assert projections == ["layer2.0.downsample.0", "layer2.0.downsample.1",
                           "layer3.0.downsample.0", "layer3.0.downsample.1"]
    convolutions = [n for n, node in plan.nodes.items()
                    if node.op_name == "conv2d" and ".downsample." not in n]
    assert len(convolutions) + 1 == 20  # 19 convolutions and the linear layer
    spec = plan.spec
    assert spec.data["source"] == "cifar10"
    from netspec.train.config import parse_train_config

    config = parse_train_config(spec.train, file=spec.file, locate=lambda _: None)
    assert (config.epochs, config.batch_size, config.optimizer.lr) == (182, 128, 0.1)
    assert config.augment.crop_padding == 4 and config.augment.horizontal_flip
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    assert Network(plan, seed=0).forward(x).shape == (2, 10)


def test_the_readme_says_resnet20_cifar_was_not_trained_here():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    line = next(line for line in readme.split("\n\n") if "resnet20_cifar" in line)
    assert "not trained here" in line
    catalog = json.loads((SHIPPED_DIR.parent / "catalog.json").read_text())
    assert "resnet20_cifar" in json.dumps(catalog)
