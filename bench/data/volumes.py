"""Loading one scan (or one mask / label map) from a NIfTI file, with checks a user can act on.

A benchmark run touches thousands of files; one truncated download or one 4D series left in
the tree must stop the run with a message naming that file, not with a numpy traceback deep
inside resampling. Every check here raises :class:`~bench.errors.ScanError` with a single
line ``<file>: <what is wrong>; <what to do>``.
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from bench.errors import MribenchError, ScanError


@dataclass(frozen=True)
class ScanLimits:
    """What the gate accepts. The defaults suit brain MRI from 0.2 to 10 mm; the size limits can be
    raised with ``MRIBENCH_SCAN_MAX_VOXELS`` and ``MRIBENCH_SCAN_MAX_GIB``."""

    max_voxels: int = 512 ** 3               # 134 M voxels: 0.5 GiB as float32
    max_gib: float = 4.0                     # memory to read it: float32 copy + stored type
    min_dim: int = 16                        # voxels along every axis
    min_spacing_mm: float = 0.2
    max_spacing_mm: float = 10.0
    min_fov_overlap: float = 0.5             # fraction of the MNI brain box inside the scan
    min_brain_fraction: float = 0.01         # fraction of the brain box with non-zero voxels
    oblique_degrees: float = 1.0             # voxel axes further than this from MNI axes warn

    @classmethod
    def from_env(cls) -> "ScanLimits":
        """The defaults, with the size limits from the environment where set."""
        changes = {}
        for var, field, kind in (("MRIBENCH_SCAN_MAX_VOXELS", "max_voxels", int),
                                 ("MRIBENCH_SCAN_MAX_GIB", "max_gib", float)):
            raw = os.environ.get(var)
            if raw:
                try:
                    changes[field] = kind(raw)
                except ValueError:
                    raise MribenchError(f"{var}={raw!r} is not a number; unset it or give e.g. "
                                        f"{getattr(cls, field)}") from None
        return cls(**changes)


def check_header(path: Path, header, limits: ScanLimits | None = None) -> None:
    """Refuse a stored type we would misread and a size we should not allocate (header only)."""
    limits = limits or ScanLimits.from_env()
    dtype = np.dtype(header.get_data_dtype())
    if dtype.kind == "c":
        raise ScanError(f"{path}: complex-valued voxels ({dtype}); reading them would drop the imaginary "
                        "part: export the magnitude image")
    if dtype.kind not in "biuf" or dtype.fields is not None:
        raise ScanError(f"{path}: voxels stored as {dtype} (not a real number per voxel, e.g. RGB); "
                        "export a single-channel magnitude image")
    shape = tuple(int(n) for n in header.get_data_shape())
    n_voxels = math.prod(shape)
    gib = n_voxels * (4 + dtype.itemsize) / 2 ** 30
    if n_voxels > limits.max_voxels or gib > limits.max_gib:
        raise ScanError(f"{path}: header declares {' x '.join(map(str, shape))} = {n_voxels:,} voxels "
                        f"({gib:.1f} GiB to read), over the limit of {limits.max_voxels:,} voxels / "
                        f"{limits.max_gib:g} GiB; crop or downsample it (or raise MRIBENCH_SCAN_MAX_VOXELS / "
                        "MRIBENCH_SCAN_MAX_GIB)")


#: What nibabel and the gzip / zlib layers raise for files that are not (intact) NIfTI.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    ImageFileError, HeaderDataError, EOFError, zlib.error, OSError, ValueError)


def load_scan(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Load an image as (float32 3D array, 4x4 float64 voxel->world affine).

    Intensity scaling stored in the header (scl_slope / scl_inter) is applied. Trailing
    singleton dimensions (a 4D file holding one volume) are dropped.
    """
    return _load_checked(Path(path))


def load_label(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Load a mask or label map as (uint8 3D array, 4x4 float64 affine).

    Values are rounded to the nearest integer, because label maps saved as float (common
    after registration) carry values such as 0.9999; values outside 0..255 are refused
    rather than wrapped.
    """
    path = Path(path)
    data, affine = _load_checked(path)
    labels = np.rint(data)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ScanError(f"{path}: label values span {labels.min():g}..{labels.max():g}, outside "
                        "0..255; store masks / label maps as small non-negative integers")
    return labels.astype(np.uint8), affine


def _load_checked(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read header and data and apply every check shared by scans and labels."""
    img, shape, affine = open_checked(path)
    return read_checked(path, img, shape), affine


def open_checked(path: str | os.PathLike) -> tuple[nib.spatialimages.SpatialImage, tuple[int, int, int], np.ndarray]:
    """Parse the header only and check it: (image with lazy voxels, 3D shape, affine).

    The stored type and the decompressed size are checked here, before any voxel is read, so a
    small .nii.gz whose header declares 1000^3 voxels is refused instead of allocating gigabytes
    (:func:`check_header`).
    """
    path = Path(path)
    if not path.is_file():
        raise ScanError(f"{path}: file not found; check the path in the cohort table or "
                        "manifest (or re-run the download / generation step)")
    img = _open(path)
    check_header(path, img.header)
    shape = _checked_shape(path, tuple(int(n) for n in img.shape))
    affine = _checked_affine(path, img.affine)
    return img, shape, affine


def read_checked(path: str | os.PathLike, img: nib.spatialimages.SpatialImage,
                 shape: tuple[int, int, int]) -> np.ndarray:
    """The voxels of an image from :func:`open_checked`, as finite float32 of ``shape``."""
    path = Path(path)
    data = _read_data(path, img).reshape(shape)
    _check_finite(path, data)
    return data


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (nibabel messages can span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _open(path: Path) -> nib.spatialimages.SpatialImage:
    """Parse the header; nibabel reads the voxel data lazily, later."""
    try:
        return nib.load(str(path))
    except _READ_ERRORS as exc:
        raise ScanError(f"{path}: not a readable NIfTI file ({_one_line(exc)}); re-download or "
                        "re-export it as .nii / .nii.gz") from exc


def _read_data(path: Path, img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """Read the voxels; a truncated .nii.gz usually parses fine and only fails here."""
    try:
        return np.asarray(img.get_fdata(dtype=np.float32, caching="unchanged"), dtype=np.float32)
    except _READ_ERRORS as exc:
        raise ScanError(f"{path}: voxel data is truncated or corrupt ({_one_line(exc)}); "
                        "re-download or re-export the file") from exc


def _checked_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The 3D shape, after dropping trailing singleton dimensions; refuse anything else."""
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise ScanError(f"{path}: {len(shape)}D volume of shape {shape} where a 3D scan is "
                        "expected; split the series and pick one volume")
    if len(shape) < 3 or min(shape) < 1:
        raise ScanError(f"{path}: image of shape {shape} where a 3D scan is expected; "
                        "provide a full 3D volume")
    return shape  # type: ignore[return-value]


def _checked_affine(path: Path, affine: np.ndarray | None) -> np.ndarray:
    """The affine as float64; resampling needs it finite and invertible."""
    if affine is None:
        raise ScanError(f"{path}: the file stores no voxel-to-world affine; "
                        "re-export it as NIfTI with a valid sform or qform")
    affine = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ScanError(f"{path}: the voxel-to-world affine is singular or non-finite; "
                        "fix the sform / qform in the header (e.g. with fslorient)")
    return affine


def _check_finite(path: Path, data: np.ndarray) -> None:
    """Refuse NaN / Inf voxels: one of them turns every normalised voxel into NaN."""
    n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if n_bad:
        raise ScanError(f"{path}: {n_bad} voxel(s) are NaN or Inf; replace them (e.g. with 0) "
                        "or re-export the scan")
