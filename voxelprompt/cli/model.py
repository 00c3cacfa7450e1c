"""Commands that make checkpoints: training and export."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def configure(command: str, parser: argparse.ArgumentParser) -> None:
    {"train": _train_arguments, "export-model": _export_arguments}[command](parser)


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    from voxelprompt.train.loop import Settings

    parser.add_argument("--out", type=Path, required=True, help="run folder: latest/ (resumable), best/, log.csv")
    parser.add_argument("--export", type=Path, help="then write the best checkpoint here, in half precision")
    for name, default in vars(Settings(out="")).items():
        if name != "out":
            kind = type(default)
            parser.add_argument(f"--{name.replace('_', '-')}", default=default,
                                type=(lambda text: tuple(int(v) for v in text.split(","))) if kind is tuple else kind)
    parser.set_defaults(run=_train)


def _train(args: argparse.Namespace) -> None:
    from voxelprompt.core.errors import InputError
    from voxelprompt.core.seeds import refuse_reserved
    from voxelprompt.model.config import PRESETS
    from voxelprompt.train.loop import Settings, train

    settings = Settings(**{k: (str(v) if k == "out" else v) for k, v in vars(args).items()
                           if k in Settings.__dataclass_fields__})
    if settings.preset not in PRESETS:
        raise InputError("--preset", f"unknown preset {settings.preset!r}; presets: {', '.join(PRESETS)}")
    try:
        refuse_reserved(settings.seed)
    except ValueError as reserved:
        raise InputError("--seed", str(reserved)) from None
    best = train(settings)
    print(best)
    # Under torchrun every process returns here; one of them exports.
    if args.export and int(os.environ.get("RANK", "0")) == 0:
        print(export(best, args.export))


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--evaluation", type=Path, help="folder written by evaluate-model --out-dir: its summary goes "
                        "into the model card")
    parser.set_defaults(run=lambda args: print(export(args.model, args.out, args.evaluation)))


def export(model_dir: Path, out: Path, evaluation: Path | None = None) -> Path:
    """The checkpoint in half precision, its card extended by the summary of evaluate-model."""
    import torch

    from voxelprompt.core.errors import InputError
    from voxelprompt.model.joint import VoxelPromptModel

    model = VoxelPromptModel.from_pretrained(model_dir)
    card = (Path(model_dir) / "MODEL_CARD.md").read_text() if (Path(model_dir) / "MODEL_CARD.md").is_file() else ""
    if evaluation:
        summary = Path(evaluation) / "summary.md"
        if not summary.is_file():
            raise InputError(summary, "missing: pass the folder written by `voxelprompt evaluate-model --out-dir`")
        card += "\n## Evaluation (voxelprompt evaluate-model, held-out data)\n\n" + summary.read_text()
    return model.save_pretrained(out, card=card, dtype=torch.float16)
