"""What rounding a stored prediction to 6 decimals can do to a metric recomputed from it.

The harness scores the predictions it computed and stores them rounded to 6 decimals
(:mod:`bench.prediction_files`), so a verifier recomputing a metric (or a bootstrap interval) from
the stored rows must accept the whole range of values that rounding allows, and nothing beyond it.
Shared by the score check (:mod:`bench.leaderboard.verify`) and the interval check
(:mod:`bench.leaderboard.verify_ci`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

#: Tolerance when a metric is recomputed from the stored predictions, on top of the range their
#: rounding to 6 decimals allows (see :func:`metric_range`): float noise, not a loophole.
TOLERANCE = 1e-5


#: Largest change rounding to 6 decimals makes to a stored prediction.
ROUNDING = 5e-7
#: Size of the nudge that breaks ties in rounded predictions: far below their 1e-6 rounding step,
#: far above float64 resolution for values of order 1.
_NUDGE = 1e-9


def metric_range(name: str, y_true: np.ndarray, y_pred: np.ndarray,
                  kwargs: dict | None = None) -> tuple[float | None, float | None]:
    """(lowest, highest) value of metric ``name`` that the rounded predictions are compatible with.

    Predictions are stored rounded to 6 decimals (each off by at most :data:`ROUNDING`), which
    moves a recomputed metric by more than float noise in two ways:

    * ranking metrics (AUC, C-index, and argmax-based accuracies): rounding never reverses an
      order, it only creates ties (0.9999997 and 0.9999998 both become 1.0), which count as half
      a pair; so the true value lies between the metric with every tie broken against the truth
      and with every tie broken for it, computed by nudging the predictions by :data:`_NUDGE`
      towards / away from the right answer (the true class's column; the risk of earlier events);
    * continuous metrics: MAE moves by at most the rounding step; Pearson's r by at most
      ``2 * step * sqrt(n) / ||p - mean(p)||`` (the change of the centred prediction's direction),
      which is large when the predictions barely vary (a probe trained on one subject).

    Returns (None, None) where the metric is undefined on these predictions.
    """
    if name == "pearson_r":
        value = metric_value(name, y_true, y_pred, kwargs)
        spread = float(np.linalg.norm(y_pred - y_pred.mean())) if y_pred.size else 0.0
        slack = 2.0 * ROUNDING * math.sqrt(len(y_pred)) / spread if spread > 0 else 2.0
        return (None, None) if value is None else (value - slack, value + slack)
    if name == "mae":
        value = metric_value(name, y_true, y_pred, kwargs)
        return (None, None) if value is None else (value - ROUNDING, value + ROUNDING)
    nudge = nudge_toward_truth(name, y_true, y_pred)
    candidates = (y_pred, y_pred + nudge, y_pred - nudge) if np.any(nudge) else (y_pred,)
    values = [v for v in (metric_value(name, y_true, c, kwargs) for c in candidates) if v is not None]
    return (min(values), max(values)) if values else (None, None)


def metric_value(name: str, y_true: np.ndarray, y_pred: np.ndarray, kwargs: dict | None = None) -> float | None:
    """The harness's metric on these predictions; None where it is undefined (NaN, as recorded)."""
    from bench.metrics import METRICS

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one-class samples: the harness recorded None, and so do we
        try:
            v = float(METRICS[name].fn(y_true, y_pred, **(kwargs or {})))
        except (ValueError, IndexError, ZeroDivisionError):
            return None
    return v if math.isfinite(v) else None


def nudge_toward_truth(name: str, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """A direction that breaks every tie in favour of the right answer (zero where none is needed)."""
    kind = {"auc": "class", "mauc": "class", "balanced_accuracy": "class", "accuracy": "class",
            "c_index": "survival", "uno_c": "survival"}.get(name)
    if kind == "class":
        labels = y_true.astype(int)
        if y_pred.ndim == 2:
            onehot = np.zeros_like(y_pred)
            inside = (labels >= 0) & (labels < y_pred.shape[1])
            onehot[np.flatnonzero(inside), labels[inside]] = 1.0
            return _NUDGE * onehot
        return _NUDGE * (2.0 * (labels == 1) - 1.0)
    if kind == "survival" and y_true.ndim == 2 and y_pred.ndim == 1:
        # earlier time -> larger bonus, so a tied pair becomes concordant (higher risk = earlier event)
        rank = np.argsort(np.argsort(-y_true[:, 0], kind="stable"), kind="stable")
        return _NUDGE * rank / max(len(rank), 1)
    return np.zeros_like(y_pred)
