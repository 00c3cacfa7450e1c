"""What the library needs from a vision model: encode scans, and segment a target from an encoding.

The trained networks (m_enc, m_gen, steered by the agent's latent features) implement this, and so
does ground truth, which stands in for them when the task set checks its own programs and when
training executes the target programs (the generator's output is then compared with the truth).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from voxelprompt.core.scan import Scan
from voxelprompt.core.volume import Volume
from voxelprompt.runtime.measures import MeasureError


@dataclass(frozen=True)
class Encoding:
    """The encoded features of scans of one session; `features` is whatever the model keeps (per-level
    activations and the per-scan embeddings that `read` hands to the agent), None for ground truth."""

    scans: tuple[Scan, ...]
    features: Any = None

    @property
    def session(self) -> str:
        return self.scans[0].session

    def describe(self) -> str:
        return "encoding of " + ", ".join(f"{s.modality} ({s.session or 'no session'})" for s in self.scans)


class Vision(Protocol):
    def encode(self, scans: Sequence[Scan]) -> Encoding: ...

    def segment(self, encoding: Encoding, target: str) -> Volume:
        """A binary mask of `target` on the grid of the encoded scans."""
        ...


def check_scans_to_encode(scans: Sequence[Scan]) -> tuple[Scan, ...]:
    """Scans that can be encoded together: at least one, all on one grid, all from one session."""
    scans = tuple(scans)
    if not scans or not all(isinstance(s, Scan) for s in scans):
        raise MeasureError("encode needs a list of scans, e.g. encode(scans())")
    if len({s.session for s in scans}) > 1:
        raise MeasureError("encode scans of one session at a time, e.g. encode(scans(first_session()))")
    if not all(s.volume.grid.is_same(scans[0].volume.grid) for s in scans):
        raise MeasureError("the scans are on different grids; they must be co-registered first")
    return scans
