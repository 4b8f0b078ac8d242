"""The robustness table: how much of an encoder's margin over chance survives each artefact.

The record's ``robustness_score`` is the mean of score / clean (``bench verify`` recomputes it,
so it stays as recorded). The board shows a chance-corrected ratio instead, computed here for
display only: ``(score - chance) / (clean - chance)`` averaged over every artefact and severity,
1 = unaffected, 0 = down to chance. Without the correction an encoder near chance looks robust
(its score cannot fall: simclr_vit3d@init's brain-age MAE 17.49 against 17.94 for predicting the
mean "kept" 97 % of nothing). Chance is the metric's own level where it has one (AUC and
concordance 0.5, correlation 0) and, for an error such as MAE, the error of predicting the mean
of the test labels (the records hold no training labels, so the test mean stands in; that is
slightly optimistic for the mean predictor, so the correction is, if anything, conservative).
An encoder whose clean 95 % interval includes chance has no margin to keep: "n/a".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.leaderboard.entries import Entry


@dataclass(frozen=True)
class RobustnessRow:
    """One encoder's robustness on a task (test split): clean score with its CI, the chance-corrected
    mean ratio, the worst artefact and its chance-corrected drop, and the chance level used."""

    encoder: str
    clean: float | None
    robustness_score: float | None        # chance-corrected; None when clean is at chance
    worst: str | None
    worst_drop: float | None
    clean_ci: tuple[float | None, float | None] = (None, None)
    chance: float | None = None
    chance_source: str = ""               # "metric" or "mean predictor (test labels)"
    recorded_score: float | None = None   # the record's score / clean ratio (what verify checks)

    @property
    def clean_at_chance(self) -> bool:
        """The clean score's 95 % CI includes chance: there is no margin whose survival to measure."""
        low, high = self.clean_ci
        return self.chance is not None and low is not None and high is not None and low <= self.chance <= high


def chance_level(entry: Entry) -> tuple[float | None, str]:
    """The main metric's chance level for this record, and where it comes from."""
    from bench.metrics import METRICS

    r = entry.record
    metric = METRICS.get(r.main_score_name)
    if metric is not None and metric.chance is not None:
        return metric.chance, "metric"
    if r.main_score_name != "mae":
        return None, ""
    y = [float(p["y_true"]) for p in r.predictions or []
         if p.get("split") == "test" and p.get("setting") == r.headline_setting and p.get("seed") == min(r.provenance.seeds or [0])]
    if not y:
        return None, ""
    truth = np.asarray(y)
    return float(np.mean(np.abs(truth - truth.mean()))), "mean predictor (test labels)"


def _row(entry: Entry, block: dict) -> RobustnessRow:
    clean = block.get("clean")
    chance, source = chance_level(entry)
    base = RobustnessRow(entry.encoder, clean, None, None, None, entry.ci, chance, source,
                         block.get("robustness_score"))
    if clean is None or chance is None or base.clean_at_chance or clean == chance:
        return base
    per_artefact = {a: [(float(s) - chance) / (clean - chance) for s in by_sev.values() if s is not None]
                    for a, by_sev in (block.get("score") or {}).items()}
    per_artefact = {a: v for a, v in per_artefact.items() if v}
    if not per_artefact:
        return base
    drops = {a: 1.0 - float(np.mean(v)) for a, v in per_artefact.items()}
    worst = max(drops, key=lambda a: (drops[a], a))
    score = float(np.mean([x for v in per_artefact.values() for x in v]))
    return RobustnessRow(entry.encoder, clean, score, worst, drops[worst], entry.ci, chance, source,
                         block.get("robustness_score"))


def robustness_rows(entries: list[Entry]) -> list[RobustnessRow]:
    """Most robust first; encoders whose clean score is at chance after all the others ("n/a")."""
    rows = []
    for e in entries:
        block = (e.record.robustness or {}).get("splits", {}).get("test")
        if block:
            rows.append(_row(e, block))
    return sorted(rows, key=lambda r: (r.robustness_score is None, -(r.robustness_score or 0.0), r.encoder))
