"""Trust, metrics (issue 19, items 8-12): one rule per metric, shared by the point estimate and its
vectorised bootstrap, checked against scikit-learn / lifelines or a hand-written reference."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bench import metrics as M


from tests.test_metrics import _per_replicate  # noqa: E402  (the one per-replicate reference loop)


# -- 8. binary AUC: the largest label is positive, in the point estimate and in every replicate -----
@pytest.mark.parametrize("labels", [(0, 1), (1, 2), (3, 7)])
def test_binary_auc_positive_class_is_the_largest_label_everywhere(labels):
    rng = np.random.default_rng(0)
    y = np.where(rng.random(120) < 0.4, labels[1], labels[0])
    score = (y == labels[1]) + rng.normal(0, 0.6, len(y))
    point = M.auc(y, score)
    assert point == pytest.approx(roc_auc_score(y == labels[1], score)) and point > 0.75
    ci = M.bootstrap_ci("auc", y, score, n_boot=300, seed=1)
    assert ci["low"] < point < ci["high"] and ci["low"] > 0.6
    members = M.subject_index(None, len(y))
    draws = M.replicates(len(members), 100, 2)
    for pred in (score, np.column_stack([-score, score])):
        np.testing.assert_allclose(M.boot_scores("auc", y, pred, draws, members),
                                   _per_replicate(M.auc, y, pred, draws, members), rtol=1e-12)
    worse = rng.normal(size=len(y))
    paired = M.paired_bootstrap("auc", y, score, worse, n_boot=300)
    assert paired["delta"] > 0.2 and paired["low"] > 0 and paired["p_value"] < 0.01


def test_binary_auc_refuses_three_labels_with_one_score():
    with pytest.raises(ValueError, match=r"labels \[0, 1, 2\]"):
        M.auc(np.array([0, 1, 2, 1]), np.array([0.1, 0.5, 0.9, 0.4]))


# -- 9. HD95: a missed tumour is penalised, and counted ---------------------------------------------
def test_hd95_penalises_an_empty_prediction_instead_of_dropping_it():
    truth = np.zeros((2, 20, 20, 20), np.uint8)
    truth[:, 8:12, 8:12, 8:12] = 1
    pred = truth.copy()
    pred[0, 8:12, 8:12, 8:10] = 0          # subject 0: roughly right (HD95 of a voxel or two)
    pred[1] = 0                            # subject 1: tumour missed
    per = M.hd95_per_subject(truth, pred)
    assert per[0] < 3 and per[1] == pytest.approx(M.hd95_penalty((20, 20, 20)))
    assert M.hd95(truth, pred) > M.hd95(truth[:1], pred[:1]) + 10   # missing a tumour makes it worse
    assert M.missed_structures(truth, pred) == 1
    invented = np.zeros_like(truth[:1])
    assert M.hd95_per_subject(invented, truth[:1])[0] == pytest.approx(M.hd95_penalty((20, 20, 20)))
    assert np.isnan(M.hd95_per_subject(invented, invented)[0])      # nothing to find, nothing found


def test_hd95_penalty_is_the_brats_number_on_the_brats_grid():
    assert M.hd95_penalty((240, 240, 155), spacing=1.0) == pytest.approx(M.BRATS_HD95_PENALTY_MM, abs=0.005)


def test_segmentation_scores_report_the_missed_count():
    from bench.protocols.segmentation import missed_summary as _missed

    truth = np.zeros((3, 16, 16, 16), np.uint8)
    truth[:, 4:8, 4:8, 4:8] = 2
    pred = truth.copy()
    pred[1:] = 0
    info = _missed(truth, pred, (16, 16, 16))
    assert info == {"n_missed": 2, "hd95_missed_penalty": round(16 * np.sqrt(3), 2)}


# -- 10. NaN predictions: one rule, one line naming the example --------------------------------------
CASES = {
    "auc": (np.array([0, 1, 0, 1, 1, 0]), np.array([0.1, 0.9, np.nan, 0.7, 0.8, 0.3])),
    "mauc": (np.array([0, 1, 2, 0, 1, 2]), np.array([[.6, .2, .2], [.2, .6, .2], [np.nan, .2, .6],
                                                     [.5, .3, .2], [.3, .5, .2], [.2, .2, .6]])),
    "balanced_accuracy": (np.array([0, 1, 0, 1, 1, 0]), np.array([[.9, .1], [.2, .8], [np.nan, np.nan],
                                                                  [.4, .6], [.3, .7], [.8, .2]])),
    "mae": (np.arange(6.0), np.array([0.0, 1, np.nan, 3, 4, 5])),
    "pearson_r": (np.arange(6.0), np.array([0.0, 1, np.inf, 3, 4, 5])),
    "c_index": (np.array([[1, 1], [2, 0], [3, 1], [4, 1], [5, 0], [6, 1]], float),
                np.array([3.0, 2, np.nan, 1, 0, -1])),
    "uno_c": (np.array([[1, 1], [2, 0], [3, 1], [4, 1], [5, 0], [6, 1]], float),
              np.array([3.0, 2, np.nan, 1, 0, -1])),
}


@pytest.mark.parametrize("metric", sorted(CASES))
def test_non_finite_predictions_are_refused_by_every_metric_entry_point(metric):
    y, pred = CASES[metric]
    with pytest.raises(M.NonFinitePrediction, match=r"first for row 2"):
        M.bootstrap_ci(metric, y, pred, n_boot=20)
    with pytest.raises(M.NonFinitePrediction, match=r"first for row 2"):
        M.compute([metric], y, pred)
    with pytest.raises(M.NonFinitePrediction):
        M.paired_bootstrap(metric, y, pred, pred, n_boot=20)


def _context(spec_name: str, n: int, **spec_changes):
    """A minimal protocol Context: ``n`` examples of one subject each, all in the test split."""
    import pandas as pd

    from bench.profiles import get_profile
    from bench.protocols.context import Context
    from bench.tasks import Examples, get_task

    spec = get_task(spec_name)
    if spec_changes:
        spec = spec.model_copy(update=spec_changes)
    table = pd.DataFrame({"example_id": [f"sub-{i:02d}_ses-M00" for i in range(n)],
                          "participant_id": [f"sub-{i:02d}" for i in range(n)], "split": "test"})
    examples = Examples(spec, table, [np.array([[i]]) for i in range(n)], [np.zeros(1)] * n)
    return Context(examples, split=None, cohort=None, encoder=None, profile=get_profile("smoke"))


def test_setting_score_names_the_example_with_a_nan_prediction():
    from bench.protocols.context import setting_score

    ctx = _context("brain_age", 6)
    pred = np.array([70.0, 71, 72, np.nan, 74, 75])
    with pytest.raises(M.NonFinitePrediction, match=r"1 prediction\(s\) are NaN or Inf, first for example "
                                                    r"sub-03_ses-M00"):
        setting_score(ctx, np.arange(6), "test", 0, "full", np.arange(70.0, 76.0), pred, {})


def test_nan_embedding_fails_naming_the_example():
    from bench.protocols.context import assemble_features

    ctx = _context("brain_age", 3)
    embeddings = {0: np.ones(4), 1: np.array([1.0, np.nan, 1, 1]), 2: np.ones(4)}
    with pytest.raises(M.NonFinitePrediction, match="example sub-01_ses-M00 holds 1 NaN"):
        assemble_features(ctx.examples, embeddings)


# -- 11. Uno's C: tied (event, censored) pairs kept, events at tau out, the task's horizon as tau ----
def _uno_reference(y: np.ndarray, risk: np.ndarray, tau: float | None) -> float:
    """Uno et al. (2011), eq. (6), written as a double loop: events i with t_i < tau, weight
    G(t_i)^-2 (lifelines' censoring Kaplan-Meier), partners j with t_j > t_i or censored at t_i."""
    from lifelines import KaplanMeierFitter

    time, event = y[:, 0], y[:, 1].astype(bool)
    g = KaplanMeierFitter().fit(time, event_observed=~event).survival_function_at_times(time).to_numpy()
    num = den = 0.0
    for i in range(len(y)):
        if not event[i] or (tau is not None and time[i] >= tau):
            continue
        for j in range(len(y)):
            if time[j] > time[i] or (time[j] == time[i] and not event[j]):
                w = 1.0 / g[i] ** 2
                den += w
                num += w * (1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0)
    return num / den


def test_uno_c_keeps_event_censored_ties_like_harrell_and_scikit_survival():
    # times 2 (event) and 2 (censored) tie: the pair counts, as in Harrell's C (lifelines).
    y = np.array([[2, 1], [2, 0], [5, 1], [7, 0], [9, 1]], float)
    risk = np.array([0.2, 0.9, 0.5, 0.4, 0.1])   # the tied pair is discordant: it must lower C
    assert M.uno_c(y, risk) == pytest.approx(_uno_reference(y, risk, None))
    no_censoring_at_2 = M.uno_c(np.array([[2, 1], [2.5, 0], [5, 1], [7, 0], [9, 1]], float), risk)
    assert M.uno_c(y, risk) < no_censoring_at_2


def test_uno_c_counts_only_events_before_tau_and_truncates_nothing_by_default():
    y = np.array([[1, 1], [3, 1], [4, 0], [6, 1], [8, 0], [10, 1]], float)
    risk = np.array([0.9, 0.1, 0.5, 0.8, 0.3, 0.2])
    # event at 6 is discordant with 8 (0.8 > 0.3: concordant) and 10 (0.8 > 0.2: concordant);
    # tau = 6 drops it (an event at exactly tau is out), tau = 6.5 keeps it
    assert M.uno_c(y, risk, tau=6) == pytest.approx(_uno_reference(y, risk, 6))
    assert M.uno_c(y, risk, tau=6.5) == pytest.approx(_uno_reference(y, risk, 6.5))
    assert M.uno_c(y, risk, tau=6) != pytest.approx(M.uno_c(y, risk, tau=6.5))
    assert M.uno_c(y, risk) == pytest.approx(_uno_reference(y, risk, None))   # the last event counts


def test_vectorised_uno_c_with_tau_equals_the_per_replicate_loop():
    rng = np.random.default_rng(5)
    n = 36
    groups = rng.integers(0, 14, n)
    members = M.subject_index(groups, n)
    draws = M.replicates(len(members), 150, 6)
    time = rng.integers(1, 12, n).astype(float)
    y = np.stack([time, (rng.random(n) < 0.5).astype(float)], axis=1)
    risk = np.round(rng.normal(size=n), 1)
    for tau in (None, 6.0, 11.0):
        fast = M.boot_scores("uno_c", y, risk, draws, members, {"tau": tau} if tau else None)
        slow = _per_replicate(functools.partial(M.uno_c, tau=tau), y, risk, draws, members)
        np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-12, equal_nan=True)
    assert M.uno_c(y, risk, tau=6.0) == pytest.approx(_uno_reference(y, risk, 6.0))


