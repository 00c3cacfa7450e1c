"""The agent's transcript as tokens (paper §3: mu_1 = prompt + metadata, then eta_i and z_i): the
prompt and the scans' metadata that open it, and the feedback each step read. Inference
(`model/agent.py`) and the training episodes (`train/episodes.py`) lay it out with the same pieces,
so the agent reads at inference exactly what it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from voxelprompt.core.scan import Scan
from voxelprompt.model import tokens
from voxelprompt.runtime import Limits, read_text
from voxelprompt.runtime.vision import Encoding


def metadata_text(scans: Sequence[Scan]) -> str:
    """One line per scan: modality, session, date (the agent's view of the input volumes)."""
    return "\n".join(f"{s.modality} {s.session or '-'} {s.date or '-'}" for s in scans)


def feedback_pieces(values: Sequence[Any], error: str = "") -> list[tokens.Piece]:
    """What a step read, as the agent sees it; each encoded scan is an <ENC> slot for its embedding.
    The text of a step's reads is clipped to the sandbox's bound on feedback text, as `read` clips
    each value, so no step can flood the agent's context."""
    limit_chars = Limits().max_text_chars
    pieces: list[tokens.Piece] = [tokens.Special(tokens.FEEDBACK)]
    for number, value in enumerate(values):
        if number:
            pieces.append("\n")
        if isinstance(value, Encoding):
            pieces += [tokens.Special(tokens.ENC)] * len(value.scans) + [" " + value.describe()]
        else:
            pieces.append(read_text(value, limit_chars))
        if sum(len(piece) for piece in pieces if isinstance(piece, str)) > limit_chars:
            pieces.append(" ... (clipped)")
            break
    if error:
        pieces.append(("\n" if values else "") + f"error: {error[:limit_chars]}")
    return pieces + [tokens.Special(tokens.END_FEEDBACK)]


def prefix_pieces(prompt: str, scans: Sequence[Scan]) -> list[tokens.Piece]:
    return [tokens.Special(tokens.PROMPT), prompt, tokens.Special(tokens.SCANS), metadata_text(scans)]
