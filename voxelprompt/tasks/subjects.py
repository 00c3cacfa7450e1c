"""Subjects for tasks: synthetic sessions with the contrasts, lesions and sessions a task needs, and
their scans as the agent sees them after co-registration (on the subject grid, in scanner units)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from voxelprompt.core.scan import Scan
from voxelprompt.synth import contrast
from voxelprompt.synth.lesions import lesion_classes
from voxelprompt.synth.longitudinal import follow_up
from voxelprompt.synth.subject import SyntheticSubject, synthesize_subject

# Contrasts added at random next to the ones a task needs, so that a program learns to pick its scan.
OPTIONAL_CONTRASTS = ("T1w", "T2w", "FLAIR", "PDw", "CT", "DWI", "T1w+ce")
MAX_CONTRASTS = 3


@dataclass(frozen=True)
class Requirements:
    contrasts: tuple[str, ...] = ()  # all of these
    lesions: tuple[str, ...] = ()  # one or more of these lesion classes; empty: lesions are optional
    sessions: int = 1


@dataclass
class Session:
    label: str  # "01"
    date: str  # ISO date
    synthetic: SyntheticSubject


@dataclass
class TaskSubject:
    sessions: list[Session]
    # Base label ids the label maps annotate; None: all of them (synthetic subjects). A lab's labelled
    # scans annotate a few structures, and only targets made of those can be asked for.
    labelled: frozenset[int] | None = None

    def annotates(self, target_label_ids: frozenset[int]) -> bool:
        return self.labelled is None or target_label_ids <= self.labelled

    @property
    def contrasts(self) -> tuple[str, ...]:
        return tuple(self.sessions[0].synthetic.images)

    @cached_property
    def scans(self) -> list[Scan]:
        """Every image resampled onto its session's label-map grid (which is the same for all sessions),
        as co-registration would leave it."""
        found = []
        for session in self.sessions:
            grid = session.synthetic.label_map.grid
            for name, image in session.synthetic.images.items():
                found.append(Scan(image.resampled_to(grid, order=1), name, session.label, session.date))
        return found


def synthesize(requirements: Requirements, rng: np.random.Generator, spacing_mm: float | None = 2.0,
               source: str = "oasis-dk", acquisitions: dict[str, contrast.Acquisition] | None = None,
               max_contrasts: int = MAX_CONTRASTS, mirrored: bool = False) -> TaskSubject:
    """A subject that meets the requirements, with optional contrasts and lesions drawn at random
    (`acquisitions` fixes how each contrast is imaged; by default each image draws its own;
    `mirrored` starts from the left-right mirror image of the anatomy)."""
    contrasts = choose_contrasts(requirements, rng, max_contrasts)
    classes = sorted(lesion_classes())
    if requirements.lesions:
        chosen = [requirements.lesions[int(rng.integers(len(requirements.lesions)))]]
        if rng.random() < 0.3:  # sometimes a second class, so that descriptions must tell them apart
            chosen.append(classes[int(rng.integers(len(classes)))])
    else:
        chosen = [classes[int(rng.integers(len(classes)))]] if rng.random() < 0.4 else []
    first = synthesize_subject(rng, tuple(contrasts), tuple(dict.fromkeys(chosen)), spacing_mm, source, acquisitions,
                               mirrored)
    dates = session_dates(requirements.sessions, rng)
    sessions = [Session("01", dates[0], first)]
    for number in range(2, requirements.sessions + 1):
        sessions.append(Session(f"{number:02d}", dates[number - 1], follow_up(sessions[-1].synthetic, rng, acquisitions)))
    return TaskSubject(sessions)


def choose_contrasts(requirements: Requirements, rng: np.random.Generator, max_contrasts: int = MAX_CONTRASTS) -> list[str]:
    """The contrasts a task needs, plus optional ones drawn up to `max_contrasts` in all."""
    contrasts = list(dict.fromkeys(requirements.contrasts))
    optional = [c for c in OPTIONAL_CONTRASTS if c not in contrasts]
    extra = int(rng.integers(0 if contrasts else 1, max(max_contrasts - len(contrasts), 1) + 1))
    contrasts += [optional[i] for i in rng.permutation(len(optional))[:extra]]
    if "DWI" in contrasts and "ADC" not in contrasts:
        contrasts.append("ADC")  # rendered together
    return contrasts


def session_dates(count: int, rng: np.random.Generator) -> list[str]:
    """ISO dates of `count` sessions, two months to a year apart."""
    date = dt.date(2024, 1, 8) + dt.timedelta(days=int(rng.integers(0, 365)))
    dates = [date]
    for _ in range(count - 1):
        dates.append(dates[-1] + dt.timedelta(days=int(rng.integers(60, 400))))
    return [d.isoformat() for d in dates]


def acquisitions_at_label_resolution(spacing_mm: float) -> dict[str, contrast.Acquisition]:
    """Isotropic acquisitions at the label-map spacing with light noise: images where what the label
    map says is visible, for checks of the programs themselves rather than of image quality."""
    return {name: contrast.Acquisition((spacing_mm,) * 3, "RAS", 0.02, 0.1) for name in contrast.CONTRASTS}
