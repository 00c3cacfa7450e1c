"""The step checker behind constrained decoding (voxelprompt/runtime/steps.py): every beginning of
every program the task catalogue can produce passes, and each kind of invalid step is refused as
soon as its text shows it."""

from __future__ import annotations

import numpy as np
import pytest

from voxelprompt.core.scan import Scan
from voxelprompt.core.volume import Volume
from voxelprompt.model.tokens import MOD, PHI, mark_vision_calls
from voxelprompt.runtime import Environment
from voxelprompt.runtime.library import Library
from voxelprompt.runtime.steps import MARK, Status, StepChecker, kinds_of, signature_of
from voxelprompt.runtime.vision import Encoding
from voxelprompt.tasks import values
from voxelprompt.tasks.catalogue import catalogue

VOCABULARIES = {("segment", 1): values.segment_targets(), ("select", 0): frozenset(values.domain("contrast")),
                ("select", 1): frozenset({"01", "02"}), ("select", 2): frozenset({"2024-03-02"}),
                ("scans", 0): frozenset({"01", "02"})}


@pytest.fixture(scope="module")
def checker() -> StepChecker:
    return StepChecker(Library([]).functions(), VOCABULARIES)


def _marked(step: str) -> str:
    return mark_vision_calls(step).replace(MOD + PHI, MARK)


def _values_of(step: str) -> dict:
    """What a step assigns, as values of the kinds its calls return (checked without running it)."""
    scan = Scan(Volume(np.zeros((2, 2, 2), np.float32), np.eye(4)), "T1w", "01", "2024-03-02")
    examples = {"Encoding": Encoding((scan,)), "Volume": scan.volume, "Scan": scan, "number": 1.0, "str": "x",
                "list": []}
    found = {}
    for line in step.splitlines():
        if " = " in line:
            name, call = line.split(" = ", 1)
            kinds = signature_of(Library([]).functions()[call.split("(", 1)[0]]).returns
            found[name] = examples[sorted(kinds)[0]] if kinds else None
    return found


def test_every_beginning_of_every_catalogue_program_passes(checker):
    rng = np.random.default_rng(0)
    for task in catalogue().values():
        for _ in range(5):
            namespace: dict = {}
            for step in task.program_for(values.bind(task.values, None, rng).program):
                checker.assigned(namespace)
                text = _marked(step)
                for end in range(len(text)):
                    assert checker.check(text[:end]) is not Status.INVALID, (task.name, text[:end])
                assert checker.check(text) is Status.COMPLETE, (task.name, text)
                namespace |= _values_of(step)


@pytest.mark.parametrize("text", [
    "read(value)",  # a name never assigned
    "value = volume_mm3(regoin)",  # a misspelt name: refused at its first wrong letter
    'segment(e, "left hipocampus")',  # not a target of the vocabulary
    'x = select("T3w")',  # not a contrast
    'x = scans("03")',  # not a session
    "stop()\nread(e)",  # nothing after stop()
    "stop()\n\n",
    "e = encode(scans())\nread(e)",  # a vision call without its mark
    "read(e, e)",  # too many arguments
    "x = volume_mm3()",  # too few
    "x = 5",  # a value made up rather than computed
    "x = report(\"a\", 1.0, \"mm\")",  # a call that gives nothing, assigned
    'choose(select("T1w"), ["a", "b"])',  # a scan where text is taken
    'read("text")',  # a literal where the parameter does not say it takes one
    "stop = 1",  # a library function assigned
    "e  = encode(scans())",  # the layout of the catalogue's programs
    "import os",
    "x = e.__class__",
    "\nread(e)",  # no blank lines
    "x = height_mm(report(",  # a call whose value cannot be the argument: refused as it begins
    "x = volume_mm3(select(",
    "x" * 33 + " = volume_mm3(region)",  # names, texts, numbers, nesting and steps all have bounds
    'output(region, "' + "a" * 161 + '")',
    "x = crop(region, region, 1234567890123)",
    "x = " + "volume_mm3(" * 6,
    "read(e)\n" * 16 + "read(e)",
])
def test_invalid_steps_are_refused(checker, text):
    scan = Scan(Volume(np.zeros((2, 2, 2), np.float32), np.eye(4)), "T1w", "01", "2024-03-02")
    checker.assigned({"e": Encoding((scan,)), "region": scan.volume})
    assert checker.check(text) is Status.INVALID


def test_a_step_is_complete_only_at_the_end_of_a_statement(checker):
    checker.assigned({})
    assert checker.check("") is Status.PARTIAL
    assert checker.check("e = encode(scans())") is Status.PARTIAL  # the mark must follow
    assert checker.check("e = encode(scans())" + MARK) is Status.COMPLETE
    assert checker.check("e = encode(scans())" + MARK + "\n") is Status.COMPLETE
    assert checker.check("e = encode(scans())" + MARK + "\nread(") is Status.PARTIAL
    assert checker.check('x = crop(select("T1w"), segment(encode(scans())' + MARK + ', "brain")' + MARK + ", 5.") \
        is Status.PARTIAL
    assert checker.check('x = crop(select("T1w"), segment(encode(scans())' + MARK + ', "brain")' + MARK + ", 5.5)") \
        is Status.COMPLETE


def test_the_checker_accepts_what_the_sandbox_runs(checker):
    """A complete step of the checker is one the sandbox's allow-list accepts."""
    environment = Environment(Library([]).functions())
    rng = np.random.default_rng(1)
    for task in catalogue().values():
        for step in task.program_for(values.bind(task.values, None, rng).program):
            assert environment.check(step).ok, step


def test_annotations_give_kinds():
    assert kinds_of("str") == {"str"} and kinds_of("float") == {"number"} and kinds_of("list[Scan]") == {"list"}
    assert kinds_of("Volume | Scan") == {"Volume", "Scan"} and kinds_of("Any") is None
    assert signature_of(Library([]).functions()["crop"]).least == 2


# The characters of code, and every character of the vocabularies.
ALPHABET = sorted(set("abcdefghijklmnopqrstuvwxyz_0123456789(),[]\"= .-\n" + MARK)
                  | {c for words in VOCABULARIES.values() for word in words for c in word})


@pytest.mark.parametrize("seed", range(6))
def test_no_beginning_of_a_step_is_a_dead_end(checker, seed):
    """Wherever decoding stands, some character continues the step or the step may end there: a
    random walk through what the checker allows never gets stuck (a prefix it accepts can always be
    completed), whatever the limits on arguments, lists, nesting and statements."""
    scan = Scan(Volume(np.zeros((2, 2, 2), np.float32), np.eye(4)), "T1w", "01", "2024-03-02")
    checker.assigned({"e": Encoding((scan,)), "region": scan.volume, "answer": "hyperintense", "value": 1.0})
    rng = np.random.default_rng(seed)
    text = ""
    for _ in range(150):
        allowed = [c for c in ALPHABET if checker.check(text + c) is not Status.INVALID]
        if not allowed:
            assert checker.check(text) is Status.COMPLETE, repr(text)
            return
        text += allowed[int(rng.integers(len(allowed)))]
