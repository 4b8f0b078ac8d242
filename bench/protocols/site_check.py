"""The site protocol's numbers, and ``bench verify``'s recomputation of them from a record's kept rows.

Both sides call the same functions (:func:`site_decodability`, the task's
:func:`~bench.protocols.context.score_predictions`) on the same values: the protocol rounds every
prediction to 6 decimals before it computes anything and keeps exactly those values, and every
interval is a subject bootstrap with the score's seed and the record's replicate count, so the
recomputation is exact and any difference means the record was edited. The ``site`` rows are
out-of-fold predictions on the task's *training* subjects (their ``split`` reads ``test`` only
because a score's split must be an evaluation split): they must be subjects of the split file that
are neither test nor external. The ``full`` rows are the task's own evaluation examples, held to the
committed label digest like any other record's (:func:`bench.leaderboard.verify_examples.check_examples`).
"""

from __future__ import annotations

import numpy as np

from bench import metrics as M

#: Setting of the site decoder's out-of-fold predictions (the headline) and of the task's own probe.
SITE, FULL = "site", "full"
#: The headline metric, and whether higher is better (it is not: less site in the embedding).
METRIC = "site_balanced_accuracy"


def site_decodability(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, n_boot: int,
                      seed: int) -> dict:
    """Balanced accuracy of out-of-fold site predictions (class probabilities; the argmax is the
    predicted site) with its subject-bootstrap 95 % interval, as a record's CI entry."""
    from bench.protocols.context import finite_or_none

    ci = M.bootstrap_ci("balanced_accuracy", np.asarray(y_true).astype(int), np.asarray(y_pred, dtype=float),
                        n_boot=n_boot, seed=seed, groups=groups)
    return {"point": finite_or_none(ci["point"]), "low": finite_or_none(ci["low"]),
            "high": finite_or_none(ci["high"]), "se": finite_or_none(ci["se"]), "n": int(ci["n"])}


def chance(n_sites: int) -> float:
    """Balanced accuracy of a decoder that knows nothing: one over the number of sites."""
    return 1.0 / n_sites


def recompute(score, rows: list[dict], spec, n_boot: int) -> dict[str, dict]:
    """Every metric of one (setting, seed, split) block from its kept rows, as the protocol computed it."""
    from bench.protocols.context import score_predictions

    groups = np.array([str(r["participant_id"]) for r in rows])
    y_pred = np.array([r["y_pred"] for r in rows], dtype=float)
    y_true = np.array([r["y_true"] for r in rows], dtype=float)
    if score.setting == SITE:
        return {METRIC: site_decodability(y_true, y_pred, groups, n_boot, score.seed)}
    _, cis = score_predictions(spec, y_true, y_pred, groups, n_boot, score.seed)
    return cis


def _subject_problem(score, rows: list[dict], split_subjects: dict[str, set[str]] | None) -> str | None:
    """Site rows name training subjects (in the split file, not test / external); task rows the split's."""
    if split_subjects is None:
        return None
    where = f"{score.setting} / seed {score.seed} / {score.split}"
    named = {str(r["participant_id"]) for r in rows}
    if score.setting == SITE:
        evaluated = split_subjects.get("test", set()) | split_subjects.get("external", set())
        outside = sorted((named - split_subjects.get("all", set())) | (named & evaluated))
        what = "that are not training subjects of the split file"
    else:
        outside = sorted(named - split_subjects.get(score.split, set()))
        what = f"outside the split file's {score.split} split"
    return f"{where}: predictions name {len(outside)} subject(s) {what}, e.g. {outside[0]}" if outside else None


def _chance_problem(score, rows: list[dict]) -> str | None:
    """The recorded chance level and site list are those of the rows' sites."""
    from bench.leaderboard.verify import close

    sites = score.params.get("sites")
    n_classes = len({int(r["y_true"]) for r in rows})
    width = {len(r["y_pred"]) for r in rows}
    if not isinstance(sites, list) or width != {len(sites)} or not close(score.params.get("chance"), chance(n_classes)):
        return (f"site / seed {score.seed}: chance {score.params.get('chance')} is not one over the "
                f"{n_classes} sites its rows hold: the record was edited")
    return None


def _block_problem(score, rows: list[dict], spec, n_boot: int, split_subjects) -> str | None:
    from bench.leaderboard.verify import close

    where = f"{score.setting} / seed {score.seed} / {score.split}"
    try:
        problem = _subject_problem(score, rows, split_subjects) or (
            _chance_problem(score, rows) if score.setting == SITE else None)
        fresh = recompute(score, rows, spec, n_boot)
    except (KeyError, TypeError, ValueError, IndexError):
        return f"predictions for {where} are malformed"
    if problem:
        return problem
    for name, value in score.metrics.items():
        got, ci = fresh.get(name), score.ci.get(name)
        if got is None or not close(value, got["point"]):
            return (f"{name} {value} at {where} is not what its predictions give ({got and got['point']}): "
                    "the record was edited")
        if ci is None or not (close(ci.low, got["low"]) and close(ci.high, got["high"])):
            return f"{name} interval at {where} is not its subject bootstrap (seed {score.seed}, {n_boot} replicates)"
    return None


def _shape_problem(record, blocks: dict) -> str | None:
    """Every kept block has a score, every score is one of the protocol's settings with its rows."""
    keys = {(s.setting, s.seed, s.split) for s in record.scores}
    extra = sorted(set(blocks) - keys)
    if extra:
        return f"predictions for {extra[0][0]} / seed {extra[0][1]} / {extra[0][2]} have no score entry"
    if not any(s.setting == SITE for s in record.scores):
        return "a site record without its site scores: the record was edited"
    for score in record.scores:
        if score.setting not in (SITE, FULL) or (score.setting == SITE and score.split != "test"):
            return f"setting '{score.setting}' on {score.split} is not one of the site protocol's"
        rows = blocks.get((score.setting, score.seed, score.split), [])
        ids = {str(r.get("example_id")) for r in rows}
        if len(rows) != score.n_examples or len(ids) != len(rows) \
                or len({str(r.get("participant_id")) for r in rows}) != score.n_subjects:
            return (f"{score.setting} / seed {score.seed} / {score.split}: {score.n_examples} examples recorded "
                    f"but {len(rows)} kept (or repeated): the record was edited")
    return None


def check_scores(record, split_subjects: dict[str, set[str]] | None) -> list[str]:
    """Problems of a site record's scores against its kept predictions (empty: they hold)."""
    from bench.leaderboard.verify import prediction_blocks
    from bench.tasks import list_tasks

    blocks = prediction_blocks(record)
    if blocks is None:
        return ["a prediction lacks setting / seed / split: the record was edited"]
    problem = _shape_problem(record, blocks)
    if problem:
        return [problem]
    spec = list_tasks()[record.task]
    n_boot = int(record.provenance.config.get("n_boot", 0) or 0)
    for score in record.scores:
        problem = _block_problem(score, blocks[(score.setting, score.seed, score.split)], spec, n_boot, split_subjects)
        if problem:
            return [problem]
    return _example_problems(record, blocks, spec, split_subjects)


def _example_problems(record, blocks: dict, spec, split_subjects) -> list[str]:
    """The task rows are the task's evaluation examples with their committed labels (as for any record)."""
    from bench.leaderboard.verify_examples import check_examples
    from bench.protocols import get_protocol

    if split_subjects is None:  # the split file could not be read: that problem is already reported
        return []
    full = {key: rows for key, rows in blocks.items() if key[0] == FULL}
    return check_examples(full, spec, spec.split_path(record.provenance.cohort.name), get_protocol(record.protocol))
