"""Power of a task's test split: how large a difference between two encoders it can detect.

A benchmark whose test split cannot tell a 0.10 AUC gap from noise ranks encoders by luck.
``bench splits make`` and ``bench data info`` print, per task, the test and external counts
and the smallest AUC gap the paired bootstrap detects at 80 % power, simulated on the split's
real examples: its subjects (examples of one subject are resampled together), its class
balance and its number of examples per subject.

Simulation model (stated so a reviewer can disagree with it): two encoders score every test
example by a binormal model, ``score = delta * y + sqrt(rho) * u + sqrt(1 - rho) * e``, where
``delta = sqrt(2) * Phi^-1(AUC)`` gives each encoder its AUC, ``u`` is shared by both encoders
(they read the same scans: correlation ``rho`` = 0.5) and carries a subject effect (examples of
one subject are alike: intra-subject correlation 0.5), and ``e`` is each encoder's own noise.
Encoder A has AUC ``base`` (0.80), B has ``base - gap``; a replicate counts as detected when
the paired bootstrap (``bench.metrics.paired_bootstrap``) gives p < 0.05.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import norm

from bench import metrics

BASE_AUC = 0.80
ENCODER_CORRELATION = 0.5
SUBJECT_CORRELATION = 0.5
GAPS = (0.04, 0.06, 0.08, 0.10, 0.12, 0.15, 0.20, 0.25)


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


def _simulate_scores(y: np.ndarray, auc_value: float, shared: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    delta = np.sqrt(2.0) * norm.ppf(auc_value)
    own = rng.standard_normal(len(y))
    return delta * y + np.sqrt(ENCODER_CORRELATION) * shared + np.sqrt(1 - ENCODER_CORRELATION) * own


def _shared_noise(subject_codes: np.ndarray, n_subjects: int, rng: np.random.Generator) -> np.ndarray:
    per_subject = rng.standard_normal(n_subjects)[subject_codes]
    return np.sqrt(SUBJECT_CORRELATION) * per_subject + np.sqrt(1 - SUBJECT_CORRELATION) * rng.standard_normal(
        len(subject_codes))


def detection_power(y: np.ndarray, subjects: np.ndarray, gap: float, *, base: float = BASE_AUC,
                    n_sim: int = 200, n_boot: int = 400, seed: int = 0) -> float:
    """Share of simulated replicates in which the paired bootstrap detects ``gap`` (p < 0.05)."""
    y = np.asarray(y).astype(int)
    codes = np.unique(np.asarray(subjects), return_inverse=True)[1]
    n_subjects = int(codes.max()) + 1
    rng = np.random.default_rng([seed, int(round(gap * 1000))])
    hits = 0
    for i in range(n_sim):
        shared = _shared_noise(codes, n_subjects, rng)
        a = _simulate_scores(y, base, shared, rng)
        b = _simulate_scores(y, base - gap, shared, rng)
        p = metrics.paired_bootstrap("auc", y, a, b, n_boot=n_boot, seed=i, groups=codes)["p_value"]
        hits += p < 0.05
    return hits / n_sim


def smallest_detectable_gap(y: np.ndarray, subjects: np.ndarray, *, power: float = 0.8, n_sim: int = 200,
                            seed: int = 0, n_boot: int = 400, bisect: bool = False) -> tuple[float, dict[float, float]]:
    """The smallest gap of :data:`GAPS` detected with at least ``power`` (NaN if none), and the
    power at every gap tried. ``bisect`` halves the interval of :data:`GAPS` instead of trying
    them in order (3 or 4 gaps instead of up to 8; it assumes power grows with the gap, which
    holds up to the simulation's noise), for callers that must be quick (the leaderboard)."""
    tried: dict[float, float] = {}

    def detected(gap: float) -> bool:
        tried[gap] = detection_power(y, subjects, gap, n_sim=n_sim, n_boot=n_boot, seed=seed)
        return tried[gap] >= power

    if not bisect:
        return next((gap for gap in GAPS if detected(gap)), float("nan")), tried
    low, high = -1, len(GAPS)  # GAPS[high] detected (len: none so far), GAPS[low] not
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if detected(GAPS[mid]) else (mid, high)
    return (GAPS[high] if high < len(GAPS) else float("nan")), tried


@functools.lru_cache(maxsize=256)
def _cached_gap(y: tuple[int, ...], subjects: tuple[str, ...], n_sim: int, n_boot: int, seed: int) -> float:
    return smallest_detectable_gap(np.asarray(y), np.asarray(subjects), n_sim=n_sim, n_boot=n_boot, seed=seed,
                                   bisect=True)[0]


def detectable_gap(y, subjects, *, n_sim: int = 40, n_boot: int = 200, seed: int = 0) -> float:
    """The smallest AUC gap of :data:`GAPS` detected at 80 % power on binary labels ``y`` of the
    examples of ``subjects`` (NaN: none of them), by bisection with few replicates; remembered per
    process, so a board rendered several times (or many tasks sharing one split) simulates once."""
    return _cached_gap(tuple(int(v) for v in np.asarray(y).ravel()), tuple(map(str, subjects)), n_sim, n_boot, seed)


@dataclass(frozen=True)
class TaskPower:
    task: str
    counts: SplitCounts
    gap: float | None           # smallest detectable AUC gap at 80 % power (None: not a classification)
    proxy: str = ""             # how a multi-class task was reduced to a binary one


def task_power(spec, cohort, split_path: Path, *, n_sim: int = 100, seed: int = 0) -> TaskPower:
    """Counts and detectable AUC gap of one task on ``cohort`` with the split file at ``split_path``."""
    from bench.runner import examples_with_split

    examples, _ = examples_with_split(spec, cohort, split_path)
    table = examples.table
    c = counts(table, spec.label.classes or ())
    if not spec.target.has_classes or "y" not in table.columns:
        return TaskPower(spec.name, c, None)
    test = table[table["split"] == "test"]
    # the largest label is the positive class, as in bench.metrics.auc; a multi-class task is
    # reduced to its last class (e.g. AD) against the rest
    y = (test["y"].to_numpy() == test["y"].max()).astype(int)
    proxy = ""
    if test["y"].nunique() != 2:
        proxy = f"{spec.label.classes[-1] if spec.label.classes else 'last class'} vs rest"
    if y.min() == y.max():
        return TaskPower(spec.name, c, float("nan"), proxy)
    gap, _ = smallest_detectable_gap(y, test["participant_id"].to_numpy(), n_sim=n_sim, seed=seed)
    return TaskPower(spec.name, c, gap, proxy)
