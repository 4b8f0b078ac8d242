"""The intervals a record claims, held against what its predictions give.

The board prints each record's headline interval and builds its verdicts on the standard errors
beside it, so an interval is as much a claim as a score: ``[0.97, 0.99]`` written over any AUC, or
``[NaN, Infinity]``, must not verify. Two checks (:func:`check_intervals`):

* **every** interval of the record is an interval of its score: finite numbers, ``low <= high``,
  ``point`` equal to the score it is the interval of, ``se >= 0``, ``n`` the number of subjects
  scored (cheap; all of a record's intervals, 17,000 on the committed board);
* the **headline** intervals (the main metric at the protocol's headline setting, every seed: what
  the board shows) are recomputed from the stored predictions with the record's bootstrap seed
  (the score's seed, as :func:`bench.protocols.context.score_predictions` draws them) and replicate
  count (``provenance.config.n_boot``).

Predictions are stored rounded to 6 decimals, so the recomputation brackets each bootstrap
replicate between its value with every rounding tie broken against the truth and for it (or, for
MAE and Pearson's r, the rounding step's largest effect; :mod:`bench.leaderboard.rounding`); a
percentile of the replicates then lies between the percentiles of the two brackets, and the stored
bound must lie there. The recomputation is cached on disk by a digest of everything it reads
(predictions, labels, subjects, metric, seed, replicate count), so a second ``bench verify`` of an
unchanged record costs a file read.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np

from bench.leaderboard.rounding import ROUNDING, nudge_toward_truth

#: Two-sided level of every interval the harness writes (``bench.metrics.bootstrap_ci``'s alpha).
ALPHA = 0.05
#: Float noise allowed beyond the bracket the rounding gives.
CI_TOLERANCE = 1e-6
#: Format tag of the cache entries (bump when the recomputation changes).
CACHE_FORMAT = "mribench-ci-range/1"


@dataclass(frozen=True)
class Bracket:
    """The range each of (low, high, se) may take given the rounded predictions."""

    low: tuple[float, float]
    high: tuple[float, float]
    se: tuple[float, float]

    def problem(self, low: float, high: float, se: float | None) -> str | None:
        """Which stored value lies outside its bracket (None when all are inside)."""
        for what, value, (a, b) in (("low", low, self.low), ("high", high, self.high), ("se", se, self.se)):
            if value is None:
                continue
            slack = CI_TOLERANCE * max(1.0, abs(a), abs(b))
            if not a - slack <= value <= b + slack:
                return f"{what} {value:.6g} (its predictions give {_span(a, b)})"
        return None


def _span(a: float, b: float) -> str:
    return f"{a:.6g}" if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) else f"{a:.6g} to {b:.6g}"


def check_intervals(record, blocks: dict[tuple[str, int, str], list[dict]],
                    params: dict[str, dict] | None) -> list[str]:
    """Problems with the record's intervals: the shape of every one, then the headline ones
    recomputed from the prediction ``blocks`` (by setting, seed and split) when every interval has a
    sane shape."""
    problems = _shape_problems(record)
    return problems or _headline_problems(record, blocks, params or {})


# ------------------------------------------------------------------------------------------ shape


def _shape_problems(record) -> list[str]:
    for s in record.scores:
        where = f"{s.setting} / seed {s.seed} / {s.split}"
        for name, ci in s.ci.items():
            numbers = {"point": ci.point, "low": ci.low, "high": ci.high, "se": ci.se}
            bad = [k for k, v in numbers.items() if v is not None and not math.isfinite(v)]
            if bad:
                return [f"the {name} interval at {where} has a non-finite {bad[0]} ({numbers[bad[0]]}): "
                        "the record was edited"]
            score = s.metrics.get(name)
            if (ci.point is None) != (score is None) or (score is not None and not math.isclose(
                    ci.point, score, rel_tol=1e-9, abs_tol=1e-9)):
                return [f"the {name} interval at {where} is around {ci.point}, not its score {score}: "
                        "the record was edited"]
            if ci.low is not None and ci.high is not None and ci.low > ci.high:
                return [f"the {name} interval at {where} runs from {ci.low} down to {ci.high}: the record was edited"]
            if ci.se is not None and ci.se < 0:
                return [f"the {name} interval at {where} has a negative standard error: the record was edited"]
            if ci.n != s.n_subjects:
                return [f"the {name} interval at {where} resamples {ci.n} subjects but {s.n_subjects} were "
                        "scored: the record was edited"]
    return []


# --------------------------------------------------------------------------------------- headline


def _headline_problems(record, groups: dict[tuple[str, int, str], list[dict]],
                       params: dict[str, dict]) -> list[str]:
    from bench.protocols import get_protocol

    n_boot = record.provenance.config.get("n_boot")
    if not isinstance(n_boot, int) or isinstance(n_boot, bool) or not 1 < n_boot <= 100_000:
        return [f"provenance.config.n_boot is {n_boot!r}, not a replicate count: the intervals cannot be "
                "recomputed"]
    name = record.main_score_name
    for s in get_protocol(record.protocol).headline_rows(record.scores):
        ci, rows = s.ci.get(name), groups.get((s.setting, s.seed, s.split))
        if ci is None or rows is None or ci.low is None or ci.high is None:
            continue
        bracket = recomputed_bracket(name, rows, n_boot, s.seed, params.get(name))
        if bracket is None:
            return [f"the {name} interval at {s.setting} / seed {s.seed} / {s.split} is [{ci.low:.6g}, "
                    f"{ci.high:.6g}] but its predictions give no interval: the record was edited"]
        problem = bracket.problem(ci.low, ci.high, ci.se)
        if problem:
            return [f"the {name} interval at {s.setting} / seed {s.seed} / {s.split} is not what its "
                    f"predictions give with bootstrap seed {s.seed} and {n_boot} replicates: {problem}; "
                    "the record was edited"]
    return []


def recomputed_bracket(metric: str, rows: list[dict], n_boot: int, seed: int,
                       params: dict | None) -> Bracket | None:
    """The bracket of (low, high, se) for ``metric`` on these prediction rows, from the disk cache
    when this exact computation was done before; None where no replicate is defined."""
    y_true = np.asarray([r["y_true"] for r in rows], dtype=float)
    y_pred = np.asarray([r["y_pred"] for r in rows], dtype=float)
    subjects = np.asarray([str(r["participant_id"]) for r in rows])
    key = _cache_key(metric, y_true, y_pred, subjects, n_boot, seed, params)
    cached = _read_cache(key)
    if cached is not None:
        return cached if cached != "none" else None
    bracket = _bracket(metric, y_true, y_pred, subjects, n_boot, seed, params)
    _write_cache(key, bracket)
    return bracket


def _bracket(metric: str, y_true: np.ndarray, y_pred: np.ndarray, subjects: np.ndarray, n_boot: int,
             seed: int, params: dict | None) -> Bracket | None:
    from bench.metrics import boot_scores, replicates, subject_index

    members = subject_index(subjects, len(y_true))
    if len(members) < 2:
        return None
    draws = replicates(len(members), n_boot, seed)
    plain = boot_scores(metric, y_true, y_pred, draws, members, params)
    if metric in ("mae", "pearson_r"):
        slack = ROUNDING if metric == "mae" else _pearson_slack(y_pred)
        below, above = plain - slack, plain + slack
        variants = [plain]
    else:
        nudge = nudge_toward_truth(metric, y_true, y_pred)
        variants = [plain] + ([boot_scores(metric, y_true, y_pred + d, draws, members, params)
                               for d in (nudge, -nudge)] if np.any(nudge) else [])
        stacked = np.vstack(variants)
        below, above = stacked.min(axis=0), stacked.max(axis=0)
    ok = np.isfinite(below) & np.isfinite(above)
    if not ok.any():
        return None
    q = [ALPHA / 2, 1 - ALPHA / 2]
    (low_a, high_a), (low_b, high_b) = np.quantile(below[ok], q), np.quantile(above[ok], q)
    ses = [float(v[np.isfinite(v)].std(ddof=1)) for v in variants if np.isfinite(v).sum() > 1]
    spread = float(np.max(above[ok] - below[ok]))  # a replicate moves at most this much
    se = (min(ses) - spread, max(ses) + spread) if ses else (0.0, math.inf)
    return Bracket((float(low_a), float(low_b)), (float(high_a), float(high_b)), se)


def _pearson_slack(y_pred: np.ndarray) -> float:
    """Largest change of a replicate's Pearson r that rounding can make: twice the whole sample's
    bound (:func:`bench.leaderboard.rounding.metric_range`), as a replicate's predictions vary a
    little less than the sample's."""
    spread = float(np.linalg.norm(y_pred - y_pred.mean())) if y_pred.size else 0.0
    return 4.0 * ROUNDING * math.sqrt(len(y_pred)) / spread if spread > 0 else 2.0


