"""Reading an ONNX graph: its bounds, tensors and attributes, and the translator that walks it
node by node through an importer table it is given (``onnx_ops.IMPORTERS``).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from netspec.common.errors import NetspecError, ShapeError
from netspec.interchange.onnx_graph import (
    META_DROPOUT,
    META_FORMS,
    SHARED_FORMS,
    onnx_module,
)
from netspec.lang.flat import toml_value
from netspec.ops import REGISTRY
from netspec.ops.base import WHOLE_NODE, param_key
from netspec.ops.shapes import Shape, format_shape
from netspec.plan.budget import available_memory
from netspec.plan.compiler import Plan
from netspec.runtime.executor import Network

# protobuf cannot hold more in one message; ONNX puts larger weights in external files
MAX_MODEL_BYTES = 2**31 - 1
MAX_TENSOR_VALUES = 2**32
MAX_NODES = 100_000
MAX_ATTRIBUTE_VALUES = 64
MIN_OPSET = 9
MAX_ID_LENGTH = 128
# node names listed on one line of a refusal; the count says how many more
_NAMES_SHOWN = 5
_ID_UNSAFE = re.compile(r"[^\w.\-]")
_FLOAT_TYPES = ("FLOAT", "DOUBLE", "FLOAT16")
_CONSTANT_TYPES = (*_FLOAT_TYPES, "INT64", "INT32", "INT16", "INT8", "UINT8", "BOOL")


class OnnxImportError(NetspecError):
    """A model netspec cannot import; ``problems`` lists every reason, one per line, and
    ``note`` (if any) follows them once (what netspec reads instead)."""

    def __init__(self, source: str, problems: Sequence[str], note: str = ""):
        self.problems = list(problems)
        head = f"{source}: cannot import" + (f" ({len(problems)} problems)"
                                             if len(problems) > 1 else "")
        lines = [f"  {p}" for p in self.problems] + ([f"  ({note})"] if note else [])
        super().__init__(head + ":\n" + "\n".join(lines))


class _Batch:
    """The batch size inside folded shape arithmetic: known to be the batch, not a number."""

    def __repr__(self) -> str:
        return "N"


BATCH = _Batch()


@dataclass(frozen=True)
class Tensor:
    """A value the network computes: the netspec node producing it and its per-sample shape.
    ``onnx_shape`` differs only after a global average pooling, whose (C, 1, 1) netspec holds
    as (C,): the same values in the same order."""

    node: str
    shape: Shape
    onnx_shape: Shape


# ops folded whenever every input is a constant (shape arithmetic); on the network's values
# they are the per-op importers' to judge
_NUMERIC = frozenset({"Add", "Sub", "Mul", "Div", "Mod", "Pow", "Neg", "Sqrt", "Equal", "Where",
                      "Expand", "ConstantOfShape", "Reshape"})

# ops whose constant operands of two axes or more are learned tensors (not biases)
_LEARNED_OPERAND = frozenset({"Concat", "Add", "Mul"})

_POISON = object()  # a value after a refused node: its users are not blamed again


@dataclass(frozen=True)
class _Piece:
    """One output of a node that netspec writes as several nodes, as the importers read a
    node: a name, its op and its inputs, that one output."""

    name: str
    op_type: str
    input: list[str]
    output: list[str]
    attribute: list[Any]


@dataclass
class ImportedModel:
    """The translation of one model: spec text, the compiled plan and the network with the
    model's weights loaded."""

    spec_text: str
    plan: Plan
    network: Network
    output_onnx_shape: Shape
    onnx_nodes: int
    normalisation: tuple[float, float] | None
    source: str
    # ONNX graph input name -> netspec input node id
    input_ids: dict[str, str] = field(default_factory=dict)
    # the batch size the file fixes (netspec's network takes any), if it fixes one
    static_batch: int | None = None

    @property
    def name(self) -> str:
        return self.plan.name


# ---------------------------------------------------------------- reading the file

def read_onnx_file(path: str | Path) -> Any:
    """Parse an ONNX file, refusing what is no ONNX model before and after reading it."""
    onnx_module()  # a missing extra is said before anything else
    path = Path(path)
    if not path.is_file():
        raise NetspecError(f"{path}: no such file" if not path.exists()
                           else f"{path}: not a file")
    size = path.stat().st_size
    if size == 0:
        raise NetspecError(f"{path}: the file is empty, not an ONNX model")
    if size > MAX_MODEL_BYTES:
        raise NetspecError(f"{path}: {size:,} bytes is more than an ONNX file can hold "
                           f"({MAX_MODEL_BYTES:,}); not an ONNX model")
    room = available_memory()
    if room is not None and 3 * size > room:
        raise NetspecError(f"{path}: reading {size:,} bytes needs about {3 * size:,} bytes of "
                           f"memory; {room:,} are available")
    return parse_onnx_bytes(path.read_bytes(), str(path))


def parse_onnx_bytes(data: bytes, source: str = "<model>") -> Any:
    from google.protobuf.message import DecodeError

    onnx = onnx_module()
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError, RecursionError, MemoryError) as exc:
        detail = str(exc) or type(exc).__name__
        raise NetspecError(f"{source}: not a readable ONNX model (truncated, or another "
                           f"format): {detail}") from None
    if model.ir_version <= 0 or not model.HasField("graph") or not (
            len(model.graph.node) or len(model.graph.output)):
        raise NetspecError(f"{source}: not an ONNX model (no graph); is it truncated, or "
                           f"another format?")
    graph = model.graph
    names = [name for n in graph.node for name in (*n.input, *n.output)]
    names += [v.name for v in (*graph.input, *graph.output, *graph.initializer)]
    binary = next((name for name in names if isinstance(name, bytes)), None)
    if binary is not None:
        shown = binary.decode("utf-8", "backslashreplace")
        raise NetspecError(f"{source}: the value name '{shown}' is not UTF-8 text; is the "
                           f"file damaged?")
    return model


# ---------------------------------------------------------------- names and TOML text

