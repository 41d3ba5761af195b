"""Mermaid flowchart text of a compiled network (code-hosting sites render it in Markdown).

Node names are ``n0, n1, ...``: Mermaid ids cannot hold arbitrary text and words such as
``end`` are keywords. Label text is written with Mermaid's ``#code;`` entities for every
character that its parser, its HTML labels or its Markdown labels would otherwise interpret.
"""

from __future__ import annotations

import json
import re

from netspec.common.diagram_formats import RANKDIRS
from netspec.pictures import Cluster, diagram, palette, printable
from netspec.plan.compiler import Plan

_ENTITIES = {'"': "#quot;", "#": "#35;", "&": "#amp;", "<": "#lt;", ">": "#gt;",
             "*": "#42;", "`": "#96;", "|": "#124;", "[": "#91;", "]": "#93;", "\\": "#92;"}
# an underscore between two word characters is never Markdown emphasis, elsewhere it may be
_SPECIAL = re.compile(r'["#&<>*`|\[\]\\]|(?<!\w)_|_(?!\w)')


def escape(text: str) -> str:
    """Text safe inside a quoted Mermaid label.

    >>> escape('a "b" <c> #1 block_1 _x_')
    'a #quot;b#quot; #lt;c#gt; #35;1 block_1 #95;x#95;'
    """
    return _SPECIAL.sub(lambda m: _ENTITIES.get(m.group(), "#95;"), text)


def to_mermaid(plan: Plan, rankdir: str = "TB", depth: int | None = None) -> str:
    """The network as a Mermaid flowchart: one box per node (id in bold, then op,
    hyper-parameters, output shape, parameters), edges labelled with tensor shapes, block
    instances as subgraphs; with ``depth``, deeper instances are folded into one box."""
    if rankdir not in RANKDIRS:
        raise ValueError(f"rankdir must be one of {RANKDIRS}, got {rankdir!r}")
    picture = diagram(plan, depth)
    names = {box: f"n{index}" for index, box in enumerate(picture.boxes)}
    # a JSON string is a valid YAML double-quoted scalar, so any name survives the front matter
    out = ["---", f"title: {json.dumps(picture.title, ensure_ascii=False)}", "---",
           f"flowchart {rankdir}"]
    members: dict[str, list[str]] = {}
    for box, label in picture.boxes.items():
        text = "<br/>".join([f"<b>{escape(label.title)}</b>",
                             *(escape(line) for line in label.details)])
        out.append(f'  {names[box]}["{text}"]')
        members.setdefault(label.family, []).append(names[box])
    counter = iter(range(len(picture.boxes) * 2 + 1))

    def subgraph(frame: Cluster, indent: str) -> None:
        out.append(f'{indent}subgraph c{next(counter)}["{escape(printable(frame.label))}"]')
        out.extend(f"{indent}  {names[box]}" for box in frame.boxes)
        for child in frame.children:
            subgraph(child, indent + "  ")
        out.append(f"{indent}end")

    for frame in picture.clusters:
        subgraph(frame, "  ")
    for edge in picture.edges:
        out.append(f'  {names[edge.source]} -->|"{escape(edge.label)}"| {names[edge.target]}')
    colors = palette()
    for name, nodes in members.items():
        fill, border = colors[name]
        out.append(f"  classDef {name} fill:{fill},stroke:{border},color:#111111")
        out.append(f"  class {','.join(nodes)} {name}")
    out.append(f"  style {names[picture.output]} stroke-width:3px")
    return "\n".join(out) + "\n"
