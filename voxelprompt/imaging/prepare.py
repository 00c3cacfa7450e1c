"""One subject's images made ready for the agent in one process: each preprocessed, all co-registered
to the first, intensities back in scanner units (Hounsfield units stay Hounsfield units), and the
way back from the subject grid to every original image. The study workflow does the same in
separate rules; this serves `voxelprompt run` on a handful of files."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from voxelprompt.core.scan import Scan
from voxelprompt.core.volume import Grid, Volume
from voxelprompt.imaging.coregister import coregister
from voxelprompt.imaging.preprocess import PreprocessRecord, preprocess
from voxelprompt.imaging.register import to_image_grid


@dataclass
class PreparedSubject:
    scans: list[Scan]  # on the subject grid (the first image, preprocessed), in scanner units
    grids: list[Grid]  # each input image's own grid
    transforms: list[sitk.Transform]  # subject point -> that image's point

    def on_image_grid(self, mask: Volume, index: int) -> Volume:
        """A mask on the subject grid, on input image `index`'s own grid (nearest neighbour)."""
        return to_image_grid(mask, self.transforms[index], self.grids[index])


def scanner_units(image: Volume, record: PreprocessRecord) -> Volume:
    """Undo the [0, 1] intensity scaling of preprocessing."""
    scale = record.intensity_high - record.intensity_low
    return image.with_array((record.intensity_low + image.array.astype(np.float32) * scale).astype(np.float32))


def prepare(images: list[Volume], modalities: list[str], sources: list[str], sessions: list[str] | None = None,
            dates: list[str] | None = None, threads: int = 1) -> PreparedSubject:
    sessions = sessions or [""] * len(images)
    dates = dates or [""] * len(images)
    # Preprocessing knows contrasts, not contrast agents: a post-contrast T1w is preprocessed as a T1w.
    preprocessed = [preprocess(image, modality.removesuffix("+ce"), source)
                    for image, modality, source in zip(images, modalities, sources)]
    reference = preprocessed[0]
    scans, transforms = [], []
    for index, (item, modality) in enumerate(zip(preprocessed, modalities)):
        aligned = coregister(reference, None if index == 0 else item, threads=threads)
        scans.append(Scan(scanner_units(aligned.image, item.record), modality, sessions[index], dates[index]))
        transforms.append(aligned.transform)
    return PreparedSubject(scans, [image.grid for image in images], transforms)
