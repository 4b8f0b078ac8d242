"""bench.power and the board's power line: the board's own test (Wald on the paired-bootstrap SE) at
Holm's first level, enough simulations for a quotable power, the metric named, and the disk cache."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import norm

from bench import metrics, power
from bench.leaderboard import sections
from bench.leaderboard.sections import SplitPower, power_text, split_power
from bench.tasks import get_task

#: 80 subjects of two examples each, one of each class: big enough for a gap to be found.
SUBJECTS = np.repeat(np.arange(80), 2).astype(str)
LABELS = np.tile([0, 1], 80)


def fake_entry(labels, subjects, protocol: str = "linear_probe"):
    """What split_power reads of an entry: its protocol and its kept test predictions at the headline."""
    rows = [{"split": "test", "setting": "full", "seed": 0, "y_true": t, "participant_id": s}
            for t, s in zip(labels, subjects)]
    record = SimpleNamespace(predictions=rows, headline_setting="full")
    return SimpleNamespace(protocol=protocol, record=record, headline_scores=[])


# ---------------------------------------------------------------------------- the test itself
def test_paired_auc_deltas_are_the_metrics_bootstrap():
    """The vectorised replicates equal bench.metrics.boot_scores("auc") of a minus b, ties included."""
    rng = np.random.default_rng(3)
    n = 90
    subjects = np.repeat(np.arange(35), 3)[:n].astype(str)
    y = rng.integers(0, 2, n)
    a = rng.standard_normal(n) + y
    b = np.round(rng.standard_normal(n) + 0.5 * y, 1)          # ties, within and across subjects
    members = metrics.subject_index(subjects, n)
    draws = metrics.replicates(len(members), 300, 7)
    point, reps = power.paired_auc_deltas(power.Design.of(y, subjects), a, b, draws)
    want = metrics.boot_scores("auc", y, a, draws, members) - metrics.boot_scores("auc", y, b, draws, members)
    assert point == pytest.approx(metrics.auc(y, a) - metrics.auc(y, b), abs=1e-12)
    np.testing.assert_allclose(reps, want, atol=1e-12)


def test_wald_detection_by_hand():
    """Four subjects, one example each: a ranks perfectly (AUC 1), b half right (AUC 0.5)."""
    y = np.array([1, 1, 0, 0])
    a = np.array([0.9, 0.8, 0.1, 0.2])
    b = np.array([0.9, 0.1, 0.8, 0.2])
    draws = np.array([[0, 1, 2, 3],     # the sample itself: 1 - 0.5
                      [0, 0, 2, 3],     # positive 0.9 twice: both AUCs 1
                      [1, 1, 2, 2],     # 0.8 vs 0.1 for a (1), 0.1 vs 0.8 for b (0)
                      [0, 1, 1, 1]])    # no negative: undefined, dropped
    delta, reps = power.paired_auc_deltas(power.Design.of(y, ["s1", "s2", "s3", "s4"]), a, b, draws)
    assert delta == 0.5
    np.testing.assert_array_equal(reps[:3], [0.5, 0.0, 1.0])
    assert math.isnan(reps[3])
    # SE = SD (ddof 1) of 0.5, 0, 1 = 0.5, so z = 1 and p = 2 * (1 - Phi(1)) = 0.317
    p = power.wald_test(delta, reps)
    assert p == pytest.approx(2 * norm.sf(1.0), abs=1e-12)
    assert 0.3 < p < 0.35  # detected at a level of 0.5, not at 0.05
    assert math.isnan(power.wald_test(delta, np.array([0.5, np.nan])))  # one replicate: no SE, no test


def test_the_unadjusted_test_holds_its_level_and_is_deterministic():
    """At gap 0 the Wald test rejects about 5 % of simulated pairs (within 3 Monte-Carlo SEs); the same
    inputs give the same p-values."""
    design = power.Design.of(LABELS, SUBJECTS)
    p = power.simulate_p_values(design, 0.0)
    assert abs(np.mean(p < 0.05) - 0.05) < 3 * power.mc_se(0.05, len(p))
    np.testing.assert_array_equal(p, power.simulate_p_values(design, 0.0))


def test_holm_level_never_detects_more_than_the_unadjusted_one():
    design = power.Design.of(LABELS, SUBJECTS)
    for gap in (0.06, 0.10, 0.15):
        p = power.simulate_p_values(design, gap, n_sim=200)  # the same simulated data for both levels
        assert np.mean(p < 0.05 / 91) <= np.mean(p < 0.05)
    assert np.mean(power.simulate_p_values(design, 0.10, n_sim=200) < 0.05 / 91) < \
        np.mean(power.simulate_p_values(design, 0.10, n_sim=200) < 0.05)  # and strictly fewer here
    loose, _ = power.smallest_detectable_gap(LABELS, SUBJECTS, n_sim=200, alpha=0.05)
    strict, _ = power.smallest_detectable_gap(LABELS, SUBJECTS, n_sim=200, alpha=0.05 / 91)
    assert loose in power.GAPS and (math.isnan(strict) or strict > loose)


# ---------------------------------------------------------------------------- Monte-Carlo error
def test_default_simulations_keep_the_monte_carlo_error_at_most_two_points():
    assert sections.POWER_SIMS == power.N_SIM >= 400 and sections.POWER_BOOT == power.N_BOOT
    # the reported gap has power >= 0.8, where p (1 - p) is largest at 0.8
    assert all(power.mc_se(p, power.N_SIM) <= 0.02 + 1e-12 for p in np.linspace(0.8, 1.0, 21))
    assert power.mc_se(0.8, 40) > 0.06  # the old 40 simulations: +-0.06
    line = SplitPower(155, 527, 0.12, "AD vs rest", n_sim=400, power=0.91, alpha=0.05, n_pairs=91,
                      protocol="linear_probe", metric="3-class macro one-vs-rest AUC (CN / MCI / AD)",
                      power_below=0.68)
    assert line.mc_se == pytest.approx(math.sqrt(0.91 * 0.09 / 400))
    text = power_text(line)
    assert ("Smallest AUC gap detectable at 80 % power: 0.12 (power 0.91 +/- 0.01 Monte-Carlo s.e.; at 0.10: 0.68; "
            "400 simulations per gap) at alpha = 0.05/91 (Holm's first step over the 91 pairs of the linear probe "
            "table, so the gap holds for any pair of it); Wald test on the paired-bootstrap SE (200 replicates "
            "over subjects)") in text


def test_splits_table_cell_states_power_error_and_unadjusted_level():
    counts = power.SplitCounts(100, 50, 0, 0, {})
    found = power.TaskPower("conversion", counts, 0.15, "", 0.84, power.N_SIM)
    assert found.summary == "0.15 (power 0.84 +/- 0.02 MC s.e., 400 sims; unadjusted alpha = 0.05)"
    none = power.TaskPower("tumour_marker", counts, math.nan, "", 0.58, power.N_SIM)
    assert none.summary.startswith("none up to 0.30 (power 0.58 +/- 0.02 MC s.e.")
    assert power.TaskPower("brain_age", counts, None).summary == "-"


# ---------------------------------------------------------------------------- the board's line
def test_split_power_names_the_metric_and_the_level():
    subjects = [f"sub-{i:03d}" for i in range(60)]
    three = split_power(get_task("ad_diagnosis"), [fake_entry([i % 3 for i in range(60)], subjects)], 40,
                        n_pairs=91)
    assert (three.n_pairs, three.level, three.proxy, three.metric) == \
        (91, 0.05 / 91, "AD vs rest", "3-class macro one-vs-rest AUC (CN / MCI / AD)")
    assert ("Test split: 60 subjects, 60 examples. Main score: 3-class macro one-vs-rest AUC (CN / MCI / AD); "
            "power simulated for the AD-vs-rest AUC. Smallest AUC gap detectable at 80 % power: ") in power_text(three)
    assert "at alpha = 0.05/91 (Holm's first step over the 91 pairs of the linear probe table" in power_text(three)
    binary = split_power(get_task("conversion"), [fake_entry([i % 2 for i in range(60)], subjects)], 40)
    assert (binary.n_pairs, binary.level, binary.proxy, binary.metric) == \
        (1, 0.05, "", "binary AUC (converts positive)")
    text = power_text(binary)
    assert "Main score: binary AUC (converts positive). Smallest AUC gap" in text and "vs-rest" not in text
    assert "at alpha = 0.05 (unadjusted)" in text
    # the headline protocol's records are read first: another protocol's kept labels do not count
    other = fake_entry([1] * 60, subjects, protocol="few_shot")
    assert split_power(get_task("conversion"), [other, fake_entry([i % 2 for i in range(60)], subjects)],
                       0).n_examples == 60
    assert split_power(get_task("conversion"), [other], 40).note == "one class only"


def test_the_line_gives_the_same_gap_as_bench_power_at_the_holm_level():
    line = split_power(get_task("conversion"), [fake_entry(LABELS, SUBJECTS)], 100, n_pairs=10)
    gap, tried = power.smallest_detectable_gap(LABELS, SUBJECTS, n_sim=100, alpha=0.005)
    assert (line.gap, line.power, line.level) == (gap, tried[gap], 0.005)


# ---------------------------------------------------------------------------- the cache
def test_a_second_call_reads_the_disk_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MRIBENCH_CACHE", str(tmp_path))
    first = power.detectable_gap(LABELS, SUBJECTS, alpha=0.01, n_sim=60)
    files = list((tmp_path / "power").glob("*.json"))
    assert len(files) == 1 and files[0].stem == power.cache_key(LABELS, SUBJECTS, alpha=0.01, n_sim=60,
                                                                 n_boot=power.N_BOOT, seed=0)
    none = power.detectable_gap(LABELS[:8], SUBJECTS[:8], n_sim=20)
    assert math.isnan(none.gap) and none.power < 0.8

    def no_simulation(*args, **kwargs):
        raise AssertionError("simulated although cached")

    monkeypatch.setattr(power, "simulate_p_values", no_simulation)
    again = power.detectable_gap(LABELS, SUBJECTS, alpha=0.01, n_sim=60)
    assert again == first and again.gap in power.GAPS and again.mc_se == power.mc_se(first.power, 60)
    with pytest.raises(AssertionError, match="simulated"):  # another level is another key
        power.detectable_gap(LABELS, SUBJECTS, alpha=0.05, n_sim=60)
    # nothing found (on 4 subjects) is cached too (JSON null, read back as NaN)
    assert math.isnan(power.detectable_gap(LABELS[:8], SUBJECTS[:8], n_sim=20).gap)
    files[0].write_text("{not json")                     # a damaged entry is recomputed, not trusted
    with pytest.raises(AssertionError, match="simulated"):
        power.detectable_gap(LABELS, SUBJECTS, alpha=0.01, n_sim=60)
