"""netspec's own PNG diagram: the layout of ``netspec.pictures.svg`` rasterised with Pillow.

Pillow is an optional extra (the ``plot`` extra), imported when a picture is
drawn. The text uses Pillow's bundled default font, never a system font, so the picture looks
the same on every machine; a line that the font sets wider than its box is set smaller.
That font lacks the multiplication sign the labels use ("5×5"), so it is drawn as an x.
"""

from __future__ import annotations

import io
import math
from typing import Any

from netspec.common.errors import NetspecError
from netspec.common.extras import install_line
from netspec.pictures.svg import (
    EDGE_COLOR,
    FONT_SIZE,
    FRAME_COLOR,
    LINE_HEIGHT,
    PAD_X,
    PAD_Y,
    SMALL_SIZE,
    TITLE_SIZE,
    Point,
    Rect,
    Scene,
    Step,
    lay_out,
)
from netspec.plan.compiler import Plan

SCALE = 2.0
# a bound on the picture (about 400 MB of RGB): a huge network is drawn at a smaller scale
MAX_PIXELS = 128_000_000
CURVE_SAMPLES = 16
ARROW_LENGTH, ARROW_WIDTH = 7.0, 7.0
DASH, GAP = 5.0, 3.0
SMALLEST_FONT = 6.0
MISSING_GLYPHS = str.maketrans({"×": "x"})


def _pillow() -> tuple[Any, Any, Any]:
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        raise NetspecError("writing .png without Graphviz needs Pillow, which is not "
                           f"installed: {install_line('plot')}") from None
    return Image, ImageDraw, ImageFont


class _Fonts:
    """Pillow's default font at each size asked for (a scalable one from Pillow 10.1 on,
    the fixed bitmap font before)."""

    def __init__(self, image_font: Any) -> None:
        self._module = image_font
        self._cache: dict[float, Any] = {}

    def get(self, size: float) -> Any:
        key = round(size, 1)
        if key not in self._cache:
            try:
                self._cache[key] = self._module.load_default(size=key)
            except TypeError:  # Pillow < 10.1: no size argument
                self._cache[key] = self._module.load_default()
        return self._cache[key]

    def scalable(self, font: Any) -> bool:
        return isinstance(font, self._module.FreeTypeFont)


def _sample(start: Point, steps: list[Step]) -> list[Point]:
    """The points of an edge's line, each Bézier curve as a short polyline."""
    points = [start]
    for step in steps:
        if step.kind == "C":
            (x0, y0), (x1, y1), (x2, y2), (x3, y3) = points[-1], *step.points
            for i in range(1, CURVE_SAMPLES + 1):
                t = i / CURVE_SAMPLES
                a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3
                points.append((a * x0 + b * x1 + c * x2 + d * x3,
                               a * y0 + b * y1 + c * y2 + d * y3))
        else:
            points.append(step.points[-1])
    return points


def _arrow_head(points: list[Point]) -> list[Point]:
    """A triangle whose tip is the line's last point, pointing along its last piece."""
    tip = points[-1]
    base = next((p for p in reversed(points[:-1]) if p != tip), (tip[0], tip[1] - 1.0))
    dx, dy = tip[0] - base[0], tip[1] - base[1]
    length = math.hypot(dx, dy)
    ux, uy = dx / length, dy / length
    back = (tip[0] - ux * ARROW_LENGTH, tip[1] - uy * ARROW_LENGTH)
    half = ARROW_WIDTH / 2
    return [tip, (back[0] - uy * half, back[1] + ux * half),
            (back[0] + uy * half, back[1] - ux * half)]


def _dashes(start: Point, end: Point) -> list[tuple[Point, Point]]:
    length = math.hypot(end[0] - start[0], end[1] - start[1])
    out = []
    at = 0.0
    while at < length:
        stop = min(at + DASH, length)
        out.append(((start[0] + (end[0] - start[0]) * at / length,
                     start[1] + (end[1] - start[1]) * at / length),
                    (start[0] + (end[0] - start[0]) * stop / length,
                     start[1] + (end[1] - start[1]) * stop / length)))
        at += DASH + GAP
    return out


