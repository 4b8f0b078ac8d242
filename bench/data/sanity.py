"""The scan sanity gate: a file that cannot be a brain MRI in MNI space never reaches an encoder.

Loading (:mod:`bench.data.volumes`) only guarantees a readable, finite 3D array. An all-zero
volume, a 1-voxel or 2x2x2 "scan", a scan outside the field of view of the input space, a
complex-valued or absurdly large file all load; resampled, most of them reach the encoder as an
all-zero volume and produce an embedding that looks like any other. The gate refuses them, each
with one line naming the file (and the subject / session when the caller knows them), in the
order the checks cost:

1. header, before a voxel is decompressed (:func:`check_header`): stored type (complex or RGB
   refused) and decompressed size (:class:`ScanLimits`: a 5 MB .nii.gz can declare 1000^3 voxels);
2. geometry, from the header's shape and affine (:func:`check_geometry`): every axis at least
   ``min_dim`` voxels, a plausible voxel size, and enough of the MNI brain box covered by the
   scan after its affine; an oblique affine is a one-line :class:`ScanWarning`, not an error;
3. content (:func:`check_content`): the brain box must not be (nearly) all zero or constant,
   which is what the encoder would otherwise receive after resampling and normalisation.

Scans reach the store and ``bench data check`` through :func:`load_gated_scan`; ``bench run``
checks the header and geometry of a task's scans (:func:`check_scans`) before it embeds any.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np

from bench.data.volumes import ScanLimits, check_header  # the header checks run as a scan is opened
from bench.errors import ScanError

__all__ = ["ScanLimits", "ScanWarning", "check_header", "check_geometry", "check_content", "check_scans",
           "load_gated_scan", "check_scan_header", "gate_report"]

#: Bounding box of the MNI152 brain mask (nilearn, 1 mm), in MNI world mm, per axis (lo, hi).
#: Every input space is centred on it (:data:`bench.data.spaces.MNI_BRAIN_CENTER`).
MNI_BRAIN_BOX_MM = ((-72.0, 72.0), (-107.0, 73.0), (-72.0, 82.0))

#: Spacing (mm) of the points of the brain box at which overlap and content are measured.
BOX_STEP_MM = 6.0

_PASSED_LOCK = threading.Lock()   # guards the per-process memos below (the store checks from threads)


class ScanWarning(UserWarning):
    """A scan is used but something about it deserves a look (an oblique affine)."""


# -- 1. header -------------------------------------------------------------------------------------
# -- 2. geometry -----------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def brain_box_points() -> np.ndarray:
    """(N, 4) homogeneous world points on a BOX_STEP_MM grid filling :data:`MNI_BRAIN_BOX_MM`."""
    axes = [np.arange(lo + BOX_STEP_MM / 2, hi, BOX_STEP_MM) for lo, hi in MNI_BRAIN_BOX_MM]
    xyz = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return np.c_[xyz, np.ones(len(xyz))]


def _box_ijk(shape: tuple[int, int, int], affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voxel coordinates of the brain-box points in the scan, and whether each lies inside it."""
    ijk = (brain_box_points() @ np.linalg.inv(affine).T)[:, :3]
    inside = np.all((ijk >= -0.5) & (ijk <= np.asarray(shape) - 0.5), axis=1)
    return ijk, inside


def fov_overlap(shape: tuple[int, int, int], affine: np.ndarray) -> float:
    """Fraction of the MNI brain box that the scan's field of view covers, after its affine."""
    return float(_box_ijk(shape, affine)[1].mean())


def obliquity_degrees(affine: np.ndarray) -> float:
    """Largest angle between a voxel axis and the nearest world axis (nibabel's obliquity)."""
    from nibabel.affines import obliquity

    return float(np.degrees(np.max(np.abs(obliquity(affine)))))


def check_geometry(path: Path, shape: tuple[int, int, int], affine: np.ndarray,
                   limits: ScanLimits | None = None, warn_once: bool = True) -> None:
    """Shape, voxel size and field of view, from the header; warn on an oblique affine (once per
    file and process unless ``warn_once`` is false: a run's header check and the store both look)."""
    from bench.data.spaces import source_spacing

    limits = limits or ScanLimits.from_env()
    if min(shape) < limits.min_dim:
        raise ScanError(f"{path}: image of shape {tuple(shape)} has fewer than {limits.min_dim} voxels along an "
                        "axis, too small to be a brain scan (a localiser, thumbnail or broken export?); "
                        "provide the full 3D volume")
    spacing = source_spacing(affine)
    if spacing.min() < limits.min_spacing_mm or spacing.max() > limits.max_spacing_mm:
        raise ScanError(f"{path}: voxel size {' x '.join(f'{v:g}' for v in spacing)} mm is outside "
                        f"{limits.min_spacing_mm:g}-{limits.max_spacing_mm:g} mm, not plausible for brain MRI; "
                        "fix the header's pixdim / sform (units?)")
    overlap = fov_overlap(shape, affine)
    if overlap < limits.min_fov_overlap:
        raise ScanError(f"{path}: its field of view covers {overlap:.0%} of the MNI brain box (at least "
                        f"{limits.min_fov_overlap:.0%} needed); the scan is not in MNI space or misses most "
                        "of the brain: register it (`bench data prepare`) or fix its sform")
    angle = obliquity_degrees(affine)
    if angle > limits.oblique_degrees and (_first_warning(path) or not warn_once):
        warnings.warn(ScanWarning(f"{path}: oblique affine ({angle:.1f} degrees off the MNI axes); it is "
                                  "resampled as it is, but the scan may not be MNI-aligned (`bench data prepare` "
                                  "registers it)"), stacklevel=2)


