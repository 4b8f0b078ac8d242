"""Ranks that follow the scores: all pairs of a table tested, Holm-adjusted, made monotone.

A difference of 0.01 AUC on 20 test subjects is noise, so the board gives two encoders
different ranks only where the data separate them, and it says how sure it is after counting
every comparison it made. The rule, within one table (same task version, cohort and protocol):

1. Order the entries by main score, best first (ties by encoder name); entries without a score,
   and entries whose predictions are constant over the task's examples ("n/a": the task does not
   apply to them), are listed last and not ranked.
2. **Every pair** of ranked entries is tested (:func:`compare`). With both entries' per-seed test
   predictions at the headline setting aligned on the same examples, ``B = n_boot`` bootstrap
   replicates resample *subjects* (a subject's examples together) with one set of draws shared by
   the table; each replicate's score is the entry's metric averaged over its seeds. The difference
   of the two point scores is tested with a Wald test: its variance is the replicates' variance
   of the difference (subjects) plus each entry's seed variance ``s^2 / S`` (training noise, 0 where
   the seeds agree), referred to Student's t with Welch-Satterthwaite degrees of freedom
   (:mod:`bench.stats`). Entries without shared predictions fall back to their 95 % intervals
   (separated only if they do not overlap) and are not part of the Holm family; with neither,
   the pair is untestable and not separated.
3. The p-values of all tested pairs of the table are **Holm-adjusted** together; a pair is
   separated when its adjusted p < alpha (0.05) and the point difference favours the better entry.
4. An entry's rank is 1 + the number of entries separated above it, then made monotone in score
   from the bottom up (an entry never ranks below a worse-scoring one): rank ``r`` says at least
   ``r - 1`` entries beat it after Holm, and equal ranks share a rank group.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations
from typing import Literal

import numpy as np

from bench.leaderboard.entries import Entry
from bench.stats import Spread, holm, wald_p

#: Significance level of the tie test, after Holm's adjustment within the table.
ALPHA = 0.05

Method = Literal["paired_bootstrap", "ci_overlap", "untestable"]


@dataclass(frozen=True)
class Comparison:
    """One entry against a better-scoring one (``against``): the test and its verdict."""

    against: str
    method: Method
    delta: float | None          # against - entry, positive favours ``against``
    p_value: float | None        # paired test, unadjusted
    p_adjusted: float | None     # Holm within the table
    separable: bool
    n_subjects: int | None = None
    seed_noise: bool = False     # training noise (seed variance) entered the test


@dataclass(frozen=True)
class Ranked:
    """An entry with its rank, rank group, and its comparison with the table's best entry."""

    entry: Entry
    rank: int | None
    group: int | None
    vs_best: Comparison | None = None   # None for the best entry and for unranked ones
    beaten_by: tuple[str, ...] = ()     # entries separated above it after Holm
    status: str = ""                    # why an entry is not ranked ("n/a (constant predictions)")


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


def constant_predictions(entry: Entry) -> bool:
    """Every seed predicts the same value for every test example: the task does not apply to the
    encoder (a ranking metric of a constant is chance by construction, not a finding)."""
    al = aligned_predictions(entry)
    if al is None or len(al.example_ids) < 2:
        return False
    return all(np.ptp(pred.reshape(len(pred), -1), axis=0).max() == 0 for pred in al.preds)


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


@dataclass
class Replicates:
    """Bootstrap replicates of each entry's seed-mean score, one set of subject draws per set of
    examples, computed once per entry (a table of n entries costs n metric passes, not n^2)."""

    n_boot: int = 1000
    seed: int = 0
    _draws: dict[tuple, tuple] = field(default_factory=dict)
    #: by ``id(entry)``, with the entry itself held so its id can never be reused for another
    _scores: dict[int, tuple[Entry, tuple | None, np.ndarray | None]] = field(default_factory=dict)

    def of(self, entry: Entry) -> tuple[tuple, np.ndarray, int] | None:
        """(example ids, seed-mean score per replicate (NaN where undefined), n subjects), or None
        when the entry kept no usable predictions."""
        from bench.metrics import boot_scores, replicates, subject_index

        key = id(entry)
        if key not in self._scores:
            al = aligned_predictions(entry)
            if al is None:
                self._scores[key] = (entry, None, None)
            else:
                ids_key = (al.example_ids, al.y_true.shape, al.y_true.tobytes())
                if ids_key not in self._draws:
                    members = subject_index(al.subjects, len(al.example_ids))
                    self._draws[ids_key] = (members, replicates(len(members), self.n_boot, self.seed))
                members, draws = self._draws[ids_key]
                metric = entry.record.main_score_name
                per_seed = np.stack([boot_scores(metric, al.y_true, pred, draws, members, _metric_params(entry))
                                     for pred in al.preds])
                self._scores[key] = (entry, ids_key, per_seed.mean(axis=0))  # NaN in any seed -> NaN
        _, ids_key, scores = self._scores[key]
        return None if ids_key is None else (ids_key, scores, len(self._draws[ids_key][0]))


