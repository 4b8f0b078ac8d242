"""Cohort v2: the calibrated effects go the right way with about the right size, the calibration
command reproduces the synth column, and the measured volumes carry no latents.

The smoke cohort is small (80 ageing / AD subjects, 40 healthy), so tolerances are wide: they
catch an effect with the wrong sign or a wrong order of magnitude, not a percent.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.data.synth.calibrate import markdown_table, measure, read_truth
from bench.data.synth.effects import TARGETS
from bench.data.synth.generate import MEASURED_STRUCTURES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_root():
    from bench.data.sources import ensure_synth

    return ensure_synth("smoke", 0, progress=False)


@pytest.fixture(scope="module")
def measured(smoke_root):
    return {r.target.key: r for r in measure(*read_truth(smoke_root))}


def test_every_target_is_measured(measured):
    assert set(measured) == {t.key for t in TARGETS}
    missing = [k for k, r in measured.items() if not np.isfinite(r.synth)]
    assert not missing, f"not measurable on smoke: {missing}"


@pytest.mark.parametrize("key, low, high", [
    ("hippo_ad_vs_cn", -40.0, -10.0),        # published -24 %
    ("hippo_mci_vs_cn", -25.0, 0.0),         # published -12 %
    ("hippo_atrophy_ad", 2.0, 8.0),          # published 4.66 %/y
    ("hippo_atrophy_cn", 0.2, 3.0),          # published 1.41 %/y
    ("vent_ad_vs_cn", 10.0, 100.0),          # published +45 %
    ("vent_expansion_cn", 0.3, 4.0),         # published 1.5 ml/y
    ("cv_ventricles", 20.0, 80.0),           # published ~45 %
    ("brain_age_mae", 2.5, 9.0),             # published 4-6 y (40 healthy subjects: noisy)
    ("measurement_cv_hippo", 2.0, 5.0),      # published < 4.3 %
])
def test_effect_size_on_smoke(measured, key, low, high):
    assert low <= measured[key].synth <= high, f"{key} = {measured[key].synth:.2f}"


def test_effects_order_by_diagnosis(measured):
    m = {k: r.synth for k, r in measured.items()}
    assert m["hippo_atrophy_cn"] < m["hippo_atrophy_ad"]
    assert m["vent_expansion_cn"] < m["vent_expansion_ad"]
    assert m["hippo_ad_vs_cn"] < m["hippo_mci_vs_cn"] < 0


def test_volumes_tsv_has_no_latents_and_carries_measurement_error(smoke_root):
    volumes = pd.read_csv(smoke_root / "derivatives" / "synth" / "volumes.tsv", sep="\t")
    assert list(volumes.columns) == ["participant_id", "session_id", "sequence", *MEASURED_STRUCTURES]
    truth = pd.read_csv(smoke_root / "derivatives" / "synth" / "ground_truth.tsv", sep="\t")
    keyed = truth.merge(volumes, on=["participant_id", "session_id", "sequence"], suffixes=("_true", ""))
    assert len(keyed) == len(volumes) == len(truth)
    ratio = keyed["hippocampus_ml"] / keyed["hippocampus_ml_true"]
    assert 0.005 < ratio.std() < 0.1 and abs(ratio.mean() - 1) < 0.05


def test_brain_age_gap_is_recorded_and_individual(smoke_root):
    truth = pd.read_csv(smoke_root / "derivatives" / "synth" / "ground_truth.tsv", sep="\t")
    healthy = truth[truth["population"] == "healthy"]
    assert healthy["brain_age_gap"].std() > 1.0  # years: individuals age differently
    assert np.allclose(healthy["biological_age"], healthy["age"] + healthy["brain_age_gap"], atol=0.01)


def test_calibrate_command_prints_the_table(capsys, tmp_path):
    from bench.cli import main

    out = tmp_path / "calibration.md"
    assert main(["data", "calibrate", "--profile", "smoke", "--no-progress", "--markdown", str(out)]) == 0
    text = capsys.readouterr().out
    assert "quantities within their published band" in text
    md = out.read_text()
    assert md.count("\n") == len(TARGETS) + 2 and "Barnes et al. 2009" in md


def test_markdown_table_marks_rows_outside_their_band():
    from bench.data.synth.calibrate import Row

    rows = [Row(TARGETS[0], TARGETS[0].high + 1, 10), Row(TARGETS[1], TARGETS[1].value, 10)]
    lines = markdown_table(rows).splitlines()
    assert lines[2].endswith("| no |") and lines[3].endswith("| yes |")


def test_power_simulation_detects_a_large_gap_and_rarely_a_tiny_one():
    from bench.power import detection_power

    subjects = np.repeat(np.arange(80), 2)          # two examples per subject, resampled together
    y = np.tile([0, 1], 80)
    assert detection_power(y, subjects, 0.25, n_sim=40) >= 0.8
    assert detection_power(y, subjects, 0.01, n_sim=40) <= 0.25


def test_splits_make_prints_each_tasks_counts_and_detectable_gap(smoke_root, tmp_path, capsys):
    from bench.cli import main

    out = tmp_path / "synth-smoke"
    assert main(["splits", "make", "--profile", "smoke", "--out", str(out), "--power-sims", "10",
                 "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()  # not a terminal: whole values, tab-separated
    header = next(line.split("\t") for line in lines if line.startswith("task\t"))
    assert header[-1] == "AUC gap at 80 % power"
    rows = {line.split("\t")[0]: line.split("\t") for line in lines if "\t" in line}
    assert rows["ad_diagnosis"][-1].endswith("(AD vs rest)") and rows["brain_age"][-1] == "-"
    assert rows["conversion"][5].startswith("stable: ")
    with pytest.raises(SystemExit) as exit_info:  # a power table of no replicates is a usage error
        main(["splits", "make", "--profile", "smoke", "--out", str(out), "--power-sims", "0", "--force"])
    assert exit_info.value.code == 2
