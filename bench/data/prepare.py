"""``bench data prepare``: raw scans into the space the harness assumes (MNI, skull-stripped,
intensity-normalised). A deliberately simple pipeline, one SimpleITK call per step:

1. N4 bias-field correction (on a shrunk copy inside an Otsu head mask; the field is then
   evaluated at full resolution and divided out);
2. rigid, then (by default) affine registration to the MNI152 2009 T1 template that nilearn
   ships, by Mattes mutual information inside the dilated template brain mask, three
   resolution levels, moments-centred start;
3. resampling onto the template grid at ``resolution_mm``, masking with the template brain mask;
4. intensity normalisation: brain voxels divided by their 99th percentile, negatives set to 0,
   so the brain is 0..~1 and the background exactly 0.

It is no substitute for FreeSurfer, TurboPrep or HD-BET (the template mask does not follow an
individual brain's edge); users with such outputs can feed those instead.

Outputs mirror the input tree: ``OUT/<same path>.nii.gz`` (the prepared scan), and per scan
``OUT/derivatives/prepare/<same folder>/<stem>_xfm.tfm`` (the template -> native transform, ITK
format), ``<stem>_prepare.json`` (what was done, metric, time; written last, so it marks the
scan as done) and ``OUT/qc/<same folder>/<stem>.png`` (three orthogonal slices over the template
outline). Tables and sidecars (``.csv``, ``.tsv``, ``.json``) are copied, so a prepared release
can be imported like the raw one. A second run skips finished scans (resumable).

Label maps and masks (``_seg``, ``_dseg``, ``tumor_segmentation``, ``_mask``...) are not images:
they are left out, unless ``co_registered`` says each folder holds one co-registered set (BraTS,
UCSF-PDGM cases): then the folder's T1-weighted image is registered and every other image and
label map in it is moved with the same transform (labels by nearest neighbour).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from bench.errors import MribenchError

#: File names that are label maps or masks, not images: never bias-corrected or registered alone.
LABEL_WORDS = ("_seg", "dseg", "segmentation", "_mask", "label", "_aseg", "_pve")
COPIED_SUFFIXES = (".csv", ".tsv", ".json", ".xls", ".xlsx", ".txt")


@dataclass(frozen=True)
class PrepareConfig:
    """How scans are prepared; recorded in each scan's ``_prepare.json``."""

    resolution_mm: float = 1.0
    registration: str = "affine"          # "rigid" or "affine"
    n4: bool = True
    threads: int | None = None            # SimpleITK threads; None = all cores
    n4_grid_mm: float = 4.0               # N4 fits on a copy shrunk to about this voxel size
    n4_iterations: tuple[int, ...] = (50, 40, 30)
    iterations: int = 150                 # optimiser iterations per resolution level
    sampling: float = 0.25                # fraction of fixed-mask voxels the metric samples
    seed: int = 0                         # seed of that sampling (threaded ITK sums may still vary a little)
    co_registered: bool = False           # each folder is one co-registered set (see prepare_tree)

    def __post_init__(self) -> None:
        if self.registration not in ("rigid", "affine"):
            raise MribenchError(f"registration must be 'rigid' or 'affine', not {self.registration!r}")
        if not 0.5 <= self.resolution_mm <= 8:
            raise MribenchError(f"--resolution {self.resolution_mm} mm: use 0.5 to 8 mm")


@dataclass
class PrepareSummary:
    done: int = 0
    skipped: int = 0                      # already prepared (resume)
    not_images: list[str] = field(default_factory=list)   # label maps, 4D series
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        return (f"prepared {self.done} scan(s), {self.skipped} already done, {len(self.not_images)} not prepared "
                f"(label maps / not 3D), {len(self.failed)} failed, in {self.seconds:.1f} s")


# -- template ----------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def _template_arrays(resolution_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T1, brain mask, affine) of nilearn's MNI152 2009 template on a ``resolution_mm`` grid."""
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    res = resolution_mm if resolution_mm != int(resolution_mm) else int(resolution_mm)
    t1 = load_mni152_template(resolution=res)
    mask = load_mni152_brain_mask(resolution=res)
    return (np.asarray(t1.get_fdata(), np.float32), np.asarray(mask.get_fdata() > 0, np.uint8),
            np.asarray(t1.affine, np.float64))