class _Painter:
    """Draws a scene's pieces in page units, scaled to pixels."""

    def __init__(self, draw: Any, fonts: _Fonts, scale: float) -> None:
        self.draw, self.fonts, self.scale = draw, fonts, scale

    def xy(self, point: Point) -> tuple[float, float]:
        return point[0] * self.scale, point[1] * self.scale

    def box(self, rect: Rect) -> list[float]:
        x, y, width, height = rect
        return [x * self.scale, y * self.scale, (x + width) * self.scale,
                (y + height) * self.scale]

    def width(self, units: float) -> int:
        return max(1, round(units * self.scale))

    def text(self, point: Point, content: str, size: float, fill: str, anchor: str = "ms",
             bold: bool = False, room: float | None = None) -> None:
        """``content`` with ``anchor`` (Pillow's: "ms" middle-baseline, "ls" left-baseline) at
        ``point``; with ``room``, set smaller until it fits that width."""
        content = content.translate(MISSING_GLYPHS)
        font = self.fonts.get(size * self.scale)
        if room is not None:
            while (self.draw.textlength(content, font=font) > room * self.scale
                   and size > SMALLEST_FONT):
                size -= 0.5
                font = self.fonts.get(size * self.scale)
        x, y = self.xy(point)
        if self.fonts.scalable(font):
            stroke = max(1, round(self.scale / 2)) if bold else 0
            self.draw.text((x, y), content, font=font, fill=fill, anchor=anchor,
                           stroke_width=stroke, stroke_fill=fill)
            return
        # a bitmap font has no anchors: put the bottom of its box on the baseline by hand
        left, _, right, bottom = self.draw.textbbox((0, 0), content, font=font)
        x -= (right - left) / 2 if anchor[0] == "m" else 0
        self.draw.text((x, y - bottom), content, font=font, fill=fill)

    def dashed_rounded(self, rect: Rect, radius: float, colour: str) -> None:
        x0, y0, x1, y1 = rect[0], rect[1], rect[0] + rect[2], rect[1] + rect[3]
        sides = [((x0 + radius, y0), (x1 - radius, y0)), ((x1, y0 + radius), (x1, y1 - radius)),
                 ((x1 - radius, y1), (x0 + radius, y1)), ((x0, y1 - radius), (x0, y0 + radius))]
        for start, end in sides:
            for a, b in _dashes(start, end):
                self.draw.line([self.xy(a), self.xy(b)], fill=colour, width=self.width(1.0))
        corners = [(x1 - 2 * radius, y0, 270), (x1 - 2 * radius, y1 - 2 * radius, 0),
                   (x0, y1 - 2 * radius, 90), (x0, y0, 180)]
        for cx, cy, angle in corners:
            self.draw.arc(self.box((cx, cy, 2 * radius, 2 * radius)), angle, angle + 90,
                          fill=colour, width=self.width(1.0))


def render_png(scene: Scene) -> bytes:
    """A laid-out scene as PNG bytes, on white, at ``SCALE`` pixels per unit (less for a
    picture that would be huge)."""
    image_module, draw_module, font_module = _pillow()
    scale = min(SCALE, math.sqrt(MAX_PIXELS / max(1.0, scene.width * scene.height)))
    size = (max(1, math.ceil(scene.width * scale)), max(1, math.ceil(scene.height * scale)))
    image = image_module.new("RGB", size, "#ffffff")
    paint = _Painter(draw_module.Draw(image), _Fonts(font_module), scale)

    paint.text(scene.heading_at, scene.heading, TITLE_SIZE, "#111111",
               anchor="ls" if scene.horizontal else "ms", bold=True)
    for frame in scene.frames:
        paint.dashed_rounded(frame.rect, 8.0, FRAME_COLOR)
        paint.text((frame.rect[0] + 6, frame.rect[1] + SMALL_SIZE + 2), frame.label,
                   SMALL_SIZE, FRAME_COLOR, anchor="ls")
    for steps in scene.edges:
        points = _sample(steps[0].points[0], steps[1:])
        paint.draw.line([paint.xy(p) for p in points], fill=EDGE_COLOR,
                        width=paint.width(1.3), joint="curve")
        paint.draw.polygon([paint.xy(p) for p in _arrow_head(points)], fill=EDGE_COLOR)
    for shape in scene.shapes:
        (x, y), (width, height) = shape.centre, shape.size
        paint.draw.rounded_rectangle(
            paint.box((x - width / 2, y - height / 2, width, height)), radius=3 * scale,
            fill="#ffffff")
        paint.text((x, y + SMALL_SIZE * 0.36), shape.text, SMALL_SIZE, "#333333",
                   room=width)
    for box in scene.boxes:
        fill, border = box.label.colors
        paint.draw.rounded_rectangle(paint.box(box.rect), radius=6 * scale, fill=fill,
                                     outline=border,
                                     width=paint.width(2.6 if box.is_output else 1.2))
        x, y, width, _ = box.rect
        centre, baseline, room = x + width / 2, y + PAD_Y + 12.0, width - 2 * PAD_X + 4
        paint.text((centre, baseline), box.label.title, FONT_SIZE, "#111111", bold=True,
                   room=room)
        for i, line in enumerate(box.label.details, start=1):
            paint.text((centre, baseline + i * LINE_HEIGHT), line, FONT_SIZE,
                       "#222222" if i > 1 else border, room=room)

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def to_png(plan: Plan, rankdir: str = "TB", depth: int | None = None) -> bytes:
    """The network as PNG bytes, drawn without Graphviz: the same picture as ``to_svg``."""
    _pillow()  # say what to install before the layout work
    return render_png(lay_out(plan, rankdir, depth))
