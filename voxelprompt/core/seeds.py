"""Every random stream of the evaluation, disjoint by construction.

numpy seeds a generator from a list of integers and pads shorter lists with zeros, so `[s, 7, r]` and
`[s, 7, r, 0]` start the same generator. Were streams told apart by position alone, a held-out example
could be a paraphrase's subject, or a baseline's training crop another baseline's. Here every stream
draws from `[seed, stream, *numbers]`: the seed says whose data it is (the held-out cohort, the
baselines' training data, the model's validation), the stream says what is drawn, and each stream
always takes the same count of numbers.

Training of the model draws from `[seed, rank, step]` with a seed of its own, which may not be one of
the reserved seeds below (`refuse_reserved`): no training example is then an evaluation example.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

EVALUATION_SEED = 2_000_003  # the held-out cohort, examples and paraphrases
VALIDATION_SEED = 1_000_003  # the model's validation during training
BASELINE_TRAINING_SEED = 3_000_017  # the training data of the specialised baselines
RESERVED = {"evaluation": EVALUATION_SEED, "validation": VALIDATION_SEED, "baseline training": BASELINE_TRAINING_SEED}


class Stream(IntEnum):
    """What a generator draws; the numbers after it, in order."""

    HELD_OUT_EXAMPLE = 101  # task number, repeat
    PARAPHRASE_SUBJECT = 102  # paraphrase index, attempt
    HELD_OUT_SUBJECT = 103  # subject number
    LESION_CLASS_SUBJECT = 104  # lesion target number, subject number, attempt
    SINGLE_LESION_EXAMPLE = 105  # task number, example number, attempt
    TRAINING_CROP = 106  # target number, step
    CLASSIFIER_EXAMPLE = 107  # step


ARITY = {Stream.HELD_OUT_EXAMPLE: 2, Stream.PARAPHRASE_SUBJECT: 2, Stream.HELD_OUT_SUBJECT: 1,
         Stream.LESION_CLASS_SUBJECT: 3, Stream.SINGLE_LESION_EXAMPLE: 3, Stream.TRAINING_CROP: 2,
         Stream.CLASSIFIER_EXAMPLE: 1}


def generator(seed: int, stream: Stream, *numbers: int) -> np.random.Generator:
    """The generator of one draw of a stream."""
    if len(numbers) != ARITY[stream]:
        raise ValueError(f"stream {stream.name} takes {ARITY[stream]} numbers, got {len(numbers)}")
    return np.random.default_rng([seed, int(stream), *numbers])


def refuse_reserved(seed: int) -> None:
    """Raise if a training seed is one of the evaluation's own (its examples would be trained on)."""
    for name, reserved in RESERVED.items():
        if seed == reserved:
            raise ValueError(f"seed {seed} is the {name} seed; training must use another")
