"""Command line: `voxelprompt <command>`. Every workflow rule calls one of these commands.

Each command group lives in its own module, imported only when one of its commands runs, and each
command imports the heavy libraries it needs (torch, transformers, matplotlib) inside itself: a
preprocess or check job never pays for the model, and `voxelprompt --help` starts in well under a
second.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from voxelprompt import __version__
from voxelprompt.core.errors import InputError

# command -> (module of voxelprompt.cli that defines it, one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "make-demo": ("study", "write the embedded demo study as a BIDS dataset"),
    "samples": ("study", "list the images of a BIDS dataset or samples table"),
    "check-images": ("study", "check that a subject's images can be read (writes a status JSON)"),
    "preprocess": ("imaging", "RAS, crop around the cranial cavity, normalise to [0, 1]"),
    "coregister": ("imaging", "rigidly register a preprocessed image to the subject reference"),
    "answer": ("study", "run the study's prompts on one subject's co-registered images"),
    "gather": ("study", "the study tables from every subject's part"),
    "qc-report": ("study", "the visual QC report (HTML with PNG overlays) of the study tables"),
    "describe-derivatives": ("study", "dataset_description.json and .bidsignore of the outputs"),
    "run": ("agent", "answer a prompt about one subject's images with a trained model"),
    "train": ("model", "train the model (several processes: torchrun ... -m voxelprompt train)"),
    "export-model": ("model", "write a checkpoint in half precision with its scores in the model card"),
    "evaluate-model": ("evaluation", "the paper's evaluation protocol on held-out data: Parquet tables, plots and "
                                     "a markdown summary"),
    "tasks": ("reference", "the task catalogue: list tasks, sample prompts with their programs"),
    "library-reference": ("reference", "write the reference page of the agent's function library"),
    "label-reference": ("reference", "write the reference page of every prompt-able target"),
    "anatomy-reference": ("reference", "write the page of every target's volume in each anatomy, against FreeSurfer's"),
    "synth-cohort": ("synth", "write a synthetic BIDS cohort with its ground truth"),
    "synth-montage": ("synth", "render a PNG of synthetic subjects (contrasts, labels, lesions)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="voxelprompt", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"voxelprompt {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # The top-level options take no value, so the first word that is not an option names the command:
    # only that command's module is imported to describe its arguments.
    chosen = next((word for word in argv if not word.startswith("-")), None)
    for name, (group, help_text) in COMMANDS.items():
        command = commands.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(f"voxelprompt.cli.{group}").configure(name, command)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except InputError as error:
        print(f"voxelprompt: error: {error}", file=sys.stderr)
        return 1
    return 0
