"""The harness end to end on the smoke cohort: task specs, examples, embedding cache, records, resume."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.data.sources import open_cohort
from bench.encoders import get_encoder
from bench.errors import MribenchError
from bench.profiles import get_profile
from bench.results import load_record, record_path
from bench.runner import Runner, prepare_task
from bench.splits import file_sha256
from bench.tasks import build_examples, get_task, list_tasks, load_task_file, tasks_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke():
    # generated once into the test session's cache; the committed synth-smoke splits must fit it
    return open_cohort(None, profile="smoke", progress=False)


@pytest.fixture(scope="module")
def profile():
    return replace(get_profile("smoke"), seeds=1, n_boot=50, few_shot_draws=1)


def test_every_shipped_spec_loads_and_hashes_stably():
    tasks = list_tasks()
    assert {"ad_diagnosis", "conversion", "conversion_detection", "time_to_conversion", "brain_age",
            "tumour_segmentation", "tumour_survival", "tumour_marker", "sequence_classification"} <= set(tasks)
    for name, spec in tasks.items():
        assert spec.sha256 == get_task(name).sha256 and len(spec.sha256) == 64


def test_schema_rejects_unknown_keys_and_bad_metrics(tmp_path):
    text = (tasks_dir() / "brain_age.yaml").read_text()
    bad = tmp_path / "brain_age.yaml"
    bad.write_text(text + "colour: blue\n")
    with pytest.raises(MribenchError, match="invalid task spec at 'colour'.*Extra inputs"):
        load_task_file(bad)
    bad.write_text(text.replace("main_score: mae", "main_score: dice"))
    with pytest.raises(MribenchError, match="main_score 'dice' is not among metrics"):
        load_task_file(bad)
    bad.write_text(text.replace("higher_is_better: false", "higher_is_better: true"))
    with pytest.raises(MribenchError, match="contradicts"):
        load_task_file(bad)


def test_examples_never_cross_splits(smoke):
    for name, spec in list_tasks().items():
        examples, split = prepare_task(spec, smoke)
        side = split.table.set_index("participant_id")["split"]
        per_subject = examples.table.groupby("participant_id")["split"].nunique()
        assert (per_subject == 1).all(), name
        assert (examples.table["split"] == examples.table["participant_id"].map(side)).all(), name
        for rows in examples.rows:  # every scan an example reads belongs to its subject
            subjects = set(smoke.table.loc[rows.ravel(), "participant_id"])
            assert len(subjects) == 1, name


def test_sequence_inputs_have_the_right_lengths_and_months(smoke):
    spec = get_task("conversion")
    ex = build_examples(spec, smoke)
    assert ex.table["n_steps"].min() >= 1 and ex.table["n_steps"].max() > 1
    t = smoke.table
    for i, row in ex.table.iterrows():
        rows, months = ex.rows[i], ex.months[i]
        sessions = t[(t.participant_id == row.participant_id) & (t.sequence == "T1w")]
        index_month = sessions.loc[sessions.session_id == row.session_id, "months_from_baseline"].iloc[0]
        expected = sessions[sessions.months_from_baseline <= index_month]
        assert len(rows) == len(expected) == row.n_steps
        assert np.array_equal(months, expected.months_from_baseline.to_numpy())
        assert np.all(np.diff(months) > 0)
        assert t.loc[rows[-1, 0], "diagnosis"] == "MCI"  # the index visit
        conv = sessions.conversion_month.iloc[0]
        assert row.y == int(not np.isnan(conv) and conv <= index_month + 36)
    whole = build_examples(get_task("conversion_detection"), smoke)
    sizes = smoke.table[smoke.table.population == "ad"].groupby("participant_id").session_id.nunique()
    assert (whole.table.set_index("participant_id").n_steps == sizes[whole.table.participant_id].to_numpy()).all()


class CountingEncoder:
    """Wraps an encoder and counts the volumes it embeds."""

    def __init__(self, inner):
        self.inner, self.card, self.volumes = inner, inner.card, 0

    def embed(self, volumes):
        self.volumes += len(volumes)
        return self.inner.embed(volumes)

    def checkpoint_hash(self):
        return self.inner.checkpoint_hash()


def test_linear_probe_grid_embeds_each_scan_once(smoke, profile, tmp_path, monkeypatch):
    encoder = CountingEncoder(get_encoder("random"))
    monkeypatch.setattr("bench.encoders.get_encoder", lambda spec: encoder)
    runner = Runner(smoke, profile, tmp_path / "results", progress=False, cache_root=tmp_path / "cache")
    results = runner.run("random", ["ad_diagnosis"], ["linear_probe", "fractions", "few_shot"])
    assert [r.status for r in results] == ["done"] * 3
    examples, _ = prepare_task(get_task("ad_diagnosis"), smoke)
    assert encoder.volumes == len(examples.scan_rows())  # 5 fractions x seeds + k-shot: one pass
    record = load_record(results[1].path)
    settings = {s.setting for s in record.scores}
    assert settings == {"fraction=0.01", "fraction=0.1", "fraction=0.2", "fraction=0.5", "fraction=1"}
    # a second runner on the same cache recomputes nothing
    again = Runner(smoke, profile, tmp_path / "results2", progress=False, cache_root=tmp_path / "cache")
    again.run("random", ["ad_diagnosis"], ["linear_probe"])
    assert encoder.volumes == len(examples.scan_rows())


def test_record_provenance_and_headline(smoke, profile, tmp_path):
    runner = Runner(smoke, profile, tmp_path, progress=False, cache_root=tmp_path / "cache")
    (result,) = runner.run("oracle", ["brain_age"], ["linear_probe"])
    record = load_record(result.path)
    spec = get_task("brain_age")
    prov = record.provenance
    assert prov.task_spec_sha256 == spec.sha256
    assert prov.split_sha256 == file_sha256(spec.split_path("synth-smoke"))
    assert prov.split_file == "splits/synth-smoke/healthy.tsv"  # brain_age v2: the healthy population
    assert prov.checkpoint_sha256 == get_encoder("oracle").checkpoint_hash()
    assert {"torch", "numpy", "scikit-learn"} <= set(prov.libraries)
    assert record.main_score_name == "mae" and record.higher_is_better is False
    test_scores = [s.metrics["mae"] for s in record.scores if s.split == "test" and s.setting == "full"]
    assert record.main_score == pytest.approx(np.mean(test_scores))
    for s in record.scores:
        ci = s.ci["mae"]
        assert ci.low <= ci.point <= ci.high
    assert record.predictions and {p["split"] for p in record.predictions} <= {"test", "external"}


def test_resume_after_crash_writes_exactly_the_missing_records(smoke, profile, tmp_path, monkeypatch):
    from bench import runner as runner_mod

    jobs = [("brain_age", "linear_probe"), ("brain_age", "fractions"), ("ad_diagnosis", "linear_probe")]
    real = runner_mod.run_protocol
    calls = []

    def crash_on_third(name, ctx):
        calls.append((ctx.spec.name, name))
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the third job
        return real(name, ctx)

    monkeypatch.setattr(runner_mod, "run_protocol", crash_on_third)
    r = Runner(smoke, profile, tmp_path / "res", progress=False, cache_root=tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        r.run("oracle", ["brain_age", "ad_diagnosis"], ["linear_probe", "fractions"])
    from bench.tasks import get_task

    paths = {j: record_path(tmp_path / "res", "oracle", j[0], get_task(j[0]).version, j[1]) for j in jobs}
    assert paths[jobs[0]].is_file() and paths[jobs[1]].is_file() and not paths[jobs[2]].exists()
    assert not list((tmp_path / "res").rglob("*.tmp"))
    before = {j: p.stat().st_mtime_ns for j, p in paths.items() if p.exists()}
    monkeypatch.setattr(runner_mod, "run_protocol", real)
    results = r.run("oracle", ["brain_age", "ad_diagnosis"], ["linear_probe", "fractions"])
    status = {(x.task, x.protocol): x.status for x in results}
    assert status[jobs[0]] == status[jobs[1]] == "reused"
    # a reused record still reports its headline score and CI (what the first command prints on a clone)
    first = next(x for x in results if (x.task, x.protocol) == jobs[0])
    record = json.loads(paths[jobs[0]].read_text())
    assert first.main_score == pytest.approx(record["main_score"]) and None not in first.ci
    assert status[jobs[2]] == "done" and status[("ad_diagnosis", "fractions")] == "done"
    assert all(paths[j].stat().st_mtime_ns == t for j, t in before.items())


def test_submitted_encoder_from_a_file_runs_from_the_cli(smoke, tmp_path, capsys):
    enc = tmp_path / "my_encoder.py"
    enc.write_text(
        "import torch\n"
        "from bench.encoders import Encoder, EncoderCard\n"
        "class MeanIntensity(Encoder):\n"
        "    card = EncoderCard(name='mean-intensity', architecture='pooling', n_parameters=0,\n"
        "                       embed_dim=4, input_space='cpu-small', ssl_method='none')\n"
        "    def embed(self, v):\n"
        "        x = v.flatten(1)\n"
        "        return torch.stack([x.mean(1), x.std(1), (x > 1).float().mean(1), (x < -1).float().mean(1)], 1)\n")
    results = tmp_path / "results"
    code = main(["run", "--encoder", f"{enc}:MeanIntensity", "--task", "brain_age", "--profile", "smoke",
                 "--results", str(results), "--no-progress", "--seeds", "1"])
    assert code == 0
    record = json.loads((results / "mean-intensity" / "brain_age@v2" / "linear_probe.json").read_text())
    assert record["encoder"] == "mean-intensity" and record["main_score"] is not None
    assert "brain_age" in capsys.readouterr().out


def test_cli_errors_are_one_line(capsys):
    assert main(["run", "--encoder", "oracle", "--task", "no_such_task", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "unknown task 'no_such_task'" in err and len(err.splitlines()) == 1


def test_finetune_trains_end_to_end_and_records(smoke, profile, tmp_path):
    quick = replace(profile, finetune_epochs=1)
    runner = Runner(smoke, quick, tmp_path, progress=False, cache_root=tmp_path / "cache")
    (result,) = runner.run("random", ["brain_age"], ["finetune"])
    record = load_record(result.path)
    assert record.protocol == "finetune" and record.main_score is not None
    assert "test" in {s.split for s in record.scores}
    with pytest.raises(MribenchError, match="does not support fine-tuning"):
        runner.run("oracle", ["brain_age"], ["finetune"])
    # the supervised baseline: the same backbone, fine-tune only, its own record
    (sup,) = runner.run("supervised", ["brain_age"], ["finetune"])
    assert load_record(sup.path).encoder == "supervised" and sup.main_score is not None
    with pytest.raises(MribenchError, match="trained from scratch.*--protocol finetune"):
        runner.run("supervised", ["brain_age"], ["linear_probe"])


def test_finetune_fractions_trains_on_nested_subsets_like_finetune(smoke, profile, tmp_path):
    """The seeds' claim protocol: fine-tuning on the fractions probe's nested subsets. At 100 % it is
    the finetune protocol itself (same seed, same data, same predictions); below, fewer examples."""
    quick = replace(profile, finetune_epochs=1, seeds=1)
    runner = Runner(smoke, quick, tmp_path, progress=False, cache_root=tmp_path / "cache")
    (frac,) = runner.run("supervised", ["brain_age"], ["finetune_fractions"])
    (full,) = runner.run("supervised", ["brain_age"], ["finetune"])
    record, whole = load_record(frac.path), load_record(full.path)
    assert record.headline_setting == "fraction=1" and record.protocol == "finetune_fractions"
    test = {s.setting: s for s in record.scores if s.split == "test"}
    assert sorted(test) == ["fraction=0.01", "fraction=0.1", "fraction=0.2", "fraction=1"]
    assert test["fraction=0.1"].params["fraction"] == 0.1
    sizes = [test[f"fraction={p:g}"].params["n_train_examples"] for p in (0.01, 0.1, 0.2, 1.0)]
    assert sizes == sorted(sizes) and sizes[0] >= 1 and sizes[0] < sizes[-1]
    (ref,) = [s for s in whole.scores if s.split == "test"]
    assert test["fraction=1"].metrics == ref.metrics and record.main_score == whole.main_score
    with pytest.raises(MribenchError, match="does not support fine-tuning"):
        runner.run("oracle", ["brain_age"], ["finetune_fractions"])
