"""Reading and writing images and records: every bad input becomes an `InputError` naming the file.

Bad files are built with nibabel/numpy in `tmp_path` from small (8 x 9 x 10) arrays.
"""

from __future__ import annotations

import os
import re
import stat
import tracemalloc
import warnings
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxelprompt.core.errors import InputError
from voxelprompt.core.io import atomic_output, load_volume, read_json, save_volume, write_json
from voxelprompt.core.volume import Volume

SHAPE = (8, 9, 10)


def _array(shape: tuple[int, ...] = SHAPE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32) + 1.0


def _affine(spacing: tuple[float, float, float] = (1.2, 0.9, 2.0)) -> np.ndarray:
    """A non-trivial but valid affine: axes permuted and flipped, anisotropic voxels, an offset."""
    affine = np.zeros((4, 4))
    affine[0, 1] = -spacing[1]
    affine[1, 0] = spacing[0]
    affine[2, 2] = spacing[2]
    affine[:3, 3] = (10.5, -20.25, 3.0)
    affine[3, 3] = 1.0
    return affine


def _write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return path


def _raises_input_error(path: Path, *problems: str) -> InputError:
    """Load `path`, expect an InputError whose message names the file and matches every regex in `problems`."""
    with pytest.raises(InputError) as info:
        load_volume(path)
    message = str(info.value)
    assert str(path) in message, message
    assert info.value.source == str(path)
    for problem in problems:
        assert re.search(problem, message, flags=re.IGNORECASE), f"{problem!r} not in {message!r}"
    return info.value


# ---------------------------------------------------------------------------------------------
# Files that are not there, not files, or not images


def test_missing_file(tmp_path):
    _raises_input_error(tmp_path / "absent.nii.gz", "does not exist")


def test_directory_instead_of_file(tmp_path):
    folder = tmp_path / "scan.nii.gz"
    folder.mkdir()
    _raises_input_error(folder, "not a regular file")


def test_unsupported_extension(tmp_path):
    path = tmp_path / "slice.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    _raises_input_error(path, "unsupported file type", r"\.nii\.gz")


# ---------------------------------------------------------------------------------------------
# Corrupt and truncated files


def test_random_bytes_as_nii_gz(tmp_path):
    path = tmp_path / "x.nii.gz"
    path.write_bytes(np.random.default_rng(1).bytes(600))
    _raises_input_error(path, "cannot be read|corrupt", "gzip")


@pytest.mark.parametrize("position", [0.3, 0.5, 0.7])
def test_nii_gz_with_bytes_flipped_in_compressed_stream(tmp_path, position):
    path = _write_nifti(tmp_path / "flipped.nii.gz", _array())
    data = bytearray(path.read_bytes())
    middle = int(len(data) * position)
    for i in range(middle, middle + 8):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    _raises_input_error(path, "corrupt|cannot be read")


