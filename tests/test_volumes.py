"""Scan loading: every unusable file fails with a ScanError that names it."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bench.data.volumes import load_label, load_scan
from bench.errors import ScanError


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Save ``data`` as NIfTI (the extension decides .nii vs .nii.gz)."""
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine),
             str(path))
    return path


def volume(shape: tuple[int, ...] = (8, 9, 10), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def test_good_file_loads_as_float32_3d(tmp_path: Path) -> None:
    data = volume()
    path = write_nifti(tmp_path / "good.nii.gz", data)
    loaded, affine = load_scan(path)
    assert loaded.dtype == np.float32 and loaded.shape == (8, 9, 10)
    np.testing.assert_allclose(loaded, data)
    assert affine.dtype == np.float64 and affine.shape == (4, 4)
    np.testing.assert_allclose(affine, np.diag([2.0, 2.0, 2.0, 1.0]))


def test_integer_file_is_converted_to_float32(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "int.nii", (volume() * 100).astype(np.int16))
    loaded, _ = load_scan(path)
    assert loaded.dtype == np.float32


def test_4d_with_trailing_singleton_is_accepted(tmp_path: Path) -> None:
    data = volume((8, 9, 10, 1))
    loaded, _ = load_scan(write_nifti(tmp_path / "single.nii.gz", data))
    assert loaded.shape == (8, 9, 10)
    np.testing.assert_allclose(loaded, data[..., 0])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScanError, match="absent.nii.gz.*not found"):
        load_scan(tmp_path / "absent.nii.gz")


@pytest.mark.parametrize("name, content", [
    ("garbage.nii", b"this is not an image" * 50),
    ("garbage.nii.gz", b"this is not an image" * 50),
    ("empty.nii.gz", b""),
    ("plain-gzip.nii.gz", gzip.compress(b"x" * 1000)),
])
def test_not_a_nifti(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ScanError, match=name.replace(".", r"\.")):
        load_scan(path)


@pytest.mark.parametrize("name", ["trunc.nii.gz", "trunc.nii"])
def test_truncated_file(tmp_path: Path, name: str) -> None:
    full = write_nifti(tmp_path / f"full-{name}", volume((20, 20, 20)))
    path = tmp_path / name
    raw = full.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ScanError, match=f"{name}.*truncated or corrupt"):
        load_scan(path)


def test_corrupt_gzip_stream(tmp_path: Path) -> None:
    raw = write_nifti(tmp_path / "full.nii.gz", volume((20, 20, 20))).read_bytes()
    path = tmp_path / "corrupt.nii.gz"
    path.write_bytes(raw[:40] + bytes(100) + raw[140:])
    with pytest.raises(ScanError, match="corrupt.nii.gz"):
        load_scan(path)


def test_4d_series_is_refused(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "series.nii.gz", volume((8, 9, 10, 3)))
    with pytest.raises(ScanError, match=r"series\.nii\.gz: 4D volume of shape \(8, 9, 10, 3\)"
                                        r".*split the series"):
        load_scan(path)


def test_2d_image_is_refused(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "slice.nii", volume((8, 9)))
    with pytest.raises(ScanError, match="slice.nii.*3D scan is expected"):
        load_scan(path)


def test_non_finite_voxels_are_counted(tmp_path: Path) -> None:
    data = volume()
    data[0, 0, :3] = np.nan
    data[1, 1, 1] = np.inf
    path = write_nifti(tmp_path / "nan.nii.gz", data)
    with pytest.raises(ScanError, match=r"nan\.nii\.gz: 4 voxel\(s\) are NaN or Inf"):
        load_scan(path)


def test_singular_affine_is_refused(tmp_path: Path) -> None:
    # nibabel will not save a singular affine, so zero the sform's third row in the header.
    path = write_nifti(tmp_path / "flat.nii", volume())
    header = nib.Nifti1Header.from_fileobj(path.open("rb"))
    header["srow_z"] = 0.0
    header.set_sform(None, code="aligned")
    raw = bytearray(path.read_bytes())
    raw[: header.sizeof_hdr] = header.binaryblock
    path.write_bytes(bytes(raw))
    with pytest.raises(ScanError, match="flat.nii.*affine"):
        load_scan(path)


def test_label_is_rounded_to_uint8(tmp_path: Path) -> None:
    data = np.zeros((6, 6, 6), dtype=np.float32)
    data[1:3, 1:3, 1:3] = 0.9999
    data[4, 4, 4] = 2.0001
    labels, affine = load_label(write_nifti(tmp_path / "seg.nii.gz", data))
    assert labels.dtype == np.uint8 and labels.shape == (6, 6, 6)
    assert set(np.unique(labels)) == {0, 1, 2}
    assert labels[1, 1, 1] == 1 and labels[4, 4, 4] == 2
    assert affine.shape == (4, 4)


def test_label_checks_are_shared(tmp_path: Path) -> None:
    with pytest.raises(ScanError, match="seg4d.nii.gz: 4D"):
        load_label(write_nifti(tmp_path / "seg4d.nii.gz", np.zeros((4, 4, 4, 2), np.uint8)))
    with pytest.raises(ScanError, match="negative.nii.gz.*outside 0..255"):
        load_label(write_nifti(tmp_path / "negative.nii.gz", -np.ones((4, 4, 4), np.int16)))
