"""Table cells and verdicts shared by the generators: a score at a stated precision, and the
board's paired test between two entries with its unadjusted p-value.

Every p-value a document prints is :func:`bench.leaderboard.ranking.compare`'s ``p_value`` (the
board's pairwise test, before the board's Holm adjustment within its table), formatted as the
board formats p-values (:func:`bench.leaderboard.fmt.p_value`); the text around it says that it is
unadjusted and against what. The direction (+ / -) is read from the two scores, not the test.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.leaderboard.entries import Entry

#: The board's paired test: replicates and seed.
N_BOOT = 1000
SEED = 0
#: The level a document calls "told apart" at (unadjusted).
ALPHA = 0.05

#: (a, b, verdict) by the two entries' ids; the entries are kept so an id is never reused.
_VERSUS: dict[tuple[int, int], tuple[Entry, Entry, Versus]] = {}


def score(entry: Entry | None, digits: int) -> str:
    """The entry's score at ``digits`` decimals, ``-`` without one."""
    return "-" if entry is None or entry.score is None else f"{entry.score:.{digits}f}"


def score_ci(entry: Entry | None, digits: int) -> str:
    """``score (low-high)`` as the board's cells print it, with its displayed interval (``Entry.ci``)."""
    from bench.leaderboard import fmt

    return fmt.entry_score(entry, digits)


@dataclass(frozen=True)
class Versus:
    """Entry ``a`` against entry ``b``: whose score is better and the board's paired test."""

    a_better: bool | None     # None: a score is missing or the two are equal
    p: float | None           # unadjusted; None when the test could not run (no shared predictions)
    method: str
    separable: bool = False   # the fallback's verdict where there is no p (CIs apart)

    @property
    def significant(self) -> bool:
        return self.p is not None and self.p < ALPHA

    def text(self) -> str:
        """``+ p = 0.28``, ``- p < 0.002``, with `` *`` where ``a`` is better at p < 0.05."""
        from bench.leaderboard import fmt

        if self.p is None:
            return fallback_text(self)
        sign = {True: "+ ", False: "- ", None: ""}[self.a_better]
        star = " *" if self.a_better and self.significant else ""
        return f"{sign}p {fmt.p_value(self.p)}{star}"


def versus(a: Entry | None, b: Entry | None) -> Versus | None:
    """The board's paired test of ``a`` against ``b`` (same test subjects), once per pair."""
    from bench.leaderboard.ranking import compare

    if a is None or b is None:
        return None
    key = (id(a), id(b))
    if key not in _VERSUS:
        c = compare(a, b, n_boot=N_BOOT, seed=SEED, reps=_replicates())
        better = None
        if a.score is not None and b.score is not None and a.score != b.score:
            better = (a.score > b.score) == a.record.higher_is_better
        _VERSUS[key] = (a, b, Versus(better, c.p_value, c.method, bool(c.separable)))
    return _VERSUS[key][2]


@lru_cache(maxsize=1)
def _replicates():
    """One set of bootstrap replicates per entry for every document's tests (an entry compared with
    its init, ``random`` and ``supervised`` is resampled once, as on the board)."""
    from bench.leaderboard.ranking import Replicates

    return Replicates(N_BOOT, SEED)


def fallback_text(v: Versus) -> str:
    """What stands in for a p-value where the records hold no per-example predictions (segmentation):
    the board's interval-overlap verdict, said to be one."""
    if v.method == "ci_overlap":
        return "no paired test (no per-example predictions): CIs " + ("apart" if v.separable else "overlap")
    return "no test"


def versus_text(a: Entry | None, b: Entry | None) -> str:
    v = versus(a, b)
    return "-" if v is None else v.text()


def join_names(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``; ``none`` for an empty list."""
    if not names:
        return "none"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
