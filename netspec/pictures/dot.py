"""Graphviz DOT text of a compiled network.

Node names in the DOT text are ``n0, n1, ...`` in topological order: DOT's quoted strings
cannot hold every string a TOML key can (a trailing backslash, for one), so the real id lives
in the HTML-like label, where escaping is complete.
"""

from __future__ import annotations

from html import escape

from netspec.common.diagram_formats import RANKDIRS
from netspec.pictures import Cluster, diagram, printable
from netspec.plan.compiler import Plan


def _html(text: str) -> str:
    return escape(text, quote=True)


def _node_statement(name: str, lines: tuple[str, ...], colors: tuple[str, str],
                    is_output: bool) -> str:
    fill, border = colors
    head, op, *details = lines
    # one table row per line: with plain <BR/> breaks Graphviz packs lines so tightly that
    # an underscore in the id lands on the line below
    rows = [f"<TR><TD><B>{_html(head)}</B></TD></TR>",
            f'<TR><TD><FONT POINT-SIZE="10" COLOR="{border}">{_html(op)}</FONT></TD></TR>']
    rows += [f'<TR><TD><FONT POINT-SIZE="10" COLOR="#333333">{_html(line)}</FONT></TD></TR>'
             for line in details]
    body = ('<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">'
            + "".join(rows) + "</TABLE>")
    width = ', penwidth=2.4' if is_output else ""
    return f'  {name} [label=<{body}>, fillcolor="{fill}", color="{border}"{width}];'


def to_dot(plan: Plan, rankdir: str = "TB", depth: int | None = None) -> str:
    """The network as a DOT digraph: one box per node, one edge per input, edges labelled
    with the shape of the tensor they carry; the output node has a thicker border. Block
    instances are clusters; with ``depth``, deeper instances are folded into one box."""
    if rankdir not in RANKDIRS:
        raise ValueError(f"rankdir must be one of {RANKDIRS}, got {rankdir!r}")
    picture = diagram(plan, depth)
    names = {box: f"n{index}" for index, box in enumerate(picture.boxes)}
    out = [
        "digraph netspec {",
        f'  graph [rankdir={rankdir}, label=<<B>{_html(picture.title)}</B>>, labelloc=t, '
        'fontname="Helvetica", fontsize=14, nodesep=0.35, ranksep=0.45];',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=12, '
        'margin="0.18,0.08"];',
        '  edge [color="#56627a", arrowsize=0.7, fontname="Helvetica", fontsize=10, '
        'fontcolor="#222222"];',
    ]
    for box, label in picture.boxes.items():
        out.append(_node_statement(names[box], label.lines, label.colors, box == picture.output))
    counter = iter(range(len(picture.boxes) * 2 + 1))

    def cluster(frame: Cluster, indent: str) -> None:
        out.append(f"{indent}subgraph cluster_{next(counter)} {{")
        out.append(f'{indent}  label=<{_html(printable(frame.label))}>; labeljust=l; '
                   f'style="rounded,dashed"; color="#8a6d2f"; fontname="Helvetica"; '
                   f'fontsize=11;')
        out.extend(f"{indent}  {names[box]};" for box in frame.boxes)
        for child in frame.children:
            cluster(child, indent + "  ")
        out.append(f"{indent}}}")

    for frame in picture.clusters:
        cluster(frame, "  ")
    for edge in picture.edges:
        out.append(f'  {names[edge.source]} -> {names[edge.target]} '
                   f'[label=<{_html(edge.label)}>];')
    out.append("}")
    return "\n".join(out) + "\n"
