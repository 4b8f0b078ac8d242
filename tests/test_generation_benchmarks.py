"""The two scripts behind the README's generation figure measure what they say.

``benchmarks/cohort_generation.py`` times ``bench data synth`` in a child whose rendering runs in
forked worker processes: its per-subject and per-rescan timings must still add up across processes,
and its byte comparison must hold between two generations. ``benchmarks/generation_breakdown.py``
times the operations the byte-identical output pins: its parts must be measured, not zero, and must
leave the rest as the difference.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_generation_timings_add_up_across_worker_processes_and_two_runs_are_identical(tmp_path):
    bench_script = _script("cohort_generation")
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    kept = tmp_path / "kept"
    args = ["--profile", "smoke", "--subjects", "6", "--workers", "2"]
    assert bench_script.main(args + ["--keep", str(kept), "--json", str(first)]) == 0
    assert bench_script.main(args + ["--compare", str(kept), "--json", str(second)]) == 0
    result = json.loads(second.read_text())
    assert result["compare"]["identical"] and result["compare"]["files"] > 20
    render = result["render"]
    assert render["subjects_rendered"] == 6  # every call of every worker process was counted
    assert render["rescans_rendered"] == result["n_rescans"]
    assert 0 < render["main_scans_cpu_s"] <= result["cpu_s"]


def test_breakdown_times_the_pinned_operations_and_leaves_the_rest_as_the_difference():
    result = _script("generation_breakdown").breakdown("smoke", every=20)
    parts = result["parts"]
    assert set(parts) == {"grid_sample", "interpolate", "noise_draws", "blur", "write"}
    assert all(parts[p]["cpu_s"] > 0 for p in ("grid_sample", "interpolate", "noise_draws", "write"))
    pinned = sum(p["cpu_s"] for p in parts.values())
    assert pinned < result["cpu_s"]
    assert result["rest"]["cpu_s"] == pytest.approx(result["cpu_s"] - pinned, abs=0.05)
    assert result["pinned_share"] == pytest.approx(pinned / result["cpu_s"], abs=0.01)
