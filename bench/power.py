"""Power of a task's test split: how large a difference between two encoders it can detect.

A benchmark whose test split cannot tell a 0.10 AUC gap from noise ranks encoders by luck.
``bench splits make`` and ``bench data info`` print, per task, the test and external counts
and the smallest AUC gap detected at 80 % power; the leaderboard prints it under each task
(:func:`bench.leaderboard.sections.split_power`). Both call :func:`detectable_gap`, so on the same
labels, subjects and level they give the same number. It is simulated on the split's real
examples: its subjects (examples of one subject are resampled together), its class balance and
its number of examples per subject.

Simulation model (stated so a reviewer can disagree with it): two encoders score every test
example by a binormal model, ``score = delta * y + sqrt(rho) * u + sqrt(1 - rho) * e``, where
``delta = sqrt(2) * Phi^-1(AUC)`` gives each encoder its AUC, ``u`` is shared by both encoders
(they read the same scans: correlation ``rho`` = 0.5) and carries a subject effect (examples of
one subject are alike: intra-subject correlation 0.5), and ``e`` is each encoder's own noise.
Encoder A has AUC ``base`` (0.80), B has ``base - gap``.

The test is the board's (:mod:`bench.stats`): ``delta`` = AUC(A) - AUC(B) on the whole split,
``SE`` = SD of ``B`` paired-bootstrap replicates of the difference (subjects resampled jointly for
both encoders, :func:`bench.metrics.replicates`), ``p = wald_p(delta, Spread(SE^2, 0, 0))`` (no
seed noise in the model); a simulated replicate counts as detected when ``p < level``. The board
tests every pair of a table and Holm-adjusts, so it asks at ``alpha / m`` (Holm's first, most
stringent step over ``m`` pairs): a gap detectable there is detectable for any pair.

Monte-Carlo error: the power at a gap is a share of ``n_sim`` simulations, with standard error
``sqrt(p (1 - p) / n_sim)``; :data:`N_SIM` = 400 keeps it at or below 0.02 at power 0.8 and above
(the reported gap is the smallest with power >= 0.8). The bootstrap AUCs of all replicates are
computed at once from per-subject sums of pairwise comparisons (:func:`paired_auc_deltas`), and
results are cached on disk (:func:`detectable_gap`), so a board of several tasks costs seconds once.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import norm

from bench import metrics
from bench.atomic import atomic_write_bytes
from bench.paths import cache_home
from bench.stats import Spread, wald_p

BASE_AUC = 0.80
ENCODER_CORRELATION = 0.5
SUBJECT_CORRELATION = 0.5
#: AUC gaps tried (B's AUC is BASE_AUC - gap: 0.30 is chance).
GAPS = (0.04, 0.06, 0.08, 0.10, 0.12, 0.15, 0.20, 0.25, 0.30)
#: The power a gap must reach to be reported.
TARGET_POWER = 0.8
#: Largest Monte-Carlo standard error of the power at the reported gap.
MC_SE_MAX = 0.02
#: Simulations per gap: ``p (1 - p) / n <= MC_SE_MAX^2`` at p = TARGET_POWER (400).
N_SIM = math.ceil(round(TARGET_POWER * (1 - TARGET_POWER) / MC_SE_MAX ** 2, 9))
#: Bootstrap replicates of each simulated paired test.
N_BOOT = 200
#: Two-sided level of one unadjusted test.
ALPHA = 0.05
#: Part of the cache key: bump whenever the model, the test or the search changes.
CODE_VERSION = 2


def mc_se(power: float, n_sim: int) -> float:
    """Monte-Carlo (binomial) standard error of a power estimated from ``n_sim`` simulations."""
    return math.sqrt(power * (1 - power) / n_sim) if n_sim > 0 else math.nan


@dataclass(frozen=True)
class SplitCounts:
    """Examples and subjects of a task on its test and external splits."""

    test_examples: int
    test_subjects: int
    external_examples: int
    external_subjects: int
    test_classes: dict[str, int]


def counts(table, class_names: Sequence[str] = ()) -> SplitCounts:
    """Counts from a task's examples table (``split``, ``participant_id``; class indices ``y``,
    shown by ``class_names``, for classification tasks)."""
    t = table[table["split"] == "test"]
    e = table[table["split"] == "external"]
    classes = {}
    if class_names and "y" in t.columns:
        classes = {class_names[int(k)]: int(v) for k, v in t["y"].value_counts().sort_index().items()}
    return SplitCounts(len(t), t["participant_id"].nunique(), len(e), e["participant_id"].nunique(), classes)


# ------------------------------------------------------------------------------ the paired test
@dataclass(frozen=True)
class Design:
    """A split's binary labels and subjects, arranged for the bootstrap AUC: positive and negative
    rows each sorted by subject, so a subject's rows are one block (``starts``) of its side."""

    y: np.ndarray                 # 0 / 1 per row
    codes: np.ndarray             # subject index per row, 0 .. n_subjects - 1
    n_subjects: int
    pos: np.ndarray               # positive rows, grouped by subject
    neg: np.ndarray
    pos_starts: np.ndarray        # first position of each subject's block in ``pos``
    neg_starts: np.ndarray
    pos_subjects: np.ndarray      # the subject of each block
    neg_subjects: np.ndarray
    pos_sizes: np.ndarray         # rows per block
    neg_sizes: np.ndarray

    @classmethod
    def of(cls, y, subjects) -> "Design":
        y = np.asarray(y).astype(int).ravel()
        codes = np.unique(np.asarray(subjects).astype(str), return_inverse=True)[1].ravel()
        pos, pos_starts, pos_subjects, pos_sizes = _blocks(np.flatnonzero(y == 1), codes)
        neg, neg_starts, neg_subjects, neg_sizes = _blocks(np.flatnonzero(y == 0), codes)
        return cls(y, codes, int(codes.max()) + 1 if len(codes) else 0, pos, neg, pos_starts, neg_starts,
                   pos_subjects, neg_subjects, pos_sizes, neg_sizes)


