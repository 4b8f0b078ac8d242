"""Statistics of repeated measurement: test-retest ICC, within-subject SD, fingerprinting, tracking.

Pure numpy, no model: the ``reliability`` protocol (:mod:`bench.protocols.reliability`) computes them
from a probe's predictions and an encoder's embeddings, and ``bench verify`` recomputes them from a
record's kept predictions with the same functions.

* :func:`icc_a1` is Shrout & Fleiss's (1979) ICC(2,1): two-way random effects, absolute agreement,
  one measurement. A rescan that shifts every prediction by the same amount (a scanner offset) lowers
  it, which is what a trial needs to know; ICC(3,1) (consistency) would forgive it.
* :func:`within_subject_sd` is the SD of a subject's repeated values around their mean, pooled over
  subjects (the "typical error" of a measurement, in the prediction's unit).
* :func:`identification_hits` is Finn et al.'s (2015) fingerprinting: is a rescan's nearest
  embedding (cosine) among all the evaluated scans its own first scan (the subject's other
  sessions left out of the rivals)?
* :func:`within_subject_slope` is the fixed-effects (within-subject) slope of a prediction against
  a subject's own changing covariate: values demeaned per subject, then one least-squares slope, so
  differences between people (which a cross-sectional fit mixes in) cannot make it.
* :func:`subject_bootstrap` resamples subjects (all their rows together) for every CI here, as
  :func:`bench.metrics.bootstrap_ci` does for the task metrics.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: The reliability protocol's settings, shared by the protocol and ``bench verify``'s check of its records.
RETEST, IDENTIFICATION, TRACKING = "retest", "identification", "tracking"


def icc_a1(values: np.ndarray) -> float:
    """ICC(2,1) of an (n subjects, k measurements) array; NaN with fewer than 2 subjects or no variance."""
    y = np.asarray(values, dtype=float)
    n, k = y.shape
    if n < 2 or k < 2:
        return float("nan")
    grand = y.mean()
    ms_rows = k * ((y.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    ms_cols = n * ((y.mean(axis=0) - grand) ** 2).sum() / (k - 1)
    ss_err = ((y - grand) ** 2).sum() - ms_rows * (n - 1) - ms_cols * (k - 1)
    ms_err = ss_err / ((n - 1) * (k - 1))
    denominator = ms_rows + (k - 1) * ms_err + k * (ms_cols - ms_err) / n
    if not denominator > 0:
        return float("nan")
    return float((ms_rows - ms_err) / denominator)


def within_subject_sd(values: np.ndarray) -> float:
    """Square root of the mean within-subject variance of an (n, k) array (ddof 1 per subject)."""
    y = np.asarray(values, dtype=float)
    if y.shape[0] < 1 or y.shape[1] < 2:
        return float("nan")
    return float(np.sqrt(y.var(axis=1, ddof=1).mean()))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def identification_hits(gallery: np.ndarray, queries: np.ndarray, own: np.ndarray,
                        gallery_subjects: np.ndarray | None = None,
                        query_subjects: np.ndarray | None = None) -> np.ndarray:
    """Per query (a rescan's embedding), 1.0 when its most cosine-similar gallery row is ``own[i]``
    (the row of its own first scan), else 0.0. Ties count as misses (a constant embedding
    identifies nobody). With subjects given, the query's subject's other sessions are left out of
    its rivals: a scan six months apart of the same brain is not another person, and fingerprinting
    asks whether a rescan finds its own scan rather than anyone else's."""
    sims = _unit_rows(np.asarray(queries, float)) @ _unit_rows(np.asarray(gallery, float)).T
    own = np.asarray(own, dtype=int)
    own_sim = sims[np.arange(len(own)), own]
    rivals = sims.copy()
    if gallery_subjects is not None and query_subjects is not None:
        rivals[np.asarray(query_subjects)[:, None] == np.asarray(gallery_subjects)[None, :]] = -np.inf
    rivals[np.arange(len(own)), own] = -np.inf
    best_rival = rivals.max(axis=1) if sims.shape[1] > 1 else np.full(len(own), -np.inf)
    return (own_sim > best_rival).astype(float)


def within_subject_slope(y: np.ndarray, x: np.ndarray, groups: np.ndarray) -> float:
    """Least-squares slope of ``y`` on ``x`` after removing each subject's means (fixed effects)."""
    y, x, groups = np.asarray(y, float), np.asarray(x, float), np.asarray(groups)
    _, inverse = np.unique(groups, return_inverse=True)
    counts = np.bincount(inverse)
    dx = x - (np.bincount(inverse, x) / counts)[inverse]
    dy = y - (np.bincount(inverse, y) / counts)[inverse]
    sxx = float((dx ** 2).sum())
    return float((dx * dy).sum() / sxx) if sxx > 0 else float("nan")


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant or fewer than 3 values."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def subject_bootstrap(statistic: Callable[[np.ndarray], float], groups: np.ndarray, *, n_boot: int,
                      seed: int, alpha: float = 0.05) -> dict:
    """``statistic(rows)`` (rows: indices into the data) with a percentile CI over subject resamples.

    Returns ``{"point", "low", "high", "se", "n"}`` like :func:`bench.metrics.bootstrap_ci`, each None
    where undefined (as a record writes it); replicates whose statistic is undefined are left out
    (``n_dropped``)."""
    groups = np.asarray(groups)
    _, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)] if len(groups) else []
    point = float(statistic(np.arange(len(groups))))
    point = point if np.isfinite(point) else None  # undefined (no variance...): None, as a record writes it
    if len(members) < 2:
        return {"point": point, "low": None, "high": None, "se": None, "n": len(members), "n_dropped": 0}
    draws = np.random.default_rng(seed).integers(0, len(members), size=(n_boot, len(members)))
    boots = np.array([statistic(np.concatenate([members[s] for s in draw])) for draw in draws])
    ok = boots[np.isfinite(boots)]
    if not len(ok):
        return {"point": point, "low": None, "high": None, "se": None, "n": len(members), "n_dropped": n_boot}
    low, high = np.quantile(ok, [alpha / 2, 1 - alpha / 2])
    return {"point": point, "low": float(low), "high": float(high), "se": float(ok.std(ddof=1)) if len(ok) > 1
            else None, "n": len(members), "n_dropped": int(n_boot - len(ok))}