def text_of(value: str | bytes) -> str:
    """A protobuf string field as text: one that is not UTF-8 arrives as bytes."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def clean_id(name: str | bytes, op_type: str | bytes) -> str:
    """A node id from an ONNX node name: ``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1``
    (PyTorch's module path), anything else made safe and bounded."""
    name, op_type = text_of(name), text_of(op_type)
    if name.startswith("/"):
        segments = [s for s in name.split("/") if s]
        path: list[str] = []
        for segment in segments[:-1]:
            # a child of a container is written with its parent's name in front
            if path and segment.startswith(path[-1] + "."):
                path[-1] = segment
            else:
                path.append(segment)
        name = ".".join(path) if path else (segments[-1].lower() if segments else "")
    name = _ID_UNSAFE.sub("_", name.replace("/", "."))
    name = re.sub(r"\.{2,}", ".", name).strip(".")[:MAX_ID_LENGTH].strip(".")
    return name or op_type.lower() or "node"


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string: every quote, backslash and control character escaped."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _comment(text: str) -> str:
    """Text safe inside a TOML comment: one line of printable characters."""
    return "".join(c if c.isprintable() else "?" for c in text)[:200]


def spec_text(name: str, description: str, nodes: Mapping[str, Mapping[str, Any]],
              output: str, source: str) -> str:
    lines = [f"# imported from {_comment(source)} by netspec import", "",
             "[network]", f"name = {toml_string(name)}"]
    if description:
        lines.append(f"description = {toml_string(description)}")
    lines += [f"output = {toml_string(output)}", ""]
    for node_id, fields in nodes.items():
        lines.append(f"[nodes.{toml_string(node_id)}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in fields.items()]
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- tensors

class _TensorProblem(Exception):
    pass


def _type_name(onnx: Any, elem_type: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"type {elem_type}"


def _claimed_values(tensor: Any) -> int:
    dims = list(tensor.dims)
    if len(dims) > 32 or any(d < 0 for d in dims):
        raise _TensorProblem(f"has an invalid shape {dims[:8]}")
    return math.prod(dims)


_TYPED_FIELDS = {"FLOAT": "float_data", "DOUBLE": "double_data", "INT64": "int64_data",
                 "INT32": "int32_data", "INT16": "int32_data", "INT8": "int32_data",
                 "UINT8": "int32_data", "BOOL": "int32_data", "FLOAT16": "int32_data"}


def read_tensor(tensor: Any, directory: Path | None) -> np.ndarray:
    """A TensorProto as an array, its size and bytes checked before anything is allocated."""
    onnx = onnx_module()
    type_name = _type_name(onnx, tensor.data_type)
    if type_name not in _CONSTANT_TYPES:
        raise _TensorProblem(f"holds {type_name} values, which netspec does not read")
    count = _claimed_values(tensor)
    if count > MAX_TENSOR_VALUES:
        raise _TensorProblem(f"claims {count:,} values, more than netspec reads "
                             f"({MAX_TENSOR_VALUES:,})")
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type))
    needed = count * dtype.itemsize
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        data = _external_bytes(tensor, directory, needed)
        return np.frombuffer(data, dtype=dtype).reshape(tuple(tensor.dims)).copy()
    if tensor.HasField("raw_data"):
        if len(tensor.raw_data) != needed:
            raise _TensorProblem(f"claims {count:,} values of {type_name} ({needed:,} bytes) "
                                 f"but holds {len(tensor.raw_data):,} bytes")
    else:
        held = len(getattr(tensor, _TYPED_FIELDS[type_name]))
        if held != count:
            raise _TensorProblem(f"claims {count:,} values but holds {held:,}")
    try:
        return np.asarray(onnx.numpy_helper.to_array(tensor))
    except (ValueError, TypeError) as exc:
        raise _TensorProblem(f"cannot be read: {exc}") from None


def _external_bytes(tensor: Any, directory: Path | None, needed: int) -> bytes:
    entries = {entry.key: entry.value for entry in tensor.external_data}
    location = entries.get("location", "")
    if directory is None:
        raise _TensorProblem("keeps its values in an external file, which only a model read "
                             "from a file may do")
    base = directory.resolve()
    if not location or Path(location).is_absolute():
        raise _TensorProblem(f"names external data '{location}'; it must be a path relative "
                             f"to the model's directory")
    path = (base / location).resolve()
    if not path.is_relative_to(base):
        raise _TensorProblem(f"names external data '{location}', outside the model's "
                             f"directory {base}; refused")
    try:
        offset = int(entries.get("offset", "0"))
        length = int(entries["length"]) if "length" in entries else needed
    except ValueError:
        raise _TensorProblem("has a malformed external-data offset or length") from None
    if offset < 0 or length != needed:
        raise _TensorProblem(f"claims {needed:,} bytes but its external data gives "
                             f"offset {offset}, length {length}")
    if not path.is_file():
        raise _TensorProblem(f"names external data '{location}', which does not exist")
    if path.stat().st_size < offset + length:
        raise _TensorProblem(f"needs bytes {offset:,}..{offset + length:,} of '{location}', "
                             f"which holds {path.stat().st_size:,}")
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(length)


# ---------------------------------------------------------------- the translator

def _attribute_value(onnx: Any, attribute: Any) -> Any:
    try:
        value = onnx.helper.get_attribute_value(attribute)
    except (ValueError, TypeError):  # an attribute type this onnx does not know
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float):
        return _float32(value)
    if isinstance(value, (list, tuple)) or type(value).__name__.startswith("Repeated"):
        return [v.decode("utf-8", "replace") if isinstance(v, bytes)
                else _float32(v) if isinstance(v, float) else v for v in value]
    return value


_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", list: "a list of integers"}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _float32(value: float) -> float:
    # attributes are float32: 1e-5 arrives as 9.99999974e-06; keep the value that was meant
    return float(str(np.float32(value)))


