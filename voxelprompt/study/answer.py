"""One subject's answers in the study workflow (rule `answer`).

Every prompt of the study that applies to the subject runs on the images it selects, co-registered
and back in scanner units, with the model loaded once and the subject's encoding shared by its
prompts. Each output goes back onto the grid of every image the prompt used, as a BIDS-derivative
NIfTI with a JSON sidecar naming that image. The subject's rows of the study tables are written as
its part (`report.write_part`).

Nothing one prompt does stops the others, and nothing stops the study: an image that failed its
check, a prompt that selects no image, or a program that fails becomes rows with status "error".
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from voxelprompt.core.errors import InputError
from voxelprompt.core.io import load_volume, read_json, save_volume, write_json
from voxelprompt.core.scan import Scan
from voxelprompt.core.volume import Grid, Volume
from voxelprompt.imaging.prepare import scanner_units
from voxelprompt.imaging.preprocess import PreprocessRecord
from voxelprompt.imaging.register import read_transform, to_image_grid
from voxelprompt.study import report
from voxelprompt.study.cohort import Cohort
from voxelprompt.study.derivatives import mask_metadata, raw_uri
from voxelprompt.study.image_check import failure_of, warnings_of
from voxelprompt.study.paths import DerivativePaths, sidecar
from voxelprompt.study.prompts import StudyPrompt

if TYPE_CHECKING:
    from voxelprompt.model.agent import Agent


@dataclass
class SubjectImage:
    row: dict  # the cohort's row of the image
    scan: Scan  # co-registered onto the subject grid, in scanner units
    grid: Grid  # the image's own grid
    transform: sitk.Transform  # subject point -> image point


def answer_subject(subject: str, cohort: Cohort, prompts: list[StudyPrompt], model_dir: Path,
                   paths: DerivativePaths, part: Path, device: str = "auto", threads: int = 0) -> Path:
    """Run the subject's prompts and write its part; returns the part folder. `device` is "auto"
    (CUDA when present), "cpu" or "cuda"; `threads` sets torch's threads (0: torch's default)."""
    rows = cohort.subject_images(subject)
    applicable = [p for p in prompts if p.applies_to(subject)]
    model_id = model_identifier(model_dir)

    def failed(message: str) -> Path:  # every prompt of the subject gets this error row
        texts = {p.prompt_id: p.prompt for p in applicable}
        return report.write_part(report.failed_subject_tables(subject, "", texts, message, model_id), part)

    message = failure_of(paths.subject_check(subject))
    if message:
        return failed(message)
    try:
        images = {row["image_id"]: _load(row, paths) for row in rows.to_dict("records")} if applicable else {}
    except InputError as error:
        return failed(str(error))
    agent = load_agent(model_dir, device, threads) if applicable else None
    cache: dict = {}
    runs = [_run(agent, prompt, rows, images, paths, cache) for prompt in applicable]
    warning = warnings_of(paths.subject_check(subject))
    return report.write_part(report.subject_tables(subject, "", runs, model_id, warning), part)


def load_agent(model_dir: Path, device: str, threads: int) -> Agent:
    """The model, loaded only for a subject with prompts to answer: a subject whose images failed
    their check gets its error rows without importing torch."""
    import torch

    from voxelprompt.model.agent import Agent
    from voxelprompt.model.joint import VoxelPromptModel, device_for

    if threads:
        torch.set_num_threads(threads)
    return Agent(VoxelPromptModel.from_pretrained(model_dir, device_for(device)))


def _run(agent: Agent, prompt: StudyPrompt, rows, images: dict[str, SubjectImage], paths: DerivativePaths,
         cache: dict) -> report.PromptRun:
    try:
        selected = [images[row["image_id"]] for row in prompt.select(rows)]
    except InputError as error:
        return report.PromptRun(prompt.prompt_id, prompt.prompt, error=str(error))
    sessions = sorted({image.row["session"] for image in selected})
    session = sessions[0] if len(sessions) == 1 else ""
    try:
        result = agent.run(prompt.prompt, [image.scan for image in selected], cache)
    except Exception as error:  # noqa: BLE001 - a prompt the model cannot handle is an error row, never a crash
        traceback.print_exc()  # into the job's log, for whoever debugs it
        return report.PromptRun(prompt.prompt_id, prompt.prompt, error=f"{type(error).__name__}: {error}",
                                session=session)
    masks = []
    if result.ok:
        for name, output in result.outputs.items():
            for image in selected:
                masks.append(_write_output(output, name, prompt, image, paths))
    return report.PromptRun(prompt.prompt_id, prompt.prompt, result=result, masks=masks, session=session)


def _load(row: dict, paths: DerivativePaths) -> SubjectImage:
    """The image co-registered (its workflow outputs) and its own grid (the raw file's header)."""
    record = PreprocessRecord.from_dict(read_json(paths.preprocess_record(row)))
    volume = scanner_units(load_volume(paths.coregistered_image(row)), record)
    scan = Scan(volume, _modality(row), row["session"], row["acquisition_date"])
    return SubjectImage(row, scan, Grid.from_dict(record.original_grid), read_transform(paths.transform(row)))


def _modality(row: dict) -> str:
    # Post-contrast T1w is a T1w with a `ce` entity in the cohort; the agent knows it as its own contrast.
    return "T1w+ce" if row["modality"] == "T1w" and row.get("ce") else row["modality"]


def _write_output(output: Volume, name: str, prompt: StudyPrompt, image: SubjectImage,
                  paths: DerivativePaths) -> report.MaskFile:
    """The output on the image's own grid: a mask (nearest neighbour) or an image (linear), with a
    sidecar saying what it is and which image it lies on."""
    is_mask = output.array.dtype == np.uint8 or output.array.dtype == bool
    on_image = to_image_grid(output, image.transform, image.grid, nearest=is_mask)
    path = Path(paths.prompt_output(image.row, prompt.prompt_id, name, is_mask))
    save_volume(on_image, path, dtype=np.uint8 if is_mask else np.float32)
    raw = raw_uri(image.row["path"])
    write_json(sidecar(path), mask_metadata(
        f"{name}: output of the prompt {prompt.prompt!r} (prompt_id {prompt.prompt_id})", raw, [raw], is_mask))
    return report.MaskFile.of(name, path, image.row["path"], on_image)


def model_identifier(model_dir: Path) -> str:
    """The model's folder name and the first 12 hex digits of its weights' sha256."""
    return f"{Path(model_dir).name}@{report.file_sha256(Path(model_dir) / 'model.safetensors')[:12]}"
