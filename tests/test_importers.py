"""Importers of real releases, on fabricated miniatures in the published layouts (tests/miniatures.py).

Each test checks mapped values against numbers worked out by hand from the miniature's
docstring, and the counts of what was dropped and why; the ADNI one ends with the done-when
run: ``bench run --encoder random --task adni/conversion --cohort PATH``.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import miniatures as mini
from bench.cli import main
from bench.data.importers import ImportFailed, import_dataset
from bench.data.importers.common import sequence_of
from bench.data.sources import open_cohort
from bench.tasks import build_examples, get_task

pytestmark = pytest.mark.slow


def _imported(tmp_path_factory, dataset: str, build):
    root = tmp_path_factory.mktemp(dataset)
    build(root / "release")
    return import_dataset(dataset, root / "release", root / "out")


@pytest.fixture(scope="module")
def adni(tmp_path_factory):
    return _imported(tmp_path_factory, "adni", mini.build_adni)


@pytest.fixture(scope="module")
def oasis3(tmp_path_factory):
    return _imported(tmp_path_factory, "oasis3", mini.build_oasis3)


@pytest.fixture(autouse=True)
def _private_splits(tmp_path, monkeypatch):
    """Split files of fabricated cohorts go to a temporary folder, never into the checkout."""
    monkeypatch.setenv("MRIBENCH_SPLITS", str(tmp_path / "splits"))


def _row(cohort, sub: str, ses: str, seq: str = "T1w") -> pd.Series:
    t = cohort.table
    hit = t[(t.participant_id == sub) & (t.session_id == ses) & (t.sequence == seq)]
    assert len(hit) == 1, (sub, ses, seq)
    return hit.iloc[0]


def _dropped(report) -> dict[tuple[str, str], int]:
    return dict(report.dropped)


def test_sequence_names_from_series_descriptions():
    assert [sequence_of(d) for d in ("MPRAGE", "MP-RAGE_REPEAT", "Accelerated_Sagittal_MPRAGE", "IR-FSPGR",
                                     "Axial_T2_FLAIR", "Sagittal_3D_FLAIR", "Axial_T2_FSE", "Axial_PD_T2_FSE",
                                     "Axial T2-Star", "Localizer", "T1c", "PD")] == \
        ["T1w", "T1w", "T1w", "T1w", "FLAIR", "FLAIR", "T2w", None, None, None, "T1ce", "PDw"]


def test_adni_maps_visits_and_counts_every_drop(adni):
    c, r = adni.cohort, adni.report
    assert r.kept == {"subjects": 24, "sessions": 110, "scans": 111}
    assert _dropped(r) == {
        ("visit", "duplicate (PTID, VISCODE) row in ADNIMERGE; kept the first"): 1,
        ("scan", "no ADNIMERGE visit within 90 days of the scan date"): 1,
        ("scan", "series is not a T1w / T2w / FLAIR / PD image"): 1,
        ("scan", "subject not in ADNIMERGE"): 1}
    assert r.repeats == {"repeat T1w at the same visit (the lowest image id is the table's scan)": 1}
    assert r.notes["ADNIMERGE visit(s) without a scan (kept for diagnosis follow-up and conversion)"] == 8
    assert r.missing == {"sex": 4, "diagnosis": 1}
    # subject 0: CN, female, site 002; age = AGE + Years_bl; its m12 exam was 365 - 2 days after bl
    m12 = _row(c, "sub-ADNI002S4000", "ses-M012")
    assert (m12.months_from_baseline, m12.diagnosis, m12.sex, m12.site) == (12, "CN", "F", "002")
    assert m12.age == pytest.approx(65.5 + 363 / 365.25, abs=1e-4)
    assert np.isnan(m12.conversion_month) and m12.followup_months == 36
    # old spellings: 'MCI to Dementia' at m12 is AD, the conversion month is 12
    s14 = c.table[c.table.participant_id == "sub-ADNI023S4014"]
    assert list(s14.diagnosis) == ["MCI", "MCI", "AD", "AD", "AD"] and (s14.conversion_month == 12).all()
    assert pd.isna(_row(c, "sub-ADNI002S4006", "ses-M006").diagnosis)        # DX empty stays empty
    # matched by IMAGEUID although dated 120 days off (ids: subject 0 has 4 scans, subject 1 has 5)
    assert _row(c, "sub-ADNI023S4002", "ses-M000").image_id == "I10010"
    assert _row(c, "sub-ADNI002S4009", "ses-M000", "FLAIR").description == "Axial_T2_FLAIR"
    assert c.table.loc[c.table.participant_id == "sub-ADNI002S4021", "sex"].isna().all()
    s8 = c.table[c.table.participant_id == "sub-ADNI023S4008"]
    assert s8.months_from_baseline.max() == 36 and (s8.followup_months == 48).all()  # m48: clinic only
    saved = json.loads(adni.report_json.read_text())
    assert sum(d["count"] for d in saved["dropped"]) == 4 and saved["kept"]["scans"] == 111
    assert len(pd.read_csv(adni.dropped_tsv, sep="\t")) == 4
    assert open_cohort(adni.manifest).name == "adni"


def test_adni_conversion_labels_use_clinical_follow_up(adni):
    ex = build_examples(get_task("adni/conversion"), adni.cohort)
    # sMCI: index bl, m06, m12 are stable thanks to the m48 clinical visit (8 x 3, minus subject 6's
    # undiagnosed m06); pMCI converting at 12 / 24 / 36 give 2 / 3 / 4 index visits each
    assert (int((ex.table.y == 0).sum()), int((ex.table.y == 1).sum())) == (23, 2 + 3 + 4 + 2 + 3 + 4 + 3)
    assert ex.excluded == {"follow-up shorter than the horizon without conversion": 8 * 2 + 3}
    s6 = ex.table[ex.table.participant_id == "sub-ADNI002S4006"]
    assert list(s6.session_id) == ["ses-M000", "ses-M012"]
    diag = build_examples(get_task("adni/ad_diagnosis"), adni.cohort)
    assert len(diag) == 109 and diag.excluded == {"no diagnosis at the session": 1}


def test_oasis3_matches_sessions_to_clinical_visits(oasis3):
    c, r = oasis3.cohort, oasis3.report
    assert r.kept == {"subjects": 12, "sessions": 36, "scans": 37}
    assert _dropped(r) == {
        ("clinical row", "duplicate (subject, day) clinical visit; kept the first"): 1,
        ("scan", "no clinical visit within 180 days of the MR session"): 1,
        ("scan", "not a T1w / T2w / FLAIR image"): 1,
        ("scan", "subject not in the clinical table"): 1}
    assert r.repeats == {"extra run of T1w in the session (the first run is the table's scan)": 1}
    assert r.notes["clinical visit(s) with a non-Alzheimer's dx1 (diagnosis left empty)"] == 4
    assert r.missing == {"sex": 3, "diagnosis": 4}
    s1 = _row(c, "sub-OAS30001", "ses-d0030")
    assert (s1.sex, s1.diagnosis, s1.site) == ("M", "CN", "Siemens TrioTim 3T")
    assert s1.age == pytest.approx(62.5 + 30 / 365.25, abs=1e-4)
    s9 = c.table[c.table.participant_id == "sub-OAS30009"]
    assert list(s9.diagnosis) == ["MCI", "MCI", "AD"]
    assert s9.conversion_month.iloc[0] == pytest.approx(730 / 30.4375)
    assert list(s9.months_from_baseline) == pytest.approx([30 / 30.4375, 400 / 30.4375, 800 / 30.4375], abs=1e-3)
    assert s9.site.iloc[0] == "unknown"
    assert pd.isna(_row(c, "sub-OAS30002", "ses-d0800").diagnosis)           # no CDR that day
    assert c.table.loc[c.table.participant_id == "sub-OAS30011", "diagnosis"].isna().all()  # vascular
    s12 = _row(c, "sub-OAS30012", "ses-d0030")                               # not in demographics
    assert pd.isna(s12.sex) and s12.age == pytest.approx(90.0 + 30 / 365.25, abs=1e-4)
    assert _row(c, "sub-OAS30006", "ses-d0030", "T2w").path.endswith("_T2w.nii.gz")


def test_ixi_demographics_conflicts_stay_empty(tmp_path_factory):
    res = _imported(tmp_path_factory, "ixi", mini.build_ixi)
    c, r = res.cohort, res.report
    assert r.kept == {"subjects": 10, "sessions": 10, "scans": 30}
    assert _dropped(r) == {
        ("scan", "contrast not used (MRA, DTI)"): 1,
        ("scan", "subject not in the demographics sheet"): 1,
        ("sheet row", "duplicate IXI_ID row that disagrees on age or sex; that value is left empty"): 1,
        ("sheet row", "duplicate IXI_ID row, identical to the first"): 1}
    age = c.table[c.table.sequence == "T1w"].set_index("participant_id")["age"]
    assert age["sub-IXI014"] == pytest.approx(45.50, abs=1e-6)               # from DOB / STUDY_DATE
    assert age["sub-IXI012"] == 29.0 and np.isnan(age["sub-IXI013"]) and np.isnan(age["sub-IXI015"])
    s10 = _row(c, "sub-IXI010", "ses-01")
    assert (s10.site, s10.scanner, s10.sex) == ("HH", "Philips 3T", "F")
    assert set(c.table.sequence) == {"T1w", "T2w", "PDw"}
    ex = build_examples(get_task("ixi/brain_age"), c)
    assert len(ex) == 8 and ex.excluded == {"no age at the session": 2}


def test_brats_survival_and_label_conversion(tmp_path_factory):
    import nibabel as nib

    root = tmp_path_factory.mktemp("brats")
    mini.build_brats(root / "release")
    case = "MICCAI_BraTS2020_TrainingData/BraTS20_Training_001"
    for decoy in ("qc", "derivatives/prepare"):  # what bench data prepare writes beside a prepared release
        (root / "release" / decoy / case).mkdir(parents=True)
        mini.write_nifti(root / "release" / decoy / case / "BraTS20_Training_001_t1.nii.gz", 1)
    res = import_dataset("brats", root / "release", root / "out")
    c, r = res.cohort, res.report
    assert r.kept == {"subjects": 6, "sessions": 6, "scans": 24}
    assert _dropped(r) == {
        ("clinical row", "case in the survival table without a case folder"): 1,
        ("label map", "label values [7] are not BraTS labels (0, 1, 2, 3, 4)"): 1,
        ("scan", "file is not <case>_{t1,t1ce,t2,flair,seg}.nii.gz (or 2023's t1n, t1c, t2w, t2f)"): 1}
    flair = c.table[c.table.sequence == "FLAIR"].set_index("participant_id")
    one, two = flair.loc["sub-BraTS20Training001"], flair.loc["sub-BraTS20Training002"]
    assert (one.survival_months, one.event, one.age) == (pytest.approx(300 / 30.4375), 1, 60.5)
    assert (two.survival_months, two.event) == (pytest.approx(361 / 30.4375), 0)     # 'ALIVE (361 days later)'
    assert np.isnan(flair.loc["sub-BraTS20Training003", "survival_months"])
    assert np.isnan(flair.loc["sub-BraTS20Training004", "age"]) and flair["sex"].isna().all()
    assert flair.loc["sub-BraTS20Training001", "grade"] == "HGG"
    assert flair["seg_path"].isna().sum() == 2                                  # 005 (bad values), 006 (none)
    src = np.asarray(nib.load(res.manifest.parent.parent / "release" / "MICCAI_BraTS2020_TrainingData" /
                              "BraTS20_Training_001" / "BraTS20_Training_001_seg.nii.gz").dataobj)
    dst = np.asarray(nib.load(one.seg_path).dataobj)
    assert ((dst == 1) == (src == 2)).all() and ((dst == 2) == np.isin(src, (1, 4))).all()
    assert set(c.table.sequence) == {"T1w", "T1ce", "T2w", "FLAIR"}
    ex = build_examples(get_task("brats/tumour_segmentation"), c)
    assert len(ex) == 4 and ex.excluded == {"no tumour label map": 2}


def test_ucsf_pdgm_markers_and_id_matching(tmp_path_factory):
    res = _imported(tmp_path_factory, "ucsf-pdgm", mini.build_ucsf_pdgm)
    c, r = res.cohort, res.report
    assert r.kept == {"subjects": 5, "sessions": 5, "scans": 20}
    assert _dropped(r) == {("scan", "patient not in the metadata table"): 4}
    assert r.notes["metadata patient(s) without an image folder"] == 1
    t2 = c.table[c.table.sequence == "T2w"].set_index("participant_id")
    assert list(t2.index) == ["sub-UCSFPDGM0004", "sub-UCSFPDGM0005", "sub-UCSFPDGM0007", "sub-UCSFPDGM0008",
                              "sub-UCSFPDGM0010"]                            # 3-digit ids matched to 4-digit folders
    assert t2["marker"].tolist()[:4] == [0, 1, 1, 0] and np.isnan(t2.loc["sub-UCSFPDGM0010", "marker"])
    assert t2.loc["sub-UCSFPDGM0005", "survival_months"] == pytest.approx(1200 / 30.4375)
    assert t2.loc["sub-UCSFPDGM0005", "event"] == 0 and np.isnan(t2.loc["sub-UCSFPDGM0007", "survival_months"])
    assert (t2.loc["sub-UCSFPDGM0004", ["sex", "age", "who_grade", "mgmt"]].tolist() == ["M", 44, 4, 0])
    marker = build_examples(get_task("ucsf-pdgm/tumour_marker"), c)
    survival = build_examples(get_task("ucsf-pdgm/tumour_survival"), c)
    assert marker.excluded == {"no marker status": 1} and survival.excluded == {"no survival time or event": 1}


def test_import_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "release").mkdir()
    with pytest.raises(ImportFailed, match=r"no ADNIMERGE table found .*pass it with --clinical FILE"):
        import_dataset("adni", tmp_path / "release", tmp_path / "out")
    pd.DataFrame({"PTID": ["002_S_0001"], "VISCODE": ["bl"]}).to_csv(tmp_path / "release" / "ADNIMERGE.csv")
    assert main(["data", "import", "--dataset", "adni", "--root", str(tmp_path / "release")]) == 2
    err = capsys.readouterr().err
    assert "missing column(s) ['EXAMDATE', 'AGE', 'PTGENDER', 'DX']" in err


def test_splits_for_real_cohorts(adni, tmp_path, capsys):
    assert main(["splits", "make", "--cohort", str(adni.manifest)]) == 0
    split = pd.read_csv(tmp_path / "splits" / "adni" / "ad.tsv", sep="\t")
    assert len(split) == 24 and set(split.split) == {"train", "val", "test"}
    assert main(["splits", "check", "--cohort", str(adni.manifest)]) == 0
    assert "ok" in capsys.readouterr().out


def test_bench_run_on_fabricated_adni(adni, tmp_path, capsys):
    """Done-when: ``bench run --encoder random --task adni/conversion --cohort PATH`` end to end."""
    from bench.results import load_record

    out = tmp_path / "imported"
    assert main(["data", "import", "--dataset", "adni", "--root", str(adni.manifest.parent.parent / "release"),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "dropped 1 scan(s): subject not in ADNIMERGE" in printed and "adni_dropped.tsv" in printed
    cohort = str(out / "adni.tsv")
    # stratified over the subjects present: the rule's hash split of 24 subjects may leave no sMCI in test
    assert main(["splits", "make", "--cohort", cohort, "--no-rule"]) == 0
    results = tmp_path / "results"
    assert main(["run", "--encoder", "random", "--task", "adni/conversion", "--cohort", cohort, "--profile", "smoke",
                 "--seeds", "1", "--results", str(results), "--no-progress"]) == 0
    rec = load_record(results / "random" / "adni-conversion@v1" / "linear_probe.json")
    assert rec.task == "adni/conversion" and rec.provenance.cohort.name == "adni"
    assert rec.provenance.config["excluded_examples"] == {"follow-up shorter than the horizon without conversion": 19}
    test = [s for s in rec.scores if s.split == "test"]
    assert test and test[0].n_examples > 0 and test[0].metrics["auc"] is not None


def test_oasis3_takes_sex_from_participants_tsv_without_demographics(tmp_path):
    """Issue 30 item 5: a BIDS export without OASIS3_demographics.csv but with participants.tsv."""
    release = mini.build_oasis3(tmp_path / "release")
    (release / "OASIS3_demographics.csv").unlink()
    pd.DataFrame({"participant_id": [f"sub-OAS3{s:04d}" for s in range(1, 12)],
                  "sex": ["M" if s % 2 else "F" for s in range(1, 12)],
                  "age": [60.0] * 11}).to_csv(release / "participants.tsv", sep="\t", index=False)
    res = import_dataset("oasis3", release, tmp_path / "out")
    c, r = res.cohort, res.report
    assert _row(c, "sub-OAS30001", "ses-d0030").sex == "M" and _row(c, "sub-OAS30002", "ses-d0030").sex == "F"
    assert r.missing["sex"] == 3                                              # subject 12 is not listed
    assert r.columns["sex"].startswith("participants.tsv (sex)") and "age at visit" in r.columns["age"]
    assert "  source: 'sex' from participants.tsv (sex); no OASIS3_demographics.csv found" in r.lines()
    assert json.loads(res.report_json.read_text())["column_sources"]["sex"] == r.columns["sex"]


def test_importers_write_the_id_split_rules_hash(adni, tmp_path_factory):
    """split_id: ADNI's PTID; UCSF-PDGM's BraTS 2021 id, which the BraTS rule hashes too."""
    t = adni.cohort.table
    assert set(t.loc[t.participant_id == "sub-ADNI002S4000", "split_id"]) == {"002_S_4000"}
    ucsf = _imported(tmp_path_factory, "ucsf-pdgm", mini.build_ucsf_pdgm).cohort.table
    assert set(ucsf.loc[ucsf.participant_id == "sub-UCSFPDGM0004", "split_id"]) == {"BraTS2021_00004"}
