"""Which block instances each node of a plan belongs to, for tables and diagrams that show the
hierarchy (and collapse it to a depth).

A container is a block instance (``layer1.0``) or the group of instances a ``repeat`` made
(``layer1``). A node's chain lists its containers from the outermost in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from netspec.lang.blocks import Instance


@dataclass(frozen=True)
class Container:
    id: str
    block: str
    count: int    # instances in a repeat group; 1 for one instance
    output: str   # the node whose output is the container's
    is_group: bool

    @property
    def kind(self) -> str:
        """``basic`` or ``basic ×2``."""
        return f"{self.block} ×{self.count}" if self.is_group else self.block


def node_chains(node_instances: Mapping[str, str | None],
                instances: Mapping[str, Instance]) -> dict[str, tuple[Container, ...]]:
    """Each node's containers, outermost first (empty for a top-level node)."""
    members: dict[str, list[Instance]] = {}
    for instance in instances.values():
        if instance.group is not None:
            members.setdefault(instance.group, []).append(instance)
    containers: dict[str, Container] = {}
    for path, instance in instances.items():
        containers[path] = Container(path, instance.block, 1, instance.output, False)
    for group, grouped in members.items():
        containers[group] = Container(group, grouped[0].block, len(grouped), grouped[-1].output,
                                      True)
    chains: dict[str, tuple[Container, ...]] = {}
    cache: dict[str, tuple[Container, ...]] = {}

    def chain_of(path: str | None) -> tuple[Container, ...]:
        if path is None or path not in instances:
            return ()
        if path not in cache:
            instance = instances[path]
            outer = chain_of(instance.parent)
            group = (containers[instance.group],) if instance.group is not None else ()
            cache[path] = (*outer, *group, containers[path])
        return cache[path]

    for node_id, path in node_instances.items():
        chains[node_id] = chain_of(path)
    return chains


def visible(chain: tuple[Container, ...], depth: int | None) -> Container | None:
    """The container a node is folded into at ``depth`` (1: only top-level rows), or None
    when the node itself shows."""
    if depth is None or len(chain) < depth:
        return None
    return chain[depth - 1]


@dataclass(frozen=True)
class Totals:
    """What the compiled nodes inside a container add up to (activations per sample)."""

    params: int = 0
    flops: int = 0
    activation_bytes: int = 0
    nodes: int = 0


def container_totals(nodes: Mapping[str, Any], chains: Mapping[str, tuple[Container, ...]]
                     ) -> dict[str, Totals]:
    """Every container's totals over the compiled ``nodes`` (plan nodes) inside it."""
    totals: dict[str, Totals] = {}
    for node_id, chain in chains.items():
        node = nodes.get(node_id)
        for container in chain:
            before = totals.get(container.id, Totals())
            totals[container.id] = before if node is None else Totals(
                before.params + node.n_params, before.flops + node.flops,
                before.activation_bytes + node.activation_bytes, before.nodes + 1)
    return totals
