"""Perturbations: seeded, recorded, monotone in severity; the robustness protocol end to end."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from bench.data.spaces import get_space, resample_to_space
from bench.errors import MribenchError
from bench.perturbations import (PERTURBATIONS, SEVERITIES, block_parameters, draw_parameters, parameters_digest,
                                 perturb_scan)

SPACE = get_space("cpu-small")


@pytest.fixture(scope="module")
def volumes(tiny_cohort_dir):
    """Two T1w scans of the tiny synthetic cohort in the cpu-small space."""
    from bench.data.bids import read_bids

    cohort = read_bids(tiny_cohort_dir)
    t = cohort.table[cohort.table.sequence == "T1w"].drop_duplicates("participant_id").head(2)
    out = []
    for _, row in t.iterrows():
        vol, affine = cohort.load(row.name)
        out.append((resample_to_space(vol, affine, SPACE), row.participant_id, row.session_id))
    return out


def _perturb(volume, name, severity, subject, session, seed=0):
    return perturb_scan(volume, name, severity, seed=seed, subject=subject, session=session, sequence="T1w",
                        spacing_mm=SPACE.spacing_mm)


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_same_seed_gives_identical_volumes_and_recorded_parameters(volumes, name):
    vol, sub, ses = volumes[0]
    a, pa = _perturb(vol, name, 3, sub, ses)
    b, pb = _perturb(vol.copy(), name, 3, sub, ses)
    assert np.array_equal(a, b)
    assert pa == pb == draw_parameters(name, 3, seed=0, subject=sub, session=ses, sequence="T1w")
    assert pa["severity"] == 3 and pa["level"] == PERTURBATIONS[name].levels[2]
    json.dumps(pa)  # parameters go into the JSON record as they are
    assert a.shape == vol.shape and a.dtype == np.float32 and np.isfinite(a).all()
    assert not np.array_equal(a, vol)


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_deviation_from_clean_grows_with_severity(volumes, name):
    for vol, sub, ses in volumes:
        mse = [float(((_perturb(vol, name, s, sub, ses)[0] - vol) ** 2).mean()) for s in SEVERITIES]
        assert all(np.diff(mse) > 0), f"{name} on {sub}: MSE by severity {np.round(mse, 5)}"


def test_parameters_depend_on_the_scan_and_seed_only():
    stochastic = ("bias_field", "gaussian_noise", "rician_noise", "motion", "spike")  # continuous draws
    for name in stochastic:
        a = draw_parameters(name, 2, seed=0, subject="sub-1", session="ses-A")
        assert a == draw_parameters(name, 2, seed=0, subject="sub-1", session="ses-A")
        others = [draw_parameters(name, 2, seed=1, subject="sub-1", session="ses-A"),
                  draw_parameters(name, 2, seed=0, subject="sub-2", session="ses-A"),
                  draw_parameters(name, 2, seed=0, subject="sub-1", session="ses-B")]
        assert all(o != a for o in others), name


def test_unknown_perturbation_or_severity_is_a_clear_error():
    with pytest.raises(MribenchError, match="unknown perturbation 'zipper'"):
        draw_parameters("zipper", 1, seed=0, subject="s", session="t")
    with pytest.raises(MribenchError, match="severity must be one of"):
        draw_parameters("blur", 6, seed=0, subject="s", session="t")


@pytest.mark.slow
def test_robustness_protocol_records_every_setting_and_hits_the_cache(tmp_path, monkeypatch):
    from bench.protocols import robustness
    from bench.data.sources import open_cohort
    from bench.leaderboard.verify import verify_path
    from bench.profiles import get_profile
    from bench.results import load_record
    from bench.runner import Runner

    smoke = open_cohort(None, profile="smoke", progress=False)
    profile = replace(get_profile("smoke"), seeds=2, n_boot=50)
    subset = {k: PERTURBATIONS[k] for k in ("gaussian_noise", "blur")}  # the full grid is the CLI's job
    monkeypatch.setattr(robustness, "PERTURBATIONS", subset)
    runner = Runner(smoke, profile, tmp_path / "results", progress=False, cache_root=tmp_path / "cache")
    (result,) = runner.run("intensity", ["ad_diagnosis"], ["robustness"])
    assert result.status == "done"
    record = load_record(result.path)
    settings = {s.setting for s in record.scores}
    assert settings == {"clean"} | {f"{p}@{s}" for p in subset for s in SEVERITIES}
    assert {(s.seed, s.split) for s in record.scores if s.setting == "blur@5"} == {
        (seed, split) for seed in (0, 1) for split in ("test", "external")}
    rb = record.robustness
    test = rb["splits"]["test"]
    for p in subset:
        for s in SEVERITIES:
            mean = np.mean([x.metrics["auc"] for x in record.scores if x.setting == f"{p}@{s}" and x.split == "test"])
            assert test["score"][p][str(s)] == pytest.approx(mean)
            assert test["relative"][p][str(s)] == pytest.approx(mean / test["clean"])
    expected = np.mean([v for r in test["relative"].values() for v in r.values()])
    assert rb["robustness_score"] == pytest.approx(expected)
    # every evaluated scan is named and its parameters pinned by their SHA-256, not stored; they
    # recompute to the ones the hash gives, and verify accepts the record
    assert "parameters" not in rb and rb["severities"] == list(SEVERITIES)
    evaluated = {x["participant_id"] for x in record.predictions if x["split"] in ("test", "external")}
    assert {sub for sub, _, _ in rb["scans"]} == evaluated
    params = block_parameters(rb)
    assert set(params) == set(subset) and rb["parameters_sha256"] == parameters_digest(params)
    sub, ses, seq = rb["scans"][0]
    assert params["gaussian_noise"]["4"][f"{sub}_{ses}_{seq}"] == draw_parameters(
        "gaussian_noise", 4, seed=0, subject=sub, session=ses, sequence=seq)
    verdict = verify_path(result.path)
    assert verdict.ok, verdict.problems
    # a second run (overwrite) embeds nothing: clean and perturbed embeddings come from the cache
    computed = runner.embeddings.computed
    assert computed > 0
    again = Runner(smoke, profile, tmp_path / "results", progress=False, overwrite=True,
                   cache_root=tmp_path / "cache")
    (second,) = again.run("intensity", ["ad_diagnosis"], ["robustness"])
    assert again.embeddings.computed == 0
    assert load_record(second.path).robustness["splits"] == rb["splits"]


@pytest.mark.slow
def test_robustness_refuses_the_oracle(tmp_path):
    from bench.data.sources import open_cohort
    from bench.profiles import get_profile
    from bench.runner import Runner

    smoke = open_cohort(None, profile="smoke", progress=False)
    runner = Runner(smoke, replace(get_profile("smoke"), seeds=1, n_boot=20), tmp_path, progress=False,
                    cache_root=tmp_path / "cache")
    with pytest.raises(MribenchError, match="reads latents, not voxels"):
        runner.run("oracle", ["brain_age"], ["robustness"])
