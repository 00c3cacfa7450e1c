"""Atlas-based segmentation: the no-model baseline of the segmentation evaluation.

The training label map ("oasis-dk", `anatomy.load`) is carried onto a subject's image by an affine
registration of the atlas's own intensity image to that image (`synth/atlas.py`), and read off.

Why it matters: it needs no training and no GPU, takes seconds, and already scores well on large
structures of any head close to the atlas. A learned segmenter that does not beat it on real scans
has learnt nothing the atlas did not already know; on synthetic subjects, which are deformations of
this very atlas, it is a strong lower bound. Its limits are the atlas fit's: one anatomy, twelve
parameters, no lesions.
"""

from __future__ import annotations

from voxelprompt.evaluation.scoring import dice
from voxelprompt.study.labelled import subject_of
from voxelprompt.synth.atlas import register_atlas
from voxelprompt.synth.labels import LARGE_STRUCTURES
from voxelprompt.tasks.subjects import TaskSubject
from voxelprompt.tasks.truth import target_mask

def registration_dice(subject: TaskSubject, targets: tuple[str, ...] = LARGE_STRUCTURES, threads: int = 1
                      ) -> dict[str, float]:
    """Dice of the atlas's carried mask against the subject's label map, per target, the atlas
    registered to the subject's first T1w scan (else its first scan). Targets are read off the
    carried labels by `target_mask`, the definition the model is scored against."""
    scan = next((s for s in subject.scans if s.modality == "T1w"), subject.scans[0])
    carried = subject_of(register_atlas(scan.volume, scan.modality, threads), {}).sessions[0]
    truth_session = subject.sessions[0]
    return {target: round(dice(target_mask(carried, target), target_mask(truth_session, target)), 4)
            for target in targets}
