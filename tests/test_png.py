"""netspec's own PNG diagram, drawn with Pillow when Graphviz is not on PATH.

Graphviz is hidden by pointing PATH at an empty directory, as in test_pictures.py.
"""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import pytest

from netspec import compile_plan
from netspec.cli import main
from netspec.common.extras import install_line
from netspec.pictures.png import SCALE
from netspec.pictures.render import draw
from netspec.pictures.svg import lay_out

Image = pytest.importorskip("PIL.Image")


@pytest.fixture
def no_graphviz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _check_picture(path: Path, name: str, rankdir: str = "TB", depth: int | None = None
                   ) -> Image.Image:
    """The file is a PNG the size of netspec's layout, with ink on it and the output box's
    border colour along that box's edge."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.load()
    scene = lay_out(compile_plan(name), rankdir, depth)
    assert image.size == (math.ceil(scene.width * SCALE), math.ceil(scene.height * SCALE))
    rgb = image.convert("RGB")
    colours = rgb.getcolors(maxcolors=1 << 20)
    assert colours is not None
    assert sum(count for count, colour in colours if colour != (255, 255, 255)) > 1000
    output = next(box for box in scene.boxes if box.is_output)
    x, y, width, height = output.rect
    border = _rgb(output.label.colors[1])
    # the middle of the box's left side, where the thick border runs
    assert rgb.getpixel((round((x + 0.5) * SCALE), round((y + height / 2) * SCALE))) == border
    return image


def test_cli_draws_lenet5_png_without_graphviz(tmp_path, no_graphviz, capsys):
    target = tmp_path / "x.png"
    assert main(["draw", "lenet5", "-o", str(target)]) == 0
    assert "drawn by netspec" in capsys.readouterr().out
    image = _check_picture(target, "lenet5")
    assert image.height > image.width > 300  # a chain drawn top to bottom
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty-path", "x.png"]


def test_cli_draws_resnet18_folded_png_without_graphviz(tmp_path, no_graphviz):
    target = tmp_path / "x.png"
    assert main(["draw", "resnet18", "-o", str(target), "--depth", "1"]) == 0
    _check_picture(target, "resnet18", depth=1)


def test_png_rankdir_lr_runs_left_to_right(tmp_path, no_graphviz):
    target = tmp_path / "x.png"
    assert main(["draw", "resnet_mini", "-o", str(target), "--rankdir", "LR"]) == 0
    image = _check_picture(target, "resnet_mini", "LR")
    assert image.width > image.height


def test_png_draws_instance_frames(tmp_path, no_graphviz):
    target = tmp_path / "x.png"
    assert draw("resnet_mini", target) == "netspec"
    scene = lay_out(compile_plan("resnet_mini"))
    assert scene.frames
    rgb = _check_picture(target, "resnet_mini").convert("RGB")
    frame = scene.frames[0]
    x, y, width, height = frame.rect
    frame_colour = _rgb("#8a6d2f")
    # dashed: the frame's colour along its left side (a line 2 px wide), with gaps
    rows = range(round((y + 0.3 * height) * SCALE), round((y + 0.7 * height) * SCALE))
    side = [[rgb.getpixel((round(x * SCALE) + dx, row)) for dx in range(-2, 3)] for row in rows]
    inked = [frame_colour in pixels for pixels in side]
    assert 0.3 < sum(inked) / len(inked) < 0.9


def test_png_without_pillow_names_the_extra(tmp_path, no_graphviz, monkeypatch, capsys):
    for module in [m for m in sys.modules if m == "PIL" or m.startswith("PIL.")]:
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, "PIL", None)
    target = tmp_path / "x.png"
    assert main(["draw", "lenet5", "-o", str(target)]) == 1
    err = capsys.readouterr().err
    assert install_line("plot") in err
    assert "apt-get install graphviz" in err  # the other way out
    assert "Traceback" not in err
    assert not target.exists()


def test_svg_is_untouched_by_png_support(tmp_path, no_graphviz):
    """.svg without Graphviz is still netspec's SVG, of the same layout as the PNG."""
    target = tmp_path / "x.svg"
    assert draw("lenet5", target) == "netspec"
    scene = lay_out(compile_plan("lenet5"))
    text = target.read_text(encoding="utf-8")
    assert text.count('class="node"') == len(scene.boxes)
    assert text.count('class="edge"') == len(scene.edges)
