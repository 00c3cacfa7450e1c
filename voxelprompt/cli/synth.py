"""Commands that write synthetic subjects: a BIDS cohort with its ground truth, and a picture of them."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(command: str, parser: argparse.ArgumentParser) -> None:
    from voxelprompt.synth import anatomy, contrast
    from voxelprompt.synth.lesions import lesion_classes

    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    if command == "synth-cohort":
        parser.add_argument("--subjects", type=int, default=4)
        parser.add_argument("--contrasts", default="T1w,T2w,FLAIR",
                            help=f"comma-separated, from {','.join(contrast.CONTRASTS)} (DWI brings its ADC)")
        parser.add_argument("--sessions", type=int, default=1)
        parser.add_argument("--lesions", default="tumour",
                            help=f"comma-separated classes ({','.join(lesion_classes())}), or none")
        parser.add_argument("--spacing-mm", type=float, default=None,
                            help="render at this isotropic resolution (default 1 mm)")
        parser.add_argument("--anatomy", choices=anatomy.SOURCES, default="oasis-dk",
                            help="label maps to synthesise from (fsaverage: optional, FreeSurfer licence)")
        parser.add_argument("--jobs", type=int, default=1, help="subjects generated in parallel")
        parser.set_defaults(run=_synth_cohort)
    else:
        parser.add_argument("--subjects", type=int, default=3)
        parser.add_argument("--contrasts", default="T1w,T1w+ce,T2w,FLAIR,DWI,CT")
        parser.add_argument("--lesions", default="tumour,infarct,white matter hyperintensity")
        parser.add_argument("--spacing-mm", type=float, default=1.5)
        parser.set_defaults(run=_synth_montage)


def _contrasts_and_lesions(args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[str, ...]]:
    from voxelprompt.core.errors import InputError
    from voxelprompt.synth import contrast
    from voxelprompt.synth.lesions import lesion_classes

    contrasts = tuple(c.strip() for c in args.contrasts.split(",") if c.strip())
    unknown = sorted(set(contrasts) - set(contrast.CONTRASTS))
    lesions = () if args.lesions.strip() in ("", "none") else tuple(c.strip() for c in args.lesions.split(","))
    unknown += sorted(set(lesions) - set(lesion_classes()))
    if unknown:
        raise InputError("--contrasts/--lesions", f"unknown name(s): {', '.join(unknown)}")
    return contrasts, lesions


def _synth_montage(args: argparse.Namespace) -> None:
    import numpy as np

    from voxelprompt.synth.montage import render_montage
    from voxelprompt.synth.subject import synthesize_subject

    contrasts, lesions = _contrasts_and_lesions(args)
    subjects = [synthesize_subject(np.random.default_rng([args.seed, n]), contrasts, lesions, args.spacing_mm)
                for n in range(1, args.subjects + 1)]
    print(render_montage(subjects, args.out))


def _synth_cohort(args: argparse.Namespace) -> None:
    from voxelprompt.synth.cohort import CohortSettings, write_cohort

    contrasts, lesions = _contrasts_and_lesions(args)
    settings = CohortSettings(subjects=args.subjects, seed=args.seed, contrasts=contrasts, sessions=args.sessions,
                              lesion_classes=lesions, spacing_mm=args.spacing_mm, anatomy=args.anatomy)
    print(write_cohort(args.out, settings, jobs=args.jobs))
