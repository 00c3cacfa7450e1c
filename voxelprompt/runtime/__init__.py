"""Omega: the sandboxed environment that runs the agent's code (paper §3)."""

from voxelprompt.runtime.sandbox import Environment, Feedback, Limits, describe, read_text

__all__ = ["Environment", "Feedback", "Limits", "describe", "read_text"]