def test_a_survival_task_horizon_is_uno_tau():
    from bench.protocols.context import metric_params, setting_score

    ctx = _context("tumour_survival", 8)
    assert metric_params(ctx.spec) == {"uno_c": {"tau": 60.0}}  # tasks/tumour_survival.yaml's horizon
    label = ctx.spec.label.model_copy(update={"horizon_months": None})
    assert metric_params(_context("tumour_survival", 8, label=label).spec) == {}
    label = ctx.spec.label.model_copy(update={"horizon_months": 12.0})
    ctx = _context("tumour_survival", 8, label=label)
    assert metric_params(ctx.spec) == {"uno_c": {"tau": 12.0}}
    y = np.array([[3, 1], [5, 0], [8, 1], [12, 1], [14, 1], [20, 0], [24, 1], [30, 1]], float)
    risk = np.array([0.9, 0.5, 0.2, 0.8, 0.1, 0.3, 0.7, 0.05])
    entry = setting_score(ctx, np.arange(8), "test", 0, "full", y, risk, {})
    assert entry.metrics["uno_c"] == pytest.approx(_uno_reference(y, risk, 12.0))
    assert entry.metrics["uno_c"] != pytest.approx(M.uno_c(y, risk))


# -- 12. multi-class AUC (Hand & Till) ---------------------------------------------------------------
@pytest.mark.parametrize("n_classes", [3, 4])
def test_mauc_equals_scikit_learn_ovo_macro(n_classes):
    rng = np.random.default_rng(n_classes)
    y = rng.integers(0, n_classes, 80)
    p = rng.dirichlet(np.ones(n_classes), 80)
    p[np.arange(80), y] += 0.3 * rng.random(80)
    p = np.round(p / p.sum(1, keepdims=True), 2)       # ties included
    p /= p.sum(1, keepdims=True)
    expected = roc_auc_score(y, p, multi_class="ovo", average="macro")
    assert M.mauc(y, p) == pytest.approx(expected, abs=1e-12)
    groups = rng.integers(0, 30, 80)
    members = M.subject_index(groups, 80)
    draws = M.replicates(len(members), 100, 3)

    def sklearn_or_nan(yy, pp):
        return roc_auc_score(yy, pp, multi_class="ovo", labels=range(n_classes)) \
            if len(np.unique(yy)) == n_classes else np.nan

    np.testing.assert_allclose(M.boot_scores("mauc", y, p, draws, members),
                               _per_replicate(sklearn_or_nan, y, p, draws, members), rtol=1e-12, equal_nan=True)
    ci = M.bootstrap_ci("mauc", y, p, n_boot=200, groups=groups)
    assert ci["low"] <= ci["point"] <= ci["high"]