class Translator:
    """Walks the graph once, in its (topological) order, through the per-op importers."""

    def __init__(self, model: Any, *, directory: Path | None,
                 input_shape: Sequence[int] | None, bound: Mapping[str, np.ndarray],
                 importers: Mapping[str, Callable[[Translator, Any], None]],
                 folded: Collection[str], control_flow: Collection[str],
                 patterns: Sequence[tuple[Callable[[Any, set[str]], Sequence[Any]],
                                          Callable[[Translator, Any], None]]] = ()):
        self.onnx = onnx_module()
        self.importers, self.folded, self.control_flow = importers, folded, control_flow
        # (find the regions of a graph, read one region): subgraphs read as one op
        self.patterns = patterns
        self.model = model
        self.graph = model.graph
        self.directory = directory
        self.problems: list[str] = []
        self.values: dict[str, Any] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.params: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self._refused: set[int] = set()
        # (op type, reason) -> names of the nodes refused for it, in the order met
        self._refusals: dict[tuple[str, str], list[str]] = {}
        self._unsupported = False
        self._schemas: dict[tuple[str, str], Any | None] = {}
        self._ids: set[str] = set()
        self._biasless: set[str] = set()  # linear nodes from a MatMul, open to a bias
        # a folded constant that is an initializer unchanged -> that initializer's name
        self._origins: dict[str, str] = {}
        self.input_ids: dict[str, str] = {}
        self.static_batch: int | None = None
        self._inferred: dict[str, list[int]] | None = None
        # node id -> (its inputs' shapes, its shape), per sample
        self._shapes: dict[str, tuple[tuple[Shape, ...], Shape]] = {}
        self.opset = self._opset()
        self._producers = {name: node for node in self.graph.node for name in node.output
                           if name}
        self._initializers = {tensor.name for tensor in self.graph.initializer}
        self.uses = Counter(name for node in self.graph.node for name in node.input if name)
        self.uses.update(output.name for output in self.graph.output)
        self._inputs(input_shape, bound)

    # -- problems
    def _name(self, n: Any) -> str:
        return text_of(n.name or (n.output[0] if n.output else ""))

    def _where(self, n: Any) -> str:
        return f"node '{self._name(n)}' ({text_of(n.op_type)})"

    def refuse(self, n: Any, message: str) -> None:
        self._refusals.setdefault((text_of(n.op_type), message), []).append(self._name(n))
        self._refused.add(id(n))

    def refused(self, n: Any) -> bool:
        return id(n) in self._refused

    def fed_by_refused(self, n: Any) -> bool:
        """Whether an input of ``n`` comes from a refused node (or an input netspec cannot
        take): whatever ``n`` would then say about that input was said already."""
        return any(self.values.get(name) is _POISON for name in n.input if name)

    def report(self) -> list[str]:
        """Every problem once: the model's own, then one line per kind of node refusal (the
        op and the reason), with how many nodes and which, in the order first met."""
        lines = list(self.problems)
        for (op_type, message), names in self._refusals.items():
            if len(names) == 1:
                lines.append(f"node '{names[0]}' ({op_type}): {message}")
                continue
            shown = ", ".join(f"'{name}'" for name in names[:_NAMES_SHOWN])
            more = f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else ""
            lines.append(f"{len(names)} {op_type} nodes ({shown}{more}): {message}")
        return lines

    def unsupported_note(self) -> str:
        """The ops netspec reads, said once when some op was not one of them."""
        if not self._unsupported:
            return ""
        return "netspec reads " + ", ".join(sorted((*self.importers, *self.folded)))

    # -- attributes
    def attr(self, n: Any, name: str, default: Any, kind: type | None = None) -> Any:
        """Attribute ``name`` of ``n``, of the type of ``default`` (or ``kind``): ints, floats,
        strings or lists of ints. One of another type is refused and ``default`` returned."""
        kind = kind or type(default)
        for attribute in n.attribute:
            if attribute.name != name:
                continue
            value = _attribute_value(self.onnx, attribute)
            if kind is float and isinstance(value, int):
                value = float(value)
            if kind is list:
                fits = isinstance(value, list) and all(isinstance(v, int) for v in value)
                if fits and len(value) > MAX_ATTRIBUTE_VALUES:
                    self.refuse(n, f"attribute {name} holds {len(value):,} values")
                    return default
            else:
                fits = isinstance(value, kind)
            if not fits:
                wanted = _KIND_NAMES.get(kind, kind.__name__)
                self.refuse(n, f"attribute {name} must be {wanted}, got {_shown(value)}")
                return default
            return value
        return default

    def only_attributes(self, n: Any, *allowed: str) -> None:
        for attribute in n.attribute:
            if attribute.name not in allowed:
                self.refuse(n, f"attribute '{attribute.name}' is not supported")

    # -- inputs and outputs
    def _value(self, n: Any, index: int) -> Any:
        if index >= len(n.input) or not n.input[index]:
            return None
        name = n.input[index]
        if name not in self.values:
            self.refuse(n, f"input '{name}' is produced by no node before it and is no graph "
                           f"input or initializer (is the graph out of order?)")
            return _POISON
        return self.values[name]

    def tensor(self, n: Any, index: int) -> Tensor | None:
        """The network value at input ``index``; None (and a problem) otherwise."""
        value = self._value(n, index)
        if isinstance(value, Tensor):
            return value
        if value is None:
            self.refuse(n, f"input {index} is missing")
        elif value is not _POISON and not self.fed_by_refused(n):
            self.refuse(n, f"input '{n.input[index]}' is a constant; netspec computes "
                           f"{n.op_type} on the network's values only")
        return None

    def computed(self, n: Any, index: int) -> bool:
        """Whether input ``index`` of ``n`` is a value the network computes (not a constant)."""
        return isinstance(self._value(n, index), Tensor)

    def constant(self, n: Any, index: int, what: str, symbolic: bool = False
                 ) -> np.ndarray | None:
        value = self._value(n, index)
        if value is None:
            self.refuse(n, f"{what} (input {index}) is missing")
            return None
        if value is _POISON:
            return None
        if isinstance(value, Tensor):
            self.refuse(n, f"{what} ('{n.input[index]}') is computed by the network; netspec "
                           f"needs it as a constant (an initializer)")
            return None
        if value.dtype == object and not symbolic:
            self.refuse(n, f"{what} depends on the batch size")
            return None
        wrong_type = self.type_problem(n, index, value)
        if wrong_type:
            self.refuse(n, f"{what} ('{n.input[index]}') {wrong_type}")
            return None
        return value if value.dtype == object else value.astype(
            np.float32 if value.dtype.kind == "f" else value.dtype, copy=False)

    def type_problem(self, n: Any, index: int, value: np.ndarray) -> str:
        """Why constant input ``index`` of ``n`` has a type the ONNX graph does not allow
        there ("" if none): a type outside the op's constraint, or another type than the
        network's FLOAT values that share its type parameter (an int8 or float16 weight fed
        straight into a float convolution). Such values are refused, never converted."""
        if value.dtype == object:  # shape arithmetic holding the batch: int64 in the graph
            return ""
        formals = self._formal_inputs(n)
        if not formals:
            return ""
        type_param, allowed = formals[min(index, len(formals) - 1)]
        try:
            type_name = _type_name(self.onnx, self.onnx.helper.np_dtype_to_tensor_dtype(
                value.dtype))
        except (KeyError, ValueError, TypeError):
            type_name = str(value.dtype)
        if f"tensor({type_name.lower()})" not in allowed:
            kinds = ", ".join(sorted(a[7:-1].upper() for a in allowed if a.startswith("tensor(")))
            return (f"holds {type_name} values; {text_of(n.op_type)} takes {kinds} there, so "
                    f"the model is not valid ONNX")
        if type_name == "FLOAT":
            return ""
        for other, name in enumerate(n.input[:len(formals)]):
            if other != index and formals[other][0] == type_param and \
                    isinstance(self.values.get(name), Tensor):
                return (f"holds {type_name} values; {text_of(n.op_type)} needs the type of "
                        f"input '{name}', which the network computes in FLOAT (netspec does "
                        f"not convert weights silently: export them as float32)")
        return ""

    def _schema(self, n: Any) -> Any | None:
        """``n``'s ONNX schema at the model's opset; None where ONNX does not know the op."""
        key = (text_of(n.op_type), text_of(n.domain))
        if key not in self._schemas:
            try:
                self._schemas[key] = self.onnx.defs.get_schema(key[0], max(self.opset, 1),
                                                               key[1])
            except self.onnx.defs.SchemaError:
                self._schemas[key] = None
        return self._schemas[key]

    def _formal_inputs(self, n: Any) -> list[tuple[str, tuple[str, ...]]]:
        """(type parameter, allowed types) of each formal input of ``n``'s ONNX schema at
        the model's opset; empty where ONNX does not know the op."""
        schema = self._schema(n)
        if schema is None:
            return []
        constraints = {c.type_param_str: tuple(c.allowed_type_strs)
                       for c in schema.type_constraints}
        return [(formal.type_str, constraints.get(formal.type_str, (formal.type_str,)))
                for formal in schema.inputs]

    def _arity_problem(self, n: Any) -> str:
        """Why ``n`` has too few or too many inputs or outputs for its op; empty if it has
        neither (or ONNX does not know the op)."""
        schema = self._schema(n)
        if schema is None:
            return ""
        for what, count, least, most in (
                ("inputs", len(n.input), schema.min_input, schema.max_input),
                ("outputs", len(n.output), schema.min_output, schema.max_output)):
            if not least <= count <= most:
                wanted = f"{least}" if least == most else \
                    f"{least} or more" if most > 1000 else f"{least} to {most}"
                return (f"has {count} {what}; {text_of(n.op_type)} takes {wanted}, so the "
                        f"model is not valid ONNX")
        return ""

    def all_constant(self, n: Any) -> bool:
        values = [self.values.get(name) for name in n.input if name]
        return bool(values) and all(isinstance(v, np.ndarray) for v in values)

    def output_used(self, n: Any, index: int) -> bool:
        return index < len(n.output) and bool(n.output[index]) and self.uses[n.output[index]] > 0

    def rank_is(self, n: Any, x: Tensor, rank: int, what: str) -> bool:
        if len(x.shape) == rank and x.shape == x.onnx_shape:
            return True
        self.refuse(n, f"{what} has per-sample shape {format_shape(x.onnx_shape)}; "
                       f"{rank}-D per sample is needed")
        return False

    def symmetric_padding(self, n: Any, hw: Shape, kernel: Shape,
                          strides: Shape) -> tuple[int, int] | None:
        if len(kernel) != 2 or len(strides) != 2 or any(s <= 0 for s in strides):
            self.refuse(n, f"kernel {list(kernel)} and strides {list(strides)} must be 2-D "
                           f"and positive")
            return None
        auto_pad = self.attr(n, "auto_pad", "NOTSET")
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            totals = [max((-(-size // s) - 1) * s + k - size, 0)
                      for size, k, s in zip(hw, kernel, strides)]
            begin = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in totals]
            pads = [*begin, *(t - b for t, b in zip(totals, begin))]
        elif auto_pad == "VALID":
            pads = [0, 0, 0, 0]
        elif auto_pad == "NOTSET":
            pads = list(self.attr(n, "pads", [0, 0, 0, 0]))
        else:
            self.refuse(n, f"auto_pad={auto_pad} is not supported")
            return None
        if len(pads) != 4 or any(p < 0 for p in pads):
            self.refuse(n, f"pads={pads} must be four non-negative numbers")
            return None
        if pads[0] != pads[2] or pads[1] != pads[3]:
            how = f"auto_pad={auto_pad}" if auto_pad != "NOTSET" else f"pads={pads}"
            self.refuse(n, f"{how} pads the two sides differently; netspec pads both sides "
                           f"of an axis alike")
            return None
        return pads[0], pads[1]

    def bias_vector(self, n: Any, bias: np.ndarray, size: int) -> np.ndarray | None:
        """A bias broadcast along the batch: shapes (), (1,), (size,), (1, size) or (1, 1)."""
        if bias.size == 1 or bias.shape in ((size,), (1, size)):
            return np.broadcast_to(bias.reshape(-1), (size,)).astype(np.float32)
        self.refuse(n, f"the bias has shape {list(bias.shape)}; netspec's bias is one value "
                       f"per output feature ({size})")
        return None

    # -- results
    def _new_id(self, n: Any) -> str:
        base = clean_id(n.name, n.op_type)
        node_id, count = base, 0
        while node_id in self._ids:
            count += 1
            node_id = f"{base}_{count}"
        self._ids.add(node_id)
        return node_id

    def emit(self, n: Any, op: str, inputs: Sequence[Tensor], fields: Mapping[str, Any],
             params: Mapping[str, np.ndarray], *, buffers: Mapping[str, np.ndarray] | None = None,
             onnx_shape: Shape | None = None) -> Tensor | None:
        """A netspec node for ``n``, validated and shape-checked by netspec's own op."""
        sources = [x.node for x in inputs]
        raw = {"op": op, "inputs": sources[0] if len(sources) == 1 else sources, **fields}
        try:
            node_params = REGISTRY[op].Params.model_validate(raw, strict=True)
        except ValidationError as exc:
            details = "; ".join(f"{'.'.join(map(str, e['loc'])) or op}: {e['msg']}"
                                for e in exc.errors())
            self.refuse(n, f"netspec's {op} cannot hold this: {details}")
            return None
        instance = REGISTRY[op](node_params)
        in_shapes = [x.shape for x in inputs]
        try:
            shape = tuple(int(d) for d in instance.output_shape(in_shapes))
        except ShapeError as exc:
            self.refuse(n, f"as netspec's {op}: {exc}")
            return None
        specs = {**instance.param_specs(in_shapes), **instance.buffer_specs(in_shapes)}
        given = {**params, **(buffers or {})}
        for name, spec in specs.items():
            if name not in given or given[name].shape != spec.shape:
                found = format_shape(given[name].shape) if name in given else "nothing"
                self.refuse(n, f"{name} needs shape {format_shape(spec.shape)}, the model "
                               f"gives {found}")
                return None
        node_id = self._new_id(n)
        self.nodes[node_id] = raw
        for name, array in params.items():
            self.params[param_key(node_id, name)] = np.ascontiguousarray(array, dtype=np.float32)
        for name, array in (buffers or {}).items():
            self.buffers[param_key(node_id, name)] = np.ascontiguousarray(array, dtype=np.float32)
        if n.op_type == "MatMul":
            self._biasless.add(node_id)
        self._shapes[node_id] = (tuple(in_shapes), shape)
        result = Tensor(node_id, shape, tuple(onnx_shape) if onnx_shape else shape)
        self.values[n.output[0]] = result
        return result

    def alias(self, n: Any, x: Tensor, onnx_shape: Shape | None = None) -> None:
        self.values[n.output[0]] = Tensor(x.node, x.shape, tuple(onnx_shape or x.onnx_shape))

    def set_constant(self, n: Any, value: Any) -> None:
        if value is not None:
            # indexing a shape vector may hand back the bare batch symbol
            self.values[n.output[0]] = np.array(value, dtype=object) \
                if isinstance(value, _Batch) else np.asarray(value)

    # -- patterns
    def fold_bias(self, n: Any) -> bool:
        """MatMul then Add of a bias vector: the bias of the linear layer the MatMul became."""
        values = [self.values.get(name) for name in n.input]
        if len(values) != 2 or not any(isinstance(v, np.ndarray) for v in values):
            return False
        if self.fed_by_refused(n):
            return True
        tensor_index = 0 if isinstance(values[0], Tensor) else 1
        x, bias = values[tensor_index], values[1 - tensor_index]
        if not isinstance(x, Tensor):
            self.refuse(n, "adds two constants; netspec computes on the network's values only")
            return True
        wrong_type = self.type_problem(n, 1 - tensor_index, bias)
        if wrong_type:
            self.refuse(n, f"the bias ('{n.input[1 - tensor_index]}') {wrong_type}")
            return True
        if (x.node not in self._biasless and bias.dtype.kind == "f"
                and bias.shape == (1, *x.shape) and x.shape == x.onnx_shape):
            # a learned tensor added to every sample (ViT's position embedding)
            tensor = self.emit(n, "parameter", [], {"shape": list(bias.shape),
                                                    "batch_axis": True}, {"": bias})
            if tensor is not None:
                self.emit(n, "add", [x, tensor], {}, {})
            return True
        if (x.node not in self._biasless or self.uses[n.input[tensor_index]] != 1
                or bias.dtype == object):
            self.refuse(n, "adding a constant is supported only as the bias right after a "
                           "MatMul")
            return True
        size = x.shape[-1]
        vector = self.bias_vector(n, bias, size)
        if vector is None:
            return True
        self._biasless.discard(x.node)
        self.nodes[x.node]["bias"] = True
        self.params[f"{x.node}.bias"] = vector
        self.alias(n, x)
        return True

    def flatten(self, n: Any, x: Tensor) -> None:
        flat = (math.prod(x.onnx_shape),)
        if x.shape != x.onnx_shape and len(x.shape) == 1:
            # netspec holds it flat already (a global average pooling's output)
            self.alias(n, x, flat)
        else:
            self.emit(n, "flatten", [x], {}, {})

    def reshape(self, n: Any, x: Tensor, target: list[Any]) -> None:
        dims = self._reshape_dims(n, x, target)
        if not dims or dims[0] is not BATCH or any(d is BATCH for d in dims[1:]):
            self.refuse(n, f"reshape to {dims} changes the batch axis; netspec reshapes each "
                           f"sample, (N, ...) to (N, ...)")
            return
        rest = dims[1:]
        per_sample = math.prod(x.onnx_shape)
        if rest == list(x.onnx_shape):
            self.alias(n, x)
        elif rest in ([-1], [per_sample]):
            self.flatten(n, x)
        elif x.shape != x.onnx_shape:
            self.refuse(n, f"reshape of a pooled {format_shape(x.onnx_shape)} value to {rest} "
                           f"is not supported")
        else:
            # any per-sample shape, one -1 at most (netspec's reshape checks the sizes)
            self.emit(n, "reshape", [x], {"shape": [int(d) for d in rest]}, {})

    def sample_shape(self, n: Any, x: Tensor, target: list[Any]) -> list[int] | None:
        """The per-sample shape a Reshape (``n``) of ``x`` to ``target`` gives, its -1
        worked out; None where the reshape moves the batch axis or does not fit."""
        dims = self._reshape_dims(n, x, target)
        if not dims or dims[0] is not BATCH or any(d is BATCH for d in dims[1:]):
            return None
        rest = [int(d) for d in dims[1:]]
        known = math.prod(d for d in rest if d != -1)
        size = math.prod(x.onnx_shape)
        if rest.count(-1) > 1 or any(d < -1 or d == 0 for d in rest) or not known or \
                size % known:
            return None
        rest = [size // known if d == -1 else d for d in rest]
        return rest if math.prod(rest) == size else None

    def _reshape_dims(self, n: Any, x: Tensor, target: list[Any]) -> list[Any]:
        """``target`` with each 0 copied from the input and the batch recognised (BATCH)."""
        allowzero = self.attr(n, "allowzero", 0)
        full = [BATCH, *x.onnx_shape]
        dims: list[Any] = []
        for index, dim in enumerate(target):
            if isinstance(dim, (int, np.integer)) and int(dim) == 0 and not allowzero:
                dim = full[index] if index < len(full) else 0
            dims.append(dim if dim is BATCH else int(dim))
        per_sample = math.prod(x.onnx_shape)
        if dims and dims[0] == -1 and all(isinstance(d, int) and d > 0 for d in dims[1:]) \
                and math.prod(dims[1:]) == per_sample:
            dims[0] = BATCH  # the batch, inferred
        elif dims and self.static_batch is not None and dims[0] == self.static_batch and \
                all(isinstance(d, int) and (d > 0 or d == -1) for d in dims[1:]):
            # the file's fixed batch, written as a number (`x.view(x.size(0), -1)` traced
            # from one image writes [1, -1]); its own axes are checked below as per sample
            dims[0] = BATCH
        return dims

    def fold_concat(self, n: Any) -> np.ndarray | None:
        arrays = [self.values[name] for name in n.input]
        try:
            return np.concatenate([np.atleast_1d(a) for a in arrays],
                                  axis=self.attr(n, "axis", 0))
        except (ValueError, TypeError) as exc:  # numpy's AxisError is a ValueError
            self.refuse(n, f"cannot join these constants: {exc}")
            return None

    # -- the walk
    def _opset(self) -> int:
        versions = [entry.version for entry in self.model.opset_import
                    if entry.domain in ("", "ai.onnx")]
        if not versions:
            self.problems.append("the model imports no version of the standard ONNX op set")
            return 0
        if versions[0] < MIN_OPSET:
            self.problems.append(f"opset {versions[0]} is older than netspec reads "
                                 f"({MIN_OPSET} and newer); convert it with "
                                 f"onnx.version_converter")
        return int(versions[0])

    def _inputs(self, input_shape: Sequence[int] | None, bound: Mapping[str, np.ndarray]
                ) -> None:
        initialised = {tensor.name for tensor in self.graph.initializer}
        self._read_constants(bound)
        data = [value for value in self.graph.input
                if value.name not in initialised and value.name not in bound]
        if input_shape is not None and len(data) != 1:
            self.problems.append(f"--input-shape sets one input's shape; this model has "
                                 f"{len(data)} inputs")
            input_shape = None
        batches = set()
        for value in data:
            batches.add(self._input(value, input_shape))
            # an input netspec cannot take: its users are not blamed for it again
            self.values.setdefault(value.name, _POISON)
        # a batch the file fixes (torch.onnx.export from one example image writes 1): shape
        # arithmetic then holds it as a number where a batch-free export holds the batch
        self.static_batch = batches.pop() if len(batches) == 1 else None

    def _input(self, value: Any, override: Sequence[int] | None) -> int | None:
        """Read one graph input; returns the batch size its shape fixes, if it fixes one."""
        where = f"input '{value.name}'"
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            self.problems.append(f"{where}: {kind or 'untyped'} inputs are not supported; "
                                 f"netspec takes float tensors")
            return None
        tensor_type = value.type.tensor_type
        type_name = _type_name(self.onnx, tensor_type.elem_type)
        if type_name != "FLOAT":
            self.problems.append(f"{where}: {type_name} values are not supported; netspec "
                                 f"networks take FLOAT (float32) inputs")
            return None
        if not tensor_type.HasField("shape"):
            if override is None:
                self.problems.append(f"{where}: the model does not give its shape; pass "
                                     f"--input-shape (per sample, e.g. 1,28,28)")
                return None
            dims: list[Any] = ["N", *override]
        else:
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                    for d in tensor_type.shape.dim]
        if override is not None:
            if len(override) != len(dims) - 1:
                self.problems.append(f"{where}: --input-shape gives {len(override)} axes; the "
                                     f"model's input has {len(dims) - 1} besides the batch")
                return None
            dims = [dims[0], *override]
        per_sample = dims[1:]
        if not per_sample:
            self.problems.append(f"{where}: shape {dims} has no axis besides the batch; "
                                 f"netspec inputs need at least one")
            return None
        symbolic = [d for d in per_sample if not isinstance(d, int) or d <= 0]
        if symbolic:
            shown = ["N", *per_sample]
            example = ",".join(str(d) if isinstance(d, int) and d > 0 else "224"
                               for d in per_sample)
            self.problems.append(f"{where}: shape {shown} has symbolic axes {symbolic}; pass "
                                 f"the per-sample sizes with --input-shape, e.g. {example}")
            return None
        node_id = clean_id(value.name, "input")
        while node_id in self._ids:
            node_id += "_input"
        raw = {"op": "input", "shape": [int(d) for d in per_sample]}
        try:
            REGISTRY["input"].Params.model_validate(raw, strict=True)
        except ValidationError as exc:
            self.problems.append(f"{where}: {exc.errors()[0]['msg']}")
            return None
        self._ids.add(node_id)
        self.nodes[node_id] = raw
        self.input_ids[value.name] = node_id
        shape = tuple(raw["shape"])
        self.values[value.name] = Tensor(node_id, shape, shape)
        return dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None

    def _read_constants(self, bound: Mapping[str, np.ndarray]) -> None:
        """Initializers and Constant nodes: sizes checked as a whole before any is read."""
        tensors = [(f"initializer '{t.name}'", t.name, t) for t in self.graph.initializer]
        tensors += [(f"{self._where(n)}", n.output[0] if n.output else "", a.t)
                    for n in self.graph.node if n.op_type == "Constant"
                    for a in n.attribute if a.name == "value"]
        claimed, readable = 0, []
        for where, name, tensor in tensors:
            try:
                count = _claimed_values(tensor)
                if count > MAX_TENSOR_VALUES:
                    raise _TensorProblem(f"claims {count:,} values, more than netspec reads "
                                         f"({MAX_TENSOR_VALUES:,})")
            except _TensorProblem as exc:
                self.problems.append(f"{where} {exc}")
                self.values[name] = _POISON
                continue
            size = self.onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize \
                if _type_name(self.onnx, tensor.data_type) in _CONSTANT_TYPES else 1
            claimed += count * size
            readable.append((where, name, tensor))
        room = available_memory()
        if room is not None and claimed > room:
            self.problems.append(f"the model's tensors claim {claimed:,} bytes; this machine "
                                 f"has {room:,} available (refused before reading them)")
            readable = []
            self.values.update((name, _POISON) for _, name, _ in tensors)
        if len(self.graph.sparse_initializer):
            self.problems.append("sparse initializers are not supported")
        for where, name, tensor in readable:
            if where.startswith("initializer"):
                try:
                    self.values[name] = read_tensor(tensor, self.directory)
                except _TensorProblem as exc:
                    self.problems.append(f"{where} {exc}")
                    self.values[name] = _POISON
        for name, array in bound.items():
            self.values[name] = np.asarray(array)

    def run(self) -> None:
        if len(self.graph.node) > MAX_NODES:
            self.problems.append(f"{len(self.graph.node):,} nodes is more than netspec imports "
                                 f"({MAX_NODES:,})")
            return
        data_inputs = {value.name for value in self.graph.input if value.name in self.input_ids}
        # a recognised region's nodes are read as one op at its end (by first output's name:
        # protobuf hands out a new object at each access)
        ends: dict[str, tuple[Callable[[Translator, Any], None], Any]] = {}
        within: set[str] = set()
        # patterns know nodes by their first output; a node without one is refused below,
        # and the import with it, so the graph is read node by node
        whole = all(n.output and n.output[0] for n in self.graph.node)
        for find, read in self.patterns if whole else ():
            for region in find(self.graph, data_inputs):
                if region.members & within:
                    continue  # an earlier pattern holds some of its nodes
                ends[region.end.output[0]] = (read, region)
                within.update(region.members)
        for n in self.graph.node:
            key = n.output[0] if n.output else None
            if key in ends:
                read, region = ends[key]
                read(self, region)
                self._poison_unset(n)
            elif key not in within:
                self.translate(n)

    def translate(self, n: Any) -> None:
        """Read one node through its importer (a pattern's region that does not hold what the
        pattern needs is read node by node, in the graph's order)."""
        self._translate(n)
        self._poison_unset(n)

    def _poison_unset(self, n: Any) -> None:
        for output in n.output:
            if output and output not in self.values:
                self.values[output] = _POISON

    def static_shape(self, name: str) -> list[int] | None:
        """The full shape of value ``name`` (batch axis included) as ONNX's shape inference
        gives it, where every axis is a number; None otherwise."""
        if self._inferred is None:
            try:
                inferred = self.onnx.shape_inference.infer_shapes(self.model)
            except (self.onnx.shape_inference.InferenceError, ValueError, RuntimeError):
                inferred = self.model
            self._inferred = {}
            for value in (*inferred.graph.value_info, *inferred.graph.input,
                          *inferred.graph.output):
                dims = value.type.tensor_type.shape.dim
                if value.type.tensor_type.HasField("shape") and all(
                        d.HasField("dim_value") for d in dims):
                    self._inferred[value.name] = [int(d.dim_value) for d in dims]
        return self._inferred.get(name)

    def _translate(self, n: Any) -> None:
        if n.domain not in ("", "ai.onnx"):
            self.refuse(n, f"ops of domain '{text_of(n.domain)}' are not supported")
        elif n.op_type in self.control_flow:
            self.refuse(n, "control flow is not supported: a netspec network is one fixed "
                           "graph")
        elif not n.output or not n.output[0]:
            self.refuse(n, "the node has no output")
        elif self._arity_problem(n):
            self.refuse(n, self._arity_problem(n))
        elif n.op_type == "Expand" and self._learned_tensor(n):
            return
        elif n.op_type in _LEARNED_OPERAND and self._lift_learned_tensors(n):
            return  # noqa: SIM114 - two different reasons to stop
        elif (n.op_type in _NUMERIC or n.op_type in self.folded) and self.all_constant(n):
            # shape arithmetic, even for an op that has an importer for the network's values
            self._fold(n)
        elif n.op_type in self.importers:
            self.importers[n.op_type](self, n)
        elif n.op_type in self.folded or n.op_type in _NUMERIC:
            self._fold(n)
        else:
            self._unsupported = True
            self.refuse(n, f"the op {text_of(n.op_type)} is not supported")

    def _lift_learned_tensors(self, n: Any) -> bool:
        """A float constant of two or more axes beside a network value in Concat, Add or Mul
        is a learned tensor (ViT's class token and position embedding, ConvNeXt's layer
        scale): it becomes a ``parameter`` node named as the constant, which
        torch.onnx.export names by the module's state_dict key, and ``n`` reads that node.
        Returns True when ``n`` was refused on the way (nothing more to do)."""
        values = [self.values.get(name) for name in n.input]
        tensors = [v for v in values if isinstance(v, Tensor)]
        if not tensors:
            return False
        rank = len(tensors[0].onnx_shape) + 1  # with the batch axis
        for index, value in enumerate(values):
            if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.ndim < 2 \
                    or value.ndim > rank:
                continue
            # an axis for the batch must be 1: the same tensor for every sample
            batch_axis = value.ndim == rank
            if batch_axis and value.shape[0] != 1:
                self.refuse(n, f"the constant '{n.input[index]}' has shape "
                               f"{list(value.shape)}: a value per sample of the batch, which a "
                               f"netspec network cannot hold")
                return True
            name = self._origins.get(n.input[index], n.input[index])
            holder = self.onnx.helper.make_node("Identity", [], [f"{n.input[index]}#learned"],
                                                name=name)
            lifted = self.emit(holder, "parameter", [],
                               {"shape": [int(d) for d in value.shape],
                                "batch_axis": batch_axis}, {WHOLE_NODE: value})
            if lifted is None:
                return True
            n.input[index] = holder.output[0]
        return False

    def _learned_tensor(self, n: Any) -> bool:
        """An Expand of a weight to the batch (a class token, ``class_token.expand(n, -1,
        -1)``) becomes netspec's learned tensor; False for every other Expand."""
        data, shape = self._value(n, 0), self._value(n, 1) if len(n.input) > 1 else None
        if not (isinstance(data, np.ndarray) and data.dtype.kind == "f"
                and isinstance(shape, np.ndarray) and shape.dtype == object
                and shape.ndim == 1 and shape.size and shape[0] is BATCH
                and all(isinstance(d, (int, np.integer)) for d in shape[1:])):
            return False
        per_sample = tuple(data.shape[1:])
        if data.ndim != shape.size or data.shape[0] != 1 or any(
                int(d) not in (1, -1, size) for d, size in zip(shape[1:], per_sample)):
            self.refuse(n, f"expanding a {format_shape(data.shape)} constant to "
                           f"{[str(d) for d in shape]} is not supported; netspec broadcasts a "
                           f"learned tensor of shape (1, ...) over the batch only")
            return True
        stored, batch_axis, origin = data, True, self._origins.get(n.input[0], n.input[0])
        reshape = self._producers.get(n.input[0])
        if reshape is not None and reshape.op_type == "Reshape" and reshape.input:
            source = self.values.get(reshape.input[0])
            if isinstance(source, np.ndarray) and source.dtype.kind == "f" \
                    and source.shape == per_sample:
                # a per-sample tensor given a batch axis to expand along (netspec's export of
                # a learned tensor without batch_axis; ConvNeXt's layer scale)
                stored, batch_axis = source, False
                origin = self._origins.get(reshape.input[0], reshape.input[0])
        # named by its initializer, which exporters name by the tensor's key
        name = origin if origin in self._initializers else n.name
        holder = self.onnx.helper.make_node("Identity", [], [n.output[0]], name=name)
        self.emit(holder, "parameter", [], {"shape": [int(d) for d in stored.shape],
                                            "batch_axis": batch_axis}, {WHOLE_NODE: stored})
        return True

    def fold(self, n: Any) -> None:
        """Fold ``n`` on constants (an importer's op met on constants, not on the network's
        values)."""
        self._fold(n)

    def _fold(self, n: Any) -> None:
        """Shape arithmetic on constants, as exporters emit around a flatten."""
        op = n.op_type
        if op == "Constant":
            self._constant_node(n)
            return
        if op == "Shape":
            x = self._value(n, 0)
            if x is _POISON or x is None:
                return
            shape = np.array([BATCH, *x.onnx_shape], dtype=object) if isinstance(x, Tensor) \
                else np.array(x.shape, dtype=np.int64)
            start, end = self.attr(n, "start", 0), self.attr(n, "end", None, int)
            self.set_constant(n, shape[start:end])
            return
        if op == "Split" and isinstance(self._value(n, 0), Tensor):
            self._split_values(n, self.values[n.input[0]])
            return
        if op == "Cast" and isinstance(self._value(n, 0), Tensor):
            x = self.values[n.input[0]]
            if _type_name(self.onnx, self.attr(n, "to", 0)) == "FLOAT":
                self.alias(n, x)
            else:
                self.refuse(n, "casting the network's values to another type is not supported")
            return
        inputs = []
        for index in range(len(n.input)):
            value = self._value(n, index)
            if value is _POISON:
                return
            if isinstance(value, Tensor):
                self.refuse(n, f"{op} on the network's values is not supported; netspec folds "
                               f"{op} on constants only")
                return
            inputs.append(value)
        try:
            if op == "Split":
                for name, piece in zip(n.output, self._fold_split(n, inputs)):
                    if name:
                        self.values[name] = piece
            else:
                self.set_constant(n, self._fold_value(n, op, inputs))
        except (ValueError, TypeError, IndexError, OverflowError) as exc:
            self.refuse(n, f"cannot fold this constant: {exc}")

    def _fold_split(self, n: Any, inputs: list[Any]) -> list[np.ndarray]:
        """A constant cut into len(n.output) pieces (a packed weight split into its parts)."""
        data = np.asarray(inputs[0])
        axis = self.attr(n, "axis", 0)
        if not -data.ndim <= axis < data.ndim:
            raise ValueError(f"axis {axis} is out of range for shape {list(data.shape)}")
        sizes = self._split_sizes(n, data.shape[axis], inputs[1] if len(inputs) > 1 else None)
        return np.split(data, np.cumsum(sizes)[:-1], axis=axis)

    def _split_sizes(self, n: Any, size: int, given: Any) -> list[int]:
        """The pieces' sizes: from input 1 (opset 13 on) or the ``split`` attribute, else
        equal parts."""
        sizes = self.attr(n, "split", None, list)
        if given is not None:
            given = np.asarray(given)
            if given.dtype.kind not in "iu":
                raise ValueError(f"the sizes are {given.dtype} values, not numbers of "
                                 f"positions")
            sizes = [int(v) for v in given.reshape(-1)]
        if sizes is None:
            if size % len(n.output):
                raise ValueError(f"{size} does not split into {len(n.output)} equal parts")
            sizes = [size // len(n.output)] * len(n.output)
        if len(sizes) != len(n.output) or any(s < 0 for s in sizes) or sum(sizes) != size:
            raise ValueError(f"sizes {sizes} do not cut {size} into {len(n.output)} parts")
        return sizes

    def _split_values(self, n: Any, x: Tensor) -> None:
        """A Split of the network's values (ShuffleNet's channel split, as the newer exporter
        writes it): one netspec ``slice`` per piece."""
        rank = len(x.onnx_shape) + 1
        axis = self.attr(n, "axis", 0)
        given = self._value(n, 1) if len(n.input) > 1 and n.input[1] else None
        if given is _POISON:
            return
        if isinstance(given, Tensor):
            self.refuse(n, "the sizes of the pieces are computed by the network; netspec "
                           "splits by constant sizes")
            return
        if not -rank <= axis < rank or axis % rank == 0 or x.shape != x.onnx_shape:
            self.refuse(n, f"a split along axis {axis} of per-sample shape "
                           f"{list(x.onnx_shape)} is not supported; netspec slices one "
                           f"per-sample axis")
            return
        try:
            sizes = self._split_sizes(n, x.shape[axis % rank - 1], given)
        except ValueError as exc:
            self.refuse(n, f"cannot split: {exc}")
            return
        start = 0
        for index, (name, size) in enumerate(zip(n.output, sizes)):
            if name:
                piece = _Piece(f"{n.name or 'Split'}_{index}", n.op_type, list(n.input),
                               [name], list(n.attribute))
                self.emit(piece, "slice", [x], {"dim": axis % rank, "start": start,
                                                "end": start + size}, {})
            start += size

    def _fold_value(self, n: Any, op: str, inputs: list[Any]) -> np.ndarray:
        data = inputs[0]
        if op in _NUMERIC:
            return self._fold_numeric(n, op, inputs)
        if op == "Cast":
            to = _type_name(self.onnx, self.attr(n, "to", 0))
            if data.dtype == object or to not in _CONSTANT_TYPES:
                return data
            return data.astype(self.onnx.helper.tensor_dtype_to_np_dtype(self.attr(n, "to", 0)))
        if op == "Gather":
            indices = np.asarray(inputs[1])
            if indices.dtype.kind not in "iu":
                raise ValueError("indices must be integers")
            return np.take(data, indices.astype(np.int64), axis=self.attr(n, "axis", 0))
        if op == "Trilu":
            # a causal mask, built as PyTorch's generate_square_subsequent_mask builds it
            if data.ndim < 2:
                raise ValueError(f"Trilu needs two axes or more, got shape {list(data.shape)}")
            k = int(np.asarray(inputs[1]).reshape(-1)[0]) \
                if len(inputs) > 1 and inputs[1] is not None else 0
            return np.triu(data, k) if self.attr(n, "upper", 1) else np.tril(data, k)
        axes = self.attr(n, "axes", None, list)
        if axes is None and len(inputs) > 1:
            axes = [int(a) for a in np.asarray(inputs[1]).reshape(-1)]
        if op == "Unsqueeze":
            rank = data.ndim + len(axes or [])
            for axis in sorted(a + rank if a < 0 else a for a in axes or []):
                data = np.expand_dims(data, axis)
            return data
        if op == "Squeeze":
            return np.squeeze(data, axis=None if axes is None else tuple(axes))
        # Slice (opset 10+: starts, ends, axes, steps as inputs) on a 1-D constant
        if data.ndim != 1 or len(inputs) < 3:
            raise ValueError("only slices of 1-D constants with starts and ends are folded")
        start, end = (int(np.asarray(v).reshape(-1)[0]) for v in inputs[1:3])
        step = int(np.asarray(inputs[4]).reshape(-1)[0]) if len(inputs) > 4 else 1
        if step == 0:
            raise ValueError("step 0")
        return data[start:end:step]

    def _fold_numeric(self, n: Any, op: str, inputs: list[Any]) -> np.ndarray:
        """Arithmetic on constants, as exporters write it around shapes (a split's sizes, an
        expand's target, attention's scale). The batch symbol takes part in none of it."""
        if op == "ConstantOfShape":
            dims = [int(d) for d in np.asarray(inputs[0]).reshape(-1)]
            if any(d < 0 for d in dims) or math.prod(dims) > MAX_ATTRIBUTE_VALUES ** 2:
                raise ValueError(f"shape {dims} is negative or too large")
            fill = next((a.t for a in n.attribute if a.name == "value"), None)
            value = read_tensor(fill, self.directory).reshape(-1)[:1] if fill is not None \
                else np.zeros(1, np.float32)
            return np.full(dims, value[0] if value.size else 0, dtype=value.dtype)
        # sizes picked out of a shape are plain numbers once the batch is not among them
        arrays = [np.asarray(a) if np.asarray(a).dtype != object
                  or any(d is BATCH for d in np.asarray(a).reshape(-1))
                  else np.asarray(a).astype(np.int64) for a in inputs]
        if any(a.dtype == object for a in arrays):
            raise ValueError("it depends on the batch size")
        if op == "Expand":
            dims = [int(d) for d in arrays[1].reshape(-1)]
            if any(d < 0 for d in dims) or len(dims) > 32:
                raise ValueError(f"cannot expand to {dims}")
            count = math.prod(max(d, 1) for d in np.broadcast_shapes(arrays[0].shape,
                                                                    tuple(dims)))
            room = available_memory()
            if count > MAX_TENSOR_VALUES or (room is not None and
                                             count * arrays[0].dtype.itemsize > room // 4):
                raise ValueError(f"expanding to {dims} is too large")
            expanded = arrays[0] * np.ones(dims, dtype=arrays[0].dtype)
            if expanded.shape == arrays[0].shape:
                # class_token.expand(n, -1, -1) traced at n = 1: still the weight itself
                self._origins[n.output[0]] = self._origins.get(n.input[0], n.input[0])
            return expanded
        if op == "Reshape":
            dims = [int(d) for d in arrays[1].reshape(-1)]
            # a 0 keeps that axis (allowzero=0, the default and what exporters write)
            dims = [arrays[0].shape[i] if d == 0 and i < arrays[0].ndim else d
                    for i, d in enumerate(dims)]
            return arrays[0].reshape(dims)
        if op == "Where":
            return np.where(arrays[0].astype(bool), arrays[1], arrays[2])
        if op in ("Sqrt", "Neg"):
            return np.sqrt(arrays[0]) if op == "Sqrt" else np.negative(arrays[0])
        a, b = arrays[0], arrays[1]
        if op == "Div" and a.dtype.kind in "iu" and b.dtype.kind in "iu":
            if np.any(b == 0):
                raise ValueError("integer division by zero")
            return (np.abs(a) // np.abs(b) * np.sign(a) * np.sign(b)).astype(a.dtype)
        if op == "Mod":
            return np.fmod(a, b) if self.attr(n, "fmod", 0) else np.mod(a, b)
        functions = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
                     "Div": np.divide, "Equal": np.equal, "Pow": np.power}
        with np.errstate(all="ignore"):
            return np.asarray(functions[op](a, b))

    def _constant_node(self, n: Any) -> None:
        if len(n.attribute) != 1:
            self.refuse(n, "a Constant needs exactly one value attribute")
            return
        attribute = n.attribute[0]
        try:
            if attribute.name == "value":
                value = read_tensor(attribute.t, self.directory)
            elif attribute.name in ("value_float", "value_int", "value_floats", "value_ints"):
                raw = _attribute_value(self.onnx, attribute)
                if isinstance(raw, list) and len(raw) > MAX_ATTRIBUTE_VALUES ** 2:
                    raise _TensorProblem(f"holds {len(raw):,} values")
                value = np.array(raw, dtype=np.float32 if "float" in attribute.name
                                 else np.int64)
            else:
                raise _TensorProblem(f"a {attribute.name} constant is not supported")
        except _TensorProblem as exc:
            self.refuse(n, f"the constant {exc}")
            return
        self.set_constant(n, value)

    # -- the outcome
    def output(self) -> Tensor | None:
        outputs = list(self.graph.output)
        if len(outputs) != 1:
            self.problems.append(f"the model has {len(outputs)} outputs; a netspec network "
                                 f"has one")
            return None
        value = self.values.get(outputs[0].name)
        if value is None:
            self.problems.append(f"output '{outputs[0].name}' is produced by no node")
        elif isinstance(value, Tensor):
            return value
        elif value is not _POISON:
            self.problems.append(f"output '{outputs[0].name}' is a constant, not computed from "
                                 f"the inputs")
        return None

    def metadata(self) -> dict[str, str]:
        return {text_of(entry.key): text_of(entry.value) for entry in self.model.metadata_props}

    def restore_dropout(self, output: Tensor) -> str:
        """Put back the dropout a netspec export left out (recorded in the metadata); returns
        the output node, which may be one of them. Records that do not fit are ignored."""
        try:
            records = json.loads(self.metadata().get(META_DROPOUT, "[]"))
        except ValueError:
            return output.node
        if not isinstance(records, list):
            return output.node
        output_node = output.node
        for record in records[:MAX_NODES]:
            if not isinstance(record, dict):
                continue
            node_id, source, p = record.get("id"), record.get("input"), record.get("p")
            consumers = record.get("consumers")
            op = record.get("op", "dropout")
            if op == "multihead_attention" and isinstance(node_id, str) and \
                    isinstance(p, float) and 0 <= p < 1 and \
                    self.nodes.get(node_id, {}).get("op") == op:
                self.nodes[node_id]["dropout"] = p
                continue
            if not (op in ("dropout", "stochastic_depth") and isinstance(node_id, str)
                    and isinstance(source, str)
                    and isinstance(p, (int, float)) and not isinstance(p, bool)
                    and 0 <= p < 1 and isinstance(consumers, list)
                    and node_id not in self.nodes and source in self.nodes
                    and all(isinstance(c, str) and c in self.nodes
                            and source in _inputs_of(self.nodes[c]) for c in consumers)):
                continue
            nodes = {}
            for key, fields in self.nodes.items():
                nodes[key] = fields
                if key == source:
                    nodes[node_id] = {"op": op, "inputs": source, "p": float(p)}
            for consumer in consumers:
                fields = nodes[consumer]
                inputs = [node_id if i == source else i for i in _inputs_of(fields)]
                fields["inputs"] = inputs[0] if len(inputs) == 1 else inputs
            self.nodes = nodes
            if not consumers and output_node == source and \
                    node_id == self.graph.output[0].name:
                output_node = node_id
        return output_node


    def restore_forms(self) -> None:
        """Give back the op a netspec export wrote where another op shares its ONNX form
        (transpose and permute, flatten and reshape), as the metadata records it: taken only
        where it computes exactly what the imported node computes (the same shape, and for a
        transposition the same order of axes). Records that do not fit are ignored."""
        try:
            records = json.loads(self.metadata().get(META_FORMS, "[]"))
        except ValueError:
            return
        for record in records[:MAX_NODES] if isinstance(records, list) else []:
            if not isinstance(record, dict):
                continue
            node_id, op, fields = record.get("id"), record.get("op"), record.get("fields")
            if not (isinstance(node_id, str) and node_id in self._shapes and op in SHARED_FORMS
                    and isinstance(fields, dict) and self.nodes[node_id]["op"] in SHARED_FORMS):
                continue
            current = self.nodes[node_id]
            raw = {**fields, "op": op, "inputs": current["inputs"]}
            in_shapes, shape = self._shapes[node_id]
            try:
                written = REGISTRY[op](REGISTRY[op].Params.model_validate(raw, strict=True))
                imported = REGISTRY[current["op"]](REGISTRY[current["op"]].Params
                                                   .model_validate(current, strict=True))
                same = tuple(written.output_shape(in_shapes)) == shape
                if hasattr(written, "axes") or hasattr(imported, "axes"):
                    # a transposition: the same order of axes, not just the same shape
                    same = same and hasattr(written, "axes") and hasattr(imported, "axes") \
                        and written.axes(in_shapes[0]) == imported.axes(in_shapes[0])
            except (ValidationError, ShapeError, TypeError, ValueError):
                continue
            if same:
                self.nodes[node_id] = raw


def _inputs_of(fields: Mapping[str, Any]) -> list[str]:
    inputs = fields.get("inputs", [])
    return [inputs] if isinstance(inputs, str) else list(inputs)
