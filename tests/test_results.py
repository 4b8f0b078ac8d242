"""Result records: strict schema, atomic writes, NaN handling, resume semantics, provenance.

The leaderboard trusts only what validates and the runner resumes from what exists, so these
tests pin the two promises that matter: a record never exists half-written, and anything that
does not validate is treated as missing.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bench.errors import MribenchError
from bench.results import (
    CI,
    Provenance,
    ResultRecord,
    SettingScore,
    collect_provenance,
    compact_record,
    iter_records,
    load_record,
    read_record_json,
    record_exists,
    record_json,
    record_path,
    safe_name,
    summarise,
    write_record,
)


def _score(setting: str, seed: int, auc: float | None, split: str = "test") -> dict[str, Any]:
    return {"setting": setting, "seed": seed, "split": split,
            "metrics": {"auc": auc, "balanced_accuracy": 0.5},
            "ci": {"auc": {"point": auc, "low": None if auc is None else auc - 0.1,
                           "high": None if auc is None else auc + 0.1, "se": 0.05, "n": 20}},
            "n_subjects": 20, "n_examples": 31, "params": {"C": 1.0}}


def _provenance() -> Provenance:
    return Provenance(
        mribench_version="0.1.0", git_commit="a" * 40, git_dirty=False, task_spec_sha256="1" * 64,
        split_sha256="2" * 64, split_file="splits/synth/ad_diagnosis.tsv",
        cohort={"name": "synth", "n_scans": 40}, encoder_card={"name": "random"},
        checkpoint_sha256="3" * 64, config={"profile": "smoke"}, seeds=[0, 1],
        libraries={"python": "3.11.7", "torch": "2.0"},
        hardware={"platform": "Linux", "processor": "x86_64", "cpu_count": 4, "torch_threads": 4,
                  "cuda": None},
        started_at="2024-01-01T00:00:00+00:00", wall_time_s=1.5, command="bench run")


def _record(**overrides: Any) -> ResultRecord:
    scores = [_score("full", 0, 0.7), _score("full", 1, 0.8)]
    data: dict[str, Any] = {
        "encoder": "random", "task": "ad_diagnosis", "task_version": 1, "protocol": "linear_probe",
        "main_score_name": "auc", "main_score": 0.75, "higher_is_better": True, "headline_setting": "full",
        "scores": scores, "summary": summarise(scores), "flags": [],
        "predictions": [{"example_id": "e1", "participant_id": "sub-01", "split": "test", "seed": 0,
                         "setting": "full", "y_true": 1, "y_pred": 0.9}],
        "provenance": _provenance(),
    }
    data.update(overrides)
    return ResultRecord.model_validate(data)


# ----------------------------------------------------------------------------------------------- schema


def test_schema_rejects_unknown_keys_at_every_level():
    good = _record().model_dump()
    with pytest.raises(ValidationError, match="extra"):
        ResultRecord.model_validate({**good, "mian_score": 1.0})
    bad_score = {**good, "scores": [{**good["scores"][0], "typo": 1}]}
    with pytest.raises(ValidationError, match="extra"):
        ResultRecord.model_validate(bad_score)
    bad_prov = {**good, "provenance": {**good["provenance"], "gpu": "x"}}
    with pytest.raises(ValidationError, match="extra"):
        ResultRecord.model_validate(bad_prov)
    with pytest.raises(ValidationError):
        CI.model_validate({"point": 1, "low": 0, "high": 2, "se": 0.1, "n": 3, "n_dropped": 0})
    bad_cohort = {**good, "provenance": {**good["provenance"],
                                         "cohort": {"name": "x", "n_scans": 1, "sites": 3}}}
    with pytest.raises(ValidationError, match="extra"):
        ResultRecord.model_validate(bad_cohort)


def test_schema_rejects_unknown_protocol_and_split():
    with pytest.raises(ValidationError, match="protocol"):
        _record(protocol="zero_shot")
    with pytest.raises(ValidationError):
        SettingScore.model_validate(_score("full", 0, 0.7, split="train"))


def test_schema_rejects_a_malformed_commit_and_local_time():
    prov = _provenance().model_dump()
    with pytest.raises(ValidationError, match="git commit"):
        Provenance.model_validate({**prov, "git_commit": "not-a-hash"})
    with pytest.raises(ValidationError, match="UTC"):
        Provenance.model_validate({**prov, "started_at": "2024-01-01T00:00:00"})


# ---------------------------------------------------------------------------------------- write / load


def test_round_trip_write_load_is_equal(tmp_path):
    record = _record()
    path = write_record(record, tmp_path / "a" / "b" / "linear_probe.json")
    assert load_record(path) == record
    text = path.read_text()
    data = json.loads(text)
    assert list(data) == sorted(data)  # sorted keys: diffs between records stay readable
    assert text.startswith('{\n "') and text == record_json(data) + "\n"  # one key a line, indent 1
    assert '"metrics": {"auc": ' in text  # an object of numbers on one line (record_json)


def test_atomic_write_crash_leaves_old_file_and_no_visible_temp(tmp_path, monkeypatch):
    path = tmp_path / "enc" / "task@v1" / "linear_probe.json"
    old = _record(main_score=0.5)
    write_record(old, path)
    before = path.read_bytes()

    temporaries = []

    def crash(src, dst):
        temporaries.append(Path(src).name)
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        write_record(_record(main_score=0.9), path)
    assert path.read_bytes() == before  # unchanged
    # the predictions file's temp is named after the record, where bench.jobs.remove_stale_temporaries looks
    assert temporaries and temporaries[0].startswith(".linear_probe.json.") and temporaries[0].endswith(".tmp")
    assert load_record(path) == old  # with its predictions file, which the crash left as it was
    assert sorted(p.name for p in path.parent.iterdir()) == [  # temp files cleaned up
        "linear_probe.json", "linear_probe.predictions.json.gz"]

    fresh = tmp_path / "new" / "fractions.json"
    with pytest.raises(OSError):
        write_record(old, fresh)
    assert not fresh.exists()
    assert list(fresh.parent.glob("*.json")) == [] and list(fresh.parent.iterdir()) == []


def test_written_file_respects_umask_not_private_temp_mode(tmp_path):
    path = write_record(_record(), tmp_path / "r.json")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_nan_is_written_as_null_and_loads_as_none(tmp_path):
    record = _record(main_score=float("nan"))
    record.scores[0].metrics["auc"] = float("nan")
    record.scores[0].params["inf"] = float("inf")
    path = write_record(record, tmp_path / "nan.json")
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert data["main_score"] is None and data["scores"][0]["metrics"]["auc"] is None
    loaded = load_record(path)
    assert loaded.main_score is None
    assert loaded.scores[0].metrics["auc"] is None and loaded.scores[0].params["inf"] is None


def test_load_record_error_is_one_line_and_names_the_file(tmp_path):
    path = tmp_path / "bad_record.json"
    data = json.loads(write_record(_record(), path).read_text())
    data["task_version"] = "one"
    data["protocol"] = "nope"
    path.write_text(json.dumps(data))
    with pytest.raises(MribenchError) as info:
        load_record(path)
    message = str(info.value)
    assert "bad_record.json" in message and "\n" not in message
    assert "task_version" in message or "protocol" in message

    path.write_text("[1, 2]")
    with pytest.raises(MribenchError, match="bad_record.json"):
        load_record(path)


def test_record_exists_only_for_a_valid_file(tmp_path):
    path = tmp_path / "r.json"
    assert not record_exists(path)
    write_record(_record(), path)
    assert record_exists(path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])  # a file cut short, as by a crash without atomic write
    assert not record_exists(path)
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert not record_exists(path)
    path.write_text(json.dumps({"encoder": "x"}))  # valid JSON, invalid record
    assert not record_exists(path)


def test_iter_records_yields_records_and_errors(tmp_path):
    good = write_record(_record(), record_path(tmp_path, "random", "ad_diagnosis", 1, "linear_probe"))
    bad = record_path(tmp_path, "random", "ad_diagnosis", 1, "fractions")
    bad.write_text("{ truncated")
    (tmp_path / "notes.txt").write_text("not a record")
    found = dict(iter_records(tmp_path))
    assert set(found) == {good, bad}
    assert isinstance(found[good], ResultRecord)
    assert isinstance(found[bad], MribenchError) and "fractions.json" in str(found[bad])


# ------------------------------------------------------------------------------------------- summarise


def test_summarise_mean_and_std_over_seeds():
    scores = [_score("fraction=0.1", 0, 0.6), _score("fraction=0.1", 1, 0.7), _score("fraction=0.1", 2, 0.8),
              _score("fraction=0.1", 0, 0.5, split="external"), _score("full", 0, 0.9),
              _score("full", 1, None)]
    summary = summarise(scores)
    assert set(summary) == {"fraction=0.1|test", "fraction=0.1|external", "full|test"}
    auc = summary["fraction=0.1|test"]["auc"]
    # mean (0.6 + 0.7 + 0.8) / 3 = 0.7; sample std sqrt((0.01 + 0 + 0.01) / 2) = 0.1
    assert auc["mean"] == pytest.approx(0.7) and auc["std"] == pytest.approx(0.1) and auc["n_seeds"] == 3
    assert summary["fraction=0.1|test"]["balanced_accuracy"] == {"mean": 0.5, "std": 0.0, "n_seeds": 3}
    # a None metric is left out, not counted as 0; one seed gives no std
    assert summary["full|test"]["auc"] == {"mean": pytest.approx(0.9), "std": None, "n_seeds": 1}
    assert summary["fraction=0.1|external"]["auc"]["std"] is None


def test_summarise_accepts_models_and_all_none():
    scores = [SettingScore.model_validate(_score("k=5", s, None)) for s in range(3)]
    assert summarise(scores)["k=5|test"]["auc"] == {"mean": None, "std": None, "n_seeds": 0}


# ----------------------------------------------------------------------------------------------- paths


def test_record_path_layout_and_sanitised_file_spec(tmp_path):
    assert record_path(tmp_path, "random", "ad_diagnosis", 2, "few_shot") == \
        tmp_path / "random" / "ad_diagnosis@v2" / "few_shot.json"
    path = record_path(tmp_path, "../some/dir/my_enc.py:MyEncoder", "brain_age", 1, "linear_probe")
    assert path == tmp_path / "my_enc.py-MyEncoder" / "brain_age@v1" / "linear_probe.json"
    assert safe_name(r"C:\models\enc.py:Enc") == "enc.py-Enc"
    assert safe_name("org/model name") == "org-model-name"
    for hostile in ("..", ".", "/", ""):
        assert safe_name(hostile) not in ("..", ".", "") and "/" not in safe_name(hostile)
    assert tmp_path in record_path(tmp_path, "..", "..", 1, "..").parents


# ------------------------------------------------------------------------------------------ provenance


def test_collect_provenance_measures_versions_hardware_and_git():
    prov = collect_provenance(
        task_spec_sha256="1" * 64, split_sha256="2" * 64, split_file="splits/x.tsv",
        cohort={"name": "synth", "n_scans": 10, "root_hash": "abc"}, encoder_card={"name": "random"},
        checkpoint_sha256="3" * 64, config={"profile": "smoke"}, seeds=[0], wall_time_s=2.0,
        command="bench run")
    for lib in ("python", "torch", "numpy", "scikit-learn", "monai", "nibabel", "lifelines", "pandas"):
        assert lib in prov.libraries and prov.libraries[lib]
    assert prov.libraries["numpy"] != "absent"
    assert prov.hardware.cpu_count and prov.hardware.torch_threads >= 1 and prov.hardware.platform
    assert prov.git_commit is None or re.fullmatch(r"[0-9a-f]{40}", prov.git_commit)
    assert (prov.git_dirty is None) == (prov.git_commit is None)
    assert prov.cohort.root_hash == "abc" and prov.wall_time_s == 2.0
    from datetime import datetime, timedelta

    started = datetime.fromisoformat(prov.started_at)
    assert started.utcoffset() == timedelta(0)
    assert not math.isnan(prov.wall_time_s)


def test_collect_provenance_outside_a_git_checkout(monkeypatch, tmp_path):
    import bench.results as results

    monkeypatch.setattr(results, "_repo_root", lambda: tmp_path)
    assert results.git_state() == (None, None)


def test_collected_provenance_round_trips(tmp_path):
    prov = collect_provenance(
        task_spec_sha256="t", split_sha256="s", split_file="f", cohort={"name": "c", "n_scans": 1},
        encoder_card={}, checkpoint_sha256="k", config={}, seeds=[0], command="pytest")
    record = _record(provenance=prov)
    assert load_record(write_record(record, Path(tmp_path) / "p.json")) == record


# ------------------------------------------------------------------------------------ predictions files


def _prediction_rows() -> list[dict[str, Any]]:
    """Rows of every shape a record holds: three-class probabilities (summing to 1 and, after rounding,
    not quite), binary and regression floats, survival (time, event) labels, integer and None
    predictions, values off the 1e-6 grid, -0.0; settings, seeds and splits interleaved, an example
    scored in several blocks, examples out of order."""
    rows = []

    def add(setting, seed, split, ids, y_true, y_pred):
        rows.extend({"example_id": f"{i}_ses-M00", "participant_id": i, "seed": seed, "setting": setting,
                     "split": split, "y_true": t, "y_pred": p} for i, t, p in zip(ids, y_true, y_pred))

    add("fraction=0.1", 0, "test", ["sub-03", "sub-01", "sub-02"], [0, 2, 1],
        [[0.2, 0.3, 0.5], [0.333333, 0.333333, 0.333333], [1.0, 0.0, 0.0]])
    add("fraction=0.1", 0, "external", ["sub-09"], [1], [[0.000001, 0.999998, 0.000001]])
    add("fraction=0.1", 1, "test", ["sub-01", "sub-03"], [2, 0], [[0.1, 0.2, 0.7], [0.25, 0.25, 0.5]])
    add("fraction=0.1", 0, "test", ["sub-02"], [1], [[0.4, 0.4, 0.2]])  # the first key again, later
    add("full", 2, "test", ["sub-01", "sub-02"], [64.95, 71.0], [46.01643, -0.0])  # regression, -0.0
    add("full", 3, "test", ["sub-01", "sub-02"], [64.95, 71.0], [0.1234567, 1e-300])  # off the grid
    add("k=1", 0, "test", ["sub-01", "sub-02"], [[12.5, 1], [30.0, 0]], [0.731, -2.5])  # survival
    add("k=5", 0, "test", ["sub-01", "sub-02"], [1, 0], [1, None])  # an integer and a missing prediction
    add("k=5", 1, "test", ["sub-01", "sub-02"], [1, 0], [[0.5, 0.5], [0.7]])  # rows of unequal length
    return rows


def test_predictions_file_round_trips_every_value_exactly(tmp_path):
    record = _record(predictions=_prediction_rows())
    path = write_record(record, tmp_path / "fractions.json")
    sidecar = tmp_path / "fractions.predictions.json.gz"
    data = json.loads(path.read_text())
    assert data["predictions"] is None and sidecar.is_file()
    assert data["predictions_file"]["file"] == sidecar.name and data["predictions_file"]["rows"] == 17
    assert load_record(path) == record
    stored = [next(iter(b["y_pred"])) for b in json.loads(gzip.decompress(sidecar.read_bytes()))["blocks"]]
    assert stored == ["micro_columns"] * 4 + ["json", "json", "micro", "json", "json"]
    # the very JSON the inline form holds: values, types (1 vs 1.0, -0.0), key and row order
    inline = write_record(record, tmp_path / "inline" / "fractions.json", inline_predictions=True)
    assert not (inline.parent / sidecar.name).exists() and "predictions_file" not in json.loads(inline.read_text())
    assert json.dumps(read_record_json(path)) == json.dumps(json.loads(inline.read_text()))
    # equal predictions give equal bytes (no time or name in the gzip header): stable hashes, clean diffs
    first = sidecar.read_bytes()
    write_record(load_record(path), path)
    assert sidecar.read_bytes() == first


def test_rows_not_of_the_harness_shape_stay_inline(tmp_path):
    for rows in ([{**_prediction_rows()[0], "note": "x"}],                        # an unknown key
                 [{**r, "participant_id": f"sub-{i}"} for i, r in enumerate(_prediction_rows()[:1] * 2)]):
        path = write_record(_record(predictions=rows), tmp_path / "r.json")
        assert json.loads(path.read_text())["predictions"] == rows
        assert not (tmp_path / "r.predictions.json.gz").exists() and load_record(path).predictions == rows


def test_a_missing_or_altered_predictions_file_is_one_line_naming_it(tmp_path):
    path = write_record(_record(predictions=_prediction_rows()), tmp_path / "few_shot.json")
    sidecar = tmp_path / "few_shot.predictions.json.gz"
    doc = json.loads(gzip.decompress(sidecar.read_bytes()))
    doc["blocks"][0]["y_true"][0] = 1
    sidecar.write_bytes(gzip.compress(json.dumps(doc).encode()))
    with pytest.raises(MribenchError, match=r"few_shot\.predictions\.json\.gz: SHA-256 .* few_shot.json names: "
                                            "the predictions were altered") as info:
        load_record(path)
    assert "\n" not in str(info.value) and not record_exists(path)
    sidecar.unlink()
    with pytest.raises(MribenchError, match=r"few_shot\.predictions\.json\.gz: missing; few_shot.json keeps"):
        load_record(path)
    # a record must not make a reader open a file elsewhere
    data = json.loads(path.read_text())
    data["predictions_file"]["file"] = "../other.predictions.json.gz"
    path.write_text(json.dumps(data))
    with pytest.raises(MribenchError, match="invalid result record at 'predictions_file.file'"):
        load_record(path)


def test_a_record_rewritten_without_predictions_leaves_no_predictions_file(tmp_path):
    path = write_record(_record(predictions=_prediction_rows()), tmp_path / "r.json")
    write_record(_record(predictions=None), path)
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"] and load_record(path).predictions is None


def test_compact_record_migrates_an_inline_record_and_is_idempotent(tmp_path):
    record = _record(predictions=_prediction_rows())
    path = write_record(record, tmp_path / "r.json", inline_predictions=True)
    before = json.loads(path.read_text())
    assert compact_record(path) == "compacted"
    after = json.loads(path.read_text())
    assert after.pop("predictions_file")["rows"] == 17 and after.pop("predictions") is None
    assert after == {k: v for k, v in before.items() if k != "predictions"}  # nothing else touched
    assert load_record(path) == record
    text = path.read_text()
    assert compact_record(path) == "already compact" and path.read_text() == text
    empty = write_record(_record(predictions=None), tmp_path / "e.json")
    assert compact_record(empty) == "no predictions"


def test_compact_form_is_at_least_ten_times_smaller(tmp_path):
    """12,000 rows of three-class probabilities (a default-profile fractions record is 12,030)."""
    import numpy as np

    rng = np.random.default_rng(0)
    probs = np.round(rng.dirichlet([1.0, 1.0, 1.0], size=12_000), 6)
    ids = [f"sub-{i:04d}" for i in range(400)]
    rows = [{"example_id": f"{ids[i % 400]}_ses-M00", "participant_id": ids[i % 400], "seed": (i // 400) % 3,
             "setting": f"fraction={[0.01, 0.1, 0.25, 0.5, 1][i // 2400]}", "split": "test",
             "y_true": int(i % 3), "y_pred": p.tolist()} for i, p in enumerate(probs)]
    record = _record(predictions=rows)
    inline = write_record(record, tmp_path / "inline.json", inline_predictions=True)
    compact = write_record(record, tmp_path / "compact.json")
    sidecar = tmp_path / "compact.predictions.json.gz"
    assert inline.stat().st_size >= 10 * (compact.stat().st_size + sidecar.stat().st_size)
    assert load_record(compact).predictions == rows


def test_bench_results_compact_converts_a_folder_once(tmp_path, capsys):
    from bench.cli import main

    record = _record(predictions=_prediction_rows())
    path = write_record(record, record_path(tmp_path, "random", "ad_diagnosis", 1, "fractions"),
                        inline_predictions=True)
    write_record(_record(predictions=None), record_path(tmp_path, "random", "ad_diagnosis", 1, "linear_probe"))
    assert main(["results", "compact", str(tmp_path)]) == 0
    assert "1 compacted, 1 no predictions" in capsys.readouterr().out
    assert path.with_name("fractions.predictions.json.gz").is_file() and load_record(path) == record
    assert main(["results", "compact", str(tmp_path)]) == 0
    assert "1 already compact, 1 no predictions" in capsys.readouterr().out
    path.with_name("fractions.predictions.json.gz").unlink()
    assert main(["results", "compact", str(path)]) == 1
    assert "invalid" in capsys.readouterr().out
