"""The expression language of specs: a string value that starts with ``=`` is computed.

``out_channels = "= planes * 2"``, ``stride = "= 2 if index == 0 else 1"``,
``repeat = "= depths[1]"``, ``out_channels = "= channels(x) // 2"``. Expressions are parsed
with Python's ``ast`` and evaluated by a small interpreter over an allow-list of node kinds;
nothing is ever passed to ``eval``.
Values are ints, floats, bools, strings and lists of them; sizes are bounded so that a spec
cannot ask for a billion-element list or a thousand-digit number.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from netspec.common.errors import NetspecError, did_you_mean

PREFIX = "="
MAX_TEXT = 1000
MAX_LIST = 10_000
MAX_STRING = 10_000
MAX_INT = 2**63 - 1
MAX_ROUND_DIGITS = 30
FUNCTIONS = ("abs", "float", "int", "len", "max", "min", "round", "str", "sum")
# functions that read the shape of a node made before: shape(x) is its whole shape,
# channels(x) its first axis, height(x) and width(x) the last two of a (C, H, W) shape
SHAPE_FUNCTIONS = ("shape", "channels", "height", "width")
# the scope entry holding the shape oracle (not an identifier, so no spec can name it)
SHAPES = "shape()"
MAX_NAME = 200
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
Value = int | float | bool | str | list


class ExpressionError(NetspecError):
    """An expression that cannot be evaluated; the message says why, for a person."""


def is_expression(value: Any) -> bool:
    """Whether a spec value is an expression (a string starting with ``=``, not ``==``).

    >>> is_expression("= planes * 2"), is_expression("relu"), is_expression("==literal")
    (True, False, False)
    """
    return isinstance(value, str) and value.startswith(PREFIX) and not value.startswith("==")


def literal_string(value: str) -> str:
    """A string value as written, with the ``==`` escape for a literal leading ``=`` undone."""
    return value[1:] if value.startswith("==") else value


def evaluate(text: str, scope: Mapping[str, Any]) -> Value:
    """The value of an expression (with or without its leading ``=``) in ``scope``.

    >>> evaluate("= 2 if index == 0 else 1", {"index": 0})
    2
    >>> evaluate("= max(widths[-1] // 2, 8)", {"widths": [16, 32]})
    16
    """
    body = text[1:] if is_expression(text) else text
    tree = _parse(body.strip())
    try:
        return _Evaluator(scope).value(tree.body)
    except RecursionError:
        raise ExpressionError(f"expression '{body.strip()[:40]}...' is nested too "
                              f"deeply") from None


def substitute(value: Any, scope: Mapping[str, Any]) -> Any:
    """A spec value with every expression in it (also inside lists) replaced by its value."""
    if is_expression(value):
        return evaluate(value, scope)
    if isinstance(value, str):
        return literal_string(value)
    if isinstance(value, list):
        return [substitute(item, scope) for item in value]
    return value


def name_from(written: Any, scope: Mapping[str, Any]) -> str:
    """A name written as a pattern (``"denselayer{index + 1}"``: each ``{...}`` an
    expression) or an expression (``"= 'block' + str(stage)"``); ints become digits.

    >>> name_from("denselayer{index + 1}", {"index": 0}), name_from("= str(at + 2)", {"at": 4})
    ('denselayer1', '6')
    """
    if not isinstance(written, str):
        raise ExpressionError(f"a name must be a string (a pattern like \"layer{{index}}\" or "
                              f"an expression), got {type_name(written)} {_show(written)}")
    if is_expression(written):
        parts = [evaluate(written, scope)]
    else:
        pieces = _PLACEHOLDER.split(literal_string(written))
        # odd pieces are the expressions between braces
        parts = [evaluate(piece, scope) if i % 2 else piece for i, piece in enumerate(pieces)]
    for part in parts:
        if not isinstance(part, str | int) or isinstance(part, bool):
            raise ExpressionError(f"a name is made of strings and ints, got {type_name(part)} "
                                  f"{_show(part)}")
    name = "".join(str(part) for part in parts)
    if len(name) > MAX_NAME:
        raise ExpressionError(f"a name of {len(name)} characters is longer than {MAX_NAME}")
    if name and (any(not segment for segment in name.split("."))
                 or any(not ch.isprintable() or ch.isspace() or ch in "{}\"'" for ch in name)):
        raise ExpressionError(f"name {_show(name)} must be dot-separated parts of printable "
                              f"characters without spaces, braces or quotes")
    return name


def type_name(value: Any) -> str:
    """The name a spec author knows a value's type by."""
    if isinstance(value, bool):
        return "bool"
    return {int: "int", float: "float", str: "string", list: "list"}.get(type(value),
                                                                       type(value).__name__)


