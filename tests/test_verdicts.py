"""The board's verdicts: ranks that follow the scores, Holm within a table, training noise in the
intervals, n/a where a task does not apply, an overall test that measures the encoders.

Fixtures reproduce the failures a reviewer found on the committed board (a better-scoring entry
ranked below worse ones on ad_diagnosis, unadjusted separations on tumour_survival, a constant-
prediction encoder shown as AUC 0.500, a zero-width interval shown as a finding) on hand-made
records whose every expected number is worked out in a comment.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from test_leaderboard import age_record, class_record, entry, make_record, split_test_subjects

from bench.leaderboard.board import build_board
from bench.leaderboard.ranking import rank_entries
from bench.stats import Spread, holm, interval, wald_p

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------- statistics
def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 4 * 0.005 = 0.02, 3 * 0.01 = 0.03, 2 * 0.03 = 0.06,
    # max(0.06, 1 * 0.04) = 0.06; a missing test stays missing
    assert holm([0.01, 0.04, 0.03, None, 0.005]) == pytest.approx([0.03, 0.06, 0.06, None, 0.02])
    assert holm([0.9, 0.8]) == [1.0, 1.0]                       # 2 * 0.8 capped at 1; monotone


def test_variance_components_interval_by_hand():
    from scipy.stats import t

    # subject variance 0.01, seed variance of the mean 0.04 on 2 df: SE = sqrt(0.05),
    # df = 0.05^2 / (0.04^2 / 2) = 3.125 (Welch-Satterthwaite)
    spread = Spread(0.01, 0.04, 2)
    assert spread.df == pytest.approx(3.125)
    low, high = interval(1.0, spread)
    assert high - 1.0 == pytest.approx(t.ppf(0.975, 3.125) * math.sqrt(0.05))
    assert Spread(0.01, 0.0, 2).df == math.inf                 # no seed noise: a normal interval
    assert wald_p(0.0, Spread(0.0, 0.0, 0)) == 1.0 and wald_p(0.1, Spread(0.0, 0.0, 0)) == 0.0


# ------------------------------------------------------------------------------- ranks and Holm
def test_a_better_score_never_ranks_below_a_worse_one():
    """The ad_diagnosis inversion: X (MAE 1.2, +0.2 on every subject) is separated from the leader L
    (SE 0: p = 0), Y (MAE 1.3: +3.0 on subject 0 only, bootstrap SE 0.3 sqrt(0.9) = 0.285) is not
    (p = 0.29). Testing only against the leader put X in the second group and Y in the first. Here
    X's raw rank is 2 (L beats it) and Y's 1 (nobody beats it: X - Y = 0.1, p = 0.73), so the
    monotone rule gives X rank 1: at least 0 entries beat an entry that scores better than Y."""
    n = 10
    leader = entry(age_record("L", [1.0] * n))
    x = entry(age_record("X", [1.2] * n))
    y = entry(age_record("Y", [4.0] + [1.0] * (n - 1)))
    ranked = {r.entry.encoder: r for r in rank_entries([leader, x, y], n_boot=2000)}
    assert ranked["X"].beaten_by == ("L",)
    assert ranked["Y"].beaten_by == ()
    assert [ranked[e].rank for e in "LXY"] == [1, 1, 1]
    # ...and the board says that X's rank is held, not earned against L
    from bench.leaderboard import fmt

    assert fmt.held_rank(ranked["X"]) == "beaten by 1 after Holm (rank held by a worse-scoring entry)"
    assert fmt.held_rank(ranked["Y"]) is None


def test_holm_removes_unadjusted_separations():
    """The tumour_survival case: each of B1..B4 is worse than the leader A by x on the same 3 of 10
    subjects (x = 1, 2, 3, 4), so every pair differs on exactly those 3 subjects: delta* = x k / 10 with
    k ~ Binomial(10, 0.3) draws among them, so delta = 0.3 x, SE = x sqrt(2.1) / 10, z = sqrt(3 / 0.7)
    = 2.07 and p = 0.038 for all 10 pairs. Each is 'separated' unadjusted; Holm multiplies the
    smallest by 10: no separation survives."""
    n = 10
    entries = [entry(age_record("A", [1.0] * n))]
    entries += [entry(age_record(f"B{x}", [1.0 + x] * 3 + [1.0] * 7)) for x in (1, 2, 3, 4)]
    ranked = rank_entries(entries, n_boot=4000, seed=0)
    raw = [r.vs_best.p_value for r in ranked[1:]]
    assert raw == pytest.approx([0.038] * 4, abs=0.005)           # each significant on its own
    assert all(r.vs_best.p_adjusted >= 0.05 for r in ranked[1:])
    assert [r.rank for r in ranked] == [1] * 5


def test_constant_predictions_are_not_applicable_not_chance():
    """volumes on sequence_classification: one prediction for every example, AUC 0.500 (0.500-0.500).
    That is not a finding about the encoder: it is "n/a (constant predictions)", unranked."""
    subjects = split_test_subjects("ad_diagnosis", 12)
    truth = [i % 3 for i in range(12)]
    flat = make_record("flat", "ad_diagnosis", {"full": {0: [[0.2, 0.3, 0.5]] * 12}}, truth, subjects)
    good = class_record("good", "ad_diagnosis", "perfect")
    ranked = {r.entry.encoder: r for r in rank_entries([entry(flat), entry(good)], n_boot=200)}
    assert ranked["flat"].rank is None and ranked["flat"].status == "n/a (constant predictions)"
    assert ranked["good"].rank == 1 and ranked["good"].vs_best is None
    board = build_board([entry(flat), entry(good)], n_boot=200, power_sims=0)
    assert board.overall[0].rows[0].ranks == {"ad_diagnosis": 1}
    assert {r.encoder: r.n_tasks for r in board.overall[0].rows} == {"good": 1, "flat": 0}


def test_a_zero_width_interval_says_no_variation():
    from bench.leaderboard import fmt

    perfect = entry(class_record("P", "ad_diagnosis", "perfect"))
    assert perfect.ci == (1.0, 1.0) and perfect.zero_width
    assert fmt.entry_score(perfect) == "1.000 (no variation: every resample scores 1.000)"


# ---------------------------------------------------------------------------------- training noise
def test_seeds_that_agree_are_said_to_and_seeds_that_vary_widen_the_interval():
    from bench.leaderboard import fmt

    same = entry(age_record("S", [1.0] * 10, preds={"full": {s: [70.0 + i + 1.0 for i in range(10)]
                                                              for s in (0, 1, 2)}}))
    assert fmt.seeds(same) == "3 identical" and same.ci == same.record_ci
    # seed s adds s to every error: MAE 1, 2, 3 -> mean 2, SD 1; subject SE 0 (every error equal), so
    # the interval is 2 -/+ t(2 df) * sqrt(1 / 3) = 2 -/+ 4.303 * 0.577
    vary = entry(age_record("V", [1.0] * 10, preds={"full": {s: [70.0 + i + 1.0 + s for i in range(10)]
                                                              for s in (0, 1, 2)}}))
    assert fmt.seeds(vary) == "3, SD 1"
    assert vary.ci == pytest.approx((2 - 4.3027 * math.sqrt(1 / 3), 2 + 4.3027 * math.sqrt(1 / 3)), abs=1e-3)
    assert vary.record_ci == pytest.approx((2.0, 2.0))          # what the board showed before


@pytest.mark.slow
def test_intervals_with_training_noise_cover_the_true_mean():
    """Simulated records with known subject noise and seed noise (seed SD twice the subject SE, as in
    fine-tuning on the committed board): per subject error 3 + N(0, 1), per seed offset N(0, 2 / sqrt(12))
    on 12 test subjects, 3 seeds, so every seed's MAE is mean(error) + offset and the true mean is 3.
    The board's interval must cover 3 in at least 90 % of 300 replicates; the mean of the per-seed
    subject CIs (what the board showed) covers it in under 85 % (expected about 0.78)."""
    rng = np.random.default_rng(20261207)
    n, seeds, sims = 12, 3, 300
    seed_sd = 2 / math.sqrt(n)
    hits_new = hits_old = 0
    subjects = split_test_subjects("brain_age", n)
    truth = [70.0 + i for i in range(n)]
    for _ in range(sims):
        errors = 3.0 + rng.standard_normal(n)
        offsets = seed_sd * rng.standard_normal(seeds)
        preds = {"full": {s: [t + e + offsets[s] for t, e in zip(truth, errors)] for s in range(seeds)}}
        e = entry(make_record("sim", "brain_age", preds, truth, subjects))
        hits_new += e.ci[0] <= 3.0 <= e.ci[1]
        hits_old += e.record_ci[0] <= 3.0 <= e.record_ci[1]
    assert hits_new / sims >= 0.90, hits_new / sims
    assert hits_old / sims < 0.85, hits_old / sims


# ---------------------------------------------------------------------------------------- overall
def test_the_overall_test_leaves_out_ceilings_aliases_and_sanity_checks():
    """An oracle-like ceiling and a second name for the same network are shown but not tested; a task
    whose spec says ranking: false is not in the overall ranking."""
    def three(name, quality, card=None):
        return [entry(class_record(name, "ad_diagnosis", quality, card=card)),
                entry(age_record(name, [1.0 + (quality != "perfect")] * 10, card=card)),
                entry(class_record(name, "conversion_detection", quality, card=card))]
    entries = (three("ceiling", "perfect", {"ssl_method": "oracle"}) + three("A", "perfect")
               + three("A-copy", "perfect") + three("B", "inverted"))
    board = build_board(entries, n_boot=200, power_sims=0)
    summary = board.overall[0]
    assert summary.tasks == ["ad_diagnosis", "brain_age"] and summary.not_ranking == ["conversion_detection"]
    assert summary.cd.left_out == {"ceiling": "ceiling", "A-copy": "same network as A"}
    assert summary.cd.encoders == ["A", "B"]
    roles = {r.encoder: r.role for r in summary.rows}
    assert roles["ceiling"] == "ceiling" and roles["A-copy"] == "same network as A" and roles["A"] == ""


def test_declaring_a_task_not_ranking_changes_no_identity():
    """``ranking`` is outside the spec's hash: the committed records of the two sanity-check tasks
    still carry the hash of the spec as it is now."""
    import json

    from bench.tasks import get_task

    for task in ("sequence_classification", "conversion_detection", "ad_diagnosis"):
        spec = get_task(task)
        record = next((REPO / "leaderboard" / "results" / "random").glob(f"{task}@v*/linear_probe.json"))
        assert json.loads(record.read_text())["provenance"]["task_spec_sha256"] == spec.sha256
    assert not get_task("sequence_classification").ranking and get_task("ad_diagnosis").ranking


# ------------------------------------------------------------------------------ the committed board
def test_the_committed_board_has_no_inverted_ranks_and_holm_backed_separations():
    """Every table of leaderboard/results.csv: no entry ranked below a worse-scoring one, rank r backed
    by at least r - 1 entries that beat it after Holm, and a 'beaten by the best' only where the
    Holm-adjusted p against the best is below 0.05."""
    rows = list(csv.DictReader((REPO / "leaderboard" / "results.csv").open()))
    tables: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["section"] == "task" and r["rank"]:
            tables.setdefault((r["cohort"], r["task"], r["task_version"], r["protocol"]), []).append(r)
    assert len(tables) >= 19          # the committed board: 9 tasks x their ranked protocols
    for key, members in tables.items():
        hib = members[0]["higher_is_better"] == "True"
        for a in members:
            score_a, rank_a = float(a["main_score"]), int(a["rank"])
            for b in members:
                better = float(b["main_score"]) > score_a if hib else float(b["main_score"]) < score_a
                assert not (better and int(b["rank"]) > rank_a), (key, b["encoder"], a["encoder"])
            assert len(a["beaten_by"].split()) >= rank_a - 1, (key, a["encoder"])
            best = next(m["encoder"] for m in members if m["tie_test"] == "")   # the table's top entry
            if a["tie_test"] == "paired_bootstrap" and best in a["beaten_by"].split():
                assert float(a["p_vs_best"]) < 0.05, (key, a["encoder"])
