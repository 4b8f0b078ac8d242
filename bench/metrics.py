"""Metrics, bootstrap confidence intervals over subjects, and a paired bootstrap test.

Library implementations where they exist (scikit-learn, lifelines, MONAI); the bootstrap
resamples *subjects* (all rows of a subject together), because a subject's sessions are not
independent and treating them as such would give CIs that are too narrow.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from sklearn import metrics as skm


@dataclass(frozen=True)
class MetricSpec:
    name: str
    fn: Callable[..., float]
    higher_is_better: bool
    kind: str  # classification | regression | survival | segmentation


def _as_labels(y_pred: np.ndarray) -> np.ndarray:
    y_pred = np.asarray(y_pred)
    return y_pred.argmax(1) if y_pred.ndim == 2 else y_pred.astype(int)


def auc(y_true, y_pred) -> float:
    """Binary AUC (scores or (n, 2) probabilities) or macro one-vs-rest AUC for (n, C) probabilities.

    NaN, not an exception, when the sample holds a single class (a bootstrap replicate can).
    """
    y_true = np.asarray(y_true).astype(int)
    y_pred = np.asarray(y_pred, dtype=float)
    present = np.unique(y_true)
    if len(present) < 2:
        return float("nan")
    if y_pred.ndim == 1:
        return float(skm.roc_auc_score(y_true, y_pred))
    if y_pred.shape[1] == 2:
        return float(skm.roc_auc_score(y_true, y_pred[:, 1]))
    # macro OvR over the classes present in this sample
    scores = [skm.roc_auc_score(y_true == c, y_pred[:, c]) for c in present]
    return float(np.mean(scores))


def balanced_accuracy(y_true, y_pred) -> float:
    return float(skm.balanced_accuracy_score(np.asarray(y_true).astype(int), _as_labels(y_pred)))


def accuracy(y_true, y_pred) -> float:
    return float(skm.accuracy_score(np.asarray(y_true).astype(int), _as_labels(y_pred)))


def mae(y_true, y_pred) -> float:
    return float(skm.mean_absolute_error(y_true, y_pred))


def pearson_r(y_true, y_pred) -> float:
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    if len(y_true) < 2 or y_true.std() == 0 or y_pred.std() == 0:
        return float("nan")
    return float(np.corrcoef(y_true, y_pred)[0, 1])


def c_index(y_true, y_pred) -> float:
    """Harrell's C. y_true = (n, 2) [time, event]; y_pred = risk (higher = earlier event)."""
    from lifelines.utils import concordance_index

    y_true = np.asarray(y_true, float)
    if y_true[:, 1].sum() == 0:
        return float("nan")
    try:
        return float(concordance_index(y_true[:, 0], -np.asarray(y_pred, float), y_true[:, 1]))
    except ZeroDivisionError:  # no comparable pair
        return float("nan")


def uno_c(y_true, y_pred, tau: float | None = None) -> float:
    """Uno's IPCW C-index: Harrell's pairs weighted by 1/G(t_i)^2, G = KM survival of censoring.

    Less dependent on the censoring distribution than Harrell's; equals it without censoring.
    """
    from lifelines import KaplanMeierFitter

    y_true = np.asarray(y_true, float)
    time, event = y_true[:, 0], y_true[:, 1].astype(bool)
    risk = np.asarray(y_pred, float)
    if event.sum() == 0:
        return float("nan")
    tau = time[event].max() if tau is None else tau
    km = KaplanMeierFitter().fit(time, event_observed=~event)
    g = km.survival_function_at_times(time).to_numpy()  # G(t_i); evaluated just after t_i
    g = np.clip(g, 1e-8, None)
    w = np.where(event & (time < tau + 1e-12), 1.0 / g ** 2, 0.0)
    comparable = (time[:, None] < time[None, :]) & (w[:, None] > 0)
    conc = (risk[:, None] > risk[None, :]) + 0.5 * (risk[:, None] == risk[None, :])
    num = (w[:, None] * comparable * conc).sum()
    den = (w[:, None] * comparable).sum()
    return float(num / den) if den > 0 else float("nan")


