"""Omega's interpreter: runs the agent's code, which is untrusted text, without ever `exec`-ing it.

The code is parsed with `ast` and checked against an allow-list before anything runs: assignments to
plain names, calls of library functions by name, names already in the namespace, numeric and string
literals, arithmetic, comparisons, boolean logic, lists and tuples. There are no imports, attributes,
subscripts, dunder or private names, lambdas, definitions, comprehensions, loops or builtins, so
nothing can reach Python's object graph. The checked tree is then evaluated node by node here, with
bounds on code size, tree depth, number sizes, string and list lengths, statements and wall time.

A step is atomic: its assignments reach the persistent namespace only if the whole step succeeds.
Every failure comes back as `Feedback` text the agent can read; nothing raises into the host.
"""

from __future__ import annotations

import ast
import math
import operator
import re
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Limits:
    max_code_chars: int = 4000
    max_nodes: int = 600
    max_depth: int = 40
    max_statements: int = 40
    max_seconds_per_step: float = 60.0  # checked between operations; one library call is not interrupted
    max_int_bits: int = 128
    max_text_chars: int = 2000  # strings the code builds, and the feedback text
    max_list_items: int = 256
    # A value's size: list and tuple items and text characters, counted through every nested list
    # (three nested lists of 200 items each hold 8 million); and how deeply lists may nest.
    max_value_size: int = 20_000
    max_value_depth: int = 16


@dataclass(frozen=True)
class Feedback:
    ok: bool
    output: str = ""  # what the agent reads: values of expression statements, or the error
    error: str = ""

    def __str__(self) -> str:
        return self.output if self.ok else f"error: {self.error}"


class SandboxError(Exception):
    """A rule of the sandbox was broken; the message is written for the agent."""


_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}
_ALLOWED_NODES = (ast.Module, ast.Assign, ast.Expr, ast.Call, ast.Name, ast.Load, ast.Store, ast.Constant,
                  ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.List, ast.Tuple, ast.keyword, ast.And,
                  ast.Or, *_BINARY, *_UNARY, *_COMPARE)


class Environment:
    """A persistent namespace plus the library functions the agent's code may call.

    `Environment()` works without any image: images and other values are added with `add` (or
    `namespace=`), and `run(code)` returns `Feedback`.
    """

    def __init__(self, functions: Mapping[str, Callable[..., Any]] | None = None,
                 namespace: Mapping[str, Any] | None = None, limits: Limits = Limits()):
        self.limits = limits
        self.functions: dict[str, Callable[..., Any]] = {}
        self.namespace: dict[str, Any] = {}
        for name, function in (functions or {}).items():
            self.functions[_checked_name(name)] = function
        for name, value in (namespace or {}).items():
            self.add(name, value)

    def add(self, name: str, value: Any) -> None:
        if _checked_name(name) in self.functions:
            raise ValueError(f"{name!r} is a library function")
        self.namespace[name] = value

    def run(self, code: str) -> Feedback:
        try:
            tree = self._parse(code)
            step = _Step(self, dict(self.namespace), time.monotonic() + self.limits.max_seconds_per_step)
            outputs = [text for statement in tree.body if (text := step.execute(statement)) is not None]
        except SandboxError as error:
            return Feedback(ok=False, output=f"error: {error}", error=str(error))
        except RecursionError:
            return Feedback(ok=False, output="error: the code is nested too deeply", error="the code is nested too deeply")
        except Exception as error:  # noqa: BLE001 - a library function failed: the agent reads why
            message = _clip(f"{type(error).__name__}: {error}", self.limits.max_text_chars)
            return Feedback(ok=False, output=f"error: {message}", error=message)
        self.namespace = step.namespace
        return Feedback(ok=True, output=_clip("\n".join(outputs), self.limits.max_text_chars))

    def check(self, code: str) -> Feedback:
        """Whether code passes the allow-list, without running it (names are resolved when it runs)."""
        try:
            self._parse(code)
        except SandboxError as error:
            return Feedback(ok=False, output=f"error: {error}", error=str(error))
        except RecursionError:
            return Feedback(ok=False, output="error: the code is nested too deeply", error="the code is nested too deeply")
        return Feedback(ok=True)

    def _parse(self, code: str) -> ast.Module:
        if not isinstance(code, str):
            raise SandboxError("code must be text")
        if len(code) > self.limits.max_code_chars:
            raise SandboxError(f"the code is longer than {self.limits.max_code_chars} characters")
        try:
            with warnings.catch_warnings():  # the agent's odd literals must not print host warnings
                warnings.simplefilter("ignore")
                tree = ast.parse(code, mode="exec")
        except (SyntaxError, ValueError, MemoryError) as error:
            raise SandboxError(f"syntax error: {getattr(error, 'msg', error)}") from None
        if len(tree.body) > self.limits.max_statements:
            raise SandboxError(f"more than {self.limits.max_statements} statements in one step")
        nodes = 0
        for node, depth in _walk(tree):
            nodes += 1
            if nodes > self.limits.max_nodes:
                raise SandboxError(f"the code has more than {self.limits.max_nodes} parts")
            if depth > self.limits.max_depth:
                raise SandboxError("the code is nested too deeply")
            _check_node(node, self.functions)
        return tree


