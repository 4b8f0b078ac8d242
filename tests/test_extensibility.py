"""Adding a protocol or a target kind is one new module plus one registry line.

``tests/plugins/half_probe.py`` declares a protocol and ``tests/plugins/age_band.py`` a target
kind; each is registered here by one line (``PROTOCOLS.register`` / ``KINDS.register``, a lazy
``"module:object"`` reference) and runs end to end through the Runner on the tiny cohort: records
are written, verified, and the new protocol appears in the leaderboard with its label.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bench.kinds import KINDS
from bench.profiles import get_profile
from bench.protocols import PROTOCOLS

pytestmark = pytest.mark.slow

AGE_BAND_TASK = """\
name: age_band
version: 1
description: toy task of tests/test_extensibility.py - the decade of age at each session
cohort: synth
kind: age_band
population: {population: ad}
input: {mode: session, sequences: [T1w]}
label: {type: age}
metrics: [mae]
main_score: mae
higher_is_better: false
split: "{cohort}/ad.tsv"
"""


@pytest.fixture
def plugins(monkeypatch, tmp_path, tiny_splits_root):
    """The two plugin modules importable, each registered by its one line; gone afterwards."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "plugins"))
    monkeypatch.setenv("MRIBENCH_SPLITS", str(tiny_splits_root))
    PROTOCOLS.register("half_probe", "half_probe:PROTOCOL")       # the protocol's registry line
    KINDS.register("age_band", "age_band:AGE_BAND")               # the kind's registry line
    tasks = tmp_path / "tasks"                                    # tasks/ as shipped, plus the toy task
    shutil.copytree(Path(__file__).resolve().parent.parent / "tasks", tasks)
    (tasks / "age_band.yaml").write_text(AGE_BAND_TASK)
    monkeypatch.setattr("bench.tasks.tasks_dir", lambda: tasks)
    yield
    PROTOCOLS.unregister("half_probe")
    KINDS.unregister("age_band")
    sys.modules.pop("half_probe", None)
    sys.modules.pop("age_band", None)


def test_a_new_protocol_and_kind_run_through_the_runner_and_reach_the_board(plugins, tiny_cohort_dir, tmp_path):
    from bench.data.sources import open_cohort
    from bench.leaderboard import load_board
    from bench.leaderboard.fmt import protocol_label
    from bench.leaderboard.verify import verify_path
    from bench.results import load_record
    from bench.runner import Runner
    from bench.tasks import get_task

    from bench.cli import main

    cohort = open_cohort(tiny_cohort_dir, progress=False)
    # a new task's labels join the split's label digests, which verify holds its records to
    split_dir = Path(os.environ["MRIBENCH_SPLITS"]) / tiny_cohort_dir.name
    assert main(["splits", "labels", "--cohort", str(tiny_cohort_dir), "--dir", str(split_dir), "--no-progress"]) == 0
    profile = replace(get_profile("smoke"), seeds=1, n_boot=20)
    runner = Runner(cohort, profile, tmp_path / "results", progress=False, cache_root=tmp_path / "cache")
    results = runner.run("oracle", ["sequence_classification", "age_band"], ["linear_probe", "half_probe"])
    assert [r.status for r in results] == ["done"] * 4, [r.error for r in results]
    for r in results:
        assert verify_path(r.path).ok, verify_path(r.path).reason
    half = load_record(results[1].path)
    assert half.protocol == "half_probe" and half.headline_setting == "half"
    assert {s.params["fraction"] for s in half.scores} == {0.5}
    n_all = load_record(results[0].path).scores[0].params["n_train_subjects"]
    assert half.scores[0].params["n_train_subjects"] == max(1, n_all // 2)
    # the kind's labels: decades, so the ridge head's MAE is in decades
    spec = get_task("age_band")
    assert spec.target is KINDS["age_band"]
    band = load_record(results[2].path)
    assert {p["y_true"] for p in band.predictions} <= {float(d) for d in range(2, 10)}

    board = load_board(tmp_path / "results")
    table = board.table("sequence_classification")
    assert "half_probe" in table.by_protocol and "half_probe" in board.protocols
    assert protocol_label("half_probe") == "half probe (50 %)"
    assert "age_band" in {t.task for t in board.tables}
