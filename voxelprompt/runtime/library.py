"""The function library: the only functions the agent's code can call, bound to one subject.

Scans are chosen by modality, session or date; regions are masks on the subject grid; measurements
come from `measures`; answers are recorded with `respond` or `choose`, and `stop` ends the program.
Segmentation needs a vision model: `segment` calls the segmenter given at construction (the trained
generator, or ground truth when the task set checks its own programs).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxelprompt.runtime import measures
from voxelprompt.runtime.measures import MeasureError, Scan
from voxelprompt.volume import Volume

# segmenter(scans, target) -> mask on the subject grid
Segmenter = Callable[[Sequence[Scan], str], Volume]

MEASURES = ("volume_mm3", "extent_mm", "width_mm", "depth_mm", "height_mm", "mean_intensity", "signal_to_noise",
            "mean_hu", "mean_adc", "difference", "ratio", "percent_change", "asymmetry_index_percent",
            "icv_fraction")


@dataclass
class Library:
    scans: list[Scan]
    segmenter: Segmenter | None = None
    responses: list[str] = field(default_factory=list)
    stopped: bool = False

    def functions(self) -> dict[str, Callable[..., Any]]:
        """Name -> function, for `Environment(functions=...)`."""
        bound = {name: getattr(self, name) for name in ("select", "sessions", "segment", "union", "intersection",
                                                          "subtract", "mask", "remove", "crop", "respond",
                                                          "choose", "stop")}
        return bound | {name: getattr(measures, name) for name in MEASURES}

    # --- scans -------------------------------------------------------------------------------------
    def select(self, modality: str = "", session: str = "", date: str = "") -> Scan:
        """The one scan with this modality (and session or ISO date, when the subject has several)."""
        found = [s for s in self.scans if (not modality or s.modality == modality)
                 and (not session or s.session == session) and (not date or s.date == date)]
        if not found:
            raise MeasureError(f"no scan with modality={modality!r} session={session!r} date={date!r}; "
                               f"available: {self._available()}")
        if len(found) > 1:
            raise MeasureError(f"{len(found)} scans match; name the session or date. Available: {self._available()}")
        return found[0]

    def sessions(self) -> list[str]:
        """Session labels in order of acquisition date."""
        ordered = sorted({(s.date, s.session) for s in self.scans})
        return [session for _, session in ordered]

    def segment(self, scans: Scan | list[Scan], target: str) -> Volume:
        """A mask of `target` (any name of the label vocabulary, or a lesion description) on the subject grid."""
        if self.segmenter is None:
            raise MeasureError("no segmentation model is loaded")
        scans = [scans] if isinstance(scans, Scan) else list(scans)
        if not scans or not all(isinstance(s, Scan) for s in scans):
            raise MeasureError("segment needs one scan or a list of scans")
        if not isinstance(target, str) or not target.strip():
            raise MeasureError("segment needs the name of what to segment")
        return self.segmenter(scans, target)

    # --- regions -----------------------------------------------------------------------------------
    def union(self, a: Volume, b: Volume) -> Volume:
        """Voxels in mask a or mask b."""
        return self._masks(a, b).with_array(((a.array > 0) | (b.array > 0)).astype(np.uint8))

    def intersection(self, a: Volume, b: Volume) -> Volume:
        """Voxels in both masks."""
        return self._masks(a, b).with_array(((a.array > 0) & (b.array > 0)).astype(np.uint8))

    def subtract(self, a: Volume, b: Volume) -> Volume:
        """The part of mask a outside mask b."""
        return self._masks(a, b).with_array(((a.array > 0) & ~(b.array > 0)).astype(np.uint8))

    def mask(self, scan: Scan, region: Volume) -> Scan:
        """The scan with everything outside the region set to zero."""
        inside = self._region(scan, region)
        return Scan(scan.volume.with_array(np.where(inside, scan.volume.array, 0).astype(np.float32)),
                    scan.modality, scan.session, scan.date)

    def remove(self, scan: Scan, region: Volume) -> Scan:
        """The scan with the region set to zero."""
        inside = self._region(scan, region)
        return Scan(scan.volume.with_array(np.where(inside, 0, scan.volume.array).astype(np.float32)),
                    scan.modality, scan.session, scan.date)

    def crop(self, scan: Scan, region: Volume, margin_mm: float = 10.0) -> Scan:
        """The scan's field of view cut to the region's bounding box plus a margin in mm."""
        inside = self._region(scan, region)
        if not isinstance(margin_mm, (int, float)) or margin_mm < 0:
            raise MeasureError("margin_mm must be a non-negative number")
        indices = np.argwhere(inside)
        if len(indices) == 0:
            raise MeasureError("the region is empty")
        margin = np.ceil(margin_mm / scan.volume.spacing_mm).astype(int)
        start = np.maximum(indices.min(axis=0) - margin, 0)
        stop = np.minimum(indices.max(axis=0) + 1 + margin, scan.volume.shape)
        return Scan(scan.volume.cropped(tuple(start), tuple(stop)), scan.modality, scan.session, scan.date)

    # --- answers -----------------------------------------------------------------------------------
    def respond(self, text: str | float) -> None:
        """Record an answer for the user (text, or a number with its unit in the text)."""
        if isinstance(text, float):
            text = f"{text:.6g}"
        if not isinstance(text, (str, int)) or isinstance(text, bool):
            raise MeasureError("respond needs text or a number")
        self.responses.append(str(text))

    def choose(self, answer: str, options: list[str]) -> None:
        """Record an answer that must be one of a fixed set (e.g. hyperintense, hypointense, isointense)."""
        if not isinstance(options, (list, tuple)) or not all(isinstance(o, str) for o in options):
            raise MeasureError("options must be a list of text")
        if answer not in options:
            raise MeasureError(f"{answer!r} is not one of {', '.join(options)}")
        self.responses.append(answer)

    def stop(self) -> None:
        """End the program."""
        self.stopped = True

    def reference_markdown(self) -> str:
        """Every function with its signature and documentation (the agent's manual)."""
        lines = ["# Function library", "", "The only functions the agent's code can call.", ""]
        for name, function in sorted(self.functions().items()):
            doc = inspect.getdoc(function) or ""
            lines += [f"## `{name}{inspect.signature(function)}`", "", doc.split("\n\n")[0], ""]
        return "\n".join(lines)

    def _available(self) -> str:
        return ", ".join(f"{s.modality} ({s.session or 'no session'}, {s.date or 'no date'})" for s in self.scans)

    @staticmethod
    def _masks(a: Volume, b: Volume) -> Volume:
        for m in (a, b):
            if not isinstance(m, Volume):
                raise MeasureError(f"expected a mask, got {type(m).__name__}")
        if not a.grid.is_same(b.grid):
            raise MeasureError("the two masks are on different grids")
        return a

    @staticmethod
    def _region(scan: Scan, region: Volume) -> np.ndarray:
        if not isinstance(scan, Scan):
            raise MeasureError(f"expected a scan, got {type(scan).__name__}")
        if not isinstance(region, Volume):
            raise MeasureError(f"expected a mask, got {type(region).__name__}")
        if not scan.volume.grid.is_same(region.grid):
            raise MeasureError("the mask and the scan are on different grids")
        return region.array > 0
