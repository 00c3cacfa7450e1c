"""Follow-up sessions of a synthetic subject: lesions grow or shrink, ventricles enlarge.

The subject keeps its anatomy, tissue intensities and lesion signals; only geometry changes, by
amounts drawn per session, and every volume is measured again on the new label map. Each image
gets a new acquisition (position, resolution and noise change between sessions, as in a study).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from voxelprompt.core.morphology import grown_mm
from voxelprompt.core.volume import Volume
from voxelprompt.synth import contrast, labels
from voxelprompt.synth.lesions import LESION_LABEL_BASE, describe, measure, parenchyma_ids
from voxelprompt.synth.subject import SyntheticSubject

# Per session and per mm of voxel size (so that changes stay visible on coarse training grids):
MAX_LESION_CHANGE_MM = 3.0  # growth (positive) or shrinkage (negative) of each lesion
MAX_VENTRICLE_GROWTH_MM = 1.5


def follow_up(previous: SyntheticSubject, rng: np.random.Generator,
              acquisitions: dict[str, contrast.Acquisition] | None = None) -> SyntheticSubject:
    """The next session; `acquisitions` fixes how each contrast is imaged (by default, drawn anew)."""
    spacing = previous.label_map.spacing_mm
    scale = max(1.0, float(spacing.min()))
    anatomy = _enlarge_ventricles(previous.anatomy, rng.uniform(0, MAX_VENTRICLE_GROWTH_MM * scale), spacing)
    data = anatomy.array.copy()
    allowed = np.isin(data, parenchyma_ids())
    for lesion in previous.lesions:
        # Shrink by at most a third of the lesion's equivalent radius, so that no lesion vanishes.
        radius_mm = (3 * lesion.attributes["volume_mm3"] / (4 * np.pi)) ** (1 / 3)
        change_mm = float(rng.uniform(-min(MAX_LESION_CHANGE_MM * scale, radius_mm / 3), MAX_LESION_CHANGE_MM * scale))
        # Outer components first, so inner ones (rim, necrosis) are painted over them.
        for component in sorted(lesion.components, key=lambda c: c.name != "oedema"):
            mask = grown_mm(previous.label_map.array == component.label_id, spacing, change_mm)
            data[mask & (allowed | (data >= LESION_LABEL_BASE))] = component.label_id
    label_map = anatomy.with_array(data)
    # New records: the previous session's stay as they were measured then.
    lesions = [replace(lesion, attributes={}) for lesion in previous.lesions if np.isin(data, lesion.label_ids).any()]
    for lesion in lesions:
        lesion.attributes = measure(lesion, anatomy, label_map)
    describe(lesions)
    images: dict[str, Volume] = {}
    for name in previous.images:
        if name not in images and not (name == "ADC" and "DWI" in previous.images):
            acquisition = (acquisitions or {}).get(name) or contrast.Acquisition.random(rng, float(spacing.min()))
            images.update(contrast.render(label_map, name, rng, acquisition, previous.means))
    return SyntheticSubject(anatomy=anatomy, label_map=label_map, lesions=lesions, images=images,
                            means=previous.means)


def _enlarge_ventricles(anatomy: Volume, growth_mm: float, spacing: np.ndarray) -> Volume:
    """Lateral ventricles grow into the white and deep grey matter around them (never into cortex)."""
    data = anatomy.array.copy()
    for side in labels.SIDES:
        ventricle_id = labels.label_by_name(f"{side} lateral ventricle").id
        near = grown_mm(data == ventricle_id, spacing, growth_mm)
        soft = np.isin(data, [label.id for label in labels.base_labels()
                              if label.tissue in ("white_matter", "deep_grey") and label.hemisphere == side])
        data[near & soft] = ventricle_id
    return anatomy.with_array(data)
