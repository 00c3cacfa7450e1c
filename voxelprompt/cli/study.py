"""Commands of a study's jobs: the demo, the samples, image checks, the answer job, the tables, QC."""

from __future__ import annotations

import argparse
from pathlib import Path

from voxelprompt.model import SHIPPED_MODEL


def configure(command: str, parser: argparse.ArgumentParser) -> None:
    {"make-demo": _make_demo_arguments, "samples": _samples_arguments, "check-images": _check_images_arguments,
     "answer": _answer_arguments, "gather": _gather_arguments, "qc-report": _qc_report_arguments,
     "describe-derivatives": _describe_arguments}[command](parser)


def _make_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", type=Path)
    parser.set_defaults(run=_make_demo)


def _make_demo(args: argparse.Namespace) -> None:
    from voxelprompt.study import demo

    for path in demo.make_demo_study(args.out_dir):
        print(path)


def _samples_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bids", type=Path)
    source.add_argument("--table", type=Path)
    parser.add_argument("--out", type=Path, help="write the table as TSV instead of printing it")
    parser.set_defaults(run=_samples)


def _samples(args: argparse.Namespace) -> None:
    import sys

    from voxelprompt.core.io import atomic_output
    from voxelprompt.study import cohort
    from voxelprompt.study.inputs import read_samples_table

    if args.bids:
        study = cohort.from_bids(args.bids)
    else:
        study = cohort.from_table(read_samples_table(args.table), args.table)
    for problem in study.rejected:
        print(f"voxelprompt: skipped: {problem}", file=sys.stderr)
    table = study.images[cohort.COLUMNS]
    if args.out:
        with atomic_output(args.out) as tmp:
            table.to_csv(tmp, sep="\t", index=False)
    else:
        print(table.to_csv(sep="\t", index=False), end="")


def _check_images_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out-status", type=Path, required=True)
    parser.add_argument("--memory-limit-mb", type=int, default=0,
                        help="cap the job's address space (0: no cap); an image needing more is an error")
    parser.add_argument("--accept-unknown-orientation", action="store_true",
                        help="pass images whose NIfTI qform and sform codes are both 0, with a warning")
    parser.add_argument("images", type=Path, nargs="+")
    parser.set_defaults(run=_check_images)


def _check_images(args: argparse.Namespace) -> None:
    from voxelprompt.study.image_check import check_images, limit_memory

    if args.memory_limit_mb:
        limit_memory(args.memory_limit_mb)
    errors = check_images(args.images, args.out_status, args.accept_unknown_orientation)
    print("\n".join(errors) or f"{len(args.images)} images ok")


def _answer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subject", required=True, help="subject label, without sub-")
    parser.add_argument("--input-kind", choices=("demo", "bids", "samples"), required=True)
    parser.add_argument("--input-path", type=Path, required=True)
    parser.add_argument("--output-dir", type=Path, required=True, help="the workflow's output folder")
    parser.add_argument("--prompts", type=Path, required=True, help="the study's prompts (CSV)")
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.set_defaults(run=_answer)


def _answer(args: argparse.Namespace) -> None:
    from voxelprompt.study import inputs
    from voxelprompt.study.answer import answer_subject
    from voxelprompt.study.paths import DerivativePaths
    from voxelprompt.study.prompts import load_prompts

    cohort = inputs.load(args.input_kind, args.input_path)
    paths = DerivativePaths(args.output_dir)
    print(answer_subject(args.subject, cohort, load_prompts(args.prompts), args.model, paths,
                         Path(paths.part_folder(args.subject)), args.device, args.threads))


def _gather_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--config-json", default="", help="the workflow's configuration, for its hash")
    parser.add_argument("subjects", nargs="*", help="subject labels whose parts to gather")
    parser.set_defaults(run=_gather)


def _gather(args: argparse.Namespace) -> None:
    from voxelprompt.study import report
    from voxelprompt.study.paths import DerivativePaths

    paths = DerivativePaths(args.output_dir)
    parts = [Path(paths.part_folder(subject)) for subject in args.subjects]
    written = report.gather(parts, args.output_dir, report.provenance(args.model, args.config_json))
    print("\n".join(str(p) for p in written.values()))


def _qc_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tables", type=Path, required=True, help="folder holding the study's Parquet tables")
    parser.add_argument("--out", type=Path, required=True)
    parser.set_defaults(run=_qc_report)


def _qc_report(args: argparse.Namespace) -> None:
    from voxelprompt.study.qc import write_qc_report

    print(write_qc_report(args.tables, args.out))


def _describe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--source", required=True, help="the study's input (folder or table)")
    parser.set_defaults(run=_describe_derivatives)


def _describe_derivatives(args: argparse.Namespace) -> None:
    from voxelprompt.study import derivatives

    print(derivatives.describe(args.output_dir, args.source))
