"""Cost of the model on this machine: training steps per second, inference seconds per prompt at 2 mm
and 1 mm, peak memory, and the forward cost of the instructable UNet relative to a plain UNet with
the same channels (no latent mixing, no stream interaction), measured in the same run.

    python benchmarks/model.py --model runs/cpu/best [--repeats 3]

Each figure is the median of `--repeats` runs in this process; peak memory is the process's
maximum resident set size after each part (it only grows, so later parts report at least the
earlier peaks).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import torch

from voxelprompt.agent import Agent
from voxelprompt.model import episode as episodes
from voxelprompt.model.joint import VoxelPromptModel
from voxelprompt.model.objective import Objective
from voxelprompt.model.vision import VisionNetworks
from voxelprompt.tasks.catalogue import catalogue
from voxelprompt.tasks.sampling import sample_example
from voxelprompt.train import ImagedEpisodes


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
    args = parser.parse_args()
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

    # Inference per prompt at 2 mm and 1 mm (the whole agent loop, volume prompt).
    agent = Agent(model)
    for spacing in (2.0, 1.0):
        example = sample_example(np.random.default_rng([3, int(spacing)]), "volume", spacing)
        shape = example.subject.scans[0].volume.shape
        seconds = median_seconds(lambda: agent.run(example.prompt, example.subject.scans), args.repeats)
        print(f"inference, volume prompt at {spacing:g} mm ({shape}, {len(example.subject.scans)} scans): "
              f"{seconds:.2f} s per prompt; peak {peak_mib():.0f} MiB")


if __name__ == "__main__":
    main()
