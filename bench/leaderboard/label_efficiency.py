"""The ``fractions`` protocol as the board shows it: a label-efficiency row per encoder, not a ranking.

At 100 % of the training subjects ``fractions`` refits the linear probe on the same data and gives
the probe's predictions (identical in every committed record), so ranking it would print the
linear-probe table twice. What the protocol adds is the curve below 100 %: each encoder's mean
test score over seeds at each fraction, with the SD over seeds beside it. Most heads ignore the
seed and each fraction's nested subset is drawn once, so that SD is usually 0: the variance of
*which* subset was drawn is not in these numbers, and the board says so rather than present three
identical fits as three seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.leaderboard.entries import Entry
from bench.stats import negligible

@dataclass(frozen=True)
class FractionRow:
    """One encoder's mean test score and seed SD at each training fraction (below 100 %)."""

    encoder: str
    points: dict[float, tuple[float, float | None]]   # fraction -> (mean over seeds, SD over seeds)


def fraction_rows(entries: list[Entry]) -> list[FractionRow]:
    """Rows for a task's ``fractions`` entries, best at the smallest fraction first."""
    from bench.protocols import get_protocol

    params_of = get_protocol("fractions").setting_params  # the protocol reads its own setting labels
    rows = []
    for e in entries:
        name = e.record.main_score_name
        points = {}
        for key, metrics in (e.record.summary or {}).items():
            setting, _, split = key.partition("|")
            fraction = params_of(setting).get("fraction")
            stats = metrics.get(name) if isinstance(metrics, dict) else None
            if split != "test" or fraction is None or fraction >= 1 or not stats or stats.get("mean") is None:
                continue
            sd = stats.get("std") if (stats.get("n_seeds") or 0) > 1 else None
            if sd is not None and negligible(float(sd), float(stats["mean"])):
                sd = 0.0
            points[fraction] = (float(stats["mean"]), None if sd is None else float(sd))
        if points:
            rows.append(FractionRow(e.encoder, dict(sorted(points.items()))))
    if not rows:
        return rows
    hib = entries[0].record.higher_is_better
    smallest = min(f for r in rows for f in r.points)

    def key(r: FractionRow):
        v = r.points.get(smallest)
        return (v is None, 0.0 if v is None else (-v[0] if hib else v[0]), r.encoder)
    return sorted(rows, key=key)


def fractions_of(rows: list[FractionRow]) -> list[float]:
    """The fractions any row has, ascending (the table's columns)."""
    return sorted({f for r in rows for f in r.points})
