"""Wall time of the command line's entry points, each in a fresh process: `voxelprompt --help` and
the per-image jobs of a study (check, preprocess, the reference image's preprocessing with its
subject-space derivatives, co-registration of a second image), on the demo's 2 mm MNI T1w. The
co-registration of the reference to itself is kept as a row: a study ran it as a job of its own until
the reference's preprocessing wrote those derivatives. These jobs run once per image of a study, so what they
import before working is paid thousands of times.

    python benchmarks/entry_points.py [--repeats 5] [--source CHECKOUT]

--source runs another checkout's package (e.g. a `git worktree` of an older commit) for a before /
after table; the images and the interpreter stay the same.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from preprocess_coregister import run_measured, summarise

from voxelprompt.core.io import load_volume, save_volume
from voxelprompt.core.packaged_data import package_file
from voxelprompt.core.volume import Volume
from voxelprompt.study.demo import random_rigid_ras

MNI_T1_2MM = ("nimare", "resources/templates/tpl-MNI152NLin6Asym_res-02_T1w.nii.gz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--source", type=Path, help="a checkout whose voxelprompt package to run")
    args = parser.parse_args()
    if args.source:
        os.environ["PYTHONPATH"] = str(args.source.resolve())
    cli = [sys.executable, "-m", "voxelprompt"]
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        os.chdir(work)  # `python -m` looks in the working directory first: run from outside any checkout
        image = package_file(*MNI_T1_2MM)
        volume = load_volume(image)
        moved = save_volume(Volume(volume.array, random_rigid_ras(3, 8, 8) @ volume.affine), work / "moved.nii.gz")

        def preprocessed(name: str, source: Path) -> list[str]:
            return ["preprocess", "--image", str(source), "--modality", "T1w", "--out-image", str(work / f"{name}.nii.gz"),
                    "--out-mask", str(work / f"{name}_mask.nii.gz"), "--out-record", str(work / f"{name}.json")]

        def coregistered(moving: str) -> list[str]:
            return ["coregister", "--reference", str(work / "ref.nii.gz"), "--reference-mask", str(work / "ref_mask.nii.gz"),
                    "--reference-record", str(work / "ref.json"), "--moving", str(work / f"{moving}.nii.gz"),
                    "--moving-mask", str(work / f"{moving}_mask.nii.gz"), "--moving-record", str(work / f"{moving}.json"),
                    "--out-image", str(work / "out.nii.gz"), "--out-transform", str(work / "out.txt"),
                    "--out-record", str(work / "out.json")]

        commands = {
            "voxelprompt --help": ["--help"],
            "check-images (one image)": ["check-images", "--out-status", str(work / "status.json"), str(image)],
            "preprocess (2 mm T1w)": preprocessed("ref", image),
            "preprocess (the reference, with its subject-space derivatives)": preprocessed("ref", image) + [
                "--out-subject-image", str(work / "subject.nii.gz"), "--out-transform", str(work / "subject.txt"),
                "--out-registration-record", str(work / "subject.json")],
            "coregister (the reference itself; no longer a job)": coregistered("ref"),
            "coregister (a moved image)": coregistered("moved"),
        }
        run_measured(cli + preprocessed("moved", moved))
        print(f"| command | median s | min s | max s | peak MiB |  ({args.repeats} runs each, "
              f"{args.source or 'this checkout'})")
        print("|---|---|---|---|---|")
        for name, command in commands.items():
            row = summarise([run_measured(cli + command) for _ in range(args.repeats)])
            print(f"| {name} | {row['median_s']} | {row['min_s']} | {row['max_s']} | {row['peak_rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
