"""Rescans of the synthetic cohort (a second same-session T1w acquisition, BIDS run-02).

Adding them must leave every file generated before them byte-identical (the committed board's
records hash the cohort), a cohort generated before them is upgraded in place to exactly the
bytes of a fresh generation, and a rescan is the same anatomy imaged again: highly correlated
with its session's first scan but not equal to it, measured with an error of its own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bench.data.synth import effects as fx
from bench.data.synth import generate as gen
from bench.data.synth import rescans as rs
from bench.data.synth.generate import MEASURED_STRUCTURES, SynthConfig, generate, is_complete, lacks_only_rescans
from bench.data.synth.latents import EXTERNAL_SITE, draw_ad_subject
from tests.conftest import tree_digest

#: Seven subjects whose rescans fall on an AD follow-up session (site S2), a healthy subject of the
#: held-out site and one of S1 (found with ``rs.plan_rescans``; the test checks there are three).
CONFIG = SynthConfig(seed=2, n_ad=2, n_healthy=3, n_tumour=2)
RESCAN_TABLES = {str(rs.RESCANS_TABLE), str(rs.RESCAN_VOLUMES_TABLE)}


def _is_rescan_file(rel: str) -> bool:
    return f"_run-{rs.RESCAN_RUN}_" in rel or rel in RESCAN_TABLES


@pytest.fixture(scope="module")
def with_rescans(tmp_path_factory) -> Path:
    return generate(CONFIG, tmp_path_factory.mktemp("rescans") / "with", progress=False)


@pytest.fixture(scope="module")
def without_rescans(tmp_path_factory) -> Path:
    """The same cohort with both rescan fractions set to 0."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fx, "RESCAN_HEALTHY_SUBJECTS", 0.0)
        mp.setattr(fx, "RESCAN_AD_SESSIONS", 0.0)
        return generate(CONFIG, tmp_path_factory.mktemp("rescans") / "without", progress=False)


def _rescans(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / rs.RESCANS_TABLE, sep="\t", dtype={"run": str})


def test_rescans_leave_every_other_file_byte_identical(with_rescans, without_rescans):
    mine, theirs = tree_digest(with_rescans), tree_digest(without_rescans)
    extra = {k for k in mine if _is_rescan_file(k)}
    assert {k for k in theirs if _is_rescan_file(k)} == RESCAN_TABLES  # empty tables only
    assert len(extra) == 2 + 2 * 3  # the two tables, an image and a mask per rescan
    common = set(theirs) - RESCAN_TABLES - {gen.DONE_MARKER}
    assert set(mine) - extra - {gen.DONE_MARKER} == common
    assert all(mine[k] == theirs[k] for k in common)
    a, b = (json.loads((r / gen.DONE_MARKER).read_text()) for r in (with_rescans, without_rescans))
    assert a["mribench"].pop("rescans")["n_rescans"] == 3 and b["mribench"].pop("rescans")["n_rescans"] == 0
    assert a == b  # the marker differs only in its rescans block


def test_rescan_files_and_tables(with_rescans):
    table = _rescans(with_rescans)
    assert list(table.columns[:4]) == ["participant_id", "session_id", "run", "sequence"]
    assert (table["run"] == "02").all() and (table["sequence"] == "T1w").all()
    participants = pd.read_csv(with_rescans / "participants.tsv", sep="\t").set_index("participant_id")
    assert set(participants.loc[table["participant_id"], "population"]) == {"ad", "healthy"}
    assert (table.filter(like="_mm").abs() < 5 * fx.RESCAN_TRANSLATION_SD_MM).all().all()
    for sub, ses in zip(table.participant_id, table.session_id):
        assert (with_rescans / sub / ses / "anat" / f"{sub}_{ses}_run-02_T1w.nii.gz").is_file()
        assert (with_rescans / "derivatives" / "synth" / sub / ses / "anat"
                / f"{sub}_{ses}_run-02_desc-brain_mask.nii.gz").is_file()
    volumes = pd.read_csv(with_rescans / rs.RESCAN_VOLUMES_TABLE, sep="\t", dtype={"run": str})
    assert list(volumes.columns) == ["participant_id", "session_id", "run", "sequence", *MEASURED_STRUCTURES]
    assert volumes[["participant_id", "session_id"]].equals(table[["participant_id", "session_id"]])
    assert is_complete(with_rescans, CONFIG)


def _load(root: Path, sub: str, ses: str, run: str) -> tuple[np.ndarray, np.ndarray]:
    entity = f"_run-{run}" if run != "01" else ""
    image = nib.load(root / sub / ses / "anat" / f"{sub}_{ses}{entity}_T1w.nii.gz").get_fdata()
    mask = nib.load(root / "derivatives" / "synth" / sub / ses / "anat"
                    / f"{sub}_{ses}{entity}_desc-brain_mask.nii.gz").get_fdata() > 0
    return image, mask


