"""A horizontal diagram of a deep network stays a readable size: its block instances fold
into boxes until the drawing is about READABLE_WIDTH wide, and `netspec draw` says so."""

from __future__ import annotations

import re

import pytest

from netspec.cli import main
from netspec.pictures.svg import READABLE_WIDTH, lay_out, readable_depth
from netspec.plan.compiler import compile_plan


def svg_size(path) -> tuple[float, float]:
    head = path.read_text(encoding="utf-8")[:400]
    width, height = re.search(r'width="([\d.]+)" height="([\d.]+)"', head).groups()
    return float(width), float(height)


@pytest.mark.parametrize("name", ["resnet34", "resnet18"])
def test_a_deep_network_drawn_left_to_right_folds_its_blocks(name, tmp_path, capsys,
                                                               monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # netspec's own layout, not Graphviz
    plan = compile_plan(name)
    assert lay_out(plan, "LR").width > 2 * READABLE_WIDTH  # unfolded: far too wide
    depth = readable_depth(plan, "LR")
    assert depth is not None and lay_out(plan, "LR", depth).width <= READABLE_WIDTH
    target = tmp_path / "wide.svg"
    assert main(["draw", name, "--rankdir", "LR", "-o", str(target)]) == 0
    out = capsys.readouterr().out
    assert f"blocks nested deeper than {depth} levels are folded into boxes" in out
    width, height = svg_size(target)
    assert width <= READABLE_WIDTH and height < width


def test_what_fits_is_drawn_whole(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    for name in ("lenet5", "resnet_mini"):
        assert readable_depth(compile_plan(name), "LR") is None
    # top to bottom, the width never grows with depth: nothing is folded
    assert readable_depth(compile_plan("resnet34"), "TB") is None
    assert main(["draw", "resnet34", "-o", str(tmp_path / "tall.svg")]) == 0
    assert "folded" not in capsys.readouterr().out
    # a depth the user chose is kept
    assert main(["draw", "resnet34", "--rankdir", "LR", "--depth", "3", "-o",
                 str(tmp_path / "chosen.svg")]) == 0
    assert "folded" not in capsys.readouterr().out
    assert svg_size(tmp_path / "chosen.svg")[0] > READABLE_WIDTH
