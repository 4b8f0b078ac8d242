"""Trust, inputs (issue 19, items 6-7): the scan sanity gate, the cohort readers' value checks and the
command line's argument checks; every bad input stops with one line naming what to fix."""

from __future__ import annotations

import gzip
import json
import re
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.errors import CohortError, ScanError


def load_gated_scan(*args, **kwargs):
    """bench.data.sanity.load_gated_scan, imported when called (each test fails on its own without it)."""
    from bench.data.sanity import load_gated_scan

    return load_gated_scan(*args, **kwargs)

# -- 6. the scan sanity gate -----------------------------------------------------------------------
SHAPE = (40, 48, 40)
SPACING = 4.0     # 160 x 192 x 160 mm around the MNI brain centre: covers the brain box


def mni_affine(shape=SHAPE, spacing=SPACING, shift=(0.0, 0.0, 0.0)) -> np.ndarray:
    a = np.diag([spacing] * 3 + [1.0])
    a[:3, 3] = np.array([0.0, -17.0, 5.0]) + np.asarray(shift) - spacing * (np.asarray(shape) - 1) / 2
    return a


def brain(shape=SHAPE, seed: int = 0) -> np.ndarray:
    """An ellipsoidal 'brain' filling most of the grid, with noise (what a skull-stripped scan looks like)."""
    grid = np.indices(shape).astype(np.float32)
    centre = (np.asarray(shape) - 1)[:, None, None, None] / 2
    r = np.sqrt((((grid - centre) / (0.45 * np.asarray(shape)[:, None, None, None])) ** 2).sum(0))
    rng = np.random.default_rng(seed)
    return np.where(r < 1, 100 + 10 * rng.standard_normal(shape), 0).astype(np.float32)


def save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, mni_affine(data.shape[:3]) if affine is None else affine), str(path))
    return path


def oblique_affine(degrees: float = 10.0) -> np.ndarray:
    t = np.radians(degrees)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    a = mni_affine()
    a[:3, :3] = rot @ a[:3, :3]
    centre = (np.asarray(SHAPE) - 1) / 2
    a[:3, 3] = np.array([0.0, -17.0, 5.0]) - a[:3, :3] @ centre
    return a


BAD_SCANS = {
    "all-zero": (lambda p: save(p, np.zeros(SHAPE, np.float32)), r"the brain is all zero"),
    "nearly-zero": (lambda p: save(p, np.pad(np.ones((2, 2, 2), np.float32), ((19, 19), (23, 23), (19, 19)))),
                    r"the brain is 0\.\d% non-zero"),
    "constant": (lambda p: save(p, np.full(SHAPE, 7.0, np.float32)), r"constant intensity 7"),
    "one-voxel": (lambda p: save(p, np.ones((1, 1, 1), np.float32)), r"shape \(1, 1, 1\) has fewer than 16"),
    "2x2x2": (lambda p: save(p, np.ones((2, 2, 2), np.float32)), r"shape \(2, 2, 2\) has fewer than 16"),
    "out-of-fov": (lambda p: save(p, brain(), mni_affine(shift=(0, 300.0, 0))),
                   r"covers 0% of the MNI brain box"),
    "half-out-of-fov": (lambda p: save(p, brain(), mni_affine(shift=(0, 0, 110.0))),
                        r"covers \d+% of the MNI brain box"),
    "voxel-size": (lambda p: save(p, brain(), mni_affine(spacing=0.01)), r"voxel size 0\.01 x 0\.01 x 0\.01 mm"),
    "complex": (lambda p: save(p, brain().astype(np.complex64)), r"complex-valued voxels \(complex64\)"),
}


@pytest.mark.parametrize("name", sorted(BAD_SCANS))
def test_unusable_scans_are_refused_with_one_line_naming_the_file(tmp_path, name):
    make, message = BAD_SCANS[name]
    path = make(tmp_path / f"{name}.nii.gz")
    with pytest.raises(ScanError, match=message) as info:
        load_gated_scan(path, "sub-01 ses-M00 T1w")
    text = str(info.value)
    assert text.startswith(f"sub-01 ses-M00 T1w: {path}: ") and "\n" not in text


def test_a_good_scan_passes_and_loads_unchanged(tmp_path):
    data = brain()
    loaded, affine = load_gated_scan(save(tmp_path / "good.nii.gz", data))
    np.testing.assert_array_equal(loaded, data)
    np.testing.assert_allclose(affine, mni_affine())


