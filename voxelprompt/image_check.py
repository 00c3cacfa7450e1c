"""The check a subject's images pass before the workflow plans their processing (Snakemake
checkpoint `check_subject`): every file reads as a 3D image with a valid affine and usable voxels.

The check's status file exists whether the images are usable or not, so a subject with a bad image
still has a job that records why in the study tables, while the rest of the study goes on.
"""

from __future__ import annotations

from pathlib import Path

from voxelprompt.errors import InputError
from voxelprompt.io import load_volume, read_json, write_json


def check_images(images: list[str | Path], status: str | Path) -> list[str]:
    """Load every image fully; write {"ok": ..., "errors": [...]} to `status`; returns the errors
    (each names its file). An image that needs more memory than the job may use is one of them."""
    errors = []
    for image in images:
        try:
            load_volume(image)
        except InputError as error:
            errors.append(str(error))
        except MemoryError:
            errors.append(f"{image}: reading it needs more memory than the check's limit")
    write_json(status, {"ok": not errors, "errors": errors, "images": [str(i) for i in images]})
    return errors


def failure_of(status: str | Path) -> str:
    """Why the subject's images failed their check ("" if they passed)."""
    return "; ".join(read_json(status)["errors"])


def limit_memory(megabytes: int) -> None:
    """Cap this process's address space, so that an image too large to read fails with MemoryError
    in this job (its error row) instead of drawing the kernel's OOM killer onto any job."""
    import resource

    limit = megabytes * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