@dataclass
class _Step:
    environment: Environment
    namespace: dict[str, Any]
    deadline: float
    values: list[str] = field(default_factory=list)

    def execute(self, statement: ast.stmt) -> str | None:
        if isinstance(statement, ast.Assign):
            value = self.evaluate(statement.value)
            for target in statement.targets:
                self.assign(target, value)
            return None
        value = self.evaluate(statement.value)  # an expression statement
        return None if value is None else describe(value, self.environment.limits.max_text_chars)

    def assign(self, target: ast.expr, value: Any) -> None:
        if isinstance(target, ast.Name):
            if target.id in self.environment.functions:
                raise SandboxError(f"{target.id} is a library function and cannot be assigned")
            self.namespace[target.id] = value
            return
        names = target.elts  # a tuple or list of names (checked before running)
        if not isinstance(value, (tuple, list)) or len(value) != len(names):
            raise SandboxError(f"cannot unpack into {len(names)} names")
        for name, item in zip(names, value):
            self.assign(name, item)

    def evaluate(self, node: ast.expr) -> Any:
        if time.monotonic() > self.deadline:
            raise SandboxError(f"the step ran longer than {self.environment.limits.max_seconds_per_step:g} s")
        if isinstance(node, ast.Constant):
            return self.bounded(node.value)
        if isinstance(node, ast.Name):
            if node.id in self.namespace:
                return self.namespace[node.id]
            if node.id in self.environment.functions:
                raise SandboxError(f"{node.id} is a function: call it, e.g. {node.id}(...)")
            raise SandboxError(f"name {node.id!r} is not defined")
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [self.evaluate(item) for item in node.elts]
            return self.bounded(items if isinstance(node, ast.List) else tuple(items))
        if isinstance(node, ast.UnaryOp):
            operand = self.evaluate(node.operand)
            if not isinstance(node.op, ast.Not):
                _require_number(operand, "a sign")
            return self.bounded(_UNARY[type(node.op)](operand))
        if isinstance(node, ast.BinOp):
            return self.bounded(self.arithmetic(node.op, self.evaluate(node.left), self.evaluate(node.right)))
        if isinstance(node, ast.BoolOp):
            result = self.evaluate(node.values[0])
            for value in node.values[1:]:
                if isinstance(node.op, ast.And) != bool(result):
                    break
                result = self.evaluate(value)
            return result
        if isinstance(node, ast.Compare):
            left = self.evaluate(node.left)
            for op, comparator in zip(node.ops, node.comparators):
                right = self.evaluate(comparator)
                if not (isinstance(left, (int, float, str)) and isinstance(right, (int, float, str))):
                    raise SandboxError("only numbers and text can be compared")
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.Call):
            function = self.environment.functions[node.func.id]
            args = [self.evaluate(arg) for arg in node.args]
            kwargs = {keyword.arg: self.evaluate(keyword.value) for keyword in node.keywords}
            return function(*args, **kwargs)
        raise SandboxError(f"{type(node).__name__} is not allowed")  # unreachable after the check

    def arithmetic(self, op: ast.operator, left: Any, right: Any) -> Any:
        limits = self.environment.limits
        if isinstance(op, ast.Add) and isinstance(left, str) and isinstance(right, str):
            if len(left) + len(right) > limits.max_text_chars:
                raise SandboxError("text is too long")
            return left + right
        _require_number(left, "arithmetic")
        _require_number(right, "arithmetic")
        if isinstance(op, ast.Pow):
            if abs(right) > 64 or (isinstance(left, int) and isinstance(right, int) and right > 0
                                   and abs(left) > 1 and right * math.log2(abs(left)) > limits.max_int_bits):
                raise SandboxError("the number would be too large")
        if isinstance(op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
            raise SandboxError("division by zero")
        try:
            return _BINARY[type(op)](left, right)
        except (OverflowError, ValueError, ZeroDivisionError) as error:
            raise SandboxError(f"arithmetic failed: {error}") from None

    def bounded(self, value: Any) -> Any:
        limits = self.environment.limits
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int) and value.bit_length() > limits.max_int_bits:
            raise SandboxError("the number would be too large")
        if isinstance(value, float) and not math.isfinite(value):
            raise SandboxError("the result is not a finite number")
        if isinstance(value, complex):
            raise SandboxError("complex numbers are not allowed")
        if isinstance(value, str) and len(value) > limits.max_text_chars:
            raise SandboxError("text is too long")
        if isinstance(value, (list, tuple)):
            if len(value) > limits.max_list_items:
                raise SandboxError("the list is too long")
            _check_size(value, limits)
        if isinstance(value, bytes):
            raise SandboxError("bytes are not allowed")
        return value


