"""Compare two results/ folders of the same workflow, e.g. a SLURM run against a local run.

    python tests/slurm_compare.py RUN_A/results RUN_B/results

Every file must exist in both and hold the same content, judged by what it means rather than by its
bytes: NIfTI/MGZ by voxel data and affine; JSON by value; TSV/CSV/Parquet as pandas tables; PNG by
pixels; HTML by its text, cell by cell; other text line by line; anything else byte for byte. What
legitimately differs between two runs is left out: how long a step took (`seconds` keys and columns,
HTML table columns headed "seconds" or "... s"), timestamps, host names, the run's own folder, and
Parquet schema metadata (provenance). Floats match within a tight tolerance because
a different number of threads may sum in a different order.
Exit status 0 when the folders match; otherwise each differing file is printed with the reason.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd

# Keys (JSON) and columns (tables) that record when, where or how long, not what was computed.
VOLATILE_NAMES = frozenset(
    {"seconds", "wall_seconds", "elapsed_seconds", "runtime_seconds", "timestamp", "host", "hostname"}
)
TIMING_HEADER = re.compile(r"(^|\s)(s|sec|seconds|runtime)(\s|$)|\((s|sec|seconds)\)")  # "median s", "time (s)"
ISO_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?")
NIFTI_SUFFIXES = (".nii", ".nii.gz", ".mgz")
TABLE_READERS = {".parquet": pd.read_parquet, ".tsv": lambda p: pd.read_csv(p, sep="\t"), ".csv": pd.read_csv}


def compare_folders(
    a: Path, b: Path, rtol: float = 1e-6, atol: float = 1e-6, roots: tuple[Path, Path] | None = None
) -> list[str]:
    """One line per difference between the two folders (empty: they match).

    roots: the folders the two runs were made in, which their provenance records; by default the
    parents of a and b, which is wrong for a results/ copied elsewhere after its run."""
    # Absolute: the provenance holds absolute paths, and "." would match every dot.
    roots = tuple(root.absolute() for root in roots or (a.parent, b.parent))
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    problems = [f"{name}: only in {a}" for name in sorted(files_a - files_b)]
    problems += [f"{name}: only in {b}" for name in sorted(files_b - files_a)]
    if not files_a and not files_b:
        problems.append(f"no files in either {a} or {b}")
    for name in sorted(files_a & files_b):
        try:
            reason = compare_files(a / name, b / name, roots=roots, rtol=rtol, atol=atol)
        except Exception as error:  # an unreadable file is a difference, not a crash
            reason = f"could not compare: {type(error).__name__}: {error}"
        if reason:
            problems.append(f"{name}: {reason}")
    return problems


def compare_files(a: Path, b: Path, roots: tuple[Path, Path], rtol: float, atol: float) -> str | None:
    """Why the two files differ, or None when they match."""
    name = a.name
    if name.endswith(NIFTI_SUFFIXES):
        return _compare_images(a, b, rtol, atol)
    if a.suffix == ".json":
        left, right = (_normalise(json.loads(p.read_text()), root) for p, root in zip((a, b), roots))
        return _compare_values(left, right, "", rtol, atol)
    if a.suffix in TABLE_READERS:
        read = TABLE_READERS[a.suffix]
        return _compare_tables(read(a), read(b), rtol, atol)
    if a.suffix == ".png":
        import matplotlib.image

        return _compare_arrays(matplotlib.image.imread(a), matplotlib.image.imread(b), "pixels", 0, 0)
    try:
        text_a, text_b = (_normalise(p.read_text(), root) for p, root in zip((a, b), roots))
    except UnicodeDecodeError:
        return None if a.read_bytes() == b.read_bytes() else "bytes differ"
    if a.suffix in (".html", ".htm"):
        return _compare_lines(_html_text(text_a), _html_text(text_b), "text item")
    return _compare_lines(text_a.splitlines(), text_b.splitlines(), "line")


def _compare_lines(a: list[str], b: list[str], what: str) -> str | None:
    for number, (line_a, line_b) in enumerate(zip(a, b), start=1):
        if line_a != line_b:
            start = max(0, next(i for i, (x, y) in enumerate(zip(line_a + "\0", line_b + "\1")) if x != y) - 30)
            return f"{what} {number}: ...{line_a[start:start + 70]!r} != ...{line_b[start:start + 70]!r}"
    return None if len(a) == len(b) else f"{len(a)} {what}s != {len(b)} {what}s"


class _HtmlText(HTMLParser):
    """The text of an HTML page, one item per text run or tag with attributes; cells in a table
    column about timing (header "median s", "seconds", "time (s)") are masked."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.items: list[str] = []
        self.tables: list[dict] = []  # open tables, innermost last

    def handle_starttag(self, tag, attrs):
        if attrs:
            self.items.append(f"<{tag} {sorted(attrs)}>")
        if tag == "table":
            self.tables.append({"headers": [], "column": -1, "cell": None})
        elif self.tables and tag == "tr":
            self.tables[-1]["column"] = -1
        elif self.tables and tag in ("td", "th"):
            table = self.tables[-1]
            table["column"] += 1
            table["cell"] = tag
            if tag == "th":
                table["headers"].append("")

    def handle_endtag(self, tag):
        if self.tables and tag == "table":
            self.tables.pop()
        elif self.tables and tag in ("td", "th"):
            self.tables[-1]["cell"] = None

    def handle_data(self, data):
        text = " ".join(data.split())
        if not text:
            return
        if self.tables:
            table = self.tables[-1]
            headers, column = table["headers"], table["column"]
            if table["cell"] == "th":
                headers[-1] = f"{headers[-1]} {text.lower()}".strip()
            elif table["cell"] == "td" and column < len(headers) and TIMING_HEADER.search(headers[column]):
                text = "<timing>"
        self.items.append(text)


