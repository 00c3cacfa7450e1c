"""A scan of a subject: the one value every layer passes around, from preparing the images to the
agent's library."""

from __future__ import annotations

from dataclasses import dataclass

from voxelprompt.core.volume import Volume


@dataclass(frozen=True)
class Scan:
    """An image of the subject, as the agent sees it: intensities in the scanner's units (HU for CT,
    10^-3 mm^2/s for ADC) on the subject grid, with what it is and when it was taken."""

    volume: Volume
    modality: str
    session: str = ""
    date: str = ""  # ISO date
