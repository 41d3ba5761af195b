"""Where each node's module lives in a PyTorch module tree, and the node ids that cannot.

A node with parameters is a module at the path of its id split at the dots, so node
``layer1.0.conv1`` is ``model.layer1[0].conv1`` (held in nested containers) and its
state_dict keys are netspec's parameter keys; a learned tensor is a parameter at its path
(``encoder.pos_embedding`` is the attribute ``pos_embedding`` of ``model.encoder``). Some
ids cannot be module paths: an empty part (``a..b``), a part that PyTorch itself uses as an
attribute (``forward``, ``train``, ``state_dict``, ...), or a module that would have to hold
another node's module (``conv`` and ``conv.extra``). Both the torch engine and ``netspec
export`` refuse such specs with one message naming every such node, so a rename is all it
takes.
"""

from __future__ import annotations

from collections.abc import Iterable

from netspec.common.errors import NetspecError
from netspec.plan.compiler import Plan, PlanNode

# the attribute the engine's module keeps its program under; no node may take its name
PROGRAM_ATTRIBUTE = "_netspec_program"


def layer_nodes(plan: Plan) -> list[PlanNode]:
    """The nodes that become modules: those with parameters or buffers."""
    return [node for node in plan.nodes.values() if node.param_specs or node.buffer_specs]


def reserved_names() -> frozenset[str]:
    """Names a module part may not take: attributes of PyTorch's containers."""
    from torch import nn

    return frozenset(dir(nn.ModuleDict)) | frozenset(dir(nn.Module())) | {PROGRAM_ATTRIBUTE}


def path_problems(node_ids: Iterable[str]) -> list[str]:
    """A sentence for every node id (of nodes with parameters) that cannot be a module path."""
    ids = list(node_ids)
    reserved = reserved_names()
    problems = []
    taken = set(ids)
    for node_id in ids:
        parts = node_id.split(".")
        if any(part == "" for part in parts):
            problems.append(f"node {node_id!r}: an empty part between dots cannot name a "
                            f"PyTorch module")
            continue
        clash = next((part for part in parts if part in reserved), None)
        if clash is not None:
            problems.append(f"node {node_id!r}: {clash!r} is an attribute of PyTorch modules "
                            f"and cannot name one")
            continue
        owner = next((".".join(parts[:k]) for k in range(1, len(parts))
                      if ".".join(parts[:k]) in taken), None)
        if owner is not None:
            problems.append(f"node {node_id!r}: its module would live inside node "
                            f"{owner!r}'s module, which holds parameters")
    return problems


def check_module_paths(plan: Plan, what: str) -> None:
    """Raise one NetspecError listing every node whose id cannot be a module path."""
    problems = path_problems(node.id for node in layer_nodes(plan))
    if problems:
        listed = "; ".join(problems)
        raise NetspecError(f"{what}: {len(problems)} node id(s) cannot be PyTorch module "
                           f"paths: {listed}; rename them in the spec")
