"""Errors that reach users: each names the file (or value) and what is wrong with it."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """An input that cannot be processed: a missing or corrupt image, a bad label, a bad table row.

    The message always starts with the offending file or value so that a lab running a cohort of
    hundreds of subjects can find it from the log line alone.
    """

    def __init__(self, source: str | Path, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


EXCERPT_CHARS = 60


def excerpt(text: str, chars: int = EXCERPT_CHARS) -> str:
    """The start of user text for an error message: a message never repeats a long prompt whole."""
    return text if len(text) <= chars else f"{text[:chars]}... ({len(text):,} characters)"
