"""Which texts can begin a valid step: the checker behind constrained decoding.

The agent writes a step one token at a time; before a token is taken, the step's text with the
token appended is checked here, and a token that cannot lead to a valid step is never written.
Valid steps are a subset of the sandbox's language, in the layout the task catalogue's programs use:

    name = call(argument, argument)      one statement per line, a space around `=`, ", " between
    call(argument)                       arguments; no blank lines, no keywords
    stop()                               the last statement of a program: nothing may follow it

where a call is a library function given between its least and its most number of arguments, and an
argument is a name already assigned (in an earlier step or earlier in this one), a call, a number, a
string or a list of these, of a kind the parameter's annotation allows (a Scan where a Scan is
taken, a number where a number is; a name's kind is that of its value, a call's that of its
function's return annotation). Strings in the places that name
something of the subject are restricted to a vocabulary: what `segment` segments, the contrast,
session or date `select` and `scans` pick. A call of a vision function is followed at once by the
mark of its latent features (`MARK`). So "name is not defined", unknown targets, calls with the wrong
number of arguments and code after `stop()` cannot be written.

The check works on characters and reparses the whole step each time (steps are a few hundred
characters; a check takes tens of microseconds), so any tokenizer's pieces can be checked.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

MARK = "\x01"  # stands for the agent's <MOD> token in the text checked
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
FREE_TEXT_FORBIDDEN = frozenset('"\\\n' + MARK)
# Bounds of a valid step, well above what any catalogue program needs, so that decoding cannot write
# a name, a text or a step without end.
MAX_NAME_CHARS = 32
MAX_STRING_CHARS = 160
MAX_NUMBER_CHARS = 12
MAX_STATEMENTS = 16
MAX_CALL_DEPTH = 5  # calls within calls
MAX_LIST_ITEMS = 16


class Status(Enum):
    INVALID = 0  # no continuation makes a valid step
    PARTIAL = 1  # a proper beginning of a valid step
    COMPLETE = 2  # a valid step as it stands (it may also go on)


class _Incomplete(Exception):
    """The text ended where the step may still go on."""


class _Invalid(Exception):
    pass


@dataclass(frozen=True)
class Signature:
    least: int  # arguments without a default
    most: int
    accepts: tuple[frozenset[str] | None, ...]  # per parameter: the kinds of value it takes (None: any)
    returns: frozenset[str] | None  # the kinds of value a call gives (None: any)


def kinds_of(annotation: object) -> frozenset[str] | None:
    """The kinds of value an annotation names: str, number, list, none, or a class of the runtime
    (Scan, Volume, Encoding); None where it says nothing (Any, or no annotation)."""
    text = str(annotation)
    if text in ("Any", "<class 'inspect._empty'>", str(inspect.Parameter.empty)):
        return None
    kinds = set()
    for part in (p.strip() for p in text.split("|")):
        if part.startswith(("list", "tuple", "Sequence")):
            kinds.add("list")
        elif part in ("float", "int"):
            kinds.add("number")
        elif part in ("str", "None", "Scan", "Volume", "Encoding"):
            kinds.add(part.lower() if part in ("str", "None") else part)
        else:
            return None
    return frozenset(kinds)


def kind_of_value(value: object) -> frozenset[str] | None:
    """The kind of a value a program holds (None: a kind the checker does not follow)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return frozenset({"str"})
    if isinstance(value, (int, float)):
        return frozenset({"number"})
    if isinstance(value, (list, tuple)):
        return frozenset({"list"})
    name = type(value).__name__
    return frozenset({name}) if name in ("Scan", "Volume", "Encoding") else None


