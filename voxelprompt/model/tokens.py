"""The agent's text: special tokens, the byte-level BPE tokenizer trained on the task corpus, and the
marks that tie code to the vision networks.

After every `encode(...)` and `segment(...)` call in a program the agent writes `<MOD>`; the position
of `<MOD>` yields that call's latent features phi, and `<PHI>` follows it without being predicted
(it holds the place where the features were read, so the next token is predicted from a position of
its own). `<ENC>` is a slot in the feedback whose embedding is an image encoding epsilon_v.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

PAD, PROMPT, SCANS, CODE, END_STEP, FEEDBACK, END_FEEDBACK, MOD, PHI, ENC = (
    "<|pad|>", "<|prompt|>", "<|scans|>", "<|code|>", "<|end_step|>", "<|feedback|>", "<|end_feedback|>",
    "<MOD>", "<PHI>", "<ENC>")
SPECIAL_TOKENS = (PAD, PROMPT, SCANS, CODE, END_STEP, FEEDBACK, END_FEEDBACK, MOD, PHI, ENC)
VISION_CALLS = ("encode", "segment")


class Special(NamedTuple):
    """A special token placed by the program, as opposed to text that merely looks like one."""

    name: str


Piece = str | Special


def ids_of(tokenizer: Tokenizer, pieces: Sequence[Piece]) -> list[int]:
    """Token ids of text pieces and special tokens. Text is encoded with special tokens read as plain
    text, so a prompt or a value read back that contains "<ENC>" cannot open an encoding slot."""
    ids: list[int] = []
    tokenizer.encode_special_tokens = True
    try:
        for piece in pieces:
            if isinstance(piece, Special):
                ids.append(tokenizer.token_to_id(piece.name))
            elif piece:
                ids.extend(tokenizer.encode(piece, add_special_tokens=False).ids)
    finally:
        tokenizer.encode_special_tokens = False
    return ids


def text_of(pieces: Sequence[Piece]) -> str:
    """The pieces as one text (for training the tokenizer)."""
    return "".join(p.name if isinstance(p, Special) else p for p in pieces)


def code_pieces(code: str) -> list[Piece]:
    """Code with a <MOD><PHI> pair after every vision call."""
    pieces: list[Piece] = []
    for number, part in enumerate(mark_vision_calls(code).split(MOD + PHI)):
        if number:
            pieces += [Special(MOD), Special(PHI)]
        pieces.append(part)
    return pieces


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 2048) -> Tokenizer:
    """A byte-level BPE over the corpus: any text can be encoded, and the task's words are single tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer


def mark_vision_calls(code: str) -> str:
    """Code with `<MOD><PHI>` after every encode/segment call, in the order the calls run (inner calls
    close, and run, before the calls around them)."""
    tree = ast.parse(code)
    ends = sorted(((node.end_lineno, node.end_col_offset) for node in ast.walk(tree)
                   if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in VISION_CALLS),
                  reverse=True)
    lines = [line.encode() for line in code.split("\n")]  # ast's columns count UTF-8 bytes
    for line, column in ends:
        text = lines[line - 1]
        lines[line - 1] = text[:column] + (MOD + PHI).encode() + text[column:]
    return "\n".join(line.decode() for line in lines)


def unmark(code: str) -> str:
    """The code as the sandbox runs it."""
    return code.replace(MOD, "").replace(PHI, "")