def _html_text(html: str) -> list[str]:
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    return parser.items


def _compare_images(a: Path, b: Path, rtol: float, atol: float) -> str | None:
    import nibabel as nib

    image_a, image_b = nib.load(a), nib.load(b)
    if not np.allclose(image_a.affine, image_b.affine, rtol=0, atol=1e-6):
        return f"affines differ:\n{image_a.affine}\n{image_b.affine}"
    return _compare_arrays(np.asanyarray(image_a.dataobj), np.asanyarray(image_b.dataobj), "voxels", rtol, atol)


def _compare_arrays(a: np.ndarray, b: np.ndarray, what: str, rtol: float, atol: float) -> str | None:
    if a.shape != b.shape:
        return f"shapes differ: {a.shape} != {b.shape}"
    if a.dtype != b.dtype:
        return f"data types differ: {a.dtype} != {b.dtype}"
    if np.issubdtype(a.dtype, np.floating):
        close = np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
    else:
        close = a == b
    if close.all():
        return None
    return f"{int((~close).sum())} of {a.size} {what} differ"


def _compare_tables(a: pd.DataFrame, b: pd.DataFrame, rtol: float, atol: float) -> str | None:
    a, b = (df.drop(columns=[c for c in df.columns if str(c) in VOLATILE_NAMES]) for df in (a, b))
    a.attrs, b.attrs = {}, {}
    try:
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=rtol, atol=atol)
    except AssertionError as error:
        return "tables differ: " + " ".join(str(error).split())[:400]
    return None


def _normalise(value, root: Path):
    """Mask what differs by construction between two runs: their own folder and timestamps."""
    if isinstance(value, str):
        return ISO_TIMESTAMP.sub("<timestamp>", value.replace(str(root.resolve()), "<run>").replace(str(root), "<run>"))
    if isinstance(value, dict):
        return {k: _normalise(v, root) for k, v in value.items() if k not in VOLATILE_NAMES}
    if isinstance(value, list):
        return [_normalise(v, root) for v in value]
    return value


def _compare_values(a, b, where: str, rtol: float, atol: float) -> str | None:
    """Where two JSON values first differ, or None; floats within tolerance count as equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{where or 'top level'}: keys differ: {sorted(a.keys() ^ b.keys())}"
        pairs = [(a[key], b[key], f"{where}.{key}") for key in a]
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} items != {len(b)} items"
        pairs = [(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b))]
    else:
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
        if numbers and (isinstance(a, float) or isinstance(b, float)):
            same = math.isclose(a, b, rel_tol=rtol, abs_tol=atol)
        else:
            same = a == b and type(a) is type(b)
        return None if same else f"{where}: {a!r} != {b!r}"
    for x, y, inner in pairs:
        if reason := _compare_values(x, y, inner, rtol, atol):
            return reason
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--atol", type=float, default=1e-6)
    parser.add_argument("--b-made-in", type=Path, help="the folder b's run was made in, if b was copied since")
    args = parser.parse_args(argv)
    roots = (args.a.parent, args.b_made_in or args.b.parent)
    problems = compare_folders(args.a, args.b, args.rtol, args.atol, roots=roots)
    for problem in problems:
        print(f"DIFFERS {problem}")
    count = sum(1 for p in args.a.rglob("*") if p.is_file())
    print(f"{'MATCH' if not problems else 'MISMATCH'}: {count} files in {args.a} vs {args.b}, {len(problems)} differ")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