def paired_spread(better: Entry, other: Entry, reps: Replicates) -> tuple[float, Spread, int] | None:
    """(point difference favouring ``better``, its spread, n subjects) for two entries scored on the
    same examples with the same labels; None otherwise (or when no replicate is defined)."""
    a, b = reps.of(better), reps.of(other)
    if a is None or b is None or a[0] != b[0] or better.score is None or other.score is None:
        return None
    hib = better.record.higher_is_better
    delta = _oriented(a[1], b[1], hib)
    delta = delta[np.isfinite(delta)]
    if len(delta) < 2:
        return None
    seeds = better.spread + other.spread
    spread = Spread(float(np.var(delta, ddof=1)), seeds.seed_var, seeds.seed_df)
    return _oriented(better.score, other.score, hib), spread, a[2]


def compare(better: Entry, other: Entry, *, n_boot: int = 1000, seed: int = 0, alpha: float = ALPHA,
            reps: Replicates | None = None) -> Comparison:
    """``other`` against ``better`` on their own (unadjusted: ``p_adjusted`` is the raw p-value and
    ``separable`` compares it with ``alpha``); :func:`rank_entries` adjusts a table's family."""
    reps = reps or Replicates(n_boot, seed)
    point = None if other.score is None or better.score is None else \
        _oriented(better.score, other.score, better.record.higher_is_better)
    paired = paired_spread(better, other, reps)
    if paired is not None:
        delta, spread, n = paired
        p = wald_p(delta, spread)
        return Comparison(better.encoder, "paired_bootstrap", delta, p, p,
                          bool(p < alpha and delta > 0), n, spread.seed_var > 0)
    (lo_a, hi_a), (lo_b, hi_b) = better.ci, other.ci
    if None in (lo_a, hi_a, lo_b, hi_b):
        return Comparison(better.encoder, "untestable", point, None, None, False)
    apart = hi_b < lo_a if better.record.higher_is_better else lo_b > hi_a
    return Comparison(better.encoder, "ci_overlap", point, None, None, bool(apart))


def _adjusted(pairs: dict[tuple[int, int], Comparison], alpha: float) -> dict[tuple[int, int], Comparison]:
    """The table's family of paired tests, Holm-adjusted together; fallbacks keep their verdict."""
    keys = [k for k, c in pairs.items() if c.p_value is not None]
    adjusted = holm([pairs[k].p_value for k in keys])
    out = dict(pairs)
    for k, p_adj in zip(keys, adjusted):
        c = pairs[k]
        out[k] = Comparison(c.against, c.method, c.delta, c.p_value, p_adj,
                            bool(p_adj is not None and p_adj < alpha and c.delta is not None and c.delta > 0),
                            c.n_subjects, c.seed_noise)
    return out


def _monotone_ranks(raw: list[int]) -> list[int]:
    """Raw ranks in score order (best first), each lowered to the best raw rank at or below it, so
    no entry ranks below a worse-scoring one."""
    out, running = [0] * len(raw), math.inf
    for i in range(len(raw) - 1, -1, -1):
        running = min(running, raw[i])
        out[i] = int(running)
    return out


def rank_entries(entries: list[Entry], *, n_boot: int = 1000, seed: int = 0, alpha: float = ALPHA,
                 reps: Replicates | None = None) -> list[Ranked]:
    """Ranks of one table's entries (same task version, cohort, protocol), best first (module rule)."""
    keys = {(e.table_key, e.protocol) for e in entries}
    if len(keys) > 1:
        raise ValueError(f"rank_entries needs one task/cohort/protocol, got {sorted(keys)}")
    reps = reps or Replicates(n_boot, seed)
    ordered = sorted(entries, key=sort_key)
    constant = {id(e) for e in ordered if e.score is not None and constant_predictions(e)}
    ranked = [e for e in ordered if e.score is not None and id(e) not in constant]
    pairs = _adjusted({(i, j): compare(ranked[i], ranked[j], n_boot=n_boot, seed=seed, alpha=alpha, reps=reps)
                       for i, j in combinations(range(len(ranked)), 2)}, alpha)
    beaten = [tuple(ranked[i].encoder for i in range(j) if pairs[(i, j)].separable) for j in range(len(ranked))]
    ranks = _monotone_ranks([1 + len(b) for b in beaten])
    groups = {r: g for g, r in enumerate(sorted(set(ranks)), start=1)}
    out = [Ranked(e, ranks[j], groups[ranks[j]], pairs.get((0, j)), beaten[j]) for j, e in enumerate(ranked)]
    out += [Ranked(e, None, None, status="n/a (constant predictions)") for e in ordered if id(e) in constant]
    return out + [Ranked(e, None, None) for e in ordered if e.score is None]
