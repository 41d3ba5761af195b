"""``netspec export SPEC -o model.py``: a standalone PyTorch source file for a plan.

The file imports torch only. It holds one ``nn.Module`` class per block of the spec and one for
the network, nested as the instances are (:mod:`netspec.interchange.torch_classes`); modules
sit at netspec's parameter keys (so ``model.pt`` loads with ``strict=True``), each ``forward``
follows the plan node by node, and a docstring gives the spec's name, description, shapes and
parameter count.

Every string that comes from the spec (node ids, block and instance names, the network's name
and description, block arguments' values) is data in the file: it appears only inside string
literals written by :func:`ascii` (printable ASCII, so no quote, newline or Unicode trick can
end the literal), in ``#`` comments written the same way, or in docstrings, whose text is
printable ASCII with backslashes and double quotes escaped. Python names in the file are
netspec's own (``v3``, ``with_downsample``), spec names that are plain ASCII identifiers, or
spec names reduced to letters, digits and underscores (class names, ``layer1_0``). Before the
text is returned, :func:`verify_source` parses it and refuses anything but the statements and
calls this generator writes.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from netspec.common.atomic import atomic_write_text
from netspec.common.errors import NetspecError
from netspec.interchange.torch_classes import (
    ClassModel,
    Entry,
    Flatten,
    class_models,
    flat_model,
)
from netspec.interchange.torch_ops import TRAINING, refused_nodes
from netspec.interchange.torch_paths import check_module_paths
from netspec.ops.shapes import format_shape
from netspec.plan.compiler import Plan

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


def _child(parent: str, name: str, in_dict: bool) -> str:
    """Source reaching module ``name`` of ``parent`` (``self`` or a ModuleDict)."""
    if _attribute_safe(name):
        return f"{parent}.{name}"
    return f"{parent}[{ascii(name)}]" if in_dict else f"getattr({parent}, {ascii(name)})"


def _accessor(key: str) -> str:
    parts = key.split(".")
    expression = _child("self", parts[0], in_dict=False)
    for part in parts[1:]:
        expression = _child(expression, part, in_dict=True)
    return expression


def _parameter_accessor(key: str) -> str:
    """Source reaching the parameter at ``key``: an attribute of its container, not an item
    (a ModuleDict's items are its modules)."""
    container, _, name = key.rpartition(".")
    return _child(_accessor(container) if container else "self", name, in_dict=False)


class _Names:
    """Local variable names: a node's id when it is a plain identifier nothing else uses, the
    id with its dots and other characters as underscores when that is one, else
    ``v<position>``."""

    def __init__(self, reserved: set[str]):
        self.used = set(reserved)
        self.given: dict[Any, str] = {}

    def take(self, ref: Any, text: str) -> str:
        if ref in self.given:
            return self.given[ref]
        candidates = [text, re.sub(r"[^A-Za-z0-9_]", "_", text)]
        name = next((c for c in candidates if _attribute_safe(c) and c not in self.used
                     and not hasattr(builtins, c)), None)
        if name is None:
            name, number = f"v{len(self.given)}", 0
            while name in self.used:
                number += 1
                name = f"v{len(self.given)}_{number}"
        self.used.add(name)
        self.given[ref] = name
        return name


def _escaped_docstring(text: str, indent: str) -> str:
    """A triple-quoted literal of printable-ASCII ``text``: backslashes and double quotes are
    escaped, so nothing in it can end the literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    lines = escaped.split("\n")
    body = "\n".join((indent + line) if line and i else line for i, line in enumerate(lines))
    return f'{indent}"""{body}\n{indent}"""'


def _docstring(plan: Plan, cls: str, weights_name: str | None, note: str | None) -> str:
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
              + (f"model.load_state_dict(torch.load({shown(weights_name)!r}, "
                 f"weights_only=True)); " if weights_name else "")
              + "model.eval()"]
    if note:
        lines += ["", f"Written as one class, not one per block: {shown(note)}."]
    return _escaped_docstring("\n".join(line.rstrip() for line in lines), "")


def generate_source(plan: Plan, *, normalisation: tuple[float, float] | None = None,
                    weights_name: str | None = None) -> str:
    """The text of a standalone PyTorch module file for ``plan``: one class per block of the
    spec (see :mod:`netspec.interchange.torch_classes`) and one for the network.

    ``normalisation`` (mean, std of the training pixels scaled to [0, 1]) is written as the
    constant ``NORMALISATION``; ``weights_name`` is the ``.pt`` file the docstring points at.
    """
    refused = refused_nodes(plan.nodes.values())
    if refused:
        raise NetspecError(f"{plan.name}: cannot export to PyTorch: {'; '.join(refused)}")
    check_module_paths(plan, plan.name)
    note = None
    try:
        models = class_models(plan)
    except Flatten as exc:
        note = str(exc) if plan.spec.instances else None
        models = [flat_model(plan)]
    network = models[-1]
    out = [_docstring(plan, network.name, weights_name, note), "",
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
    class_names = {model.name for model in models}
    for model in models:
        out += ["", ""] + _class_source(model, plan, class_names)
    source = "\n".join(out) + "\n"
    verify_source(source)
    return source


def _setting(model: ClassModel, entry: Entry, setting: str, value: Any) -> str:
    param = model.settings.get((entry.key, setting))
    if param is None:
        return literal(value)
    return f"({param.name}, {param.name})" if param.pair else param.name


def _constant(entry: Entry, setting: str) -> Any:
    return next(v[setting] for v in entry.values if v is not None and setting in v)


def _arguments(model: ClassModel, entry: Entry) -> str:
    settings = dict.fromkeys(k for v in entry.values if v for k in v)
    return ", ".join(f"{key}={_setting(model, entry, key, _constant(entry, key))}"
                     for key in settings)


def _guard(model: ClassModel, entry: Entry) -> str | None:
    return None if all(entry.present) else model.flags[entry.present]


def _class_source(model: ClassModel, plan: Plan, class_names: set[str]) -> list[str]:
    out = [f"class {model.name}(nn.Module):"]
    if model.block is not None:
        shown_paths = ", ".join(shown(p) for p in model.paths[:6])
        more = f" and {len(model.paths) - 6} more" if len(model.paths) > 6 else ""
        text = (f"Block {shown(model.block)} of the spec; its instances: {shown_paths}{more}.")
        if model.flags:
            text += ("\n\nwith_* arguments build the spec's conditional nodes; they hold in "
                     "the instances whose condition does.")
        out += [_escaped_docstring(text, "    "), ""]
    required = [p.name for p in model.params if all(v is not None for v in p.values)]
    optional = [p.name for p in model.params if any(v is None for v in p.values)]
    signature = ", ".join(["self", *required, *(f"{n}=None" for n in optional),
                           *(f"{flag}=False" for flag in model.flags.values())])
    out += [f"    def __init__({signature}):", "        super().__init__()"]
    kept = list(model.flags.values()) + list(dict.fromkeys(
        param.name for (key, _), param in model.settings.items()
        if next(e for e in model.entries if e.key == key).kind[0] == "call"))
    for name in kept:
        out.append(f"        self.{name} = {name}")
    out += _init_body(model)
    out += [""] + _forward_source(model, plan, class_names)
    return out


def _init_body(model: ClassModel) -> list[str]:
    """Modules in entry order, containers made before their first member, under the flags of
    conditional nodes."""
    statements: list[tuple[str | None, str]] = []  # (flag, statement)
    made: set[str] = set()
    guards_of: dict[str, set] = {}
    # where each entry's module sits: its key, a repeat's member its Sequential's path
    paths = {entry.key: entry.key if entry.group is None else entry.group
             for entry in model.entries if entry.kind[0] != "call"}
    for entry in model.entries:
        parts = paths[entry.key].split(".") if entry.key in paths else []
        for k in range(1, len(parts)):
            guards_of.setdefault(".".join(parts[:k]), set()).add(_guard(model, entry))
    for entry in model.entries:
        guard = _guard(model, entry)
        if entry.key in paths:
            parts = paths[entry.key].split(".")
            for k in range(1, len(parts)):
                container = ".".join(parts[:k])
                if container not in made:
                    made.add(container)
                    shared = guards_of[container]
                    statements.append((next(iter(shared)) if len(shared) == 1 else None,
                                       f"{_assign(container)}nn.ModuleDict(){_close(container)}"))
        if entry.kind[0] == "tensor":
            statements.append((guard, _parameter_statement(model, entry)))
        elif entry.kind[0] == "layer":
            cls, frozen = entry.kind[1], entry.kind[2]
            statements.append((guard, f"{_assign(entry.key)}nn.{cls}("
                                      f"{_arguments(model, entry)}){_close(entry.key)}"))
            statements += [(guard, f"{_accessor(entry.key)}.{name}.requires_grad_(False)"
                                   f"  # trainable = false") for name in frozen]
        elif entry.kind[0] == "child" and entry.group is None:
            statements.append((guard, f"{_assign(entry.key)}{entry.kind[1]}("
                                      f"{_arguments(model, entry)}){_close(entry.key)}"))
        elif entry.kind[0] == "child" and entry.index == 0:
            members = [e for e in model.entries if e.group == entry.group]
            if [m.index for m in members] != list(range(len(members))):
                raise NetspecError(f"internal error: repeat {entry.group!r} is not numbered "
                                   f"from 0; please report it")
            calls = "".join(f"    {m.kind[1]}({_arguments(model, m)}),\n" for m in members)
            statements.append((guard, f"{_assign(entry.group)}nn.Sequential(\n{calls})"
                                      f"{_close(entry.group)}"))
    lines: list[str] = []
    current = None
    for guard, statement in statements:
        if guard != current and guard is not None:
            lines.append(f"        if {guard}:")
        current = guard
        indent = "            " if guard else "        "
        lines += [indent + line if i == 0 else indent + line
                  for i, line in enumerate(statement.split("\n"))]
    return lines


def _parameter_statement(model: ClassModel, entry: Entry) -> str:
    """``nn.Parameter`` of the learned tensor, started as netspec starts it, put at its key."""
    _, init, frozen, rank, _ = entry.kind
    sizes = [_setting(model, entry, f"size{axis}", _constant(entry, f"size{axis}"))
             for axis in range(rank)]
    shape = f"({', '.join(sizes)},)" if rank == 1 else f"({', '.join(sizes)})"
    if init == "zeros":
        values = f"torch.zeros({shape})"
    else:
        scale = _setting(model, entry, "scale", _constant(entry, "scale"))
        values = {"full": f"torch.full({shape}, {scale})",
                  "normal": f"torch.empty({shape}).normal_(0.0, {scale})",
                  "uniform": f"torch.empty({shape}).uniform_(-{scale}, {scale})"}[init]
    parameter = f"nn.Parameter({values}{', requires_grad=False' if frozen else ''})"
    container, _, name = entry.key.rpartition(".")
    owner = _accessor(container) if container else "self"
    if _attribute_safe(name):
        return f"{owner}.{name} = {parameter}"
    return f"{owner}.register_parameter({ascii(name)}, {parameter})"


def _assign(key: str) -> str:
    """The start of a statement that puts a module at ``key``; :func:`_close` ends it."""
    parts = key.split(".")
    if len(parts) == 1:
        return f"self.{key} = " if _attribute_safe(key) else f"self.add_module({ascii(key)}, "
    return f"{_accessor('.'.join(parts[:-1]))}[{ascii(parts[-1])}] = "


def _close(key: str) -> str:
    return ")" if "." not in key and not _attribute_safe(key) else ""


def _forward_source(model: ClassModel, plan: Plan, class_names: set[str]) -> list[str]:
    names = _Names(set(_OWN_NAMES) | class_names | set(model.flags.values()))
    if model.block is None:
        arguments = [names.take(("node", i), i) for i in plan.inputs]
    else:
        arguments = [names.take(("in", k), "x" if model.n_inputs == 1 else f"x{k}")
                     for k in range(model.n_inputs)]
    lines = [f"    def forward(self, {', '.join(arguments)}):"]
    # a learned tensor is expanded to the batch of the first input (a block with learned
    # tensors and no input is written flat: torch_classes)
    batch = f"{arguments[0]}.shape[0]" if arguments else None
    current_guard = None
    for entry in model.entries:
        if entry.kind[:2] == ("call", None) and entry.kind[2] == "one" and model.block is None:
            continue  # a network input: a forward argument
        ref = ("child", entry.key) if entry.kind[0] == "child" else ("node", entry.key)
        target = names.take(ref, entry.key)
        guard = _guard(model, entry)
        if guard != current_guard:
            if guard:
                lines.append(f"        if self.{guard}:")
            current_guard = guard
        indent = "        " + ("    " if guard else "")
        comment = "" if target == entry.key else f"  # {ascii(entry.key)}"
        switch = model.switches.get(entry.key)
        variants = [(None, next(i for i in entry.inputs if i is not None))] if switch is None \
            else [(f"if self.{switch[0]}:", switch[1]), ("else:", switch[2])]
        for header, refs in variants:
            xs = [names.take(r, _ref_text(r, model)) for r in refs]
            expression = _expression(model, entry, xs, batch)
            if header:
                lines.append(f"{indent}{header}")
                lines.append(f"{indent}    {target} = {expression}{comment}")
            else:
                lines.append(f"{indent}{target} = {expression}{comment}")
    lines.append(f"        return {names.take(model.output, _ref_text(model.output, model))}")
    return lines


def _ref_text(ref: Any, model: ClassModel) -> str:
    kind, value = ref
    if kind == "in":
        return "x" if model.n_inputs == 1 else f"x{value}"
    return value


def _expression(model: ClassModel, entry: Entry, xs: list[str], batch: str | None) -> str:
    kind = entry.kind[0]
    if kind == "tensor":
        if batch is None:
            raise NetspecError(f"internal error: learned tensor {entry.key!r} has no input to "
                               f"count the batch from; please report it")
        return f"{_parameter_accessor(entry.key)}.expand({batch}{', -1' * entry.kind[4]})"
    if kind == "layer":
        return _layer_expression(_accessor(entry.key), entry.kind[3], xs)
    if kind == "child":
        if entry.group is not None:
            return f"{_accessor(entry.group)}[{entry.index}]({', '.join(xs)})"
        return f"{_accessor(entry.key)}({', '.join(xs)})"
    _, function, mode = entry.kind
    if mode == "sum":
        return " + ".join(xs)
    if function is None:
        return xs[0]
    settings = dict.fromkeys(k for v in entry.values if v for k in v)
    kwargs = "".join(
        f", {key}=" + ("self.training" if _constant(entry, key) == TRAINING
                       else _call_setting(model, entry, key))
        for key in settings)
    first = f"[{', '.join(xs)}]" if mode == "list" else ", ".join(xs) if mode == "args" \
        else xs[0]
    return f"{function}({first}{kwargs})"


def _layer_expression(module: str, call: str, xs: list[str]) -> str:
    """Source applying a layer's module to its inputs (torch_runtime.apply_layer's forms)."""
    if call == "channels_first":
        return f"torch.permute({module}(torch.permute({xs[0]}, (0, 2, 3, 1))), (0, 3, 1, 2))"
    if call in ("attention", "causal"):
        query, key, value = xs * 3 if len(xs) == 1 else xs
        mask = (f"torch.ones({query}.shape[1], {key}.shape[1], dtype=torch.bool).triu(1)"
                if call == "causal" else "None")
        return f"{module}({query}, {key}, {value}, need_weights=False, attn_mask={mask})[0]"
    return f"{module}({xs[0]})"


def _call_setting(model: ClassModel, entry: Entry, key: str) -> str:
    param = model.settings.get((entry.key, key))
    if param is None:
        return literal(_constant(entry, key))
    # a function's setting that varies between instances is kept on the module
    return f"(self.{param.name}, self.{param.name})" if param.pair else f"self.{param.name}"


# what the generated file may contain, checked on its syntax tree
_ALLOWED_NODES = (
    ast.Module, ast.Expr, ast.Constant, ast.Import, ast.ImportFrom, ast.alias, ast.Assign,
    ast.Name, ast.Load, ast.Store, ast.Tuple, ast.List, ast.Dict, ast.ClassDef, ast.FunctionDef,
    ast.arguments, ast.arg, ast.Return, ast.Call, ast.Attribute, ast.Subscript, ast.keyword,
    ast.BinOp, ast.Add, ast.If,
    # negative constants (a reshape's -1 for the batch, log_softmax's dim = -1)
    ast.UnaryOp, ast.USub,
)
_IMPORTS = {"torch", "torch.nn.functional", "torch.nn"}
_CALL_ROOTS = {"nn", "F", "torch", "self", "super", "getattr"}


def _torch_import(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.module in _IMPORTS and node.level == 0
    return all(alias.name in _IMPORTS for alias in node.names)


def verify_source(source: str) -> None:
    """Refuse generated text that holds anything but this generator's statements: imports of
    torch, constant assignments, classes with ``__init__`` and ``forward`` (assignments,
    ``if`` on flags, a return), and calls rooted at ``nn``, ``F``, ``torch``, ``self``,
    ``super``, ``getattr`` or one of the file's own classes."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise NetspecError(f"internal error: the generated PyTorch source does not parse "
                           f"({exc.msg}); please report it") from None
    problems = []
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            problems.append(f"a {type(node).__name__} at line {getattr(node, 'lineno', '?')}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and not _torch_import(node):
            problems.append(f"an import at line {node.lineno}")
        elif isinstance(node, ast.Call):
            root = node.func
            while isinstance(root, (ast.Attribute, ast.Subscript, ast.Call)):
                root = root.func if isinstance(root, ast.Call) else root.value
            if not (isinstance(root, ast.Name) and root.id in _CALL_ROOTS | classes):
                problems.append(f"a call at line {node.lineno}")
        elif isinstance(node, ast.FunctionDef) and node.name not in ("__init__", "forward"):
            problems.append(f"a function {node.name!r} at line {node.lineno}")
    top = [type(n).__name__ for n in tree.body]
    if "ClassDef" not in top:
        problems.append("no class")
    if problems:
        raise NetspecError("internal error: the generated PyTorch source holds "
                           f"{', '.join(problems[:5])}; refusing to write it; please report it")


def export_pytorch(spec: str | Path | Plan, out: str | Path,
                   weights: str | Path | None = None) -> list[Path]:
    """Write ``out`` (a ``.py`` module file) and, with ``weights`` (netspec ``.npz`` or a
    PyTorch state_dict), ``model.pt`` beside it under ``out``'s stem. Returns the paths."""
    from netspec.common.extras import require_torch
    from netspec.plan.compiler import compile_plan
    from netspec.runtime.executor import Network
    from netspec.weights.checkpoint import load_weights
    from netspec.weights.torch_weights import save_state_dict

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
