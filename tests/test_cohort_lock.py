"""Two commands that open the same synthetic cohort at once on an empty cache: one generates it,
the other waits for the generator's lock (saying so) and reads the finished tree, instead of
generating it a second time and deleting the first tree under its reader."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

#: ``bench data info`` (a command that takes no lock of its own) on the smoke profile shrunk to a few
#: subjects, so that generating the cohort takes seconds; the shrinking is the only difference.
DRIVER = """
import sys
from dataclasses import replace

import bench.profiles as profiles

profiles.PROFILES["smoke"] = replace(profiles.PROFILES["smoke"], synth_ad_subjects=6, synth_tumour_subjects=2,
                                     synth_healthy_subjects=2)
from bench.cli import main

sys.exit(main(["data", "info", "--profile", "smoke", "--no-progress", "--no-power"]))
"""


def _start(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _both(env: dict[str, str]) -> list[tuple[int, str, str]]:
    """Start two drivers at the same moment (the second does not wait for the first to import)."""
    barrier = threading.Barrier(2)
    procs: list[subprocess.Popen] = [None, None]  # type: ignore[list-item]

    def go(i: int) -> None:
        barrier.wait()
        procs[i] = _start(env)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        out.append((p.returncode, stdout, stderr))
    return out


@pytest.mark.slow
def test_two_commands_on_an_empty_cache_share_one_generated_cohort(tmp_path):
    from bench.data.synth.generate import DONE_MARKER

    cache = tmp_path / "cache"
    env = {**os.environ, "MRIBENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    results = _both(env)
    for rc, stdout, stderr in results:
        assert rc == 0, stderr[-2000:]
    (_, first, _), (_, second, _) = results
    assert first == second and "scans" in first          # the same cohort: same counts, same folder
    waited = [" ".join(err.split()) for _, _, err in results if "waiting for another process" in err]
    # the two started together and generating takes seconds: one generated, the other waited for it
    assert len(waited) == 1, [err for _, _, err in results]
    assert "note: waiting for another process to finish generating the synthetic cohort synth-smoke-seed0-" in waited[0]
    cohorts = cache / "cohorts"
    (folder,) = [p for p in cohorts.iterdir()]                   # no partial tree left behind
    assert (folder / DONE_MARKER).is_file() and not list(cohorts.glob("*.partial-*"))


def test_a_cache_lock_is_reentrant_in_one_thread(tmp_path, monkeypatch):
    """A command holding a cohort's lock opens the cohort, whose generator takes the same lock: it
    must not wait on itself (two flocks of one file by one process exclude each other)."""
    from bench.locks import cache_lock, is_locked

    monkeypatch.setenv("MRIBENCH_CACHE", str(tmp_path))
    with cache_lock("cohort-x-seed0"):
        with cache_lock("cohort-x-seed0"):
            pass
        held = Path(tmp_path) / "locks" / "cohort-x-seed0.lock"
        assert _held_elsewhere(held)
    assert not is_locked(held)


def _held_elsewhere(path: Path) -> bool:
    """Whether another process would find ``path`` locked (asked from a child process: in this one
    the lock is ours)."""
    code = f"from bench.locks import is_locked; raise SystemExit(0 if is_locked({str(path)!r}) else 1)"
    return subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
