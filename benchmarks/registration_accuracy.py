"""Co-registration error under known random rigid motions, per contrast pair.

The MNI152 1 mm T1w is the reference; the moving scan is the same head (T1w, intensity-inverted
T1w, or the real mean FLAIR template, which shares the T1w's space) moved by a seeded motion of up
to 15 degrees and 15 mm and resampled onto a 1.1 mm grid. Both go through the production path
(preprocess, then coregister); the error is the mean displacement over the brain between the
estimated and the true transform.

    python benchmarks/registration_accuracy.py [--seeds 10]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from voxelprompt.imaging.coregister import coregister
from voxelprompt.study.demo import centred_motion_ras, reacquired
from voxelprompt.core.packaged_data import package_file
from voxelprompt.core.io import load_volume
from voxelprompt.imaging.preprocess import preprocess
from voxelprompt.imaging.register import mean_displacement_mm

MAX_ROTATION_DEG = 15.0
MAX_TRANSLATION_MM = 15.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()

    t1 = load_volume(package_file("nimare", "resources/templates/tpl-MNI152NLin6Asym_res-01_T1w.nii.gz"))
    brain = load_volume(package_file("nimare", "resources/templates/tpl-MNI152NLin6Asym_res-01_desc-brain_mask.nii.gz"))
    flair = load_volume(package_file("swane_supplement", "resources/doMAP_template/mean_flair.nii.gz"))
    head = t1.array > 0.1 * np.percentile(t1.array, 98)
    inverted = t1.with_array(np.where(head, t1.array.max() - t1.array, 0).astype(np.float32))
    points = brain.grid.world_coordinates_mm(np.argwhere(brain.array > 0)[::50].astype(float))
    reference = preprocess(t1, "T1w")

    print(f"{'moving':10} {'seed':>4} {'rotation deg':>12} {'shift mm':>8} {'error mm':>8}")
    errors: dict[str, list[float]] = {}
    for name, source, modality in (("T1w", t1, "T1w"), ("inverted", inverted, "T2w"), ("FLAIR", flair, "FLAIR")):
        for seed in range(args.seeds):
            motion = centred_motion_ras(t1, 1000 + seed, MAX_ROTATION_DEG, MAX_TRANSLATION_MM)
            moving = preprocess(reacquired(source, motion, (1.1, 1.1, 1.1)), modality)
            estimate = np.asarray(coregister(reference, moving).record["ras_matrix"])
            error = mean_displacement_mm(points, estimate, motion)
            errors.setdefault(name, []).append(error)
            angle = np.degrees(np.arccos(np.clip((np.trace(motion[:3, :3]) - 1) / 2, -1, 1)))
            shift = np.linalg.norm(motion @ np.append(points.mean(axis=0), 1) - np.append(points.mean(axis=0), 1))
            print(f"{name:10} {seed:4d} {angle:12.1f} {shift:8.1f} {error:8.3f}")
    print()
    for name, values in errors.items():
        print(f"{name:10} median {statistics.median(values):.3f} mm, max {max(values):.3f} mm over {len(values)} motions")


if __name__ == "__main__":
    main()
