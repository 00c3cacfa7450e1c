"""Prompts as people type them (issue: robust to how people write): a synthesised prompt roughened
by the changes hand-written prompts show and the template grammar does not, each of which keeps the
meaning. Abbreviations and other spellings (data/tasks/writing.yaml), numbers as words, filler at
either end, case, and typing errors (a letter dropped, doubled, swapped with its neighbour or
replaced by a key next to it) in words long enough to stay recognisable (EDA, Wei & Zou 2019).

Training roughens a share of its prompts; the hand-written paraphrases of the evaluation are never
among the sources, so they stay a test of generalisation.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

import numpy as np
import yaml

KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
MIN_TYPO_WORD_CHARS = 5  # shorter words with a typo are often another word


@cache
def writing() -> dict:
    return yaml.safe_load((resources.files("voxelprompt") / "data" / "tasks" / "writing.yaml").read_text())


@cache
def _patterns() -> list[tuple[re.Pattern, tuple[str, ...]]]:
    """Longest phrases first, so that "left and right" is tried before "left"."""
    items = sorted(writing()["replacements"].items(), key=lambda item: -len(item[0]))
    return [(re.compile(rf"(?<![\w+-]){re.escape(key)}(?![\w+])", re.IGNORECASE), tuple(options))
            for key, options in items]


def _neighbours() -> dict[str, str]:
    found = {}
    for row in KEYBOARD_ROWS:
        for i, letter in enumerate(row):
            found[letter] = row[max(i - 1, 0)] + row[i + 1: i + 2]
    return found


NEIGHBOURS = _neighbours()


def roughen(prompt: str, rng: np.random.Generator, changes: int | None = None) -> str:
    """The prompt with `changes` (default: 1 to 3) meaning-preserving changes drawn at random."""
    count = int(rng.integers(1, 4)) if changes is None else changes
    kinds = (_replace, _replace, _replace, _typo, _case, _filler, _number)
    for _ in range(count):
        prompt = kinds[int(rng.integers(len(kinds)))](prompt, rng)
    return re.sub(r"\s{2,}", " ", prompt).strip() or prompt


def _replace(prompt: str, rng: np.random.Generator) -> str:
    """One phrase of the replacement table, at one of its places, replaced by one of its forms. The
    phrase is drawn among those present, then its place, so that frequent words ("the") are no more
    likely to change than rare ones."""
    present = [(pattern, options) for pattern, options in _patterns() if pattern.search(prompt)]
    if not present:
        return prompt
    pattern, options = present[int(rng.integers(len(present)))]
    places = list(pattern.finditer(prompt))
    match = places[int(rng.integers(len(places)))]
    option = options[int(rng.integers(len(options)))]
    return prompt[: match.start()] + option + prompt[match.end():]


def _typo(prompt: str, rng: np.random.Generator) -> str:
    words = [m for m in re.finditer(r"[A-Za-z]+", prompt) if len(m.group()) >= MIN_TYPO_WORD_CHARS]
    if not words:
        return prompt
    match = words[int(rng.integers(len(words)))]
    word = match.group()
    at = int(rng.integers(1, len(word) - 1))  # keep the first and last letters: they carry the word
    kind = int(rng.integers(4))
    if kind == 0:
        word = word[:at] + word[at + 1:]
    elif kind == 1:
        word = word[:at] + word[at] + word[at:]
    elif kind == 2:
        word = word[:at] + word[at + 1] + word[at] + word[at + 2:]
    else:
        near = NEIGHBOURS.get(word[at].lower(), word[at])
        word = word[:at] + near[int(rng.integers(len(near)))] + word[at + 1:]
    return prompt[: match.start()] + word + prompt[match.end():]


def _case(prompt: str, rng: np.random.Generator) -> str:
    kind = int(rng.integers(3))
    if kind == 0:
        return prompt.lower()
    if kind == 1:
        return prompt[:1].upper() + prompt[1:]
    return prompt.rstrip("?.!")


def _filler(prompt: str, rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        openings = writing()["openings"]
        return openings[int(rng.integers(len(openings)))] + prompt
    closings = writing()["closings"]
    return prompt + closings[int(rng.integers(len(closings)))]


def _number(prompt: str, rng: np.random.Generator) -> str:
    numbers = writing()["numbers"]
    found = [m for m in re.finditer(r"\b(\d+)(?=\s?m)", prompt) if m.group(1) in numbers]
    if not found:
        return prompt
    match = found[int(rng.integers(len(found)))]
    return prompt[: match.start()] + numbers[match.group(1)] + prompt[match.end():]
