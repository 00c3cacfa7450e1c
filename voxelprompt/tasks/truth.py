"""Ground truth standing in for the vision networks: the mask of any target a program names, read off
a synthetic session's label map. Training compares the generator's output with these masks, and the
task set checks its own programs with them.

Anatomical regions that are places rather than tissue (lobes, arterial territories) come from the
label map before lesions were painted in, so that a lesion lies inside the territory it destroyed;
every other target comes from the label map with the lesions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from voxelprompt.core.scan import Scan
from voxelprompt.core.volume import Volume
from voxelprompt.runtime.measures import MeasureError
from voxelprompt.runtime.vision import Encoding
from voxelprompt.synth import labels
from voxelprompt.synth.lesions import Lesion
from voxelprompt.tasks.subjects import Session, TaskSubject
from voxelprompt.tasks.values import ALL_LESIONS, vocabulary

PLACE_KINDS = ("lobe", "territory")
TUMOUR_PARTS = {"the enhancing part of the tumour": ("rim",), "the necrotic core of the tumour": ("necrosis",),
                "the oedema around the tumour": ("oedema",), "the core of the tumour": ("rim", "necrosis")}


def target_mask(session: Session, target: str) -> np.ndarray:
    """Boolean mask of a named target on the session's label-map grid."""
    synthetic = session.synthetic
    try:
        entry = labels.target(target)
    except KeyError:
        return np.isin(synthetic.label_map.array, _lesion_label_ids(synthetic.lesions, target))
    source = synthetic.anatomy if entry.kind in PLACE_KINDS else synthetic.label_map
    return entry.mask(source.array)


def _lesion_label_ids(lesions: list[Lesion], target: str) -> list[int]:
    if target == ALL_LESIONS:
        return [i for lesion in lesions for i in lesion.label_ids]
    for name, forms in vocabulary()["lesions"].items():
        if target == f"all {forms['plural'][0]}":
            return [i for lesion in lesions if lesion.lesion_class == name for i in lesion.label_ids]
    if target in TUMOUR_PARTS:
        return [c.label_id for lesion in lesions if lesion.lesion_class == "tumour" for c in lesion.components
                if c.name in TUMOUR_PARTS[target]]
    for lesion in lesions:
        if target in lesion.attributes["descriptors"]:
            return lesion.label_ids
    raise MeasureError(f"cannot segment {target!r}: it is neither a structure of the label vocabulary nor a "
                       f"lesion of this subject")


class GroundTruthVision:
    """The `Vision` of a synthetic subject: encodings carry no features, segmentations are exact."""

    def __init__(self, subject: TaskSubject):
        self.sessions = {session.label: session for session in subject.sessions}

    def encode(self, scans: Sequence[Scan]) -> Encoding:
        return Encoding(tuple(scans))

    def segment(self, encoding: Encoding, target: str) -> Volume:
        session = self.sessions[encoding.session]
        mask = target_mask(session, target)
        return session.synthetic.label_map.with_array(mask.astype(np.uint8))
