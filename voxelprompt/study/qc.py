"""The study's visual QC page: one HTML file a person reads to check what the agent answered.

It shows a summary per prompt (subjects, ok and error counts, median run time), then one section per
subject: for each prompt its text, status (the error in red), response, metrics, program, and for
each mask a picture of three orthogonal planes (axial, coronal, sagittal) through the mask, the
image in grey and the mask's outline in colour. The pictures are PNG files in a folder beside the
page (`<page stem>_files/`), linked by relative paths, so the page and its folder can be moved or
copied together. The page needs no JavaScript and loads nothing from elsewhere.

A mask or image that cannot be read gives a visible note in its place: the page exists to show what
went wrong, so one bad file never keeps it from being written.
"""

from __future__ import annotations

import functools
import html
import os
import re
import shutil
import tempfile
import zlib
from pathlib import Path
from urllib.parse import quote

import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from voxelprompt.core.errors import InputError
from voxelprompt.core.io import check_affine, load_volume, write_text
from voxelprompt.core.volume import Volume
from voxelprompt.study.report import ERROR, OK

CONTOUR_COLOUR = "#ff3b1f"  # saturated, so no grey voxel can be mistaken for the outline
WINDOW_PERCENTILES = (1.0, 99.0)  # a few bright or dark voxels must not wash out the grey scale
FIGURE_HEIGHT_INCHES = 3.0
FIGURE_DPI = 100
TABLES = ("metrics", "responses", "masks")
_KEYS = ["subject", "session", "prompt_id"]
_MASK_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError)

_STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 75em; color: #222; }
h1 { margin-bottom: 0.2em; }
h2 { border-bottom: 2px solid #888; padding-top: 0.5em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.total { font-weight: bold; }
article { border-left: 4px solid #3a7; padding: 0.2em 0 0.2em 1em; margin: 1em 0; }
article.error { border-left-color: #d22; }
.status-ok { color: #3a7; }
.status-error, p.error { color: #d22; font-weight: bold; }
.prompt { font-style: italic; }
.note { color: #a50; font-weight: bold; }
pre { background: #f4f4f4; padding: 0.5em; white-space: pre-wrap; }
figure { margin: 0.5em 0; }
figure img { max-width: 100%; background: #000; }
nav a { margin-right: 0.6em; }
"""


def write_qc_report(tables_dir: Path, out_html: Path, title: str = "VoxelPrompt study") -> Path:
    """Write the QC page for the study whose tables (`metrics`, `responses`, `masks` .parquet, as
    written by `report.gather`) are in `tables_dir`, and its pictures in `<out_html stem>_files/`.

    Mask and image paths in the tables are read as written there: relative ones from the current
    directory, which is where the workflow wrote them. Both outputs are replaced whole: the pictures
    are drawn into a temporary folder renamed into place, then the page is written atomically.
    """
    tables_dir, out_html = Path(tables_dir), Path(out_html)
    tables = {name: _read_table(tables_dir / f"{name}.parquet") for name in TABLES}
    files_dir = out_html.with_name(f"{out_html.stem}_files")
    out_html.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{files_dir.name}.", dir=out_html.parent))
    try:
        _make_readable(staging)  # mkdtemp makes a folder only its owner can enter
        page = _page(title, tables, _Pictures(staging, files_dir.name))
        _replace_folder(staging, files_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return write_text(out_html, page)


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(path, "is missing; the QC page is made from the tables `gather` writes")
    return pd.read_parquet(path)


class _Pictures:
    """Draws the mask pictures into the staging folder and names them as the page links them."""

    def __init__(self, folder: Path, link_folder: str):
        self.folder, self.link_folder = folder, link_folder
        self.count = 0
        # A subject's masks mostly lie on a few images: load each once, not once per mask.
        self.load_image = functools.lru_cache(maxsize=4)(_load_image)

    def draw(self, row: pd.Series) -> str:
        """The HTML for one row of the masks table: its picture and caption, or a note why not."""
        output = html.escape(row["output"])
        caption = f"{output}: {row['voxels']} voxels, {row['volume_mm3']:.1f} mm³, on {html.escape(row['image'])}"
        try:
            image, window = self.load_image(row["image"])
            mask = _load_mask(row["path"])
        except InputError as error:
            return f'<p class="note">cannot show the mask {output}: {html.escape(str(error))}</p>'
        if not mask.grid.is_same(image.grid):  # another grid of the same world: overlay where it lies
            mask = mask.resampled_to(image.grid, order=0)
        self.count += 1
        name = f"{self.count:04d}_{_slug(row['subject'])}_{_slug(row['prompt_id'])}_{_slug(row['output'])}.png"
        empty = _draw_overlay(image, window, mask.array > 0, self.folder / name)
        if empty:
            caption += ' <span class="note">empty mask</span> (centre slices)'
        src = html.escape(quote(f"{self.link_folder}/{name}"))
        return f'<figure><img src="{src}" alt="{output}"><figcaption>{caption}</figcaption></figure>'


def _load_image(path: str) -> tuple[Volume, tuple[float, float]]:
    """The image in RAS and its grey-scale window (intensities at the window percentiles)."""
    image = load_volume(path).reoriented("RAS")
    low, high = np.percentile(image.array, WINDOW_PERCENTILES)
    if high <= low:  # mostly one value (e.g. background): fall back to the full range
        low, high = float(image.array.min()), float(image.array.max())
    return image, (float(low), float(high))


def _load_mask(path: str) -> Volume:
    """The mask in RAS. Not `load_volume`: it refuses constant images, as it should for scans, but
    an empty (or full) mask is a valid answer that the page must show."""
    if not Path(path).is_file():
        raise InputError(path, "file does not exist")
    try:
        image = nib.load(path)
        array = np.asanyarray(image.dataobj)
    except _MASK_READ_ERRORS as error:
        raise InputError(path, f"cannot be read as a mask ({error})") from error
    if array.ndim < 3 or any(n != 1 for n in array.shape[3:]):
        raise InputError(path, f"has shape {array.shape}; a mask is a 3D volume")
    check_affine(path, np.asarray(image.affine))
    return Volume(array.reshape(array.shape[:3]), image.affine).reoriented("RAS")


def _draw_overlay(image: Volume, window: tuple[float, float], inside: np.ndarray, png: Path) -> bool:
    """Draw axial, coronal and sagittal planes of the RAS `image` through the mask `inside` (same
    grid) with its outline, into `png`; returns whether the mask is empty."""
    empty = not inside.any()
    centre = np.asarray(inside.shape) // 2 if empty else _centre_voxel(inside, image.spacing_mm)
    i, j, k = centre
    sx, sy, sz = image.spacing_mm
    # (name, image plane, mask plane, mm per voxel along the horizontal and vertical axes, edge letters)
    planes = [("axial", image.array[:, :, k], inside[:, :, k], (sx, sy), "LR"),
              ("coronal", image.array[:, j, :], inside[:, j, :], (sx, sz), "LR"),
              ("sagittal", image.array[i, :, :], inside[i, :, :], (sy, sz), "PA")]
    extents_mm = [(plane.shape[0] * h, plane.shape[1] * v) for _, plane, _, (h, v), _ in planes]
    ratios = [width / height for width, height in extents_mm]

    figure = Figure(figsize=(FIGURE_HEIGHT_INCHES * sum(ratios), FIGURE_HEIGHT_INCHES), dpi=FIGURE_DPI,
                    facecolor="black")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3, gridspec_kw={"width_ratios": ratios})
    figure.subplots_adjust(left=0, right=1, bottom=0, top=0.9, wspace=0.02)
    for ax, (name, plane, mask_plane, (h_mm, v_mm), letters), (width, height) in zip(axes, planes, extents_mm):
        # Arrays are (horizontal, vertical); imshow wants rows first, with the origin at the bottom so
        # that superior and anterior point up. Extents in mm give each plane its true aspect ratio.
        ax.imshow(plane.T, cmap="gray", vmin=window[0], vmax=window[1], origin="lower",
                  extent=(0, width, 0, height), interpolation="nearest")
        if mask_plane.any():
            across = (np.arange(plane.shape[0]) + 0.5) * h_mm  # voxel centres
            up = (np.arange(plane.shape[1]) + 0.5) * v_mm
            ax.contour(across, up, mask_plane.T.astype(np.float32), levels=[0.5], colors=[CONTOUR_COLOUR],
                       linewidths=1.5)
        ax.set_title(name, color="white", fontsize=10)
        for x, letter in zip((0.02, 0.98), letters):
            ax.text(x, 0.5, letter, color="yellow", fontsize=9, transform=ax.transAxes,
                    ha="left" if x < 0.5 else "right", va="center")
        ax.set_axis_off()
    figure.savefig(png, facecolor="black")
    return empty


def _centre_voxel(inside: np.ndarray, spacing_mm: np.ndarray) -> np.ndarray:
    """The mask voxel nearest (in mm) to the mask's centre of mass: the centre of mass of a curved or
    two-sided mask (both hippocampi) can lie outside it, and planes through it would miss the mask."""
    voxels = np.argwhere(inside)
    centre = voxels.mean(axis=0)  # of a binary mask; several times faster than ndimage.center_of_mass
    return voxels[np.argmin((((voxels - centre) * spacing_mm) ** 2).sum(axis=1))]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", str(text)).strip("-")[:40] or "x"


def _page(title: str, tables: dict[str, pd.DataFrame], pictures: _Pictures) -> str:
    responses = tables["responses"]
    subjects = sorted(responses["subject"].unique())
    metrics = {key: rows for key, rows in tables["metrics"].groupby(_KEYS, sort=False)}
    masks = {key: rows for key, rows in tables["masks"].groupby(_KEYS, sort=False)}
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
             f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
             f"<h1>{html.escape(title)}</h1>\n",
             _summary(responses)]
    if subjects:
        links = " ".join(f'<a href="#{_subject_id(s)}">sub-{html.escape(s)}</a>' for s in subjects)
        parts.append(f"<nav>Subjects: {links}</nav>\n")
    for subject in subjects:
        parts.append(f'<section id="{_subject_id(subject)}">\n<h2>sub-{html.escape(subject)}</h2>\n')
        for _, run in responses[responses["subject"] == subject].iterrows():
            key = tuple(run[_KEYS])
            parts.append(_prompt(run, metrics.get(key), masks.get(key), pictures))
        parts.append("</section>\n")
    parts.append("</body>\n</html>\n")
    return "".join(parts)


def _subject_id(subject: str) -> str:
    return html.escape(f"sub-{subject}")


def _summary(responses: pd.DataFrame) -> str:
    overview = (f"{responses['subject'].nunique()} subjects, {responses['prompt_id'].nunique()} prompts, "
                f"{(responses['status'] == OK).sum()} answered, {(responses['status'] == ERROR).sum()} errors")
    rows = [_summary_row(prompt_id, group["prompt"].iloc[0], group)
            for prompt_id, group in responses.groupby("prompt_id", sort=True)]
    rows.append(_summary_row("all prompts", "", responses, total=True))
    header = "<tr><th>prompt</th><th>text</th><th>subjects</th><th>ok</th><th>error</th><th>median s</th></tr>"
    return (f"<p>{overview}</p>\n<table class=\"summary\">\n{header}\n" + "\n".join(rows) + "\n</table>\n"
            "<p>median s: median wall time of the agent over the runs that ran at least one step.</p>\n")


def _summary_row(prompt_id: str, prompt: str, group: pd.DataFrame, total: bool = False) -> str:
    # A prompt that could not run (no image of the modality it needs) took no time: it would pull
    # the median towards zero.
    ran = group.loc[group["steps"] > 0, "seconds"]
    median = f"{ran.median():.1f}" if len(ran) else "–"
    numbers = (group["subject"].nunique(), (group["status"] == OK).sum(), (group["status"] == ERROR).sum(), median)
    cells = "".join(f'<td class="number">{value}</td>' for value in numbers)
    row_class = ' class="total"' if total else ""
    return (f'<tr{row_class}><td>{html.escape(prompt_id)}</td><td class="prompt">{html.escape(prompt)}</td>'
            f"{cells}</tr>")


def _prompt(run: pd.Series, metrics: pd.DataFrame | None, masks: pd.DataFrame | None, pictures: _Pictures) -> str:
    session = f" · ses-{html.escape(run['session'])}" if run["session"] else ""
    status = html.escape(run["status"])
    parts = [f'<article class="{status}">\n<h3>{html.escape(run["prompt_id"])}{session}: '
             f'<span class="status-{status}">{status}</span></h3>\n'
             f'<p class="prompt">{html.escape(run["prompt"])}</p>\n']
    if run["status"] != OK:
        parts.append(f'<p class="error">{html.escape(run["error"])}</p>\n')
    if run["response"]:
        parts.append(f"<pre>{html.escape(run['response'])}</pre>\n")
    if metrics is not None:
        rows = "".join(f'<tr><td>{html.escape(m["metric"])}</td><td class="number">{m["value"]:.6g}</td>'
                       f'<td>{html.escape(m["unit"])}</td></tr>' for _, m in metrics.iterrows())
        parts.append(f'<table class="metrics"><tr><th>metric</th><th>value</th><th>unit</th></tr>{rows}</table>\n')
    if masks is not None:
        parts += [pictures.draw(mask) + "\n" for _, mask in masks.iterrows()]
    if run["program"]:
        steps = f"{run['steps']} step" + ("" if run["steps"] == 1 else "s")
        parts.append(f"<details><summary>program ({steps})</summary>"
                     f"<pre>{html.escape(run['program'])}</pre></details>\n")
    parts.append("</article>\n")
    return "".join(parts)


def _replace_folder(new: Path, target: Path) -> None:
    """Put the folder `new` at `target`, replacing an old one; a rename cannot replace a folder that
    holds files, so the old one is moved aside first and deleted after."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _make_readable(folder: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
