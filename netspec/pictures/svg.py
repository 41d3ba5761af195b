"""netspec's own diagram layout, for machines without Graphviz, and its SVG writer.

A layered (Sugiyama-style) drawing: each node's layer is its longest path from an input; an
edge that skips layers is threaded through invisible waypoints, one per skipped layer, so it
runs in its own lane instead of through boxes; the order within each layer is improved by
barycentre sweeps (fewer crossings); then, layer by layer, each vertex goes as close to the
mean of its neighbours as the no-overlap constraints allow (least squares, solved exactly
by isotonic regression). Edges run straight through layers and bend only between them, and
each shape label sits in a band of its own, so no line crosses a box or a label.

``lay_out`` returns the finished geometry (a ``Scene``); ``to_svg`` writes it as SVG and
``netspec.pictures.png`` rasterises it.

Text is set in a monospace font so that box sizes follow from character counts: no font
metrics are needed and no text can spill out of its box.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

from netspec.common.diagram_formats import RANKDIRS
from netspec.pictures import Cluster, Diagram, NodeLabel, diagram
from netspec.plan.compiler import Plan

FONT = "DejaVu Sans Mono, Menlo, Consolas, Liberation Mono, monospace"
FONT_SIZE = 12.0
SMALL_SIZE = 11.0
TITLE_SIZE = 14.0
# DejaVu Sans Mono and Liberation Mono advance 0.60 em per character; keep a margin
EM_ADVANCE = 0.62
LINE_HEIGHT = 16.0
PAD_X, PAD_Y = 10.0, 7.0
NODE_GAP = 30.0        # between neighbouring boxes of a layer
LANE_GAP = 16.0        # between an edge's lane and its neighbours
FRAME_PAD = 7.0       # room between an instance's frame and its boxes
BEND_ZONE = 34.0       # least room between layers where edges change lanes
BEND_SLOPE = 0.3       # the zone grows with the widest lane change in it, up to a limit,
MAX_BEND_ZONE = 120.0  # so that a wide fan-out does not turn into near-flat lines
LABEL_PAD = 4.0
MARGIN = 20.0
SWEEPS = 8
WAYPOINT_WEIGHT = 0.01
EDGE_COLOR = "#56627a"
FRAME_COLOR = "#8a6d2f"


def text_width(text: str, size: float = FONT_SIZE) -> float:
    """Width of ``text`` in a monospace font: wide (East Asian) characters take two columns,
    combining marks none.

    >>> text_width("conv1"), text_width("层1") == text_width("abc")
    (37.2, True)
    """
    columns = sum(0 if unicodedata.combining(ch) else
                  2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
    return columns * size * EM_ADVANCE


@dataclass
class _Vertex:
    """A box, or a waypoint of an edge that skips a layer (``label`` is None)."""

    key: int
    layer: int
    label: NodeLabel | None = None
    breadth: float = 0.0     # extent across the layer axis
    depth: float = 0.0       # extent along the layer axis
    pos: float = 0.0         # centre across the layer axis
    up: list[int] = field(default_factory=list)
    down: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _Path:
    """An edge as the chain of vertices it passes; ``slot`` is its index in the target's
    ``up`` list (a node may read the same tensor twice)."""

    chain: tuple[int, ...]
    label: str
    slot: int


@dataclass
class _Layout:
    vertices: list[_Vertex]
    layers: list[list[int]]
    paths: list[_Path]


def _box_size(label: NodeLabel) -> tuple[float, float]:
    width = max(text_width(line) for line in label.lines) + 2 * PAD_X
    height = len(label.lines) * LINE_HEIGHT + 2 * PAD_Y
    return width, height


def _build(picture: Diagram, horizontal: bool) -> _Layout:
    """Vertices (boxes first, in plan order, so a box's key is its index), waypoints for
    edges that skip layers, and a first order within each layer."""
    sources: dict[str, list[str]] = {box: [] for box in picture.boxes}
    for edge in picture.edges:
        sources[edge.target].append(edge.source)
    layer_of: dict[str, int] = {}
    for box in picture.boxes:
        layer_of[box] = 1 + max((layer_of[s] for s in sources[box]), default=-1)
    index = {box: i for i, box in enumerate(picture.boxes)}
    vertices = []
    for box, label in picture.boxes.items():
        width, height = _box_size(label)
        breadth, depth = (height, width) if horizontal else (width, height)
        vertices.append(_Vertex(index[box], layer_of[box], label, breadth, depth))
    paths = []
    for edge in picture.edges:
        chain = [index[edge.source]]
        for layer in range(layer_of[edge.source] + 1, layer_of[edge.target]):
            vertices.append(_Vertex(len(vertices), layer))
            chain.append(len(vertices) - 1)
        chain.append(index[edge.target])
        for upper, lower in zip(chain, chain[1:]):
            vertices[upper].down.append(lower)
            vertices[lower].up.append(upper)
        paths.append(_Path(tuple(chain), edge.label, len(vertices[chain[-1]].up) - 1))
    layers: list[list[int]] = [[] for _ in range(max(layer_of.values()) + 1)]
    # a waypoint starts out beside the box its edge leaves from
    for box in picture.boxes:
        layers[layer_of[box]].append(index[box])
        for path in paths:
            if path.chain[0] == index[box]:
                for key in path.chain[1:-1]:
                    layers[vertices[key].layer].append(key)
    return _Layout(vertices, layers, paths)


def _crossings(layout: _Layout) -> int:
    order = {key: i for layer in layout.layers for i, key in enumerate(layer)}
    total = 0
    for layer in layout.layers[:-1]:
        pairs = [(order[a], order[b]) for a in layer for b in layout.vertices[a].down]
        total += sum(1 for i, (a, b) in enumerate(pairs) for c, d in pairs[i + 1:]
                     if (a - c) * (b - d) < 0)
    return total


def _barycentres(layout: _Layout, layer: list[int], downward: bool) -> dict[int, float]:
    """Mean order of each vertex's neighbours in the layer swept from; a vertex without any
    keeps its place."""
    order = {key: i for row in layout.layers for i, key in enumerate(row)}
    out = {}
    for key in layer:
        vertex = layout.vertices[key]
        near = vertex.up if downward else vertex.down
        out[key] = sum(order[k] for k in near) / len(near) if near else float(order[key])
    return out


def _order_layers(layout: _Layout) -> None:
    """Barycentre sweeps down and up; keep the order with the fewest crossings."""
    layers = layout.layers
    best, best_count = [list(layer) for layer in layers], _crossings(layout)
    for sweep in range(SWEEPS):
        downward = sweep % 2 == 0
        sequence = range(1, len(layers)) if downward else range(len(layers) - 2, -1, -1)
        for i in sequence:
            keys = _barycentres(layout, layers[i], downward)
            layers[i].sort(key=keys.__getitem__)
        count = _crossings(layout)
        if count < best_count:
            best, best_count = [list(layer) for layer in layers], count
    layers[:] = best


def _isotonic(targets: Sequence[float], weights: Sequence[float]) -> list[float]:
    """The non-decreasing sequence closest to ``targets`` in weighted least squares
    (pool adjacent violators).

    >>> _isotonic([0.0, 2.0, 1.0], [1.0, 1.0, 1.0])
    [0.0, 1.5, 1.5]
    """
    blocks: list[list[float]] = []  # [weighted sum, weight, count]
    for target, weight in zip(targets, weights):
        blocks.append([target * weight, weight, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, mass, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += mass
            blocks[-1][2] += count
    out: list[float] = []
    for total, mass, count in blocks:
        out += [total / mass] * int(count)
    return out


def _spacing(a: _Vertex, b: _Vertex) -> float:
    gap = NODE_GAP if a.label is not None and b.label is not None else LANE_GAP
    return (a.breadth + b.breadth) / 2 + gap


def _weight(vertex: _Vertex) -> float:
    """Boxes matter more than waypoints: the main path of a residual block stays straight
    and its skip edge bends around it, as such blocks are usually drawn."""
    return 1.0 if vertex.label is not None else WAYPOINT_WEIGHT


def _place(layout: _Layout, layer: list[int], desired: dict[int, float]) -> None:
    """Put a layer's vertices as close to their desired positions as their order and spacing
    allow. Subtracting from each the spacing before it turns "no overlap" into
    "non-decreasing", which isotonic regression solves exactly."""
    vertices = [layout.vertices[key] for key in layer]
    offsets = [0.0]
    for a, b in zip(vertices, vertices[1:]):
        offsets.append(offsets[-1] + _spacing(a, b))
    weights = [_weight(v) for v in vertices]
    fitted = _isotonic([desired[v.key] - o for v, o in zip(vertices, offsets)], weights)
    for vertex, value, offset in zip(vertices, fitted, offsets):
        vertex.pos = value + offset


def _position(layout: _Layout) -> None:
    """Down, up, down: each pass puts a layer under (over) the mean of its neighbours in the
    layer before. Ending downwards makes every chain a straight line, centres a node's
    branches under it and a merge under its branches."""
    vs = layout.vertices
    for layer in layout.layers:
        _place(layout, layer, {key: 0.0 for key in layer})
    count = len(layout.layers)
    for downward in (True, False, True):
        for i in range(1, count) if downward else range(count - 2, -1, -1):
            layer = layout.layers[i]
            desired = {}
            for key in layer:
                near = vs[key].up if downward else vs[key].down
                mass = sum(_weight(vs[k]) for k in near)
                desired[key] = (sum(_weight(vs[k]) * vs[k].pos for k in near) / mass if near
                                else vs[key].pos)
            _place(layout, layer, desired)


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class _Frame:
    """Turns (along, across) layer coordinates into page (x, y) for TB or LR drawings."""

    horizontal: bool

    def point(self, along: float, across: float) -> tuple[float, float]:
        return (along, across) if self.horizontal else (across, along)

    def rect(self, along: float, across: float, depth: float, breadth: float
             ) -> tuple[float, float, float, float]:
        if self.horizontal:
            return along, across, depth, breadth
        return across, along, breadth, depth


@dataclass
class _Geometry:
    frame: _Frame
    starts: list[float]    # where each layer begins along the layer axis
    depths: list[float]    # how deep its deepest box is
    bands: list[float]     # the band for shape labels after it

    def bend_start(self, layer: int) -> float:
        return self.starts[layer] + self.depths[layer] + self.bands[layer]


def _ports(layout: _Layout, vertex: _Vertex) -> list[float]:
    """Where each incoming edge (by slot) meets a box: spread across its near side in the
    order of the edges' sources, so arrows into a merge stay apart."""
    slots = sorted(range(len(vertex.up)), key=lambda s: layout.vertices[vertex.up[s]].pos)
    spacing = min(18.0, vertex.breadth / (len(slots) + 1))
    middle = (len(slots) - 1) / 2
    out = [0.0] * len(slots)
    for rank, slot in enumerate(slots):
        out[slot] = vertex.pos + (rank - middle) * spacing
    return out


Point = tuple[float, float]
Rect = tuple[float, float, float, float]


@dataclass(frozen=True)
class Step:
    """One piece of an edge's line: ``kind`` is "M" (move), "L" (line) or "C" (cubic Bézier
    through two control points to the last point), as in an SVG path."""

    kind: str
    points: tuple[Point, ...]


@dataclass(frozen=True)
class Box:
    key: int
    rect: Rect
    label: NodeLabel
    is_output: bool


@dataclass(frozen=True)
class ShapeLabel:
    centre: Point
    size: tuple[float, float]
    text: str


@dataclass(frozen=True)
class InstanceFrame:
    rect: Rect
    label: str


@dataclass(frozen=True)
class Scene:
    """The finished drawing in page coordinates (x right, y down), before any file format:
    what both the SVG and the PNG writers draw, in the order listed, back to front."""

    width: float
    height: float
    horizontal: bool
    heading: str
    heading_at: Point
    frames: list[InstanceFrame]
    edges: list[list[Step]]
    shapes: list[ShapeLabel]
    boxes: list[Box]


def _edge_steps(layout: _Layout, geometry: _Geometry, path: _Path, ports: list[float]
                ) -> list[Step]:
    """Straight through layers and label bands, an S-bend between layers, so a line never
    crosses a box or a label."""
    vs, frame = layout.vertices, geometry.frame
    first = vs[path.chain[0]]
    steps = [Step("M", (frame.point(geometry.starts[first.layer] + first.depth, first.pos),))]
    for a_key, b_key in zip(path.chain, path.chain[1:]):
        a, b = vs[a_key], vs[b_key]
        bend, end = geometry.bend_start(a.layer), geometry.starts[b.layer]
        target = b.pos if b.label is None else ports[path.slot]
        middle = (bend + end) / 2
        steps.append(Step("L", (frame.point(bend, a.pos),)))
        if target == a.pos:
            steps.append(Step("L", (frame.point(end, target),)))
        else:
            steps.append(Step("C", (frame.point(middle, a.pos), frame.point(middle, target),
                                    frame.point(end, target))))
        if b.label is None:
            steps.append(Step("L", (frame.point(end + geometry.depths[b.layer], b.pos),)))
    return steps


def _box_rect(vertex: _Vertex, geometry: _Geometry) -> Rect:
    return geometry.frame.rect(geometry.starts[vertex.layer], vertex.pos - vertex.breadth / 2,
                               vertex.depth, vertex.breadth)


def _shape_label(vertex: _Vertex, text: str, geometry: _Geometry) -> ShapeLabel:
    """A shape on the edge trunk just after its box, in the band kept free for it."""
    layer = vertex.layer
    along = geometry.starts[layer] + geometry.depths[layer] + geometry.bands[layer] / 2
    width = text_width(text, SMALL_SIZE) + 2 * LABEL_PAD
    height = LINE_HEIGHT + 2 * LABEL_PAD - 4
    x, y, _, _ = geometry.frame.rect(along, vertex.pos, 0.0, 0.0)
    return ShapeLabel((x, y), (width, height), text)


def _instance_frames(frame: Cluster, keys: dict[str, int], vertices: list[_Vertex],
                     geometry: _Geometry) -> tuple[Rect, list[InstanceFrame]]:
    """A frame around an instance's boxes and the frames inside it (listed after it, so they
    are drawn on top), room for its label at the top. Returns its rectangle too."""
    rects, inner = [], []
    for child in frame.children:
        rect, drawn = _instance_frames(child, keys, vertices, geometry)
        rects.append(rect)
        inner += drawn
    for box in frame.boxes:
        rects.append(_box_rect(vertices[keys[box]], geometry))
    x0 = min(r[0] for r in rects) - FRAME_PAD
    y0 = min(r[1] for r in rects) - FRAME_PAD - SMALL_SIZE
    x1 = max(r[0] + r[2] for r in rects) + FRAME_PAD
    y1 = max(r[1] + r[3] for r in rects) + FRAME_PAD
    rect = (x0, y0, x1 - x0, y1 - y0)
    return rect, [InstanceFrame(rect, frame.label), *inner]


def lay_out(plan: Plan, rankdir: str = "TB", depth: int | None = None) -> Scene:
    """Lay the network out: boxes with the same label lines as the other formats, edges
    labelled with tensor shapes, branches side by side and merges below them, block instances
    framed; with ``depth``, deeper instances are folded into one box."""
    if rankdir not in RANKDIRS:
        raise ValueError(f"rankdir must be one of {RANKDIRS}, got {rankdir!r}")
    horizontal = rankdir == "LR"
    picture = diagram(plan, depth)
    layout = _build(picture, horizontal)
    _order_layers(layout)
    _position(layout)
    vs = layout.vertices
    shape_of = {path.chain[0]: path.label for path in layout.paths}

    heading = picture.title
    heading_width = text_width(heading, TITLE_SIZE)
    heading_room = TITLE_SIZE + 16.0
    # along the layer axis each layer is as deep as its deepest box, then a band holds the
    # shapes of the tensors leaving its boxes, then edges bend towards the next layer
    starts, depths, bands = [], [], []
    along = MARGIN + (0.0 if horizontal else heading_room)
    for layer in layout.layers:
        feeding = [k for k in layer if k in shape_of]
        band = 0.0
        if feeding and horizontal:
            band = max(text_width(shape_of[k], SMALL_SIZE) for k in feeding) + 2 * LABEL_PAD + 7
        elif feeding:
            band = LINE_HEIGHT + 2 * LABEL_PAD + 4.0
        lane_change = max((abs(vs[k].pos - vs[d].pos) for k in layer for d in vs[k].down),
                          default=0.0)
        starts.append(along)
        depths.append(max(vs[k].depth for k in layer))
        bands.append(band)
        along += depths[-1] + band + min(MAX_BEND_ZONE, max(BEND_ZONE, BEND_SLOPE * lane_change))
    along += MARGIN - BEND_ZONE
    geometry = _Geometry(_Frame(horizontal), starts, depths, bands)

    low = min(v.pos - v.breadth / 2 for v in vs)
    high = max(v.pos + v.breadth / 2 for v in vs)
    across = high - low + 2 * MARGIN
    shift = MARGIN - low
    if horizontal:
        shift += heading_room
        across += heading_room
        width, height = max(along, heading_width + 2 * MARGIN), across
    else:
        if heading_width + 2 * MARGIN > across:
            shift += (heading_width + 2 * MARGIN - across) / 2
            across = heading_width + 2 * MARGIN
        width, height = across, along
    for vertex in vs:
        vertex.pos += shift

    output = list(picture.boxes).index(picture.output)
    keys = {box: i for i, box in enumerate(picture.boxes)}
    frames = [drawn for frame in picture.clusters
              for drawn in _instance_frames(frame, keys, vs, geometry)[1]]
    ports = {v.key: _ports(layout, v) for v in vs if v.label is not None and v.up}
    edges = [_edge_steps(layout, geometry, path, ports[path.chain[-1]])
             for path in layout.paths]
    shapes = [_shape_label(vs[key], text, geometry) for key, text in shape_of.items()]
    boxes = [Box(v.key, _box_rect(v, geometry), v.label, v.key == output)
             for v in vs if v.label is not None]
    heading_at = (width / 2 if not horizontal else MARGIN, MARGIN + TITLE_SIZE)
    return Scene(width, height, horizontal, heading, heading_at, frames, edges, shapes, boxes)


# a horizontal drawing wider than this (in px, about four screens) folds block instances into
# boxes until it fits: unfolded, ResNet-34 from left to right is 36,000 px wide and 420 high
READABLE_WIDTH = 8000.0


def readable_depth(plan: Plan, rankdir: str = "LR") -> int | None:
    """The depth to draw ``plan`` at so that a horizontal drawing stays about
    :data:`READABLE_WIDTH` wide: the deepest nesting of block instances that fits, else the
    top level; None when the whole network fits, for a vertical drawing, or when the network
    has no block instance to fold."""
    if rankdir != "LR" or lay_out(plan, rankdir).width <= READABLE_WIDTH:
        return None
    nesting = max((len(chain) for chain in plan.chains.values()), default=0)
    for depth in range(nesting, 0, -1):
        if lay_out(plan, rankdir, depth).width <= READABLE_WIDTH:
            return depth
    return 1 if nesting else None


def _point(point: Point) -> str:
    return f"{_fmt(point[0])},{_fmt(point[1])}"


def _path_data(steps: list[Step]) -> str:
    return " ".join(step.kind + " ".join(_point(p) for p in step.points) for step in steps)


def _text(x: float, y: float, content: str, **attributes: str) -> str:
    extra = "".join(f' {name.rstrip("_").replace("_", "-")}="{value}"'
                    for name, value in attributes.items())
    return f'<text x="{_fmt(x)}" y="{_fmt(y)}"{extra}>{escape(content)}</text>'


def _node_svg(box: Box) -> str:
    label = box.label
    x, y, width, height = box.rect
    fill, border = label.colors
    stroke = "2.6" if box.is_output else "1.2"
    parts = [f'<g class="node" id="node-{box.key}">',
             f"<title>{escape(label.title)}</title>",
             f'<rect x="{_fmt(x)}" y="{_fmt(y)}" width="{_fmt(width)}" height="{_fmt(height)}" '
             f'rx="6" fill="{fill}" stroke="{border}" stroke-width="{stroke}"/>']
    centre = x + width / 2
    # a 12 px font in a 16 px line: the baseline sits about 12 px below the line's top
    baseline = y + PAD_Y + 12.0
    parts.append(_text(centre, baseline, label.title, text_anchor="middle",
                       font_weight="bold", fill="#111111"))
    for i, line in enumerate(label.details, start=1):
        parts.append(_text(centre, baseline + i * LINE_HEIGHT, line, text_anchor="middle",
                           fill="#222222" if i > 1 else border))
    parts.append("</g>")
    return "\n".join(parts)


def _shape_label_svg(shape: ShapeLabel) -> str:
    """On white, so the edge line does not cross the text."""
    (x, y), (width, height) = shape.centre, shape.size
    return (f'<g class="shape">'
            f'<rect x="{_fmt(x - width / 2)}" y="{_fmt(y - height / 2)}" width="{_fmt(width)}" '
            f'height="{_fmt(height)}" rx="3" fill="#ffffff" fill-opacity="0.95"/>'
            + _text(x, y + SMALL_SIZE * 0.36, shape.text, text_anchor="middle",
                    font_size=_fmt(SMALL_SIZE), fill="#333333")
            + "</g>")


def _frame_svg(frame: InstanceFrame) -> list[str]:
    """Dashed, its label in the top-left corner."""
    x0, y0, width, height = frame.rect
    return [f'<g class="instance"><rect x="{_fmt(x0)}" y="{_fmt(y0)}" width="{_fmt(width)}" '
            f'height="{_fmt(height)}" rx="8" fill="none" stroke="{FRAME_COLOR}" '
            f'stroke-dasharray="5 3" stroke-width="1"/>',
            _text(x0 + 6, y0 + SMALL_SIZE + 2, frame.label, font_size=_fmt(SMALL_SIZE),
                  fill=FRAME_COLOR) + "</g>"]


def to_svg(plan: Plan, rankdir: str = "TB", depth: int | None = None) -> str:
    """The network as a standalone SVG document, drawn without Graphviz (see ``lay_out``)."""
    scene = lay_out(plan, rankdir, depth)
    width, height, horizontal = scene.width, scene.height, scene.horizontal
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_fmt(width)}" '
        f'height="{_fmt(height)}" viewBox="0 0 {_fmt(width)} {_fmt(height)}" '
        f'font-family="{FONT}" font-size="{_fmt(FONT_SIZE)}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" markerUnits="userSpaceOnUse" orient="auto">'
        f'<path d="M0,0 L10,5 L0,10 z" fill="{EDGE_COLOR}"/></marker></defs>',
        '<rect width="100%" height="100%" fill="#ffffff"/>',
        _text(*scene.heading_at, scene.heading,
              text_anchor="middle" if not horizontal else "start", class_="title",
              font_size=_fmt(TITLE_SIZE), font_weight="bold", fill="#111111"),
    ]
    for frame in scene.frames:
        parts += _frame_svg(frame)
    for steps in scene.edges:
        parts.append(f'<path class="edge" d="{_path_data(steps)}" fill="none" '
                     f'stroke="{EDGE_COLOR}" stroke-width="1.3" marker-end="url(#arrow)"/>')
    parts += [_shape_label_svg(shape) for shape in scene.shapes]
    parts += [_node_svg(box) for box in scene.boxes]
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