def dice_per_subject(y_true, y_pred) -> np.ndarray:
    """Mean Dice over foreground labels present in either volume, one value per subject."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim == 3:
        y_true, y_pred = y_true[None], y_pred[None]
    out = []
    for t, p in zip(y_true, y_pred):
        labels = sorted((set(np.unique(t)) | set(np.unique(p))) - {0})
        if not labels:
            out.append(np.nan)
            continue
        d = [2 * np.sum((t == lab) & (p == lab)) / (np.sum(t == lab) + np.sum(p == lab)) for lab in labels]
        out.append(float(np.mean(d)))
    return np.array(out)


def hd95_per_subject(y_true, y_pred, spacing: float = 1.0) -> np.ndarray:
    """95th-percentile symmetric Hausdorff distance of the whole foreground, per subject (MONAI)."""
    import torch
    from monai.metrics import compute_hausdorff_distance

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim == 3:
        y_true, y_pred = y_true[None], y_pred[None]
    out = []
    for t, p in zip(y_true, y_pred):
        if not (t > 0).any() or not (p > 0).any():
            out.append(np.nan)
            continue
        tt = torch.from_numpy((t > 0)[None, None].astype(np.float32))
        pp = torch.from_numpy((p > 0)[None, None].astype(np.float32))
        d = compute_hausdorff_distance(pp, tt, percentile=95, spacing=spacing)
        out.append(float(d.item()))
    return np.array(out)


def dice(y_true, y_pred) -> float:
    return float(np.nanmean(dice_per_subject(y_true, y_pred)))


def hd95(y_true, y_pred, spacing: float = 1.0) -> float:
    v = hd95_per_subject(y_true, y_pred, spacing)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


METRICS: dict[str, MetricSpec] = {m.name: m for m in (
    MetricSpec("auc", auc, True, "classification"),
    MetricSpec("balanced_accuracy", balanced_accuracy, True, "classification"),
    MetricSpec("accuracy", accuracy, True, "classification"),
    MetricSpec("mae", mae, False, "regression"),
    MetricSpec("pearson_r", pearson_r, True, "regression"),
    MetricSpec("c_index", c_index, True, "survival"),
    MetricSpec("uno_c", uno_c, True, "survival"),
    MetricSpec("dice", dice, True, "segmentation"),
    MetricSpec("hd95", hd95, False, "segmentation"),
)}

#: Segmentation metrics are means of per-subject values: bootstrap those values directly.
PER_SUBJECT = {"dice": dice_per_subject, "hd95": hd95_per_subject}


def compute(names, y_true, y_pred) -> dict[str, float]:
    return {n: METRICS[n].fn(y_true, y_pred) for n in names}


def _subject_index(groups, n: int) -> list[np.ndarray]:
    if groups is None:
        return [np.array([i]) for i in range(n)]
    groups = np.asarray(groups)
    _, inverse = np.unique(groups, return_inverse=True)
    return [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]


def _replicates(n_subjects: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_subjects, size=(n_boot, n_subjects))


def _row_weights(draws: np.ndarray, members: list[np.ndarray], n_rows: int) -> np.ndarray:
    """(B, n_rows) multiplicity of every row in each replicate (a subject drawn twice counts twice)."""
    counts = np.zeros((len(draws), len(members)))
    np.add.at(counts, (np.arange(len(draws))[:, None], draws), 1.0)
    subject_of_row = np.empty(n_rows, dtype=int)
    for s, rows in enumerate(members):
        subject_of_row[rows] = s
    return counts[:, subject_of_row]


def _concordance(risk: np.ndarray) -> np.ndarray:
    """(n, n): 1 where row i is predicted at higher risk than row j, 1/2 on ties, else 0."""
    return (risk[:, None] > risk[None, :]) + 0.5 * (risk[:, None] == risk[None, :])


def _pair_sums(weights: np.ndarray, left: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Per replicate b: sum over (i, j) of left[b, i] * pairs[i, j] * weights[b, j]."""
    return (left * (weights @ pairs.T)).sum(axis=1)


