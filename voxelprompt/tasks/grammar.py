"""Prompt synthesis (paper §4.2): templates with recursive placeholders, filled at random.

A template is text with placeholders `<name>`. Each placeholder has a list of alternatives, which may
themselves hold placeholders. Per prompt, some placeholders are bound to the sampled task's values
(the target's names, the lesion's descriptions); the rest come from the grammar data files.
Counting follows the same rules as sampling, so the reported number of distinct prompts is the
number of distinct derivations (tests check that different derivations give different text).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import yaml

PLACEHOLDER = re.compile(r"<([a-z][a-z0-9_]*)>")
MAX_DEPTH = 12


class GrammarError(ValueError):
    """A template refers to a placeholder that does not exist, or placeholders refer to each other in a loop."""


@dataclass(frozen=True)
class Grammar:
    rules: Mapping[str, tuple[str, ...]]

    @classmethod
    def from_mapping(cls, data: Mapping[str, list[str]]) -> Grammar:
        rules = {name: tuple(str(a) for a in alternatives) for name, alternatives in data.items()}
        grammar = cls(rules)
        for name in rules:
            grammar._check(f"<{name}>", {}, ())
        return grammar

    def expand(self, template: str, rng: np.random.Generator, bindings: Mapping[str, tuple[str, ...]] = {}) -> str:
        """One prompt: every placeholder replaced by one of its alternatives, drawn uniformly."""
        return _tidy(self._expand(template, rng, bindings, 0))

    def count(self, template: str, bindings: Mapping[str, tuple[str, ...]] = {}) -> int:
        """How many derivations the template has (each a different prompt)."""
        return self._count(template, bindings, 0)

    def enumerate(self, template: str, bindings: Mapping[str, tuple[str, ...]] = {}) -> Iterator[str]:
        """Every prompt the template can produce (for small templates: the count multiplies quickly)."""
        for text in self._enumerate(template, bindings, 0):
            yield _tidy(text)

    def alternatives(self, name: str, bindings: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
        found = bindings.get(name, self.rules.get(name))
        if found is None:
            raise GrammarError(f"no placeholder <{name}> in the grammar or the task's values")
        return found

    def _expand(self, text: str, rng: np.random.Generator, bindings, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise GrammarError(f"placeholders nested deeper than {MAX_DEPTH} in {text!r}")

        def fill(match: re.Match) -> str:
            choices = self.alternatives(match.group(1), bindings)
            return self._expand(choices[int(rng.integers(len(choices)))], rng, bindings, depth + 1)

        return PLACEHOLDER.sub(fill, text)

    def _count(self, text: str, bindings, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise GrammarError(f"placeholders nested deeper than {MAX_DEPTH} in {text!r}")
        total = 1
        for name in PLACEHOLDER.findall(text):
            total *= sum(self._count(a, bindings, depth + 1) for a in self.alternatives(name, bindings))
        return total

    def _enumerate(self, text: str, bindings, depth: int) -> Iterator[str]:
        match = PLACEHOLDER.search(text)
        if match is None:
            yield text
            return
        for alternative in self.alternatives(match.group(1), bindings):
            for filled in self._enumerate(alternative, bindings, depth + 1):
                yield from self._enumerate(text[: match.start()] + filled + text[match.end():], bindings, depth + 1)

    def _check(self, text: str, bindings, path: tuple[str, ...]) -> None:
        for name in PLACEHOLDER.findall(text):
            if name in path:
                raise GrammarError(f"placeholders refer to each other in a loop: {' -> '.join(path + (name,))}")
            for alternative in self.alternatives(name, bindings):
                self._check(alternative, bindings, path + (name,))


@cache
def grammar() -> Grammar:
    """The shipped grammar (data/tasks/grammar.yaml)."""
    text = (resources.files("voxelprompt") / "data" / "tasks" / "grammar.yaml").read_text()
    return Grammar.from_mapping(yaml.safe_load(text))


def _tidy(text: str) -> str:
    """Single spaces, no space before punctuation, "an" before a vowel, a capital letter first."""
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r" ([?.,!:])", r"\1", text)
    text = re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)
    return text[:1].upper() + text[1:]