def _blocks(rows: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``rows`` sorted by subject, the start of each subject's block, its subject and its size."""
    order = rows[np.argsort(codes[rows], kind="stable")]
    block = codes[order]
    starts = np.flatnonzero(np.r_[True, block[1:] != block[:-1]]) if len(order) else np.zeros(0, int)
    return order, starts, block[starts], np.diff(np.r_[starts, len(order)])


def subject_counts(draws: np.ndarray, n_subjects: int) -> np.ndarray:
    """(B, n_subjects): how often each subject is drawn in each replicate of ``draws`` (B, n)."""
    n_boot = len(draws)
    flat = (np.arange(n_boot)[:, None] * n_subjects + draws).ravel()
    return np.bincount(flat, minlength=n_boot * n_subjects).reshape(n_boot, n_subjects).astype(float)


def _comparisons(score: np.ndarray, d: Design) -> np.ndarray:
    """(positives, negatives): 1 where the positive scores higher, 1/2 on a tie (Mann-Whitney)."""
    p, n = score[d.pos][:, None], score[d.neg][None, :]
    return (p > n) + 0.5 * (p == n)


def paired_auc_deltas(d: Design, score_a: np.ndarray, score_b: np.ndarray,
                      draws: np.ndarray) -> tuple[float, np.ndarray]:
    """AUC(a) - AUC(b) on the whole split, and on each bootstrap replicate of ``draws`` (B, n_subjects
    subject indices, as :func:`bench.metrics.replicates`); NaN where a replicate lacks a class.

    The same numbers as :func:`bench.metrics.boot_scores` ("auc") of a minus that of b, without a
    sort per replicate: with ``c`` a replicate's subject counts and ``K[k, l]`` the sum of a's minus
    b's pairwise comparisons between subject k's positive rows and subject l's negative ones, the
    difference of the two weighted AUCs is ``c_pos K c_neg / (positives x negatives drawn)`` (both
    AUCs share the denominator)."""
    diff = _comparisons(np.asarray(score_a, float), d) - _comparisons(np.asarray(score_b, float), d)
    per_subject = np.add.reduceat(np.add.reduceat(diff, d.pos_starts, axis=0), d.neg_starts, axis=1)
    point = float(per_subject.sum() / (len(d.pos) * len(d.neg)))
    c = subject_counts(draws, d.n_subjects).T  # (n_subjects, B): rows taken below stay contiguous
    c_pos, c_neg = c[d.pos_subjects], c[d.neg_subjects]
    num = ((per_subject.T @ c_pos) * c_neg).sum(axis=0)
    den = (d.pos_sizes @ c_pos) * (d.neg_sizes @ c_neg)
    with np.errstate(invalid="ignore", divide="ignore"):
        return point, np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def wald_test(delta: float, replicate_deltas: np.ndarray) -> float:
    """The board's paired test: ``wald_p`` of the point difference with the SD (ddof 1) of the finite
    bootstrap replicates of the difference as its SE and no seed noise; NaN under two replicates."""
    finite = np.asarray(replicate_deltas, float)
    finite = finite[np.isfinite(finite)]
    if len(finite) < 2:
        return math.nan
    return wald_p(delta, Spread(float(np.var(finite, ddof=1)), 0.0, 0))


# ------------------------------------------------------------------------------ the simulation
def _binormal_shift(auc_value: float) -> float:
    return float(np.sqrt(2.0) * norm.ppf(auc_value))


def simulate_p_values(d: Design, gap: float, *, base: float = BASE_AUC, n_sim: int = N_SIM,
                      n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """The board's p-value (:func:`wald_test`) on each of ``n_sim`` simulated pairs of encoders with
    AUCs ``base`` and ``base - gap`` (module model). Seeded by (seed, gap) only, so every level is
    judged on the same simulated data. All NaN (nothing detected) when a class is missing."""
    if not len(d.pos) or not len(d.neg):
        return np.full(n_sim, np.nan)
    rng = np.random.default_rng([seed, int(round(gap * 1000))])
    n = len(d.y)
    subject = rng.standard_normal((n_sim, d.n_subjects))[:, d.codes]
    shared = np.sqrt(SUBJECT_CORRELATION) * subject + np.sqrt(1 - SUBJECT_CORRELATION) * rng.standard_normal((n_sim, n))
    common = np.sqrt(ENCODER_CORRELATION) * shared
    own = np.sqrt(1 - ENCODER_CORRELATION)
    a = _binormal_shift(base) * d.y + common + own * rng.standard_normal((n_sim, n))
    b = _binormal_shift(base - gap) * d.y + common + own * rng.standard_normal((n_sim, n))
    draw_seeds = rng.integers(0, 2 ** 63, n_sim)
    out = np.empty(n_sim)
    with _one_blas_thread():
        for i in range(n_sim):
            draws = metrics.replicates(d.n_subjects, n_boot, int(draw_seeds[i]))
            out[i] = wald_test(*paired_auc_deltas(d, a[i], b[i], draws))
    return out


def _one_blas_thread():
    """BLAS on one thread for the simulation's many small products: a second thread only waits
    for a free core (ten times slower on a busy 2-core machine); the numbers do not change."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def detection_power(y: np.ndarray, subjects: np.ndarray, gap: float, *, base: float = BASE_AUC,
                    n_sim: int = N_SIM, n_boot: int = N_BOOT, seed: int = 0, alpha: float = ALPHA) -> float:
    """Share of simulated pairs in which the board's Wald test detects ``gap`` (p < ``alpha``)."""
    return float(np.mean(simulate_p_values(Design.of(y, subjects), gap, base=base, n_sim=n_sim,
                                           n_boot=n_boot, seed=seed) < alpha))


def smallest_detectable_gap(y: np.ndarray, subjects: np.ndarray, *, power: float = TARGET_POWER,
                            n_sim: int = N_SIM, seed: int = 0, n_boot: int = N_BOOT, alpha: float = ALPHA,
                            bisect: bool = True) -> tuple[float, dict[float, float]]:
    """The smallest gap of :data:`GAPS` detected at level ``alpha`` with at least ``power`` (NaN if
    none), and the power at every gap tried. ``bisect`` halves the interval of :data:`GAPS` (3 or 4
    gaps instead of up to 9; it assumes power grows with the gap, which holds up to the simulation's
    noise); ``bisect=False`` tries them in order."""
    design = Design.of(y, subjects)
    tried: dict[float, float] = {}

    def detected(gap: float) -> bool:
        p = simulate_p_values(design, gap, n_sim=n_sim, n_boot=n_boot, seed=seed)
        tried[gap] = float(np.mean(p < alpha))
        return tried[gap] >= power

    if not bisect:
        return next((gap for gap in GAPS if detected(gap)), float("nan")), tried
    low, high = -1, len(GAPS)  # GAPS[high] detected (len: none so far), GAPS[low] not
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if detected(GAPS[mid]) else (mid, high)
    return (GAPS[high] if high < len(GAPS) else float("nan")), tried


# ------------------------------------------------------------------------------ cached answer
@dataclass(frozen=True)
class Detectable:
    """The smallest AUC gap detected at 80 % power at one level, with the power behind it."""

    gap: float                    # NaN: none of GAPS
    power: float                  # estimated power at ``gap`` (at GAPS[-1] when none)
    alpha: float                  # the level each simulated test was held to
    n_sim: int
    n_boot: int
    tried: tuple[tuple[float, float], ...] = ()

    @property
    def found(self) -> bool:
        return not math.isnan(self.gap)

    @property
    def mc_se(self) -> float:
        """Monte-Carlo standard error of :attr:`power`."""
        return mc_se(self.power, self.n_sim)

    @property
    def power_below(self) -> float | None:
        """Power at the step of :data:`GAPS` below :attr:`gap` (bisection always tried it; None when
        ``gap`` is the first step or none was found): the detectable gap lies between the two."""
        if not self.found or self.gap not in GAPS or GAPS.index(self.gap) == 0:
            return None
        return dict(self.tried).get(GAPS[GAPS.index(self.gap) - 1])


def cache_key(y, subjects, *, alpha: float, n_sim: int, n_boot: int, seed: int) -> str:
    """SHA-256 of everything the answer depends on: the data, the simulation's sizes and level, the
    model's constants and :data:`CODE_VERSION`."""
    blob = json.dumps({
        "y": [int(v) for v in np.asarray(y).ravel()], "subjects": [str(s) for s in np.asarray(subjects).ravel()],
        "alpha": repr(float(alpha)), "n_sim": n_sim, "n_boot": n_boot, "seed": seed,
        "model": [BASE_AUC, ENCODER_CORRELATION, SUBJECT_CORRELATION, list(GAPS), TARGET_POWER],
        "version": CODE_VERSION}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _cache_path(key: str) -> Path:
    return cache_home() / "power" / f"{key}.json"


def _read_cached(path: Path) -> Detectable | None:
    """A cached answer, or None when there is none or it is unreadable (then it is recomputed)."""
    try:
        raw = json.loads(path.read_text())
        gap = math.nan if raw["gap"] is None else float(raw["gap"])  # JSON has no NaN: none found is null
        return Detectable(gap, float(raw["power"]), float(raw["alpha"]), int(raw["n_sim"]),
                          int(raw["n_boot"]), tuple((float(g), float(p)) for g, p in raw["tried"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def detectable_gap(y, subjects, *, alpha: float = ALPHA, n_sim: int = N_SIM, n_boot: int = N_BOOT,
                   seed: int = 0) -> Detectable:
    """The smallest AUC gap of :data:`GAPS` detected at 80 % power by the board's test at level
    ``alpha`` on binary labels ``y`` of the examples of ``subjects`` (by bisection). Cached on disk
    under ``<cache>/power/`` by :func:`cache_key` (written atomically), so a board rendered again, or
    ``bench splits make`` after it, simulates nothing."""
    path = _cache_path(cache_key(y, subjects, alpha=alpha, n_sim=n_sim, n_boot=n_boot, seed=seed))
    cached = _read_cached(path)
    if cached is not None:
        return cached
    gap, tried = smallest_detectable_gap(np.asarray(y), np.asarray(subjects), n_sim=n_sim, n_boot=n_boot,
                                         seed=seed, alpha=alpha)
    found = Detectable(gap, tried[GAPS[-1] if math.isnan(gap) else gap], float(alpha), n_sim, n_boot,
                       tuple(sorted(tried.items())))
    atomic_write_bytes(path, json.dumps({"gap": None if math.isnan(gap) else gap, "power": found.power,
                                         "alpha": found.alpha, "n_sim": n_sim, "n_boot": n_boot,
                                         "tried": [list(t) for t in found.tried]}).encode())
    return found


# ------------------------------------------------------------------------------ bench splits / data info
@dataclass(frozen=True)
class TaskPower:
    task: str
    counts: SplitCounts
    gap: float | None           # smallest detectable AUC gap at 80 % power (None: not a classification)
    proxy: str = ""             # how a multi-class task was reduced to a binary one
    power: float | None = None  # estimated power at ``gap`` (at GAPS[-1] when none is found)
    n_sim: int = 0
    alpha: float = ALPHA        # unadjusted: there is no table of pairs here

    @property
    def mc_se(self) -> float | None:
        return None if self.power is None else mc_se(self.power, self.n_sim)

    @property
    def summary(self) -> str:
        """The gap with its power and Monte-Carlo error and the level, for a table cell."""
        if self.gap is None:
            return "-"
        if self.power is None:
            return "not found"
        head = f"{self.gap:.2f}" if not math.isnan(self.gap) else f"none up to {GAPS[-1]:.2f}"
        return (f"{head} (power {self.power:.2f} +/- {self.mc_se:.2f} MC s.e., {self.n_sim} sims; "
                f"unadjusted alpha = {self.alpha:g})")


def task_power(spec, cohort, split_path: Path, *, n_sim: int = N_SIM, seed: int = 0) -> TaskPower:
    """Counts and detectable AUC gap of one task on ``cohort`` with the split file at ``split_path``:
    the board's test (:func:`detectable_gap`) at the unadjusted level :data:`ALPHA`."""
    from bench.runner import examples_with_split

    examples, _ = examples_with_split(spec, cohort, split_path)
    table = examples.table
    c = counts(table, spec.label.classes or ())
    if not spec.target.has_classes or "y" not in table.columns:
        return TaskPower(spec.name, c, None)
    test = table[table["split"] == "test"]
    # the largest label is the positive class, as in bench.metrics.auc; a multi-class task is
    # reduced to its largest class present (e.g. AD) against the rest
    labels = test["y"].to_numpy().astype(int)
    y = (labels == labels.max()).astype(int) if len(labels) else labels
    proxy = ""
    if len(set(labels.tolist())) != 2:
        classes = spec.label.classes or ()
        proxy = f"{classes[labels.max()] if len(labels) and labels.max() < len(classes) else 'last class'} vs rest"
    if not len(y) or y.min() == y.max():
        return TaskPower(spec.name, c, float("nan"), proxy)
    found = detectable_gap(y, test["participant_id"].to_numpy(), n_sim=n_sim, seed=seed)
    return TaskPower(spec.name, c, found.gap, proxy, found.power, n_sim, ALPHA)
