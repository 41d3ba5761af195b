"""The per-node summary of a compiled (or partly compiled) network, as table rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from netspec.common.tables import Column, human_bytes, human_count, render_table
from netspec.lang.hierarchy import Container, Totals, container_totals
from netspec.ops.shapes import format_shape
from netspec.plan.compiler import (
    BYTES_PER_VALUE,
    UPSTREAM_FAILED,
    CompileError,
    PlanNode,
    spec_chains,
)

FAILED = "FAILED"
SKIPPED = "not compiled"


def summary_table(nodes: Mapping[str, PlanNode], batch_size: int = 1,
                  failed: Mapping[str, Sequence[str]] | None = None,
                  order: Sequence[str] | None = None,
                  chains: Mapping[str, tuple[Container, ...]] | None = None,
                  depth: int | None = None) -> str:
    """Node, op, inputs, output shape, params, FLOPs and activation memory at ``batch_size``,
    with each node's share of the total FLOPs.

    ``failed`` maps the nodes that did not compile to their (op, inputs, mark) cells; they are
    placed by ``order`` (default: after the compiled nodes) and totals count compiled nodes only.
    ``chains`` gives each node's block instances: an instance gets a row with its subtotals
    and its nodes are indented under it; below ``depth`` levels instances stay folded.
    """
    failed = failed or {}
    chains = chains or {}
    total_params = sum(n.n_params for n in nodes.values())
    total_flops = sum(n.flops for n in nodes.values())
    total_activations = sum(n.activation_bytes for n in nodes.values()) * batch_size

    def share(flops: int) -> str:
        return f"{100.0 * flops / total_flops if total_flops else 0.0:.1f}%"

    subtotals = container_totals(nodes, chains)
    rows = []
    opened: tuple[Container, ...] = ()
    for node_id in order if order is not None else [*nodes, *failed]:
        chain = chains.get(node_id, ())
        shown = chain if depth is None else chain[:depth]
        common = 0
        while (common < min(len(opened), len(shown))
               and opened[common].id == shown[common].id):
            common += 1
        for level, container in enumerate(shown[common:], start=common):
            totals = subtotals.get(container.id, Totals())
            output = nodes.get(container.output)
            rows.append(["  " * level + container.id, container.kind, "",
                         format_shape(output.shape) if output else "", f"{totals.params:,}",
                         human_count(totals.flops * batch_size), share(totals.flops),
                         human_bytes(totals.activation_bytes * batch_size)])
        opened = shown
        if depth is not None and len(chain) >= depth:
            continue  # folded into its container's row: rows deeper than depth do not show
        indent = "  " * len(chain)
        if node_id in nodes:
            node = nodes[node_id]
            rows.append([indent + node.id, node.op_name, ", ".join(node.inputs) or "-",
                         format_shape(node.shape), f"{node.n_params:,}",
                         human_count(node.flops * batch_size), share(node.flops),
                         human_bytes(node.activation_bytes * batch_size)])
        elif node_id in failed:
            op, inputs, mark = failed[node_id]
            rows.append([indent + node_id, op, inputs or "-", mark, "", "", "", ""])
    param_values = sum(n.n_param_values for n in nodes.values())
    footer = [["total", "", "", "", f"{total_params:,}", human_count(total_flops * batch_size),
               "100%", human_bytes(total_activations)],
              ["param memory", "", "", "", human_bytes(param_values * BYTES_PER_VALUE),
               "", "", ""]]
    columns = [Column("node", "<"), Column("op", "<"), Column("inputs", "<"),
               Column("output shape", "<"), Column("params"),
               Column(f"FLOPs@{batch_size}"), Column("share"), Column(f"act@{batch_size}")]
    return render_table(columns, rows, footer)


def partial_summary(error: CompileError, batch_size: int = 1, depth: int | None = None) -> str:
    """The summary of a spec that failed to compile: every node in topological order, the
    ones that failed marked FAILED and the ones after them marked as not compiled."""
    spec = error.spec
    failed = {}
    for node_id, reason in error.failed.items():
        mark = SKIPPED if reason == UPSTREAM_FAILED else FAILED
        # a node that failed validation has no resolved inputs, and maybe no valid op
        op = spec.nodes[node_id].op if node_id in spec.nodes else error.checked.invalid[node_id]
        failed[node_id] = (op, ", ".join(spec.inputs.get(node_id, ())), mark)
    chains = spec_chains(spec, error.order or [*error.partial, *failed])
    return summary_table(error.partial, batch_size, failed, error.order, chains, depth)