def _check_node(node: ast.AST, functions: Mapping[str, Callable[..., Any]]) -> None:
    if not isinstance(node, _ALLOWED_NODES):
        raise SandboxError(f"{_describe_node(node)} is not allowed")
    if isinstance(node, ast.Name):
        _checked_name(node.id)
    if isinstance(node, ast.Assign):
        for target in node.targets:
            names = target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]
            if not all(isinstance(name, ast.Name) for name in names):
                raise SandboxError("only plain names can be assigned")
    if isinstance(node, ast.Expr) and not isinstance(node.value, ast.expr):
        raise SandboxError("not an expression")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in functions:
            name = node.func.id if isinstance(node.func, ast.Name) else "that"
            raise SandboxError(f"{name} is not a library function")
        if any(keyword.arg is None for keyword in node.keywords):
            raise SandboxError("** arguments are not allowed")
    if isinstance(node, ast.keyword) and node.arg is not None:
        _checked_name(node.arg)
    if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, str, bool, type(None))):
        raise SandboxError(f"{type(node.value).__name__} literals are not allowed")


def _checked_name(name: str) -> str:
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise SandboxError(f"name {name!r} is not allowed: use letters, digits and underscores, starting with a letter")
    return name


def _walk(tree: ast.AST):
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        yield node, depth
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _require_number(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SandboxError(f"{what} needs numbers, got {type(value).__name__}")


def _check_size(value: list | tuple, limits: Limits) -> None:
    """Refuse a list whose nested items and text exceed the size or depth bound. The count stops as
    soon as the bound is passed, so it costs at most `max_value_size` steps whatever the value shares."""
    size = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, tuple)):
            if depth > limits.max_value_depth:
                raise SandboxError(f"lists nest more than {limits.max_value_depth} deep")
            size += len(item)
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            size += len(item)
        if size > limits.max_value_size:
            raise SandboxError(f"the value holds more than {limits.max_value_size:,} items and characters")


def describe(value: Any, limit_chars: int) -> str:
    """What the agent reads of a value: its repr (a float at 6 significant digits; other objects by
    type), built piece by piece and clipped at `limit_chars`, so a large value costs no more."""
    if isinstance(value, float):
        return _clip(f"{value:.6g}", limit_chars)
    text, length = [], 0
    for piece in _repr_pieces(value):
        text.append(piece)
        length += len(piece)
        if length > limit_chars:
            break
    return _clip("".join(text), limit_chars)


def read_text(value: Any, limit_chars: int) -> str:
    """A value as `read` hands it back to the agent: text as it is, anything else as `describe` gives it."""
    return _clip(value, limit_chars) if isinstance(value, str) else describe(value, limit_chars)


def _repr_pieces(value: Any):
    """repr(value) in pieces, without building nested lists' text first."""
    if isinstance(value, (list, tuple)):
        yield "[" if isinstance(value, list) else "("
        for number, item in enumerate(value):
            if number:
                yield ", "
            yield from _repr_pieces(item)
        yield "]" if isinstance(value, list) else ("," if len(value) == 1 else "") + ")"
    elif isinstance(value, (int, float, str, bool)) or value is None:
        yield repr(value)
    else:
        yield f"<{type(value).__name__}>"


def _describe_node(node: ast.AST) -> str:
    names = {ast.Attribute: "attribute access (a.b)", ast.Subscript: "indexing (a[b])", ast.Import: "import",
             ast.ImportFrom: "import", ast.Lambda: "lambda", ast.FunctionDef: "def", ast.ClassDef: "class",
             ast.For: "for loops", ast.While: "while loops", ast.ListComp: "comprehensions",
             ast.JoinedStr: "f-strings", ast.Starred: "* arguments"}
    return names.get(type(node), type(node).__name__)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 15] + " ... (clipped)"
