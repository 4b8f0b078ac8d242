"""Same-session repeat scans (run-02...) kept out of the cohort table, in ``Cohort.repeats``.

The table of a tree, and so every record's ``cohort_sha256`` and every task's examples, must be
the same with or without its rescans; the rescans keep their own brain masks, survive the table
cache, and come out of the importers (ADNI ``MPRAGE_Repeat``, OASIS-3 ``run-02``) as runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench.data import bids as bids_reader
from bench.data import bids_cache
from bench.data.bids import read_bids
from bench.data.cohort import Cohort
from bench.data.manifest import read_manifest
from bench.errors import CohortError
from bench.runner import cohort_sha256
from test_cohort_readers import _nifti, _tsv


def _relative(table: pd.DataFrame, root: Path) -> pd.DataFrame:
    """The table with its file paths relative to ``root`` (two copies of a tree compare equal)."""
    out = table.copy()
    for col in [c for c in out.columns if c == "path" or c.endswith("_path")]:
        out[col] = [str(Path(p).relative_to(root.resolve())) if isinstance(p, str) else p for p in out[col]]
    return out


def _synth_style(root: Path) -> Path:
    """The generator's layout: two subjects, sessions ses-M000 / ses-M012, T1w and FLAIR, session
    masks under derivatives/synth."""
    _tsv(root / "participants.tsv", [{"participant_id": "sub-0001", "age": 70.0, "sex": "F", "diagnosis": "CN"},
                                     {"participant_id": "sub-0002", "age": 66.0, "sex": "M", "diagnosis": "MCI"}])
    for sub in ("sub-0001", "sub-0002"):
        _tsv(root / sub / f"{sub}_sessions.tsv", [{"session_id": "ses-M000", "months_from_baseline": 0},
                                                  {"session_id": "ses-M012", "months_from_baseline": 12}])
        for ses in ("ses-M000", "ses-M012"):
            for seq in ("T1w", "FLAIR"):
                _nifti(root / sub / ses / "anat" / f"{sub}_{ses}_{seq}.nii.gz")
            _nifti(root / "derivatives/synth" / sub / ses / "anat" / f"{sub}_{ses}_desc-brain_mask.nii.gz")
    return root


def _add_rescans(root: Path) -> None:
    """What the generator writes for a rescan: sub-0001's two sessions get a run-02 T1w, the first
    with a run-02 mask of its own, the second without one."""
    for ses in ("ses-M000", "ses-M012"):
        _nifti(root / "sub-0001" / ses / "anat" / f"sub-0001_{ses}_run-02_T1w.nii.gz", 2.0)
    _nifti(root / "derivatives/synth/sub-0001/ses-M000/anat/sub-0001_ses-M000_run-02_desc-brain_mask.nii.gz")


def test_rescans_leave_the_table_as_it_was(tmp_path):
    root = _synth_style(tmp_path / "ds")
    before = read_bids(root, cache=False)
    _add_rescans(root)
    after = read_bids(root, cache=False)
    pd.testing.assert_frame_equal(after.table, before.table, check_exact=True)
    assert cohort_sha256(after) == cohort_sha256(before) and before.repeats is None
    rep = after.repeats
    assert rep.run.tolist() == ["02", "02"] and rep.session_id.tolist() == ["ses-M000", "ses-M012"]
    assert list(rep.columns) == list(after.table.columns) + ["run"]
    assert [Path(p).name for p in rep.path] == ["sub-0001_ses-M000_run-02_T1w.nii.gz",
                                                "sub-0001_ses-M012_run-02_T1w.nii.gz"]
    assert [Path(p).name for p in rep.mask_path] == ["sub-0001_ses-M000_run-02_desc-brain_mask.nii.gz",
                                                     "sub-0001_ses-M012_desc-brain_mask.nii.gz"]  # the fallback
    assert (rep.diagnosis == "CN").all() and rep.months_from_baseline.tolist() == [0.0, 12.0]


def test_rescans_leave_the_synthetic_cohort_hash_as_it_was(tiny_cohort_dir, tmp_path):
    """The generator's own tree (tiny profile) reads as the same table with and without its run-02
    rescans (made here from copies where the generator writes none)."""
    full, stripped = tmp_path / "tiny", tmp_path / "stripped"
    shutil.copytree(tiny_cohort_dir, full)
    if not list(full.glob("sub-*/ses-*/anat/*_run-*")):
        for f in sorted(full.glob("sub-*/ses-*/anat/*_T1w.nii.gz"))[:3]:
            shutil.copy(f, f.with_name(f.name.replace("_T1w", "_run-02_T1w")))
    shutil.copytree(full, stripped)
    for f in stripped.rglob("*_run-*"):
        f.unlink()
    before, after = read_bids(stripped, cache=False), read_bids(full)
    assert cohort_sha256(after) == cohort_sha256(before)
    pd.testing.assert_frame_equal(_relative(after.table, full), _relative(before.table, stripped), check_exact=True)
    rescans = sorted(full.glob("sub-*/ses-*/anat/*_run-*"))
    assert sorted(after.repeats.path) == [str(f) for f in rescans] and set(after.repeats.run) == {"02"}
    for r in after.repeats.itertuples():  # a rescan's own mask where the generator wrote one
        own = full / "derivatives/synth" / r.participant_id / r.session_id / "anat" / \
            Path(r.path).name.replace("_T1w.nii.gz", "_desc-brain_mask.nii.gz")
        assert r.mask_path == str(own) if own.is_file() else "_run-" not in r.mask_path


def test_real_style_runs_keep_the_lowest_in_the_table(tmp_path):
    """run-01 / run-02 (and run-2 / run-10: numbers, not text) of one sequence in one session."""
    root = tmp_path / "ds"
    _tsv(root / "participants.tsv", [{"participant_id": "sub-01", "age": 70, "sex": "F"}])
    _tsv(root / "sub-01" / "sub-01_sessions.tsv", [{"session_id": "ses-1", "months_from_baseline": 0}])
    anat = root / "sub-01/ses-1/anat"
    for name in ("run-01_T1w", "run-02_T1w", "run-10_FLAIR", "run-2_FLAIR"):
        _nifti(anat / f"sub-01_ses-1_{name}.nii.gz")
    masks = root / "derivatives/fs/sub-01/ses-1/anat"
    for name in ("run-01", "run-02"):
        _nifti(masks / f"sub-01_ses-1_{name}_desc-brain_mask.nii.gz")
    cohort = read_bids(root, cache=False)
    t, rep = cohort.table, cohort.repeats
    assert sorted(zip(t.sequence, t.run)) == [("FLAIR", "2"), ("T1w", "01")]
    assert sorted(zip(rep.sequence, rep.run)) == [("FLAIR", "10"), ("T1w", "02")]
    t1 = rep[rep.sequence == "T1w"].iloc[0]
    assert Path(t1.mask_path).name == "sub-01_ses-1_run-02_desc-brain_mask.nii.gz"
    assert "mask_path" not in t.columns  # the table's row keeps today's rule: the session's mask only
    assert cohort.scan_ids.tolist() == ["sub-01_ses-1_run-2_FLAIR", "sub-01_ses-1_run-01_T1w"]


def test_the_cache_keeps_the_repeats(tmp_path, monkeypatch):
    root = _synth_style(tmp_path / "ds")
    _add_rescans(root)
    fresh = read_bids(root, cache=False)
    read_bids(root)  # reads the tree and stores both tables
    monkeypatch.setattr(bids_reader, "read_bids_scans", lambda r: pytest.fail("the tree was read again"))
    cached = read_bids(root)
    pd.testing.assert_frame_equal(cached.table, fresh.table, check_exact=True)
    pd.testing.assert_frame_equal(cached.repeats, fresh.repeats, check_exact=True)
    assert cohort_sha256(cached) == cohort_sha256(fresh)


def test_a_table_only_cache_entry_does_not_hide_the_repeats(tmp_path):
    """cached_read (table alone) stores no repeats: read_bids must read the tree, not lose them."""
    root = _synth_style(tmp_path / "ds")
    _add_rescans(root)
    root = root.resolve()
    bids_cache.cached_read(root, lambda: bids_reader.read_bids_table(root), code=bids_reader._READER_CODE)
    assert len(read_bids(root).repeats) == 2


def test_cohort_repeats_interface(tmp_path):
    root = _synth_style(tmp_path / "ds")
    _add_rescans(root)
    cohort = read_bids(root)
    rc = cohort.repeats_cohort()
    assert rc.name == cohort.name + "+repeats" and rc.root == cohort.root and rc.repeats is None
    assert rc.table.path.tolist() == cohort.repeats.path.tolist() and list(rc.table.index) == [0, 1]
    assert rc.scan_ids.tolist() == ["sub-0001_ses-M000_run-02_T1w", "sub-0001_ses-M012_run-02_T1w"]
    kept = cohort.select(cohort.table.session_id == "ses-M012")
    assert kept.repeats.session_id.tolist() == ["ses-M012"]
    assert cohort.select(cohort.table.participant_id == "sub-0002").repeats is None
    assert read_bids(_synth_style(tmp_path / "plain")).repeats_cohort() is None


def test_bad_repeats_are_named(tmp_path):
    root = _synth_style(tmp_path / "ds")
    _add_rescans(root)
    cohort = read_bids(root, cache=False)
    orphan = cohort.repeats.assign(participant_id="sub-0009")
    with pytest.raises(CohortError, match=r"repeat scans\): sub-0009 ses-M000 run-02 T1w has no first scan"):
        Cohort(cohort.table, "t", repeats=orphan)
    with pytest.raises(CohortError, match="sub-0001 ses-M000 has a repeat scan without a run label"):
        Cohort(cohort.table, "t", repeats=cohort.repeats.drop(columns="run"))
    assert Cohort(cohort.table, "t", repeats=cohort.repeats.iloc[:0]).repeats is None


def test_manifest_runs_are_repeats(tmp_path):
    base = {"session_id": "ses-1", "months_from_baseline": 0, "age": 70, "sex": "F", "site": "A"}
    rows = [dict(base, participant_id=f"sub-{i}", sequence="T1w", path=f"s{i}.nii.gz") for i in (1, 2)]
    for r in rows:
        _nifti(tmp_path / r["path"])
    _nifti(tmp_path / "s1b.nii.gz")
    pd.DataFrame(rows).to_csv(tmp_path / "plain.tsv", sep="\t", index=False)
    with_run = rows + [dict(rows[0], path="s1b.nii.gz", run="02")]
    pd.DataFrame(with_run).to_csv(tmp_path / "runs.tsv", sep="\t", index=False, na_rep="n/a")
    plain, runs = read_manifest(tmp_path / "plain.tsv", name="m"), read_manifest(tmp_path / "runs.tsv", name="m")
    pd.testing.assert_frame_equal(runs.table, plain.table, check_exact=True)
    assert cohort_sha256(runs) == cohort_sha256(plain)
    assert runs.repeats.run.tolist() == ["02"] and runs.repeats.path.iloc[0].endswith("s1b.nii.gz")


# -- importers: repeats kept as runs, the table and every task's examples as before ------------------
#: Measured on the miniatures before repeats were kept (they were dropped then): the table's hash and
#: each task's (examples, exclusions).
BEFORE = {
    "adni": ("31a92de064db85d8145a479c8ebd77b946b2761cff93c31f617328dac77e92e0",
             {"adni/ad_diagnosis": (109, {"no diagnosis at the session": 1}),
              "adni/conversion": (44, {"follow-up shorter than the horizon without conversion": 19})}),
    "oasis3": ("1d945f50cc9cc3a1cc04845891daa02934966387e8855f51cab1476b6af680ed",
               {"oasis3/ad_diagnosis": (32, {"no diagnosis at the session": 4})}),
}


@pytest.fixture(autouse=True)
def _private_splits(tmp_path, monkeypatch):
    monkeypatch.setenv("MRIBENCH_SPLITS", str(tmp_path / "splits"))


def _without_repeat_rows(manifest: Path) -> Cohort:
    """The manifest as an import that drops its repeats writes it (no run rows, no run column)."""
    t = pd.read_csv(manifest, sep="\t", dtype=str, keep_default_na=False)
    stripped = manifest.with_name("stripped.tsv")
    t[t["run"] == "n/a"].drop(columns="run").to_csv(stripped, sep="\t", index=False)
    return read_manifest(stripped, name=manifest.stem)


@pytest.mark.slow
@pytest.mark.parametrize("dataset, repeat", [("adni", ("sub-ADNI011S4007", "ses-M000", "MPRAGE_Repeat")),
                                             ("oasis3", ("sub-OAS30004", "ses-d0030", "_run-02_T1w"))])
def test_importers_keep_repeats_as_runs(dataset, repeat, tmp_path):
    import miniatures as mini
    from bench.data.importers import import_dataset
    from bench.tasks import build_examples, get_task

    getattr(mini, f"build_{dataset}")(tmp_path / "release")
    res = import_dataset(dataset, tmp_path / "release", tmp_path / "out")
    c = res.cohort
    sha, tasks = BEFORE[dataset]
    assert cohort_sha256(c) == sha == cohort_sha256(_without_repeat_rows(res.manifest))
    for name, (n, excluded) in tasks.items():
        ex = build_examples(get_task(name), c)
        assert (len(ex), ex.excluded) == (n, excluded)
    sub, ses, name = repeat
    assert len(c.repeats) == 1 and c.repeats.iloc[0][["participant_id", "session_id", "run"]].tolist() == \
        [sub, ses, "02"] and name in c.repeats.path.iloc[0]
    assert any(line.startswith("  kept 1 repeat scan(s) as runs: ") for line in res.report.lines())
    assert not any("repeat" in r or "extra run" in r for _, r in res.report.dropped)


@pytest.mark.slow
def test_ixi_second_file_is_a_run_and_a_copy_is_dropped(tmp_path):
    """IXI: another file of a subject's contrast is a run; the same file name in another folder is a copy."""
    import miniatures as mini
    from bench.data.importers import import_dataset
    from bench.tasks import build_examples, get_task

    release = mini.build_ixi(tmp_path / "release")
    mini.write_nifti(release / "IXI-T1" / "IXI011-IOP-0912-T1.nii.gz", 9950)
    (release / "copy").mkdir()
    shutil.copy(release / "IXI-T1" / "IXI010-HH-0810-T1.nii.gz", release / "copy")
    res = import_dataset("ixi", release, tmp_path / "out")
    c, r = res.cohort, res.report
    assert cohort_sha256(c) == "77dbdd603a4db83c05417ae53d680c8e90404d26b53ff30c35a87c615af69f5c"  # as before
    assert r.kept == {"subjects": 10, "sessions": 10, "scans": 30}
    assert c.repeats[["participant_id", "sequence", "run"]].values.tolist() == [["sub-IXI011", "T1w", "02"]]
    assert r.repeats == {"second file of the same contrast (the first file is the table's scan)": 1}
    assert r.dropped[("scan", "same file name as another file of the contrast: a copy, not a rescan")] == 1
    ex = build_examples(get_task("ixi/brain_age"), c)
    assert len(ex) == 8 and ex.excluded == {"no age at the session": 2}
