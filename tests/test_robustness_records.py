"""A robustness record keeps what recomputes its perturbation parameters, not the parameters.

The record names the perturbation seed, the perturbations (``levels``), the severities, the
evaluated scans and the SHA-256 of their drawn parameters; ``bench verify`` recomputes the
parameters with ``draw_parameters`` and refuses a record whose digest differs (its scores were
computed on other perturbations). Records written before kept a ``parameters`` block: they are
checked against the same recomputation, and ``bench results compact`` slims them.
"""

from __future__ import annotations

import json

import pytest

from bench import perturbations as P
from bench.cli import main
from bench.leaderboard.verify import verify_path
from bench.protocols.robustness import PERTURBATION_SEED, summarise_robustness
from bench.results import (ResultRecord, SettingScore, compact_record, read_bounded_json, record_json, summarise,
                           write_record)
from bench.protocols import get_protocol
from bench.tasks import get_task
from fabricated_labels import declare
from test_leaderboard import COHORT, class_record, split_test_subjects


def robustness_record(n: int = 8) -> ResultRecord:
    """ad_diagnosis on ``n`` test subjects (one T1w scan each): clean predictions kept, every
    perturbation x severity scored like clean (the harness keeps no perturbed predictions)."""
    data = class_record("hand", "ad_diagnosis", "perfect", n=n).model_dump(mode="json")
    clean = [dict(s, setting="clean") for s in data["scores"]]
    perturbed = [dict(s, setting=f"{p}@{sev}", params={"perturbation": p, "severity": sev})
                 for s in clean for p in P.PERTURBATIONS for sev in P.SEVERITIES]
    scores = clean + perturbed
    for row in data["predictions"]:
        row["setting"] = "clean"
    subjects = sorted({row["participant_id"] for row in data["predictions"]})
    scans = [[s, "ses-M00", "T1w"] for s in subjects]
    typed = [SettingScore.model_validate(s) for s in scores]
    declare(get_task("ad_diagnosis"), COHORT, get_protocol("robustness"), "test",  # one scan per subject
            [(row["example_id"], row["y_true"]) for row in data["predictions"]])
    data.update(protocol="robustness", headline_setting="clean", scores=scores, summary=summarise(scores),
                robustness=summarise_robustness(typed, data["main_score_name"], data["higher_is_better"], scans))
    return ResultRecord.model_validate(data)


def _write(tmp_path, record: ResultRecord, name: str = "robustness.json"):
    return write_record(record, tmp_path / name)


def _edit(path, change) -> None:
    data = json.loads(path.read_text())
    change(data["robustness"])
    path.write_text(json.dumps(data))


def _old_format(block: dict) -> None:
    """The block as records kept it before: every scan's parameters, no scans / digest / severities."""
    block["parameters"] = P.block_parameters(block)
    for key in ("scans", "parameters_sha256", "severities"):
        block.pop(key)


def test_the_record_holds_no_parameters_and_verify_recomputes_them(tmp_path):
    path = _write(tmp_path, robustness_record())
    block = read_bounded_json(path)["robustness"]
    assert "parameters" not in block and block["perturbation_seed"] == PERTURBATION_SEED
    assert block["severities"] == list(P.SEVERITIES) and sorted(block["levels"]) == sorted(P.PERTURBATIONS)
    sub, ses, seq = block["scans"][0]
    params = P.block_parameters(block)
    assert params["motion"]["3"][f"{sub}_{ses}_{seq}"] == P.draw_parameters(
        "motion", 3, seed=PERTURBATION_SEED, subject=sub, session=ses, sequence=seq)
    assert block["parameters_sha256"] == P.parameters_digest(params)
    verdict = verify_path(path)
    assert verdict.ok, verdict.problems


def test_other_perturbations_are_refused_with_one_line(tmp_path, monkeypatch):
    path = _write(tmp_path, robustness_record())
    original = P.draw_parameters

    def other(name, severity, **kw):  # one parameter of one scan drawn otherwise
        out = original(name, severity, **kw)
        if (name, severity) == ("gaussian_noise", 2) and kw["subject"] == read_bounded_json(path)[
                "robustness"]["scans"][0][0]:
            out["std"] = out["std"] * 2
        return out

    monkeypatch.setattr(P, "draw_parameters", other)
    verdict = verify_path(path)
    assert not verdict.ok and "\n" not in verdict.reason
    assert "perturbation parameters" in verdict.reason and "other perturbations" in verdict.reason


@pytest.mark.parametrize("change, reason", [
    (lambda b: b.update(parameters_sha256="0" * 64), "are not what perturbation seed 0 gives"),
    (lambda b: b.update(perturbation_seed=1), "perturbation seed 1"),
    (lambda b: b["levels"].pop("blur"), "not the protocol's"),
    (lambda b: b.pop("parameters_sha256"), "names no parameters_sha256"),
    (lambda b: b["scans"].pop(), "robustness perturbation parameters"),
    (lambda b: b.update(scans=[["sub-x"]]), "not [subject, session, sequence]"),
])
def test_an_edited_robustness_block_is_refused(tmp_path, change, reason):
    path = _write(tmp_path, robustness_record())
    _edit(path, change)
    verdict = verify_path(path)
    assert not verdict.ok and reason in verdict.reason and "\n" not in verdict.reason