def signature_of(function: Callable) -> Signature:
    """Arity and kinds of a library function, from its signature and annotations."""
    signature = inspect.signature(function)
    parameters = [p for p in signature.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    least = sum(p.default is inspect.Parameter.empty for p in parameters)
    return Signature(least, len(parameters), tuple(kinds_of(p.annotation) for p in parameters),
                     kinds_of(signature.return_annotation))


def _fits(kind: frozenset[str] | None, accepts: frozenset[str] | None) -> bool:
    return accepts is None or kind is None or bool(accepts & kind)


class StepChecker:
    """Checks beginnings of steps against the library's functions (name -> callable), the names the
    program has assigned so far, and the vocabularies of named strings: (function, argument number)
    -> the strings allowed there. `vision_calls` are the functions whose call the mark must follow."""

    def __init__(self, functions: Mapping[str, Callable], vocabularies: Mapping[tuple[str, int], Iterable[str]],
                 vision_calls: Iterable[str] = ("encode", "segment")):
        self.signatures = {name: signature_of(function) for name, function in functions.items()}
        self.vocabularies = {place: frozenset(words) for place, words in vocabularies.items()}
        self.prefixes = {place: frozenset(word[:n] for word in words for n in range(len(word) + 1))
                         for place, words in self.vocabularies.items()}
        self.vision_calls = frozenset(vision_calls)
        self.names: dict[str, frozenset[str] | None] = {}  # assigned name -> kind of its value
        # What may begin an argument depends only on its kinds, the nesting depth and the names
        # assigned so far, not on the text: worked out once per step, not at every check.
        self.starts: dict = {}  # (kinds, depth, names) -> (names, functions) that may begin there
        self.makeable: dict = {}  # names -> {(kinds, depth) -> whether such an argument can be written}

    def assigned(self, namespace: Mapping[str, object]) -> None:
        """The values the program's earlier steps assigned, by name (they may be used from now on)."""
        self.names = {name: kind_of_value(value) for name, value in namespace.items() if name not in self.signatures}
        self.starts.clear()
        self.makeable.clear()

    def check(self, text: str) -> Status:
        """Whether `text` begins a valid step, or is one."""
        try:
            _Parser(self, text).step()
        except _Invalid:
            return Status.INVALID
        except _Incomplete:
            return Status.PARTIAL
        return Status.COMPLETE


class _Parser:
    def __init__(self, checker: StepChecker, text: str):
        self.checker, self.text, self.at = checker, text, 0
        self.depth = 0
        self._assigned(dict(checker.names))

    def _assigned(self, names: dict[str, frozenset[str] | None]) -> None:
        self.names, self.names_key = names, frozenset(names.items())
        self.makeable = self.checker.makeable.setdefault(self.names_key, {})  # (kinds, depth) -> bool

    # --- characters -------------------------------------------------------------------------------
    def peek(self) -> str:
        if self.at >= len(self.text):
            raise _Incomplete
        return self.text[self.at]

    def expect(self, literal: str) -> None:
        for character in literal:
            if self.peek() != character:
                raise _Invalid
            self.at += 1

    def identifier(self, allowed: Iterable[str] | None) -> str:
        """An identifier; ending the text inside it is fine while it can still become one of `allowed`
        (None: any identifier)."""
        match = IDENTIFIER.match(self.text, self.at)
        if not match:
            self.peek()
            raise _Invalid
        word = match.group()
        if len(word) > MAX_NAME_CHARS:
            raise _Invalid
        self.at = match.end()
        if self.at == len(self.text):
            if allowed is None or any(name.startswith(word) for name in allowed):
                raise _Incomplete
            raise _Invalid
        return word

    # --- grammar ----------------------------------------------------------------------------------
    def step(self) -> None:
        for _ in range(MAX_STATEMENTS):
            stopped = self.statement()
            if self.at == len(self.text):
                return
            self.expect("\n")
            if self.at == len(self.text):
                return
            if stopped:
                raise _Invalid  # nothing after stop()
        raise _Invalid

    def statement(self) -> bool:
        """One statement; whether it was `stop()`."""
        start = self.at
        word = self.identifier(None)
        if self.peek() == "(":
            self.at = start
            called, _ = self.call(top=True)
            return called == "stop"
        if word in self.checker.signatures:
            raise _Invalid  # a library function cannot be assigned
        self.expect(" = ")
        # A value the program computes, never one it makes up; a call that gives nothing is no value.
        kind = self.expression(None, None, literals=False)
        if kind == frozenset({"none"}):
            raise _Invalid
        self._assigned({**self.names, word: kind})
        return False

    def call(self, top: bool = False) -> tuple[str, frozenset[str] | None]:
        functions = self.checker.signatures
        name = self.identifier(functions)
        if name not in functions:
            raise _Invalid
        if name == "stop" and not top:
            raise _Invalid
        signature = functions[name]
        self.expect("(")
        self.depth += 1
        if self.depth > MAX_CALL_DEPTH:
            raise _Invalid
        count = 0
        if self.peek() != ")":
            if signature.most == 0:
                raise _Invalid
            while True:
                self.expression(signature.accepts[count], (name, count))
                count += 1
                if self.peek() == ")":
                    break
                if count == signature.most:
                    raise _Invalid  # refused at the comma, so that no text leads to a dead end
                self.expect(", ")
        if count < signature.least:
            raise _Invalid
        self.expect(")")
        self.depth -= 1
        if name in self.checker.vision_calls:
            self.expect(MARK)
        return name, signature.returns

    def expression(self, accepts: frozenset[str] | None, place: tuple[str, int] | None,
                   literals: bool = True) -> frozenset[str] | None:
        """An argument taking the kinds `accepts` (of the function and argument number `place`), or
        the value of an assignment; gives the expression's kind. Literals only where the parameter
        names their kind (a string, a number, a list)."""
        character = self.peek()
        literal = {'"': "str", "[": "list", "-": "number"}.get(character, "number" if character.isdigit() else None)
        if literal is not None:
            if not literals or accepts is None or literal not in accepts:
                raise _Invalid
            {"str": lambda: self.string(place), "list": self.list, "number": self.number}[literal]()
            return frozenset({literal})
        # Only names and calls of a kind the parameter takes may begin here, so that decoding never
        # starts a call whose value cannot be used (a call that gives nothing is a statement).
        names, calls = self._starts(accepts)
        start = self.at
        word = self.identifier(names | calls)
        if self.peek() == "(":
            if word not in calls:
                raise _Invalid
            self.at = start
            _, kind = self.call()
        elif word in names:
            kind = self.names[word]
        else:
            raise _Invalid  # not defined (yet), or of another kind
        return kind

    def _starts(self, accepts: frozenset[str] | None) -> tuple[frozenset[str], frozenset[str]]:
        key = (accepts, self.depth, self.names_key)
        if key not in self.checker.starts:
            self.checker.starts[key] = (
                frozenset(name for name, kind in self.names.items() if _fits(kind, accepts)),
                frozenset(name for name, signature in self.checker.signatures.items() if self._may_call(signature, accepts)))
        return self.checker.starts[key]

    def _may_call(self, signature: Signature, accepts: frozenset[str] | None) -> bool:
        """Whether a call of this function can begin here and be completed: it gives a value of a
        kind the place takes, and each of its required arguments can be made within the nesting
        bound. (Without the second condition, decoding could open a call it can never close.)"""
        return (signature.returns != frozenset({"none"}) and _fits(signature.returns, accepts)
                and self.depth < MAX_CALL_DEPTH
                and all(self._makeable(kinds, self.depth + 1) for kinds in signature.accepts[:signature.least]))

    def _makeable(self, accepts: frozenset[str] | None, depth: int) -> bool:
        """Whether an argument taking `accepts` can be written at this nesting depth: as a literal, a
        name assigned so far, or a call whose own required arguments can be."""
        key = (accepts, depth)
        if key not in self.makeable:
            self.makeable[key] = False  # a function needing its own kind does not count on itself
            self.makeable[key] = (
                accepts is None or bool(accepts & {"str", "number", "list"})
                or any(_fits(kind, accepts) for kind in self.names.values())
                or (depth < MAX_CALL_DEPTH and any(
                    signature.returns != frozenset({"none"}) and _fits(signature.returns, accepts)
                    and all(self._makeable(kinds, depth + 1) for kinds in signature.accepts[:signature.least])
                    for signature in self.checker.signatures.values())))
        return self.makeable[key]

    def string(self, place: tuple[str, int] | None) -> None:
        """A string literal; in a place with a vocabulary, one of its words (or a beginning of one)."""
        self.expect('"')
        start = self.at
        end = self.text.find('"', start)
        content = self.text[start:] if end < 0 else self.text[start:end]
        if len(content) > MAX_STRING_CHARS or any(c in FREE_TEXT_FORBIDDEN for c in content):
            raise _Invalid
        if place in self.checker.vocabularies:
            if content not in self.checker.prefixes[place]:
                raise _Invalid
            if end >= 0 and content not in self.checker.vocabularies[place]:
                raise _Invalid
        if end < 0:
            raise _Incomplete
        self.at = end + 1

    def number(self) -> None:
        match = NUMBER.match(self.text, self.at)
        rest = self.text[self.at:]
        if match and len(match.group()) > MAX_NUMBER_CHARS:
            raise _Invalid
        if not match:
            if rest in ("-",):
                raise _Incomplete
            raise _Invalid
        self.at = match.end()
        rest = self.text[self.at:]
        if rest == "" or (rest == "." and match.group(1) is None and len(match.group()) + 2 <= MAX_NUMBER_CHARS):
            # "5." may become "5.5"; "5.5." may not, nor a number that would grow past its bound
            raise _Incomplete
        if rest.startswith("."):
            raise _Invalid

    def list(self) -> None:
        self.expect("[")
        if self.peek() == "]":
            self.at += 1
            return
        for count in range(1, MAX_LIST_ITEMS + 1):
            if IDENTIFIER.match(self.text, self.at):
                self.expression(None, None, literals=False)  # a name or call, of any kind
            else:
                self.expression(frozenset({"str", "number"}), None)
            if self.peek() == "]":
                self.at += 1
                return
            if count == MAX_LIST_ITEMS:
                raise _Invalid
            self.expect(", ")
