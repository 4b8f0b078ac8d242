"""One number of a record as the unranked tables show it: the mean over seeds, with the mean CI bounds.

The reliability and site tables (:mod:`.reliability_rows`, :mod:`.site_rows`) read their numbers
from records the same way: every seed's score of one (setting, split) that has the metric, averaged,
and the bounds of their intervals averaged likewise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.leaderboard.entries import Entry

Interval = tuple[float | None, float | None]


@dataclass(frozen=True)
class Number:
    """A mean over seeds with its mean CI bounds."""

    value: float | None
    ci: Interval = (None, None)


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def seed_mean(entry: Entry, metric: str, setting: str, split: str = "test") -> Number | None:
    """``metric`` at ``setting`` on ``split``, averaged over the record's seeds; None when it has none."""
    scores = [s for s in entry.record.scores if s.setting == setting and s.split == split and metric in s.metrics]
    if not scores:
        return None
    cis = [c for s in scores if (c := s.ci.get(metric)) is not None]
    return Number(_mean([s.metrics[metric] for s in scores]), (_mean([c.low for c in cis]), _mean([c.high for c in cis])))
