"""Fault tolerance of `bench run`: SIGKILL at seeded random points then restart, two runs on one
results folder at once, and a failing job reported while the rest of the grid completes."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.commands.status import collect_status
from bench.results import load_record
from scale_helpers import assert_same_numbers, numbers

pytestmark = pytest.mark.slow

GRID = ["--encoder", "random", "--encoder", "oracle", "--task", "sequence_classification", "--task", "tumour_marker",
        "--protocol", "linear_probe", "--protocol", "fractions"]
N_JOBS = 8
MAX_KILLS = 3


def run_args(cohort: Path, results: Path, grid: list[str] = GRID) -> list[str]:
    return ["run", *grid, "--cohort", str(cohort), "--profile", "smoke", "--seeds", "1", "--results", str(results),
            "--no-progress"]


def bench_process(args: list[str], **kwargs) -> subprocess.Popen:
    """`bench ...` in its own process (wide output so the result table is not truncated)."""
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.Popen([sys.executable, "-m", "bench.cli", *args], env=env, text=True, **kwargs)


def fresh_cache(tmp: Path) -> Path:
    """A cache with no embeddings (the killed runs compute and write them) sharing the warm volume store."""
    cache = tmp / "cache"
    cache.mkdir()
    shared = Path(os.environ["MRIBENCH_CACHE"]) / "store"
    shared.mkdir(parents=True, exist_ok=True)
    (cache / "store").symlink_to(shared, target_is_directory=True)
    return cache


@pytest.fixture(scope="module")
def clean(tiny_cohort_dir, tiny_splits_root, tmp_path_factory) -> dict[str, dict]:
    """The records of an uninterrupted run: what every faulty run must end with."""
    results = tmp_path_factory.mktemp("clean")
    with pytest.MonkeyPatch.context() as mp:  # (module scope: set up before the per-test fixtures)
        mp.setenv("MRIBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        mp.setenv("MRIBENCH_SPLITS", str(tiny_splits_root))
        assert main(run_args(tiny_cohort_dir, results)) == 0
    out = numbers(results)
    assert len(out) == N_JOBS
    return out


@pytest.fixture
def tiny_env(tiny_splits_root, monkeypatch):
    monkeypatch.setenv("MRIBENCH_SPLITS", str(tiny_splits_root))


def _records(results: Path) -> list[Path]:
    return [p for p in results.rglob("*.json") if not p.name.startswith(".")]


def test_sigkill_at_random_points_then_restart_ends_with_the_clean_records(clean, tiny_cohort_dir, tiny_env,
                                                                            tmp_path, monkeypatch):
    monkeypatch.setenv("MRIBENCH_CACHE", str(fresh_cache(tmp_path)))
    results = tmp_path / "results"
    rng = np.random.default_rng(9)  # where each kill lands: after a random number of new records + a random delay
    first_seen: dict[Path, str] = {}
    kills = rewritten = 0
    for _ in range(MAX_KILLS):
        before = len(_records(results)) if results.exists() else 0
        target = before + int(rng.integers(0, max(1, N_JOBS - before)))
        delay = float(rng.uniform(0.0, 1.0))
        proc = bench_process(run_args(tiny_cohort_dir, results), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and (not results.exists() or len(_records(results)) < target):
            time.sleep(0.02)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        # after every kill: each record there validates (nothing half-written) and none was rewritten
        for path in _records(results):
            load_record(path)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            rewritten += first_seen.setdefault(path, digest) != digest
        if proc.returncode == 0:
            break
    assert kills >= 1
    assert main(run_args(tiny_cohort_dir, results)) == 0  # the restart finishes the grid

    final = numbers(results)
    lost, extra = clean.keys() - final.keys(), final.keys() - clean.keys()
    for path in _records(results):
        rewritten += first_seen.get(path, hashlib.sha256(path.read_bytes()).hexdigest()) \
            != hashlib.sha256(path.read_bytes()).hexdigest()
    print(f"\n[faults] kills tried {kills}, records lost {len(lost)}, duplicated (extra files or rewritten) "
          f"{len(extra) + rewritten}")
    assert not lost and not extra and rewritten == 0
    assert_same_numbers(final, clean)
    assert not list(results.rglob("*.tmp")), "a killed writer's temporary file was left behind"
    assert not list(results.rglob("*.failed"))
    assert {s.state for s in collect_status(results)} == {"done"}


def test_two_concurrent_runs_on_one_folder_split_the_jobs_and_agree(clean, tiny_cohort_dir, tiny_env, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv("MRIBENCH_CACHE", str(fresh_cache(tmp_path)))  # both runs write embeddings into it
    results = tmp_path / "results"
    procs = [bench_process(run_args(tiny_cohort_dir, results), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
             for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    # a table where it fits the width, else one line per result (bench.commands._report)
    computed = [sum("│ done " in line or "; done; " in line for line in out.splitlines()) for out in outputs]
    skipped = [out.count("reused (") for out in outputs]
    assert sum(computed) == N_JOBS, (computed, outputs)  # every job computed by exactly one of them
    assert [c + s for c, s in zip(computed, skipped)] == [N_JOBS, N_JOBS]
    assert_same_numbers(numbers(results), clean)
    assert not list(results.rglob("*.tmp"))
    print(f"\n[faults] two concurrent runs computed {computed[0]} + {computed[1]} of {N_JOBS} jobs")


def test_a_corrupt_scan_fails_its_job_only_with_the_error_and_a_later_fix_clears_it(tiny_cohort_dir, tiny_env,
                                                                                     tmp_path, capsys):
    cohort = tmp_path / "copy" / tiny_cohort_dir.name  # same name: the same split files apply
    shutil.copytree(tiny_cohort_dir, cohort)
    participants = (cohort / "participants.tsv").read_text().splitlines()
    tumour = next(line.split("\t")[0] for line in participants[1:] if "tumour" in line)
    scan = sorted((cohort / tumour).rglob(f"{tumour}_*_T1w.nii.gz"))[0]
    original = scan.read_bytes()
    scan.write_bytes(original[: len(original) // 2])  # truncated: the gzip stream ends mid-volume
    results = tmp_path / "results"
    grid = ["--encoder", "random", "--task", "sequence_classification", "--task", "tumour_marker"]

    assert main(run_args(cohort, results, grid)) == 1  # something failed...
    out, err = capsys.readouterr()
    assert "failed random/sequence_classification@v1/linear_probe: ScanError" in err
    assert f"{scan.name}: voxel data is truncated or corrupt" in " ".join(err.split())
    assert (results / "random" / "tumour_marker@v1" / "linear_probe.json").is_file()  # ...the rest completed
    assert not (results / "random" / "sequence_classification@v1" / "linear_probe.json").exists()

    state = {s.key: s for s in collect_status(results)}
    assert state["random/tumour_marker@v1/linear_probe"].state == "done"
    failed = state["random/sequence_classification@v1/linear_probe"]
    assert failed.state == "failed" and "voxel data is truncated or corrupt" in failed.detail
    assert (results / ".jobs" / ".gitignore").read_text().splitlines()[-1] == "*"  # local state, never committed
    assert main(["status", "--results", str(results)]) == 1
    shown = " ".join(capsys.readouterr().out.split())
    assert "2 job(s): 1 done, 0 running, 1 failed, 0 invalid, 0 missing" in shown

    scan.write_bytes(original)  # fixed: the rerun does only the failed job and clears its marker
    assert main(run_args(cohort, results, grid)) == 0
    assert not list(results.rglob("*.failed"))
    assert {s.state for s in collect_status(results)} == {"done"}
    assert main(["status", "--results", str(results), "--task", "sequence_classification", "--task",
                 "tumour_marker", "--protocol", "linear_probe", "--protocol", "fractions"]) == 1
    assert "4 job(s): 2 done, 0 running, 0 failed, 0 invalid, 2 missing" in " ".join(capsys.readouterr().out.split())


def test_status_tells_running_invalid_and_missing_jobs_apart(tmp_path):
    from bench.jobs import Job
    from bench.locks import try_lock

    results = tmp_path / "results"
    running = Job("random", "random", "tumour_marker", 1, "linear_probe")
    broken = Job("random", "random", "tumour_marker", 1, "fractions")
    broken.record_path(results).parent.mkdir(parents=True)
    broken.record_path(results).write_text('{"encoder": "random"')  # what a non-atomic writer could leave
    with try_lock(running.lock_path(results), wait=False) as held:  # as a live run on another node would
        assert held
        state = {s.key: s for s in collect_status(results, ["random"], ["tumour_marker"],
                                                  ["linear_probe", "fractions", "few_shot"])}
    assert state[running.key].state == "running"
    assert state[broken.key].state == "invalid" and "not a readable result record" in state[broken.key].detail
    assert state["random/tumour_marker@v1/few_shot"].state == "missing"
    assert collect_status(results, ["random"], ["tumour_marker"], ["linear_probe"])[0].state == "missing"  # released