def retest_metrics(pairs: np.ndarray, y: np.ndarray | None, groups: np.ndarray, n_boot: int,
                   seed: int) -> dict[str, dict]:
    """ICC(2,1), within-subject SD and (with regression labels ``y``) the ICC of the gap to the label,
    each with its subject-bootstrap CI, of an (n, 2) array of first / repeat predictions."""
    out = {"icc": subject_bootstrap(lambda r: icc_a1(pairs[r]), groups, n_boot=n_boot, seed=seed),
           "within_sd": subject_bootstrap(lambda r: within_subject_sd(pairs[r]), groups, n_boot=n_boot, seed=seed)}
    if y is not None:
        gaps = pairs - np.asarray(y, float)[:, None]
        out["icc_gap"] = subject_bootstrap(lambda r: icc_a1(gaps[r]), groups, n_boot=n_boot, seed=seed)
    return out


#: Probabilities are clipped to [EPS, 1 - EPS] before their log-odds are taken.
EPS = 1e-6


def log_odds(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, float), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def stage_tracking_r(true: np.ndarray, pred: np.ndarray) -> float:
    """Pearson r, over subjects, of the first-to-last change in the predicted log-odds and in the true
    stage (two (n, 2) arrays: first and last session). Log-odds, not probabilities: a probe's
    probability saturates far from its threshold, so the same true progression moves a probability
    near 0 hardly at all and one near 0.5 a lot; its log-odds are what a logistic head makes linear
    in its features."""
    change = log_odds(pred[:, 1]) - log_odds(pred[:, 0])
    return pearson(change, true[:, 1] - true[:, 0])