#: Files already warned about in this process (the run's header check and the store both look).
_WARNED: set[str] = set()


def _first_warning(path: Path) -> bool:
    """True the first time a file is warned about in this process."""
    key = str(Path(path).resolve())
    with _PASSED_LOCK:
        first = key not in _WARNED
        _WARNED.add(key)
    return first


# -- 3. content ------------------------------------------------------------------------------------
def check_content(path: Path, data: np.ndarray, affine: np.ndarray, limits: ScanLimits | None = None) -> None:
    """Refuse a brain box that is (nearly) all zero or constant: what the encoder would get."""
    limits = limits or ScanLimits.from_env()
    ijk, inside = _box_ijk(data.shape, affine)
    nearest = np.clip(np.rint(ijk[inside]), 0, np.asarray(data.shape) - 1).astype(int)
    values = data[tuple(nearest.T)]   # the brain box as nearest-neighbour resampling would see it
    nonzero = np.count_nonzero(values) / len(inside)
    if nonzero < limits.min_brain_fraction:
        what = "all zero" if not np.any(data) else f"{nonzero:.1%} non-zero"
        raise ScanError(f"{path}: the brain is {what} (at least {limits.min_brain_fraction:.0%} of the MNI brain "
                        "box must be non-zero); an empty scan would reach the encoder as zeros: re-export it "
                        "or remove it")
    if values.min() == values.max():
        raise ScanError(f"{path}: constant intensity {values.min():g} over the brain box; it would normalise to "
                        "zeros: re-export the scan or remove it")


# -- the gate --------------------------------------------------------------------------------------
@contextlib.contextmanager
def naming(who: str) -> Iterator[None]:
    """Prefix a ScanError raised inside with ``who`` (subject, session, sequence), still one line."""
    try:
        yield
    except ScanError as e:
        if not who:
            raise
        raise ScanError(f"{who}: {e}") from None


def load_gated_scan(path: str | os.PathLike, who: str = "", limits: ScanLimits | None = None,
                    warn_once: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Load a scan as (float32 3D array, affine) through every check of the gate.

    Header and geometry are checked before the voxels are read; ``who`` names the subject and
    session in the error where the caller knows them.
    """
    from bench.data.volumes import open_checked, read_checked

    path = Path(path)
    limits = limits or ScanLimits.from_env()
    with naming(who):
        img, shape, affine = open_checked(path)
        check_geometry(path, shape, affine, limits, warn_once)
        data = read_checked(path, img, shape)
        check_content(path, data, affine, limits)
    return data, affine


#: Files whose header passed, keyed by (path, size, mtime_ns, limits): checked once per process.
_PASSED: set[tuple] = set()


def check_scan_header(path: str | os.PathLike, who: str = "", limits: ScanLimits | None = None) -> None:
    """The header and geometry checks of :func:`load_gated_scan`, without reading a voxel."""
    from bench.data.volumes import open_checked

    path = Path(path)
    limits = limits or ScanLimits.from_env()
    with naming(who):
        try:
            st = path.stat()
        except OSError:
            st = None
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, limits) if st else None
        with _PASSED_LOCK:
            if key is not None and key in _PASSED:
                return
        _, shape, affine = open_checked(path)
        check_geometry(path, shape, affine, limits)
    if key is not None:
        with _PASSED_LOCK:
            _PASSED.add(key)


def scan_label(row) -> str:
    """``sub-X ses-Y SEQ`` of a cohort-table row, for error messages."""
    return f"{row['participant_id']} {row['session_id']} {row['sequence']}"


def check_scans(cohort, rows) -> None:
    """Header and geometry of the cohort rows a job reads, before any is embedded (first failure
    raised, naming subject, session and file)."""
    table = cohort.table
    for r in np.asarray(rows, dtype=int):
        row = table.loc[int(r)]
        check_scan_header(row["path"], scan_label(row))


def gate_report(cohort, progress: bool = True) -> tuple[list[str], list[str]]:
    """Every scan of the cohort through the whole gate: (one line per bad scan, one per warning)."""
    from bench.progress import progress_bar

    problems, notes = [], []
    limits = ScanLimits.from_env()
    with progress_bar(progress) as bar:
        task = bar.add_task("checking scans", total=len(cohort))
        for _, row in cohort.table.iterrows():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ScanWarning)
                try:
                    load_gated_scan(row["path"], scan_label(row), limits, warn_once=False)
                except ScanError as e:
                    problems.append(str(e))
            notes += [f"{scan_label(row)}: {w.message}" for w in caught if issubclass(w.category, ScanWarning)]
            bar.advance(task)
    return problems, notes
