"""The volumetric reference on real data (issue 30 item 2): FreeSurfer / FastSurfer output for
``volumes`` and ADNIMERGE's per-visit volumes for ``adnimerge_volumes``.

The files are fabricated in the tools' formats by tests/miniatures.py (aseg.stats with its header,
``# Measure`` and ``# ColHeaders`` lines; asegstats2table's ``Measure:volume`` table; ADNIMERGE's
volume columns); the last two tests are the done-when runs through ``bench run`` from the CLI.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import miniatures as mini
from bench.cli import main
from bench.data.freesurfer import parse_aseg_stats, read_asegstats_table, read_subjects_dir, session_of
from bench.data.importers import import_dataset
from bench.encoders import get_encoder
from bench.errors import MribenchError

SESSIONS = [("sub-01", "ses-M00", 0.0), ("sub-01", "ses-M12", 0.05), ("sub-02", "ses-M00", 0.1),
            ("sub-03", "ses-M00", 0.2)]


def _rows(*keys: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame([{"participant_id": p, "session_id": s, "sequence": "T1w"} for p, s in keys])


def _expected(v: dict[str, float]) -> np.ndarray:
    """The six features from the fabricated volumes (mm^3), written out from the module's definitions."""
    icv = v["EstimatedTotalIntraCranialVol"]
    hippo = v["Left-Hippocampus"] + v["Right-Hippocampus"]
    vent = sum(v[n] for n in ("Left-Lateral-Ventricle", "Right-Lateral-Ventricle", "Left-Inf-Lat-Vent",
                              "Right-Inf-Lat-Vent", "3rd-Ventricle", "4th-Ventricle"))
    parts = [hippo, vent, v["TotalGray"], v["CerebralWhiteMatter"], icv - v["BrainSegNotVent"]]
    return np.array([p / icv for p in parts] + [icv / 1000], np.float32)


def test_aseg_stats_measures_and_structures_whatever_the_column_order(tmp_path):
    v = mini.freesurfer_volumes(3, 0.1)
    for fastsurfer in (False, True):
        path = mini.write_aseg_stats(tmp_path / f"{fastsurfer}" / "aseg.stats", "sub-01_ses-M00", v,
                                     fastsurfer=fastsurfer)
        got = parse_aseg_stats(path)
        assert got["eTIV"] == got["EstimatedTotalIntraCranialVol"] == pytest.approx(v["EstimatedTotalIntraCranialVol"])
        assert got["BrainSegVolNotVent"] == pytest.approx(v["BrainSegNotVent"])
        assert got["Left-Hippocampus"] == pytest.approx(v["Left-Hippocampus"], abs=0.05)


def test_session_rule():
    assert session_of("sub-01_ses-M00") == (("sub-01", "ses-M00"), False)
    assert session_of("sub-01_ses-M00.long.sub-01") == (("sub-01", "ses-M00"), True)
    assert session_of("sub-01") is None and session_of("fsaverage") is None


def test_subjects_dir_and_asegstats2table_give_the_same_sessions(tmp_path):
    sessions = read_subjects_dir(mini.build_subjects_dir(tmp_path / "subjects", SESSIONS))
    assert sorted(sessions) == [(p, s) for p, s, _ in SESSIONS]           # base template and fsaverage skipped
    assert sessions[("sub-01", "ses-M00")].source.parent.parent.name == "sub-01_ses-M00.long.sub-01"
    table = read_asegstats_table(mini.write_asegstats_table(tmp_path / "asegstats.tsv", SESSIONS))
    key = ("sub-03", "ses-M00")
    np.testing.assert_allclose(list(table[key].in_ml(key).values()), list(sessions[key].in_ml(key).values()),
                               rtol=1e-4)  # aseg rows hold 0.1 mm^3


def test_volumes_encoder_reads_a_subjects_dir_under_the_cohort(tmp_path):
    mini.build_subjects_dir(tmp_path / "derivatives" / "freesurfer", SESSIONS)
    cohort = SimpleNamespace(name="real", root=tmp_path)
    encoder = get_encoder("volumes")
    out = encoder.embed_rows(_rows(("sub-02", "ses-M00"), ("sub-03", "ses-M00")), cohort)
    expected = np.stack([_expected(mini.freesurfer_volumes(n, a)) for n, (_, _, a) in enumerate(SESSIONS)][2:])
    np.testing.assert_allclose(out, expected, rtol=1e-4)
    with pytest.raises(MribenchError, match=r"no FreeSurfer subject sub-04_ses-M00 .*participant sub-04, "
                                            r"session ses-M00") as info:
        encoder.embed_rows(_rows(("sub-04", "ses-M00")), cohort)
    assert "\n" not in str(info.value)


