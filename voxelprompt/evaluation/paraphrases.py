"""Hand-written paraphrases: prompts outside the template grammar, for measuring robustness (paper §5).

Every training prompt comes from the templates of data/tasks (§4.2). A clinician phrases things
otherwise ("LV volume?", "any restricted diffusion in the right infarct?"), so the evaluation also
asks the prompts of data/evaluation/paraphrases.yaml, written by hand, each with the catalogue task it
asks for and the values it means, from which the task's ground-truth program is built.

On load every entry is checked and all problems of the file are reported at once, each with its
entry number: the task and its values must be the catalogue's, no prompt may repeat, and no prompt
may be one the grammar can produce (`producing_tasks`), or the set would not measure what it is for.
That check is exact but textual: a prompt one word away from a template passes it, so how far each
paraphrase strays from the templates is left to whoever writes them.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from voxelprompt.core.errors import InputError
from voxelprompt.tasks import values
from voxelprompt.tasks.catalogue import catalogue, task
from voxelprompt.tasks.grammar import PLACEHOLDER, grammar

DEFAULT_PATH = resources.files("voxelprompt") / "data" / "evaluation" / "paraphrases.yaml"
FIELDS = ("prompt", "task", "values")
IGNORED = re.compile(r"[\s,.;:?!]+")

Piece = str | tuple[frozenset[str], tuple[int, ...]]  # literal text, or a placeholder's expansions and their lengths


@dataclass(frozen=True)
class Paraphrase:
    prompt: str
    task: str
    values: dict[str, str]  # the task's value names -> canonical values (as values.domain names them)

    @property
    def family(self) -> str:
        return task(self.task).family


def load_paraphrases(path: str | Path | Traversable = DEFAULT_PATH) -> list[Paraphrase]:
    try:
        entries = yaml.safe_load((Path(path) if isinstance(path, str) else path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise InputError(path, f"cannot read the paraphrases: {error}") from None
    if not isinstance(entries, list) or not entries:
        raise InputError(path, "must be a non-empty list of entries with prompt, task and values")
    paraphrases, problems = [], []
    first_entry_of: dict[str, int] = {}
    for number, entry in enumerate(entries, start=1):
        entry_problems = _problems(entry)
        prompt = entry.get("prompt") if isinstance(entry, dict) else None
        if isinstance(prompt, str):
            key = _normal(prompt)
            if key in first_entry_of:
                entry_problems.append(f"repeats the prompt of entry {first_entry_of[key]}")
            first_entry_of.setdefault(key, number)
        label = f"entry {number} ({prompt!r})" if isinstance(prompt, str) else f"entry {number}"
        problems += [f"{label}: {problem}" for problem in entry_problems]
        if not entry_problems:
            paraphrases.append(Paraphrase(prompt.strip(), entry["task"], _values(entry)))
    if problems:
        listing = problems[0] if len(problems) == 1 else f"{len(problems)} problems:\n  " + "\n  ".join(problems)
        raise InputError(path, listing)
    return paraphrases


def producing_tasks(text: str) -> tuple[str, ...]:
    """The tasks whose templates produce this prompt, up to letter case, whitespace, punctuation
    (, . ; : ? !) and "a"/"an" (none: the prompt lies outside the grammar)."""
    normal = _normal(text)
    return tuple(name for name, templates in _task_templates().items()
                 if any(_matches(pieces, normal) for pieces in templates))


def _problems(entry: Any) -> list[str]:
    if not isinstance(entry, dict):
        return ["is not a mapping with prompt, task and values"]
    problems = [f"unknown field {key!r} (fields: {', '.join(FIELDS)})" for key in entry if key not in FIELDS]
    prompt = entry.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        problems.append("has no prompt text")
    elif producers := producing_tasks(prompt):
        problems.append(f"the template grammar produces this prompt (task {', '.join(producers)}); "
                        "paraphrases must lie outside it")
    name = entry.get("task")
    if not isinstance(name, str) or name not in catalogue():
        return problems + [f"unknown task {name!r}"]
    if not isinstance(entry.get("values", {}), dict):
        return problems + ["values must map the task's value names to values"]
    given, kinds = _values(entry), catalogue()[name].values
    problems += [f"task {name} takes no value {value!r} (it takes {', '.join(kinds)})"
                 for value in given if value not in kinds]
    problems += [f"value {value!r} ({kind}) is missing" for value, kind in kinds.items() if value not in given]
    problems += [f"value {value!r}: {given[value]!r} is not a {kind} (see values.domain)"
                 for value, kind in kinds.items() if value in given and given[value] not in values.domain(kind)]
    # The sampler never binds two values of one kind to the same thing (a ratio of a structure to itself).
    problems += [f"values {a!r} and {b!r} are both {given[a]!r}" for a, b in itertools.combinations(kinds, 2)
                 if kinds[a] == kinds[b] and a in given and given[a] == given.get(b)]
    return problems


def _values(entry: dict[str, Any]) -> dict[str, str]:
    # YAML reads `margin_mm: 5` as a number; the domain names it "5".
    return {str(name): str(value) for name, value in (entry.get("values") or {}).items()}


@cache
def _task_templates() -> dict[str, list[tuple[Piece, ...]]]:
    """Every template of every task as a sequence of pieces: normalised literal text, or what a
    placeholder expands to. Only whole templates run to millions of prompts; a placeholder has at
    most a few thousand expansions (regions), so those are listed outright and templates are matched
    piece by piece. Pieces are normalised one by one, which equals normalising the whole prompt as
    long as no "a"/"an" is glued to a placeholder (none is: placeholders stand apart by spaces or
    punctuation)."""
    found = {}
    for name, entry in catalogue().items():
        found[name] = [tuple(_expansions(part, entry.values.get(part)) if number % 2 else _normal(part)
                             for number, part in enumerate(PLACEHOLDER.split(template)))  # literal, name, literal, ...
                       for template in entry.prompts]
    return found


@cache
def _expansions(placeholder: str, kind: str | None) -> Piece:
    """Everything a placeholder expands to, normalised, with a task's value (of `kind`) bound to the
    forms of its whole domain, as `Task.prompt_count` counts them. Shared by tasks: the expansions of a
    value depend on its kind only, since no value is named like a grammar rule (tests check)."""
    bindings = values.lesion_noun_bindings()
    if kind is not None:
        bindings[placeholder] = tuple(dict.fromkeys(f for v in values.domain(kind) for f in values.forms(kind, v)))
    strings = frozenset(_normal(s) for s in grammar().enumerate(f"<{placeholder}>", bindings))
    return strings, tuple(sorted({len(s) for s in strings}))


def _matches(pieces: tuple[Piece, ...], text: str) -> bool:
    """Whether the pieces, one after the other, can make the text: the positions each piece can end at."""
    positions = {0}
    for piece in pieces:
        if isinstance(piece, str):
            positions = {p + len(piece) for p in positions if text.startswith(piece, p)}
        else:
            strings, lengths = piece
            positions = {p + n for p in positions for n in lengths if text[p:p + n] in strings}
        if not positions:
            return False
    return len(text) in positions


def _normal(text: str) -> str:
    """Text as compared: folded case, "an" read as "a" (`_tidy` writes "an" before a vowel), and no
    whitespace or punctuation, which then cannot tell two prompts apart."""
    return IGNORED.sub("", re.sub(r"\ban\b", "a", text.casefold()))
