"""Reading and writing images and records, with checks that turn bad files into clear errors.

Every writer goes through `atomic_output`: data lands in a temporary file next to the target and is
renamed into place only when complete, so a killed job never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from voxelprompt.core.errors import InputError
from voxelprompt.core.volume import Volume

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mgz")

# Voxel sizes outside this range are header errors (e.g. metres written as millimetres), not scans.
MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 20.0
# Columns of the affine must be near-orthogonal: SimpleITK and the BIDS world cannot express shear.
MAX_SHEAR_COSINE = 1e-3
# The most voxel data an image may declare, as float32 (how it is held once read): twice a 0.5 mm
# whole head (512 x 512 x 512 x 4 bytes = 0.5 GiB). An image over it is refused from its header.
MAX_VOXEL_BYTES = 2**30
# Past the voxel data a file may hold NIfTI extensions or MGH tags; more than this is not an image.
_TRAILING_BYTES = 2**20
_HEADER_BYTES = 540  # the largest header read here (NIfTI-2; NIfTI-1 has 348, MGH 284)

_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile, nib.filebasedimages.ImageFileError)


def image_suffix(path: str | Path) -> str | None:
    name = str(path).lower()
    return next((suffix for suffix in IMAGE_SUFFIXES if name.endswith(suffix)), None)


def load_volume(path: str | Path, accept_unknown_orientation: bool = False) -> Volume:
    """Load a 3D NIfTI or MGZ image as float32, or raise `InputError` naming the file and the problem.

    A 4D image with a single volume (shape X x Y x Z x 1, common from converters) is read as 3D;
    a 4D series is refused, since which volume to use (e.g. the b=1000 trace of a DWI) is a choice
    the study must make. An image of unknown orientation is refused unless
    `accept_unknown_orientation`: its caller then owes its user the warning `unknown_orientation` gives.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    if not path.is_file():
        raise InputError(path, "is not a regular file")
    if image_suffix(path) is None:
        raise InputError(path, f"unsupported file type; expected one of {', '.join(IMAGE_SUFFIXES)}")
    try:
        image = _read_image(path)
        shape = image.shape
    except _READ_ERRORS as error:
        raise InputError(path, f"cannot be read as an image ({_describe(error)})") from error
    check_declared_size(path, shape)

    spatial_shape = _spatial_shape(path, shape)
    if not (accept_unknown_orientation and unknown_orientation(path, image.header)):
        check_orientation_known(path, image.header)
    affine = np.asarray(image.affine, dtype=np.float64)
    check_affine(path, affine)

    try:
        array = np.asarray(image.dataobj, dtype=np.float32).reshape(spatial_shape)
    except _READ_ERRORS as error:
        raise InputError(path, f"voxel data is truncated or corrupt ({_describe(error)})") from error

    check_voxels(path, array)
    return Volume(array, affine, image.header)


def check_declared_size(path: str | Path, shape: tuple[int, ...]) -> None:
    """Refuse an image whose header declares more voxel data than `MAX_VOXEL_BYTES` (as float32)."""
    voxel_bytes = int(np.prod(shape, dtype=np.float64)) * 4
    if voxel_bytes > MAX_VOXEL_BYTES:
        raise InputError(path, f"its header declares {' x '.join(str(n) for n in shape)} voxels, "
                               f"{voxel_bytes / 2**30:.1f} GiB as float32, over the limit of "
                               f"{MAX_VOXEL_BYTES / 2**30:.1f} GiB")


