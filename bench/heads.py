"""Heads trained on frozen embeddings: logistic, ridge, Cox, a time-aware sequence head, and a
light segmentation decoder.

Every probe head is a :class:`Head`: ``fit`` / ``predict`` over :class:`HeadData`, the
regularisation it chose (``chosen``, recorded in each score's params) and whether its fit
depends on the seed (``uses_seed``). Which head a task gets is its target kind's choice
(:meth:`bench.kinds.TargetKind.probe_head`). Flat heads choose their regularisation by inner
cross-validation over the split file's training folds (grouped by subject, so a subject's
sessions never sit on both sides).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import sklearn
import torch
from scipy.special import expit
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.preprocessing import StandardScaler
from torch import nn

from bench.solvers import binary_logistic_path, cox_efron, ridge_path


@dataclass
class HeadData:
    x: np.ndarray | list[np.ndarray]       # (n, E) or, for sequences, a list of (L_i, E)
    y: np.ndarray                          # class index / value / (n, 2) [time, event]
    months: list[np.ndarray] | None = None
    groups: np.ndarray | None = None       # subject id per example
    folds: np.ndarray | None = None        # inner-CV fold per example (from the split file)


@runtime_checkable
class Head(Protocol):
    """What the protocols need of a probe head."""

    #: False when the fit is the same for every seed (then it is fitted once and shared)
    uses_seed: bool
    #: the regularisation the fit chose (e.g. ``{"C": 0.1, "note": ...}``), recorded with each score
    chosen: dict

    def fit(self, train: HeadData, val: HeadData | None = None) -> "Head": ...

    def predict(self, data: HeadData) -> np.ndarray: ...


_BLAS_CONTROLLER = None


def blas_single_thread():
    """Context manager: numpy / scipy BLAS on one thread while heads are fitted and scored.

    Probe heads solve hundreds of small dense problems (about a hundred rows, a few hundred
    columns). At that size a second BLAS thread costs more in hand-offs than it saves, and on a
    busy machine it waits for a free core at every call: a logistic fit took 12x longer with two
    OpenBLAS threads than with one on a loaded 2-core machine. Results do not depend on it.
    The controller that finds the BLAS libraries is built once (scanning the loaded libraries
    takes ~10 ms with torch loaded); numpy's and scipy's are loaded by this module's imports.
    """
    global _BLAS_CONTROLLER
    from threadpoolctl import ThreadpoolController

    if _BLAS_CONTROLLER is None:
        _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER.limit(limits=1, user_api="blas")


def _cv_folds(data: HeadData, n_max: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    n = len(data.y)
    if data.folds is not None and len(np.unique(data.folds)) >= 2:
        return [(np.flatnonzero(data.folds != f), np.flatnonzero(data.folds == f)) for f in np.unique(data.folds)]
    groups = data.groups if data.groups is not None else np.arange(n)
    k = min(n_max, len(np.unique(groups)))
    return list(GroupKFold(n_splits=k).split(np.zeros(n), groups=groups)) if k >= 2 else []


class LogisticHead:
    """Standardise + multinomial logistic regression; C by inner-CV log-loss.

    Log-loss rather than accuracy: it is smooth in C and uses the probabilities the AUC is
    computed from, so small folds still rank C sensibly.

    A probe grid fits this head hundreds of times (7 Cs x 5 folds + 1 per setting). Two-class
    problems (every fold of a binary task, and folds of a multi-class task that hold two classes)
    are solved exactly, all Cs of a fold at once (:class:`BinaryLogistic`); the earlier
    scikit-learn L-BFGS fits stopped at ``tol=1e-4``, far from the optimum for large C, so C=10
    and C=100 could rank differently. Three or more classes keep scikit-learn's multinomial fit.
    Each fold is standardised once for all Cs, scikit-learn's per-call argument validation is
    skipped (the inputs are ours and finite) and the fold log-loss is computed directly
    (:func:`_log_loss`, the arithmetic of ``sklearn.metrics.log_loss``).
    """

    #: the fit is deterministic: L-BFGS and Newton ignore the seed (see protocols.fit_head)
    uses_seed = False

    def __init__(self, n_classes: int, seed: int = 0, Cs=tuple(np.logspace(-4, 2, 7))):
        self.n_classes, self.seed, self.Cs = n_classes, seed, Cs
        self.chosen: dict = {}

    def _model(self, z: np.ndarray, y: np.ndarray, C: float):
        """Two classes: the exact optimum (:class:`BinaryLogistic`); more: scikit-learn's multinomial fit."""
        classes = np.unique(y)
        if len(classes) == 2:
            return BinaryLogistic.fit(z, y, classes, [C])
        return LogisticRegression(C=C, max_iter=2000, random_state=self.seed).fit(z, y)

    def _fit(self, x, y, C):
        scaler = StandardScaler().fit(x)
        return scaler, self._model(scaler.transform(x), y, C)

    def _proba_z(self, model: LogisticRegression, z: np.ndarray) -> np.ndarray:
        """Probabilities over all n_classes (a class absent from training gets ~0)."""
        p = np.full((len(z), self.n_classes), 1e-6)
        p[:, model.classes_] = model.predict_proba(z)
        return p / p.sum(1, keepdims=True)

    def _proba(self, fitted, x) -> np.ndarray:
        scaler, model = fitted
        return self._proba_z(model, scaler.transform(x))

    def fit(self, train: HeadData, val: HeadData | None = None) -> "LogisticHead":
        x, y = np.asarray(train.x), np.asarray(train.y).astype(int)
        if len(np.unique(y)) < 2:  # one class seen: predict its prior
            self.fitted, self.constant = None, np.bincount(y, minlength=self.n_classes) + 1e-6
            self.chosen = {"C": None, "note": "single class in training data"}
            return self
        folds = [(tr, te) for tr, te in _cv_folds(train) if len(np.unique(y[tr])) >= 2]
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            if not folds or min(np.bincount(y)[np.unique(y)]) < 2:
                C, note = 1.0, "too few examples for inner CV; fixed C"
            else:
                losses = np.stack([self._fold_losses(x[tr], y[tr], x[te], y[te]) for tr, te in folds], axis=1)
                C, note = float(self.Cs[int(np.argmin([np.mean(row) for row in losses]))]), "inner CV (log-loss)"
            self.fitted = self._fit(x, y, C)
        self.chosen = {"C": C, "note": note}
        return self

    def _fold_losses(self, x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray) -> np.ndarray:
        """Held-out log-loss of every C on one inner fold (standardised on its training rows)."""
        scaler = StandardScaler().fit(x_tr)
        z_tr, z_te = scaler.transform(x_tr), scaler.transform(x_te)
        classes = np.unique(y_tr)
        if len(classes) != 2:
            return np.array([_log_loss(y_te, self._proba_z(self._model(z_tr, y_tr, C), z_te)) for C in self.Cs])
        path = BinaryLogistic.fit(z_tr, y_tr, classes, self.Cs)
        return np.array([_log_loss(y_te, self._proba_z(path.at(i), z_te)) for i in range(len(self.Cs))])

    def predict(self, data: HeadData) -> np.ndarray:
        if self.fitted is None:
            return np.tile(self.constant / self.constant.sum(), (len(data.x), 1))
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            return self._proba(self.fitted, np.asarray(data.x))


