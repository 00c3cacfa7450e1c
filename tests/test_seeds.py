"""The evaluation's random streams are disjoint by construction, and training cannot use their seeds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from voxelprompt.cli import main
from voxelprompt.core.seeds import ARITY, EVALUATION_SEED, RESERVED, Stream, generator, refuse_reserved
from voxelprompt.evaluation.paraphrases import load_paraphrases
from voxelprompt.evaluation.scoring import iter_held_out_examples, paraphrase_example
from voxelprompt.tasks.catalogue import catalogue


def test_every_stream_starts_its_own_generators():
    """numpy pads seed lists with zeros: a stream told apart by position alone would share generators
    with a longer one. Streams here differ in their second item, so their first draws all differ."""
    first = {}
    for stream, arity in ARITY.items():
        for numbers in np.ndindex(*(3,) * arity):
            draw = generator(EVALUATION_SEED, stream, *numbers).integers(2**62)
            assert draw not in first, (stream, numbers, first.get(draw))
            first[draw] = (stream, numbers)
    with pytest.raises(ValueError, match="takes 2 numbers"):
        generator(EVALUATION_SEED, Stream.HELD_OUT_EXAMPLE, 1, 2, 0)


def test_no_held_out_example_is_a_paraphrase_subject(anatomy_cache):
    """Held-out example r of the task at position 7 was drawn from [seed, 7, r], the subject of
    paraphrase r's first attempt from [seed, 7, r, 0]: the same generator, hence the same subject."""
    paraphrases = load_paraphrases()
    of_task_7 = itertools.islice(iter_held_out_examples(2, spacing_mm=4.0), 14, 16)
    for (repeat, example), paraphrase in zip(of_task_7, paraphrases):
        assert example.task.name == list(catalogue())[7]
        paraphrased, _ = paraphrase_example(paraphrase, repeat, spacing_mm=4.0)
        mine = example.subject.sessions[0].synthetic.label_map.array
        theirs = paraphrased.subject.sessions[0].synthetic.label_map.array
        assert mine.shape != theirs.shape or not np.array_equal(mine, theirs)


@pytest.mark.parametrize("seed", sorted(RESERVED.values()))
def test_training_refuses_the_evaluations_seeds(seed, tmp_path, capsys):
    with pytest.raises(ValueError, match="training must use another"):
        refuse_reserved(seed)
    assert main(["train", "--out", str(tmp_path / "run"), "--seed", str(seed)]) == 1
    assert "--seed" in capsys.readouterr().err and not (tmp_path / "run").exists()
    refuse_reserved(seed + 1)
