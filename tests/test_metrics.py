"""Metrics against hand-computed values; bootstrap and paired tests."""

from __future__ import annotations

import numpy as np
import pytest

from bench import metrics as M


def test_binary_auc_by_hand():
    # positives score 0.8, 0.4; negatives 0.6, 0.2, 0.1 -> pairs (pos > neg):
    # 0.8 beats all 3; 0.4 beats 0.2 and 0.1 but not 0.6 -> 5 of 6 pairs
    y = np.array([1, 0, 1, 0, 0])
    s = np.array([0.8, 0.6, 0.4, 0.2, 0.1])
    assert M.auc(y, s) == pytest.approx(5 / 6)
    assert M.auc(y, np.column_stack([1 - s, s])) == pytest.approx(5 / 6)
    assert np.isnan(M.auc(np.zeros(3), np.ones(3)))


def test_macro_ovr_auc_by_hand():
    y = np.array([0, 1, 2, 0])
    p = np.array([[0.7, 0.2, 0.1], [0.3, 0.4, 0.3], [0.2, 0.3, 0.5], [0.3, 0.5, 0.2]])
    # class 0: positives 0.7, 0.3 vs negatives 0.3, 0.2 -> 0.7 wins 2, 0.3 ties 0.3 (0.5) and beats 0.2
    #   -> (2 + 1.5) / 4 = 0.875; class 1: positive 0.4 vs 0.2, 0.3, 0.5 -> 2/3;
    # class 2: positive 0.5 vs 0.1, 0.3, 0.2 -> 1.  macro = (0.875 + 2/3 + 1) / 3
    assert M.auc(y, p) == pytest.approx((0.875 + 2 / 3 + 1) / 3)


