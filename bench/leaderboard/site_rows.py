"""The site-leakage table: how well the site can be decoded from each encoder's embeddings, beside its
internal and external task score (OpenBHB's three numbers).

Read from verified ``site`` records alone (:mod:`bench.protocols.site`): per encoder, the mean over
seeds of the site balanced accuracy (out-of-fold on the training subjects) with the mean of its CI
bounds and the chance level, and the task probe's main metric on ``test`` (internal) and
``external`` (held-out site). Ordered by site decodability, lowest first, and not ranked: little site
in an embedding is no merit by itself (a constant has none), so the table is read across: at an
equal external score, the encoder whose site is harder to decode is the better one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.leaderboard.entries import Entry
from bench.leaderboard.reliability_rows import Number

#: The site protocol's settings and headline metric (as :mod:`bench.protocols.site_check` names them).
SITE, FULL, METRIC = "site", "full", "site_balanced_accuracy"


@dataclass(frozen=True)
class SiteRow:
    """One encoder's site decodability and task scores on one task."""

    encoder: str
    site: Number
    chance: float | None
    n_sites: int | None
    internal: Number | None
    external: Number | None
    metric: str                # the task's main metric (mae for brain age)
    entry: Entry

    @property
    def decodability(self) -> float | None:
        return self.site.value


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _number(entry: Entry, metric: str, setting: str, split: str) -> Number | None:
    scores = [s for s in entry.record.scores if s.setting == setting and s.split == split and metric in s.metrics]
    if not scores:
        return None
    cis = [c for s in scores if (c := s.ci.get(metric)) is not None]
    bounds = (_mean([c.low for c in cis]), _mean([c.high for c in cis]))
    return Number(_mean([s.metrics[metric] for s in scores]), bounds)


def site_row(entry: Entry, task_metric: str) -> SiteRow:
    site = next((s for s in entry.record.scores if s.setting == SITE), None)
    params = site.params if site is not None else {}
    sites = params.get("sites")
    return SiteRow(entry.encoder, _number(entry, METRIC, SITE, "test") or Number(None), params.get("chance"),
                   len(sites) if isinstance(sites, list) else None, _number(entry, task_metric, FULL, "test"),
                   _number(entry, task_metric, FULL, "external"), task_metric, entry)


def site_rows(entries: list[Entry], task_metric: str) -> list[SiteRow]:
    """Rows of a task's site records, least decodable site first (then by name)."""
    rows = [site_row(e, task_metric) for e in entries]
    return sorted(rows, key=lambda r: (r.decodability is None, r.decodability or 0.0, r.encoder))


#: The sentence above the table.
INTRO = ("Site leakage (not ranked; ordered by site decodability, lowest first): balanced accuracy of a logistic "
         "probe decoding the acquisition site from the frozen embeddings (5-fold, out-of-fold on the training "
         "subjects; chance = 1 / sites), beside the task probe's internal (test) and external (held-out site) "
         "score. Lower site decodability at an equal external score is better.")


def cells(rows: list[SiteRow]) -> tuple[list[str], list[list[str]]]:
    """Header and plain-text cells of the table (the encoder first), for every renderer."""
    from bench.leaderboard import fmt

    task_metric = rows[0].metric if rows else "score"

    header = ["encoder", "site balanced accuracy (95 % interval)", "chance", "sites",
              f"internal {task_metric} (test)", f"external {task_metric} (held-out site)"]
    body = [[r.encoder, fmt.num_with_ci(r.site.value, *r.site.ci), fmt.num(r.chance),
             "-" if r.n_sites is None else str(r.n_sites)]
            + ["-" if n is None else fmt.num_with_ci(n.value, *n.ci) for n in (r.internal, r.external)]
            for r in rows]
    return header, body