def _read_image(path: Path) -> nib.spatialimages.SpatialImage:
    """nibabel reads a gzip stream only as far as the header says, so a damaged tail or a bad CRC
    could pass unnoticed: the whole stream is decompressed here, which makes gzip check it. The
    header comes first and bounds the rest, so a small file that inflates to gigabytes (a gzip bomb)
    is refused after its header, or once it outgrows what its header declares."""
    if not path.name.lower().endswith((".gz", ".mgz")):
        return nib.load(path)
    kind = nib.MGHImage if path.name.lower().endswith(".mgz") else nib.Nifti1Image
    data = bytearray()
    limit = None
    for piece in _gunzip_pieces(path):
        data += piece
        if limit is None and len(data) >= _HEADER_BYTES:
            kind, limit = _declared_bytes(path, kind, bytes(data[:_HEADER_BYTES]))
        if limit is not None and len(data) > limit + _TRAILING_BYTES:
            raise InputError(path, f"decompresses to more data than its header declares ({limit:,} bytes)")
    if limit is None:
        kind, _ = _declared_bytes(path, kind, bytes(data))
    return kind.from_bytes(data)  # nibabel reads a bytearray as it is: no second copy


def _gunzip_pieces(path: Path, piece_bytes: int = 2**22) -> Iterator[bytes]:
    """The decompressed stream of a gzip file, member after member, at most `piece_bytes` at a time
    (zeros after the last member are padding, as gzip allows)."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with path.open("rb") as handle:
        pending = b""
        while True:
            if not pending:
                pending = handle.read(2**16)
                if not pending:
                    break
            if decompressor.eof:  # a member ended and more follows
                if not pending.strip(b"\0"):
                    pending = b""
                    continue
                decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                yield decompressor.decompress(pending, piece_bytes)
            except zlib.error as error:
                raise gzip.BadGzipFile(f"not a valid gzip stream: {error}") from None
            pending = decompressor.unused_data if decompressor.eof else decompressor.unconsumed_tail
    while not decompressor.eof and (piece := decompressor.decompress(b"", piece_bytes)):
        yield piece  # what zlib still holds once the file is read
    if not decompressor.eof:
        raise EOFError("the gzip stream is truncated")


def _declared_bytes(path: Path, kind: type, start: bytes) -> tuple[type, int]:
    """The image class and the bytes its header declares (header, extensions and voxels)."""
    if kind is nib.Nifti1Image and 540 in {int.from_bytes(start[:4], "little"), int.from_bytes(start[:4], "big")}:
        kind = nib.Nifti2Image  # NIfTI-2 headers are 540 bytes
    header = kind.header_class.from_fileobj(io.BytesIO(start))
    shape = header.get_data_shape()
    check_declared_size(path, shape)
    return kind, int(header.get_data_offset()) + int(np.prod(shape, dtype=np.float64)) * header.get_data_dtype().itemsize


def _spatial_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) < 3:
        raise InputError(path, f"is {len(shape)}D (shape {shape}); a 3D volume is required")
    extra = shape[3:]
    if any(n != 1 for n in extra):
        raise InputError(
            path,
            f"is {len(shape)}D with {int(np.prod(extra))} volumes (shape {shape}); "
            "pass a single 3D volume (for DWI, e.g. the b=1000 trace image)",
        )
    if min(shape[:3]) < 2:
        raise InputError(path, f"has a single slice (shape {shape[:3]}); a 3D volume is required")
    return tuple(int(n) for n in shape[:3])


def unknown_orientation(path: str | Path, header) -> str:
    """Why the image's orientation is unknown (NIfTI qform and sform codes both 0), as a warning for
    whoever reads answers about it; "" when it is known."""
    if "qform_code" not in header or "sform_code" not in header:
        return ""
    if int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0:
        return (f"{path}: orientation unknown (qform_code and sform_code are both 0), accepted by configuration: "
                "left and right may be swapped")
    return ""


def check_orientation_known(path: str | Path, header) -> None:
    """Refuse a NIfTI image whose orientation is unknown or contradicts itself, so that "left" is
    never the subject's right:
    - qform and sform codes both 0: nibabel falls back to an affine made of the voxel sizes alone;
    - a qform and an sform both set, of opposite handedness: one of them mirrors the head, and the
      header does not say which (nibabel would silently take the sform).
    (MGH/MGZ headers always state their orientation, once.)"""
    if "qform_code" not in header or "sform_code" not in header:
        return
    qform_code, sform_code = int(header["qform_code"]), int(header["sform_code"])
    if qform_code == 0 and sform_code == 0:
        raise InputError(path, "its orientation is unknown (qform_code and sform_code are both 0), so left "
                               "and right cannot be told apart; set the orientation in the header (e.g. "
                               "re-export it from the scanner's DICOM with dcm2niix) and run again")
    if qform_code > 0 and sform_code > 0:
        qform, sform = header.get_qform(), header.get_sform()
        if np.sign(np.linalg.det(qform[:3, :3])) * np.sign(np.linalg.det(sform[:3, :3])) < 0:
            raise InputError(path, "its qform and sform disagree on left and right (one is the mirror image "
                                   "of the other), so which side is which is unknown; fix the header (e.g. "
                                   "re-export it from the scanner's DICOM with dcm2niix) and run again")


def check_affine(path: str | Path, affine: np.ndarray) -> None:
    """Refuse affines that cannot place voxels in the world: non-finite, singular, sheared, absurd sizes."""
    if not np.isfinite(affine).all():
        raise InputError(path, "the affine contains NaN or Inf")
    linear = affine[:3, :3]
    if abs(np.linalg.det(linear)) < 1e-9:
        raise InputError(path, "the affine is singular (voxels have no volume)")
    spacing = np.sqrt((linear**2).sum(axis=0))
    if spacing.min() < MIN_SPACING_MM or spacing.max() > MAX_SPACING_MM:
        raise InputError(
            path,
            f"voxel size {np.round(spacing, 4).tolist()} mm is outside [{MIN_SPACING_MM}, {MAX_SPACING_MM}] mm; "
            "check the units in the header",
        )
    directions = linear / spacing
    cosines = directions.T @ directions - np.eye(3)
    if np.abs(cosines).max() > MAX_SHEAR_COSINE:
        raise InputError(path, "the affine is sheared (voxel axes are not orthogonal)")


def check_voxels(path: str | Path, array: np.ndarray) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        raise InputError(path, f"{int((~finite).sum())} voxels are NaN or Inf")
    low, high = float(array.min()), float(array.max())
    if low == high:
        raise InputError(path, f"every voxel has the value {low:g}; the image is empty or constant")


def save_volume(volume: Volume, path: str | Path, dtype: Any = np.float32) -> Path:
    """Write NIfTI (.nii/.nii.gz) or MGZ, atomically. Masks should pass dtype=np.uint8."""
    path = Path(path)
    suffix = image_suffix(path)
    if suffix is None:
        raise ValueError(f"{path}: unsupported output type; expected one of {', '.join(IMAGE_SUFFIXES)}")
    array = np.asarray(volume.array).astype(dtype, copy=False)
    if suffix == ".mgz":
        image = nib.MGHImage(array, volume.affine)
    else:
        image = nib.Nifti1Image(array, volume.affine)
        # Both codes "aligned" unless the source said "scanner": keeps the meaning of world space.
        code = _source_xform_code(volume.header)
        image.set_sform(volume.affine, code=code)
        image.set_qform(volume.affine, code=code)
        image.header.set_xyzt_units("mm", "sec")
    with atomic_output(path) as tmp:
        nib.save(image, tmp)
    return path


def _source_xform_code(header: Any) -> int:
    if isinstance(header, nib.Nifti1Header):
        code = int(header["sform_code"]) or int(header["qform_code"])
        if code:
            return code
    return 1  # scanner anatomical


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix); rename it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = image_suffix(path) or path.suffix
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files; outputs must be readable like any other file the user writes.
    # Set again after writing: some writers (safetensors) replace the file with one of their own.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return path


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise InputError(path, "file does not exist") from error
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(path, f"cannot be read ({_describe(error)})") from error
    except json.JSONDecodeError as error:
        raise InputError(path, f"is not valid JSON ({error})") from error


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _describe(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]
