"""Ranks with ties: rank groups from a paired bootstrap over the same test subjects.

A difference of 0.01 AUC on 20 test subjects is noise, so the board does not give the two
encoders different ranks unless the data separate them. The rule, applied within one table
(same task version, cohort and protocol):

1. Order the entries by their main score, best first (ties in the point score by encoder name,
   so the order is deterministic); entries without a score go last, unranked.
2. The best entry not yet grouped is the **leader** of a new rank group. Every other ungrouped
   entry joins the leader's group unless it is **separable** from the leader.
3. Repeat 2 with the remaining entries. A group's rank is 1 + the number of entries in better
   groups (competition ranking: two entries tied for first are both 1, the next is 3).

**Separable** means: with both entries' per-subject test predictions at the headline setting
aligned on the same examples, ``B = n_boot`` bootstrap replicates resample *subjects* (all of a
subject's examples together) with one set of draws shared by the two entries
(``numpy.random.default_rng(seed)``), each entry's score on a replicate is its metric averaged
over its seeds, and delta* = score(leader) - score(other), signed so that positive favours the
leader. The two-sided p-value is ``min(1, 2 * min(P(delta* <= 0), P(delta* >= 0)))`` (as
:func:`bench.metrics.paired_bootstrap`), replicates where the metric is undefined are dropped,
and the entry is separable when ``p < alpha`` (0.05) and the point difference favours the
leader. When the two entries have no predictions on the same examples (``--no-predictions``,
another cohort's subjects) the paired test is impossible and the rule falls back to the
conservative CI check: separable only if the two 95 % CIs do not overlap; an entry with neither
predictions nor a CI cannot be separated and joins the group.

Only the leader is tested against, so groups do not chain: C may be inseparable from B and
still land in a worse group than B when it is separable from B's leader A.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from bench.leaderboard.entries import Entry

#: Significance level of the tie test.
ALPHA = 0.05


@dataclass(frozen=True)
class Comparison:
    """How an entry was compared with its group's leader."""

    leader: str
    method: Literal["paired_bootstrap", "ci_overlap", "untestable"]
    delta: float | None          # leader - entry, positive favours the leader
    p_value: float | None        # paired bootstrap only
    separable: bool
    n_subjects: int | None = None


@dataclass(frozen=True)
class Ranked:
    """An entry with its rank (competition rank of its group), group number and comparison."""

    entry: Entry
    rank: int | None
    group: int | None
    comparison: Comparison | None   # with its group's leader; None for a leader and for unranked entries
    vs_best: Comparison | None = None  # with the best entry (the first group's leader), for display


@dataclass(frozen=True)
class _Aligned:
    example_ids: tuple[str, ...]
    subjects: np.ndarray
    y_true: np.ndarray
    preds: tuple[np.ndarray, ...]    # one array per seed, rows in example_ids order


def _oriented(a: float, b: float, higher_is_better: bool) -> float:
    """a - b, signed so that positive means a is better."""
    return a - b if higher_is_better else b - a


def sort_key(entry: Entry) -> tuple:
    """Best first, unscored last, equal scores by encoder name."""
    r = entry.record
    if entry.score is None:
        return (1, 0.0, entry.encoder)
    return (0, -entry.score if r.higher_is_better else entry.score, entry.encoder)


def aligned_predictions(entry: Entry) -> _Aligned | None:
    """The entry's headline test predictions per seed, aligned by example; None if unusable."""
    r = entry.record
    by_seed: dict[int, dict[str, dict]] = defaultdict(dict)
    for p in r.predictions or []:
        if p.get("setting") == r.headline_setting and p.get("split") == "test":
            by_seed[int(p["seed"])][str(p["example_id"])] = p
    if not by_seed:
        return None
    ids = tuple(sorted(next(iter(by_seed.values()))))
    if any(tuple(sorted(rows)) != ids for rows in by_seed.values()):
        return None
    first = next(iter(by_seed.values()))
    y_true = np.asarray([first[i]["y_true"] for i in ids], dtype=float)
    if any(not np.array_equal(np.asarray([rows[i]["y_true"] for i in ids], dtype=float), y_true)
           for rows in by_seed.values()):
        return None
    preds = tuple(np.asarray([by_seed[s][i]["y_pred"] for i in ids], dtype=float) for s in sorted(by_seed))
    subjects = np.asarray([str(first[i]["participant_id"]) for i in ids])
    return _Aligned(ids, subjects, y_true, preds)


