"""Across tasks: mean rank with coverage, and a Friedman / Nemenyi test over the encoders it can measure.

Per-task ranks come from :mod:`bench.leaderboard.ranking` under each task's headline protocol
(the spec's ``headline``, linear probe by default), within one cohort. Only tasks whose spec
says ``ranking: true`` (the default) count; sanity checks (``ranking: false``) are named and left out.

* **Mean rank**: the mean of the encoder's per-task ranks over the ranking tasks it has, with how
  many that is (its coverage); the table is sorted by it.
* **Who the overall test measures**: a test of "do the encoders differ" must not be driven by a
  ceiling or count one network twice. Left out, each named with the reason: ceilings (an encoder
  that reads the ground truth: card ``ssl_method`` ``oracle``), aliases (an encoder whose
  headline predictions are identical to another's on every single-scan task both have: the same
  network under two names; the first name is kept), and encoders with fewer than half of the
  ranking tasks. The test runs on the ranking tasks every remaining encoder has.
* **Critical difference** (Demsar 2006): those encoders are ranked on each of those tasks by
  point score (average ranks for exact ties), the Friedman test asks whether any mean rank
  differs, and the Nemenyi critical difference ``CD = q_alpha sqrt(k (k + 1) / (6 N))``
  (``q_alpha`` the studentised range quantile over sqrt 2, k encoders, N tasks) says which pairs
  of mean ranks are further apart than chance allows. With fewer than two tasks or two encoders
  nothing is computed, and with few tasks the result is flagged as rough: the chi-square
  approximation wants N of about 10 or more, and when CD > k - 1 no pair can ever differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bench.leaderboard.entries import Entry
from bench.leaderboard.ranking import Ranked, aligned_predictions

#: Fewer tasks than this and the Friedman / Nemenyi numbers are shown as descriptive only.
MIN_TASKS_FOR_INFERENCE = 10
#: Card ``ssl_method`` values of encoders that read the truth: shown, never tested against.
CEILING_METHODS = ("oracle",)


@dataclass(frozen=True)
class OverallRow:
    encoder: str
    ranks: dict[str, int | None]        # task -> rank (None where the encoder lacks the task)
    mean_rank: float | None
    n_tasks: int
    role: str = ""                      # "ceiling", or "same network as X"


@dataclass
class CriticalDifference:
    """Friedman test and Nemenyi CD over the eligible encoders; ``note`` says what holds back."""

    encoders: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    mean_ranks: dict[str, float] = field(default_factory=dict)
    n_tasks: int = 0
    chi2: float | None = None
    p_value: float | None = None
    cd: float | None = None
    alpha: float = 0.05
    different: list[tuple[str, str]] = field(default_factory=list)
    computed: bool = False
    note: str = ""
    left_out: dict[str, str] = field(default_factory=dict)        # encoder -> why it is not tested
    tasks_left_out: dict[str, str] = field(default_factory=dict)  # task -> why it is not in the test


def is_ceiling(entry: Entry) -> bool:
    return entry.record.provenance.encoder_card.get("ssl_method") in CEILING_METHODS


def _predictions(entry: Entry) -> tuple | None:
    al = aligned_predictions(entry)
    return None if al is None else (al.example_ids, al.preds)


def _identical(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and len(a[1]) == len(b[1]) and all(np.array_equal(x, y) for x, y in zip(a[1], b[1]))


def aliases(tables: dict[str, list[Ranked]], single_scan: set[str]) -> dict[str, str]:
    """encoder -> the encoder it duplicates: identical headline predictions on every single-scan task
    (``single_scan``) where both kept predictions, at least one (sequence tasks may add per-encoder
    summaries on top of the same scan network; segmentation records keep no predictions). The
    first name in sorted order is the one kept."""
    preds = {t: {r.entry.encoder: _predictions(r.entry) for r in rows} for t, rows in tables.items()
             if t in single_scan}
    preds = {t: {e: p for e, p in rows.items() if p is not None} for t, rows in preds.items()}
    names = sorted({e for rows in preds.values() for e in rows})
    out: dict[str, str] = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if a in out or b in out:
                continue
            shared = [t for t, rows in preds.items() if a in rows and b in rows]
            if shared and all(_identical(preds[t][a], preds[t][b]) for t in shared):
                out[b] = a
    return out


def overall(tables: dict[str, list[Ranked]], roles: dict[str, str] | None = None) -> list[OverallRow]:
    """Mean rank per encoder over the ranking tasks of ``tables`` (task -> ranked rows), best first."""
    roles = roles or {}
    tasks = sorted(tables)
    encoders = sorted({r.entry.encoder for rows in tables.values() for r in rows})
    rank = {(t, r.entry.encoder): r.rank for t, rows in tables.items() for r in rows}
    rows = []
    for e in encoders:
        ranks = {t: rank.get((t, e)) for t in tasks}
        have = [v for v in ranks.values() if v is not None]
        rows.append(OverallRow(e, ranks, float(np.mean(have)) if have else None, len(have), roles.get(e, "")))
    return sorted(rows, key=lambda r: (math.inf if r.mean_rank is None else r.mean_rank, -r.n_tasks, r.encoder))


def roles(tables: dict[str, list[Ranked]], single_scan: set[str]) -> dict[str, str]:
    """encoder -> why it is not in the overall test (ceiling, alias); absent when it is."""
    out = {r.entry.encoder: "ceiling" for rows in tables.values() for r in rows if is_ceiling(r.entry)}
    for alias, kept in aliases(tables, single_scan).items():
        out.setdefault(alias, f"same network as {kept}")
    return out


def nemenyi_q(k: int, alpha: float = 0.05) -> float:
    """Nemenyi's q_alpha: the studentised range quantile for k groups, infinite df, over sqrt 2."""
    from scipy.stats import studentized_range

    return float(studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))