def test_truncated_nii(tmp_path):
    path = _write_nifti(tmp_path / "cut.nii", _array())
    data = path.read_bytes()
    header_end = int(nib.load(path).header["vox_offset"])
    path.write_bytes(data[: header_end + (len(data) - header_end) // 2])
    _raises_input_error(path, "truncated or corrupt")


def test_truncated_nii_gz(tmp_path):
    path = _write_nifti(tmp_path / "cut.nii.gz", _array())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _raises_input_error(path, "truncated|corrupt")


# ---------------------------------------------------------------------------------------------
# Dimensionality


def test_2d_image(tmp_path):
    path = _write_nifti(tmp_path / "flat.nii.gz", _array((8, 9)))
    _raises_input_error(path, "2D", "3D volume is required")


def test_single_slice_3d_image(tmp_path):
    path = _write_nifti(tmp_path / "slice.nii.gz", _array((8, 9, 1)))
    _raises_input_error(path, "single slice")


def test_4d_series_names_number_of_volumes(tmp_path):
    path = _write_nifti(tmp_path / "series.nii.gz", _array((8, 9, 10, 3)))
    _raises_input_error(path, "4D", r"\b3 volumes")


def test_4d_with_one_volume_loads_as_3d(tmp_path):
    array = _array((8, 9, 10, 1))
    affine = _affine()
    path = _write_nifti(tmp_path / "one.nii.gz", array, affine)
    volume = load_volume(path)
    assert volume.shape == SHAPE
    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, array[..., 0])
    np.testing.assert_allclose(volume.affine, affine, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Voxel values


def test_nan_voxels_are_counted(tmp_path):
    array = _array()
    array.flat[[0, 7, 100, 200, 719]] = np.nan
    path = _write_nifti(tmp_path / "nan.nii.gz", array)
    _raises_input_error(path, r"\b5 voxels", "NaN")


def test_inf_voxels_are_counted(tmp_path):
    array = _array()
    array.flat[[3, 50]] = np.inf
    array.flat[600] = -np.inf
    path = _write_nifti(tmp_path / "inf.nii.gz", array)
    _raises_input_error(path, r"\b3 voxels", "Inf")


@pytest.mark.parametrize("value", [0.0, 5.0])
def test_constant_image(tmp_path, value):
    path = _write_nifti(tmp_path / "constant.nii.gz", np.full(SHAPE, value, dtype=np.float32))
    _raises_input_error(path, "constant", rf"value {value:g}\b")


# ---------------------------------------------------------------------------------------------
# Affines


def test_singular_affine(tmp_path):
    # Write the sform directly (qform unset): nibabel cannot build a qform from a singular matrix.
    header = nib.Nifti1Header()
    header.set_data_shape(SHAPE)
    header.set_data_dtype(np.float32)
    header["srow_x"] = [1, 0, 0, 0]
    header["srow_y"] = [0, 0, 0, 0]  # with srow_x/z this leaves voxel axis 1 as a zero column
    header["srow_z"] = [0, 0, 1, 0]
    header["sform_code"] = 1
    header["qform_code"] = 0
    path = tmp_path / "singular.nii.gz"
    nib.save(nib.Nifti1Image(_array(), None, header=header), path)
    loaded = nib.load(path).affine
    assert not loaded[:3, 1].any(), "precondition: the file's affine has a zero column"
    _raises_input_error(path, "singular")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_affine(tmp_path, bad):
    affine = _affine()
    affine[0, 3] = bad
    path = tmp_path / "nonfinite.nii.gz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        # nibabel stores the affine as sform (code 2, aligned) and leaves the qform unset (code 0),
        # so the loaded affine is the sform and really contains the non-finite value.
        _write_nifti(path, _array(), affine)
        loaded = nib.load(path).affine
    assert not np.isfinite(loaded).all(), "precondition: the loaded affine is not finite"
    _raises_input_error(path, "NaN or Inf", "affine")


@pytest.mark.parametrize("spacing", [0.001, 50.0])
def test_absurd_voxel_size(tmp_path, spacing):
    path = _write_nifti(tmp_path / "units.nii.gz", _array(), np.diag([1.0, 1.0, spacing, 1.0]))
    _raises_input_error(path, "voxel size", re.escape(f"{spacing:g}"), "units")


def test_sheared_affine(tmp_path):
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[0, 1] = 0.3
    path = _write_nifti(tmp_path / "sheared.nii.gz", _array(), affine)
    assert abs(nib.load(path).affine[0, 1] - 0.3) < 1e-6, "precondition: the file keeps the shear"
    _raises_input_error(path, "sheared")


def test_oblique_rotated_affine_is_accepted(tmp_path):
    """Rotation is not shear: an oblique acquisition must load."""
    angle = np.deg2rad(17)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 0.8, 3.0])
    path = _write_nifti(tmp_path / "oblique.nii.gz", _array(), affine)
    volume = load_volume(path)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-5)
    np.testing.assert_allclose(volume.spacing_mm, [0.8, 0.8, 3.0], atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".mgz"])
def test_save_then_load_keeps_array_and_affine(tmp_path, suffix):
    original = Volume(_array(), _affine())
    path = save_volume(original, tmp_path / f"image{suffix}")
    assert path == tmp_path / f"image{suffix}"
    loaded = load_volume(path)
    assert loaded.shape == SHAPE
    np.testing.assert_array_equal(loaded.array, original.array)
    np.testing.assert_allclose(loaded.affine, original.affine, atol=1e-4)


def test_mgz_written_by_nibabel_loads_with_its_affine(tmp_path):
    array, affine = _array(), _affine((1.0, 1.0, 1.5))
    path = tmp_path / "brain.mgz"
    nib.save(nib.MGHImage(array, affine), path)
    loaded = load_volume(path)
    np.testing.assert_array_equal(loaded.array, array)
    np.testing.assert_allclose(loaded.affine, affine, atol=1e-4)


@pytest.mark.parametrize("suffix", [".nii.gz", ".mgz"])
def test_uint8_mask_round_trip_is_identical(tmp_path, suffix):
    mask = (_array() > 1.5).astype(np.uint8)
    assert 0 < mask.sum() < mask.size
    path = save_volume(Volume(mask.astype(np.float32), _affine()), tmp_path / f"mask{suffix}", dtype=np.uint8)
    on_disk = nib.load(path)
    assert on_disk.get_data_dtype() == np.uint8
    stored = np.asarray(on_disk.dataobj)
    assert stored.dtype == np.uint8
    np.testing.assert_array_equal(stored, mask)
    np.testing.assert_array_equal(load_volume(path).array, mask.astype(np.float32))


