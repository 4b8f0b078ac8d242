"""The reliability protocol: its statistics against hand computation and the published example, and
the protocol end to end on the smoke cohort with rescans that are exact copies (ICC 1, every rescan
identified) or another subject's scan (predictions unrelated: ICC near 0, nobody identified)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bench.reliability_stats import (icc_a1, identification_hits, subject_bootstrap, within_subject_sd,
                                     within_subject_slope)

#: Shrout & Fleiss (1979), Psychological Bulletin 86(2):420-428, Table 2: six targets rated by four
#: judges. Their Table 4 gives ICC(2,1) = .29 (and ICC(1,1) = .17, ICC(3,1) = .71).
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])


def _icc_by_hand(y: np.ndarray) -> float:
    """ICC(2,1) from the two-way ANOVA table written out term by term."""
    n, k = y.shape
    grand = y.sum() / (n * k)
    ss_subjects = sum(k * (y[i].mean() - grand) ** 2 for i in range(n))
    ss_runs = sum(n * (y[:, j].mean() - grand) ** 2 for j in range(k))
    ss_total = sum((y[i, j] - grand) ** 2 for i in range(n) for j in range(k))
    bms, jms = ss_subjects / (n - 1), ss_runs / (k - 1)
    ems = (ss_total - ss_subjects - ss_runs) / ((n - 1) * (k - 1))
    return (bms - ems) / (bms + (k - 1) * ems + k * (jms - ems) / n)


def test_icc_is_shrout_and_fleiss_icc_2_1():
    assert icc_a1(SHROUT_FLEISS) == pytest.approx(0.29, abs=0.005)
    assert icc_a1(SHROUT_FLEISS) == pytest.approx(_icc_by_hand(SHROUT_FLEISS.astype(float)), abs=1e-12)
    pairs = np.array([[70.1, 69.8], [35.0, 36.2], [52.3, 51.0], [81.0, 80.4], [44.4, 45.9]])
    assert icc_a1(pairs) == pytest.approx(_icc_by_hand(pairs), abs=1e-12)


def test_icc_is_absolute_agreement_an_offset_between_runs_lowers_it():
    rng = np.random.default_rng(0)
    truth = rng.normal(60, 15, 40)
    same = np.column_stack([truth, truth])
    shifted = np.column_stack([truth, truth + 10.0])  # a scanner offset: perfectly consistent, not in agreement
    assert icc_a1(same) == pytest.approx(1.0)
    assert icc_a1(shifted) < 0.8
    assert np.isnan(icc_a1(np.ones((5, 2))))  # no variance: undefined, not 1


def test_within_subject_sd_by_hand():
    # subject variances (ddof 1): (1-3)^2/2 = 2 and 0; mean 1; SD 1
    assert within_subject_sd(np.array([[1.0, 3.0], [2.0, 2.0]])) == pytest.approx(1.0)


def test_identification_counts_a_rescan_whose_nearest_first_scan_is_its_own():
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    queries = np.array([[0.9, 0.1], [0.9, 0.1], [0.0, 1.0]])
    assert identification_hits(gallery, queries, np.array([0, 2, 1])).tolist() == [1.0, 0.0, 1.0]
    # rows 0 and 2 are two sessions of subject A: a rescan of A's second session nearest to A's first is
    # a miss among all scans, and a hit once the subject's other sessions are no rivals
    subjects = np.array(["A", "B", "A"])
    rescan = np.array([[0.9, 0.1]])
    assert identification_hits(gallery, rescan, np.array([2])).tolist() == [0.0]
    assert identification_hits(gallery, rescan, np.array([2]), subjects, np.array(["A"])).tolist() == [1.0]
    constant = np.ones((3, 2))  # identical embeddings identify nobody (a tie is a miss)
    assert identification_hits(constant, constant, np.arange(3)).tolist() == [0.0, 0.0, 0.0]


def test_within_subject_slope_ignores_differences_between_subjects():
    groups = np.repeat(["a", "b", "c"], 3)
    age = np.array([60, 61, 62, 70, 71, 72, 80, 81, 82], float)
    offsets = np.repeat([20.0, -5.0, 3.0], 3)  # each subject its own level: a cross-sectional fit would mix them in
    assert within_subject_slope(0.5 * age + offsets, age, groups) == pytest.approx(0.5)


def test_subject_bootstrap_is_seeded_and_resamples_subjects_whole():
    groups = np.repeat(np.arange(20), 2)
    values = np.repeat(np.arange(20.0), 2)
    a = subject_bootstrap(lambda r: float(values[r].mean()), groups, n_boot=200, seed=3)
    b = subject_bootstrap(lambda r: float(values[r].mean()), groups, n_boot=200, seed=3)
    assert a == b and a["n"] == 20 and a["low"] < 9.5 < a["high"]


# -- the protocol end to end ---------------------------------------------------------------------------
def _with_rescans(cohort, shuffle: bool):
    """The smoke cohort with a run-02 for every brain_age example of test and external: its own file
    (an exact copy), or (``shuffle``) another subject's file."""
    t = cohort.table
    chosen = t[(t["population"] == "healthy") & (t["sequence"] == "T1w")].copy()
    if shuffle:
        chosen["path"] = np.roll(chosen["path"].to_numpy(), 1)
    repeats = chosen.assign(run="02").reset_index(drop=True)
    return replace(cohort, repeats=repeats)


