"""``netspec export SPEC -o model.py``: a standalone PyTorch source file for a plan.

The file imports torch only. It holds one ``nn.Module`` class whose modules sit at netspec's
parameter keys (so ``model.pt`` loads with ``strict=True``) and whose ``forward`` follows the
plan node by node, and a docstring with the spec's name, description, shapes and parameter
count.

Every string that comes from the spec (node ids, the network's name and description) is data
in the file: it appears only inside string literals written by :func:`ascii` (printable ASCII,
so no quote, newline or Unicode trick can end the literal), in ``#`` comments written the same
way, or in the docstring, whose text is printable ASCII with backslashes and double quotes
escaped. Python names in the file are netspec's own (``v3``) or node ids that are plain ASCII
identifiers. Before the text is returned, :func:`verify_source` parses it and refuses anything
but the statements and calls this generator writes.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from netspec.atomic import atomic_write_text
from netspec.compiler import Plan
from netspec.errors import NetspecError
from netspec.interchange.torch_ops import TRAINING, Call, Layer, refused_nodes, torch_form
from netspec.interchange.torch_paths import check_module_paths
from netspec.shapes import format_shape

_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_CONSTANTS = ("SPEC_NAME", "INPUT_SHAPES", "OUTPUT_SHAPE", "NORMALISATION")
# names the file itself uses, which no local variable may shadow
_OWN_NAMES = frozenset({"self", "torch", "nn", "F", "super", "getattr", *_CONSTANTS})


def _plain(text: str) -> bool:
    """Whether ``text`` can stand in a docstring or comment as it is."""
    return text.isascii() and text.isprintable() and "\\" not in text and text.strip() == text


def shown(text: str) -> str:
    """A spec string as it appears in prose of the file: as written when plain, else as a
    Python literal (escaped, ASCII, one line)."""
    return text if _plain(text) and text else ascii(text)


def literal(value: Any) -> str:
    """Python source for a plain value of the op table."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return repr(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NetspecError(f"cannot write the non-finite value {value} into Python source")
        return repr(float(value))
    if isinstance(value, str):
        return ascii(value)
    if isinstance(value, (tuple, list)):
        items = ", ".join(literal(v) for v in value)
        return f"({items},)" if isinstance(value, tuple) and len(value) == 1 else \
            (f"({items})" if isinstance(value, tuple) else f"[{items}]")
    raise NetspecError(f"cannot write a {type(value).__name__} into Python source")


def _attribute_safe(name: str) -> bool:
    return bool(_IDENTIFIER.match(name)) and not keyword.iskeyword(name)


def class_name(spec_name: str) -> str:
    """A CamelCase class name from the spec's name (``lenet5`` -> ``Lenet5``); ``Network``
    when the name has no letters or digits to build one from."""
    words = re.findall(r"[A-Za-z0-9]+", spec_name)
    name = "".join(word[:1].upper() + word[1:] for word in words)
    if not name:
        return "Network"
    return name if name[0].isalpha() else f"Net{name}"


@dataclass
class _Container:
    """A module in the tree: a node's layer (``layer``) or a container of others."""

    layer: Layer | None = None
    node_id: str | None = None
    children: dict[str, _Container] = field(default_factory=dict)


def _tree(plan: Plan) -> dict[str, _Container]:
    root: dict[str, _Container] = {}
    for node in plan.nodes.values():
        form = torch_form(node)
        if not isinstance(form, Layer):
            continue
        level = root
        parts = node.id.split(".")
        for part in parts[:-1]:
            level = level.setdefault(part, _Container()).children
        level[parts[-1]] = _Container(layer=form, node_id=node.id)
    return root


def _layer_source(form: Layer) -> str:
    arguments = ", ".join(f"{key}={literal(value)}" for key, value in form.kwargs.items())
    return f"nn.{form.cls}({arguments})"


def _module_source(container: _Container, indent: str) -> str:
    if container.layer is not None:
        return _layer_source(container.layer)
    inner = indent + "    "
    items = "".join(f"{inner}{ascii(name)}: {_module_source(child, inner)},\n"
                    for name, child in container.children.items())
    return f"nn.ModuleDict({{\n{items}{indent}}})"


def _child(parent: str, name: str, in_dict: bool) -> str:
    """Source reaching module ``name`` of ``parent`` (``self`` or a ModuleDict)."""
    if _attribute_safe(name):
        return f"{parent}.{name}"
    return f"{parent}[{ascii(name)}]" if in_dict else f"getattr({parent}, {ascii(name)})"


def _accessor(node_id: str) -> str:
    parts = node_id.split(".")
    expression = _child("self", parts[0], in_dict=False)
    for part in parts[1:]:
        expression = _child(expression, part, in_dict=True)
    return expression