def template(resolution_mm: float):
    """(T1, brain mask) of the template as SimpleITK images on the output grid."""
    t1, mask, affine = _template_arrays(float(resolution_mm))
    return to_sitk(t1, affine), to_sitk(mask, affine)


# -- conversions between nibabel (RAS) and SimpleITK (LPS) -----------------------------------------
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def to_sitk(data: np.ndarray, affine: np.ndarray):
    """A SimpleITK image from a RAS voxel->world ``affine`` (ITK works in LPS, arrays as z, y, x)."""
    import SimpleITK as sitk

    lin = _RAS_TO_LPS @ np.asarray(affine, float)[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data).transpose(2, 1, 0)))
    img.SetSpacing(spacing.tolist())
    img.SetOrigin((_RAS_TO_LPS @ np.asarray(affine, float)[:3, 3]).tolist())
    img.SetDirection((lin / spacing).flatten().tolist())
    return img


def from_sitk(img) -> tuple[np.ndarray, np.ndarray]:
    """(array in x, y, z order, RAS affine) of a SimpleITK image."""
    import SimpleITK as sitk

    direction = np.array(img.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = _RAS_TO_LPS @ direction @ np.diag(img.GetSpacing())
    affine[:3, 3] = _RAS_TO_LPS @ np.array(img.GetOrigin())
    return sitk.GetArrayFromImage(img).transpose(2, 1, 0), affine


# -- the steps ------------------------------------------------------------------------------------
def n4_correct(img, cfg: PrepareConfig):
    """N4 on a shrunk copy inside an Otsu head mask; the full-resolution field is divided out."""
    import SimpleITK as sitk

    img = sitk.Cast(img, sitk.sitkFloat32)
    lo = float(sitk.GetArrayViewFromImage(img).min())
    positive = img - lo + 1e-3 if lo <= 0 else img        # N4 works on log intensities
    head = sitk.OtsuThreshold(positive, 0, 1, 200)
    head = sitk.BinaryMorphologicalClosing(head, [2, 2, 2])
    shrink = max(1, int(round(cfg.n4_grid_mm / min(img.GetSpacing()))))
    small = sitk.Shrink(positive, [shrink] * 3)
    small_mask = sitk.Shrink(head, [shrink] * 3)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations(list(cfg.n4_iterations))
    n4.Execute(small, small_mask)
    log_field = n4.GetLogBiasFieldAsImage(positive)
    return sitk.Cast(positive / sitk.Exp(log_field), sitk.sitkFloat32)


def register(fixed, fixed_mask, moving, cfg: PrepareConfig):
    """Transform mapping template points to the moving scan's points (rigid, then affine)."""
    import SimpleITK as sitk

    moving = sitk.Cast(moving, sitk.sitkFloat32)
    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    region = sitk.BinaryDilate(sitk.Cast(fixed_mask, sitk.sitkUInt8), [3, 3, 3])
    start = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                              sitk.CenteredTransformInitializerFilter.MOMENTS)
    rigid, metric = _optimise(fixed, region, moving, start, cfg)
    if cfg.registration == "rigid":
        return rigid, metric
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    affine.SetCenter(rigid.GetCenter())
    return _optimise(fixed, region, moving, affine, cfg)


