"""Entries: verified records as the leaderboard reads them, and the loading of a results folder.

Only records that pass :func:`bench.leaderboard.verify.verify_path` become entries; every other
``*.json`` under the folder is kept as a :class:`Refused` with its one-line reason, so the
rendered board can say what it left out and why instead of silently dropping it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable

import numpy as np

from bench.errors import MribenchError
from bench.results import ResultRecord
from bench.stats import Spread

#: The flag prefix the harness writes when evaluated subjects were in the encoder's pretraining data.
OVERLAP_FLAG = "pretraining_overlap"


@dataclass(frozen=True)
class Entry:
    """One verified record; ``source`` is its path relative to the results folder (for display)."""

    record: ResultRecord
    source: str
    #: the ``bench submit`` bundle the record came from (a submissions folder's sub-folder), else None
    submitted: str | None = None

    @property
    def encoder(self) -> str:
        return self.record.encoder

    @property
    def task(self) -> str:
        return self.record.task

    @property
    def protocol(self) -> str:
        return self.record.protocol

    @property
    def cohort(self) -> str:
        return self.record.provenance.cohort.name

    @property
    def table_key(self) -> tuple[str, int, str]:
        """Entries are only comparable on the same task version and cohort (same split file)."""
        return self.task, self.record.task_version, self.cohort

    @property
    def score(self) -> float | None:
        return self.record.main_score

    @cached_property
    def headline_scores(self) -> list:
        """The per-seed scores the headline number is the mean of: the test split's, or the split the
        protocol reads its headline on (a transfer to a held-out site: ``external``)."""
        from bench.protocols import PROTOCOLS

        r = self.record
        split = PROTOCOLS[r.protocol].headline_split(r.scores) if r.protocol in PROTOCOLS else "test"
        return [s for s in r.scores if s.setting == r.headline_setting and s.split == split]

    @property
    def transfer(self) -> tuple[str, str] | None:
        """(train side, test side) of a transfer record (``cohort@site``, from its provenance), else None."""
        config = self.record.provenance.config
        if not isinstance(config.get("train"), dict) or not isinstance(config.get("test"), dict):
            return None
        return side_label(config["train"]), side_label(config["test"])

    @property
    def unique_key(self) -> tuple:
        """What one encoder may have once on the board: a table slot, or one transfer of a task."""
        return (self.encoder, *self.table_key, self.protocol) + (self.transfer or ())

    @cached_property
    def record_ci(self) -> tuple[float | None, float | None]:
        """Mean over seeds of the per-seed 95 % bootstrap CI bounds (as ``bench run`` prints them):
        sampling noise of the test subjects only."""
        name = self.record.main_score_name
        cis = [s.ci.get(name) for s in self.headline_scores]
        lows = [c.low for c in cis if c is not None and c.low is not None]
        highs = [c.high for c in cis if c is not None and c.high is not None]
        return (float(np.mean(lows)) if lows else None, float(np.mean(highs)) if highs else None)

    @cached_property
    def seed_scores(self) -> list[float]:
        """The headline main score of each seed."""
        name = self.record.main_score_name
        return [float(s.metrics[name]) for s in self.headline_scores
                if s.metrics.get(name) is not None and np.isfinite(s.metrics[name])]

    @cached_property
    def seed_sd(self) -> float | None:
        """SD of the per-seed scores (training noise; 0 where the seeds agree), None with one seed."""
        from bench.stats import seed_spread

        return seed_spread(self.seed_scores)[0] if len(self.seed_scores) > 1 else None

    @property
    def seeds_vary(self) -> bool:
        return bool(self.seed_sd)

    @cached_property
    def spread(self) -> Spread:
        """The mean score's variance split into subjects (the mean of the per-seed bootstrap standard
        errors, squared: every seed reads the same subjects, so their sampling errors move together)
        and seeds (``s^2 / S``)."""
        from bench.stats import seed_spread

        name = self.record.main_score_name
        ses = [c.se for c in (s.ci.get(name) for s in self.headline_scores)
               if c is not None and getattr(c, "se", None) is not None and np.isfinite(c.se)]
        _, seed_var, seed_df = seed_spread(self.seed_scores)
        return Spread(float(np.mean(ses)) ** 2 if ses else 0.0, seed_var, seed_df)

    @cached_property
    def ci(self) -> tuple[float | None, float | None]:
        """The displayed 95 % interval. Where the seeds agree (a deterministic head), the record's
        bootstrap CI over subjects; where they differ (fine-tuning, few-shot draws), the
        variance-components interval ``score -/+ t * sqrt(SE_subjects^2 + s^2 / S)`` with
        Welch-Satterthwaite degrees of freedom (:mod:`bench.stats`), so training noise is in it."""
        from bench.stats import interval

        if not self.seeds_vary or self.score is None:
            return self.record_ci
        return interval(self.score, self.spread)

    @property
    def zero_width(self) -> bool:
        """The interval has no width: every resample scores the same (e.g. a perfect separation)."""
        low, high = self.ci
        return low is not None and high is not None and high - low <= 0

    @cached_property
    def n_test_subjects(self) -> int | None:
        counts = {s.n_subjects for s in self.headline_scores}
        return max(counts) if counts else None

    @property
    def overlap(self) -> str | None:
        """The harness's pretraining-overlap flag text, if the record carries one."""
        return next((f for f in self.record.flags if f.startswith(OVERLAP_FLAG)), None)

    @property
    def split_sha_short(self) -> str:
        return self.record.provenance.split_sha256[:12]

    @property
    def seeds(self) -> int:
        return len({s.seed for s in self.headline_scores})