def _metric_params(entry: Entry) -> dict | None:
    """The keyword arguments the task gives its main metric (a survival horizon is Uno's tau), so the
    paired test scores what the records scored; None when the task is not here at that version."""
    record = entry.record
    return _task_metric_params(record.task, record.task_version, record.main_score_name)


@lru_cache(maxsize=None)
def _task_metric_params(task: str, version: int, metric: str) -> dict | None:
    from bench.errors import MribenchError
    from bench.tasks import get_task

    try:
        spec = get_task(task)
    except MribenchError:
        return None
    return spec.target.metric_params(spec).get(metric) if spec.version == version else None


def paired_delta(leader: Entry, other: Entry, *, n_boot: int, seed: int) -> tuple[np.ndarray, int] | None:
    """Bootstrap replicates of score(leader) - score(other) (positive favours the leader), and the
    number of subjects resampled; None when the two were not scored on the same examples."""
    from bench.metrics import boot_scores, replicates, subject_index

    a, b = aligned_predictions(leader), aligned_predictions(other)
    if a is None or b is None or a.example_ids != b.example_ids or not np.array_equal(a.y_true, b.y_true):
        return None
    metric = leader.record.main_score_name
    params = _metric_params(leader)
    members = subject_index(a.subjects, len(a.example_ids))
    draws = replicates(len(members), n_boot, seed)

    def replicate_scores(al: _Aligned) -> np.ndarray:
        per_seed = np.stack([boot_scores(metric, al.y_true, pred, draws, members, params) for pred in al.preds])
        return per_seed.mean(axis=0)  # NaN in any seed -> NaN -> the replicate is dropped

    delta = _oriented(replicate_scores(a), replicate_scores(b), leader.record.higher_is_better)
    return delta[np.isfinite(delta)], len(members)


def compare(leader: Entry, other: Entry, *, n_boot: int = 1000, seed: int = 0, alpha: float = ALPHA) -> Comparison:
    """Is ``other`` separable from ``leader``? (the rule in the module docstring)."""
    hib = leader.record.higher_is_better
    point = None if other.score is None or leader.score is None else _oriented(leader.score, other.score, hib)
    paired = paired_delta(leader, other, n_boot=n_boot, seed=seed)
    if paired is not None and len(paired[0]):
        delta, n = paired
        p = float(min(1.0, 2 * min(np.mean(delta <= 0), np.mean(delta >= 0))))
        return Comparison(leader.encoder, "paired_bootstrap", point, p,
                          bool(p < alpha and point is not None and point > 0), n)
    (lo_a, hi_a), (lo_b, hi_b) = leader.ci, other.ci
    if None in (lo_a, hi_a, lo_b, hi_b):
        return Comparison(leader.encoder, "untestable", point, None, False)
    apart = hi_b < lo_a if hib else lo_b > hi_a
    return Comparison(leader.encoder, "ci_overlap", point, None, bool(apart))


def rank_entries(entries: list[Entry], *, n_boot: int = 1000, seed: int = 0, alpha: float = ALPHA) -> list[Ranked]:
    """Rank groups of one table's entries (same task version, cohort, protocol), best first."""
    keys = {(e.table_key, e.protocol) for e in entries}
    if len(keys) > 1:
        raise ValueError(f"rank_entries needs one task/cohort/protocol, got {sorted(keys)}")
    ordered = sorted(entries, key=sort_key)
    scored = [e for e in ordered if e.score is not None]
    out: list[Ranked] = []
    remaining = list(scored)
    vs_best: dict[int, Comparison] = {}
    group = 0
    while remaining:
        group += 1
        leader, rest = remaining[0], remaining[1:]
        rank = len(out) + 1
        members = [Ranked(leader, rank, group, None, vs_best.get(id(leader)))]
        left = []
        for other in rest:
            c = compare(leader, other, n_boot=n_boot, seed=seed, alpha=alpha)
            if group == 1:
                vs_best[id(other)] = c
            if c.separable:
                left.append(other)
            else:
                members.append(Ranked(other, rank, group, c, vs_best.get(id(other))))
        out += members
        remaining = left
    out += [Ranked(e, None, None, None) for e in ordered if e.score is None]
    return out