def _optimise(fixed, region, moving, initial, cfg: PrepareConfig):
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricFixedMask(region)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(cfg.sampling, cfg.seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4, numberOfIterations=cfg.iterations,
                                                 relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(initial, inPlace=False)
    out = reg.Execute(fixed, moving)
    if hasattr(out, "GetNthTransform"):  # a composite of one transform: unwrap it
        out = out.GetNthTransform(0) if out.GetNumberOfTransforms() == 1 else out
    return out, float(reg.GetMetricValue())


def normalise(volume: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Brain voxels over their 99th percentile, negatives to 0; background exactly 0."""
    brain = volume[mask > 0]
    scale = float(np.percentile(brain, 99)) if brain.size else 0.0
    if not scale > 0:
        raise MribenchError("the registered scan is empty inside the template brain mask; check the QC figure")
    return np.where(mask > 0, np.clip(volume / scale, 0.0, None), 0.0).astype(np.float32)


def _read(src: Path, cfg: PrepareConfig):
    import SimpleITK as sitk

    if cfg.threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(cfg.threads))
    try:
        img = sitk.ReadImage(str(src), sitk.sitkFloat32)
    except RuntimeError as e:
        raise MribenchError(f"{src}: not readable by SimpleITK ({' '.join(str(e).split())[:120]})") from None
    if img.GetDimension() != 3:
        raise MribenchError(f"{src}: {img.GetDimension()}D image; prepare takes 3D scans")
    return img


def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, dtype) -> None:
    import gzip

    import nibabel as nib

    from bench.atomic import atomic_write_bytes

    img = nib.Nifti1Image(data.astype(dtype), affine)
    img.set_data_dtype(dtype)
    atomic_write_bytes(path, gzip.compress(img.to_bytes(), compresslevel=6, mtime=0), mode=0o644)


def _write_transform(transform, path: Path) -> None:
    import SimpleITK as sitk

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tfm")
    sitk.WriteTransform(transform, str(tmp))
    os.replace(tmp, path)


def prepare_scan(src: Path, dst: Path, transform_path: Path, qc_path: Path, cfg: PrepareConfig,
                 transform=None, reference: str | None = None) -> dict:
    """Prepare one scan; return what its ``_prepare.json`` records. Raises MribenchError on failure.

    With ``transform`` (a co-registered sibling's, see :func:`prepare_tree`) the scan is moved
    with it instead of being registered itself.
    """
    import SimpleITK as sitk

    from bench.data.prepare_qc import qc_figure

    start = time.perf_counter()
    img = _read(src, cfg)
    fixed, mask = template(cfg.resolution_mm)
    corrected = n4_correct(img, cfg) if cfg.n4 else img
    metric = None
    if transform is None:
        transform, metric = register(fixed, mask, corrected, cfg)
    moved = sitk.Resample(corrected, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    data, affine = from_sitk(moved)
    mask_arr, _ = from_sitk(mask)
    _write_nifti(dst, normalise(data, mask_arr), affine, np.float32)
    _write_transform(transform, transform_path)
    # the QC shows the registered scan before masking: brain outside the outline means a bad fit
    how = f"Mattes MI metric {metric:.3f}" if metric is not None else f"moved with {reference}"
    qc_figure(data, mask_arr, qc_path, title=f"{src.name}  ({how})")
    return {"source": src.name, "config": asdict(cfg), "registration_metric": metric, "transform_of": reference,
            "template": f"MNI152 2009 (nilearn) at {cfg.resolution_mm:g} mm",
            "seconds": round(time.perf_counter() - start, 2)}


def move_labels(src: Path, dst: Path, transform, cfg: PrepareConfig, reference: str) -> dict:
    """A label map moved with its image's transform: nearest neighbour, values kept, no mask."""
    import SimpleITK as sitk

    start = time.perf_counter()
    labels = sitk.Cast(sitk.Round(_read(src, cfg)), sitk.sitkUInt8)
    fixed, _ = template(cfg.resolution_mm)
    moved = sitk.Resample(labels, fixed, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    data, affine = from_sitk(moved)
    _write_nifti(dst, data, affine, np.uint8)
    return {"source": src.name, "config": asdict(cfg), "transform_of": reference, "label_map": True,
            "seconds": round(time.perf_counter() - start, 2)}


# -- the tree -------------------------------------------------------------------------------------
#: In a co-registered folder, the image registered to the template: T1-weighted first.
REFERENCE_PREFERENCE = ("t1w", "_t1.", "_t1_", "-t1n", "mprage", "t1")


def _is_nifti(p: Path) -> bool:
    return p.name.lower().endswith((".nii", ".nii.gz"))


def _stem(p: Path) -> str:
    name = p.name
    return name[:-7] if name.lower().endswith(".nii.gz") else name[:-4]


def _is_label(p: Path) -> bool:
    return any(w in p.name.lower() for w in LABEL_WORDS)


def outputs(inp: Path, src: Path, out: Path) -> tuple[Path, Path, Path, Path]:
    """(prepared scan, transform, marker json, QC png) of ``src`` under ``out``."""
    rel = src.relative_to(inp)
    stem = _stem(src)
    deriv = out / "derivatives" / "prepare" / rel.parent
    return (out / rel.parent / f"{stem}.nii.gz", deriv / f"{stem}_xfm.tfm", deriv / f"{stem}_prepare.json",
            out / "qc" / rel.parent / f"{stem}.png")


def _reference(images: list[Path]) -> Path:
    """The folder's image to register: the first T1-weighted one (never a contrast-enhanced T1)."""
    for word in REFERENCE_PREFERENCE:
        hits = [p for p in images if word in p.name.lower()
                and not any(c in p.name.lower() for c in ("t1c", "t1ce", "t1gd"))]
        if hits:
            return hits[0]
    return images[0]


def _jobs(inp: Path, files: list[Path], cfg: PrepareConfig, summary: PrepareSummary) -> list[tuple[Path, Path | None]]:
    """(file, reference whose transform it reuses or None) in an order where references come first."""
    niftis = [p for p in files if _is_nifti(p)]
    if not cfg.co_registered:
        for f in niftis:
            if _is_label(f):
                summary.not_images.append(f"{f.relative_to(inp)}: label map or mask (use --co-registered to move "
                                          "it with its folder's image)")
        return [(f, None) for f in niftis if not _is_label(f)]
    jobs = []
    for folder in sorted({f.parent for f in niftis}):
        members = [f for f in niftis if f.parent == folder]
        images = [f for f in members if not _is_label(f)]
        if not images:
            summary.not_images += [f"{f.relative_to(inp)}: label map without an image in its folder" for f in members]
            continue
        ref = _reference(images)
        jobs.append((ref, None))
        jobs += [(f, ref) for f in members if f != ref]
    return jobs


def _copy_tables(inp: Path, out: Path, files: list[Path]) -> None:
    """Tables and sidecars travel with the scans (copied once)."""
    for f in files:
        if f.suffix.lower() in COPIED_SUFFIXES:
            target = out / f.relative_to(inp)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, target)


def prepare_tree(inp: Path, out: Path, cfg: PrepareConfig | None = None, *, force: bool = False,
                 progress: bool = True) -> PrepareSummary:
    """Prepare every 3D scan under ``inp`` into ``out`` (see the module docstring); resumable.

    With ``cfg.co_registered`` each folder is one co-registered set (BraTS, UCSF-PDGM): its
    T1-weighted image is registered, and every other image and label map of the folder is moved
    with that transform (label maps by nearest neighbour), so masks and tumour labels stay aligned.
    """
    from bench.atomic import atomic_write_bytes
    from bench.progress import progress_bar

    cfg = cfg or PrepareConfig()
    inp, out = Path(inp).resolve(), Path(out).resolve()
    if not inp.is_dir():
        raise MribenchError(f"{inp}: not a folder of scans")
    if out == inp or inp in out.parents:
        raise MribenchError(f"--out {out} must not be --in or inside it (outputs would be read as inputs)")
    try:
        import SimpleITK as sitk
    except ImportError:
        raise MribenchError("bench data prepare needs SimpleITK: pip install 'mribench[prepare]'") from None
    start = time.perf_counter()
    summary = PrepareSummary()
    files = sorted(p for p in inp.rglob("*") if p.is_file())
    _copy_tables(inp, out, files)
    jobs = _jobs(inp, files, cfg, summary)
    failed_refs: set[Path] = set()
    with progress_bar(progress) as bar:
        task = bar.add_task("preparing scans", total=len(jobs))
        for f, ref in jobs:
            dst, xfm, marker, qc = outputs(inp, f, out)
            if marker.is_file() and dst.is_file() and not force:
                summary.skipped += 1
                bar.advance(task)
                continue
            try:
                if ref is not None and ref in failed_refs:
                    raise MribenchError(f"{f}: not moved, its folder's reference {ref.name} failed")
                transform = None if ref is None else sitk.ReadTransform(str(outputs(inp, ref, out)[1]))
                if _is_label(f):
                    info = move_labels(f, dst, transform, cfg, ref.name)
                else:
                    info = prepare_scan(f, dst, xfm, qc, cfg, transform, None if ref is None else ref.name)
            except (MribenchError, RuntimeError) as e:  # RuntimeError: ITK (e.g. a registration that cannot start)
                if ref is None:
                    failed_refs.add(f)
                msg = " ".join(str(e).split())[:240]
                if "D image; prepare takes 3D" in msg:
                    summary.not_images.append(msg)
                else:
                    summary.failed.append(msg if str(f) in msg else f"{f}: {msg}")
            else:
                atomic_write_bytes(marker, (json.dumps(info, indent=2) + "\n").encode(), mode=0o644)
                summary.done += 1
            bar.advance(task)
    summary.seconds = time.perf_counter() - start
    return summary
