"""The function library: the only functions the agent's code can call, bound to one subject.

Scans are chosen by modality, session or date; `encode` and `segment` run the vision model (or ground
truth standing in for it); regions are masks on the subject grid; measurements come from `measures`
and answers in words from `answers`. `read` hands a value back to the agent for its next step;
`report`, `respond`, `choose` and `output` record what the user gets; `stop` ends the program.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxelprompt.core.morphology import shell_mm
from voxelprompt.core.scan import Scan
from voxelprompt.core.volume import Volume
from voxelprompt.runtime import answers, measures
from voxelprompt.runtime.measures import MeasureError
from voxelprompt.runtime.sandbox import Limits, read_text
from voxelprompt.runtime.vision import Encoding, Vision, check_scans_to_encode

MEASURES = ("volume_mm3", "extent_mm", "width_mm", "depth_mm", "height_mm", "mean_intensity", "signal_to_noise",
            "mean_hu", "mean_adc", "difference", "ratio", "percent_change", "asymmetry_index_percent",
            "icv_fraction")
ANSWERS = ("signal_intensity", "enhancement", "diffusion", "largest_overlap")
FUNCTIONS = ("scans", "select", "sessions", "first_session", "last_session", "encode", "read", "segment",
             "union", "intersection", "subtract", "surroundings", "mask", "remove", "crop", "report", "respond",
             "choose", "output", "stop")


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    unit: str
    step: int = 0  # index of the program step that reported it, so tables can show the code behind each number


@dataclass
class Library:
    scans_available: list[Scan]
    vision: Vision | None = None
    reads: list[Any] = field(default_factory=list)  # values handed back to the agent, in order
    metrics: list[Metric] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    outputs: dict[str, Volume] = field(default_factory=dict)  # name -> mask or image for the user
    stopped: bool = False
    step: int = 0  # index of the program step now running; whoever runs the steps advances it

    def functions(self) -> dict[str, Callable[..., Any]]:
        """Name -> function, for `Environment(functions=...)`."""
        bound = {name: getattr(self, name) for name in FUNCTIONS}
        return (bound | {name: getattr(measures, name) for name in MEASURES}
                | {name: getattr(answers, name) for name in ANSWERS})

    # --- scans -------------------------------------------------------------------------------------
    def scans(self, session: str = "") -> list[Scan]:
        """Every scan of the subject, or of one session, in acquisition order."""
        found = [s for s in self.scans_available if not session or s.session == session]
        if not found:
            raise MeasureError(f"no scan in session {session!r}; sessions: {', '.join(self.sessions())}")
        return sorted(found, key=lambda s: (s.date, s.session))

    def select(self, modality: str = "", session: str = "", date: str = "") -> Scan:
        """The one scan with this modality (and session or ISO date, when the subject has several)."""
        found = [s for s in self.scans_available if (not modality or s.modality == modality)
                 and (not session or s.session == session) and (not date or s.date == date)]
        if not found:
            raise MeasureError(f"no scan with modality={modality!r} session={session!r} date={date!r}; "
                               f"available: {self._available()}")
        if len(found) > 1:
            raise MeasureError(f"{len(found)} scans match; name the session or date. Available: {self._available()}")
        return found[0]

    def sessions(self) -> list[str]:
        """Session labels in order of acquisition date."""
        first_date: dict[str, str] = {}
        for scan in self.scans_available:  # a session may span midnight: it is ordered by its first scan
            first_date[scan.session] = min(first_date.get(scan.session, scan.date), scan.date)
        return sorted(first_date, key=lambda session: (first_date[session], session))

    def first_session(self) -> str:
        """The session acquired first (the baseline)."""
        return self._two_sessions()[0]

    def last_session(self) -> str:
        """The session acquired last (the latest follow-up)."""
        return self._two_sessions()[-1]

    # --- vision ------------------------------------------------------------------------------------
    def encode(self, scans: list[Scan]) -> Encoding:
        """Encode scans of one session with the vision encoder, for `segment` and `read`."""
        return self._vision().encode(check_scans_to_encode(scans if isinstance(scans, (list, tuple)) else [scans]))

    def segment(self, encoding: Encoding, target: str) -> Volume:
        """A mask of `target` (a name of the label vocabulary, or a lesion description) on the subject grid."""
        if not isinstance(encoding, Encoding):
            raise MeasureError("segment needs an encoding, e.g. e = encode(scans()); segment(e, 'brain')")
        if not isinstance(target, str) or not target.strip():
            raise MeasureError("segment needs the name of what to segment")
        return self._vision().segment(encoding, target)

    def read(self, value: Any) -> str:
        """Hand a value (number, text, answer or encoding) back to the agent for its next step."""
        _require_readable(value)
        self.reads.append(value)
        if isinstance(value, Encoding):
            return value.describe()
        return read_text(value, Limits().max_text_chars)

    # --- regions -----------------------------------------------------------------------------------
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

    def surroundings(self, region: Volume, distance_mm: float) -> Volume:
        """The voxels outside a mask within `distance_mm` of it (the tissue around a lesion)."""
        measures.require_mask(region)
        if isinstance(distance_mm, bool) or not isinstance(distance_mm, (int, float)) or not 0 < distance_mm <= 50:
            raise MeasureError("distance_mm must be a number of mm between 0 and 50")
        return region.with_array(shell_mm(region.array > 0, region.spacing_mm, distance_mm).astype(np.uint8))

    # --- answers -----------------------------------------------------------------------------------
    def report(self, metric: str, value: float, unit: str) -> None:
        """Record a measurement for the user, e.g. report("volume of the left hippocampus", v, "mm3")."""
        if not isinstance(metric, str) or not metric.strip() or not isinstance(unit, str):
            raise MeasureError("report needs a metric name, a number and a unit")
        value = measures.number(value)
        self.metrics.append(Metric(metric, value, unit, self.step))
        self.responses.append(f"{metric}: {value:.6g}{' ' + unit if unit else ''}")

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

    def output(self, value: Volume | Scan, name: str) -> None:
        """Give the user a mask or an image (masked, with a region removed, or cropped) under a name."""
        if not isinstance(name, str) or not name.strip():
            raise MeasureError("output needs a name")
        if isinstance(value, Scan):
            value = value.volume
        if not isinstance(value, Volume):
            raise MeasureError(f"output needs a mask or a scan, got {type(value).__name__}")
        if name in self.outputs:
            raise MeasureError(f"there is already an output named {name!r}")
        self.outputs[name] = value

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
        return ", ".join(f"{s.modality} ({s.session or 'no session'}, {s.date or 'no date'})"
                         for s in self.scans_available)

    def _two_sessions(self) -> list[str]:
        sessions = self.sessions()
        if len(sessions) < 2:
            raise MeasureError(f"the subject has {len(sessions)} session(s); a change needs two")
        return sessions

    def _vision(self) -> Vision:
        if self.vision is None:
            raise MeasureError("no vision model is loaded")
        return self.vision

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


def _require_readable(value: Any) -> None:
    """Numbers, text, answers and encodings can be read, also in lists; masks and scans cannot."""
    if isinstance(value, (list, tuple)):
        for item in value:
            _require_readable(item)
    elif isinstance(value, Volume):
        raise MeasureError("a mask cannot be read; read a measurement of it, e.g. read(volume_mm3(m))")
    elif isinstance(value, Scan):
        raise MeasureError("a scan cannot be read; read its encoding, e.g. read(encode(scans()))")
