"""``bench data prepare`` recovers a deliberately misaligned, bias-corrupted scan.

The scan is the MNI152 template itself, rotated (6, -4, 10 degrees), shifted (8, -6, 5 mm) and
multiplied by a smooth bias field (x0.48..x1.49), so the truth is known exactly: the transform
prepare estimates (template -> scan) must equal the inverse of the corruption, and the white
matter must come out as even as in the template. A brain mask drawn on the corrupted scan sits in
the same folder and must be moved with the scan's transform. Run at 4 mm to stay fast.
"""

from __future__ import annotations

import json
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest

from bench.cli import main
from bench.data.prepare import PrepareConfig, _template_arrays, from_sitk, outputs, prepare_tree, to_sitk

pytestmark = pytest.mark.slow

#: low resolution, a coarse N4 grid and fewer iterations: seconds instead of a minute per scan
FAST = PrepareConfig(resolution_mm=4, threads=2, n4_grid_mm=6, n4_iterations=(40, 30, 20), iterations=100,
                     sampling=0.15, co_registered=True)
CENTER_LPS = (0.0, 17.0, 5.0)          # MNI brain centre (0, -17, 5) RAS in ITK's LPS


def _corruption():
    import SimpleITK as sitk

    t = sitk.Euler3DTransform()
    t.SetCenter(CENTER_LPS)
    t.SetRotation(*np.deg2rad([6.0, -4.0, 10.0]))
    t.SetTranslation((8.0, -6.0, 5.0))
    return t


def _bias(xyz: np.ndarray) -> np.ndarray:
    """Smooth multiplicative field over the head (world mm), 0.48..1.49 inside the brain."""
    return np.exp(0.30 * xyz[..., 0] / 70 + 0.25 * xyz[..., 1] / 90 - 0.25 * ((xyz[..., 2] - 5) / 60) ** 2)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    import SimpleITK as sitk

    root = tmp_path_factory.mktemp("prepare")
    t1, _, affine = _template_arrays(2.0)
    moved = sitk.Resample(to_sitk(t1, affine), to_sitk(t1, affine), _corruption(), sitk.sitkLinear, 0.0)
    data, aff = from_sitk(moved)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in data.shape], indexing="ij"), -1)
    corrupted = (data * _bias(ijk @ aff[:3, :3].T + aff[:3, 3])).astype(np.float32)
    inp = root / "in"
    scan = inp / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    scan.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(corrupted, aff), scan)
    nib.save(nib.Nifti1Image((corrupted > 0.3).astype(np.uint8), aff), scan.with_name("sub-01_desc-brain_mask.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 3), np.float32), aff), inp / "sub-01" / "sub-01_bold.nii.gz")
    (inp / "participants.tsv").write_text("participant_id\tage\tsex\nsub-01\t70\tF\n")
    out = root / "out"
    summary = prepare_tree(inp, out, FAST, progress=False)
    return inp, out, scan, corrupted, aff, summary


def test_round_trip_between_nibabel_and_simpleitk():
    rng = np.random.default_rng(0)
    affine = np.array([[0.0, -1.2, 0.1, 30.0], [0.9, 0.0, 0.0, -20.0], [0.0, 0.2, 2.0, 5.0], [0, 0, 0, 1]])
    data = rng.random((5, 6, 7)).astype(np.float32)
    back, back_affine = from_sitk(to_sitk(data, affine))
    assert np.array_equal(back, data) and np.allclose(back_affine, affine)


def test_prepare_recovers_alignment_and_flattens_bias(prepared):
    import SimpleITK as sitk
    from nilearn.datasets import load_mni152_wm_template

    inp, out, scan, corrupted, aff, summary = prepared
    assert (summary.done, summary.skipped, len(summary.failed)) == (2, 0, 0)   # the scan and its mask
    dst, xfm, marker, qc = outputs(inp, scan, out)
    # residual alignment: estimated template->scan map vs the true one, over template brain voxels
    t1, mask, t_aff = _template_arrays(4.0)
    points = (np.argwhere(mask > 0) @ t_aff[:3, :3].T + t_aff[:3, 3]) * np.array([-1.0, -1.0, 1.0])
    estimate, truth = sitk.ReadTransform(str(xfm)), _corruption().GetInverse()
    err = np.array([np.linalg.norm(np.subtract(estimate.TransformPoint(p), truth.TransformPoint(p)))
                    for p in map(tuple, points)])
    # bias: coefficient of variation of white matter (template WM probability > 0.9)
    wm = load_mni152_wm_template(resolution=4).get_fdata() > 0.9
    aligned = from_sitk(sitk.Resample(to_sitk(corrupted, aff), to_sitk(t1, t_aff), truth, sitk.sitkLinear, 0.0))[0]
    result = np.asarray(nib.load(dst).dataobj)

    def cv(v):
        return float(v[wm].std() / v[wm].mean())

    print(f"\nresidual alignment error: mean {err.mean():.2f} mm, max {err.max():.2f} mm over {len(err)} brain "
          f"voxels; white-matter CV: template {cv(t1):.3f}, corrupted {cv(aligned):.3f}, prepared {cv(result):.3f}")
    assert err.mean() < 1.0 and err.max() < 2.0      # voxels are 4 mm
    assert cv(aligned) > 0.15 and cv(result) < 0.04 and cv(result) < cv(aligned) / 4
    # outputs: template grid, background exactly 0, brain normalised to ~0..1
    assert result.shape == t1.shape and np.allclose(nib.load(dst).affine, t_aff)
    assert (result[mask == 0] == 0).all() and 0.9 < np.percentile(result[mask > 0], 99) < 1.1
    info = json.loads(marker.read_text())
    assert info["config"]["registration"] == "affine" and info["registration_metric"] < -0.5
    assert qc.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and qc.stat().st_size > 5000
    # the mask drawn on the corrupted scan, moved with the scan's transform, lands on the template's
    moved = np.asarray(nib.load(outputs(inp, scan.with_name("sub-01_desc-brain_mask.nii.gz"), out)[0]).dataobj)
    dice = 2 * ((moved > 0) & (mask > 0)).sum() / ((moved > 0).sum() + (mask > 0).sum())
    print(f"moved brain mask vs template brain mask: Dice {dice:.3f}")
    assert moved.dtype == np.uint8 and set(np.unique(moved)) == {0, 1} and dice > 0.9


def test_prepare_is_resumable_and_skips_what_is_not_a_scan(prepared, capsys):
    inp, out, scan, *_ = prepared
    summary = prepared[-1]
    assert [s.split(":")[0] for s in summary.not_images] == [str(inp / "sub-01" / "sub-01_bold.nii.gz")]  # 4D
    assert (out / "participants.tsv").read_text().startswith("participant_id")   # tables travel along
    dst = outputs(inp, scan, out)[0]
    before = dst.stat().st_mtime_ns
    assert main(["data", "prepare", "--in", str(inp), "--out", str(out), "--resolution", "4", "--co-registered",
                 "--no-progress"]) == 0
    assert "prepared 0 scan(s), 2 already done" in capsys.readouterr().out
    separate = prepare_tree(inp, out, replace(FAST, co_registered=False), progress=False)
    assert separate.skipped == 1 and "sub-01_desc-brain_mask.nii.gz: label map or mask" in separate.not_images[0]
    assert dst.stat().st_mtime_ns == before
    assert main(["data", "prepare", "--in", str(inp), "--out", str(inp / "sub-01")]) == 2   # out inside in
