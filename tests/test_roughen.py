"""Prompts as people type them (voxelprompt/tasks/roughen.py) and the scans' metadata as inference
sees it: what text-only training adds to the template grammar, without changing what a prompt means."""

from __future__ import annotations

import re

import numpy as np
import pytest

from voxelprompt.model.transcript import metadata_text
from voxelprompt.tasks.catalogue import catalogue
from voxelprompt.tasks.roughen import roughen, writing
from voxelprompt.train.episodes import sample_text

SIDES = {"left": {"left", "l", "lt", "lt."}, "right": {"right", "r", "rt", "rt."}}


def test_roughening_is_seeded_and_changes_most_prompts():
    prompts = [sample_text(task, np.random.default_rng(n))[0] for n, task in enumerate(catalogue().values())]
    first = [roughen(p, np.random.default_rng(n)) for n, p in enumerate(prompts)]
    assert first == [roughen(p, np.random.default_rng(n)) for n, p in enumerate(prompts)]
    assert sum(a != b for a, b in zip(prompts, first)) >= 0.8 * len(prompts)


def test_no_replacement_changes_a_side_or_a_structure():
    """A replacement keeps the side it replaces, and never names another structure."""
    for phrase, options in writing()["replacements"].items():
        for option in options:
            words = set(re.findall(r"[\w.]+", option.lower()))
            for side, names in SIDES.items():
                other = SIDES["right" if side == "left" else "left"]
                if side in phrase.split() and "left and right" not in phrase:
                    assert not words & other, (phrase, option)
            assert "left" not in words or "left" in phrase, (phrase, option)
            assert "right" not in words or "right" in phrase, (phrase, option)


@pytest.mark.parametrize("seed", range(20))
def test_a_typo_keeps_the_first_and_last_letters_and_the_words_around(seed):
    prompt = "what is the volume of the left hippocampus"
    rough = roughen(prompt, np.random.default_rng(seed), changes=1)
    assert rough  # never empty
    if len(rough.split()) == len(prompt.split()):
        for before, after in zip(prompt.split(), rough.split()):
            if before != after and after.isalpha() and len(before) >= 5:
                assert after[0] == before[0] and after[-1] == before[-1] or after.lower() == before.lower()


def test_without_roughening_or_undated_scans_the_draws_are_those_of_before():
    """The defaults take nothing from the random stream, so tokenizers and validation sets built
    from sampled text stay what they were."""
    for n, task in enumerate(catalogue().values()):
        plain = sample_text(task, np.random.default_rng(n))
        again = sample_text(task, np.random.default_rng(n), 0.0, 0.0)
        assert plain[0] == again[0] and plain[2] == again[2] and metadata_text(plain[1]) == metadata_text(again[1])


def test_undated_scans_look_like_a_lone_image_and_their_programs_run():
    """A lone image given to `voxelprompt run` has no session label and no date ("T1w - -"); training
    shows the writer such subjects, and their programs still run (sample_text runs every one)."""
    tasks = [t for t in catalogue().values() if t.requirements.sessions == 1]
    blank = 0
    for n, task in enumerate(tasks):
        _, scans, _, _ = sample_text(task, np.random.default_rng(n), 0.0, 1.0)
        blank += all(s.session == "" or s.date == "" for s in scans)
        assert "-" in metadata_text(scans)
    assert blank == len(tasks)
    two_sessions = next(t for t in catalogue().values() if t.requirements.sessions == 2)
    _, scans, _, _ = sample_text(two_sessions, np.random.default_rng(0), 0.0, 1.0)
    assert all(s.session and s.date for s in scans)  # ordering sessions needs their labels and dates