def test_mauc_with_an_absent_class_is_a_flagged_nan_not_an_average():
    y = np.array([0, 1, 0, 1, 0, 1])
    p = np.array([[.7, .2, .1], [.2, .7, .1], [.6, .3, .1], [.3, .6, .1], [.5, .4, .1], [.4, .5, .1]])
    with pytest.warns(M.MetricWarning, match=r"class\(es\) \[2\] of 3 absent"):
        assert np.isnan(M.mauc(y, p))
    assert M.bootstrap_ci("mauc", y, p, n_boot=50)["n_dropped"] == 50


def test_mauc_is_a_task_metric_and_its_warning_reaches_the_record():
    from bench.protocols.context import setting_score

    ctx = _context("ad_diagnosis", 6, metrics=["mauc", "auc"], main_score="mauc")
    y = np.array([0, 1, 0, 1, 0, 1])
    p = np.array([[.7, .2, .1], [.2, .7, .1], [.6, .3, .1], [.3, .6, .1], [.5, .4, .1], [.4, .5, .1]])
    entry = setting_score(ctx, np.arange(6), "test", 0, "full", y, p, {})
    assert entry.metrics["mauc"] is None
    assert entry.params["metric_warnings"] == ["mauc undefined: class(es) [2] of 3 absent from the 6 "
                                                  "scored example(s)"]
    from bench.tasks import TaskSpec

    TaskSpec.model_validate({**ctx.spec.model_dump(), "metrics": ["mauc"], "main_score": "mauc"})
