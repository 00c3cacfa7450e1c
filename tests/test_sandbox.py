"""Omega's interpreter: what the agent's code may do, and that nothing else gets through."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voxelprompt.runtime import Environment, Feedback, Limits

PAYLOADS = [block.strip("\n") for block in
            "\n".join(line for line in (Path(__file__).parent / "data" / "sandbox_escapes.txt").read_text().splitlines()
                      if not line.startswith("#")).split("\n----\n")]


def library() -> dict:
    calls = []

    def volume_mm3(mask, scale=1.0):
        calls.append(("volume_mm3", mask, scale))
        return 1234.5 * scale

    def fails():
        raise ValueError("no such structure")

    def slow():
        time.sleep(0.05)
        return 1

    return {"volume_mm3": volume_mm3, "fails": fails, "slow": slow, "calls": lambda: len(calls)}


def test_there_are_at_least_fifty_payloads():
    assert len(PAYLOADS) >= 50


@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_every_known_escape_is_refused_without_effect(payload, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    environment = Environment(library(), namespace={"x": 1, "mask": "opaque"})
    before = dict(environment.namespace)
    feedback = environment.run(payload)
    assert isinstance(feedback, Feedback)
    assert not feedback.ok, f"accepted: {payload!r}"
    assert feedback.error and feedback.output.startswith("error: ")
    assert environment.namespace == before
    assert not (tmp_path / "CANARY").exists()


def test_the_allowed_language_works_and_the_namespace_persists():
    environment = Environment(library())
    first = environment.run("a = 2\nb = a * 3 + 1\nv = volume_mm3('hippocampus', scale=2)\nv")
    assert first.ok and first.output == "2469"
    second = environment.run("ratio = v / b\nratio > 300 and b == 7\n[a, b]\n(a, 'text')")
    assert second.ok
    assert second.output.splitlines() == ["True", "[2, 7]", "(2, 'text')"]
    assert environment.namespace["ratio"] == pytest.approx(2469 / 7)
    assert Environment().run("x, y = (1, 2.5)\nx + y").output == "3.5"


def test_a_failing_step_changes_nothing_and_explains_itself():
    environment = Environment(library(), namespace={"kept": 1})
    feedback = environment.run("kept = 2\nnew = 3\nfails()")
    assert not feedback.ok and "ValueError: no such structure" in feedback.error
    assert environment.namespace == {"kept": 1}
    assert "name 'missing' is not defined" in environment.run("missing").error
    assert "volume_mm3 is a function" in environment.run("volume_mm3").error
    assert "division by zero" in environment.run("1 / 0").error
    assert "is not a library function" in environment.run("exit()").error


def test_a_step_past_its_time_limit_stops():
    environment = Environment(library(), limits=Limits(max_seconds_per_step=0.02))
    feedback = environment.run("a = slow()\nb = slow()\nc = slow()")
    assert not feedback.ok and "ran longer" in feedback.error
    assert "a" not in environment.namespace


def test_images_can_be_added_later_and_stay_opaque():
    environment = Environment(library())
    environment.add("t1", object())
    assert environment.run("v = volume_mm3(t1)").ok
    assert "attribute access" in environment.run("t1.array").error
    assert environment.run("t1").output.startswith("<")
    with pytest.raises(ValueError):
        environment.add("volume_mm3", 1)
    with pytest.raises(Exception):
        environment.add("__class__", 1)


def test_output_is_clipped():
    environment = Environment(library(), limits=Limits(max_text_chars=50))
    assert "too long" in environment.run("'" + "a" * 60 + "'").error
    text = environment.run("'" + "a" * 40 + "'\n'" + "b" * 40 + "'").output
    assert len(text) <= 50 and text.endswith("(clipped)")


_FRAGMENTS = [
    "x", "y", "volume_mm3", "fails", "(", ")", "[", "]", ",", "=", "+", "-", "*", "**", "/", "//", "%", "==", "<",
    " and ", " or ", " not ", "1", "0", "-1", "10", "10**10", "9" * 20, "2.5", "'a'", "'{}'", "__import__", "__class__",
    ".", "__subclasses__", "open", "exec", "eval", "getattr", "lambda", ":", "for", "in", "while", "import", "os",
    "\n", " ", ";", "scale=", "*", "**", "{", "}", "@", "yield", "def", "class", "ｅｖａｌ", "é", "\\", "#", "'''",
]


PROGRAMS = st.one_of(st.lists(st.sampled_from(_FRAGMENTS), max_size=25).map("".join), st.text(max_size=60))


@settings(max_examples=1_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(PROGRAMS)
def test_fuzz_nothing_escapes_nothing_runs_long_memory_stays_bounded(program):
    _run_fuzzed(program)


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(PROGRAMS)
def test_fuzz_thoroughly(program):
    """The same property over ten times the programs (CI runs it with the slow tests)."""
    _run_fuzzed(program)


def _run_fuzzed(program: str) -> None:
    environment = Environment(library(), namespace={"x": 1, "y": 2.0}, limits=Limits(max_seconds_per_step=1.0))
    tracemalloc.start()
    started = time.monotonic()
    try:
        feedback = environment.run(program)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(feedback, Feedback)
    assert elapsed < 1.5
    assert peak < 20 * 2**20
    allowed = (int, float, str, bool, list, tuple, type(None))
    assert all(isinstance(value, allowed) for value in environment.namespace.values())
    assert not Path("CANARY").exists()


def _list_of(item: str, count: int) -> str:
    return "[" + ", ".join([item] * count) + "]"


def test_nested_lists_past_the_size_bound_are_refused_where_they_are_made():
    """Three assignments of 200-item lists once built 8 million elements that `repr` then walked;
    the value is refused at the assignment that creates it, in little memory."""
    environment = Environment(library())
    assert environment.run("a = " + _list_of("0", 200)).ok
    assert environment.run("b = " + _list_of("a", 99)).ok  # 19,899 items, inside the bound
    tracemalloc.start()
    try:
        feedback = environment.run("c = " + _list_of("b", 200))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not feedback.ok and "more than 20,000 items" in feedback.error
    assert "c" not in environment.namespace
    assert peak < 50 * 2**20


def test_lists_nested_past_the_depth_bound_are_refused():
    environment = Environment(library(), namespace={"a": 1})
    outcomes = [environment.run("a = [a]").ok for _ in range(Limits().max_value_depth + 1)]
    assert all(outcomes[:-1]) and not outcomes[-1]
    assert "nest more than" in environment.run("a = [a]").error


def test_what_the_agent_reads_of_a_large_value_is_clipped_without_building_it_whole():
    from voxelprompt.runtime import describe, read_text

    environment = Environment(library())
    assert environment.run("s = '" + "x" * 1000 + "'").ok
    assert environment.run("a = " + _list_of("s", 19)).ok
    shown = environment.run("a").output
    assert len(shown) <= Limits().max_text_chars and shown.endswith("(clipped)")
    assert describe([[0.5, "a"], (1,)], 100) == "[[0.5, 'a'], (1,)]" == repr([[0.5, "a"], (1,)])
    assert describe(1 / 3, 100) == "0.333333" and read_text("a word", 100) == "a word"
    assert len(read_text(["y" * 1500] * 10, 2000)) <= 2000


def test_read_hands_back_clipped_text():
    from voxelprompt.runtime.library import Library

    reader = Library([])
    assert len(reader.read(["z" * 1999] * 10)) <= Limits().max_text_chars


_NAMES = st.sampled_from(["x", "y", "z"])
_ITEMS = st.one_of(_NAMES, st.sampled_from(["0", "2.5", "'ab'", "volume_mm3(x)", "[]"]))
_LIST = st.one_of(st.lists(_ITEMS, min_size=1, max_size=80).map(lambda items: "[" + ", ".join(items) + "]"),
                  st.tuples(_NAMES, st.integers(1, 200)).map(lambda repeated: "[" + ", ".join([repeated[0]] * repeated[1]) + "]"))
_STATEMENT = st.one_of(st.tuples(_NAMES, _LIST).map(" = ".join), _NAMES, st.sampled_from(["read(x)", "read(y)"]))
_STEP = st.lists(_STATEMENT, min_size=1, max_size=4).map("\n".join)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_STEP, min_size=1, max_size=6))
def test_fuzz_steps_that_nest_values_stay_bounded(steps):
    """Several steps in one namespace, each wrapping earlier values in wide lists: whatever they
    build, every step and every value shown or read stays within the bounds."""
    from voxelprompt.runtime.library import Library

    reader = Library([])
    functions = library() | {"read": reader.read}
    environment = Environment(functions, namespace={"x": 1, "y": 2.0, "z": "z"})
    limits = environment.limits
    tracemalloc.start()
    try:
        for step in steps:
            feedback = environment.run(step)
            assert len(feedback.output) <= limits.max_text_chars
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20
    for value in environment.namespace.values():
        if isinstance(value, (list, tuple)):
            assert len(repr(value)) < 10 * 20_000  # Limits().max_value_size
