"""BIDS and manifest readers on hand-made layouts, and every bad input they must name."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bench.data.bids import parse_bids_name, read_bids
from bench.data.cohort import REQUIRED_COLUMNS, Cohort
from bench.data.manifest import read_manifest
from bench.errors import CohortError


def _nifti(path: Path, value: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full((4, 5, 6), value, np.float32), np.eye(4)), str(path))
    return path


def _tsv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False, na_rep="n/a")


@pytest.fixture
def bids(tmp_path) -> Path:
    """A real-style layout: acq_time instead of months, acq/run entities, a sessionless subject."""
    root = tmp_path / "ds"
    _tsv(root / "participants.tsv", [
        {"participant_id": "sub-01", "age": 70, "sex": "female", "site": "A", "diagnosis": "CN"},
        {"participant_id": "sub-02", "age": 64.5, "sex": "M", "site": "B", "diagnosis": "MCI"},
    ])
    _tsv(root / "sub-01" / "sub-01_sessions.tsv", [
        {"session_id": "ses-bl", "acq_time": "2010-01-15", "diagnosis": "CN"},
        {"session_id": "ses-fu", "acq_time": "2011-01-15", "diagnosis": "MCI"},
    ])
    _nifti(root / "sub-01/ses-bl/anat/sub-01_ses-bl_acq-mprage_T1w.nii.gz")
    _nifti(root / "sub-01/ses-bl/anat/sub-01_ses-bl_acq-mprage_run-2_T1w.nii.gz")
    _nifti(root / "sub-01/ses-fu/anat/sub-01_ses-fu_acq-mprage_T1w.nii.gz")
    _nifti(root / "sub-01/ses-fu/anat/sub-01_ses-fu_FLAIR.nii")
    _nifti(root / "sub-01/ses-fu/anat/sub-01_ses-fu_T1map.nii.gz")  # not a contrast we read
    _nifti(root / "sub-02/anat/sub-02_T1w.nii.gz")
    return root


def test_parse_bids_name():
    assert parse_bids_name("sub-01_ses-M06_run-2_T1w.nii.gz") == ({"sub": "01", "ses": "M06", "run": "2"}, "T1w")
    assert parse_bids_name("notes.txt") is None
    assert parse_bids_name("sub-01_bad_T1w.nii.gz") is None


def test_real_style_bids_layout(bids):
    cohort = read_bids(bids)
    t = cohort.table
    assert set(REQUIRED_COLUMNS) <= set(t.columns)
    assert len(t) == 4  # the run-2 rescan of sub-01 ses-bl is a repeat, not a table row
    s1 = t[t.participant_id == "sub-01"]
    fu = s1[s1.session_id == "ses-fu"]
    assert fu.months_from_baseline.iloc[0] == pytest.approx(12.0, abs=0.1)  # from acq_time
    assert fu.age.iloc[0] == pytest.approx(71.0, abs=0.01)  # baseline age + months
    assert set(fu.diagnosis) == {"MCI"}  # the session's diagnosis wins over the participant's
    assert (s1.sex == "F").all()  # 'female' normalised
    assert "run" not in t.columns and cohort.repeats.run.tolist() == ["2"] and set(s1.acq.dropna()) == {"mprage"}
    assert set(t.sequence) == {"T1w", "FLAIR"}
    s2 = t[t.participant_id == "sub-02"]
    assert s2.session_id.tolist() == ["ses-none"] and s2.months_from_baseline.tolist() == [0.0]
    assert [Path(p).name for p in cohort.metadata["skipped_files"]] == ["sub-01_ses-fu_T1map.nii.gz"]
    assert cohort.scan_ids.is_unique


def test_missing_scan_listed_in_sessions_tsv(bids):
    for f in (bids / "sub-01/ses-fu/anat").iterdir():
        f.unlink()
    with pytest.raises(CohortError, match=r"sub-01_sessions.tsv lists ses-fu .* holds no scan"):
        read_bids(bids)


def test_duplicate_session_rows(bids):
    _tsv(bids / "sub-01" / "sub-01_sessions.tsv", [
        {"session_id": "ses-bl", "acq_time": "2010-01-15"},
        {"session_id": "ses-bl", "acq_time": "2010-01-16"},
        {"session_id": "ses-fu", "acq_time": "2011-01-15"},
    ])
    with pytest.raises(CohortError, match="session ses-bl is listed twice"):
        read_bids(bids)


def test_duplicate_participant_rows(bids):
    p = pd.read_csv(bids / "participants.tsv", sep="\t")
    pd.concat([p, p.iloc[:1]]).to_csv(bids / "participants.tsv", sep="\t", index=False)
    with pytest.raises(CohortError, match="sub-01 appears more than once"):
        read_bids(bids)


def test_subject_folder_without_participant_row(bids):
    _nifti(bids / "sub-03/anat/sub-03_T1w.nii.gz")
    with pytest.raises(CohortError, match="sub-03 has scans but no row in participants.tsv"):
        read_bids(bids)


def test_sessions_without_any_timing(bids):
    _tsv(bids / "sub-01" / "sub-01_sessions.tsv", [{"session_id": "ses-bl"}, {"session_id": "ses-fu"}])
    with pytest.raises(CohortError, match="sub-01: cannot tell when sessions"):
        read_bids(bids)


def test_participant_without_label(bids):
    p = pd.read_csv(bids / "participants.tsv", sep="\t")
    p.loc[p.participant_id == "sub-02", "diagnosis"] = np.nan
    p.to_csv(bids / "participants.tsv", sep="\t", index=False, na_rep="n/a")
    cohort = read_bids(bids)
    with pytest.raises(CohortError, match=r"1 participant\(s\) have no 'diagnosis' label: sub-02"):
        cohort.require_labels(["diagnosis"])
    with pytest.raises(CohortError, match="column 'marker' is missing"):
        cohort.require_labels(["marker"])


def test_missing_participants_tsv(tmp_path):
    with pytest.raises(CohortError, match="no participants.tsv"):
        read_bids(tmp_path)


def _manifest(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _row(**kw) -> dict:
    row = {"participant_id": "sub-1", "session_id": "ses-1", "sequence": "T1w", "path": "scans/a.nii.gz",
           "months_from_baseline": 0, "age": 70, "sex": "F", "site": "X"}
    row.update(kw)
    return row


def test_manifest_resolves_relative_paths(tmp_path):
    _nifti(tmp_path / "scans" / "a.nii.gz")
    _nifti(tmp_path / "scans" / "b.nii.gz")
    cohort = read_manifest(_manifest(tmp_path, [_row(), _row(session_id="ses-2", path="scans/b.nii.gz",
                                                              months_from_baseline=6)]))
    assert len(cohort) == 2 and Path(cohort.table.path[0]).is_absolute()


def test_manifest_missing_file(tmp_path):
    with pytest.raises(CohortError, match=r"sub-1 ses-1 points to .*a.nii.gz, which does not exist"):
        read_manifest(_manifest(tmp_path, [_row()]))


def test_manifest_duplicate_rows(tmp_path):
    _nifti(tmp_path / "scans" / "a.nii.gz")
    with pytest.raises(CohortError, match="duplicate scan rows for sub-1_ses-1_T1w"):
        read_manifest(_manifest(tmp_path, [_row(), _row()]))


def test_manifest_missing_column(tmp_path):
    path = _manifest(tmp_path, [{k: v for k, v in _row().items() if k != "site"}])
    with pytest.raises(CohortError, match=r"missing column\(s\) \['site'\]"):
        read_manifest(path)


def test_schema_rejects_bad_values():
    base = pd.DataFrame([_row(path="/x.nii.gz")])
    with pytest.raises(CohortError, match="sex 'U'"):
        Cohort(base.assign(sex="U"), name="t")
    with pytest.raises(CohortError, match="diagnosis 'dementia'"):
        Cohort(base.assign(diagnosis="dementia"), name="t")
    with pytest.raises(CohortError, match="no numeric 'age'"):
        Cohort(base.assign(age="old"), name="t")


def test_subjects_carry_first_and_last_diagnosis(tiny_cohort_dir):
    """The split stratifies Alzheimer's subjects on their trajectory (first -> last diagnosis)."""
    from bench.data.bids import read_bids

    cohort = read_bids(tiny_cohort_dir)
    subjects = cohort.subjects().set_index("participant_id")
    t = cohort.table.sort_values(["participant_id", "months_from_baseline"])
    for pid, rows in t[t.population == "ad"].groupby("participant_id"):
        assert subjects.at[pid, "trajectory"] == f"{rows.diagnosis.iloc[0]}->{rows.diagnosis.iloc[-1]}"
    tumour = t.loc[t.population == "tumour", "participant_id"].unique()
    assert subjects.loc[tumour, "trajectory"].isna().all()
