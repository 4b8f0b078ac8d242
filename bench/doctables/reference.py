"""The reference encoders (ceiling, classical volumes, a naive intensity histogram, the random
floor) on every task: scores with the board's intervals, the oracle's CI half-width, and whether
the oracle beats the floor (the board's paired test, unadjusted).

One table for two readers: ``bench docs`` renders it from the committed records into README.md
and docs/calibration.md, and ``benchmarks/reference_encoders.py`` prints it for any results folder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.doctables.cells import fallback_text, score_ci, versus

if TYPE_CHECKING:
    from bench.doctables.sources import Sources
    from bench.leaderboard.entries import Entry

ENCODERS = ("oracle", "volumes", "intensity", "random")


def half_width(entry: Entry | None) -> str:
    """Half the width of the displayed interval; for a lower-is-better score also as a share of it."""
    if entry is None or entry.ci[0] is None or entry.ci[1] is None or entry.score is None:
        return "-"
    lo, hi = entry.ci
    width = (hi - lo) / 2
    relative = f" ({100 * width / entry.score:.0f} % of the score)" if not entry.record.higher_is_better else ""
    return f"{width:.3f}{relative}"


def _oracle_vs_random(row: dict[str, Entry]) -> str:
    from bench.leaderboard import fmt

    v = versus(row.get("oracle"), row.get("random"))
    if v is None:
        return "-"
    if v.p is None:
        return fallback_text(v)
    return f"p {fmt.p_value(v.p)} ({'oracle better' if v.a_better else 'oracle not better'})"


def reference_table(by_task: dict[str, dict[str, Entry]]) -> str:
    """Task label (``task vN``) -> encoder -> entry, as a markdown table in task order."""
    lines = ["| task | main score | " + " | ".join(ENCODERS) + " | oracle CI half-width | oracle vs random, "
             "unadjusted p |", "|---|---|" + "---|" * (len(ENCODERS) + 2)]
    for task in sorted(by_task):
        row = by_task[task]
        any_entry = next(iter(row.values()))
        lines.append(f"| {task} | {any_entry.record.main_score_name} | "
                     + " | ".join(score_ci(row.get(e), 3) for e in ENCODERS)
                     + f" | {half_width(row.get('oracle'))} | {_oracle_vs_random(row)} |")
    return "\n".join(lines)


def reference_encoders(src: Sources) -> str:
    """The table on the committed linear-probe records: every synthetic task the oracle has."""
    from bench.tasks import list_tasks

    by_task: dict[str, dict[str, Entry]] = {}
    for name, spec in sorted(list_tasks().items()):
        if "/" in name or src.entry("oracle", name, "linear_probe") is None:
            continue
        found = {e: src.entry(e, name, "linear_probe") for e in ENCODERS}
        by_task[f"{name} v{spec.version}"] = {e: entry for e, entry in found.items() if entry is not None}
    return reference_table(by_task) + (
        "\n\nLinear probe, test split, mean of 3 seeds, the board's 95 % interval; `oracle vs random` is the board's "
        "paired test over the same test subjects, p unadjusted.")
