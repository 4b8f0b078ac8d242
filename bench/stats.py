"""The board's inference in one place: Holm's adjustment, the Wald test on a paired-bootstrap
standard error, and intervals that add training noise (seeds) to sampling noise (subjects).

Why a Wald test rather than the bootstrap's percentile p-value: a table of 14 entries has 91
pairs, so Holm's first threshold is 0.05 / 91 = 0.00055, and a percentile p-value from
``B`` replicates cannot go below about ``2 / B`` (0.002 at B = 1,000): nothing could survive the
adjustment. The replicates still give the standard error of the difference (subjects resampled
jointly for both entries, so their shared difficulty cancels), and ``delta / SE`` is referred to a
normal or, where seeds add variance, a t distribution.

Training noise: with ``S`` seeds the mean score is ``mu + mean(seed effects) + subject error``.
Its variance has two components: the subject part (from the bootstrap, or a record's per-seed
standard errors) and ``s^2 / S`` with ``s`` the SD of the per-seed scores (all seeds read the same
test subjects, so their spread is training noise only). With 3 seeds the second is estimated on
2 degrees of freedom, so the interval and the test use Student's t with the Welch-Satterthwaite
degrees of freedom of the sum (Satterthwaite 1946): a seeds x subjects bootstrap with 3 seeds
covers about 0.84-0.89 when seed noise dominates, this interval about the nominal 0.95.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Per-seed scores that differ by less than this share of their size are the same number: a
#: deterministic head refitted gives the same predictions, and its scores differ in the last bits of
#: the float sum at most (1e-15 relative on the committed board).
SEED_TOLERANCE = 1e-9


def negligible(spread: float, scale: float) -> bool:
    """A spread of per-seed scores that is float round-off, not training noise."""
    return spread <= SEED_TOLERANCE * max(1.0, abs(scale))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (Holm 1979), in the input order; ``None`` / NaN entries are
    not tests and stay ``None``. ``adjusted_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))`` over the
    m real p-values sorted ascending, so an adjusted p below alpha is exactly a Holm rejection."""
    real = [(p, i) for i, p in enumerate(p_values) if p is not None and not math.isnan(p)]
    m = len(real)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(real)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


@dataclass(frozen=True)
class Spread:
    """A mean score's standard error split into subjects and seeds, with its degrees of freedom."""

    subject_var: float          # variance of the mean from resampling subjects
    seed_var: float             # variance of the mean from training noise: s^2 / S (0 when seeds agree)
    seed_df: float              # S - 1 (0 with one seed); Satterthwaite's for a sum of two

    @property
    def se(self) -> float:
        return math.sqrt(self.subject_var + self.seed_var)

    @property
    def df(self) -> float:
        """Welch-Satterthwaite degrees of freedom: infinite without seed variance, ``S - 1`` when it
        is all seed variance."""
        if self.seed_var <= 0 or self.seed_df <= 0:
            return math.inf
        total = self.subject_var + self.seed_var
        return total ** 2 / (self.seed_var ** 2 / self.seed_df)

    def __add__(self, other: "Spread") -> "Spread":
        """The spread of a difference of two independently trained entries (seed parts add; the
        subject part of a paired difference is measured on the pair, so callers set it)."""
        seed_var = self.seed_var + other.seed_var
        if seed_var <= 0:
            return Spread(self.subject_var + other.subject_var, 0.0, 0)
        # Satterthwaite over the two seed components: keep the sum's df through an equivalent single df
        parts = [(v, d) for v, d in ((self.seed_var, self.seed_df), (other.seed_var, other.seed_df)) if v > 0]
        df = seed_var ** 2 / sum(v ** 2 / d for v, d in parts)
        return Spread(self.subject_var + other.subject_var, seed_var, df)


def seed_spread(per_seed_scores: Sequence[float]) -> tuple[float, float, int]:
    """(SD of the per-seed scores, its variance of the mean ``s^2 / S``, ``S - 1``); zeros when the
    seeds agree (:func:`negligible`) or there is one seed."""
    values = np.asarray([v for v in per_seed_scores if v is not None and np.isfinite(v)], dtype=float)
    if len(values) < 2 or negligible(float(np.ptp(values)), float(np.max(np.abs(values)))):
        return 0.0, 0.0, max(len(values) - 1, 0)
    sd = float(np.std(values, ddof=1))
    return sd, sd ** 2 / len(values), len(values) - 1


def t_quantile(df: float, level: float = 0.95) -> float:
    from scipy.stats import norm, t

    q = 0.5 + level / 2
    return float(norm.ppf(q) if math.isinf(df) else t.ppf(q, df))


def interval(point: float, spread: Spread, level: float = 0.95) -> tuple[float, float]:
    """``point -/+ t_(df) * SE``: the variance-components interval."""
    half = t_quantile(spread.df, level) * spread.se
    return point - half, point + half


def wald_p(delta: float, spread: Spread) -> float:
    """Two-sided p-value of ``delta`` (a point difference) against 0 with the spread's SE and df. With
    a zero SE the difference is the same on every replicate: p = 1 if it is 0, else 0."""
    from scipy.stats import norm, t

    if not np.isfinite(delta):
        return math.nan
    se = spread.se
    if se <= 0:
        return 1.0 if negligible(abs(delta), 0.0) else 0.0
    z = abs(delta) / se
    df = spread.df
    return float(min(1.0, 2 * (norm.sf(z) if math.isinf(df) else t.sf(z, df))))