# ------------------------------------------------------------------------------------------ cache


def _cache_key(metric: str, y_true: np.ndarray, y_pred: np.ndarray, subjects: np.ndarray, n_boot: int,
               seed: int, params: dict | None) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_FORMAT, metric, n_boot, seed, ALPHA, params or {}, list(y_true.shape),
                         list(y_pred.shape)], sort_keys=True, default=str).encode())
    for array in (y_true, y_pred):
        h.update(np.ascontiguousarray(array, dtype="<f8").tobytes())
    h.update("\n".join(subjects.tolist()).encode("utf-8"))
    return h.hexdigest()


def _cache_path(key: str):
    from bench.paths import cache_home

    return cache_home() / "verify-intervals" / key[:2] / f"{key}.json"


def _read_cache(key: str) -> Bracket | str | None:
    path = _cache_path(key)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != CACHE_FORMAT:
            return None
        if data.get("bracket") is None:
            return "none"
        b = data["bracket"]
        return Bracket(tuple(b["low"]), tuple(b["high"]), tuple(b["se"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: recompute


def _write_cache(key: str, bracket: Bracket | None) -> None:
    from bench.atomic import atomic_write_bytes

    body = None if bracket is None else {"low": bracket.low, "high": bracket.high,
                                         "se": [bracket.se[0], bracket.se[1] if math.isfinite(bracket.se[1]) else 1e300]}
    path = _cache_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps({"format": CACHE_FORMAT, "bracket": body}).encode("utf-8"))
    except OSError:
        pass  # a read-only cache only costs the recomputation next time