@lru_cache(maxsize=4096)
def _parse(body: str) -> ast.Expression:
    if not body:
        raise ExpressionError("empty expression after '='")
    if len(body) > MAX_TEXT:
        raise ExpressionError(f"expression is {len(body)} characters long; the limit is "
                              f"{MAX_TEXT}")
    try:
        return ast.parse(body, mode="eval")
    except SyntaxError as exc:
        column = f" at column {exc.offset}" if exc.offset else ""
        raise ExpressionError(f"bad syntax in expression '{body}'{column}: "
                              f"{exc.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExpressionError(f"expression '{body[:40]}...' is nested too deeply") from None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _checked(value: Value) -> Value:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise ExpressionError(f"a value of {len(str(abs(value)))} digits is too large")
    if isinstance(value, float) and not math.isfinite(value):
        raise ExpressionError(f"the result is {value}, not a finite number")
    if isinstance(value, list) and len(value) > MAX_LIST:
        raise ExpressionError(f"a list of {len(value):,} items is longer than {MAX_LIST:,}")
    if isinstance(value, str) and len(value) > MAX_STRING:
        raise ExpressionError(f"a string of {len(value):,} characters is longer than "
                              f"{MAX_STRING:,}")
    return value


def _divide(kind: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(left: Any, right: Any) -> Any:
        if right == 0:
            raise ExpressionError("division by zero")
        return kind(left, right)
    return apply


_ARITHMETIC: dict[type, tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", _divide(operator.truediv)),
    ast.FloorDiv: ("//", _divide(operator.floordiv)),
    ast.Mod: ("%", _divide(operator.mod)),
}
_COMPARISONS: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.In: lambda a, b: operator.contains(b, a),
    ast.NotIn: lambda a, b: not operator.contains(b, a),
}


class _Evaluator:
    def __init__(self, scope: Mapping[str, Any]):
        self.scope = scope

    def value(self, node: ast.AST) -> Value:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise ExpressionError(f"'{_source(node)}' is not allowed in an expression "
                                  f"(allowed: numbers, strings, lists, variables, + - * / // "
                                  f"%, comparisons, and/or/not, x if c else y, list[i], "
                                  f"list[a:b], {', '.join((*FUNCTIONS, *SHAPE_FUNCTIONS))})")
        return _checked(method(node))

    def _Constant(self, node: ast.Constant) -> Value:
        if not isinstance(node.value, int | float | str) or isinstance(node.value, complex):
            raise ExpressionError(f"'{_source(node)}' is not a number, string or bool")
        return node.value

    def _Name(self, node: ast.Name) -> Value:
        names = {"true": True, "false": False, "True": True, "False": False}
        if node.id in self.scope:
            return self.scope[node.id]
        if node.id in names:
            return names[node.id]
        known = sorted(name for name in self.scope if name.isidentifier())
        listed = f" (known: {', '.join(known)})" if known and len(known) <= 12 else ""
        raise ExpressionError(f"unknown variable '{node.id}'{did_you_mean(node.id, known)}"
                              f"{listed}")

    def _List(self, node: ast.List) -> Value:
        if len(node.elts) > MAX_LIST:
            raise ExpressionError(f"a list of {len(node.elts):,} items is too long")
        return [self.value(item) for item in node.elts]

    def _UnaryOp(self, node: ast.UnaryOp) -> Value:
        if isinstance(node.op, ast.Invert):
            raise ExpressionError(f"operator '~' in '{_source(node)}' is not allowed (allowed: "
                                  f"- + not)")
        operand = self.value(node.operand)
        if isinstance(node.op, ast.Not):
            return not self._truth(operand, "not")
        if not _number(operand):
            raise ExpressionError(f"unary minus/plus needs a number, got {type_name(operand)} "
                                  f"{_show(operand)}")
        return -operand if isinstance(node.op, ast.USub) else +operand

    def _BinOp(self, node: ast.BinOp) -> Value:
        if type(node.op) not in _ARITHMETIC:
            raise ExpressionError(f"operator in '{_source(node)}' is not allowed (allowed: "
                                  f"+ - * / // %)")
        symbol, apply = _ARITHMETIC[type(node.op)]
        left, right = self.value(node.left), self.value(node.right)
        joinable = symbol == "+" and type(left) is type(right) and isinstance(left, str | list)
        if joinable:
            if len(left) + len(right) > (MAX_LIST if isinstance(left, list) else MAX_STRING):
                raise ExpressionError(f"joining gives {len(left) + len(right):,} items, "
                                      f"too many")
            return left + right
        if not (_number(left) and _number(right)):
            raise ExpressionError(f"'{symbol}' needs two numbers, got {type_name(left)} "
                                  f"{_show(left)} and {type_name(right)} {_show(right)}")
        return apply(left, right)

    def _BoolOp(self, node: ast.BoolOp) -> Value:
        word = "and" if isinstance(node.op, ast.And) else "or"
        for operand in node.values:
            truth = self._truth(self.value(operand), word)
            if truth != (word == "and"):
                return truth
        return word == "and"

    def _Compare(self, node: ast.Compare) -> Value:
        left = self.value(node.left)
        for op, right_node in zip(node.ops, node.comparators):
            if type(op) not in _COMPARISONS:
                raise ExpressionError(f"'is' in '{_source(node)}' is not allowed; compare "
                                      f"values with == or !=")
            right = self.value(right_node)
            try:
                holds = _COMPARISONS[type(op)](left, right)
            except TypeError:
                raise ExpressionError(f"cannot compare {type_name(left)} {_show(left)} with "
                                      f"{type_name(right)} {_show(right)}") from None
            if not holds:
                return False
            left = right
        return True

    def _IfExp(self, node: ast.IfExp) -> Value:
        if self._truth(self.value(node.test), "if"):
            return self.value(node.body)
        return self.value(node.orelse)

    def _Subscript(self, node: ast.Subscript) -> Value:
        container = self.value(node.value)
        if not isinstance(container, list | str):
            raise ExpressionError(f"only lists can be indexed, got {type_name(container)} "
                                  f"{_show(container)}")
        if isinstance(node.slice, ast.Slice):
            step = self._slice_bound(node.slice.step)
            if step == 0:
                raise ExpressionError("a slice step must not be 0")
            return container[self._slice_bound(node.slice.lower):
                             self._slice_bound(node.slice.upper):step]
        index = self.value(node.slice)
        if not isinstance(index, int) or isinstance(index, bool):
            raise ExpressionError(f"a list index must be an int, got {type_name(index)} "
                                  f"{_show(index)}")
        if not -len(container) <= index < len(container):
            raise ExpressionError(f"index {index} is out of range for {_show(container)} "
                                  f"({len(container)} items)")
        return container[index]

    def _slice_bound(self, part: ast.AST | None) -> int | None:
        if part is None:
            return None
        bound = self.value(part)
        if not isinstance(bound, int) or isinstance(bound, bool):
            raise ExpressionError(f"a slice bound must be an int, got {type_name(bound)} "
                                  f"{_show(bound)}")
        return bound

    def _Call(self, node: ast.Call) -> Value:
        name = node.func.id if isinstance(node.func, ast.Name) else _source(node.func)
        known = (*FUNCTIONS, *SHAPE_FUNCTIONS)
        if name not in known or not isinstance(node.func, ast.Name):
            raise ExpressionError(f"unknown function '{name}'{did_you_mean(name, known)} "
                                  f"(functions: {', '.join(known)})")
        if node.keywords:
            raise ExpressionError(f"{name}() takes no keyword arguments")
        if name in SHAPE_FUNCTIONS:
            return self._shape_call(name, node.args)
        args = [self.value(arg) for arg in node.args]
        return _call(name, args)

    def _shape_call(self, name: str, args: list[ast.expr]) -> Value:
        """A shape function: its one argument names a node, bare (``x``) or as a string
        computed by an expression (``'layer' + str(i)``)."""
        if len(args) != 1:
            raise ExpressionError(f"{name}() takes one node, e.g. {name}(x)")
        node = _dotted(args[0])
        node = node if node is not None else self.value(args[0])
        if not isinstance(node, str):
            raise ExpressionError(f"{name}() takes a node's name, got {type_name(node)} "
                                  f"{_show(node)}")
        oracle = self.scope.get(SHAPES)
        if oracle is None:
            raise ExpressionError(f"{name}() reads the shape of a node, so it can be used only "
                                  f"in [nodes] and in blocks")
        shape = list(oracle(node))
        if name == "shape":
            return shape
        if name == "channels":
            if not shape:
                raise ExpressionError(f"channels({node}): '{node}' has no axes")
            return shape[0]
        if len(shape) != 3:
            raise ExpressionError(f"{name}({node}) needs a (channels, height, width) shape; "
                                  f"'{node}' has {tuple(shape)}")
        return shape[1] if name == "height" else shape[2]

    @staticmethod
    def _truth(value: Value, where: str) -> bool:
        if not isinstance(value, bool):
            raise ExpressionError(f"'{where}' needs a bool (true/false), got "
                                  f"{type_name(value)} {_show(value)}; compare it, e.g. "
                                  f"x != 0")
        return value


def _call(name: str, args: list[Value]) -> Value:
    if name in ("min", "max"):
        values = args[0] if len(args) == 1 and isinstance(args[0], list) else args
        if not values or not all(_number(v) for v in values):
            raise ExpressionError(f"{name}() needs numbers or one list of numbers, got "
                                  f"{_show(args)}")
        return (min if name == "min" else max)(values)
    if name == "sum":
        values = args[0] if len(args) == 1 and isinstance(args[0], list) else None
        if values is None or not all(_number(v) for v in values):
            raise ExpressionError(f"sum() needs one list of numbers, got {_show(args)}")
        return sum(values)
    if name == "str":
        if len(args) != 1 or not isinstance(args[0], int | float | str):
            raise ExpressionError(f"str() needs one number or string, got {_show(args)}")
        return _show(args[0]) if isinstance(args[0], bool) else str(args[0])
    if name == "len":
        if len(args) != 1 or not isinstance(args[0], list | str):
            raise ExpressionError(f"len() needs one list, got {_show(args)}")
        return len(args[0])
    if name == "round":
        if not 1 <= len(args) <= 2 or not _number(args[0]) or (
                len(args) == 2 and (not isinstance(args[1], int) or isinstance(args[1], bool)
                                    or abs(args[1]) > MAX_ROUND_DIGITS)):
            raise ExpressionError(f"round() needs a number and optional digits between "
                                  f"-{MAX_ROUND_DIGITS} and {MAX_ROUND_DIGITS}, got "
                                  f"{_show(args)}")
        return round(*args)
    if len(args) != 1 or not _number(args[0]):
        raise ExpressionError(f"{name}() needs one number, got {_show(args)}")
    return {"abs": abs, "float": float, "int": int}[name](args[0])


def _dotted(node: ast.AST) -> str | None:
    """A bare node name in a shape function, dots allowed (``layer1.conv``); None for an
    expression that computes the name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        outer = _dotted(node.value)
        return f"{outer}.{node.attr}" if outer is not None else None
    return None


def _source(node: ast.AST) -> str:
    try:
        return ast.unparse(node)
    except (ValueError, RecursionError):  # pragma: no cover - unparse of a parsed tree
        return type(node).__name__


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    try:
        text = json.dumps(value) if isinstance(value, str | list) else repr(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
