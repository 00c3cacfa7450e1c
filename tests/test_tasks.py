"""The task catalogue and prompt synthesis: data files that load and agree with each other, prompts
that are counted honestly, programs the sandbox accepts, and the `voxelprompt tasks` commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from voxelprompt.runtime import Environment
from voxelprompt.runtime.library import Library
from voxelprompt.tasks import values
from voxelprompt.tasks.catalogue import FAMILIES, CatalogueError, _task, catalogue
from voxelprompt.tasks.grammar import Grammar, GrammarError, grammar
from voxelprompt.tasks.reference import example, reference_markdown

ROOT = Path(__file__).resolve().parents[1]
MAX_ENUMERATED = 20_000


def test_the_catalogue_covers_every_family_of_the_paper():
    tasks = catalogue()
    assert {t.family for t in tasks.values()} == set(FAMILIES)
    characterisation = {name for name, t in tasks.items() if t.family == "characterisation"}
    assert characterisation == {"signal-intensity", "cerebral-location", "vascular-territory", "diffusion-restriction",
                                "enhancement"}
    used = {kind for t in tasks.values() for kind in t.values.values()}
    assert used == set(values.KINDS)


@pytest.mark.parametrize("name", sorted(catalogue()))
def test_every_program_passes_the_sandbox_check_for_any_value(name):
    environment = Environment(Library([]).functions())
    entry = catalogue()[name]
    rng = np.random.default_rng(0)
    for _ in range(20):
        _, program = example(entry, rng)
        for step in program:
            feedback = environment.check(step)
            assert feedback.ok, (step, feedback.error)
        assert all(re.search(r"\bread\(", step) for step in program[:-1]), "every step but the last reads a value"
        assert program[-1].endswith("stop()")


@pytest.mark.parametrize("name", sorted(catalogue()))
def test_different_derivations_give_different_prompts(name):
    """The reported number of distinct prompts counts derivations; this holds only if no two derivations
    give the same text. Checked exhaustively for one drawn value per task, on templates small enough."""
    entry = catalogue()[name]
    bound = values.bind(entry.values, None, np.random.default_rng(1))
    bindings = values.lesion_noun_bindings() | bound.prompt
    checked = 0
    for template in entry.prompts:
        count = grammar().count(template, bindings)
        if count > MAX_ENUMERATED:
            continue
        prompts = list(grammar().enumerate(template, bindings))
        assert len(prompts) == count
        assert len(set(prompts)) == count, [p for p in prompts if prompts.count(p) > 1][:3]
        checked += 1
    assert checked >= 1


def test_prompt_counts_sum_over_every_value():
    entry = catalogue()["asymmetry"]
    structures = values.domain("lateral_structure")
    expected = 0
    for structure in structures:
        bindings = values.lesion_noun_bindings() | {"structure": values.forms("lateral_structure", structure)}
        expected += sum(grammar().count(template, bindings) for template in entry.prompts)
    assert entry.prompt_count() == expected
    assert all(t.prompt_count() >= 1000 for t in catalogue().values())


def test_grammar_expands_recursively_and_refuses_loops_and_unknown_placeholders():
    small = Grammar.from_mapping({"greet": ["hello <who>", "hi"], "who": ["there", "<name>"], "name": ["ann", "bob"]})
    assert small.count("<greet>!") == 4
    assert sorted(small.enumerate("<greet>!")) == ["Hello ann!", "Hello bob!", "Hello there!", "Hi!"]
    assert small.expand("<greet>", np.random.default_rng(0)) in {"Hello ann", "Hello bob", "Hello there", "Hi"}
    with pytest.raises(GrammarError, match="loop"):
        Grammar.from_mapping({"a": ["x <b>"], "b": ["<a>"]})
    with pytest.raises(GrammarError, match="<missing>"):
        Grammar.from_mapping({"a": ["<missing>"]})
    assert small.expand("<name> <who>", np.random.default_rng(0), {"name": ("cat",), "who": ("a owl",)}) == "Cat an owl"


def test_catalogue_errors_name_the_task_and_the_problem():
    good = dict(catalogue_entry("volume"))
    with pytest.raises(CatalogueError, match="'broken'.*family"):
        _task("broken", good | {"family": "astrology"})
    with pytest.raises(CatalogueError, match="'broken'.*unknown kind"):
        _task("broken", good | {"values": {"region": "galaxy"}})
    with pytest.raises(CatalogueError, match="'broken'.*uses region_text"):
        _task("broken", good | {"values": {"region": "anatomy"}})
    with pytest.raises(CatalogueError, match="'broken'.*unknown placeholder"):
        _task("broken", good | {"prompts": ["<nonsense> of <region>"]})
    with pytest.raises(CatalogueError, match="'broken'.*stop"):
        _task("broken", good | {"program": ["e = encode(scans())\nread(e)"]})


def catalogue_entry(name: str) -> dict:
    import yaml

    return yaml.safe_load((ROOT / "voxelprompt" / "data" / "tasks" / "tasks.yaml").read_text())[name]


def test_lesion_descriptions_open_their_words_to_synonyms_and_never_give_the_answer_away():
    assert values.forms("lesion", "the largest white matter hyperintensity") == (
        "the <largest> <noun_white_matter_hyperintensity>",)
    assert values.forms("lesion", "the left infarct") == ("the <left> <noun_infarct>",)
    assert not [d for d in values.domain("lesion_in_lobe") if d.endswith(" lobe")]
    assert not [d for d in values.domain("lesion_in_territory") if d.endswith(" territory")]
    assert all(re.search("|".join(values.lesion_classes()), d) for d in values.domain("single_lesion"))


def test_values_are_safe_to_put_in_programs_and_every_one_has_a_name_in_prompts():
    for kind in values.KINDS:
        for value in values.domain(kind):
            assert '"' not in value and "\\" not in value, (kind, value)
            assert values.forms(kind, value), (kind, value)


def test_bound_values_fill_derived_names():
    rng = np.random.default_rng(0)
    bound = values.bind({"lesion": "single_lesion", "contrast": "signal_contrast"}, None, rng)
    assert bound.program["reference"] in ("brain", "left and right cerebral cortex")
    assert bound.program["signal_words"].startswith("[")
    meningioma = values.bind({"lesion": "lesion"}, None, np.random.default_rng(0))
    while "meningioma" not in meningioma.program["lesion"]:
        meningioma = values.bind({"lesion": "lesion"}, None, rng)
    assert meningioma.program["reference"] == "left and right cerebral cortex"


def test_reference_page_is_current():
    """docs/tasks.md is generated (`voxelprompt tasks reference docs/tasks.md`); it must match the data."""
    assert (ROOT / "docs" / "tasks.md").read_text() == reference_markdown()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxelprompt", *args], capture_output=True, text=True, timeout=300)


def test_tasks_list_prints_every_task_with_its_prompt_count():
    result = run_cli("tasks", "list")
    assert result.returncode == 0, result.stderr
    for name, entry in catalogue().items():
        assert re.search(rf"^{name}\s+{entry.family}\s+{entry.prompt_count():,}\s", result.stdout, re.M)


def test_tasks_sample_prints_prompts_with_their_programs(anatomy_cache):
    result = run_cli("tasks", "sample", "--task", "volume", "-n", "2", "--seed", "4")
    assert result.returncode == 0, result.stderr
    assert len(re.findall(r"^--- \d: ", result.stdout, re.M)) == 2
    assert result.stdout.count("value = volume_mm3(region)") == 2
    again = run_cli("tasks", "sample", "--task", "volume", "-n", "2", "--seed", "4")
    assert again.stdout == result.stdout, "sampling is seeded"


def test_tasks_sample_names_an_unknown_task():
    result = run_cli("tasks", "sample", "--task", "tarot-reading")
    assert result.returncode != 0
    assert "tarot-reading" in result.stderr and "volume" in result.stderr


def test_no_anatomy_form_names_two_targets():
    """Every way of writing an anatomical target names that target only ("left insula" once named both
    the insula parcel and the insular lobe, which are different label sets)."""
    named: dict[str, str] = {}
    for target in values.domain("anatomy"):
        for form in values.anatomy_forms(target):
            assert named.setdefault(form.lower(), target) == target, (form, target, named[form.lower()])