@pytest.mark.parametrize("shuffle", [False, True], ids=["exact-copies", "another-subject"])
def test_protocol_numbers_on_copied_and_unrelated_rescans(tmp_path, shuffle):
    from bench.data.sources import open_cohort
    from bench.leaderboard.verify import verify_path
    from bench.paths import cache_home
    from bench.profiles import get_profile
    from bench.results import read_bounded_json
    from bench.runner import Runner

    profile = replace(get_profile("smoke"), seeds=1, n_boot=50)
    cohort = _with_rescans(open_cohort(None, profile="smoke", progress=False), shuffle)
    runner = Runner(cohort, profile, tmp_path / "results", progress=False, cache_root=cache_home(), command="t")
    (result,) = runner.run("random", ["brain_age"], ["reliability"])
    assert result.status == "done", result.error
    data = read_bounded_json(result.path)
    assert data["main_score_name"] == "icc" and data["higher_is_better"] is True
    by = {(s["setting"], s["split"]): s for s in data["scores"]}
    retest, ident = by[("retest", "test")], by[("identification", "test")]
    if not shuffle:
        assert retest["metrics"]["icc"] == pytest.approx(1.0) and retest["metrics"]["within_sd"] == pytest.approx(0.0)
        assert ident["metrics"]["identification"] == 1.0
    else:
        assert abs(retest["metrics"]["icc"]) < 0.6 and retest["ci"]["icc"]["low"] < 0.3
        assert ident["metrics"]["identification"] < 0.3
    assert data["reliability"]["pairs"]["test"] == retest["n_examples"]
    verdict = verify_path(result.path)
    assert verdict.ok, verdict.problems


def test_verify_refuses_an_edited_icc(tmp_path):
    from bench.data.sources import open_cohort
    from bench.leaderboard.verify import verify_path
    from bench.paths import cache_home
    from bench.profiles import get_profile
    from bench.results import load_record, summarise, write_record
    from bench.runner import Runner

    profile = replace(get_profile("smoke"), seeds=1, n_boot=50)
    cohort = _with_rescans(open_cohort(None, profile="smoke", progress=False), shuffle=False)
    runner = Runner(cohort, profile, tmp_path / "results", progress=False, cache_root=cache_home(), command="t")
    (result,) = runner.run("oracle", ["brain_age"], ["reliability"])
    record = load_record(result.path)
    # the oracle reads the latents of a session: a rescan's are its first scan's (ICC 1 by construction)
    assert record.main_score == pytest.approx(1.0)
    retest = next(s for s in record.scores if s.setting == "retest" and s.split == "test")
    retest.metrics["icc"] = 0.99  # consistent everywhere else: main score and summary follow the edit
    record.main_score = float(np.mean([s.metrics["icc"] for s in record.scores
                                       if s.setting == "retest" and s.split == "test"]))
    record.summary = summarise(record.scores)
    path = tmp_path / "edited" / result.path.name
    write_record(record, path)
    verdict = verify_path(path)
    assert not verdict.ok and "icc 0.99 at retest / seed 0 / test is not what its predictions give" in verdict.reason


def test_a_reliability_record_is_tied_to_the_repeats_it_read(tmp_path):
    """The cohort's hash leaves the repeats out (rescans added to a cohort change no other record), so
    a reliability record carries the repeats' hash itself: the same rescans reuse it, other rescans
    are another run; a linear-probe record has no such entry."""
    from bench.data.sources import open_cohort
    from bench.errors import MribenchError
    from bench.paths import cache_home
    from bench.profiles import get_profile
    from bench.results import load_record
    from bench.runner import SKIPPED, Runner, cohort_extras

    profile = replace(get_profile("smoke"), seeds=1, n_boot=50)
    base = open_cohort(None, profile="smoke", progress=False)
    copies, others = _with_rescans(base, shuffle=False), _with_rescans(base, shuffle=True)
    extras = cohort_extras("reliability", copies)
    assert extras["repeats_sha256"] != cohort_extras("reliability", others)["repeats_sha256"]
    assert cohort_extras("linear_probe", copies) is None
    assert cohort_extras("reliability", replace(copies, repeats=None)) == {"repeats_sha256": None}

    def run(cohort):
        runner = Runner(cohort, profile, tmp_path / "results", progress=False, cache_root=cache_home(), command="t")
        return runner.run("random", ["brain_age"], ["reliability"])[0]

    first = run(copies)
    assert first.status == "done", first.error
    assert load_record(first.path).provenance.config["cohort_extras"] == extras
    assert run(copies).status == SKIPPED
    with pytest.raises(MribenchError, match=r"holds the result of another run \(cohort extras \(repeats_sha256"):
        run(others)