@dataclass
class BinaryLogistic:
    """L2-penalised two-class logistic regression solved exactly, for one C or a path of Cs.

    Same objective as ``LogisticRegression(C=C)`` (see :func:`bench.solvers.binary_logistic_path`),
    same ``classes_`` / ``predict_proba`` interface for one C, but the optimum itself rather than
    L-BFGS's stop at ``tol=1e-4``, so the inner CV ranks each C by the model that C defines and
    the final fit is that model.
    """

    classes_: np.ndarray
    coef: np.ndarray        # (n_Cs, d)
    intercept: np.ndarray   # (n_Cs,)

    @classmethod
    def fit(cls, z: np.ndarray, y: np.ndarray, classes: np.ndarray, Cs) -> "BinaryLogistic":
        coef, intercept = binary_logistic_path(z, y == classes[1], Cs)
        return cls(np.asarray(classes), coef, intercept)

    def at(self, i: int) -> "BinaryLogistic":
        return BinaryLogistic(self.classes_, self.coef[i:i + 1], self.intercept[i:i + 1])

    def predict_proba(self, z: np.ndarray) -> np.ndarray:
        positive = expit(np.asarray(z, float) @ self.coef[0] + self.intercept[0])
        return np.stack([1 - positive, positive], axis=1)


def _log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean negative log-likelihood of integer labels ``y`` under row-stochastic ``proba``.

    The arithmetic of ``sklearn.metrics.log_loss(y, proba, labels=range(n_classes))``
    (probabilities clipped to [eps, 1 - eps], then the mean of -log p[i, y_i]) without its
    input checks and label binarisation, which cost more than the loss on a 20-row fold.
    """
    eps = np.finfo(proba.dtype).eps
    p = np.clip(proba, eps, 1 - eps)[np.arange(len(y)), y]
    return float(np.mean(-np.log(p)))


class RidgeHead:
    """Standardise + ridge regression; alpha by inner CV over subjects (MSE).

    Grouped folds, not sklearn's efficient leave-one-out over rows: with several sessions per
    subject, leaving one session out keeps the subject's other sessions in training, so LOO
    rewards memorising subjects and picks far too small an alpha (brain age on the default
    cohort: MAE 11 y with LOO vs about 6 y grouped). With fewer than two training subjects there
    is no CV and the strongest alpha is used.
    """

    uses_seed = False

    def __init__(self, alphas=tuple(np.logspace(-3, 5, 17))):
        self.alphas = tuple(float(a) for a in alphas)
        self.chosen: dict = {}

    def fit(self, train: HeadData, val: HeadData | None = None) -> "RidgeHead":
        from sklearn.linear_model import Ridge

        x = np.asarray(train.x, dtype=np.float64)
        y = np.asarray(train.y, dtype=np.float64)
        self.scaler = StandardScaler().fit(x)
        z = self.scaler.transform(x)
        folds = _cv_folds(train)
        if not folds:
            alpha = max(self.alphas)
            self.chosen = {"alpha": alpha, "note": "fewer than two training subjects: strongest alpha"}
        else:
            # fold x alpha squared errors, every alpha from one factorisation per fold
            sq = np.stack([np.mean((ridge_path(z[tr], y[tr], z[te], np.asarray(self.alphas)) - y[te]) ** 2, axis=1)
                           for tr, te in folds], axis=1)
            alpha = self.alphas[int(np.argmin(sq.mean(axis=1)))]
            self.chosen = {"alpha": alpha, "inner_cv_folds": len(folds)}
        self.model = Ridge(alpha=alpha).fit(z, y)
        return self

    def predict(self, data: HeadData) -> np.ndarray:
        return self.model.predict(self.scaler.transform(np.asarray(data.x, dtype=np.float64)))


@dataclass
class CoxModel:
    """A fitted Cox model: log partial hazard ``((z - mean) / std) @ beta`` (lifelines' centring)."""

    mean: np.ndarray
    std: np.ndarray
    beta: np.ndarray

    def log_partial_hazard(self, z: np.ndarray) -> np.ndarray:
        return ((np.asarray(z, float) - self.mean) / self.std) @ self.beta


class CoxHead:
    """Standardise, PCA to a few dimensions, penalised Cox model; penalizer by inner-CV C-index.

    PCA first because a Cox fit on hundreds of dimensions with ~100 subjects does not converge;
    a failed fit falls back to the next stronger penalizer. The model is lifelines'
    ``CoxPHFitter(penalizer)`` (Efron ties, penalty on standardised coefficients), solved by
    :func:`bench.solvers.cox_efron`: the same optimum (log hazards within lifelines' own
    convergence, about 2e-4) in 2 ms instead of 60-95 ms, most of which lifelines spends on
    summaries of the training table; a survival probe grid fits it about 80 times.
    """

    #: the exact PCA and the Newton fit are deterministic (see protocols.fit_head)
    uses_seed = False

    def __init__(self, seed: int = 0, penalizers=(0.01, 0.1, 1.0), max_dim: int = 16):
        self.seed, self.penalizers, self.max_dim = seed, penalizers, max_dim
        self.chosen: dict = {}

    def _fit(self, x, y, penalizer):
        scaler = StandardScaler().fit(x)
        dim = max(1, min(self.max_dim, len(x) - 2, x.shape[1]))
        # the exact solver: "auto" switches to a randomised, seed-dependent one above 500 x 500
        pca = PCA(n_components=dim, svd_solver="full").fit(scaler.transform(x))
        z = pca.transform(scaler.transform(x))
        if len(x) < 2 or not (y[:, 1] > 0).any():  # nothing to rank: constant risk
            return scaler, pca, None, None
        mean, std = z.mean(axis=0), z.std(axis=0, ddof=1)
        if not (std > 0).all():  # a constant component: no model, as lifelines refuses one
            return scaler, pca, None, None
        for pen in [p for p in self.penalizers if p >= penalizer] + [10.0, 100.0]:
            beta = cox_efron((z - mean) / std, y[:, 0], y[:, 1], pen)
            if beta is not None:
                return scaler, pca, CoxModel(mean, std, beta), pen
        return scaler, pca, None, None

    @staticmethod
    def _risk(fitted, x) -> np.ndarray:
        scaler, pca, model, _ = fitted
        if model is None:
            return np.zeros(len(x))
        risk = model.log_partial_hazard(pca.transform(scaler.transform(x)))
        return risk if np.isfinite(risk).all() else np.zeros(len(x))  # a degenerate fit ranks nobody

    def fit(self, train: HeadData, val: HeadData | None = None) -> "CoxHead":
        from bench.metrics import c_index

        x, y = np.asarray(train.x), np.asarray(train.y, float)
        folds = _cv_folds(train)
        best, scores = self.penalizers[-1], {}
        if folds and len(x) >= 10:
            for pen in self.penalizers:
                vals = [c_index(y[te], self._risk(self._fit(x[tr], y[tr], pen), x[te])) for tr, te in folds]
                scores[pen] = float(np.nanmean(vals)) if np.isfinite(vals).any() else -1.0
            best = max(scores, key=scores.get)
        self.fitted = self._fit(x, y, best)
        self.chosen = {"penalizer": self.fitted[3], "pca_dim": int(self.fitted[1].n_components_)}
        return self

    def predict(self, data: HeadData) -> np.ndarray:
        return self._risk(self.fitted, np.asarray(data.x))


# -- sequence head ---------------------------------------------------------------------------
def trajectory_features(x: np.ndarray, months: np.ndarray) -> np.ndarray:
    """Pool a variable-length (L, E) sequence with its months into one vector.

    [last scan, per-year least-squares slope, mean, months since previous scan, months spanned,
    number of scans]: the current state, the rate of change over irregular gaps, and how much
    history there is. A length-1 sequence has slope 0 and zero gaps.
    """
    x = np.asarray(x, float)
    t = (np.asarray(months, float) - months[-1]) / 12.0  # years before the index scan
    if len(x) > 1 and np.ptp(t) > 0:
        tc = t - t.mean()
        slope = (tc[:, None] * (x - x.mean(0))).sum(0) / (tc ** 2).sum()
        gap = (months[-1] - months[-2]) / 12.0
    else:
        slope, gap = np.zeros(x.shape[1]), 0.0
    return np.concatenate([x[-1], slope, x.mean(0), [gap, -t[0], len(x)]])


#: trajectory_features of each live feature array, by id (entries leave with their array)
_POOLED: dict[int, tuple[weakref.ref, np.ndarray, np.ndarray]] = {}


def _pooled_once(x: np.ndarray, months: np.ndarray) -> np.ndarray:
    """:func:`trajectory_features`, computed once per example's feature array.

    A probe grid pools the same examples in every setting (30 settings x train and test);
    the harness never changes a feature array in place, so the pooled vector of an array that is
    still alive (same object, same months) is reused.
    """
    hit = _POOLED.get(id(x))
    if hit is not None and hit[0]() is x and np.array_equal(hit[1], months):
        return hit[2]
    pooled = trajectory_features(x, months)
    try:
        ref = weakref.ref(x, lambda _, key=id(x): _POOLED.pop(key, None))
    except TypeError:  # not an ndarray: nothing to remember it by
        return pooled
    _POOLED[id(x)] = (ref, np.array(months), pooled)
    return pooled


class SequenceHead:
    """Time-aware head for variable-length scan sequences: trajectory pooling + a flat head.

    Pooling is deterministic (see :func:`trajectory_features`), so the only learned part is the
    regularised logistic / ridge / Cox model with inner-CV over subjects. On the few dozen
    subjects a conversion task has, this beat an attention-pooling network trained end to end
    (AUC 0.82 vs 0.63 on the default cohort's oracle latents), which over-fitted.
    """

    def __init__(self, flat: Callable[[], Head], n_outputs: int, seed: int = 0):
        """``flat`` makes the (unfitted) flat head of the task's kind, fitted on the pooled features."""
        self.flat, self.n_outputs, self.seed = flat, n_outputs, seed
        self.chosen: dict = {}

    uses_seed = False  # pooling is deterministic, and so is each flat head behind it

    def _pooled(self, data: HeadData) -> HeadData:
        x = np.stack([_pooled_once(xi, mi) for xi, mi in zip(data.x, data.months)])
        return HeadData(x=x, y=data.y, groups=data.groups, folds=data.folds)

    def fit(self, train: HeadData, val: HeadData | None = None) -> "SequenceHead":
        self.head = self.flat()
        self.head.fit(self._pooled(train))
        self.chosen = {"pooling": "last+slope+mean+gaps", **self.head.chosen}
        return self

    def predict(self, data: HeadData) -> np.ndarray:
        return self.head.predict(self._pooled(data))


# -- segmentation decoder ---------------------------------------------------------------------
class SegmentationDecoder(nn.Module):
    """A light UNet-like decoder: from the coarsest map up, upsample, add a projected skip.

    Width 16: on CPU a 32-wide 3x3x3 convolution at 32^3 made each step 1.8x slower
    (0.43 s vs 0.24 s per batch of four 64^3 volumes); at width 16 the decoder still turns the
    oracle's label maps back into Dice 0.92 on the smoke cohort's held-out tumours.
    """

    def __init__(self, channels: list[int], n_classes: int, width: int = 16):
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv3d(c, width, kernel_size=1) for c in channels)
        self.mix = nn.ModuleList(nn.Sequential(nn.Conv3d(width, width, 3, padding=1), nn.InstanceNorm3d(width),
                                               nn.GELU()) for _ in channels)
        self.out = nn.Conv3d(width, n_classes, kernel_size=1)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int, int]) -> torch.Tensor:
        x = None
        for feat, proj, mix in reversed(list(zip(features, self.proj, self.mix))):
            skip = proj(feat)
            x = skip if x is None else skip + nn.functional.interpolate(x, size=skip.shape[2:], mode="trilinear",
                                                                         align_corners=False)
            x = mix(x)
        return nn.functional.interpolate(self.out(x), size=size, mode="trilinear", align_corners=False)