def test_balanced_accuracy_mae_pearson_by_hand():
    # class 0 recall 2/3, class 1 recall 1/1 -> (2/3 + 1) / 2
    assert M.balanced_accuracy([0, 0, 0, 1], [0, 0, 1, 1]) == pytest.approx(5 / 6)
    assert M.mae([1, 2, 3], [2, 2, 5]) == pytest.approx(1.0)
    # perfectly linear -> 1; anti-linear -> -1
    assert M.pearson_r([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert M.pearson_r([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_harrell_c_by_hand():
    # times 2(event), 4(event), 6(censored), 8(event); risks 0.9, 0.5, 0.7, 0.1
    # comparable pairs (i has event, t_i < t_j): (2,4) (2,6) (2,8) (4,6) (4,8); (8, -) none
    # concordant if risk_i > risk_j: 0.9>0.5 y, 0.9>0.7 y, 0.9>0.1 y, 0.5>0.7 n, 0.5>0.1 y -> 4/5
    y = np.array([[2, 1], [4, 1], [6, 0], [8, 1]], float)
    risk = np.array([0.9, 0.5, 0.7, 0.1])
    assert M.c_index(y, risk) == pytest.approx(4 / 5)
    # a tie in risk counts one half: make risk_4 == risk_6 -> (3 + 0.5 + 1) / 5
    assert M.c_index(y, np.array([0.9, 0.7, 0.7, 0.1])) == pytest.approx(4.5 / 5)


def test_uno_equals_harrell_without_censoring():
    rng = np.random.default_rng(0)
    y = np.column_stack([rng.permutation(20) + 1.0, np.ones(20)])
    risk = rng.normal(size=20)
    assert M.uno_c(y, risk, tau=100) == pytest.approx(M.c_index(y, risk))


def test_dice_and_hd95_by_hand():
    t = np.zeros((1, 1, 6), int)
    p = np.zeros((1, 1, 6), int)
    t[0, 0, 0:3] = 1  # 3 voxels
    p[0, 0, 1:4] = 1  # 3 voxels, 2 overlapping -> 2*2/6
    assert M.dice(t, p) == pytest.approx(4 / 6)
    # two single points 3 voxels apart -> Hausdorff distance 3 in either direction
    a = np.zeros((5, 5, 5), int)
    b = np.zeros((5, 5, 5), int)
    a[1, 1, 1] = 1
    b[1, 1, 4] = 1
    assert M.hd95(a, b) == pytest.approx(3.0)
    assert M.hd95(a, b, spacing=2.0) == pytest.approx(6.0)


def test_bootstrap_ci_covers_point_narrows_and_is_deterministic():
    rng = np.random.default_rng(1)
    def sample(n):
        y = rng.integers(0, 2, n)
        return y, y + rng.normal(0, 1.0, n)
    y, s = sample(60)
    ci = M.bootstrap_ci("auc", y, s, n_boot=300, seed=3)
    assert ci["low"] <= ci["point"] <= ci["high"]
    assert ci == M.bootstrap_ci("auc", y, s, n_boot=300, seed=3)
    y2, s2 = sample(600)
    wide = M.bootstrap_ci("mae", y, s, n_boot=300, seed=0)
    narrow = M.bootstrap_ci("mae", y2, s2, n_boot=300, seed=0)
    assert narrow["high"] - narrow["low"] < wide["high"] - wide["low"]


def test_cluster_bootstrap_keeps_subjects_together():
    # two subjects with 50 rows each: a resample has 0, 50 or 100 rows of subject A, so the
    # replicate MAE takes only three values
    y = np.zeros(100)
    pred = np.r_[np.zeros(50), np.ones(50)]
    groups = np.r_[["a"] * 50, ["b"] * 50]
    members = M.subject_index(groups, 100)
    boots = M.boot_scores("mae", y, pred, M.replicates(2, 200, 0), members)
    assert set(np.round(boots, 6)) <= {0.0, 0.5, 1.0}
    assert M.bootstrap_ci("mae", y, pred, n_boot=200, groups=groups)["n"] == 2


def test_paired_bootstrap():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200)
    good = y + rng.normal(0, 0.3, 200)
    bad = rng.normal(size=200)
    same = M.paired_bootstrap("auc", y, good, good, n_boot=200)
    assert same["delta"] == 0 and same["p_value"] == pytest.approx(1.0)
    better = M.paired_bootstrap("auc", y, good, bad, n_boot=200)
    assert better["delta"] > 0.3 and better["p_value"] < 0.01


def _per_replicate(fn, y, p, draws, members) -> np.ndarray:
    """``fn`` on each bootstrap resample, one at a time: what the vectorised replicates must equal."""
    import warnings

    out = []
    for d in draws:
        idx = np.concatenate([members[s] for s in d])
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.append(fn(y[idx], p[idx]))
    return np.array(out)


def test_vectorised_bootstrap_auc_equals_per_replicate_sklearn():
    """The rank-based replicate AUC must give exactly what sklearn gives on each resample."""
    rng = np.random.default_rng(0)
    n = 60
    groups = rng.integers(0, 20, n)
    cases = [
        (rng.integers(0, 2, n), np.round(rng.random(n), 1)),          # binary scores with ties
        (rng.integers(0, 2, n), rng.random((n, 2))),                  # binary probabilities
        (rng.integers(0, 3, n), rng.dirichlet([1, 1, 1], n)),         # macro one-vs-rest
        (rng.integers(0, 2, n), rng.dirichlet([1, 1, 1], n)),         # a class never present
    ]
    members = M.subject_index(groups, n)
    draws = M.replicates(len(members), 200, 1)
    for y, p in cases:
        fast = M.boot_scores("auc", y, p, draws, members)
        np.testing.assert_allclose(fast, _per_replicate(M.auc, y, p, draws, members), rtol=1e-12, equal_nan=True)


def test_vectorised_bootstrap_pearson_r_equals_per_replicate_corrcoef():
    rng = np.random.default_rng(3)
    n = 40
    groups = rng.integers(0, 12, n)
    members = M.subject_index(groups, n)
    draws = M.replicates(len(members), 300, 4)
    y = rng.normal(70, 8, n)
    cases = [rng.normal(70, 8, n) + 0.5 * y, np.full(n, 71.5), np.where(groups < 2, 60.0, 80.0)]
    for p in cases:  # informative, constant (NaN), constant in the replicates that miss groups 0-1
        fast = M.boot_scores("pearson_r", y, p, draws, members)
        np.testing.assert_allclose(fast, _per_replicate(M.pearson_r, y, p, draws, members), rtol=1e-10, atol=1e-12,
                                   equal_nan=True)
    assert np.isnan(M.boot_scores("pearson_r", y, cases[1], draws, members)).all()


def test_vectorised_bootstrap_c_indices_equal_per_replicate_lifelines():
    """Harrell's C (lifelines) and Uno's C on each resample, with tied times (event and censored at
    one time, two events at one time) and tied risks: the vectorised replicates equal the loop."""
    rng = np.random.default_rng(5)
    n = 36
    groups = rng.integers(0, 14, n)
    members = M.subject_index(groups, n)
    draws = M.replicates(len(members), 200, 6)
    time = rng.integers(1, 12, n).astype(float)       # few distinct times: many ties
    event = (rng.random(n) < 0.5).astype(float)
    y = np.stack([time, event], axis=1)
    for risk in (np.round(rng.normal(size=n), 1), -time + rng.normal(0, 2, n)):
        for metric, params in (("c_index", {}), ("uno_c", {}), ("uno_c", {"tau": 6.0})):  # tau: a task's horizon
            fast = M.boot_scores(metric, y, risk, draws, members, params)
            fn = lambda yy, pp, m=metric, kw=params: M.METRICS[m].fn(yy, pp, **kw)  # noqa: E731
            np.testing.assert_allclose(fast, _per_replicate(fn, y, risk, draws, members), rtol=1e-10, atol=1e-12,
                                       equal_nan=True)
    censored_only = np.stack([time, np.zeros(n)], axis=1)
    assert np.isnan(M.boot_scores("c_index", censored_only, risk, draws, members)).all()
    assert np.isnan(M.boot_scores("uno_c", censored_only, risk, draws, members)).all()


def test_vectorised_bootstrap_balanced_accuracy_equals_per_replicate_sklearn():
    rng = np.random.default_rng(1)
    n = 50
    groups = rng.integers(0, 15, n)
    members = M.subject_index(groups, n)
    draws = M.replicates(len(members), 200, 2)
    for y, p in [(rng.integers(0, 3, n), rng.dirichlet([1, 1, 1], n)), (rng.integers(0, 2, n), rng.random((n, 2)))]:
        fast = M.boot_scores("balanced_accuracy", y, p, draws, members)
        np.testing.assert_allclose(fast, _per_replicate(M.balanced_accuracy, y, p, draws, members), rtol=1e-12)


def test_ridge_head_tunes_alpha_over_subjects_not_sessions():
    """Features that identify a subject but say nothing about its age: grouped CV must not reward
    memorising subjects (row-wise leave-one-out would pick a tiny alpha here)."""
    from bench.heads import HeadData, RidgeHead

    rng = np.random.default_rng(0)
    n_sub, n_ses, dim = 40, 4, 60
    identity = rng.normal(size=(n_sub, dim))
    age = rng.uniform(60, 90, n_sub)
    x = np.repeat(identity, n_ses, axis=0) + 0.01 * rng.normal(size=(n_sub * n_ses, dim))
    y = np.repeat(age, n_ses)
    groups = np.repeat(np.arange(n_sub), n_ses)
    train = groups < 30
    head = RidgeHead().fit(HeadData(x=x[train], y=y[train], groups=groups[train]))
    assert head.chosen["inner_cv_folds"] == 5
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    z = StandardScaler().fit_transform(x[train])
    loo_alpha = RidgeCV(alphas=head.alphas).fit(z, y[train]).alpha_
    assert head.chosen["alpha"] >= 100 and loo_alpha <= head.chosen["alpha"] / 100
    pred = head.predict(HeadData(x=x[~train], y=y[~train]))
    mean_mae = np.abs(y[~train] - y[train].mean()).mean()
    assert np.abs(pred - y[~train]).mean() < 1.1 * mean_mae
