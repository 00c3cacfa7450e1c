"""Within-subject co-registration: rigid (and, for templates, similarity) alignment with SimpleITK.

Mattes mutual information makes the metric contrast-agnostic (T1w to FLAIR, MRI to CT); a
multi-resolution pyramid with physical-unit smoothing captures motions of 15 degrees and 15 mm.

Conventions: SimpleITK works in LPS millimetres, `Volume` in RAS. A registration of `moving` onto
`fixed` yields a transform T that maps fixed-space points to moving-space points (ITK's
convention), so resampling the moving image onto the fixed grid uses T, and mapping something
drawn on the fixed grid back onto the moving image's own grid uses T's inverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from voxelprompt.core.io import atomic_output
from voxelprompt.core.volume import Grid, Volume

_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_TRANSFORM_KINDS = {
    "rigid": sitk.VersorRigid3DTransform,
    "similarity": sitk.Similarity3DTransform,
    "affine": lambda: sitk.AffineTransform(3),
}


@dataclass(frozen=True)
class RegistrationSettings:
    """Optimiser settings; the defaults are those measured in benchmarks/ for 1 mm heads."""

    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas_mm: tuple[float, ...] = (2.0, 1.0, 0.0)
    histogram_bins: int = 32
    sampling_fraction: float = 0.10
    max_iterations: int = 200
    learning_rate: float = 1.0
    min_step: float = 1e-4
    seed: int = 20240611
    threads: int = 1


@dataclass(frozen=True)
class Registration:
    transform: sitk.Transform  # fixed LPS point -> moving LPS point
    metric_value: float  # final Mattes MI (negative; lower is better)
    iterations: int
    stop_condition: str

    @property
    def ras_matrix(self) -> np.ndarray:
        """4x4 matrix mapping fixed RAS mm to moving RAS mm."""
        return transform_to_ras_matrix(self.transform)

    def to_dict(self) -> dict:
        """The fit as JSON numbers that `from_dict` turns back into the same mapping, bit for bit:
        the transform's matrix, translation and centre (every kind `register` returns has them)."""
        return {"matrix": list(self.transform.GetMatrix()), "translation": list(self.transform.GetTranslation()),
                "center": list(self.transform.GetCenter()), "metric_value": self.metric_value,
                "iterations": self.iterations, "stop_condition": self.stop_condition}

    @classmethod
    def from_dict(cls, data: dict) -> Registration:
        affine = sitk.AffineTransform(3)
        affine.SetMatrix([float(v) for v in data["matrix"]])
        affine.SetTranslation([float(v) for v in data["translation"]])
        affine.SetCenter([float(v) for v in data["center"]])
        return cls(affine, float(data["metric_value"]), int(data["iterations"]), str(data["stop_condition"]))


def mean_displacement_mm(points_ras: np.ndarray, matrix_a: np.ndarray, matrix_b: np.ndarray) -> float:
    """Mean distance between where two 4x4 RAS transforms send the same (N, 3) points: the
    registration error when one of them is the truth."""
    homogeneous = np.c_[points_ras, np.ones(len(points_ras))]
    return float(np.linalg.norm((homogeneous @ (matrix_a - matrix_b).T)[:, :3], axis=1).mean())


def to_sitk(volume: Volume, dtype: int = sitk.sitkFloat32) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array.transpose(2, 1, 0)))
    image = sitk.Cast(image, dtype)
    lps = _LPS_FROM_RAS @ volume.affine
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    image.SetDirection((lps[:3, :3] / spacing).flatten().tolist())
    return image


def from_sitk(image: sitk.Image) -> Volume:
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return Volume(np.ascontiguousarray(array), _LPS_FROM_RAS @ lps)


def transform_to_ras_matrix(transform: sitk.Transform) -> np.ndarray:
    """The 4x4 RAS matrix of a linear transform, read off by transforming the origin and axes."""
    origin = np.asarray(transform.TransformPoint((0.0, 0.0, 0.0)))
    lps = np.eye(4)
    for axis in range(3):
        unit = np.zeros(3)
        unit[axis] = 1.0
        lps[:3, axis] = np.asarray(transform.TransformPoint(tuple(unit))) - origin
    lps[:3, 3] = origin
    return _LPS_FROM_RAS @ lps @ _LPS_FROM_RAS