class _Names:
    """Local variable names for node values: the node id when it is a plain identifier that
    nothing else uses, else ``v<position>``."""

    def __init__(self, reserved: set[str]):
        self.used = set(reserved)

    def take(self, node_id: str, position: int) -> str:
        if _attribute_safe(node_id) and node_id not in self.used \
                and not hasattr(builtins, node_id):
            name = node_id
        else:
            name, suffix = f"v{position}", 0
            while name in self.used:
                suffix += 1
                name = f"v{position}_{suffix}"
        self.used.add(name)
        return name


def _docstring(plan: Plan, cls: str, weights_name: str | None) -> str:
    spec = plan.spec
    lines = [f"{shown(plan.name)}: a PyTorch module exported by netspec."]
    if spec.description:
        lines += ["", shown(spec.description)]
    ids = [shown(node_id) for node_id in plan.nodes]
    width = max(len(i) for i in ids + ["node"])
    op_width = max(len(n.op_name) for n in plan.nodes.values())
    shapes = [format_shape(n.shape) for n in plan.nodes.values()]
    shape_width = max(len(s) for s in shapes + ["output shape"])
    lines += ["", f"{'node':<{width}}  {'op':<{op_width}}  {'output shape':<{shape_width}}  "
              "params"]
    for shown_id, node, shape in zip(ids, plan.nodes.values(), shapes):
        lines.append(f"{shown_id:<{width}}  {node.op_name:<{op_width}}  "
                     f"{shape:<{shape_width}}  {node.n_params:,}")
    inputs = ", ".join(f"{shown(i)} (N, {', '.join(map(str, plan.nodes[i].shape))})"
                       for i in plan.inputs)
    output = plan.nodes[plan.output].shape
    lines += ["", f"{plan.total_params:,} trainable parameters. forward() takes {inputs} and "
              f"returns (N, {', '.join(map(str, output))}).",
              f"Usage: model = {cls}(); "
              + (f"model.load_state_dict(torch.load({weights_name!r}, weights_only=True)); "
                 if weights_name else "")
              + "model.eval()"]
    text = "\n".join(line.rstrip() for line in lines)
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"""{escaped}\n"""'


def generate_source(plan: Plan, *, normalisation: tuple[float, float] | None = None,
                    weights_name: str | None = None) -> str:
    """The text of a standalone PyTorch module file for ``plan``.

    ``normalisation`` (mean, std of the training pixels scaled to [0, 1]) is written as the
    constant ``NORMALISATION``; ``weights_name`` is the ``.pt`` file the docstring points at.
    """
    refused = refused_nodes(plan.nodes.values())
    if refused:
        raise NetspecError(f"{plan.name}: cannot export to PyTorch: {'; '.join(refused)}")
    check_module_paths(plan, plan.name)
    cls = class_name(plan.name)
    out = [_docstring(plan, cls, weights_name), "",
           "import torch", "import torch.nn.functional as F", "from torch import nn", "", ""]
    out.append(f"SPEC_NAME = {ascii(plan.name)}")
    shapes = ", ".join(f"{ascii(i)}: {literal(tuple(plan.nodes[i].shape))}"
                       for i in plan.inputs)
    out.append(f"INPUT_SHAPES = {{{shapes}}}")
    out.append(f"OUTPUT_SHAPE = {literal(tuple(plan.nodes[plan.output].shape))}")
    if normalisation is not None:
        mean, std = normalisation
        out.append("# inputs are (pixel / 255 - mean) / std")
        out.append(f"NORMALISATION = {{'mean': {literal(float(mean))}, "
                   f"'std': {literal(float(std))}}}")
    out += ["", "", f"class {cls}(nn.Module):", "    def __init__(self):",
            "        super().__init__()"]
    for name, container in _tree(plan).items():
        module = _module_source(container, "        ")
        if _attribute_safe(name):
            out.append(f"        self.{name} = {module}")
        else:
            out.append(f"        self.add_module({ascii(name)}, {module})")
    for node in plan.nodes.values():
        form = torch_form(node)
        if isinstance(form, Layer):
            for parameter in form.frozen:
                out.append(f"        {_accessor(node.id)}.{parameter}.requires_grad_(False)"
                           f"  # trainable = false")
    names = _Names(_OWN_NAMES | {cls})
    local = {node_id: names.take(node_id, position)
             for position, node_id in enumerate(plan.nodes)}
    arguments = ", ".join(local[i] for i in plan.inputs)
    out += ["", f"    def forward(self, {arguments}):"]
    for node in plan.nodes.values():
        form = torch_form(node)
        if node.op_name == "input":
            continue
        xs = [local[source] for source in node.inputs]
        if isinstance(form, Layer):
            expression = f"{_accessor(node.id)}({xs[0]})"
        else:
            expression = _call_source(form, xs)
        comment = "" if local[node.id] == node.id else f"  # {ascii(node.id)}"
        out.append(f"        {local[node.id]} = {expression}{comment}")
    out.append(f"        return {local[plan.output]}")
    source = "\n".join(out) + "\n"
    verify_source(source)
    return source


