"""The hand-written paraphrases (data/evaluation/paraphrases.yaml): the shipped set, the check that
its prompts lie outside the template grammar, and the report of bad entries."""

import numpy as np
import pytest
import yaml

from voxelprompt.core.errors import InputError
from voxelprompt.evaluation.paraphrases import load_paraphrases, producing_tasks
from voxelprompt.tasks.catalogue import FAMILIES, catalogue
from voxelprompt.tasks.grammar import grammar
from voxelprompt.tasks.sampling import sample_example
from voxelprompt.tasks.values import bind, lesion_noun_bindings

GOOD = {"prompt": "Right amygdala volume, in cubic millimetres.", "task": "volume",
        "values": {"region": "right amygdala"}}
IN_GRAMMAR = {"prompt": "What is the volume of the left hippocampus?", "task": "volume",
              "values": {"region": "left hippocampus"}}


def write(tmp_path, entries):
    path = tmp_path / "paraphrases.yaml"
    path.write_text(yaml.safe_dump(entries, sort_keys=False))
    return path


def problems_of(path) -> str:
    with pytest.raises(InputError) as raised:
        load_paraphrases(path)
    return str(raised.value)


def test_shipped_set_loads_and_covers_the_catalogue():
    paraphrases = load_paraphrases()
    assert len(paraphrases) >= 60
    assert {p.family for p in paraphrases} == set(FAMILIES)
    assert len({p.task for p in paraphrases}) >= 18
    for paraphrase in paraphrases:
        assert set(paraphrase.values) == set(catalogue()[paraphrase.task].values)
        assert not producing_tasks(paraphrase.prompt)
    crops = [p for p in paraphrases if p.task == "crop-field-of-view"]
    # YAML reads the margins as numbers; they come back as the domain names them.
    assert crops and all(isinstance(p.values["margin_mm"], str) for p in crops)


@pytest.mark.parametrize("seed", range(3))
def test_a_sampled_prompt_is_in_the_grammar_and_refused(tmp_path, seed):
    example = sample_example(np.random.default_rng(seed))
    assert example.task.name in producing_tasks(example.prompt)
    entry = {"prompt": example.prompt, "task": example.task.name,
             "values": {name: example.bound.program[name] for name in example.task.values}}
    message = problems_of(write(tmp_path, [GOOD, entry]))
    assert "problems" not in message  # the only problem
    assert f"entry 2 ({example.prompt!r}): the template grammar produces this prompt" in message


def test_every_template_is_recognised_as_its_own_task_only():
    """The matcher is exact on what the grammar writes: many prompts of every template of every task.
    No prompt belongs to two tasks, or the agent would be taught two programs for one text ("Where is
    the cyst?" was once both a lesion segmentation and a location question)."""
    rng = np.random.default_rng(7)
    for name, task in catalogue().items():
        for template in task.prompts:
            for _ in range(15):
                bindings = lesion_noun_bindings() | bind(task.values, None, rng).prompt
                prompt = grammar().expand(template, rng, bindings)
                assert producing_tasks(prompt) == (name,), (name, template, prompt)


def test_what_is_ignored_and_what_is_not():
    # The same prompt: case, spacing, punctuation, "a"/"an".
    for prompt in ("segment  THE left hippocampus .", "I need a outline of the left hippocampus!",
                   "what's the SNR of the brainstem on the T1, ?"):
        assert producing_tasks(prompt), prompt
    # Another prompt: a word more, an inflection, a side left out, words reordered.
    for prompt in ("Segment the left hippocampus now", "Segment the left hippocampi", "Segment the hippocampus",
                   "Left hippocampus: segment it", "Volume of the hippocampus on the left, please, quickly"):
        assert not producing_tasks(prompt), prompt


def test_no_value_is_named_like_a_grammar_rule():
    # The matcher shares a value's expansions between tasks by kind, which a shadowed rule would break.
    assert not {name for task in catalogue().values() for name in task.values} & set(grammar().rules)


BAD = [
    ({"prompt": "Hippocampal volume, both sides added.", "task": "hippocampus-volume", "values": {}},
     "unknown task 'hippocampus-volume'"),
    ({"prompt": "Crop the T2 to the brainstem.", "task": "crop-field-of-view",
      "values": {"contrast": "T2w", "target": "brainstem"}}, "value 'margin_mm' (margin_mm) is missing"),
    ({"prompt": "Left hippocampal volume.", "task": "volume",
      "values": {"region": "left hippocampus", "side": "left"}},
     "task volume takes no value 'side'"),
    ({"prompt": "Volume of both hippocampi.", "task": "volume", "values": {"region": "hippocampi"}},
     "value 'region': 'hippocampi' is not a region"),
    ({"prompt": "Crop the T2 to the brainstem, 3 mm margin.", "task": "crop-field-of-view",
      "values": {"contrast": "T2w", "target": "brainstem", "margin_mm": 3}},
     "value 'margin_mm': '3' is not a margin_mm"),
    ({"prompt": "Ratio of the brain to itself.", "task": "volume-ratio",
      "values": {"target": "brain", "other": "brain"}},
     "values 'target' and 'other' are both 'brain'"),
    ({"prompt": "right AMYGDALA volume in cubic millimetres", "task": "volume", "values": {"region": "right amygdala"}},
     "repeats the prompt of entry 1"),
    (IN_GRAMMAR, "the template grammar produces this prompt (task volume)"),
    ({"prompt": "Brainstem only, as a mask.", "task": "segment-anatomy", "values": {"target": "brainstem"}, "note": "terse"},
     "unknown field 'note'"),
    ({"prompt": "", "task": "segment-anatomy", "values": {"target": "brainstem"}}, "has no prompt text"),
    ("Segment the brainstem.", "is not a mapping"),
]


@pytest.mark.parametrize(("entry", "problem"), BAD, ids=[problem[:30] for _, problem in BAD])
def test_a_bad_entry_is_reported_with_its_number(tmp_path, entry, problem):
    message = problems_of(write(tmp_path, [GOOD, entry]))
    assert message.startswith(f"{tmp_path / 'paraphrases.yaml'}: entry 2") and problem in message
    assert "problems" not in message  # one problem: the good entry is not blamed


def test_all_problems_are_reported_together(tmp_path):
    entries = [GOOD] + [entry for entry, _ in BAD]
    message = problems_of(write(tmp_path, entries))
    assert f"{len(BAD)} problems" in message
    for number, (_, problem) in enumerate(BAD, start=2):
        lines = [line for line in message.splitlines()
                 if line.strip().startswith((f"entry {number} ", f"entry {number}:"))]
        assert len(lines) == 1 and problem in lines[0]


def test_a_file_that_is_not_a_list_is_refused(tmp_path):
    path = tmp_path / "paraphrases.yaml"
    path.write_text("prompt: Segment the brainstem.\n")
    assert "non-empty list" in problems_of(path)
    assert "cannot read" in problems_of(tmp_path / "missing.yaml")
