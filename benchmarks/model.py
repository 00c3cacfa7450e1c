"""Cost of the model on this machine: training steps per second, inference seconds per prompt at 2 mm
and 1 mm, peak memory, and the forward cost of the instructable UNet relative to a plain UNet with
the same channels (no latent mixing, no stream interaction), measured in the same run.

    python benchmarks/model.py --model runs/cpu/best [--repeats 3]

Each figure is the median of `--repeats` runs; peak memory is the maximum resident set size of the
process. Training shares this process (its peak includes the model and the examples); each
inference setting runs in a process of its own, so that its peak is its own: a volume prompt on two
scans of a head cropped to the cranial cavity with a 10 mm margin, at 2 mm and at 1 mm, the latter
both on the model's working grid (`working_spacing_mm`) and at the scans' own 1 mm.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from voxelprompt.imaging.preprocess import crop_box, head_mask
from voxelprompt.model.agent import Agent
from voxelprompt.model.joint import VoxelPromptModel
from voxelprompt.model.vision import VisionNetworks
from voxelprompt.tasks.catalogue import catalogue
from voxelprompt.tasks.sampling import sample_example
from voxelprompt.train import episodes
from voxelprompt.train.loop import ImagedEpisodes
from voxelprompt.train.objective import Objective

# Time a first run: no atlas fit is read from the cache a previous run (or repeat) filled.
os.environ["VOXELPROMPT_ATLAS_FITS"] = "off"


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median_seconds(function, repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--inference-at", type=float, help=argparse.SUPPRESS)  # one inference setting (internal)
    parser.add_argument("--working-spacing", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inference_at:
        print(json.dumps(inference(args.model, args.inference_at, args.working_spacing, args.repeats)))
        return
    model = VoxelPromptModel.from_pretrained(args.model)
    rng = np.random.default_rng(7)
    tasks = list(catalogue().values())

    # Forward cost: instructable vs plain UNet, same channels, one 2 mm head-sized input.
    plain = VisionNetworks(model.config.vision, model.config.agent.hidden, instructable=False)
    images = torch.rand(1, 1, 80, 96, 80)
    phi = torch.zeros(model.config.vision.phi_dim)
    with torch.no_grad():
        def forward(networks):
            return lambda: networks.generate(networks.encode(images, (2.0, 2.0, 2.0), ["T1w"], phi), phi, ["T1w"])
        instructable_s = median_seconds(forward(model.vision), args.repeats)
        plain_s = median_seconds(forward(plain), args.repeats)
    print(f"vision forward, 80x96x80, one scan: instructable {instructable_s:.2f} s, plain {plain_s:.2f} s, "
          f"ratio {instructable_s / plain_s:.2f}")

    # Training steps: the settings of train.py's defaults (8 text episodes; an imaged one every other step).
    objective = Objective(model)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-5)
    imaged = iter(ImagedEpisodes(model.tokenizer.to_str(), [11], 2.0, (48, 56, 48), 4, 2))
    batches = [next(imaged) for _ in range(args.repeats)]

    def step(with_images):
        text = [episodes.text_only(model.tokenizer, tasks[int(rng.integers(len(tasks)))], rng) for _ in range(8)]
        losses = objective(text, with_images, rng)
        losses.total.backward()
        optimiser.step()
        optimiser.zero_grad()

    text_s = median_seconds(lambda: step(None), args.repeats)
    imaged_s = statistics.median(median_seconds(lambda b=b: step(b), 1) for b in batches)
    print(f"training step: text only {text_s:.2f} s, with images {imaged_s:.2f} s, "
          f"alternating {2 / (text_s + imaged_s):.2f} steps/s; peak {peak_mib():.0f} MiB")

    # Inference per prompt, each setting in a process of its own.
    for spacing, working in ((2.0, None), (1.0, None), (1.0, 0.0)):
        command = [sys.executable, __file__, "--model", args.model, "--repeats", str(args.repeats),
                   "--inference-at", str(spacing)] + ([] if working is None else ["--working-spacing", str(working)])
        measured = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        grid = "the model's working grid" if working is None else "the scans' own grid"
        print(f"inference, volume prompt at {spacing:g} mm on {grid} ({measured['shape']}, {measured['scans']} scans): "
              f"{measured['seconds']:.2f} s per prompt; peak {measured['peak_mib']:.0f} MiB")


def inference(model_dir: str, spacing_mm: float, working_spacing_mm: float | None, repeats: int) -> dict:
    """One setting of the inference benchmark (run in a process of its own by `main`)."""
    model = VoxelPromptModel.from_pretrained(model_dir)
    if working_spacing_mm is not None:
        model.config = replace(model.config, vision=replace(model.config.vision, working_spacing_mm=working_spacing_mm))
    example = sample_example(np.random.default_rng([3, int(spacing_mm)]), "volume", spacing_mm)
    scans = example.subject.scans[:2]
    start, stop = crop_box(head_mask(scans[0].volume, scans[0].modality), scans[0].volume.spacing_mm, 10.0)
    scans = [replace(s, volume=s.volume.cropped(tuple(start), tuple(stop))) for s in scans]
    agent = Agent(model)
    seconds = median_seconds(lambda: agent.run(example.prompt, scans), repeats)
    return {"shape": list(scans[0].volume.shape), "scans": len(scans), "seconds": round(seconds, 2),
            "peak_mib": round(peak_mib())}


if __name__ == "__main__":
    main()
