"""The synthetic cohort: determinism, BIDS layout, and that simulated effects go the right way."""

from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.data.bids import read_bids
from bench.data.synth.anatomy import load_anatomy
from bench.data.synth.generate import SynthConfig, generate, is_complete
from bench.data.synth.effects import MRI_VISIT_MONTHS
from bench.data.synth.latents import EXTERNAL_SITE, SITES, draw_ad_subject
from bench.data.synth.render import Renderer
from tests.conftest import TINY, tree_digest


def test_tree_layout(tiny_cohort_dir):
    root = tiny_cohort_dir
    desc = json.loads((root / "dataset_description.json").read_text())
    assert desc["mribench"]["seed"] == 0 and desc["mribench"]["external_site"] == EXTERNAL_SITE
    participants = pd.read_csv(root / "participants.tsv", sep="\t")
    assert len(participants) == TINY.n_subjects
    first = participants.participant_id.iloc[0]
    sessions = pd.read_csv(root / first / f"{first}_sessions.tsv", sep="\t")
    assert list(sessions.columns[:2]) == ["session_id", "months_from_baseline"]
    for ses in sessions.session_id:
        img = nib.load(root / first / ses / "anat" / f"{first}_{ses}_T1w.nii.gz")
        assert img.shape == (88, 104, 88) and np.allclose(np.diag(img.affine)[:3], 2.0)
        assert (root / "derivatives" / "synth" / first / ses / "anat" /
                f"{first}_{ses}_desc-brain_mask.nii.gz").is_file()
    tumour = participants[participants.population == "tumour"].participant_id.iloc[0]
    anat = root / tumour / "ses-M00" / "anat"
    assert {p.name.split("_")[-1] for p in anat.iterdir()} == {"T1w.nii.gz", "T2w.nii.gz", "FLAIR.nii.gz"}
    truth = pd.read_csv(root / "derivatives" / "synth" / "ground_truth.tsv", sep="\t")
    n_files = sum(1 for f in root.glob("sub-*/ses-*/anat/*.nii.gz") if "_run-" not in f.name)
    assert len(truth) == n_files  # one truth row per first acquisition; rescans (run-02) are in rescans.tsv
    rescans = pd.read_csv(root / "derivatives" / "synth" / "rescans.tsv", sep="\t")
    assert len(rescans) == sum(1 for _ in root.glob("sub-*/ses-*/anat/*_run-02_T1w.nii.gz"))
    assert {"stage", "hippocampus_ml", "ventricles_ml", "ad_month_true"} <= set(truth.columns)


def test_same_seed_identical_other_seed_differs(tiny_cohort_dir, tmp_path):
    again = generate(TINY, tmp_path / "again", progress=False)
    assert tree_digest(again) == tree_digest(tiny_cohort_dir)
    other = generate(dataclasses.replace(TINY, seed=1), tmp_path / "other", progress=False)
    a, b = tree_digest(tiny_cohort_dir), tree_digest(other)
    assert a.keys() != b.keys() or a != b
    shared = set(a) & set(b)
    assert any(a[k] != b[k] for k in shared if k.endswith("_T1w.nii.gz"))


