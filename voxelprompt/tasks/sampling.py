"""Training and test examples drawn on the fly (paper §3.2): a task, a subject that has what the task
needs, values for the task drawn from that subject, a prompt synthesised from the task's templates,
and the ground-truth program with the values filled in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxelprompt.runtime import Environment, Feedback
from voxelprompt.runtime.library import Library
from voxelprompt.runtime.vision import Vision
from voxelprompt.synth.contrast import Acquisition
from voxelprompt.tasks.catalogue import Task, catalogue, task
from voxelprompt.tasks.grammar import grammar
from voxelprompt.tasks.subjects import TaskSubject, synthesize
from voxelprompt.tasks.truth import GroundTruthVision
from voxelprompt.tasks.values import Bound, NoValue, bind, lesion_noun_bindings

MAX_ATTEMPTS = 20  # subjects drawn before giving up on a task (e.g. no lesion ever lies in a lobe)


@dataclass
class Example:
    task: Task
    prompt: str
    program: list[str]  # steps of the ground-truth program phi*
    subject: TaskSubject
    bound: Bound


@dataclass
class Execution:
    library: Library  # what the program recorded: metrics, responses, outputs, values read
    feedback: list[Feedback]  # one per step

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.feedback) and self.library.stopped


def sample_example(rng: np.random.Generator, task_name: str | None = None, spacing_mm: float | None = 2.0,
                   source: str = "oasis-dk", acquisitions: dict[str, Acquisition] | None = None) -> Example:
    """One example of the named task (or of a task drawn uniformly), on a new synthetic subject."""
    names = list(catalogue())
    for _ in range(MAX_ATTEMPTS):
        chosen = task(task_name) if task_name else task(names[int(rng.integers(len(names)))])
        subject = synthesize(chosen.requirements, rng, spacing_mm, source, acquisitions)
        try:
            return example_for(chosen, subject, rng)
        except NoValue:
            continue
    raise RuntimeError(f"no subject in {MAX_ATTEMPTS} draws allowed task {task_name!r}")


def example_for(chosen: Task, subject: TaskSubject, rng: np.random.Generator) -> Example:
    """An example of a task on a given subject; raises NoValue if the subject does not allow it."""
    bound = bind(chosen.values, subject, rng)
    template = chosen.prompts[int(rng.integers(len(chosen.prompts)))]
    prompt = grammar().expand(template, rng, lesion_noun_bindings() | bound.prompt)
    return Example(chosen, prompt, chosen.program_for(bound.program), subject, bound)


def execute(program: list[str], subject: TaskSubject, vision: Vision | None = None) -> Execution:
    """Run a program step by step in the sandbox, on the subject's scans, with ground truth standing
    in for the vision networks unless a vision model is given. Stops at the first failing step."""
    library = Library(list(subject.scans), vision or GroundTruthVision(subject))
    environment = Environment(library.functions())
    feedback = []
    for step in program:
        feedback.append(environment.run(step))
        if not feedback[-1].ok or library.stopped:
            break
    return Execution(library, feedback)
