"""``leaderboard/results.csv``: one row per verified entry, every number the tables show, unrounded.

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
           "pretraining_overlap", "submitted", "split_sha256", "task_spec_sha256", "record")


def csv_rows(board: Board) -> list[dict[str, object]]:
    """The CSV's rows as dicts (empty string for a missing value)."""
    rows = []
    for table in board.tables:
        for r in table.rows:
            e = r.entry
            prov = e.record.provenance
            low, high = e.ci
            vs = r.vs_best
            rows.append({
                "cohort": e.cohort, "task": e.task, "task_version": e.record.task_version,
                "protocol": e.protocol, "encoder": e.encoder, "metric": e.record.main_score_name,
                "higher_is_better": e.record.higher_is_better, "main_score": e.score, "ci_low": low,
                "ci_high": high, "n_test_subjects": e.n_test_subjects, "n_seeds": e.seeds, "rank": r.rank,
                "rank_group": r.group, "tie_test": "" if vs is None else vs.method,
                "p_vs_best": None if vs is None else vs.p_value, "pretraining_overlap": bool(e.overlap),
                "submitted": e.submitted,
                "split_sha256": prov.split_sha256, "task_spec_sha256": prov.task_spec_sha256,
                "record": e.source,
            })
    # text from records cannot start a spreadsheet formula; numbers stay numbers (fmt.csv_cell)
    return [{k: ("" if v is None else fmt.csv_cell(v)) for k, v in row.items()} for row in rows]


def render_csv(board: Board, out_dir: str | Path) -> Path:
    from bench.atomic import atomic_write_bytes

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(board))
    path = Path(out_dir) / "results.csv"
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8"), mode=0o644)
    return path
