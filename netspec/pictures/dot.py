"""Graphviz DOT text of a compiled network.

Node names in the DOT text are ``n0, n1, ...`` in topological order: DOT's quoted strings
cannot hold every string a TOML key can (a trailing backslash, for one), so the real id lives
in the HTML-like label, where escaping is complete.
"""

from __future__ import annotations

from html import escape

from netspec.compiler import Plan
from netspec.diagram_formats import RANKDIRS
from netspec.pictures import edges, node_label, title


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


def to_dot(plan: Plan, rankdir: str = "TB") -> str:
    """The network as a DOT digraph: one box per node, one edge per input, edges labelled
    with the shape of the tensor they carry; the output node has a thicker border."""
    if rankdir not in RANKDIRS:
        raise ValueError(f"rankdir must be one of {RANKDIRS}, got {rankdir!r}")
    names = {node_id: f"n{index}" for index, node_id in enumerate(plan.nodes)}
    out = [
        "digraph netspec {",
        f'  graph [rankdir={rankdir}, label=<<B>{_html(title(plan))}</B>>, labelloc=t, '
        'fontname="Helvetica", fontsize=14, nodesep=0.35, ranksep=0.45];',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=12, '
        'margin="0.18,0.08"];',
        '  edge [color="#56627a", arrowsize=0.7, fontname="Helvetica", fontsize=10, '
        'fontcolor="#222222"];',
    ]
    for node_id, node in plan.nodes.items():
        label = node_label(node)
        out.append(_node_statement(names[node_id], label.lines, label.colors,
                                   node_id == plan.output))
    for edge in edges(plan):
        out.append(f'  {names[edge.source]} -> {names[edge.target]} '
                   f'[label=<{_html(edge.label)}>];')
    out.append("}")
    return "\n".join(out) + "\n"
