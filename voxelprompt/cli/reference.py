"""Reference commands: the task catalogue, the agent's function library, the prompt-able targets and
what each anatomy's targets measure."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(command: str, parser: argparse.ArgumentParser) -> None:
    if command == "tasks":
        tasks = parser.add_subparsers(dest="tasks_command", required=True)
        tasks.add_parser("list", help="every task with its family and number of distinct prompts").set_defaults(
            run=_tasks_list)
        sample = tasks.add_parser("sample", help="prompts and ground-truth programs on synthetic subjects")
        sample.add_argument("--task", required=True, help="task name (see `voxelprompt tasks list`)")
        sample.add_argument("-n", type=int, default=5, help="how many examples")
        sample.add_argument("--seed", type=int, default=0)
        sample.set_defaults(run=_tasks_sample)
        page = tasks.add_parser("reference", help="write the task reference page (docs/tasks.md)")
        page.add_argument("out", type=Path)
        page.set_defaults(run=_tasks_reference)
    else:
        parser.add_argument("out", type=Path)
        parser.set_defaults(run={"library-reference": _library_reference, "label-reference": _label_reference,
                                 "anatomy-reference": _anatomy_reference}[command])


def _tasks_list(args: argparse.Namespace) -> None:
    from voxelprompt.tasks import reference

    print(reference.listing())


def _tasks_sample(args: argparse.Namespace) -> None:
    import numpy as np

    from voxelprompt.core.errors import InputError
    from voxelprompt.tasks import catalogue
    from voxelprompt.tasks.sampling import sample_example

    try:
        catalogue.task(args.task)
    except KeyError as error:
        raise InputError("--task", str(error.args[0])) from None
    rng = np.random.default_rng(args.seed)
    for number in range(1, args.n + 1):
        example = sample_example(rng, args.task)
        print(f"--- {number}: {example.prompt}")
        for step, code in enumerate(example.program, start=1):
            print(f"# step {step}\n{code}")


def _tasks_reference(args: argparse.Namespace) -> None:
    from voxelprompt.core.io import write_text
    from voxelprompt.tasks import reference

    print(write_text(args.out, reference.reference_markdown()))


def _library_reference(args: argparse.Namespace) -> None:
    from voxelprompt.core.io import write_text
    from voxelprompt.runtime.library import Library

    print(write_text(args.out, Library(scans_available=[]).reference_markdown()))


def _label_reference(args: argparse.Namespace) -> None:
    from voxelprompt.core.io import write_text
    from voxelprompt.synth.labels import reference_markdown

    print(write_text(args.out, reference_markdown()))


def _anatomy_reference(args: argparse.Namespace) -> None:
    from voxelprompt.core.io import write_text
    from voxelprompt.synth import anatomy
    from voxelprompt.synth.anatomy_volumes import reference_markdown

    print(write_text(args.out, reference_markdown({source: anatomy.load(source) for source in anatomy.SOURCES})))
