"""Metrics, bootstrap confidence intervals over subjects, and a paired bootstrap test.

Library implementations where they exist (scikit-learn, lifelines, MONAI); the bootstrap
resamples *subjects* (all rows of a subject together), because a subject's sessions are not
independent and treating them as such would give CIs that are too narrow.

Conventions shared by every metric and its vectorised bootstrap (one rule each, so a point
estimate and its CI can never disagree on what they measure):

- binary AUC: the positive class is the *largest* label (scikit-learn's rule), decided on the
  whole sample; a 1-D score or the second column of (n, 2) probabilities scores it;
- predictions must be finite: :func:`compute`, :func:`bootstrap_ci` and :func:`paired_bootstrap`
  refuse NaN / Inf with :class:`NonFinitePrediction` naming the row (the harness checks once more,
  naming the example, in :func:`bench.protocols.context.setting_score`); the bare metric functions assume
  finite input;
- a metric that is undefined on a sample (one class, no event) is NaN, and a bootstrap replicate
  where it is undefined is dropped and counted (``n_dropped``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from bench.errors import MribenchError
from bench.registry import Registry
from bench.timing import phase

#: HD95 of BraTS when a structure is missed (empty prediction, non-empty truth) or invented: the
#: diagonal of its 240 x 240 x 155 grid at 1 mm. :func:`hd95_per_subject` uses the diagonal of the
#: scored volume in the metric's units, which is this number on the BraTS grid.
BRATS_HD95_PENALTY_MM = 373.13


class NonFinitePrediction(MribenchError):
    """A prediction is NaN or Inf: no metric is computed (each would fail in its own way)."""


class MetricWarning(UserWarning):
    """A metric is undefined on the evaluated sample for a reason the record should show
    (e.g. a class absent from the test split); the value is NaN and this says why."""


@dataclass(frozen=True)
class MetricSpec:
    name: str
    fn: Callable[..., float]
    higher_is_better: bool
    kind: str  # classification | regression | survival | segmentation
    #: what a predictor that ignores its input scores, where that does not depend on the data
    #: (AUC and concordance 0.5, correlation 0); None otherwise (balanced accuracy is 1/k, MAE
    #: depends on the label spread). The leaderboard marks a ratio to a chance-level score.
    chance: float | None = None


def _as_labels(y_pred: np.ndarray) -> np.ndarray:
    y_pred = np.asarray(y_pred)
    return y_pred.argmax(1) if y_pred.ndim == 2 else y_pred.astype(int)


def binary_positive(y_true) -> np.ndarray:
    """Which rows are positive for a binary AUC: those with the largest label (scikit-learn's rule).

    Shared by :func:`auc` and its vectorised bootstrap, so that labels {1, 2} mean the same thing
    to both (2 is positive). More than two labels with a single score column is an error.
    """
    y_true = np.asarray(y_true).astype(int)
    labels = np.unique(y_true)
    if len(labels) > 2:
        raise ValueError(f"binary AUC with labels {labels.tolist()}: give (n, C) class probabilities "
                         "for more than two classes")
    return y_true == labels[-1] if len(labels) else np.zeros(0, bool)


def _binary_score(y_pred: np.ndarray) -> np.ndarray | None:
    """The positive class's score of a binary prediction (1-D scores or (n, 2) probabilities)."""
    if y_pred.ndim == 1:
        return y_pred
    return y_pred[:, 1] if y_pred.shape[1] == 2 else None


def _sklearn():
    """scikit-learn's metrics module, imported on first use: task specs name metrics and are read by
    commands that score nothing (``bench list tasks``), which should not pay sklearn's 2 s import."""
    from sklearn import metrics

    return metrics


def auc(y_true, y_pred) -> float:
    """Binary AUC (scores or (n, 2) probabilities) or macro one-vs-rest AUC for (n, C) probabilities.

    Binary: the largest label is the positive class (:func:`binary_positive`). NaN, not an
    exception, when the sample holds a single class (a bootstrap replicate can).
    """
    y_true = np.asarray(y_true).astype(int)
    y_pred = np.asarray(y_pred, dtype=float)
    present = np.unique(y_true)
    if len(present) < 2:
        return float("nan")
    score = _binary_score(y_pred)
    if score is not None:
        return float(_sklearn().roc_auc_score(binary_positive(y_true), score))
    # macro OvR over the classes present in this sample
    scores = [_sklearn().roc_auc_score(y_true == c, y_pred[:, c]) for c in present]
    return float(np.mean(scores))


def _class_matrix(y_true, y_pred, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Integer labels that index the columns of an (n, C) probability matrix, C >= 2."""
    y_true = np.asarray(y_true).astype(int)
    y_pred = np.asarray(y_pred, dtype=float)
    if y_pred.ndim != 2 or y_pred.shape[1] < 2:
        raise ValueError(f"{metric} needs (n, C) class probabilities, got shape {y_pred.shape}")
    if len(y_true) and (y_true.min() < 0 or y_true.max() >= y_pred.shape[1]):
        raise ValueError(f"{metric}: labels {np.unique(y_true).tolist()} are not column indices of "
                         f"{y_pred.shape[1]} class probabilities")
    return y_true, y_pred


def mauc(y_true, y_pred) -> float:
    """Hand & Till's (2001) multi-class AUC M: the mean over class pairs {i, j} of
    (A(i|j) + A(j|i)) / 2, A(i|j) being the AUC of column i separating class i from class j on the
    examples of those two classes only.

    Unlike the one-vs-rest macro AUC it does not depend on class prevalence. It equals
    scikit-learn's ``roc_auc_score(y, p, multi_class="ovo", average="macro")``. The columns of
    ``y_pred`` are the classes (labels are their indices); every class must be present: when one is
    absent, M is undefined and the result is NaN with a :class:`MetricWarning` naming the absent
    classes, not a silent average over the pairs that remain.
    """
    y_true, y_pred = _class_matrix(y_true, y_pred, "mauc")
    absent = sorted(set(range(y_pred.shape[1])) - set(np.unique(y_true).tolist()))
    if absent:
        warnings.warn(MetricWarning(f"mauc undefined: class(es) {absent} of {y_pred.shape[1]} absent "
                                    f"from the {len(y_true)} scored example(s)"), stacklevel=2)
        return float("nan")
    return float(_weighted_mauc(y_true, y_pred, np.ones((1, len(y_true))))[0])


def balanced_accuracy(y_true, y_pred) -> float:
    return float(_sklearn().balanced_accuracy_score(np.asarray(y_true).astype(int), _as_labels(y_pred)))


def accuracy(y_true, y_pred) -> float:
    return float(_sklearn().accuracy_score(np.asarray(y_true).astype(int), _as_labels(y_pred)))


def mae(y_true, y_pred) -> float:
    return float(_sklearn().mean_absolute_error(y_true, y_pred))


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
    """Uno's IPCW C-index (Uno et al. 2011): Harrell's pairs weighted by 1/G(t_i)^2, G = the
    Kaplan-Meier survival of censoring, evaluated at t_i (its drop at t_i included).

    Less dependent on the censoring distribution than Harrell's; equals it without censoring.
    Pairs (i, j) count when i had an event at t_i < ``tau`` and j was seen longer: t_j > t_i, or
    t_j == t_i with j censored (censoring at an event's time is taken to follow the event, as in
    Harrell's C here and in scikit-survival); two events at one time are not compared. Tied risks
    count one half. Only events strictly before ``tau`` count (Uno's truncation, so an event at
    exactly tau is out); ``tau=None`` truncates nothing. Tasks with a horizon pass it as tau
    (:meth:`bench.kinds.TargetKind.metric_params`).
    """
    from lifelines import KaplanMeierFitter

    y_true = np.asarray(y_true, float)
    time, event = y_true[:, 0], y_true[:, 1].astype(bool)
    risk = np.asarray(y_pred, float)
    if event.sum() == 0:
        return float("nan")
    km = KaplanMeierFitter().fit(time, event_observed=~event)
    g = km.survival_function_at_times(time).to_numpy()  # G(t_i); evaluated just after t_i
    g = np.clip(g, 1e-8, None)
    counted = event if tau is None else event & (time < tau)
    w = np.where(counted, 1.0 / g ** 2, 0.0)
    comparable = _uno_pairs(time, event) & (w[:, None] > 0)
    num = (w[:, None] * comparable * _concordance(risk)).sum()
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


def hd95_penalty(shape: tuple[int, ...], spacing: float = 1.0) -> float:
    """HD95 given to a missed (or invented) structure: the volume's diagonal in the metric's units.

    BraTS's convention (373.13 mm, the diagonal of its 240 x 240 x 155 grid at 1 mm, see
    :data:`BRATS_HD95_PENALTY_MM`) carried to any grid: no prediction can be further off.
    """
    return float(spacing * np.sqrt(np.sum(np.square(np.asarray(shape, float)))))


def hd95_per_subject(y_true, y_pred, spacing: float = 1.0) -> np.ndarray:
    """95th-percentile symmetric Hausdorff distance of the whole foreground, per subject (MONAI).

    A subject whose prediction is empty while its truth is not (a missed tumour), or the reverse,
    gets :func:`hd95_penalty` instead of NaN: dropping it would let missing a tumour improve the
    mean. A subject with neither (nothing to find, nothing found) is NaN, left out of the mean.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim == 3:
        y_true, y_pred = y_true[None], y_pred[None]
    out = []
    for t, p in zip(y_true, y_pred):
        has_truth, has_pred = bool((t > 0).any()), bool((p > 0).any())
        if not has_truth and not has_pred:
            out.append(np.nan)
            continue
        if has_truth != has_pred:
            out.append(hd95_penalty(t.shape, spacing))
            continue
        out.append(hd95_of_masks(t > 0, p > 0, spacing))
    return np.array(out)


def hd95_of_masks(truth: np.ndarray, pred: np.ndarray, spacing: float = 1.0) -> float:
    """HD95 of two non-empty boolean masks: MONAI's ``compute_hausdorff_distance(percentile=95)``
    step by step (edges, surface distances both ways, the larger 95th percentile, in float32 as
    its result tensor holds it), because that function passes MONAI's own deprecated
    ``always_return_as_numpy`` to ``get_mask_edges`` and warns on every call (MONAI 1.5-1.6)."""
    import torch
    from monai.metrics.utils import get_mask_edges, get_surface_distance, prepare_spacing

    tt = torch.from_numpy(truth.astype(np.float32))
    pp = torch.from_numpy(pred.astype(np.float32))
    edges_pred, edges_truth = get_mask_edges(pp, tt, crop=True)[:2]
    spacing_b = prepare_spacing(spacing=spacing, batch_size=1, img_dim=truth.ndim)[0]
    both_ways = [get_surface_distance(edges_pred, edges_truth, "euclidean", spacing_b),
                 get_surface_distance(edges_truth, edges_pred, "euclidean", spacing_b)]
    percentiles = [torch.quantile(torch.as_tensor(d), 0.95) for d in both_ways]
    return float(torch.max(torch.stack(percentiles)).to(torch.float32).item())


def missed_structures(y_true, y_pred) -> int:
    """Subjects whose truth has foreground and whose prediction has none (scored with the penalty)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim == 3:
        y_true, y_pred = y_true[None], y_pred[None]
    axes = tuple(range(1, y_true.ndim))
    return int(np.sum((y_true > 0).any(axis=axes) & ~(y_pred > 0).any(axis=axes)))


def dice(y_true, y_pred) -> float:
    return float(np.nanmean(dice_per_subject(y_true, y_pred)))


def hd95(y_true, y_pred, spacing: float = 1.0) -> float:
    v = hd95_per_subject(y_true, y_pred, spacing)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


#: Metrics by name (a :class:`~bench.registry.Registry`; the ``mribench.metrics`` entry-point group
#: can add more).
METRICS: Registry[MetricSpec] = Registry("metric", group="mribench.metrics")
for _metric in (
    MetricSpec("auc", auc, True, "classification", chance=0.5),
    MetricSpec("mauc", mauc, True, "classification", chance=0.5),
    MetricSpec("balanced_accuracy", balanced_accuracy, True, "classification"),
    MetricSpec("accuracy", accuracy, True, "classification"),
    MetricSpec("mae", mae, False, "regression"),
    MetricSpec("pearson_r", pearson_r, True, "regression", chance=0.0),
    MetricSpec("c_index", c_index, True, "survival", chance=0.5),
    MetricSpec("uno_c", uno_c, True, "survival", chance=0.5),
    MetricSpec("dice", dice, True, "segmentation"),
    MetricSpec("hd95", hd95, False, "segmentation"),
):
    METRICS.register(_metric.name, _metric)

#: Segmentation metrics are means of per-subject values: bootstrap those values directly.
PER_SUBJECT = {"dice": dice_per_subject, "hd95": hd95_per_subject}


def check_finite_predictions(y_pred, labels=None) -> None:
    """Refuse NaN / Inf predictions, naming the first bad row (by ``labels[row]`` when given).

    The one rule for non-finite predictions: left alone, AUC, MAE and Harrell's C raise their own
    errors, Pearson's r turns NaN and Uno's C or balanced accuracy return a plausible number.
    """
    y_pred = np.asarray(y_pred)
    if y_pred.dtype.kind in "biu" or not y_pred.size:  # labels (segmentation): always finite
        return
    y_pred = y_pred.astype(float, copy=False)
    bad = ~np.isfinite(y_pred.reshape(len(y_pred), -1)).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        name = f"example {labels[first]}" if labels is not None else f"row {first}"
        raise NonFinitePrediction(f"{int(bad.sum())} prediction(s) are NaN or Inf, first for {name} "
                                  f"({np.asarray(y_pred)[first].tolist()}); the encoder or head emitted "
                                  "non-finite values, so nothing was scored")


def compute(names, y_true, y_pred, params: dict[str, dict] | None = None) -> dict[str, float]:
    """Every named metric on one sample; ``params[name]`` are extra keyword arguments (uno_c's tau)."""
    check_finite_predictions(y_pred)
    return {n: METRICS[n].fn(y_true, y_pred, **(params or {}).get(n, {})) for n in names}


def subject_index(groups, n: int) -> list[np.ndarray]:
    if groups is None:
        return [np.array([i]) for i in range(n)]
    groups = np.asarray(groups)
    _, inverse = np.unique(groups, return_inverse=True)
    return [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]


def replicates(n_subjects: int, n_boot: int, seed: int) -> np.ndarray:
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


def _uno_pairs(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """(n, n): 1 where j was seen longer than i's time: t_j > t_i, or t_j == t_i with j censored
    (only rows i with an event are ever weighted, so two events at one time are not compared)."""
    return (time[None, :] > time[:, None]) | ((time[None, :] == time[:, None]) & ~event[None, :])


def _weighted_uno_c(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray,
                    tau: float | None = None) -> np.ndarray:
    """:func:`uno_c` on every replicate: the censoring Kaplan-Meier of each replicate, one tau.

    The censoring survival G of a replicate is a product over the distinct times u_k of
    (1 - censored at u_k / at risk at u_k), both counted with the replicate's multiplicities,
    evaluated at each row's own time (the drop at that time included, as lifelines'
    ``survival_function_at_times``). Pairs and truncation as in :func:`uno_c`: events at
    t < tau (all, when tau is None), partners seen longer (censored at the same time included).
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
    counted = event if tau is None else event & (time < tau)
    w = np.where((weights > 0) & counted[None, :], weights / g ** 2, 0.0)
    later = _uno_pairs(time, event)
    num = _pair_sums(weights, w, later * _concordance(risk))
    den = _pair_sums(weights, w, later.astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


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
    """:func:`auc` on every bootstrap replicate at once (same conventions: the largest label of the
    whole sample is positive, NaN for one class, macro one-vs-rest over the classes present)."""
    y_true = y_true.astype(int)
    y_pred = np.asarray(y_pred, dtype=float)
    score = _binary_score(y_pred)
    if score is not None:
        return _weighted_binary_auc(binary_positive(y_true), score, weights)
    per_class = np.stack([_weighted_binary_auc(y_true == c, y_pred[:, c], weights)
                          for c in range(y_pred.shape[1])], axis=1)
    # A replicate with only one class present has no finite per-class AUC: NaN, as in auc().
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(per_class, axis=1)


def _weighted_mauc(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`mauc` on every replicate: per class pair, the two weighted AUCs on the pair's rows.

    A replicate missing a class has an undefined pair, so its M is NaN (dropped, counted), never
    an average over the pairs that remain.
    """
    y_true, y_pred = _class_matrix(y_true, y_pred, "mauc")
    pair_scores = []
    for i in range(y_pred.shape[1]):
        for j in range(i + 1, y_pred.shape[1]):
            rows = (y_true == i) | (y_true == j)
            if not rows.any():
                pair_scores.append(np.full(len(weights), np.nan))
                continue
            a_ij = _weighted_binary_auc(y_true[rows] == i, y_pred[rows, i], weights[:, rows])
            a_ji = _weighted_binary_auc(y_true[rows] == j, y_pred[rows, j], weights[:, rows])
            pair_scores.append((a_ij + a_ji) / 2)
    return np.mean(np.stack(pair_scores, axis=1), axis=1)


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


def boot_scores(metric: str, y_true, y_pred, draws: np.ndarray, members: list[np.ndarray],
                 params: dict | None = None) -> np.ndarray:
    """Metric on each bootstrap replicate (rows of subject indices); ``params``: the metric's
    keyword arguments (uno_c's tau), the same as for the point estimate."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    params = params or {}
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
        return _weighted_uno_c(y_true, y_pred, _row_weights(draws, members, len(y_true)), **params)
    if metric == "pearson_r":
        return _weighted_pearson_r(y_true, y_pred, _row_weights(draws, members, len(y_true)))
    if metric == "auc":
        return _weighted_auc(y_true, y_pred, _row_weights(draws, members, len(y_true)))
    if metric == "mauc":
        return _weighted_mauc(y_true, y_pred, _row_weights(draws, members, len(y_true)))
    if metric == "balanced_accuracy":
        return _weighted_balanced_accuracy(y_true, y_pred, _row_weights(draws, members, len(y_true)))
    fn = METRICS[metric].fn
    out = np.empty(len(draws))
    with warnings.catch_warnings():  # replicates missing a class are expected, and dropped later
        warnings.simplefilter("ignore")
        for b, draw in enumerate(draws):  # AUC / C-index / balanced accuracy: a loop over replicates
            idx = np.concatenate([members[s] for s in draw])
            out[b] = fn(y_true[idx], y_pred[idx], **params)
    return out


@phase("bootstraps")
def bootstrap_ci(metric: str, y_true, y_pred, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                 groups=None, params: dict | None = None) -> dict:
    """Point estimate and percentile bootstrap (1 - alpha) CI, resampling subjects (``groups``).

    ``params``: the metric's keyword arguments (uno_c's tau), used for the point and every replicate.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    check_finite_predictions(y_pred)
    point = METRICS[metric].fn(y_true, y_pred, **(params or {}))
    members = subject_index(groups, len(y_true))
    if len(members) < 2:
        return {"point": float(point), "low": float("nan"), "high": float("nan"), "se": float("nan"),
                "n": len(members), "n_dropped": 0}
    boots = boot_scores(metric, y_true, y_pred, replicates(len(members), n_boot, seed), members, params)
    ok = boots[np.isfinite(boots)]
    if not len(ok):
        return {"point": float(point), "low": float("nan"), "high": float("nan"), "se": float("nan"),
                "n": len(members), "n_dropped": int(n_boot)}
    low, high = np.quantile(ok, [alpha / 2, 1 - alpha / 2])
    return {"point": float(point), "low": float(low), "high": float(high), "se": float(ok.std(ddof=1)),
            "n": len(members), "n_dropped": int(n_boot - len(ok))}


@phase("bootstraps")
def paired_bootstrap(metric: str, y_true, pred_a, pred_b, *, n_boot: int = 1000, seed: int = 0,
                     groups=None, params: dict | None = None) -> dict:
    """Paired test of two predictors on the same subjects: delta = score(a) - score(b).

    Both are scored on the same resampled subject sets. The two-sided p-value is
    2 * min(P(delta* <= 0), P(delta* >= 0)) over replicates, clipped to 1.
    """
    y_true = np.asarray(y_true)
    check_finite_predictions(pred_a)
    check_finite_predictions(pred_b)
    members = subject_index(groups, len(y_true))
    draws = replicates(len(members), n_boot, seed)
    a = boot_scores(metric, y_true, pred_a, draws, members, params)
    b = boot_scores(metric, y_true, pred_b, draws, members, params)
    delta = a - b
    delta = delta[np.isfinite(delta)]
    fn, kwargs = METRICS[metric].fn, params or {}
    point = fn(y_true, np.asarray(pred_a), **kwargs) - fn(y_true, np.asarray(pred_b), **kwargs)
    if not len(delta):
        return {"delta": float(point), "low": float("nan"), "high": float("nan"), "p_value": float("nan"),
                "n": len(members)}
    p = min(1.0, 2 * min(np.mean(delta <= 0), np.mean(delta >= 0)))
    low, high = np.quantile(delta, [0.025, 0.975])
    return {"delta": float(point), "low": float(low), "high": float(high), "p_value": float(p),
            "n": len(members)}