def side_label(side: dict) -> str:
    """``cohort@site`` of one side of a transfer record (``cohort`` when it names no site)."""
    site = side.get("site")
    return str(side.get("cohort")) + (f"@{site}" if site else "")


@dataclass(frozen=True)
class Refused:
    """A file under the results folder that is not on the board, and the one-line reason."""

    source: str
    reason: str


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def registered_names() -> set[str]:
    """The names of the registered encoders (the references), ``NAME@init`` included. Imports the
    encoder registry (and so torch): asked only when there is a submission to check."""
    from bench.encoders.api import list_encoders

    return set(list_encoders())


def submission_problem(encoder: str, reserved: Iterable[str]) -> str | None:
    """Why a submitted record may not call its encoder ``encoder``: it is a reserved name (a
    registered encoder's, or a reference on the board), or a name a reader cannot tell from one
    (:func:`bench.names.skeleton`: case, ``0``/``o``, ``1``/``l``, separators, other scripts)."""
    from bench.names import skeleton

    reserved = set(reserved)
    if encoder in reserved:
        return (f"encoder {encoder!r} is a reference encoder's name; a submission must give its encoder a "
                "name of its own")
    look = skeleton(encoder)
    twin = next((r for r in sorted(reserved) if skeleton(r) == look), None)
    if twin is not None:
        return (f"encoder {encoder!r} looks like the reference encoder {twin!r}; a submission must give its "
                "encoder a name that cannot be taken for another")
    return None


def load_entries(results_dir: str | Path, *, submitted: str | None = None,
                 seen: dict[tuple, str] | None = None,
                 reserved: Iterable[str] | None = None) -> tuple[list[Entry], list[Refused]]:
    """Verify every ``*.json`` under ``results_dir``; return (entries, refused), both in path order.

    Two verified records for the same (encoder, task@version, cohort, protocol) would put one
    encoder twice in a ranking; the first in path order is kept and the other refused. ``seen``
    carries that check across several folders (the first folder wins); ``submitted`` names the
    submission bundle the folder belongs to, so the board can flag its entries, and refuses a
    record whose encoder is named (or looks named) after one in ``reserved`` (default: the
    registered encoders; :func:`submission_problem`).
    """
    from bench.leaderboard.verify import verify_path

    root = Path(results_dir)
    if not root.is_dir():
        raise MribenchError(f"results folder {root} does not exist; run `bench run ... --results {root}` "
                            "or pass --results")
    entries: list[Entry] = []
    refused: list[Refused] = []
    seen = {} if seen is None else seen
    if submitted and reserved is None:
        reserved = registered_names()
    for path in sorted(p for p in root.rglob("*.json") if p.is_file()):
        source = _relative(path, root)
        if submitted:  # shown as the bundle's path, so a reader finds the file and who sent it
            source = f"{submitted}/results/{source}"
        verdict = verify_path(path)
        reason = verdict.reason or (submission_problem(verdict.record.encoder, reserved or ())
                                    if submitted and verdict.record is not None else None)
        if not verdict.ok or reason:
            refused.append(Refused(source, reason))
            continue
        entry = Entry(verdict.record, source, submitted)
        key = entry.unique_key
        if key in seen:
            refused.append(Refused(source, f"duplicate of {seen[key]} (same encoder, task, cohort and "
                                           "protocol" + (", same transfer)" if entry.transfer else ")")))
            continue
        seen[key] = source
        entries.append(entry)
    return entries, refused
