"""The board's sections beside the ranked tables: cross-cohort transfers, encoder cards, and the
power of each task's test split. Computed once from verified entries, like everything the
renderers draw (:mod:`.board`), and read from the records alone: no encoder is imported and no
cohort is opened.

* **Cross-cohort** (``transfer`` protocols, :mod:`bench.protocols.cross_cohort`): per task and
  transfer (train side -> test side, from the record's provenance), each encoder's score with its
  CI beside its in-distribution linear-probe score on the same task and training cohort, and the
  drop (how much worse out of distribution: positive is worse, whatever the metric's direction).
  Not ranked and not part of Borda or the critical difference.
* **Encoder cards**: each encoder's card as its records carry it (``provenance.encoder_card``).
* **Power**: a task's test subjects and examples, and for a classification task the smallest AUC
  gap the paired bootstrap detects at 80 % power (:mod:`bench.power`'s model), simulated on the
  labels and subject ids of one record's kept predictions.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from bench.leaderboard.entries import Entry

#: Simulated replicates per AUC gap of a board's power line (bisection over bench.power.GAPS).
POWER_SIMS = 40
#: Bootstrap replicates of each simulated paired test on the board (bench splits uses 400).
POWER_BOOT = 200


@dataclass(frozen=True)
class CrossCohortRow:
    """One encoder's transfer of one task: its score on the test side and the in-distribution one."""

    task: str
    version: int
    metric: str
    higher_is_better: bool
    train: str                      # cohort[@site] the head was fitted on
    test: str                       # cohort[@site] it was scored on
    test_task: str                  # the task as read on the test side (name@vN)
    entry: Entry
    split: str                      # test side's split the score is read on (test, or external)
    in_distribution: Entry | None   # the encoder's linear probe on the task and training cohort

    @property
    def encoder(self) -> str:
        return self.entry.encoder

    @property
    def drop(self) -> float | None:
        """In-distribution minus cross-cohort score in the direction of worse (positive: worse)."""
        if self.in_distribution is None or self.in_distribution.score is None or self.entry.score is None:
            return None
        diff = self.in_distribution.score - self.entry.score
        return diff if self.higher_is_better else -diff


@dataclass(frozen=True)
class CardRow:
    """An encoder's card as its records carry it (the first record's, in path order)."""

    encoder: str
    architecture: str
    n_parameters: int | None
    embed_dim: int | None
    input_space: str
    ssl_method: str
    pretraining_cohort: str | None
    pretraining_subjects: int | None
    pretraining_steps: int | None
    checkpoint_sha256: str | None
    n_cards: int = 1                # distinct cards among the encoder's records (more than 1: mixed)

    @property
    def checkpoint_short(self) -> str:
        return (self.checkpoint_sha256 or "")[:12]


@dataclass(frozen=True)
class SplitPower:
    """A task's test split as the board's records saw it, and what it can detect."""

    n_subjects: int | None
    n_examples: int | None
    gap: float | None = None        # smallest AUC gap at 80 % power; NaN: none of bench.power.GAPS
    proxy: str = ""                 # how a multi-class task was reduced to two classes
    note: str = ""                  # why there is no gap
    n_sim: int = 0

    @property
    def found(self) -> bool:
        return self.gap is not None and not math.isnan(self.gap)


def cross_cohort_rows(transfers: list[Entry], ranked: list[Entry]) -> list[CrossCohortRow]:
    """Rows of the cross-cohort section: by task, transfer, then best score first."""
    probes = {(e.encoder, *e.table_key): e for e in ranked if e.protocol == "linear_probe"}
    rows = []
    for e in transfers:
        train, test = e.transfer
        config = e.record.provenance.config
        rows.append(CrossCohortRow(
            e.task, e.record.task_version, e.record.main_score_name, e.record.higher_is_better, train, test,
            str(config["test"].get("task", "")), e, e.headline_scores[0].split if e.headline_scores else "test",
            probes.get((e.encoder, e.task, e.record.task_version, str(config["train"].get("cohort"))))))

    def order(r: CrossCohortRow):
        score = r.entry.score
        return (r.task, r.version, r.train, r.test, score is None,
                0.0 if score is None else (-score if r.higher_is_better else score), r.encoder)
    return sorted(rows, key=order)


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def card_rows(entries: list[Entry]) -> list[CardRow]:
    """One row per encoder, from its records' cards (no encoder is imported)."""
    cards: dict[str, list[dict]] = {}
    for e in sorted(entries, key=lambda e: e.source):
        cards.setdefault(e.encoder, []).append(e.record.provenance.encoder_card)
    rows = []
    for encoder, found in sorted(cards.items()):
        card = found[0]
        data = card.get("pretraining_data") if isinstance(card.get("pretraining_data"), dict) else {}
        subjects = data.get("subjects")
        distinct = Counter(repr(sorted(c.items())) for c in found)
        rows.append(CardRow(
            encoder, str(card.get("architecture", "")), _int(card.get("n_parameters")), _int(card.get("embed_dim")),
            str(card.get("input_space", "")), str(card.get("ssl_method", "")),
            None if data.get("cohort") is None else str(data.get("cohort")),
            len(subjects) if isinstance(subjects, list) else None, _int(data.get("steps")),
            card.get("checkpoint_sha256") if isinstance(card.get("checkpoint_sha256"), str) else None,
            len(distinct)))
    return rows


def _test_labels(entries: list[Entry]) -> tuple[list, list[str]] | None:
    """(labels, subject ids) of the test examples one record kept predictions for (its first seed at
    the headline setting), from the first entry that has them."""
    for e in entries:
        r = e.record
        rows = [p for p in r.predictions or [] if p.get("split") == "test" and p.get("setting") == r.headline_setting]
        if rows:
            seed = min(p.get("seed", 0) for p in rows)
            rows = [p for p in rows if p.get("seed", 0) == seed]
            return [p.get("y_true") for p in rows], [str(p.get("participant_id")) for p in rows]
    return None


def split_power(spec, entries: list[Entry], n_sim: int = POWER_SIMS) -> SplitPower:
    """The test split of a task's table (counts from a record's predictions, else its headline
    scores) and, for a classification task, its smallest detectable AUC gap (``n_sim`` 0: none)."""
    import numpy as np

    from bench.power import detectable_gap

    kept = _test_labels(entries)
    if kept is None:
        counts = [(s.n_subjects, s.n_examples) for e in entries for s in e.headline_scores if s.split == "test"]
        n_subjects, n_examples = max(counts) if counts else (None, None)
        return SplitPower(n_subjects, n_examples, note="no record kept its test predictions")
    labels, subjects = kept
    power = SplitPower(len(set(subjects)), len(subjects))
    if not spec.target.has_classes:
        return power
    if n_sim <= 0:
        return SplitPower(power.n_subjects, power.n_examples, note="not simulated (--power-sims 0)")
    try:
        y = np.asarray(labels, dtype=float).astype(int)
    except (TypeError, ValueError):
        return SplitPower(power.n_subjects, power.n_examples, note="labels are not class indices")
    # as bench.power.task_power: the largest label is the positive class, a multi-class task its last class vs rest
    proxy = "" if len(set(y.tolist())) == 2 else \
        f"{spec.label.classes[-1] if spec.label.classes else 'last class'} vs rest"
    binary = (y == y.max()).astype(int)
    if binary.min() == binary.max():
        return SplitPower(power.n_subjects, power.n_examples, float("nan"), proxy, "one class only", n_sim)
    gap = detectable_gap(binary, subjects, n_sim=n_sim, n_boot=POWER_BOOT)
    return SplitPower(power.n_subjects, power.n_examples, gap, proxy, "", n_sim)
