"""``bench verify`` for reliability records: every number recomputed from the rows the record keeps.

The protocol rounds its predictions to 6 decimals before computing anything and keeps exactly those
values, and every CI is a subject bootstrap with the score's seed and the record's replicate count,
so the recomputation is exact: any difference means the record was edited. What cannot be checked
without the embeddings is whether each identification hit is right (their mean and CI are checked).
"""

from __future__ import annotations

import math
import numpy as np

from bench.reliability_stats import (IDENTIFICATION, RETEST, TRACKING, retest_metrics, stage_tracking_r,
                                     subject_bootstrap, within_subject_slope)

def recompute(setting: str, rows: list[dict], metrics: set[str], n_boot: int, seed: int) -> dict[str, dict]:
    """The metrics of one (setting, seed, split) block from its kept rows, as the protocol computed them."""
    groups = np.array([str(r["participant_id"]) for r in rows])
    y_pred = np.array([r["y_pred"] for r in rows], dtype=float)
    y_true = np.array([r["y_true"] for r in rows], dtype=float)
    if setting == RETEST:
        return retest_metrics(y_pred, y_true if "icc_gap" in metrics else None, groups, n_boot, seed)
    if setting == IDENTIFICATION:
        return {"identification": subject_bootstrap(lambda r: float(y_pred[r].mean()), groups, n_boot=n_boot,
                                                    seed=seed)}
    if "slope" in metrics:
        return {"slope": subject_bootstrap(lambda r: within_subject_slope(y_pred[r], y_true[r], groups[r]), groups,
                                           n_boot=n_boot, seed=seed)}
    return {"tracking_r": subject_bootstrap(lambda r: stage_tracking_r(y_true[r], y_pred[r]), groups,
                                            n_boot=n_boot, seed=seed)}


def _block_problem(score, rows: list[dict], n_boot: int, split_subjects: dict[str, set[str]] | None) -> str | None:
    from bench.leaderboard.verify import close

    where = f"{score.setting} / seed {score.seed} / {score.split}"
    if score.setting in (RETEST, IDENTIFICATION) and split_subjects is not None:
        outside = sorted({str(r["participant_id"]) for r in rows} - split_subjects.get(score.split, set()))
        if outside:
            return f"{where}: predictions name {len(outside)} subject(s) outside the split, e.g. {outside[0]}"
    try:
        fresh = recompute(score.setting, rows, set(score.metrics), n_boot, score.seed)
    except (KeyError, TypeError, ValueError, IndexError):
        return f"predictions for {where} are malformed"
    for name, value in score.metrics.items():
        ci = score.ci.get(name)
        got = fresh.get(name)
        if got is None or not close(value, got["point"]):
            return f"{name} {value} at {where} is not what its predictions give ({got and got['point']}): the record was edited"
        if ci is None or not (close(ci.low, got["low"]) and close(ci.high, got["high"])):
            return f"{name} interval at {where} is not its subject bootstrap (seed {score.seed}, {n_boot} replicates)"
    return None


def check_scores(record, split_subjects: dict[str, set[str]] | None) -> list[str]:
    """Problems of a reliability record's scores against its kept predictions (empty: they hold)."""
    from bench.leaderboard.verify import prediction_blocks

    blocks = prediction_blocks(record)
    if blocks is None:
        return ["a prediction lacks setting / seed / split: the record was edited"]
    n_boot = int(record.provenance.config.get("n_boot", 0) or 0)
    keys = {(s.setting, s.seed, s.split) for s in record.scores}
    extra = sorted(set(blocks) - keys)
    if extra:
        return [f"predictions for {extra[0][0]} / seed {extra[0][1]} / {extra[0][2]} have no score entry"]
    if not any(s.setting == RETEST for s in record.scores):
        return ["a reliability record without its retest scores: the record was edited"]
    for score in record.scores:
        if score.setting not in (RETEST, IDENTIFICATION, TRACKING):
            return [f"setting '{score.setting}' is not one of the reliability protocol's"]
        rows = blocks.get((score.setting, score.seed, score.split), [])
        if len(rows) != score.n_examples or len({str(r["participant_id"]) for r in rows}) != score.n_subjects:
            return [f"{score.setting} / seed {score.seed} / {score.split}: {score.n_examples} examples recorded "
                    f"but {len(rows)} kept: the record was edited"]
        problem = _block_problem(score, rows, n_boot, split_subjects)
        if problem:
            return [problem]
    return []
