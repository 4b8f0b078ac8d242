"""Seed checkpoints: an interrupted fine-tuning job keeps its finished seeds, and resuming it
writes the record an uninterrupted run writes."""

from __future__ import annotations

from dataclasses import replace

import pytest

import bench.protocols.finetune as finetune
from bench.data.sources import open_cohort
from bench.errors import MribenchError
from bench.profiles import get_profile
from bench.results import SettingScore, load_record
from bench.runner import Runner
from bench.seed_checkpoints import SeedCheckpoints


def _score(seed: int, value: float) -> SettingScore:
    return SettingScore(setting="full", seed=seed, split="test", metrics={"mae": value},
                        n_subjects=3, n_examples=4, params={"best_val_loss": 0.25})


def test_checkpoints_round_trip_and_belong_to_one_identity(tmp_path):
    folder = tmp_path / "job.seeds"
    store = SeedCheckpoints(folder, {"weights": "a", "seeds": [0, 1]})
    assert store.load("full", 0) is None
    preds = [{"example_id": "e1", "seed": 0, "y_pred": 1.0 / 3.0}]
    store.save("full", 0, [_score(0, 2.0 / 3.0)], preds)
    scores, kept = SeedCheckpoints(folder, {"seeds": [0, 1], "weights": "a"}).load("full", 0)
    assert scores == [_score(0, 2.0 / 3.0)] and kept == preds  # floats exactly, key order irrelevant
    assert store.finished() == ["full-seed0.json"]
    # other weights: the finished seeds are another run's, so they are discarded
    assert SeedCheckpoints(folder, {"weights": "b", "seeds": [0, 1]}).load("full", 0) is None
    again = SeedCheckpoints(folder, {"weights": "b", "seeds": [0, 1]})
    again.save("full", 0, [_score(0, 1.0)], [])
    assert SeedCheckpoints(folder, {"weights": "b", "seeds": [0, 1]}, fresh=True).finished() == []
    again.clear()
    assert not folder.exists()


def test_an_unreadable_checkpoint_is_a_one_line_error_naming_it(tmp_path):
    store = SeedCheckpoints(tmp_path / "job.seeds", {"weights": "a"})
    (store.folder / "full-seed1.json").write_text("{not json")
    with pytest.raises(MribenchError, match=r"full-seed1\.json: unreadable seed checkpoint .*train seed 1 of full"):
        store.load("full", 1)


@pytest.mark.slow
def test_an_interrupted_finetune_job_resumes_from_its_finished_seeds(tmp_path, monkeypatch):
    smoke = open_cohort(None, profile="smoke", progress=False)
    quick = replace(get_profile("smoke"), finetune_epochs=1, seeds=2, n_boot=50)
    trained = []
    real = finetune._finetune_seed

    def counted(ctx, vols, seed, subjects, setting):
        trained.append(seed)
        if seed == 1 and interrupt:
            raise KeyboardInterrupt  # a session that ends in the job's last seed
        return real(ctx, vols, seed, subjects, setting)

    monkeypatch.setattr(finetune, "_finetune_seed", counted)
    results = tmp_path / "results"
    runner = Runner(smoke, quick, results, progress=False, cache_root=tmp_path / "cache")
    interrupt = True
    with pytest.raises(KeyboardInterrupt):
        runner.run("simclr3d@init", ["brain_age"], ["finetune"])
    (job,) = runner.jobs(["simclr3d@init"], ["brain_age"], ["finetune"])
    assert sorted(p.name for p in job.seeds_path(results).glob("*-seed*.json")) == ["full-seed0.json"]
    assert not job.record_path(results).exists()

    interrupt = False
    trained.clear()
    (resumed,) = runner.run("simclr3d@init", ["brain_age"], ["finetune"])
    assert trained == [1]  # seed 0 was read back, not trained again
    assert not job.seeds_path(results).exists()  # gone once the record is written

    trained.clear()
    fresh = Runner(smoke, quick, tmp_path / "fresh", progress=False, cache_root=tmp_path / "cache")
    (whole,) = fresh.run("simclr3d@init", ["brain_age"], ["finetune"])
    assert trained == [0, 1]
    a, b = load_record(resumed.path), load_record(whole.path)
    assert a.main_score == b.main_score and a.summary == b.summary
    assert [(s.seed, s.split, s.metrics, s.ci) for s in a.scores] == [(s.seed, s.split, s.metrics, s.ci) for s in b.scores]
    assert a.predictions == b.predictions and len(a.predictions) > 0


@pytest.mark.slow
def test_finetune_fractions_takes_its_100_percent_seeds_from_the_finetune_record(tmp_path, monkeypatch):
    """``fraction=1`` trains exactly what ``finetune`` trains (``Protocol.same_as``): with the job's
    finetune record in the folder, those seeds are not trained again, and the record written is the
    one a run without that record writes. A finetune record of another run lends nothing."""
    smoke = open_cohort(None, profile="smoke", progress=False)
    quick = replace(get_profile("smoke"), finetune_epochs=1, seeds=1, n_boot=50)
    trained = []
    real = finetune._finetune_seed

    def counted(ctx, vols, seed, subjects, setting):
        trained.append((setting.label, seed))
        return real(ctx, vols, seed, subjects, setting)

    monkeypatch.setattr(finetune, "_finetune_seed", counted)

    def run(results, profile, protocol):
        trained.clear()
        runner = Runner(smoke, profile, results, progress=False, cache_root=tmp_path / "cache")
        (done,) = runner.run("simclr3d@init", ["brain_age"], [protocol])
        return load_record(done.path)

    run(tmp_path / "shared", quick, "finetune")
    shared = run(tmp_path / "shared", quick, "finetune_fractions")
    assert sorted(trained) == [("fraction=0.01", 0), ("fraction=0.1", 0), ("fraction=0.2", 0)]
    alone = run(tmp_path / "alone", quick, "finetune_fractions")
    assert ("fraction=1", 0) in trained
    assert shared.scores == alone.scores and shared.summary == alone.summary
    assert shared.predictions == alone.predictions and len(shared.predictions) > 0

    run(tmp_path / "other", replace(quick, seeds=2), "finetune")  # another run's identity (seeds)
    run(tmp_path / "other", quick, "finetune_fractions")
    assert ("fraction=1", 0) in trained
