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
    parser.set_defaults(run=_preprocess)


def _preprocess(args: argparse.Namespace) -> None:
    import numpy as np

    from voxelprompt.core.io import load_volume, save_volume, write_json
    from voxelprompt.imaging.preprocess import preprocess
    from voxelprompt.study import derivatives

    started = time.perf_counter()
    mask_metadata = args.out_mask_sidecar and derivatives.mask_metadata(
        "Cranial cavity (intracranial volume), from the fit of an MNI152 template",
        derivatives.derivative_uri(args.out_image), [derivatives.raw_uri(args.image)])
    image = load_volume(args.image, args.accept_unknown_orientation)
    result = preprocess(image, args.modality, source=str(args.image))
    save_volume(result.image, args.out_image, dtype=np.float32)
    save_volume(result.cranial_cavity, args.out_mask, dtype=np.uint8)
    if mask_metadata:
        write_json(args.out_mask_sidecar, mask_metadata)
    record = result.record.to_dict() | {"seconds": round(time.perf_counter() - started, 3)}
    write_json(args.out_record, derivatives.preprocessed_metadata(args.image) | record)
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
    import numpy as np

    from voxelprompt.core.io import load_volume, read_json, save_volume, write_json
    from voxelprompt.imaging.coregister import coregister
    from voxelprompt.imaging.preprocess import Preprocessed, PreprocessRecord
    from voxelprompt.imaging.register import write_transform
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
    write_transform(result.transform, args.out_transform)
    save_volume(result.image, args.out_image, dtype=np.float32)
    if image_metadata:
        write_json(args.out_image_sidecar, image_metadata)
    write_json(args.out_record, result.record | {"transform": str(args.out_transform)})
    print(f"{args.moving} -> {args.reference}: {result.record['rotation_deg']:.1f} deg, "
          f"{result.record['translation_mm']:.1f} mm, metric {result.record['metric_value']}")
