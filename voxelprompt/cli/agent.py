"""`voxelprompt run`: one prompt about one subject's images, answered by a trained model."""

from __future__ import annotations

import argparse
from pathlib import Path

from voxelprompt.model import SHIPPED_MODEL


def configure(command: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL,
                        help="checkpoint directory (default: the model shipped with the package)")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--out", required=True, help="prefix of the output masks: PREFIX_<image>_<output>.nii.gz")
    parser.add_argument("--modalities", default="", help="comma-separated, one per image (default: from BIDS names)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("images", type=Path, nargs="+")
    parser.set_defaults(run=_run_agent)


def _run_agent(args: argparse.Namespace) -> None:
    from voxelprompt.core.errors import InputError, excerpt
    from voxelprompt.study.prompts import check_prompt_length

    too_long = check_prompt_length(args.prompt)
    if too_long:  # refused before the model is loaded
        raise InputError("--prompt", too_long)

    import numpy as np

    from voxelprompt.core.io import load_volume, save_volume
    from voxelprompt.imaging.prepare import prepare
    from voxelprompt.model.agent import Agent
    from voxelprompt.model.joint import VoxelPromptModel, device_for
    from voxelprompt.study.cohort import modality_from_filename, normalise_modality

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
            save_volume(subject.on_image_grid(output, index), target,
                        dtype=np.float32 if output.array.dtype.kind == "f" else np.uint8)
            print(target)
    if not result.ok:
        raise InputError(excerpt(args.prompt), f"the agent did not finish: {result.error}")


def _stem(path: Path) -> str:
    return path.name.split(".")[0]


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text).split()) or "output"