def test_save_volume_refuses_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match="unsupported output type"):
        save_volume(Volume(_array(), np.eye(4)), tmp_path / "image.png")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Atomic output


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_atomic_output_failure_leaves_nothing_behind(tmp_path):
    folder = tmp_path / "out"
    target = folder / "image.nii.gz"
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_output(target) as tmp:
            assert tmp.parent == folder and tmp != target
            assert tmp.name.endswith(".nii.gz"), "the temporary file keeps the suffix that picks the format"
            tmp.write_bytes(b"half-written")
            raise RuntimeError("killed")
    assert list(folder.iterdir()) == []


def test_atomic_output_failure_keeps_previous_file(tmp_path):
    target = tmp_path / "record.json"
    target.write_text('{"old": true}\n')
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert target.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_save_volume_failure_inside_write_leaves_previous_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "image.nii.gz"
    previous = Volume(_array(seed=1), np.eye(4))
    save_volume(previous, target)
    real_save = nib.save

    def save_then_fail(image, filename):  # the disk fills up after part of the file is written
        real_save(image, filename)
        with open(filename, "r+b") as handle:
            handle.truncate(100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", save_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_volume(Volume(_array(seed=2), np.eye(4)), target)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["image.nii.gz"]
    np.testing.assert_array_equal(load_volume(target).array, previous.array)


def test_save_volume_output_has_normal_permissions(tmp_path, umask_022):
    path = save_volume(Volume(_array(), _affine()), tmp_path / "image.nii.gz")
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode & 0o044 != 0, oct(mode)
    assert mode == 0o644, oct(mode)
    assert [p.name for p in tmp_path.iterdir()] == ["image.nii.gz"]


def test_write_json_output_has_normal_permissions(tmp_path, umask_022):
    path = write_json(tmp_path / "record.json", {"a": 1})
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o644, oct(mode)
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


# ---------------------------------------------------------------------------------------------
# JSON records


def test_json_round_trip(tmp_path):
    data = {
        "name": "sub-01_T1w",
        "shape": np.array([8, 9, 10]),
        "affine": np.eye(4),
        "volume_mm3": np.float32(1.5),
        "count": np.int64(7),
        "source": Path("sub-01/anat/sub-01_T1w.nii.gz"),
        "nested": {"ok": True, "none": None},
    }
    path = write_json(tmp_path / "sub" / "record.json", data)
    assert path == tmp_path / "sub" / "record.json"
    assert read_json(path) == {
        "name": "sub-01_T1w",
        "shape": [8, 9, 10],
        "affine": np.eye(4).tolist(),
        "volume_mm3": 1.5,
        "count": 7,
        "source": "sub-01/anat/sub-01_T1w.nii.gz",
        "nested": {"ok": True, "none": None},
    }


def test_write_json_refuses_unserialisable_value_and_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        write_json(tmp_path / "record.json", {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_read_json_invalid_json(tmp_path):
    path = tmp_path / "record.json"
    path.write_text('{"a": 1,')
    with pytest.raises(InputError) as info:
        read_json(path)
    assert str(path) in str(info.value)
    assert "not valid JSON" in str(info.value)


def test_read_json_missing_file(tmp_path):
    path = tmp_path / "absent.json"
    with pytest.raises(InputError) as info:
        read_json(path)
    assert str(path) in str(info.value)
    assert "does not exist" in str(info.value)


def test_nifti2_gz_loads(tmp_path):
    array = np.random.default_rng(1).random((5, 6, 7)).astype(np.float32) + 1
    nib.save(nib.Nifti2Image(array, np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "two.nii.gz")
    volume = load_volume(tmp_path / "two.nii.gz")
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_array_equal(volume.affine, np.diag([2.0, 2.0, 2.0, 1.0]))


def _gzip_bomb(path: Path, shape: tuple[int, ...], zero_bytes: int) -> Path:
    """A .nii.gz whose header declares `shape` (float32), followed by `zero_bytes` of zeros: a
    stream of zeros compresses about a thousandfold, so the file stays small on disk."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_sform(np.eye(4), code=1)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    with path.open("wb") as handle:
        handle.write(compressor.compress(header.binaryblock + b"\0" * 4))  # voxels start at byte 352
        for _ in range(zero_bytes // 2**20):
            handle.write(compressor.compress(bytes(2**20)))
        handle.write(compressor.flush())
    return path


def test_an_image_declaring_gigabytes_is_refused_from_its_header_in_little_memory(tmp_path):
    bomb = _gzip_bomb(tmp_path / "bomb.nii.gz", (2048, 2048, 768), 64 * 2**20)
    assert bomb.stat().st_size < 2**20
    tracemalloc.start()
    try:
        error = _raises_input_error(bomb, r"declares 2048 x 2048 x 768 voxels, 12\.0 GiB", r"limit of 1\.0 GiB")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, peak
    assert "GiB" in error.problem


def test_reading_stops_past_the_bytes_the_header_declares(tmp_path):
    """A small image followed by 256 MB of zeros in its gzip stream is refused, not inflated."""
    overflowing = _gzip_bomb(tmp_path / "long.nii.gz", (10, 10, 10), 256 * 2**20)
    tracemalloc.start()
    try:
        _raises_input_error(overflowing, "decompresses to more data than its header declares")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, peak


def test_an_uncompressed_image_over_the_limit_is_refused_before_its_voxels_are_read(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((1024, 1024, 1024))
    header.set_data_dtype(np.float32)
    path = tmp_path / "large.nii"
    path.write_bytes(header.binaryblock + b"\0" * 4 + bytes(1000))
    _raises_input_error(path, r"declares 1024 x 1024 x 1024 voxels, 4\.0 GiB")


def test_an_image_too_large_for_the_checks_memory_is_its_error(tmp_path, monkeypatch):
    from voxelprompt.study import image_check

    def out_of_memory(path, *options):
        raise MemoryError

    monkeypatch.setattr(image_check, "load_volume", out_of_memory)
    errors = image_check.check_images([tmp_path / "huge.nii.gz"], tmp_path / "status.json")
    assert errors == [f"{tmp_path / 'huge.nii.gz'}: reading it needs more memory than the check's limit"]


def test_an_image_of_unknown_orientation_is_refused(tmp_path):
    """qform and sform codes both 0: nibabel would fall back to a voxel-size-only affine, and every
    left/right answer would be a guess. The error names the file and the codes."""
    header = nib.Nifti1Header()
    header.set_data_shape(SHAPE)
    header.set_data_dtype(np.float32)
    header.set_zooms((1.0, 1.0, 1.0))
    path = tmp_path / "unknown.nii.gz"
    nib.save(nib.Nifti1Image(_array(), None, header=header), path)
    assert nib.load(path).header["qform_code"] == 0 and nib.load(path).header["sform_code"] == 0
    _raises_input_error(path, "orientation is unknown")
    # either code set is enough
    header["sform_code"] = 1
    header["srow_x"], header["srow_y"], header["srow_z"] = [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]
    nib.save(nib.Nifti1Image(_array(), None, header=header), path)
    assert load_volume(path).shape == SHAPE


def test_an_image_whose_qform_and_sform_mirror_each_other_is_refused(tmp_path):
    """Both set, of opposite handedness: one of them flips left and right, and nibabel would silently
    take the sform. Agreeing ones, even differing by a shift or a rotation, are read."""
    image = nib.Nifti1Image(_array(), np.diag([1.0, 1.0, 1.0, 1.0]))
    image.set_qform(np.diag([-1.0, 1.0, 1.0, 1.0]), code=1)
    image.set_sform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    path = tmp_path / "mirrored.nii.gz"
    nib.save(image, path)
    _raises_input_error(path, "disagree on left and right")
    shifted = np.diag([-1.0, 1.0, 1.0, 1.0])
    shifted[:3, 3] = [10.0, -4.0, 2.0]
    image.set_sform(shifted, code=2)
    nib.save(image, path)
    assert load_volume(path).shape == SHAPE


def test_a_lab_may_accept_images_of_unknown_orientation_with_a_warning(tmp_path):
    """The configuration switch: an image with qform and sform codes 0 is read, and the check's
    status carries a warning naming the file for every answer about the subject. A mirrored qform
    and sform stay refused: they contradict each other, which is not the same as saying nothing."""
    from voxelprompt.core.io import unknown_orientation
    from voxelprompt.study.image_check import check_images, failure_of, warnings_of

    header = nib.Nifti1Header()
    header.set_data_shape(SHAPE)
    header.set_data_dtype(np.float32)
    path = tmp_path / "unknown.nii.gz"
    nib.save(nib.Nifti1Image(_array(), None, header=header), path)
    assert load_volume(path, accept_unknown_orientation=True).shape == SHAPE
    assert "unknown.nii.gz: orientation unknown" in unknown_orientation(path, nib.load(path).header)
    status = tmp_path / "status.json"
    assert check_images([path], status) and "orientation is unknown" in failure_of(status)
    assert check_images([path], status, accept_unknown_orientation=True) == []
    assert failure_of(status) == "" and "unknown.nii.gz" in warnings_of(status) and "left and right" in warnings_of(status)
    known = _write_nifti(tmp_path / "known.nii.gz", _array(), _affine())
    assert check_images([known], status, accept_unknown_orientation=True) == [] and warnings_of(status) == ""
    mirrored = nib.Nifti1Image(_array(), np.eye(4))
    mirrored.set_qform(np.diag([-1.0, 1.0, 1.0, 1.0]), code=1)
    nib.save(mirrored, tmp_path / "mirrored.nii.gz")
    with pytest.raises(InputError, match="disagree on left and right"):
        load_volume(tmp_path / "mirrored.nii.gz", accept_unknown_orientation=True)
