"""A record read at another of its settings than the headline (e.g. ``fractions`` at 10 %).

Shared by the generated tables and ``benchmarks/ssl_vs_init.py``: the entry is the board's
:class:`~bench.leaderboard.entries.Entry` with its record re-headlined, so its score, interval
and paired test are computed by the leaderboard's own code on that setting's per-seed results.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.leaderboard.entries import Entry

#: (entry, re-headlined entry) by (id of the entry, setting, split); the entry is kept so an id is never reused.
_CACHE: dict[tuple[int, str, str], tuple[Entry, Entry | None]] = {}


def at_setting(entry: Entry, setting: str, split: str) -> Entry | None:
    """``entry`` re-headlined on ``setting`` and ``split``: the leaderboard's score, CI and paired
    test then read that setting's per-seed results; None when the record has no such setting."""
    r = entry.record
    summary = r.summary.get(f"{setting}|{split}")
    if summary is None or r.main_score_name not in summary:
        return None
    scores = [s.model_copy(update={"split": "test"}) for s in r.scores if s.setting == setting and s.split == split]
    predictions = [{**p, "split": "test"} for p in r.predictions or [] if p.get("setting") == setting
                   and p.get("split") == split]
    record = r.model_copy(update={"headline_setting": setting, "main_score": summary[r.main_score_name]["mean"],
                                  "scores": scores, "predictions": predictions})
    return replace(entry, record=record)


def cached_at_setting(entry: Entry, setting: str, split: str = "test") -> Entry | None:
    """:func:`at_setting`, once per (entry, setting, split) in this process, so the entry's
    interval and bootstrap replicates are computed once however many blocks show it."""
    key = (id(entry), setting, split)
    if key not in _CACHE:
        _CACHE[key] = (entry, at_setting(entry, setting, split))
    return _CACHE[key][1]
