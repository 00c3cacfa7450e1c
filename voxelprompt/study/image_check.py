"""The check a subject's images pass before the workflow plans their processing (Snakemake
checkpoint `check_subject`): every file reads as a 3D image with a valid affine and usable voxels.

The check's status file exists whether the images are usable or not, so a subject with a bad image
still has a job that records why in the study tables, while the rest of the study goes on.
"""

from __future__ import annotations

from pathlib import Path

from voxelprompt.core.errors import InputError
from voxelprompt.core.io import load_volume, read_json, unknown_orientation, write_json


def check_images(images: list[str | Path], status: str | Path, accept_unknown_orientation: bool = False) -> list[str]:
    """Load every image fully; write {"ok": ..., "errors": [...], "warnings": [...]} to `status`;
    returns the errors (each names its file). An image that needs more memory than the job may use is
    one of them. With `accept_unknown_orientation`, an image of unknown orientation passes with a
    warning, which every answer about the subject then carries."""
    errors, warnings = [], []
    for image in images:
        try:
            volume = load_volume(image, accept_unknown_orientation)
        except InputError as error:
            errors.append(str(error))
        except MemoryError:
            errors.append(f"{image}: reading it needs more memory than the check's limit")
        else:
            if accept_unknown_orientation and (warning := unknown_orientation(image, volume.header)):
                warnings.append(warning)
    write_json(status, {"ok": not errors, "errors": errors, "warnings": warnings, "images": [str(i) for i in images]})
    return errors


def failure_of(status: str | Path) -> str:
    """Why the subject's images failed their check ("" if they passed)."""
    return "; ".join(read_json(status)["errors"])


def warnings_of(status: str | Path) -> str:
    """What every answer about the subject must carry though its images passed ("" for nothing)."""
    return "; ".join(read_json(status).get("warnings", []))


def limit_memory(megabytes: int) -> None:
    """Cap this process's address space, so that an image too large to read fails with MemoryError
    in this job (its error row) instead of drawing the kernel's OOM killer onto any job."""
    import resource

    limit = megabytes * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
