"""The task catalogue T (paper §4.1), read from data/tasks/tasks.yaml and checked on load: every
family, kind of value and answer is known, every program placeholder is filled by a value, every
prompt placeholder exists, and every program ends by stopping."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from voxelprompt.synth.lesions import lesion_classes
from voxelprompt.tasks import values
from voxelprompt.tasks.grammar import PLACEHOLDER, grammar
from voxelprompt.tasks.subjects import Requirements

FAMILIES = ("segmentation", "region", "intensity", "morphology", "comparison", "longitudinal", "characterisation")
ANSWER_KINDS = ("mask", "image", "number", "choice")
PROGRAM_VALUE = re.compile(r"\{([a-z_]+)\}")


class CatalogueError(ValueError):
    """The task data files are inconsistent; the message names the task and the problem."""


@dataclass(frozen=True)
class Task:
    name: str
    family: str
    summary: str
    requirements: Requirements
    values: dict[str, str]  # value name -> kind
    answer: dict[str, Any]
    prompts: tuple[str, ...]
    program: tuple[str, ...]  # steps, with {value} placeholders

    def program_for(self, program_values: dict[str, str]) -> list[str]:
        """The steps with every {value} filled in."""
        return [PROGRAM_VALUE.sub(lambda m: program_values[m.group(1)], step).strip() for step in self.program]

    def prompt_count(self) -> int:
        """How many distinct prompts the task can produce, over every value it can take."""
        bindings = values.lesion_noun_bindings()
        for name, kind in self.values.items():
            bindings[name] = tuple(form for value in values.domain(kind) for form in values.forms(kind, value))
        return sum(grammar().count(template, bindings) for template in self.prompts)


@cache
def catalogue() -> dict[str, Task]:
    data = yaml.safe_load((resources.files("voxelprompt") / "data" / "tasks" / "tasks.yaml").read_text())
    return {name: _task(name, entry) for name, entry in data.items()}


def task(name: str) -> Task:
    try:
        return catalogue()[name]
    except KeyError:
        raise KeyError(f"no task named {name!r}; tasks: {', '.join(catalogue())}") from None


def _task(name: str, entry: dict[str, Any]) -> Task:
    def fail(problem: str) -> CatalogueError:
        return CatalogueError(f"task {name!r} in tasks.yaml: {problem}")

    if entry.get("family") not in FAMILIES:
        raise fail(f"family must be one of {', '.join(FAMILIES)}")
    kinds = dict(entry.get("values", {}))
    unknown = [kind for kind in kinds.values() if kind not in values.KINDS]
    if unknown:
        raise fail(f"unknown kind(s) of value {', '.join(unknown)}")
    if entry.get("answer", {}).get("kind") not in ANSWER_KINDS:
        raise fail(f"answer kind must be one of {', '.join(ANSWER_KINDS)}")
    subject = entry.get("subject", {})
    lesions = subject.get("lesions", ())
    requirements = Requirements(tuple(subject.get("contrasts", ())),
                                tuple(sorted(lesion_classes())) if lesions == "any" else tuple(lesions),
                                int(subject.get("sessions", 1)))
    filled = {provided for value, kind in kinds.items() for provided in values.provides(value, kind)}
    program = tuple(entry["program"])
    for step in program:
        missing = set(PROGRAM_VALUE.findall(step)) - filled
        if missing:
            raise fail(f"the program uses {', '.join(sorted(missing))}, which no value fills")
    known = set(grammar().rules) | set(kinds) | set(values.lesion_noun_bindings())
    for template in entry["prompts"]:
        missing = set(PLACEHOLDER.findall(template)) - known
        if missing:
            raise fail(f"prompt {template!r} uses unknown placeholder(s) {', '.join(sorted(missing))}")
    if not program or "stop()" not in program[-1]:
        raise fail("the program's last step must stop()")
    return Task(name, entry["family"], entry["summary"], requirements, kinds, dict(entry["answer"]),
                tuple(entry["prompts"]), program)