def _score_ranks(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(-values if higher_is_better else values, method="average")


def _eligible(tables: dict[str, list[Ranked]], left_out: dict[str, str],
              scores: dict[tuple[str, str], float]) -> tuple[list[str], list[str], dict[str, str]]:
    """(encoders, tasks, tasks left out with why) of the overall test."""
    tasks = sorted(tables)
    encoders = sorted({e for (_, e) in scores})
    have = {e: [t for t in tasks if (t, e) in scores] for e in encoders}
    chosen = [e for e in encoders if e not in left_out]
    for e in chosen:
        if 2 * len(have[e]) < len(tasks):
            left_out[e] = f"has {len(have[e])} of the {len(tasks)} ranking tasks"
    chosen = [e for e in chosen if e not in left_out]
    common = [t for t in tasks if all((t, e) in scores for e in chosen)]
    dropped = {t: f"{sum((t, e) in scores for e in chosen)} of the {len(chosen)} tested encoders have it"
               for t in tasks if t not in common}
    return chosen, common, dropped


def critical_difference(tables: dict[str, list[Ranked]], alpha: float = 0.05,
                        roles_: dict[str, str] | None = None) -> CriticalDifference:
    """Friedman / Nemenyi summary over the eligible encoders and the ranking tasks all of them have."""
    from scipy.stats import chi2

    out = CriticalDifference(alpha=alpha, left_out=dict(roles_ or {}))
    scores = {(t, r.entry.encoder): r.entry.score for t, rows in tables.items() for r in rows
              if r.rank is not None}
    direction = {t: rows[0].entry.record.higher_is_better for t, rows in tables.items() if rows}
    complete, tasks, out.tasks_left_out = _eligible(tables, out.left_out, scores)
    out.encoders, out.tasks, out.n_tasks = complete, tasks, len(tasks)
    if len(tasks) < 2:
        out.note = (f"not computed: a critical-difference summary needs at least 2 tasks that every tested "
                    f"encoder has, the board has {len(tasks)}; read the per-task rank groups instead")
        return out
    if len(complete) < 2:
        out.note = f"not computed: needs at least 2 encoders to test, the board has {len(complete)}"
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
    out.note = _caution(n, k, out.cd)
    return out


def _caution(n: int, k: int, cd: float) -> str:
    notes = []
    if n < MIN_TASKS_FOR_INFERENCE:
        notes.append(f"only {n} tasks: the Friedman chi-square approximation and the Nemenyi CD are rough "
                     f"here (they want about {MIN_TASKS_FOR_INFERENCE} or more); read them as descriptive")
    if cd > k - 1:
        notes.append(f"CD {cd:.2f} exceeds the largest possible mean-rank gap (k - 1 = {k - 1}), so no "
                     "pair can be declared different with this few tasks")
    return "; ".join(notes)
