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

from bench.leaderboard.entries import Entry
from bench.leaderboard.seed_means import Number, seed_mean
from bench.protocols.site_check import FULL, METRIC, SITE


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


def site_row(entry: Entry, task_metric: str) -> SiteRow:
    site = next((s for s in entry.record.scores if s.setting == SITE), None)
    params = site.params if site is not None else {}
    sites = params.get("sites")
    return SiteRow(entry.encoder, seed_mean(entry, METRIC, SITE, "test") or Number(None), params.get("chance"),
                   len(sites) if isinstance(sites, list) else None, seed_mean(entry, task_metric, FULL, "test"),
                   seed_mean(entry, task_metric, FULL, "external"), task_metric, entry)


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