def test_generation_is_cached_and_atomic(tiny_cohort_dir, tmp_path, monkeypatch):
    assert is_complete(tiny_cohort_dir, TINY)
    assert not is_complete(tiny_cohort_dir, dataclasses.replace(TINY, seed=5))
    # a second call with the same config renders nothing
    from bench.data.synth import generate as gen_mod

    monkeypatch.setattr(gen_mod, "render_subject", lambda *a, **k: pytest.fail("regenerated"))
    generate(TINY, tiny_cohort_dir, progress=False)
    # a crash mid-generation leaves neither the target nor a partial folder behind
    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(gen_mod, "render_subject", boom)
    with pytest.raises(RuntimeError):
        generate(TINY, tmp_path / "crashed", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bids_round_trip(tiny_cohort_dir):
    cohort = read_bids(tiny_cohort_dir)
    participants = pd.read_csv(tiny_cohort_dir / "participants.tsv", sep="\t", na_values="n/a")
    subj = cohort.subjects().set_index("participant_id")
    for r in participants.itertuples():
        assert subj.loc[r.participant_id, "sex"] == r.sex
        assert subj.loc[r.participant_id, "site"] == r.site
        assert subj.loc[r.participant_id, "age"] == pytest.approx(r.age)
    truth = cohort.ground_truth.set_index(["participant_id", "session_id", "sequence"])
    for r in cohort.table.itertuples():
        t = truth.loc[(r.participant_id, r.session_id, r.sequence)]
        assert r.months_from_baseline == pytest.approx(t.months_from_baseline)
        assert r.age == pytest.approx(t.age, abs=0.01)
        if r.population == "ad":
            assert r.diagnosis == t.diagnosis
    assert cohort.table["mask_path"].notna().all()
    tumour = cohort.table[cohort.table.population == "tumour"]
    assert tumour["seg_path"].notna().all()
    labels = nib.load(tumour["seg_path"].iloc[0]).get_fdata()
    assert set(np.unique(labels)) == {0, 1, 2}


def test_conversion_months_match_labels():
    for i in range(300):
        s = draw_ad_subject(0, i)
        ad_month = s.ad_month_true
        for v in s.visits:
            assert (s.diagnosis(v.month) == "AD") == (v.month >= ad_month)
        if not np.isnan(s.conversion_month):
            assert 0 < s.conversion_month <= s.last_known_month
            assert s.conversion_month == pytest.approx(ad_month)
        dx = [s.diagnosis(v.month) for v in s.visits]
        order = {"CN": 0, "MCI": 1, "AD": 2}
        assert all(order[a] <= order[b] for a, b in zip(dx, dx[1:])), "diagnosis must not regress"


def test_visits_are_irregular_and_variable_length():
    subjects = [draw_ad_subject(0, i) for i in range(200)]
    lengths = {len(s.visits) for s in subjects}
    assert min(lengths) == 1 and max(lengths) == len(MRI_VISIT_MONTHS) and len(lengths) >= 3
    # clinical follow-up continues after the last MRI session (ADNI's clinical visits)
    assert all(s.last_known_month >= s.visits[-1].month for s in subjects)
    assert np.mean([s.last_known_month > s.visits[-1].month + 12 for s in subjects]) > 0.5
    months = [v.month for s in subjects for v in s.visits if v.session_id == "ses-M12"]
    assert np.std(months) > 0.3  # jittered around the nominal month
    assert {s.site for s in subjects} == {site.name for site in SITES}


@pytest.fixture(scope="module")
def renderer():
    return Renderer(load_anatomy(2), 2)


def _measures(renderer, subject, **changes):
    s = dataclasses.replace(subject, **changes)
    return renderer.render_session(s, renderer.subject_field(s, 0), 0, ("T1w",), 0).measures


def test_hippocampus_shrinks_and_ventricles_grow_with_stage(renderer):
    base = draw_ad_subject(0, 0)
    # onset far in the future (stage ~0), at baseline (0.5), long past (~1)
    m = [_measures(renderer, base, onset_years=o, age0=70.0) for o in (40.0, 0.0, -20.0)]
    hippo = [x["hippocampus_ml"] for x in m]
    vent = [x["ventricles_ml"] for x in m]
    assert hippo[0] > hippo[1] > hippo[2] and hippo[2] < 0.85 * hippo[0]
    assert vent[0] < vent[1] < vent[2] and vent[2] > 1.35 * vent[0]


def test_ventricles_grow_and_grey_matter_falls_with_age(renderer):
    base = draw_ad_subject(0, 0)
    m = [_measures(renderer, base, onset_years=40.0, age0=a) for a in (60.0, 72.0, 85.0)]
    vent = [x["ventricles_ml"] for x in m]
    gm = [x["gm_ml"] for x in m]
    assert vent[0] < vent[1] < vent[2]
    assert gm[0] > gm[1] > gm[2]
    assert m[0]["icv_ml"] == pytest.approx(m[2]["icv_ml"], rel=1e-3)  # the skull does not shrink


def test_effects_hold_across_the_generated_cohort(tiny_cohort_dir):
    truth = pd.read_csv(tiny_cohort_dir / "derivatives" / "synth" / "ground_truth.tsv", sep="\t")
    ad = truth[truth.diagnosis.notna()]
    rho_h = stats.spearmanr(ad.stage, ad.hippocampus_ml / ad.icv_ml).statistic
    rho_v = stats.spearmanr(ad.stage + 0.02 * (ad.age - 55), ad.ventricles_ml / ad.icv_ml).statistic
    assert rho_h < -0.3 and rho_v > 0.3


def test_tumour_marker_changes_appearance_and_hazard(renderer):
    from bench.data.synth.generate import tumour_candidate_centres
    from bench.data.synth.latents import draw_tumour_subject

    centres = tumour_candidate_centres(renderer)
    subjects = [draw_tumour_subject(0, i, centres) for i in range(400)]
    mutant = np.array([s.marker for s in subjects]) == 1
    survival = np.array([s.survival_true for s in subjects])
    assert np.median(survival[mutant]) > np.median(survival[~mutant])  # the marker protects
    events = np.array([s.event for s in subjects])
    assert 0.2 < events.mean() < 0.95  # some censoring, not all
    # the T2-FLAIR mismatch: a mutant core is much darker on FLAIR than on T2w
    s = next(x for x in subjects if x.marker == 1)
    out = renderer.render_session(s, renderer.subject_field(s, 0), 0, ("T2w", "FLAIR"), 0)
    core = out.tumour_labels == 2
    ratio = {q: out.images[q][core].mean() / out.images[q][out.brain_mask > 0].mean() for q in ("T2w", "FLAIR")}
    assert ratio["FLAIR"] < ratio["T2w"]


def test_subjects_option_scales_the_cohort():
    cfg = SynthConfig.from_profile("default", seed=3, subjects=40)
    assert cfg.n_subjects == 40 and cfg.n_tumour >= 2 and cfg.n_healthy >= 2
    assert SynthConfig.from_profile("smoke").n_ad < SynthConfig.from_profile("default").n_ad
