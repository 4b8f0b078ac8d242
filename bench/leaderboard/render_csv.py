"""``leaderboard/results.csv``: one row per verified entry, every number the tables show, unrounded.

``p_vs_best`` is Holm-adjusted within the table (``p_vs_best_unadjusted`` beside it); ``ci_low`` /
``ci_high`` are the displayed interval (seed noise included where the seeds differ, ``seed_sd``).
``section`` tells the ranked tables' rows (``task``) from the unranked ``fractions`` and ``reliability`` rows (whose
``main_score`` is the test-retest ICC), the ``site`` rows (whose ``main_score`` is the site balanced accuracy;
their ``n_test_subjects`` counts the training subjects its site decoder read) and the cross-cohort transfers
(``cross_cohort``: unranked, with ``train_side`` / ``test_side``, the split the score is read on,
the in-distribution linear-probe score and the drop; empty in ``task`` rows).

Text cells that a spreadsheet would read as a formula (``=``, ``+``, ``-``, ``@``, tab, line break
first) start with an apostrophe instead (:func:`bench.leaderboard.fmt.csv_cell`)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from bench.leaderboard import fmt
from bench.leaderboard.board import Board

COLUMNS = ("cohort", "task", "task_version", "protocol", "encoder", "metric", "higher_is_better", "main_score",
           "ci_low", "ci_high", "n_test_subjects", "n_seeds", "rank", "rank_group", "tie_test", "p_vs_best",
           "p_vs_best_unadjusted", "beaten_by", "seed_sd", "status", "pretraining_overlap", "submitted", "split_sha256", "task_spec_sha256", "record", "section",
           "train_side", "test_side", "scored_split", "in_distribution_score", "drop", "drop_ci_low", "drop_ci_high")


def _entry_cells(e) -> dict[str, object]:
    """The columns every row has, from one entry."""
    prov = e.record.provenance
    low, high = e.ci
    return {"cohort": e.cohort, "task": e.task, "task_version": e.record.task_version,
            "protocol": e.protocol, "encoder": e.encoder, "metric": e.record.main_score_name,
            "higher_is_better": e.record.higher_is_better, "main_score": e.score, "ci_low": low,
            "ci_high": high, "n_test_subjects": e.n_test_subjects, "n_seeds": e.seeds, "seed_sd": e.seed_sd,
            "pretraining_overlap": bool(e.overlap), "submitted": e.submitted,
            "split_sha256": prov.split_sha256, "task_spec_sha256": prov.task_spec_sha256, "record": e.source}


def csv_rows(board: Board) -> list[dict[str, object]]:
    """The CSV's rows as dicts (empty string for a missing value)."""
    rows = []
    for table in board.tables:
        for r in table.rows:
            vs = r.vs_best
            rows.append(_entry_cells(r.entry) | {
                "rank": r.rank, "rank_group": r.group, "tie_test": "" if vs is None else vs.method,
                "p_vs_best": None if vs is None else vs.p_adjusted,
                "p_vs_best_unadjusted": None if vs is None else vs.p_value,
                "beaten_by": " ".join(r.beaten_by), "status": r.status, "section": "task"})
        for protocol, entries in table.unranked.items():   # fractions: shown as label efficiency, not ranked
            rows += [_entry_cells(e) | {"status": "not ranked (label efficiency)", "section": protocol}
                     for e in entries]
        rows += [_entry_cells(r.entry) | {"status": "not ranked (reliability)", "section": "reliability"}
                 for r in table.reliability]
        rows += [_entry_cells(r.entry) | {"status": "not ranked (site leakage)", "section": "site"} for r in table.site]
    for t in board.cross_cohort:
        rows.append(_entry_cells(t.entry) | {
            "section": "cross_cohort", "train_side": t.train, "test_side": t.test, "scored_split": t.split,
            "in_distribution_score": None if t.in_distribution is None else t.in_distribution.score, "drop": t.drop,
            "drop_ci_low": None if t.drop_ci is None else t.drop_ci[0],
            "drop_ci_high": None if t.drop_ci is None else t.drop_ci[1]})
    # text from records cannot start a spreadsheet formula; numbers stay numbers (fmt.csv_cell)
    return [{k: ("" if row.get(k) is None else fmt.csv_cell(row[k])) for k in COLUMNS} for row in rows]


def render_csv(board: Board, out_dir: str | Path) -> Path:
    from bench.atomic import atomic_write_bytes

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(csv_rows(board))
    path = Path(out_dir) / "results.csv"
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8"), mode=0o644)
    return path