@pytest.mark.parametrize("subject, reason", [
    ("sub-9999", "outside the split file's test and external splits"),
    (split_test_subjects("ad_diagnosis", 20)[-1], "but the clean predictions of 8"),
])
def test_scans_of_other_subjects_are_refused_even_with_a_matching_digest(tmp_path, subject, reason):
    path = _write(tmp_path, robustness_record())

    def swap(block):  # a consistent block (digest recomputed) on a subject the predictions are not of
        block["scans"][0][0] = subject
        block["parameters_sha256"] = P.parameters_digest(P.block_parameters(block))

    _edit(path, swap)
    assert reason in verify_path(path).reason


def test_an_old_format_record_verifies_against_the_recomputation_and_compacts(tmp_path, capsys):
    path = _write(tmp_path, robustness_record())
    slim = read_bounded_json(path)["robustness"]
    _edit(path, _old_format)
    assert "parameters" in read_bounded_json(path)["robustness"]
    assert verify_path(path).ok
    assert main(["robustness", "params", str(path), "--perturbation", "blur", "--severity", "5"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == {"blur": {"5": read_bounded_json(path)["robustness"]["parameters"]["blur"]["5"]}}
    before = path.stat().st_size
    assert compact_record(path) == "compacted" and compact_record(path) == "already compact"
    assert read_bounded_json(path)["robustness"] == slim and path.stat().st_size < before / 2
    assert verify_path(path).ok


def test_an_old_format_record_with_an_edited_parameter_is_refused_and_kept(tmp_path):
    path = _write(tmp_path, robustness_record())

    def edited(block):
        _old_format(block)
        per_scan = block["parameters"]["blur"]["4"]
        per_scan[next(iter(per_scan))]["std_mm"] = 0.5

    _edit(path, edited)
    assert "robustness perturbation parameters" in verify_path(path).reason
    compact_record(path)  # re-laid out, but the parameters that do not recompute are kept for a reader
    assert "parameters" in read_bounded_json(path)["robustness"]


def test_robustness_params_cli_says_when_the_digest_does_not_match(tmp_path, capsys):
    path = _write(tmp_path, robustness_record())
    _edit(path, lambda b: b.update(parameters_sha256="0" * 64))
    assert main(["robustness", "params", str(path), "--perturbation", "gibbs"]) == 1
    captured = capsys.readouterr()
    assert set(json.loads(captured.out)) == {"gibbs"} and "bench verify refuses it" in captured.err


def test_record_layout_round_trips_and_keeps_small_objects_on_one_line(tmp_path):
    record = robustness_record()
    path = _write(tmp_path, record)
    text = path.read_text()
    assert text == record_json(json.loads(text)) + "\n"
    assert '"ci": {\n' in text and '"auc": {"high": ' in text      # one line per CI, one per key above
    assert text.count("\n") < len(json.dumps(json.loads(text), indent=2).splitlines()) / 2


@pytest.mark.slow
def test_the_profile_sets_the_grid_and_its_records_verify_at_it(tmp_path):
    """A profile's robustness grid (the default profile's: severities 1, 3, 5 on test) is what its
    record holds, names in its identity, and what ``bench verify`` holds it to."""
    from dataclasses import replace

    from bench.data.sources import open_cohort
    from bench.paths import cache_home
    from bench.profiles import get_profile
    from bench.runner import Runner, profile_settings

    assert get_profile("default").robustness_severities == (1, 3, 5)
    assert get_profile("default").robustness_splits == ("test",)
    assert "robustness_severities" not in profile_settings(get_profile("smoke"), "robustness")  # full grid
    assert profile_settings(get_profile("default"), "robustness")["robustness_severities"] == [1, 3, 5]
    assert "robustness_splits" not in profile_settings(get_profile("default"), "linear_probe")  # others: as before
    profile = replace(get_profile("smoke"), seeds=1, n_boot=20, robustness_severities=(1, 5),
                      robustness_splits=("test",))
    cohort = open_cohort(None, profile="smoke", progress=False)
    runner = Runner(cohort, profile, tmp_path / "results", progress=False, cache_root=cache_home(), command="t")
    (result,) = runner.run("random", ["ad_diagnosis"], ["robustness"])
    data = read_bounded_json(result.path)
    block = data["robustness"]
    assert block["severities"] == [1, 5] and set(block["splits"]) == {"test"}
    assert all(set(by_sev) == {"1", "5"} for by_sev in block["splits"]["test"]["score"].values())
    assert {s["setting"] for s in data["scores"]} == {"clean"} | {f"{p}@{v}" for p in P.PERTURBATIONS for v in (1, 5)}
    assert {s["split"] for s in data["scores"]} == {"test"}
    settings = data["provenance"]["config"]["profile_settings"]
    assert settings["robustness_severities"] == [1, 5] and settings["robustness_splits"] == ["test"]
    verdict = verify_path(result.path)
    assert verdict.ok, verdict.problems

    def all_five(block):  # a consistent block at every severity, in a record whose profile ran two
        block["severities"] = list(P.SEVERITIES)
        block["parameters_sha256"] = P.parameters_digest(P.block_parameters(block))

    _edit(result.path, all_five)
    verdict = verify_path(result.path)
    assert not verdict.ok and "not the protocol's at its profile" in verdict.reason and "[1, 5]" in verdict.reason


def test_a_profile_grid_outside_the_protocol_is_a_one_line_error():
    from dataclasses import replace

    from bench.errors import MribenchError
    from bench.profiles import get_profile
    from bench.protocols.robustness import grid_of

    with pytest.raises(MribenchError, match=r"robustness severities \[6\] must be among"):
        grid_of(replace(get_profile("smoke"), robustness_severities=(6,)))
    with pytest.raises(MribenchError, match=r"robustness splits \['val'\] must be among"):
        grid_of(replace(get_profile("smoke"), robustness_splits=("val",)))
