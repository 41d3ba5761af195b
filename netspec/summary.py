"""The per-node summary of a compiled (or partly compiled) network, as table rows."""

from __future__ import annotations

from collections.abc import Mapping

from netspec.compiler import Plan, PlanNode
from netspec.shapes import format_shape
from netspec.tables import Column, human_bytes, human_count, render_table

BYTES_PER_VALUE = 4


def summary_table(nodes: Mapping[str, PlanNode], batch_size: int = 1,
                  failed: Mapping[str, str] | None = None) -> str:
    """Node, op, inputs, output shape, params, FLOPs and activation memory at ``batch_size``,
    with each node's share of the total FLOPs. ``failed`` nodes are listed last, marked."""
    total_params = sum(n.n_params for n in nodes.values())
    total_flops = sum(n.flops for n in nodes.values())
    total_activations = sum(n.activation_bytes for n in nodes.values()) * batch_size
    rows = []
    for node in nodes.values():
        share = 100.0 * node.flops / total_flops if total_flops else 0.0
        rows.append([node.id, node.op_name, ", ".join(node.inputs) or "-",
                     format_shape(node.shape), f"{node.n_params:,}",
                     human_count(node.flops * batch_size), f"{share:.1f}%",
                     human_bytes(node.activation_bytes * batch_size)])
    for node_id, reason in (failed or {}).items():
        rows.append([node_id, "", "", "FAILED" if "did not compile" not in reason else "-",
                     "", "", "", ""])
    param_values = sum(n.n_param_values for n in nodes.values())
    footer = [["total", "", "", "", f"{total_params:,}", human_count(total_flops * batch_size),
               "100%", human_bytes(total_activations)],
              ["param memory", "", "", "", human_bytes(param_values * BYTES_PER_VALUE),
               "", "", ""]]
    columns = [Column("node", "<"), Column("op", "<"), Column("inputs", "<"),
               Column("output shape", "<"), Column("params"),
               Column(f"FLOPs@{batch_size}"), Column("share"), Column(f"act@{batch_size}")]
    return render_table(columns, rows, footer)


def plan_summary(plan: Plan, batch_size: int = 1) -> str:
    return summary_table(plan.nodes, batch_size)
