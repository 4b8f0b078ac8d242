"""The reliability table: test-retest, fingerprinting and tracking of each encoder on a task.

Read from verified ``reliability`` records alone (:mod:`bench.protocols.reliability`): per encoder,
on the test split, the mean over seeds of each number with the mean of its CI bounds (the CI is a
subject bootstrap; the seeds differ only in the probe's fit where the head uses its seed). Ordered
by ICC, best first, and not ranked: a reliable encoder is not thereby a useful one (a constant
prediction is perfectly repeatable), so accuracy stays the ranked tables' job and this table says
which of the accurate ones a longitudinal study can trust.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.leaderboard.entries import Entry
from bench.leaderboard.seed_means import Number, seed_mean
from bench.reliability_stats import IDENTIFICATION, RETEST, TRACKING

#: (metric, setting) of each column, in table order.
COLUMNS = (("icc", RETEST), ("icc_gap", RETEST), ("within_sd", RETEST), ("identification", IDENTIFICATION),
           ("slope", TRACKING), ("tracking_r", TRACKING))


@dataclass(frozen=True)
class ReliabilityRow:
    """One encoder's reliability on one task (test split)."""

    encoder: str
    numbers: dict[str, Number]
    n_pairs: int | None
    value: str                 # what was compared: "predicted age", "probability of AD"
    entry: Entry

    @property
    def icc(self) -> float | None:
        return self.numbers.get("icc", Number(None)).value


def reliability_row(entry: Entry) -> ReliabilityRow:
    numbers = {m: n for m, setting in COLUMNS if (n := seed_mean(entry, m, setting)) is not None}
    block = entry.record.reliability or {}
    return ReliabilityRow(entry.encoder, numbers, (block.get("pairs") or {}).get("test"), str(block.get("value", "")),
                          entry)


def reliability_rows(entries: list[Entry]) -> list[ReliabilityRow]:
    """Rows of a task's reliability records, best ICC first (then by name)."""
    rows = [reliability_row(e) for e in entries]
    return sorted(rows, key=lambda r: (r.icc is None, -(r.icc or 0.0), r.encoder))


def columns_shown(rows: list[ReliabilityRow]) -> list[str]:
    """The metrics any row has, in table order."""
    return [m for m, _ in COLUMNS if any(m in r.numbers for r in rows)]


#: Column headings, and the one-line explanation under the table.
HEADINGS = {"icc": "ICC(2,1) (95 % interval)", "icc_gap": "ICC of the gap to the label", "within_sd": "within-subject SD",
            "identification": "rescans identified", "slope": "within-subject slope vs age",
            "tracking_r": "r(change in log-odds, change in stage)"}
INTRO = ("Reliability (test split; not ranked, ordered by ICC): the probe's prediction from two same-session "
         "acquisitions (ICC(2,1) and within-subject SD), whether a rescan's embedding finds its own first scan, "
         "and whether predictions follow a subject's change over time.")


def cells(rows: list[ReliabilityRow]) -> tuple[list[str], list[list[str]]]:
    """Header and plain-text cells of the table (the encoder first), for every renderer."""
    from bench.leaderboard import fmt

    shown = columns_shown(rows)
    header = ["encoder", "value compared", "rescan pairs"] + [HEADINGS[m] for m in shown]
    body = []
    for r in rows:
        numbers = [r.numbers.get(m) for m in shown]
        body.append([r.encoder, r.value or "-", "-" if r.n_pairs is None else str(r.n_pairs)]
                    + ["-" if n is None else fmt.num_with_ci(n.value, *n.ci) for n in numbers])
    return header, body
