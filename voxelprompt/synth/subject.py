"""One synthetic subject: a deformed anatomy, lesions, and images of the requested contrasts.

Tissue intensities are drawn once per subject and channel, so that the pre- and post-contrast T1w
share them and enhancement is the only difference; each image gets its own acquisition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from voxelprompt.core.volume import Volume
from voxelprompt.synth import anatomy, contrast, spatial
from voxelprompt.synth.lesions import Lesion, add_lesions, lesion_means

# Which component signal drives each intensity channel (S0 of a DWI shows T2 contrast).
SIGNAL_OF_CHANNEL = {"S0": "T2w"}


@dataclass
class SyntheticSubject:
    anatomy: Volume  # deformed label map before lesions (base labels), subject space
    label_map: Volume  # with lesion components (labels >= 10000)
    lesions: list[Lesion]
    images: dict[str, Volume]  # contrast -> image, each on its own acquisition grid
    means: dict[str, dict[int, float]] = field(default_factory=dict)  # channel -> label -> mean intensity


def synthesize_subject(
    rng: np.random.Generator,
    contrasts: tuple[str, ...] = ("T1w", "T2w", "FLAIR"),
    lesion_classes: tuple[str, ...] = (),
    spacing_mm: float | None = None,
    source: str = "oasis-dk",
    acquisitions: dict[str, contrast.Acquisition] | None = None,
    mirrored: bool = False,
) -> SyntheticSubject:
    """`spacing_mm` renders at a coarser isotropic resolution (e.g. 2 mm for training); `mirrored`
    starts from the left-right mirror image of the anatomy."""
    base = anatomy.load(source)
    if spacing_mm is not None:
        base = base.resampled_to(base.grid.with_spacing(spacing_mm), order=0)
    if mirrored:
        base = spatial.mirrored(base)
    deformed = spatial.deform(base, rng)
    lesioned, lesions = add_lesions(deformed, rng, list(lesion_classes))
    tissue_means: dict[str, dict[int, float]] = {}
    means: dict[str, dict[int, float]] = {}

    def channel_means(channel: str) -> dict[int, float]:
        if channel not in means:
            prior = contrast.PRIOR_OF.get(channel, channel)
            tissue = tissue_means.setdefault(prior, contrast.label_means(prior, rng))
            signal = SIGNAL_OF_CHANNEL.get(channel, channel)
            means[channel] = tissue | lesion_means(lesioned, lesions, signal, tissue, rng, ct=channel == "CT")
            if channel == "T1w+ce":
                # Contrast agent changes enhancing tissue only: everything else looks as before it.
                before = channel_means("T1w")
                for component in (c for lesion in lesions for c in lesion.components if not c.enhancing):
                    means[channel][component.label_id] = before[component.label_id]
        return means[channel]

    images: dict[str, Volume] = {}
    for name in contrasts:
        for channel in contrast.channels(name):
            channel_means(channel)
        if name in images:  # ADC comes with DWI
            continue
        acquisition = (acquisitions or {}).get(name) or contrast.Acquisition.random(rng, float(lesioned.spacing_mm.min()))
        images.update(contrast.render(lesioned, name, rng, acquisition, means))
    return SyntheticSubject(anatomy=deformed, label_map=lesioned, lesions=lesions, images=images, means=means)