def _weighted_harrell_c(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`c_index` (lifelines' Harrell's C) on every replicate, a row drawn k times counting k times.

    lifelines' admissible pairs: i had the event and j left later (event or censoring), or j was
    censored at i's event time; tied risks count 1/2; events at the same time are not compared
    (so neither are two copies of one row). NaN without an event or an admissible pair.
    """
    time, event = np.asarray(y_true, float)[:, 0], np.asarray(y_true, float)[:, 1] > 0
    later = (time[None, :] > time[:, None]) | ((time[None, :] == time[:, None]) & ~event[None, :])
    admissible = event[:, None] & later
    num = _pair_sums(weights, weights, admissible * _concordance(np.asarray(y_pred, float)))
    den = _pair_sums(weights, weights, admissible.astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _weighted_uno_c(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`uno_c` on every replicate: the censoring Kaplan-Meier and tau of each replicate.

    The censoring survival G of a replicate is a product over the distinct times u_k of
    (1 - censored at u_k / at risk at u_k), both counted with the replicate's multiplicities,
    evaluated at each row's own time (the drop at that time included, as lifelines'
    ``survival_function_at_times``); tau is the replicate's last event time.
    """
    time, event = np.asarray(y_true, float)[:, 0], np.asarray(y_true, float)[:, 1] > 0
    risk = np.asarray(y_pred, float)
    distinct = np.unique(time)
    at = (time[:, None] == distinct[None, :])                                  # (n, K)
    censored = weights @ (at & ~event[:, None]).astype(float)                 # (B, K)
    at_risk = weights @ (time[:, None] >= distinct[None, :]).astype(float)    # (B, K)
    with np.errstate(invalid="ignore", divide="ignore"):
        step = np.where(censored > 0, 1.0 - censored / np.where(at_risk > 0, at_risk, 1.0), 1.0)
    g = np.clip(np.cumprod(step, axis=1)[:, np.searchsorted(distinct, time)], 1e-8, None)  # (B, n)
    drawn_events = (weights > 0) & event[None, :]
    tau = np.where(drawn_events, time[None, :], -np.inf).max(axis=1)
    w = np.where(drawn_events & (time[None, :] < tau[:, None] + 1e-12), weights / g ** 2, 0.0)
    earlier = time[:, None] < time[None, :]
    num = _pair_sums(weights, w, earlier * _concordance(risk))
    den = _pair_sums(weights, w, earlier.astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(drawn_events.any(axis=1) & (den > 0), num / np.where(den > 0, den, 1.0), np.nan)


def _weighted_pearson_r(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`pearson_r` on every bootstrap replicate at once: correlation with case weights.

    Same conventions: NaN when a replicate has fewer than two rows or either side is constant
    over the rows it holds (tested exactly, on the values, not on a rounded variance).
    """
    x, y = np.asarray(y_true, float), np.asarray(y_pred, float)
    n = weights.sum(axis=1)
    present = weights > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = x - (weights @ x / n)[:, None]
        dy = y - (weights @ y / n)[:, None]
        r = (weights * dx * dy).sum(axis=1) / np.sqrt((weights * dx ** 2).sum(axis=1) * (weights * dy ** 2).sum(axis=1))

    def constant(v: np.ndarray) -> np.ndarray:
        return np.where(present, v, np.inf).min(axis=1) == np.where(present, v, -np.inf).max(axis=1)

    return np.where((n < 2) | constant(x) | constant(y), np.nan, np.clip(r, -1.0, 1.0))


def _weighted_binary_auc(positive: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of ``score`` for ``positive`` under each row of ``weights`` (B, n), ties counted 1/2.

    The Mann-Whitney form with case weights: sum over (positive i, negative j) of
    w_i w_j [s_i > s_j] (+ half for ties), over W_pos W_neg. One sort serves every replicate, so
    a thousand replicates cost a few array passes instead of a thousand sklearn calls.
    """
    order = np.argsort(score, kind="mergesort")
    score, positive, weights = score[order], positive[order], weights[:, order]
    _, starts = np.unique(score, return_index=True)
    pos = np.add.reduceat(weights * positive, starts, axis=1)     # per tie group
    neg = np.add.reduceat(weights * ~positive, starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    num = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _weighted_auc(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`auc` on every bootstrap replicate at once (same conventions: NaN for one class,
    macro one-vs-rest over the classes present in the replicate)."""
    y_true = y_true.astype(int)
    y_pred = np.asarray(y_pred, dtype=float)
    if y_pred.ndim == 1 or y_pred.shape[1] == 2:
        score = y_pred if y_pred.ndim == 1 else y_pred[:, 1]
        return _weighted_binary_auc(y_true == 1, score, weights)
    per_class = np.stack([_weighted_binary_auc(y_true == c, y_pred[:, c], weights)
                          for c in range(y_pred.shape[1])], axis=1)
    # A replicate with only one class present has no finite per-class AUC: NaN, as in auc().
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(per_class, axis=1)


def _weighted_balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`balanced_accuracy` on every replicate: mean recall over the classes present in it."""
    y_true = y_true.astype(int)
    labels = _as_labels(y_pred)
    recalls = []
    for c in np.unique(y_true):
        support = weights @ (y_true == c).astype(float)
        hits = weights @ ((y_true == c) & (labels == c)).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append(np.where(support > 0, hits / np.where(support > 0, support, 1.0), np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.stack(recalls, axis=1), axis=1)


def _boot_scores(metric: str, y_true, y_pred, draws: np.ndarray, members: list[np.ndarray]) -> np.ndarray:
    """Metric on each bootstrap replicate (rows of subject indices)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if metric in PER_SUBJECT:
        per_row = PER_SUBJECT[metric](y_true, y_pred)
        per_subject = np.array([np.nanmean(per_row[m]) if np.isfinite(per_row[m]).any() else np.nan
                                for m in members])
        return np.nanmean(per_subject[draws], axis=1)
    single = all(len(m) == 1 for m in members)
    if metric == "mae" and single:  # vectorised: one row per subject
        err = np.abs(y_true.astype(float) - y_pred.astype(float))[np.concatenate(members)]
        return err[draws].mean(axis=1)
    if metric == "accuracy" and single:
        hit = (_as_labels(y_pred) == y_true.astype(int))[np.concatenate(members)]
        return hit[draws].mean(axis=1)
    if metric in ("mae", "accuracy"):  # several rows per subject: row-weighted means, still vectorised
        per_row = (np.abs(y_true.astype(float) - y_pred.astype(float)) if metric == "mae"
                   else (_as_labels(y_pred) == y_true.astype(int)).astype(float))
        weights = _row_weights(draws, members, len(y_true))
        return (weights @ per_row) / weights.sum(axis=1)
    if metric == "c_index":
        return _weighted_harrell_c(y_true, y_pred, _row_weights(draws, members, len(y_true)))
    if metric == "uno_c":
        return _weighted_uno_c(y_true, y_pred, _row_weights(draws, members, len(y_true)))
    if metric == "pearson_r":
        return _weighted_pearson_r(y_true, y_pred, _row_weights(draws, members, len(y_true)))
    if metric == "auc":
        return _weighted_auc(y_true, y_pred, _row_weights(draws, members, len(y_true)))
    if metric == "balanced_accuracy":
        return _weighted_balanced_accuracy(y_true, y_pred, _row_weights(draws, members, len(y_true)))
    fn = METRICS[metric].fn
    out = np.empty(len(draws))
    with warnings.catch_warnings():  # replicates missing a class are expected, and dropped later
        warnings.simplefilter("ignore")
        for b, draw in enumerate(draws):  # AUC / C-index / balanced accuracy: a loop over replicates
            idx = np.concatenate([members[s] for s in draw])
            out[b] = fn(y_true[idx], y_pred[idx])
    return out


def bootstrap_ci(metric: str, y_true, y_pred, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                 groups=None) -> dict:
    """Point estimate and percentile bootstrap (1 - alpha) CI, resampling subjects (``groups``)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    point = METRICS[metric].fn(y_true, y_pred)
    members = _subject_index(groups, len(y_true))
    if len(members) < 2:
        return {"point": float(point), "low": float("nan"), "high": float("nan"), "se": float("nan"),
                "n": len(members), "n_dropped": 0}
    boots = _boot_scores(metric, y_true, y_pred, _replicates(len(members), n_boot, seed), members)
    ok = boots[np.isfinite(boots)]
    if not len(ok):
        return {"point": float(point), "low": float("nan"), "high": float("nan"), "se": float("nan"),
                "n": len(members), "n_dropped": int(n_boot)}
    low, high = np.quantile(ok, [alpha / 2, 1 - alpha / 2])
    return {"point": float(point), "low": float(low), "high": float(high), "se": float(ok.std(ddof=1)),
            "n": len(members), "n_dropped": int(n_boot - len(ok))}


def paired_bootstrap(metric: str, y_true, pred_a, pred_b, *, n_boot: int = 1000, seed: int = 0,
                     groups=None) -> dict:
    """Paired test of two predictors on the same subjects: delta = score(a) - score(b).

    Both are scored on the same resampled subject sets. The two-sided p-value is
    2 * min(P(delta* <= 0), P(delta* >= 0)) over replicates, clipped to 1.
    """
    y_true = np.asarray(y_true)
    members = _subject_index(groups, len(y_true))
    draws = _replicates(len(members), n_boot, seed)
    a = _boot_scores(metric, y_true, pred_a, draws, members)
    b = _boot_scores(metric, y_true, pred_b, draws, members)
    delta = a - b
    delta = delta[np.isfinite(delta)]
    point = METRICS[metric].fn(y_true, np.asarray(pred_a)) - METRICS[metric].fn(y_true, np.asarray(pred_b))
    if not len(delta):
        return {"delta": float(point), "low": float("nan"), "high": float("nan"), "p_value": float("nan"),
                "n": len(members)}
    p = min(1.0, 2 * min(np.mean(delta <= 0), np.mean(delta >= 0)))
    low, high = np.quantile(delta, [0.025, 0.975])
    return {"delta": float(point), "low": float(low), "high": float(high), "p_value": float(p),
            "n": len(members)}