def register(
    fixed: Volume,
    moving: Volume,
    *,
    fixed_mask: Volume | None = None,
    moving_mask: Volume | None = None,
    initial_ras: np.ndarray | None = None,
    kind: str = "rigid",
    settings: RegistrationSettings = RegistrationSettings(),
) -> Registration:
    """Align `moving` to `fixed`: `kind` is "rigid" (6 dof, within a subject), "similarity"
    (7 dof, a template to a head) or "affine" (12 dof, one template to another).

    Masks restrict the metric to the head (or cranial cavity), so that necks, shoulders and
    background never drive the alignment. `initial_ras` (fixed RAS -> moving RAS) starts the
    optimiser from a known estimate; without it, the centres of mass are aligned.
    """
    fixed_image, moving_image = to_sitk(fixed), to_sitk(moving)
    if kind not in _TRANSFORM_KINDS:
        raise ValueError(f"unknown registration kind {kind!r}; expected one of {', '.join(_TRANSFORM_KINDS)}")
    if initial_ras is not None and kind == "rigid":
        initial = rigid_transform_from_ras(initial_ras, centre_ras=_centroid_ras(fixed_mask if fixed_mask else fixed))
    else:
        initial = sitk.CenteredTransformInitializer(
            fixed_image, moving_image, _TRANSFORM_KINDS[kind](), sitk.CenteredTransformInitializerFilter.MOMENTS
        )

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(settings.sampling_fraction, settings.seed)
    if fixed_mask is not None:
        method.SetMetricFixedMask(_mask_image(fixed_mask))
    if moving_mask is not None:
        method.SetMetricMovingMask(_mask_image(moving_mask))
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=settings.learning_rate,
        minStep=settings.min_step,
        numberOfIterations=settings.max_iterations,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(settings.shrink_factors))
    method.SetSmoothingSigmasPerLevel(list(settings.smoothing_sigmas_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    method.SetNumberOfThreads(settings.threads)

    # ITK's multi-threaded metric sums in a thread-dependent order; the thread count is fixed so
    # that the same inputs give the same transform.
    previous_threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(settings.threads)
    try:
        transform = method.Execute(fixed_image, moving_image)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous_threads)
    return Registration(
        transform=_flatten(transform),
        metric_value=float(method.GetMetricValue()),
        iterations=int(method.GetOptimizerIteration()),
        stop_condition=method.GetOptimizerStopConditionDescription(),
    )


def rigid_transform_from_ras(matrix_ras: np.ndarray, centre_ras: np.ndarray) -> sitk.VersorRigid3DTransform:
    """The rotation + translation nearest to a 4x4 RAS matrix (scale and shear removed by polar
    decomposition), as an ITK transform rotating about `centre_ras`."""
    u, _, vt = np.linalg.svd(matrix_ras[:3, :3])
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:
        raise ValueError("the initial transform contains a reflection")
    # Keep where the centre goes: the rigid part must agree with the full matrix there.
    centre_target = matrix_ras[:3, :3] @ centre_ras + matrix_ras[:3, 3]
    rigid = np.eye(4)
    rigid[:3, :3] = rotation
    rigid[:3, 3] = centre_target - rotation @ centre_ras
    lps = _LPS_FROM_RAS @ rigid @ _LPS_FROM_RAS
    centre_lps = (_LPS_FROM_RAS[:3, :3] @ centre_ras)
    # A versor has no gimbal lock: Euler angles cannot represent some rotations (e.g. +y onto +z).
    transform = sitk.VersorRigid3DTransform()
    transform.SetCenter(centre_lps.tolist())
    transform.SetMatrix(lps[:3, :3].flatten().tolist())
    # p' = R (p - c) + c + t  =>  t = R c + t_lps - c
    transform.SetTranslation((lps[:3, :3] @ centre_lps + lps[:3, 3] - centre_lps).tolist())
    return transform


def _centroid_ras(volume: Volume) -> np.ndarray:
    weights = np.abs(volume.array)
    indices = np.argwhere(weights > 0)
    centre_voxel = (indices * weights[tuple(indices.T)][:, None]).sum(axis=0) / weights[tuple(indices.T)].sum()
    return volume.grid.world_coordinates_mm(centre_voxel[None])[0]


def _mask_image(mask: Volume) -> sitk.Image:
    return to_sitk(mask.with_array((mask.array > 0).astype(np.uint8)), sitk.sitkUInt8)


def _flatten(transform: sitk.Transform) -> sitk.Transform:
    """Registration returns a composite; keep one plain rigid (versor or Euler) or affine transform."""
    if isinstance(transform, sitk.CompositeTransform) and transform.GetNumberOfTransforms() == 1:
        transform = transform.GetNthTransform(0)
    transform = transform.Downcast()
    if isinstance(transform, (sitk.VersorRigid3DTransform, sitk.Euler3DTransform, sitk.AffineTransform)):
        return transform
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(transform.GetMatrix())
    affine.SetTranslation(transform.GetTranslation())
    affine.SetCenter(transform.GetCenter())
    return affine


def resample(moving: Volume, grid: Grid, transform: sitk.Transform, *, nearest: bool = False) -> Volume:
    """`moving` seen on `grid` through `transform` (grid point -> moving point)."""
    reference = to_sitk(Volume(np.zeros(grid.shape, dtype=np.float32), grid.affine))
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    image = sitk.Resample(to_sitk(moving), reference, transform, interpolator, 0.0, sitk.sitkFloat32)
    return from_sitk(image)


def to_image_grid(volume: Volume, transform: sitk.Transform, grid: Grid, *, nearest: bool = True) -> Volume:
    """Map an array on the subject (reference) grid onto another image's own grid.

    `transform` is that image's registration (subject point -> image point); its inverse carries
    the image's voxel positions back into subject space, where `volume` is sampled. Used to put
    masks on each original scan of a subject.
    """
    return resample(volume, grid, transform.GetInverse(), nearest=nearest)


def write_transform(transform: sitk.Transform, path: str | Path) -> Path:
    """ITK text transform file (.txt or .tfm), readable by ANTs, ITK-SNAP and Slicer."""
    path = Path(path)
    with atomic_output(path) as tmp:
        sitk.WriteTransform(transform, str(tmp))
    return path


def read_transform(path: str | Path) -> sitk.Transform:
    return _flatten(sitk.ReadTransform(str(path)))
