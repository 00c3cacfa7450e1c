"""A picture of synthetic subjects: every contrast with label and lesion contours, one row each."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from voxelprompt.core.io import atomic_output  # noqa: E402
from voxelprompt.synth.lesions import LESION_LABEL_BASE  # noqa: E402
from voxelprompt.synth.subject import SyntheticSubject  # noqa: E402

_WINDOWS = {"CT": (-20.0, 100.0)}  # HU: a brain window; MRI uses the 1st-99.5th percentiles


def render_montage(subjects: list[SyntheticSubject], path: str | Path) -> Path:
    columns = list(subjects[0].images) + ["labels"]
    figure, axes = plt.subplots(len(subjects), len(columns), figsize=(2.6 * len(columns), 2.8 * len(subjects)),
                                squeeze=False)
    for row, subject in enumerate(subjects):
        label_map = subject.label_map
        z = _slice_through_lesions(subject)
        labels_slice = label_map.array[:, :, z].T
        for column, name in enumerate(columns):
            axis = axes[row, column]
            if name == "labels":
                axis.imshow(np.where(labels_slice > 0, labels_slice % 23, np.nan), origin="lower", cmap="tab20",
                            interpolation="nearest")
            else:
                # Each image lives on its own acquisition grid and orientation: show it in subject space.
                image = subject.images[name].resampled_to(label_map.grid, order=1).array[:, :, z].T
                low, high = _WINDOWS.get(name, tuple(np.percentile(image, [1, 99.5])))
                axis.imshow(image, origin="lower", cmap="gray", vmin=low, vmax=high)
                axis.contour(_boundaries(labels_slice), levels=[0.5], colors="deepskyblue", linewidths=0.2, alpha=0.35)
            axis.contour(labels_slice >= LESION_LABEL_BASE, levels=[0.5], colors="red", linewidths=0.8)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name, fontsize=10)
        classes = ", ".join(sorted({lesion.lesion_class for lesion in subject.lesions})) or "no lesion"
        axes[row, 0].set_ylabel(classes, fontsize=8)
    figure.tight_layout()
    path = Path(path)
    with atomic_output(path) as tmp:
        figure.savefig(tmp, dpi=90, format="png")
    plt.close(figure)
    return path


def _slice_through_lesions(subject: SyntheticSubject) -> int:
    lesion = np.argwhere(subject.label_map.array >= LESION_LABEL_BASE)
    if len(lesion):
        return int(np.median(lesion[:, 2]))
    return subject.label_map.shape[2] // 2


def _boundaries(labels_slice: np.ndarray) -> np.ndarray:
    """1 where a pixel's label differs from its right or upper neighbour."""
    edges = np.zeros(labels_slice.shape, bool)
    edges[:, :-1] |= labels_slice[:, :-1] != labels_slice[:, 1:]
    edges[:-1, :] |= labels_slice[:-1, :] != labels_slice[1:, :]
    return edges.astype(float)
