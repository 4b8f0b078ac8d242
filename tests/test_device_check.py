"""The device check (benchmarks/device_check.sh): its comparisons by hand, and the whole script at
dry-run size on the CPU, so that it still runs on the day a GPU machine is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.paths import repo_root

sys.path.insert(0, str(repo_root()))
from benchmarks import device_check  # noqa: E402


def record(path: Path, protocol: str, scores: dict[tuple[str, int], float]) -> Path:
    """A record with the fields the check reads: the protocol, the main metric and its scores."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"protocol": protocol, "main_score_name": "auc", "scores": [
        {"setting": setting, "split": "test", "seed": seed, "metrics": {"auc": value}}
        for (setting, seed), value in scores.items()]}))
    return path


def test_fp32_probe_scores_must_match_seed_by_seed(tmp_path):
    cpu = record(tmp_path / "cpu.json", "fractions", {("fraction=0.1", 0): 0.7, ("fraction=0.1", 1): 0.8})
    close = record(tmp_path / "close.json", "fractions", {("fraction=0.1", 0): 0.7004, ("fraction=0.1", 1): 0.8})
    far = record(tmp_path / "far.json", "fractions", {("fraction=0.1", 0): 0.702, ("fraction=0.1", 1): 0.8})
    assert device_check.compare_record(cpu, close, 1e-3, exact=True)["ok"]
    out = device_check.compare_record(cpu, far, 1e-3, exact=True)
    assert not out["ok"] and out["max_abs_diff"] == pytest.approx(0.002)
    # the same gap is within the two seeds' range (0.1) when the rule is the seed spread (bf16)
    assert device_check.compare_record(cpu, far, 1e-3, exact=False)["ok"]


def test_a_fine_tuned_score_is_held_to_the_cpu_seeds_spread(tmp_path):
    cpu = record(tmp_path / "cpu.json", "finetune", {("full", 0): 0.70, ("full", 1): 0.74})   # mean 0.72, range 0.04
    inside = record(tmp_path / "in.json", "finetune", {("full", 0): 0.69, ("full", 1): 0.78})  # mean 0.735
    outside = record(tmp_path / "out.json", "finetune", {("full", 0): 0.80, ("full", 1): 0.82})  # mean 0.81
    assert device_check.compare_record(cpu, inside, 1e-3, exact=True)["ok"]
    assert not device_check.compare_record(cpu, outside, 1e-3, exact=True)["ok"]
    missing = record(tmp_path / "missing.json", "fractions", {("fraction=0.1", 0): 0.7})
    assert not device_check.compare_record(cpu, missing, 1e-3, exact=True)["ok"]  # settings lost: not a match


def test_runs_losses_and_the_dry_plan(tmp_path):
    args = device_check.parse_args(["--out", str(tmp_path), "--work", str(tmp_path / "w"), "--dry-run",
                                    "--device", "cpu"])
    plan = device_check.plan_from(args)
    assert plan.encoders == ("random",) and plan.pretrain_config == "small" and plan.total_seconds <= 150
    assert device_check.suite_runs(plan) == [(device_check.REFERENCE, "cpu", "fp32"), ("cpu-fp32", "cpu", "fp32"),
                                             ("cpu-bf16", "cpu", "bf16")]
    assert [r[0] for r in device_check.perf_runs_of(plan)] == [device_check.REFERENCE, "cpu-bf16"]
    plan.device = "cuda:1"
    assert [r[0] for r in device_check.suite_runs(plan)][1:] == ["cuda1-fp32", "cuda1-bf16"]
    (tmp_path / "loss.tsv").write_text("step\tloss\n1\t5.0\n2\t4.5\n3\t4.")  # the last line half written
    assert device_check.read_losses(tmp_path / "loss.tsv") == [5.0, 4.5, 4.0]
    assert device_check.read_losses(tmp_path / "none.tsv") == []
    assert plan.budget("suite") <= plan.budgets["suite"]


def test_a_stage_past_its_budget_is_stopped_and_recorded(tmp_path):
    plan = device_check.Plan(out=tmp_path, work=tmp_path / "w")
    ran = device_check.run_command(plan, "sleepy", [sys.executable, "-c", "import time; time.sleep(30)"], 1.0,
                                   env=dict(os.environ))
    assert ran["timed_out"] and ran["seconds"] < 15 and (tmp_path / ran["log"]).is_file()


@pytest.mark.slow
def test_the_dry_run_goes_through_every_stage_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(repo_root() / "benchmarks" / "device_check.sh"), "--device", "cpu",
                           "--dry-run", "--out", str(out)], env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "device_check.json").read_text())
    assert not report["environment"]["missing_imports"]
    assert report["summary"]["commands_ok"] and report["summary"]["cpu-fp32_matches_cpu"]
    compared = report["compare"]["cpu-fp32"]
    assert {"linear_probe", "fractions", "finetune"} <= {c["protocol"] for c in compared.values()}
    assert "cpu-bf16" in report["compare"]  # bf16 is compared (and reported), not required to match
    assert report["pretrain"]["steps"] >= 1 and report["pretrain"]["startup_seconds"] is not None
    assert report["perf"]["random"][device_check.REFERENCE]["forward_scans_per_s"] > 0
    assert not list(Path(report["plan"]["work"]).parent.glob(Path(report["plan"]["work"]).name))  # work removed
    print(f"\n[device check] dry run on the CPU: {report['elapsed_s']} s")


def test_a_stage_that_failed_is_named_and_fails_the_check():
    ran = {"rc": 0, "timed_out": False}
    report = {"cohort": [ran], "suites": {"cpu-fp32": {"suite": ran, "finetune": ran}},
              "compare": {"cpu-fp32": {"a.json": {"ok": True}}, "cpu-bf16": {"a.json": {"ok": False}}},
              "pretrain": {"steps": 3, "volumes_per_s": 1.5}}
    verdicts = device_check.summary(report)
    assert verdicts["commands_ok"] and verdicts["cpu-fp32_matches_cpu"]
    assert verdicts["cpu-bf16_within_cpu_seed_spread"] is False and verdicts["pretrain_volumes_per_s"] == 1.5
    report["perf"] = {"error": "OSError: disk full"}
    assert device_check.summary(report)["stages_failed"] == ["perf"]
    assert not device_check.summary(report)["commands_ok"]