def test_a_missing_structure_names_file_subject_and_session(tmp_path):
    v = mini.freesurfer_volumes(0, 0.0)
    path = mini.write_aseg_stats(tmp_path / "derivatives" / "freesurfer" / "sub-09_ses-M06" / "stats" /
                                 "aseg.stats", "sub-09_ses-M06", v)
    path.write_text("\n".join(ln for ln in path.read_text().splitlines() if "Right-Hippocampus" not in ln))
    with pytest.raises(MribenchError, match=r"aseg.stats: no Right-Hippocampus for participant sub-09, "
                                            r"session ses-M06") as info:
        get_encoder("volumes").embed_rows(_rows(("sub-09", "ses-M06")), SimpleNamespace(name="x", root=tmp_path))
    assert "\n" not in str(info.value)


def test_asegstats2table_file_is_found_when_there_is_no_subjects_dir(tmp_path):
    mini.write_asegstats_table(tmp_path / "derivatives" / "fastsurfer" / "asegstats.tsv", SESSIONS)
    out = get_encoder("volumes").embed_rows(_rows(("sub-01", "ses-M12")), SimpleNamespace(name="x", root=tmp_path))
    np.testing.assert_allclose(out[0], _expected(mini.freesurfer_volumes(1, 0.05)), rtol=1e-4)


@pytest.fixture(scope="module")
def adni(tmp_path_factory):
    root = tmp_path_factory.mktemp("adni")
    mini.build_adni(root / "release")
    return import_dataset("adni", root / "release", root / "out")


@pytest.fixture(autouse=True)
def _private_splits(tmp_path, monkeypatch):
    """Split files of fabricated cohorts go to a temporary folder, never into the checkout."""
    monkeypatch.setenv("MRIBENCH_SPLITS", str(tmp_path / "splits"))


@pytest.mark.slow
def test_adnimerge_volumes_follow_the_matched_visit(adni):
    t = adni.cohort.table
    row = t[(t.participant_id == "sub-ADNI002S4003") & (t.session_id == "ses-M012")].iloc[0]
    v = mini.adnimerge_volumes(3 * 100 + 12, 0.0)
    assert row["adnimerge_hippocampus"] == pytest.approx(v["Hippocampus"])
    assert adni.report.notes["scanned visit(s) with an empty ADNIMERGE volume (adnimerge_volumes cannot embed "
                             "them)"] == 1
    encoder = get_encoder("adnimerge_volumes")
    out = encoder.embed_rows(t[t.index == row.name], adni.cohort)
    np.testing.assert_allclose(out[0, [0, -1]], [v["Hippocampus"] / v["ICV"], v["ICV"] / 1000], rtol=1e-5)
    empty = t[(t.participant_id == "sub-ADNI002S4006") & (t.session_id == "ses-M006")]
    with pytest.raises(MribenchError, match=r"ADNIMERGE Hippocampus is empty for participant sub-ADNI002S4006, "
                                            r"session ses-M006 \(visit m06\)"):
        encoder.embed_rows(empty, adni.cohort)


def _run(encoder: str, task: str, cohort: Path, results: Path) -> None:
    assert main(["splits", "make", "--cohort", str(cohort), "--no-rule"]) == 0
    assert main(["run", "--encoder", encoder, "--task", task, "--cohort", str(cohort), "--profile", "smoke",
                 "--seeds", "1", "--results", str(results), "--no-progress"]) == 0


@pytest.mark.slow
def test_bench_run_adnimerge_volumes_from_the_cli(adni, tmp_path):
    """Done-when (ADNI): the miniature with ADNIMERGE volume columns gives a record through bench run."""
    from bench.results import load_record

    _run("adnimerge_volumes", "adni/ad_diagnosis", adni.manifest, tmp_path / "results")
    (path,) = (tmp_path / "results" / "adnimerge_volumes").glob("adni-ad_diagnosis@v*/linear_probe.json")
    rec = load_record(path)
    test = [s for s in rec.scores if s.split == "test"]
    assert rec.encoder == "adnimerge_volumes" and test and test[0].n_examples > 0


@pytest.mark.slow
def test_bench_run_volumes_on_a_subjects_dir_from_the_cli(tmp_path):
    """Done-when (FreeSurfer): an imported OASIS-3 miniature with a SUBJECTS_DIR beside its manifest."""
    from bench.results import load_record

    mini.build_oasis3(tmp_path / "release")
    imported = import_dataset("oasis3", tmp_path / "release", tmp_path / "out")
    t = imported.cohort.table.drop_duplicates(["participant_id", "session_id"])
    atrophy = t["diagnosis"].map({"CN": 0.0, "MCI": 0.05, "AD": 0.15}).fillna(0.05)
    sessions = list(zip(t["participant_id"], t["session_id"], atrophy))
    mini.build_subjects_dir(tmp_path / "out" / "derivatives" / "freesurfer", sessions)
    _run("volumes", "oasis3/ad_diagnosis", imported.manifest, tmp_path / "results")
    (path,) = (tmp_path / "results" / "volumes").glob("oasis3-ad_diagnosis@v*/linear_probe.json")
    rec = load_record(path)
    test = [s for s in rec.scores if s.split == "test"]
    assert rec.encoder == "volumes" and test and test[0].n_examples > 0
