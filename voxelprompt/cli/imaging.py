"""Commands of the imaging jobs: preprocessing and co-registration. Neither imports the model."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def configure(command: str, parser: argparse.ArgumentParser) -> None:
    {"preprocess": _preprocess_arguments, "coregister": _coregister_arguments}[command](parser)


def _preprocess_arguments(parser: argparse.ArgumentParser) -> None:
    from voxelprompt.imaging.preprocess import MODALITIES

    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--modality", choices=MODALITIES, required=True)
    parser.add_argument("--out-image", type=Path, required=True)
    parser.add_argument("--out-mask", type=Path, required=True, help="cranial-cavity mask on the output grid")
    parser.add_argument("--out-mask-sidecar", type=Path, help="the mask's BIDS sidecar (JSON)")
    parser.add_argument("--out-record", type=Path, required=True, help="the image's record and BIDS sidecar (JSON)")
    parser.add_argument("--accept-unknown-orientation", action="store_true",
                        help="read an image whose NIfTI qform and sform codes are both 0 (its check warned)")
    subject_space = parser.add_argument_group(
        "subject space", "for a subject's reference image, which defines subject space: its co-registration "
        "derivatives (itself, an identity transform and their records), as `coregister` names them")
    subject_space.add_argument("--out-subject-image", type=Path)
    subject_space.add_argument("--out-subject-image-sidecar", type=Path)
    subject_space.add_argument("--out-transform", type=Path)
    subject_space.add_argument("--out-registration-record", type=Path)
    parser.set_defaults(run=_preprocess)


_SUBJECT_SPACE_OUTPUTS = ("out_subject_image", "out_transform", "out_registration_record")


def _preprocess(args: argparse.Namespace) -> None:
    import numpy as np

    from voxelprompt.core.io import load_volume, save_volume, write_json
    from voxelprompt.imaging.preprocess import preprocess
    from voxelprompt.study import derivatives

    given = [name for name in _SUBJECT_SPACE_OUTPUTS if getattr(args, name)]
    if given and len(given) < len(_SUBJECT_SPACE_OUTPUTS):
        missing = sorted(set(_SUBJECT_SPACE_OUTPUTS) - set(given))
        raise SystemExit(f"voxelprompt preprocess: subject-space outputs need all of "
                         f"{', '.join('--' + name.replace('_', '-') for name in missing)} as well")
    started = time.perf_counter()
    mask_metadata = args.out_mask_sidecar and derivatives.mask_metadata(
        "Cranial cavity (intracranial volume), from the fit of an MNI152 template",
        derivatives.derivative_uri(args.out_image), [derivatives.raw_uri(args.image)])
    # The reference image is its own moving image: its subject-space copy comes from itself.
    subject_metadata = args.out_subject_image_sidecar and derivatives.coregistered_metadata(
        args.out_image, args.out_image, args.out_transform)
    image = load_volume(args.image, args.accept_unknown_orientation)
    result = preprocess(image, args.modality, source=str(args.image))
    save_volume(result.image, args.out_image, dtype=np.float32)
    save_volume(result.cranial_cavity, args.out_mask, dtype=np.uint8)
    if mask_metadata:
        write_json(args.out_mask_sidecar, mask_metadata)
    record = result.record.to_dict() | {"seconds": round(time.perf_counter() - started, 3)}
    write_json(args.out_record, derivatives.preprocessed_metadata(args.image) | record)
    if given:
        from voxelprompt.imaging.coregister import coregister

        _write_coregistered(coregister(result, None), args.out_subject_image, args.out_subject_image_sidecar,
                            subject_metadata, args.out_transform, args.out_registration_record)
    print(f"{args.image}: {result.record.original_axcodes} {result.record.original_grid['shape']} -> "
          f"RAS {result.image.shape}, cavity {result.record.cranial_cavity_volume_mm3 / 1000:.0f} mL "
          f"({result.record.cranial_cavity_method})")


def _coregister_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference", type=Path, required=True, help="preprocessed reference image")
    parser.add_argument("--reference-mask", type=Path, required=True, help="its cranial-cavity mask")
    parser.add_argument("--reference-record", type=Path, required=True, help="its preprocessing record (JSON)")
    parser.add_argument("--moving", type=Path, required=True, help="preprocessed image to align")
    parser.add_argument("--moving-mask", type=Path, required=True, help="its cranial-cavity mask")
    parser.add_argument("--moving-record", type=Path, required=True, help="its preprocessing record (JSON)")
    parser.add_argument("--out-image", type=Path, required=True)
    parser.add_argument("--out-image-sidecar", type=Path, help="the image's BIDS sidecar (JSON)")
    parser.add_argument("--out-transform", type=Path, required=True)
    parser.add_argument("--out-record", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.set_defaults(run=_coregister)


def _coregister(args: argparse.Namespace) -> None:
    from voxelprompt.core.io import load_volume, read_json
    from voxelprompt.imaging.coregister import coregister
    from voxelprompt.imaging.preprocess import Preprocessed, PreprocessRecord
    from voxelprompt.study import derivatives

    def load_preprocessed(image: Path, mask: Path, record: Path) -> Preprocessed:
        return Preprocessed(load_volume(image), load_volume(mask), PreprocessRecord.from_dict(read_json(record)))

    reference = load_preprocessed(args.reference, args.reference_mask, args.reference_record)
    is_reference = args.moving.resolve() == args.reference.resolve()
    moving = None if is_reference else load_preprocessed(args.moving, args.moving_mask, args.moving_record)
    # Sidecar names are checked before the registration's minutes are spent.
    image_metadata = args.out_image_sidecar and derivatives.coregistered_metadata(
        args.reference, args.moving, args.out_transform)
    result = coregister(reference, moving, threads=args.threads)
    _write_coregistered(result, args.out_image, args.out_image_sidecar, image_metadata, args.out_transform,
                        args.out_record)
    print(f"{args.moving} -> {args.reference}: {result.record['rotation_deg']:.1f} deg, "
          f"{result.record['translation_mm']:.1f} mm, metric {result.record['metric_value']}")


def _write_coregistered(result, out_image: Path, out_sidecar: Path | None, sidecar: dict | None,
                        out_transform: Path, out_record: Path) -> None:
    """A co-registration's derivatives: the image on the reference grid (and its sidecar), the
    transform and its record."""
    import numpy as np

    from voxelprompt.core.io import save_volume, write_json
    from voxelprompt.imaging.register import write_transform

    write_transform(result.transform, out_transform)
    save_volume(result.image, out_image, dtype=np.float32)
    if out_sidecar:
        write_json(out_sidecar, sidecar)
    write_json(out_record, result.record | {"transform": str(out_transform)})