def test_rescan_is_the_same_anatomy_acquired_again(with_rescans):
    participants = pd.read_csv(with_rescans / "participants.tsv", sep="\t").set_index("participant_id")
    for r in _rescans(with_rescans).itertuples():
        first, first_mask = _load(with_rescans, r.participant_id, r.session_id, "01")
        again, again_mask = _load(with_rescans, r.participant_id, r.session_id, "02")
        brain = first_mask & again_mask
        assert not np.array_equal(first, again) and brain.sum() > 0.95 * first_mask.sum()
        corr = np.corrcoef(first[brain], again[brain])[0, 1]
        # the held-out site's strong bias field (amplitude 0.30) is redrawn for the rescan, as every
        # scanner effect is: its two acquisitions agree less (0.83 here) than the other sites' (> 0.93)
        held_out = participants.loc[r.participant_id, "site"] == EXTERNAL_SITE
        assert corr > (0.75 if held_out else 0.9), (r.participant_id, corr)


def test_rescan_volumes_carry_a_measurement_error_of_their_own(with_rescans):
    volumes = pd.read_csv(with_rescans / "derivatives" / "synth" / "volumes.tsv", sep="\t")
    again = pd.read_csv(with_rescans / rs.RESCAN_VOLUMES_TABLE, sep="\t", dtype={"run": str})
    first = volumes.set_index(["participant_id", "session_id"]).loc[
        list(zip(again.participant_id, again.session_id)), list(MEASURED_STRUCTURES)]
    log_ratio = np.log(again[list(MEASURED_STRUCTURES)].to_numpy() / first.to_numpy())
    cv = np.array([fx.MEASUREMENT_CV[k] for k in MEASURED_STRUCTURES])
    assert (log_ratio != 0).any(axis=1).all()  # never a copy of the first measurement
    assert (np.abs(log_ratio) < 5 * np.sqrt(2) * cv + 0.001).all()  # two errors of CV each, and rounding
    # the error's size, on many rescans of made-up sessions (the table function alone)
    plans = [rs.RescanPlan(0, i, 0, f"sub-{i + 1:04d}", "ses-M00", "healthy", "S1", (0, 0, 0), (0, 0, 0))
             for i in range(800)]
    truth = {(p.participant_id, p.session_id): dict.fromkeys(MEASURED_STRUCTURES, 1000.0) for p in plans}
    bias = {"S1": dict.fromkeys(MEASURED_STRUCTURES, 1.0)}
    drawn = rs.rescan_volumes(plans, truth, bias, MEASURED_STRUCTURES)
    sd = np.log(drawn[list(MEASURED_STRUCTURES)].to_numpy() / 1000.0).std(axis=0)
    assert np.allclose(sd, cv, rtol=0.12), dict(zip(MEASURED_STRUCTURES, sd))


def _strip_to_before_rescans(src: Path, dst: Path) -> Path:
    """What the generator wrote before rescans existed: the tree without rescans, no rescans block."""
    shutil.copytree(src, dst)
    for table in RESCAN_TABLES:
        (dst / table).unlink()
    description = json.loads((dst / gen.DONE_MARKER).read_text())
    del description["mribench"]["rescans"]
    (dst / gen.DONE_MARKER).write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
    return dst


def test_upgrade_in_place_gives_the_fresh_bytes_and_survives_interruption(with_rescans, without_rescans, tmp_path,
                                                                          monkeypatch):
    old = _strip_to_before_rescans(without_rescans, tmp_path / "old")
    before = tree_digest(old)
    assert not is_complete(old, CONFIG) and lacks_only_rescans(old, CONFIG)
    monkeypatch.setattr(gen, "render_subject", lambda *a, **k: pytest.fail("a main scan was rendered again"))
    real_marker = gen._write_marker

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(gen, "_write_marker", killed)  # interrupted after the files were moved in
    with pytest.raises(KeyboardInterrupt):
        generate(CONFIG, old, progress=False)
    assert not is_complete(old, CONFIG) and lacks_only_rescans(old, CONFIG)
    assert [p.name for p in tmp_path.iterdir()] == ["old"]  # no partial folder left
    monkeypatch.setattr(gen, "_write_marker", real_marker)
    generate(CONFIG, old, progress=False)
    after = tree_digest(old)
    assert after == tree_digest(with_rescans)
    assert all(after[k] == v for k, v in before.items() if k != gen.DONE_MARKER)


def test_declared_fractions():
    seed, n = 11, 20000
    healthy = np.mean([rs.is_rescanned(seed, "healthy", i, 0) for i in range(n)])
    ad = np.mean([rs.is_rescanned(seed, "ad", i // 4, i % 4) for i in range(n)])
    assert abs(healthy - fx.RESCAN_HEALTHY_SUBJECTS) < 4 * np.sqrt(0.25 * 0.75 / n)
    assert abs(ad - fx.RESCAN_AD_SESSIONS) < 4 * np.sqrt(0.13 * 0.87 / n)
    assert not any(rs.is_rescanned(seed, "tumour", i, 0) for i in range(2000))
    subjects = [draw_ad_subject(seed, i) for i in range(1500)]  # real visit schedules
    plans = rs.plan_rescans(seed, subjects)
    n_sessions = sum(len(s.visits) for s in subjects)
    share = sum(len(p) for p in plans.values()) / n_sessions
    assert abs(share - fx.RESCAN_AD_SESSIONS) < 4 * np.sqrt(0.13 * 0.87 / n_sessions)