def _call_source(form: Call, xs: list[str]) -> str:
    if form.inputs == "sum":
        return " + ".join(xs)
    kwargs = "".join(f", {key}=" + ("self.training" if value == TRAINING else literal(value))
                     for key, value in form.kwargs.items())
    first = f"[{', '.join(xs)}]" if form.inputs == "list" else xs[0]
    return f"{form.function}({first}{kwargs})"


# what the generated file may contain, checked on its syntax tree
_ALLOWED_NODES = (
    ast.Module, ast.Expr, ast.Constant, ast.Import, ast.ImportFrom, ast.alias, ast.Assign,
    ast.Name, ast.Load, ast.Store, ast.Tuple, ast.List, ast.Dict, ast.ClassDef, ast.FunctionDef,
    ast.arguments, ast.arg, ast.Return, ast.Call, ast.Attribute, ast.Subscript, ast.keyword,
    ast.BinOp, ast.Add,
)
_IMPORTS = {"torch", "torch.nn.functional", "torch.nn"}
_CALL_ROOTS = {"nn", "F", "torch", "self", "super", "getattr"}


def _torch_import(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.module in _IMPORTS and node.level == 0
    return all(alias.name in _IMPORTS for alias in node.names)


def verify_source(source: str) -> None:
    """Refuse generated text that holds anything but this generator's statements: imports of
    torch, constant assignments, one class with ``__init__`` and ``forward``, and calls
    rooted at ``nn``, ``F``, ``torch``, ``self``, ``super`` or ``getattr``."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise NetspecError(f"internal error: the generated PyTorch source does not parse "
                           f"({exc.msg}); please report it") from None
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            problems.append(f"a {type(node).__name__} at line {getattr(node, 'lineno', '?')}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and not _torch_import(node):
            problems.append(f"an import at line {node.lineno}")
        elif isinstance(node, ast.Call):
            root = node.func
            while isinstance(root, (ast.Attribute, ast.Subscript, ast.Call)):
                root = root.func if isinstance(root, ast.Call) else root.value
            if not (isinstance(root, ast.Name) and root.id in _CALL_ROOTS):
                problems.append(f"a call at line {node.lineno}")
        elif isinstance(node, ast.FunctionDef) and node.name not in ("__init__", "forward"):
            problems.append(f"a function {node.name!r} at line {node.lineno}")
    top = [type(n).__name__ for n in tree.body]
    if top.count("ClassDef") != 1:
        problems.append("not exactly one class")
    if problems:
        raise NetspecError("internal error: the generated PyTorch source holds "
                           f"{', '.join(problems[:5])}; refusing to write it; please report it")


def export_pytorch(spec: str | Path | Plan, out: str | Path,
                   weights: str | Path | None = None) -> list[Path]:
    """Write ``out`` (a ``.py`` module file) and, with ``weights`` (netspec ``.npz`` or a
    PyTorch state_dict), ``model.pt`` beside it under ``out``'s stem. Returns the paths."""
    from netspec.compiler import compile_plan
    from netspec.executor import Network
    from netspec.interchange.torch_paths import require_torch
    from netspec.interchange.torch_weights import save_state_dict
    from netspec.train.checkpoint import load_weights

    require_torch("exporting to PyTorch")
    plan = spec if isinstance(spec, Plan) else compile_plan(spec)
    out = Path(out)
    pt_path = out.with_suffix(".pt")
    normalisation = None
    arrays = None
    if weights is not None:
        net = Network(plan, dtype="float64")
        checkpoint = load_weights(weights, net)
        meta = checkpoint.meta
        # the file's precision: float64 weights stay float64, anything else is float32
        stored = [*checkpoint.params.values(), *checkpoint.buffers.values()]
        dtype = np.float64 if stored and all(a.dtype == np.float64 for a in stored) \
            else np.float32
        arrays = {key: value.astype(dtype) for key, value in net.state().items()}
        if "mean" in meta and "std" in meta:
            normalisation = (float(meta["mean"]), float(meta["std"]))
    source = generate_source(plan, normalisation=normalisation,
                             weights_name=pt_path.name if weights is not None else None)
    written = []
    if arrays is not None:
        batchnorms = [node.id for node in plan.nodes.values() if node.op_name == "batchnorm"]
        save_state_dict(pt_path, arrays, batchnorms)
        written.append(pt_path)
    atomic_write_text(out, source)
    written.insert(0, out)
    return written
