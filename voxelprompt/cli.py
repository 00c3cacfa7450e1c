"""Command line: `voxelprompt <command>`. Every workflow rule calls one of these commands."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from voxelprompt import __version__, cohort, demo
from voxelprompt.errors import InputError
from voxelprompt.io import atomic_output, load_volume, read_json, save_volume, write_json
from voxelprompt.preprocess import MODALITIES, PreprocessRecord, initial_alignment, preprocess
from voxelprompt.register import RegistrationSettings, register, resample, transform_to_ras_matrix, write_transform


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

    prep = commands.add_parser("preprocess", help="RAS, crop around the cranial cavity, normalise to [0, 1]")
    prep.add_argument("--image", type=Path, required=True)
    prep.add_argument("--modality", choices=MODALITIES, required=True)
    prep.add_argument("--out-image", type=Path, required=True)
    prep.add_argument("--out-mask", type=Path, required=True, help="cranial-cavity mask on the output grid")
    prep.add_argument("--out-record", type=Path, required=True)
    prep.set_defaults(run=_preprocess)

    coreg = commands.add_parser("coregister", help="rigidly register a preprocessed image to the subject reference")
    coreg.add_argument("--reference", type=Path, required=True, help="preprocessed reference image")
    coreg.add_argument("--reference-mask", type=Path, required=True, help="its cranial-cavity mask")
    coreg.add_argument("--reference-record", type=Path, required=True, help="its preprocessing record (JSON)")
    coreg.add_argument("--moving", type=Path, required=True, help="preprocessed image to align")
    coreg.add_argument("--moving-mask", type=Path, required=True, help="its cranial-cavity mask")
    coreg.add_argument("--moving-record", type=Path, required=True, help="its preprocessing record (JSON)")
    coreg.add_argument("--out-image", type=Path, required=True)
    coreg.add_argument("--out-transform", type=Path, required=True)
    coreg.add_argument("--out-record", type=Path, required=True)
    coreg.add_argument("--threads", type=int, default=1)
    coreg.set_defaults(run=_coregister)

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
        study = cohort.from_table(pd.read_csv(args.table, sep="\t", dtype=str), args.table)
    for problem in study.rejected:
        print(f"voxelprompt: skipped: {problem}", file=sys.stderr)
    table = study.images[cohort.COLUMNS]
    if args.out:
        with atomic_output(args.out) as tmp:
            table.to_csv(tmp, sep="\t", index=False)
    else:
        print(table.to_csv(sep="\t", index=False), end="")


def _preprocess(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    result = preprocess(load_volume(args.image), args.modality, source=str(args.image))
    save_volume(result.image, args.out_image, dtype=np.float32)
    save_volume(result.cranial_cavity, args.out_mask, dtype=np.uint8)
    record = result.record.to_dict() | {"seconds": round(time.perf_counter() - started, 3)}
    write_json(args.out_record, record)
    print(f"{args.image}: {result.record.original_axcodes} {result.record.original_grid['shape']} -> "
          f"RAS {result.image.shape}, cavity {result.record.cranial_cavity_volume_mm3 / 1000:.0f} mL "
          f"({result.record.cranial_cavity_method})")


def _coregister(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    reference = load_volume(args.reference)
    if args.moving.resolve() == args.reference.resolve():
        # The reference defines the subject space: identity transform, image unchanged.
        transform = sitk.Euler3DTransform()
        image, metric, iterations, stop = reference, None, 0, "reference image (identity)"
    else:
        moving = load_volume(args.moving)
        initial = initial_alignment(
            PreprocessRecord.from_dict(read_json(args.reference_record)),
            PreprocessRecord.from_dict(read_json(args.moving_record)),
        )
        fit = register(
            reference,
            moving,
            fixed_mask=load_volume(args.reference_mask),
            moving_mask=load_volume(args.moving_mask),
            initial_ras=initial,
            settings=RegistrationSettings(threads=args.threads),
        )
        transform, metric, iterations, stop = fit.transform, fit.metric_value, fit.iterations, fit.stop_condition
        image = resample(moving, reference.grid, transform)
    write_transform(transform, args.out_transform)
    save_volume(image, args.out_image, dtype=np.float32)
    matrix = transform_to_ras_matrix(transform)
    write_json(args.out_record, {
        "reference": str(args.reference),
        "moving": str(args.moving),
        "transform": str(args.out_transform),
        "transform_convention": "ITK: maps subject-space (reference) points to the moving image's space, LPS mm",
        "ras_matrix": matrix.tolist(),
        "rotation_deg": float(np.degrees(np.arccos(np.clip((np.trace(matrix[:3, :3]) - 1) / 2, -1, 1)))),
        "translation_mm": float(np.linalg.norm(matrix[:3, 3])),
        "metric": "Mattes mutual information (negative; lower is better)",
        "metric_value": metric,
        "iterations": iterations,
        "stop_condition": stop,
        "seconds": round(time.perf_counter() - started, 3),
        "voxelprompt_version": __version__,
    })
    print(f"{args.moving} -> {args.reference}: metric {metric}, {iterations} iterations")


if __name__ == "__main__":
    sys.exit(main())
