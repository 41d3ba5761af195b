"""netspec.pictures diagrams and ``netspec draw``: DOT, Mermaid, Graphviz and netspec's own SVG.

Graphviz is used when ``dot`` is on PATH (tests that need it skip otherwise); the fallback is
tested by pointing PATH at an empty directory. The SVG checks are geometric: boxes, text and
shape labels must not overlap, and edges must not run through boxes.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from netspec import compile_plan, parse_spec
from netspec.cli import main
from netspec.common.errors import NetspecError
from netspec.lang.spec import shipped_architectures
from netspec.ops.shapes import format_shape
from netspec.pictures import edges, node_label, printable, title
from netspec.pictures.dot import to_dot
from netspec.pictures.mermaid import escape as mermaid_escape
from netspec.pictures.mermaid import to_mermaid
from netspec.pictures.render import draw, run_graphviz
from netspec.pictures.svg import EM_ADVANCE, FONT_SIZE, SMALL_SIZE, text_width, to_svg
from netspec.plan.compiler import Plan

SVG = "{http://www.w3.org/2000/svg}"
SHIPPED = [path.stem for path in shipped_architectures()]
needs_graphviz = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz not on PATH")

# ids that break naive quoting in one format or another; "end" is a Mermaid keyword
AWKWARD = r'''
[network]
name = "awkward \"names\" <&>"

[nodes.'say "hi"']
op = "input"
shape = [1, 8, 8]

[nodes."back\\slash<&>"]
op = "conv2d"
out_channels = 1
kernel_size = 3
padding = 1

[nodes.end]
op = "relu"
inputs = 'say "hi"'

[nodes."#1 | [x] *y* `z` _w_"]
op = "add"
inputs = ["back\\slash<&>", "end"]

[nodes."line\u2028break"]
op = "add"
inputs = ["#1 | [x] *y* `z` _w_", "#1 | [x] *y* `z` _w_"]

[nodes.flat]
op = "flatten"

[nodes.out]
op = "linear"
out_features = 3
'''


@pytest.fixture(scope="module")
def awkward() -> Plan:
    return compile_plan(parse_spec(AWKWARD, file="awkward.toml"))


@pytest.fixture
def no_graphviz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PATH on which there is no ``dot``."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def fake_dot(directory: Path, code: str) -> Path:
    """A ``dot`` program that runs the Python ``code`` (Python, so it needs nothing on PATH)."""
    directory.mkdir(exist_ok=True)
    program = directory / "dot"
    program.write_text(f"#!{sys.executable}\nimport sys, time\n{code}\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return program


# ---- DOT -------------------------------------------------------------------------------------

DOT_NODE = re.compile(r"^  n(\d+) \[label=<(.*)>, fillcolor=")
DOT_EDGE = re.compile(r"^  n(\d+) -> n(\d+) \[label=<(.*)>\];$")


def html_text(label: str) -> list[str]:
    """The text of each table row of a DOT HTML label, unescaped."""
    import html

    rows = re.findall(r"<TR><TD>(.*?)</TD></TR>", label)
    return [html.unescape(re.sub(r"<[^>]+>", "", row)) for row in rows]


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("rankdir", ["TB", "LR"])
def test_dot_has_every_node_with_its_label_and_every_edge_with_its_shape(name, rankdir):
    plan = compile_plan(name)
    text = to_dot(plan, rankdir)
    ids = list(plan.nodes)
    nodes = {int(m.group(1)): html_text(m.group(2))
             for m in map(DOT_NODE.match, text.splitlines()) if m}
    assert sorted(nodes) == list(range(len(ids)))
    for index, node_id in enumerate(ids):
        assert nodes[index] == list(node_label(plan.nodes[node_id]).lines)
    found = [(ids[int(m.group(1))], ids[int(m.group(2))], m.group(3))
             for m in map(DOT_EDGE.match, text.splitlines()) if m]
    assert found == [(e.source, e.target, e.label) for e in edges(plan)]
    assert len(found) == sum(len(node.inputs) for node in plan.nodes.values())
    assert f"rankdir={rankdir}" in text


def test_edge_labels_are_the_shapes_of_the_source_tensors():
    plan = compile_plan("lenet5")
    labelled = {(e.source, e.target): e.label for e in edges(plan)}
    assert labelled[("conv1", "relu1")] == "(6, 28, 28)"
    assert labelled[("pool2", "flatten")] == "(16, 5, 5)"
    assert labelled[("flatten", "fc1")] == "(400,)"


@pytest.mark.parametrize("node_id, expected", [
    ("conv1", ("conv1", "conv2d", "6 ch · 5×5 · stride 1 · pad 2", "out (6, 28, 28)",
               "156 params")),
    ("pool1", ("pool1", "maxpool2d", "2×2 · stride 2 · pad 0", "out (6, 14, 14)")),
    ("fc1", ("fc1", "linear", "120 features", "out (120,)", "48,120 params")),
    ("relu1", ("relu1", "relu", "out (6, 28, 28)")),
    ("image", ("image", "input", "out (1, 28, 28)")),
])
def test_node_labels_show_op_settings_shape_and_parameters(node_id, expected):
    assert node_label(compile_plan("lenet5").nodes[node_id]).lines == expected


def test_dropout_and_concat_labels_show_their_settings():
    plan = compile_plan("resnet_mini")
    assert "p = 0.2" in node_label(plan.nodes["dropout"]).lines
    assert "dim 1" in node_label(plan.nodes["joined"]).lines
    tokens = compile_plan("vit_b_16", {"layers": 1}).nodes["tokens"]
    assert node_label(tokens).lines[2:4] == ("dim 1", "out (197, 768)")


@pytest.mark.parametrize("text, expected", [
    ("plain_id", "plain_id"),
    ("a\nb", "a\\nb"),
    ("nul\x00", "nul\\x00"),
    ("zero\u200bwidth", "zero\\u200bwidth"),
    ("tab\there", "tab\\there"),
    ("ünï 层", "ünï 层"),
])
def test_printable_spells_out_invisible_characters(text, expected):
    assert printable(text) == expected


def test_dot_escapes_awkward_ids(awkward):
    text = to_dot(awkward)
    labels = [html_text(m.group(2))[0] for m in map(DOT_NODE.match, text.splitlines()) if m]
    assert labels == [printable(node_id) for node_id in awkward.nodes]
    # every quote in the DOT text is an attribute delimiter: ids only appear HTML-escaped
    assert 'say "hi"' not in text and "<&>" not in text.replace("<<B>", "")


@needs_graphviz
def test_graphviz_reads_awkward_ids_back(awkward):
    svg = run_graphviz(to_dot(awkward), "svg", shutil.which("dot")).decode()
    texts = [t.text for t in ET.fromstring(svg).iter(f"{SVG}text")]
    for node_id in awkward.nodes:
        assert printable(node_id) in texts


# ---- Mermaid ---------------------------------------------------------------------------------

MERMAID_NODE = re.compile(r'^  n(\d+)\["(.*)"\]$')
MERMAID_EDGE = re.compile(r'^  n(\d+) -->\|"(.*)"\| n(\d+)$')


def mermaid_unescape(text: str) -> str:
    return re.sub(r"#(\d+|quot|amp|lt|gt);",
                  lambda m: {"quot": '"', "amp": "&", "lt": "<", "gt": ">"}.get(
                      m.group(1)) or chr(int(m.group(1))), text)


@pytest.mark.parametrize("name", SHIPPED)
def test_mermaid_has_every_node_and_every_edge_with_its_shape(name):
    plan = compile_plan(name)
    text = to_mermaid(plan, "LR")
    lines = text.splitlines()
    assert "flowchart LR" in lines
    ids = list(plan.nodes)
    nodes = {int(m.group(1)): m.group(2) for m in map(MERMAID_NODE.match, lines) if m}
    assert sorted(nodes) == list(range(len(ids)))
    for index, node_id in enumerate(ids):
        parts = nodes[index].split("<br/>")
        assert parts[0] == f"<b>{mermaid_escape(node_id)}</b>"
        assert [mermaid_unescape(p) for p in parts[1:]] == list(
            node_label(plan.nodes[node_id]).details)
    found = [(ids[int(m.group(1))], ids[int(m.group(3))], m.group(2))
             for m in map(MERMAID_EDGE.match, lines) if m]
    assert found == [(e.source, e.target, e.label) for e in edges(plan)]


@pytest.mark.parametrize("text", [
    'say "hi"', "back\\slash<&>", "#1 | [x] *y* `z` _w_", "end", "a_b", "_lead", "trail_",
    "#quot;", "&amp;",
])
def test_mermaid_escape_round_trips_and_leaves_nothing_mermaid_reads(text):
    escaped = mermaid_escape(text)
    assert mermaid_unescape(escaped) == text
    assert not set(escaped) & set('"<>&*`|[]\\')
    # an entity's own '#' is the only one left, and underscores only inside words
    assert re.sub(r"#\w+;", "", escaped).count("#") == 0
    assert not re.search(r"(?<!\w)_|_(?!\w)", escaped)


def test_mermaid_of_awkward_ids_keeps_one_line_per_node(awkward):
    lines = to_mermaid(awkward).splitlines()
    nodes = [m.group(2) for m in map(MERMAID_NODE.match, lines) if m]
    assert len(nodes) == len(awkward.nodes)
    titles = [mermaid_unescape(n.split("<br/>")[0][3:-4]) for n in nodes]
    assert titles == [printable(node_id) for node_id in awkward.nodes]
    assert lines[1] == f"title: {json.dumps(title(awkward), ensure_ascii=False)}"
    assert title(awkward).startswith('awkward "names" <&> · ')


# ---- SVG geometry ----------------------------------------------------------------------------

Box = tuple[float, float, float, float]  # left, top, right, bottom


def overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def rect_box(rect: ET.Element) -> Box:
    x, y = float(rect.get("x")), float(rect.get("y"))
    return x, y, x + float(rect.get("width")), y + float(rect.get("height"))


def text_box(text: ET.Element, size: float) -> Box:
    """Where a centred monospace text line can reach (a full em above and below)."""
    x, y = float(text.get("x")), float(text.get("y"))
    half = text_width(text.text or "", size) / 2
    return x - half, y - size, x + half, y + 0.3 * size


def path_points(d: str, steps: int = 24) -> list[tuple[float, float]]:
    """Points along an SVG path made of M, L and C commands."""
    tokens = re.findall(r"[MLC]|-?[\d.]+,-?[\d.]+", d)
    points: list[tuple[float, float]] = []
    command, pending = "", []
    for token in tokens:
        if token in "MLC":
            command = token
            continue
        pending.append(tuple(float(v) for v in token.split(",")))
        if command in "ML":
            start = points[-1] if points and command == "L" else pending[0]
            points += [(start[0] + (pending[0][0] - start[0]) * t / steps,
                        start[1] + (pending[0][1] - start[1]) * t / steps)
                       for t in range(1, steps + 1)] if command == "L" else [pending[0]]
            pending = []
        elif len(pending) == 3:
            p0, (p1, p2, p3) = points[-1], pending
            for i in range(1, steps + 1):
                t = i / steps
                points.append(tuple((1 - t) ** 3 * a + 3 * (1 - t) ** 2 * t * b
                                    + 3 * (1 - t) * t ** 2 * c + t ** 3 * e
                                    for a, b, c, e in zip(p0, p1, p2, p3)))
            pending = []
    return points


def check_svg_drawing(svg: str, plan: Plan) -> None:
    root = ET.fromstring(svg)
    groups = [g for g in root.iter(f"{SVG}g") if g.get("class") == "node"]
    assert len(groups) == len(plan.nodes)
    assert [g.find(f"{SVG}title").text for g in groups] == [printable(n) for n in plan.nodes]
    boxes = []
    for group, node in zip(groups, plan.nodes.values()):
        box = rect_box(group.find(f"{SVG}rect"))
        lines = [t.text for t in group.iter(f"{SVG}text")]
        assert lines == list(node_label(node).lines)
        for text in group.iter(f"{SVG}text"):
            inner = text_box(text, FONT_SIZE)
            assert box[0] < inner[0] and inner[2] < box[2], f"{text.text!r} spills out"
            assert box[1] < inner[1] and inner[3] < box[3], f"{text.text!r} spills out"
        boxes.append(box)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not overlaps(a, b)
    labels = [g for g in root.iter(f"{SVG}g") if g.get("class") == "shape"]
    with_successors = {e.source for e in edges(plan)}
    assert sorted(g.find(f"{SVG}text").text for g in labels) == sorted(
        format_shape(plan.nodes[n].shape) for n in with_successors)
    label_boxes = [rect_box(g.find(f"{SVG}rect")) for g in labels]
    for i, a in enumerate(label_boxes):
        assert not any(overlaps(a, b) for b in boxes)
        assert not any(overlaps(a, b) for b in label_boxes[i + 1:])
        text = labels[i].find(f"{SVG}text")
        inner = text_box(text, SMALL_SIZE)
        assert a[0] <= inner[0] and inner[2] <= a[2]
    paths = [p for p in root.iter(f"{SVG}path") if p.get("class") == "edge"]
    assert len(paths) == len(edges(plan))
    for path in paths:
        for x, y in path_points(path.get("d")):
            for box in boxes:
                # endpoints touch box borders; a point well inside a box is a crossing
                assert not (box[0] + 1 < x < box[2] - 1 and box[1] + 1 < y < box[3] - 1), (
                    f"edge passes through a box at ({x:.0f}, {y:.0f})")
    width, height = float(root.get("width")), float(root.get("height"))
    for box in boxes + label_boxes:
        assert box[0] >= 0 and box[2] <= width and box[1] >= 0 and box[3] <= height


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("rankdir", ["TB", "LR"])
def test_own_svg_is_valid_xml_with_no_overlaps(name, rankdir):
    plan = compile_plan(name)
    check_svg_drawing(to_svg(plan, rankdir), plan)


@pytest.mark.parametrize("rankdir", ["TB", "LR"])
def test_own_svg_of_awkward_graph_has_no_overlaps(awkward, rankdir):
    check_svg_drawing(to_svg(awkward, rankdir), awkward)


def test_own_svg_draws_branches_side_by_side_and_merges_below():
    plan = compile_plan("resnet_mini")
    root = ET.fromstring(to_svg(plan, "TB"))
    box = {g.find(f"{SVG}title").text: rect_box(g.find(f"{SVG}rect"))
           for g in root.iter(f"{SVG}g") if g.get("class") == "node"}
    three, five, pool, joined = (box[n] for n in ("branch3x3", "branch5x5", "pool1", "joined"))
    assert three[1] == five[1]                       # same row
    assert three[2] < five[0] or five[2] < three[0]  # side by side
    assert pool[3] < three[1] and three[3] < joined[1]
    # the merge sits between its branches, the split above them
    centre = (three[0] + five[2]) / 2
    for node in (pool, joined):
        assert abs((node[0] + node[2]) / 2 - centre) < 1.0
    # the residual block's skip edge runs beside the block, the block stays in line
    chain = [box[n] for n in ("stem_relu", "block1.conv1", "block1.bn2", "block1.add")]
    centres = [(b[0] + b[2]) / 2 for b in chain]
    assert max(centres) - min(centres) < 3.0


def test_text_width_covers_the_monospace_advance():
    # the layout reserves EM_ADVANCE per column; common monospace fonts advance 0.6 em
    assert EM_ADVANCE >= 0.6
    assert text_width("ab") == pytest.approx(2 * FONT_SIZE * EM_ADVANCE)
    assert text_width("层") == text_width("ab")
    assert text_width("e\u0301") == text_width("e")


# ---- draw(): formats, Graphviz and the fallback ---------------------------------------------

def svg_node_count(path: Path) -> int:
    root = ET.parse(path).getroot()
    return sum(1 for g in root.iter(f"{SVG}g") if "node" in (g.get("class") or "").split())


@needs_graphviz
@pytest.mark.parametrize("name", SHIPPED)
def test_svg_with_graphviz_has_one_node_group_per_node(name, tmp_path):
    target = tmp_path / f"{name}.svg"
    assert draw(name, target) == "graphviz"
    assert svg_node_count(target) == len(compile_plan(name).nodes)


@pytest.mark.parametrize("name", SHIPPED)
def test_svg_without_graphviz_is_drawn_by_netspec(name, tmp_path, no_graphviz):
    target = tmp_path / f"{name}.svg"
    assert draw(name, target, "LR") == "netspec"
    assert svg_node_count(target) == len(compile_plan(name).nodes)


@needs_graphviz
@pytest.mark.parametrize("rankdir", ["TB", "LR"])
def test_png_with_graphviz(tmp_path, rankdir):
    target = tmp_path / "net.png"
    assert draw("resnet_mini", target, rankdir) == "graphviz"
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_png_without_graphviz_is_drawn_by_netspec(tmp_path, no_graphviz, capsys):
    # without Pillow as well, the message says how to get either: tests/test_png.py
    pytest.importorskip("PIL")
    target = tmp_path / "net.png"
    assert main(["draw", "lenet5", "-o", str(target)]) == 0
    assert "drawn by netspec" in capsys.readouterr().out
    assert target.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("suffix, marker", [
    (".dot", "digraph netspec {"),
    (".mmd", "flowchart TB"),
    (".svg", "<svg"),
    (".SVG", "<svg"),
])
def test_cli_draw_writes_the_format_the_extension_names(tmp_path, capsys, suffix, marker):
    target = tmp_path / f"resnet_mini{suffix}"
    assert main(["draw", "resnet_mini", "-o", str(target)]) == 0
    assert marker in target.read_text(encoding="utf-8")
    assert f"wrote {target}" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary left over


def test_cli_draw_rankdir(tmp_path):
    target = tmp_path / "net.dot"
    assert main(["draw", "mlp", "-o", str(target), "--rankdir", "LR"]) == 0
    assert "rankdir=LR" in target.read_text()


@pytest.mark.parametrize("name, problem", [
    ("net.pdf", "unknown diagram format '.pdf'"),
    ("net", "no extension"),
])
def test_cli_draw_unknown_extension_lists_the_valid_ones(tmp_path, capsys, name, problem):
    assert main(["draw", "lenet5", "-o", str(tmp_path / name)]) == 1
    err = capsys.readouterr().err
    assert problem in err
    for suffix in (".dot", ".mmd", ".svg", ".png"):
        assert suffix in err
    assert not (tmp_path / name).exists()


def test_cli_draw_reports_a_broken_spec_with_its_line(tmp_path, capsys):
    spec = tmp_path / "broken.toml"
    spec.write_text('[nodes.image]\nop = "input"\nshape = [1, 28, 28]\n\n'
                    '[nodes.fc]\nop = "linear"\nout_features = 10\n')
    assert main(["draw", str(spec), "-o", str(tmp_path / "out.svg")]) == 1
    err = capsys.readouterr().err
    assert "broken.toml:5: node 'fc' (linear)" in err and "Traceback" not in err


def test_draw_rejects_an_unknown_rankdir(tmp_path):
    with pytest.raises(NetspecError, match="rankdir must be one of TB, LR"):
        draw("lenet5", tmp_path / "net.dot", "BT")


@pytest.mark.parametrize("code, message", [
    ('sys.stderr.write("syntax error in line 3"); sys.exit(1)',
     "exit code 1: syntax error in line 3"),
    ("sys.exit(0)", "no output"),
    ("time.sleep(5)", "took longer than"),
])
def test_graphviz_failures_become_netspec_errors(tmp_path, code, message):
    program = fake_dot(tmp_path / "bin", code)
    with pytest.raises(NetspecError, match=message):
        run_graphviz("digraph {}", "svg", str(program), timeout=0.5)


def test_a_failing_graphviz_leaves_no_file(tmp_path, monkeypatch, capsys):
    fake_dot(tmp_path / "bin", 'sys.stderr.write("dot: broken"); sys.exit(3)')
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    target = tmp_path / "net.svg"
    assert main(["draw", "lenet5", "-o", str(target)]) == 1
    assert "exit code 3: dot: broken" in capsys.readouterr().err
    assert not target.exists()


def test_the_mermaid_diagram_in_docs_is_up_to_date():
    docs = Path(__file__).resolve().parents[1] / "docs" / "resnet_mini.mmd"
    assert docs.read_text(encoding="utf-8") == to_mermaid(compile_plan("resnet_mini")), (
        "regenerate it: netspec draw resnet_mini -o docs/resnet_mini.mmd")
