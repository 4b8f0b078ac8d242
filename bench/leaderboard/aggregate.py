"""Across tasks: Borda count, mean rank, and a Friedman / Nemenyi critical-difference summary.

Per-task ranks come from :mod:`bench.leaderboard.ranking` under each task's headline protocol
(the spec's ``headline``, linear probe by default), within one cohort.

* **Borda**: on each task an encoder scores one point per *complete* encoder in a strictly
  worse rank group (tied encoders score nothing against each other); the Borda count is the
  sum over tasks. An encoder is complete when it has a score on every task of the board;
  one that lacks a task has no Borda count (null), because points earned against different
  sets of opponents are not comparable.
* **Mean rank**: the mean of the encoder's per-task ranks over the tasks it has (shown with
  how many that is).
* **Critical difference** (Demsar 2006): complete encoders are ranked on each task by point
  score (average ranks for exact ties), the Friedman test asks whether any mean rank differs,
  and the Nemenyi critical difference ``CD = q_alpha sqrt(k (k + 1) / (6 N))`` (``q_alpha``
  the studentised range quantile over sqrt 2, k encoders, N tasks) says which pairs of mean
  ranks are further apart than chance allows. With fewer than two tasks or two complete
  encoders nothing is computed, and with few tasks the result is flagged as rough: the
  chi-square approximation wants N of about 10 or more, and when CD > k - 1 no pair can
  ever differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bench.leaderboard.ranking import Ranked

#: Fewer tasks than this and the Friedman / Nemenyi numbers are shown as descriptive only.
MIN_TASKS_FOR_INFERENCE = 10


@dataclass(frozen=True)
class OverallRow:
    encoder: str
    ranks: dict[str, int | None]        # task -> rank (None where the encoder lacks the task)
    borda: int | None
    mean_rank: float | None
    n_tasks: int


@dataclass
class CriticalDifference:
    """Friedman test and Nemenyi CD over complete encoders; ``note`` says what holds back."""

    encoders: list[str] = field(default_factory=list)
    mean_ranks: dict[str, float] = field(default_factory=dict)
    n_tasks: int = 0
    chi2: float | None = None
    p_value: float | None = None
    cd: float | None = None
    alpha: float = 0.05
    different: list[tuple[str, str]] = field(default_factory=list)
    computed: bool = False
    note: str = ""


def overall(tables: dict[str, list[Ranked]]) -> list[OverallRow]:
    """Borda / mean rank per encoder from per-task rankings (task -> ranked rows), best first."""
    tasks = sorted(tables)
    encoders = sorted({r.entry.encoder for rows in tables.values() for r in rows})
    rank = {(t, r.entry.encoder): r.rank for t, rows in tables.items() for r in rows}
    complete = [e for e in encoders if all(rank.get((t, e)) is not None for t in tasks)]
    rows = []
    for e in encoders:
        ranks = {t: rank.get((t, e)) for t in tasks}
        have = [v for v in ranks.values() if v is not None]
        borda = None
        if e in complete:
            borda = sum(sum(1 for o in complete if rank[(t, o)] > rank[(t, e)]) for t in tasks)
        rows.append(OverallRow(e, ranks, borda, float(np.mean(have)) if have else None, len(have)))
    return sorted(rows, key=lambda r: (r.borda is None, -(r.borda or 0),
                                       math.inf if r.mean_rank is None else r.mean_rank, r.encoder))


def nemenyi_q(k: int, alpha: float = 0.05) -> float:
    """Nemenyi's q_alpha: the studentised range quantile for k groups, infinite df, over sqrt 2."""
    from scipy.stats import studentized_range

    return float(studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))


def _score_ranks(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(-values if higher_is_better else values, method="average")


def critical_difference(tables: dict[str, list[Ranked]], alpha: float = 0.05) -> CriticalDifference:
    """Friedman / Nemenyi summary over the tasks of ``tables`` (task -> ranked rows)."""
    from scipy.stats import chi2

    out = CriticalDifference(alpha=alpha)
    tasks = sorted(tables)
    scores = {(t, r.entry.encoder): r.entry.score for t, rows in tables.items() for r in rows}
    direction = {t: rows[0].entry.record.higher_is_better for t, rows in tables.items() if rows}
    encoders = sorted({e for (_, e) in scores})
    complete = [e for e in encoders if all(scores.get((t, e)) is not None for t in tasks)]
    out.encoders, out.n_tasks = complete, len(tasks)
    if len(tasks) < 2:
        out.note = (f"not computed: a critical-difference summary needs at least 2 tasks, the board has "
                    f"{len(tasks)}; read the per-task rank groups instead")
        return out
    if len(complete) < 2:
        out.note = ("not computed: needs at least 2 encoders with a score on every task, the board has "
                    f"{len(complete)}")
        return out
    k, n = len(complete), len(tasks)
    ranks = np.stack([_score_ranks(np.array([scores[(t, e)] for e in complete], float), direction[t])
                      for t in tasks])                     # (N tasks, k encoders)
    mean = ranks.mean(axis=0)
    out.mean_ranks = {e: float(m) for e, m in zip(complete, mean)}
    stat = 12 * n / (k * (k + 1)) * (np.sum(mean ** 2) - k * (k + 1) ** 2 / 4)
    out.chi2 = float(stat)
    out.p_value = float(chi2.sf(stat, k - 1))
    out.cd = float(nemenyi_q(k, alpha) * math.sqrt(k * (k + 1) / (6 * n)))
    out.different = [(a, b) for i, a in enumerate(complete) for b in complete[i + 1:]
                     if abs(out.mean_ranks[a] - out.mean_ranks[b]) > out.cd]
    out.computed = True
    notes = []
    if n < MIN_TASKS_FOR_INFERENCE:
        notes.append(f"only {n} tasks: the Friedman chi-square approximation and the Nemenyi CD are rough "
                     f"here (they want about {MIN_TASKS_FOR_INFERENCE} or more); read them as descriptive")
    if out.cd > k - 1:
        notes.append(f"CD {out.cd:.2f} exceeds the largest possible mean-rank gap (k - 1 = {k - 1}), so no "
                     "pair can be declared different with this few tasks")
    out.note = "; ".join(notes)
    return out