def test_oblique_affine_warns_in_one_line_and_loads(tmp_path):
    from bench.data.sanity import ScanWarning

    path = save(tmp_path / "oblique.nii.gz", brain(), oblique_affine(10))
    with pytest.warns(ScanWarning, match=r"oblique\.nii\.gz: oblique affine \(10\.0 degrees off the MNI axes\)"):
        data, _ = load_gated_scan(path)
    assert data.shape == SHAPE
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScanWarning)
        load_gated_scan(save(tmp_path / "straight.nii.gz", brain()))   # axis-aligned: no warning


def _huge_header(path: Path, shape: tuple[int, int, int]) -> Path:
    """A small .nii.gz whose header declares ``shape`` (the voxels are not there: reading would fail)."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    header.set_sform(np.eye(4), code=1)
    header.set_qform(np.eye(4), code=1)
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + bytes(1000)))
    return path


@pytest.mark.parametrize("side", [1000, 4000])
def test_size_limit_is_checked_from_the_header_before_reading(tmp_path, monkeypatch, side):
    import bench.data.volumes as volumes

    def never(*args, **kwargs):
        raise AssertionError("voxels were read before the size check")

    monkeypatch.setattr(volumes, "_read_data", never)
    path = _huge_header(tmp_path / f"huge{side}.nii.gz", (side, side, side))
    with pytest.raises(ScanError, match=rf"huge{side}\.nii\.gz: header declares {side} x {side} x {side} = "
                                        r"[\d,]+ voxels .* over the limit of 134,217,728 voxels"):
        load_gated_scan(path)
    with pytest.raises(ScanError, match="over the limit"):   # the plain loader (labels too) checks it
        volumes.load_scan(path)
    monkeypatch.setenv("MRIBENCH_SCAN_MAX_VOXELS", str(side ** 3))
    monkeypatch.setenv("MRIBENCH_SCAN_MAX_GIB", "1e6")
    with pytest.raises(AssertionError, match="voxels were read"):   # the limits are configurable
        volumes.load_scan(path)


def _manifest(tmp_path: Path, scans: dict[str, Path]) -> Path:
    rows = [{"participant_id": f"sub-{i:02d}", "session_id": "ses-M00", "sequence": "T1w", "path": str(p),
             "months_from_baseline": 0, "age": 70, "sex": "F", "site": "A"} for i, p in enumerate(scans.values())]
    path = tmp_path / "cohort.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_bench_data_check_lists_every_bad_scan_in_one_line_each(tmp_path, capsys):
    scans = {"good": save(tmp_path / "scans" / "good.nii.gz", brain())}
    for name in ("all-zero", "2x2x2", "out-of-fov", "complex"):
        scans[name] = BAD_SCANS[name][0](tmp_path / "scans" / f"{name}.nii.gz")
    scans["oblique"] = save(tmp_path / "scans" / "oblique.nii.gz", brain(), oblique_affine(10))
    assert main(["data", "check", "--cohort", str(_manifest(tmp_path, scans)), "--no-progress"]) == 1
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert len(errors) == 4
    for i, name in enumerate(scans):
        if name in ("good", "oblique"):
            assert f"{name}.nii.gz" not in " ".join(errors)
        else:
            assert sum(f"sub-{i:02d} ses-M00 T1w: {scans[name]}" in line for line in errors) == 1
    assert sum("warning" in line and "oblique.nii.gz: oblique affine" in line for line in err.splitlines()) == 1
    assert "6 scans checked, 4 problem(s), 1 warning(s)" in out


def test_the_store_and_the_run_gate_refuse_a_bad_scan_before_embedding(tmp_path):
    from bench.data import sanity
    from bench.data.manifest import read_manifest
    from bench.data.store import VolumeStore

    scans = {"good": save(tmp_path / "scans" / "good.nii.gz", brain()),
             "zero": save(tmp_path / "scans" / "zero.nii.gz", np.zeros(SHAPE, np.float32)),
             "tiny": save(tmp_path / "scans" / "tiny.nii.gz", np.ones((2, 2, 2), np.float32))}
    store = VolumeStore(tmp_path / "store")
    assert store.get(scans["good"], "cpu-small").shape == (64, 64, 64)
    with pytest.raises(ScanError, match=r"zero\.nii\.gz: the brain is all zero"):
        store.prefetch([scans["good"], scans["zero"]], "cpu-small", progress=False)
    cohort = read_manifest(_manifest(tmp_path, scans))
    sanity.check_scans(cohort, [0])
    with pytest.raises(ScanError, match=r"^sub-02 ses-M00 T1w: .*tiny\.nii\.gz: image of shape \(2, 2, 2\)"):
        sanity.check_scans(cohort, [0, 1, 2])
    with pytest.raises(ScanError, match=r"^sub-01 ses-M00 T1w: .*zero\.nii\.gz: the brain is all zero"):
        cohort.load(1)


# -- 7. cohort tables: values checked, one line naming file, subject and session -------------------
def _bids(tmp_path: Path, participants: str, sessions: str | None = "session_id\tmonths_from_baseline\n"
          "ses-M00\t0\n") -> Path:
    root = tmp_path / "ds"
    (root / "sub-01" / "ses-M00" / "anat").mkdir(parents=True)
    save(root / "sub-01" / "ses-M00" / "anat" / "sub-01_ses-M00_T1w.nii.gz", brain((16, 16, 16)))
    (root / "participants.tsv").write_text(participants)
    if sessions is not None:
        (root / "sub-01" / "sub-01_sessions.tsv").write_text(sessions)
    return root


@pytest.mark.parametrize("participants, sessions, message", [
    ("participant_id\tage\tsex\nsub-01\tabc\tF\n", None,
     r"participants\.tsv: sub-01 has no numeric 'age' \(got 'abc'\)"),
    ("participant_id\tage\tsex\nsub-01\t-5\tF\n", None, r"participants\.tsv: sub-01 has age -5"),
    ("participant_id\tage\tsex\nsub-01\t9999\tF\n", None, r"participants\.tsv: sub-01 has age 9999"),
    ("participant_id\tage\tsex\nsub-01\tinf\tF\n", None, r"participants\.tsv: sub-01 has age inf"),
    ("", None, r"participants\.tsv: empty file"),
    ("participant_id\tage\tsex\n", None, r"participants\.tsv: no rows"),
    ("participant_id\tage\tsex\nsub-01\t70\tF\n", "", r"sub-01_sessions\.tsv: empty file"),
    ("participant_id\tage\tsex\nsub-01\t70\tF\n", "session_id\tmonths_from_baseline\nses-M00\t-30\n",
     r"sub-01_sessions\.tsv: sub-01 ses-M00 has months_from_baseline -30"),
    ("participant_id\tage\tsex\nsub-01\t70\tF\n", "session_id\tmonths_from_baseline\nses-M00\tsoon\n",
     r"sub-01_sessions\.tsv: sub-01 ses-M00 has no numeric 'months_from_baseline' \(got 'soon'\)"),
    ("participant_id\tage\tsex\nsub-01\t70\tF\n", "session_id\tage\nses-M00\t130\n",
     r"sub-01_sessions\.tsv: sub-01 ses-M00 has age 130"),
])
def test_bids_values_are_checked_naming_file_subject_and_session(tmp_path, participants, sessions, message):
    from bench.data.bids import read_bids

    root = _bids(tmp_path, participants, sessions)
    with pytest.raises(CohortError, match=message) as info:
        read_bids(root)
    assert "\n" not in str(info.value)


def _manifest_text(tmp_path: Path, text: str) -> Path:
    scan = save(tmp_path / "scan.nii.gz", brain((16, 16, 16)))
    path = tmp_path / "m.csv"
    path.write_text(text.replace("SCAN", str(scan)))
    return path


HEADER = "participant_id,session_id,sequence,path,months_from_baseline,age,sex,site\n"


@pytest.mark.parametrize("text, message", [
    ("", r"m\.csv: empty file"),
    (HEADER, r"m\.csv: no rows"),
    (HEADER + "sub-01,ses-M00,T1w,,0,70,F,A\n", r"m\.csv: sub-01 ses-M00 has an empty path"),
    (HEADER + "sub-01,ses-M00,T1w,SCAN,0,inf,F,A\n", r"m\.csv: sub-01 ses-M00 has age inf"),
    (HEADER + "sub-01,ses-M00,T1w,SCAN,0,abc,F,A\n", r"m\.csv: sub-01 ses-M00 has no numeric 'age' \(got 'abc'\)"),
    (HEADER + "sub-01,ses-M00,T1w,SCAN,-30,70,F,A\n", r"m\.csv: sub-01 ses-M00 has months_from_baseline -30"),
    (HEADER + "sub-01,ses-M00,T1w,SCAN,nan,70,F,A\n",
     r"m\.csv: sub-01 ses-M00 has no numeric 'months_from_baseline' \(empty\)"),
])
def test_manifest_values_are_checked_naming_file_subject_and_session(tmp_path, text, message):
    from bench.data.manifest import read_manifest

    with pytest.raises(CohortError, match=message) as info:
        read_manifest(_manifest_text(tmp_path, text))
    assert "\n" not in str(info.value)


def test_cohort_table_refuses_out_of_range_values_from_any_source():
    from bench.data.cohort import validate_table

    row = {"participant_id": "sub-01", "session_id": "ses-M00", "sequence": "T1w", "path": "/x.nii.gz",
           "months_from_baseline": 0.0, "age": 70.0, "sex": "F", "site": "A"}
    validate_table(pd.DataFrame([row]), "src")
    for change, message in (({"age": 121.0}, r"src: sub-01 ses-M00 has age 121"),
                            ({"age": float("-inf")}, r"src: sub-01 ses-M00 has age -inf"),
                            ({"months_from_baseline": -1.0}, r"src: sub-01 ses-M00 has months_from_baseline -1")):
        with pytest.raises(CohortError, match=message):
            validate_table(pd.DataFrame([{**row, **change}]), "src")
    with pytest.raises(CohortError, match="src: the cohort table has no rows"):
        validate_table(pd.DataFrame([row]).iloc[:0], "src")


# -- 7. progress of fine-tuning and of the segmentation decoder --------------------------------------
def test_segmentation_decoder_shows_progress_with_the_validation_loss(capsys):
    import torch

    from bench.protocols.segmentation import fit_decoder

    labels = torch.zeros((6, 16, 16, 16), dtype=torch.int64)
    labels[:, 4:10, 4:10, 4:10] = 1
    maps_of = lambda idx: [torch.nn.functional.one_hot(labels[idx], 2).permute(0, 4, 1, 2, 3).float()]  # noqa: E731
    fit_decoder(maps_of, labels, np.arange(4), np.arange(4, 6), n_classes=2, size=(16, 16, 16), steps=10, seed=0,
                progress=True, description="decoder tumour_segmentation full seed 0")
    err = capsys.readouterr().err
    assert "decoder tumour_segmentation full seed 0 (val loss " in err
    fit_decoder(maps_of, labels, np.arange(4), np.arange(4, 6), n_classes=2, size=(16, 16, 16), steps=10, seed=0,
                progress=False)
    assert "val loss" not in capsys.readouterr().err   # --no-progress


class _TinyEncoder:
    """A fine-tunable 'encoder': the mean and the spread of each volume through a linear layer."""

    class card:  # noqa: N801  (what the fine-tune protocol reads from a card)
        embed_dim = 4

    def module(self):
        import torch

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.linear = torch.nn.Linear(2, 4)

            def forward(self, x):
                flat = x.flatten(1)
                return self.linear(torch.stack([flat.mean(1), flat.std(1)], 1))

        return Net()


def test_finetuning_shows_progress_per_epoch_with_the_validation_loss(capsys):
    import torch

    from bench.protocols.finetune import finetune_seed
    from bench.profiles import get_profile
    from bench.protocols.context import Context
    from bench.tasks import Examples, get_task

    n = 12
    spec = get_task("brain_age")
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"example_id": [f"sub-{i:02d}_ses-M00" for i in range(n)],
                          "participant_id": [f"sub-{i:02d}" for i in range(n)],
                          "split": ["train"] * 6 + ["val"] * 3 + ["test"] * 3, "y": rng.uniform(60, 80, n)})
    examples = Examples(spec, table, [np.array([[i]]) for i in range(n)], [np.zeros(1)] * n)
    vols = [torch.from_numpy(rng.random((1, 1, 8, 8, 8)).astype(np.float32)) for _ in range(n)]
    for progress in (True, False):
        ctx = Context(examples, split=None, cohort=None, encoder=_TinyEncoder(), profile=get_profile("smoke"),
                      keep_predictions=False, progress=progress)
        scores = finetune_seed(ctx, vols, seed=0)
        assert [s.split for s in scores] == ["test"]
        err = capsys.readouterr().err
        assert ("fine-tuning brain_age seed 0 (val loss " in err) == progress


# -- 7. command-line arguments checked before any work -----------------------------------------------
NO_COHORT = ["--cohort", "/nonexistent/cohort.csv", "--no-progress"]


@pytest.mark.parametrize("seeds", ["0", "-1", "two"])
def test_seeds_below_one_are_a_usage_error(seeds, capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--encoder", "random", "--task", "brain_age", "--seeds", seeds, *NO_COHORT])
    assert info.value.code == 2
    assert "--seeds" in capsys.readouterr().err


def test_the_runner_refuses_zero_seeds(tmp_path):
    from dataclasses import replace

    from bench.errors import MribenchError
    from bench.profiles import get_profile
    from bench.runner import Runner

    for seeds in (0, -1):
        with pytest.raises(MribenchError, match=f"seeds must be a whole number >= 1, got {seeds}"):
            Runner(None, replace(get_profile("smoke"), seeds=seeds), tmp_path / "results")


def test_results_pointing_at_a_file_is_one_line(tmp_path, capsys):
    from bench.errors import MribenchError
    from bench.profiles import get_profile
    from bench.runner import Runner

    file = tmp_path / "results.json"
    file.write_text("{}")
    assert main(["run", "--encoder", "random", "--task", "brain_age", "--results", str(file), *NO_COHORT]) == 2
    err = capsys.readouterr().err
    assert f"--results {file}: a file, not a folder" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(MribenchError, match="is a file"):
        Runner(None, get_profile("smoke"), file)


def test_unknown_task_names_and_paths_fail_before_the_cohort(tmp_path, capsys):
    for task, message in (("my.yaml", "--task my.yaml: no such file, nor a known task; known: ad_diagnosis, "),
                          ("no_such_task", "unknown task 'no_such_task'; known: ad_diagnosis, ")):
        assert main(["run", "--encoder", "random", "--task", task, *NO_COHORT]) == 2
        err = capsys.readouterr().err
        assert message in err and "brain_age" in err and "cohort.csv" not in err
    from bench.tasks import tasks_dir

    changed = tmp_path / "brain_age.yaml"     # the name of a task, with other content: jobs would run tasks/'s
    spec = (tasks_dir() / "brain_age.yaml").read_text()
    changed.write_text(re.sub(r"(?m)^version: .*$", "version: 99", spec))
    assert main(["run", "--encoder", "random", "--task", str(changed), *NO_COHORT]) == 2
    assert "its spec 'brain_age' is not the one under" in capsys.readouterr().err
    assert main(["run", "--encoder", "random", "--task", str(tasks_dir() / "brain_age.yaml"), *NO_COHORT]) == 2
    assert "cohort.csv" in capsys.readouterr().err      # the registered spec's own file passes the task check


def test_splits_make_refuses_to_overwrite_without_force(tmp_path, capsys):
    scan = save(tmp_path / "scan.nii.gz", brain((16, 16, 16)))
    rows = [{"participant_id": f"sub-{i:02d}", "session_id": "ses-M00", "sequence": "T1w", "path": str(scan),
             "months_from_baseline": 0, "age": 60 + i, "sex": "FM"[i % 2], "site": "A"} for i in range(20)]
    manifest = tmp_path / "cohort.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    out = tmp_path / "splits"
    assert main(["splits", "make", "--cohort", str(manifest), "--out", str(out), "--no-progress"]) == 0
    before = (out / "all.tsv").read_bytes()
    capsys.readouterr()
    assert main(["splits", "make", "--cohort", str(manifest), "--out", str(out), "--split-seed", "1",
                 "--no-progress"]) == 2
    assert f"{out / 'all.tsv'} exists; records are checked against existing split files: pass --force" in \
        capsys.readouterr().err
    assert (out / "all.tsv").read_bytes() == before
    assert main(["splits", "make", "--cohort", str(manifest), "--out", str(out), "--split-seed", "1", "--force",
                 "--no-progress"]) == 0
    assert (out / "all.tsv").read_bytes() != before


def test_list_tasks_never_generates_a_cohort_and_prints_whole_names(monkeypatch, capsys):
    import bench.data.sources as sources

    def refuse(*args, **kwargs):
        raise AssertionError("bench list tasks generated a cohort")

    monkeypatch.setattr(sources, "generate", refuse)
    monkeypatch.setattr(sources, "ensure_synth", refuse)
    assert main(["list", "tasks", "--profile", "smoke"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split("\t")  # with per-split subject counts when the smoke cohort already exists
    assert header[:4] == ["task", "version", "kind", "cohort"] and header[-1] == "main score"
    assert header[4:-1] in ([], ["train", "val", "test", "external"])
    names = [line.split("\t")[0] for line in lines[1:]]
    assert {"ad_diagnosis", "time_to_conversion", "ucsf-pdgm/tumour_survival"} <= set(names)
    assert not any("…" in line for line in lines)
    assert main(["list", "tasks", "--profile", "smoke", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    survival = next(row for row in listed if row["task"] == "tumour_survival")
    assert {"task": "tumour_survival", "version": 2, "kind": "survival", "cohort": "synth",
            "main score": "c_index (up)"}.items() <= survival.items()
    assert main(["list", "spaces", "--json"]) == 0
    assert {s["space"] for s in json.loads(capsys.readouterr().out)} >= {"cpu-small", "simclr-paper"}
