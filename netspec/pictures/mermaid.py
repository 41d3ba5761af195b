"""Mermaid flowchart text of a compiled network (code-hosting sites render it in Markdown).

Node names are ``n0, n1, ...``: Mermaid ids cannot hold arbitrary text and words such as
``end`` are keywords. Label text is written with Mermaid's ``#code;`` entities for every
character that its parser, its HTML labels or its Markdown labels would otherwise interpret.
"""

from __future__ import annotations

import json
import re

from netspec.compiler import Plan
from netspec.diagram_formats import RANKDIRS
from netspec.pictures import edges, node_label, palette, title

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


def to_mermaid(plan: Plan, rankdir: str = "TB") -> str:
    """The network as a Mermaid flowchart: one box per node (id in bold, then op,
    hyper-parameters, output shape, parameters), edges labelled with tensor shapes."""
    if rankdir not in RANKDIRS:
        raise ValueError(f"rankdir must be one of {RANKDIRS}, got {rankdir!r}")
    names = {node_id: f"n{index}" for index, node_id in enumerate(plan.nodes)}
    # a JSON string is a valid YAML double-quoted scalar, so any name survives the front matter
    out = ["---", f"title: {json.dumps(title(plan), ensure_ascii=False)}", "---",
           f"flowchart {rankdir}"]
    members: dict[str, list[str]] = {}
    for node_id, node in plan.nodes.items():
        label = node_label(node)
        text = "<br/>".join([f"<b>{escape(label.title)}</b>",
                             *(escape(line) for line in label.details)])
        out.append(f'  {names[node_id]}["{text}"]')
        members.setdefault(label.family, []).append(names[node_id])
    for edge in edges(plan):
        out.append(f'  {names[edge.source]} -->|"{escape(edge.label)}"| {names[edge.target]}')
    colors = palette()
    for name, nodes in members.items():
        fill, border = colors[name]
        out.append(f"  classDef {name} fill:{fill},stroke:{border},color:#111111")
        out.append(f"  class {','.join(nodes)} {name}")
    out.append(f"  style {names[plan.output]} stroke-width:3px")
    return "\n".join(out) + "\n"
