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
  gap the board's pairwise test (Wald on the paired-bootstrap SE) detects at 80 % power at Holm's
  first level ``alpha / m`` over the ``m`` pairs of the task's headline-protocol table
  (:mod:`bench.power`'s model), simulated on the labels and subject ids of one record's kept
  predictions, with the power's Monte-Carlo error and the metric it stands for
  (:func:`power_text`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from bench.leaderboard.entries import Entry
from bench.lineage import lineage

#: Simulated replicates per AUC gap of a board's power line (bisection over bench.power.GAPS): 400
#: keeps the Monte-Carlo SE of the power at the reported gap <= 0.02 (bench.power.N_SIM; not imported
#: from there, which would load scipy and scikit-learn with the board's types).
POWER_SIMS = 400
#: Bootstrap replicates of each simulated paired test (bench.power.N_BOOT; bench splits uses the same).
POWER_BOOT = 200
#: Unadjusted level of one pair when the caller does not say (bench.power.ALPHA, the board's ALPHA).
POWER_ALPHA = 0.05


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

    @property
    def drop_ci(self) -> tuple[float, float] | None:
        """95 % interval of the drop. The two scores come from different subjects (another site or
        cohort), so their errors are independent: variances add (subjects and, where seeds vary,
        seeds: :class:`bench.stats.Spread`), with Welch-Satterthwaite degrees of freedom."""
        from bench.stats import interval

        drop = self.drop
        if drop is None:
            return None
        return interval(drop, self.in_distribution.spread + self.entry.spread)


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
    lineage: str = "-"              # steps over the init_from chain (bench.lineage), e.g. "2,300 (800 + 1,500 ...)"

    @property
    def checkpoint_short(self) -> str:
        return (self.checkpoint_sha256 or "")[:12]


@dataclass(frozen=True)
class SplitPower:
    """A task's test split as the board's records saw it, and what it can detect."""

    n_subjects: int | None
    n_examples: int | None
    gap: float | None = None        # smallest AUC gap at 80 % power; NaN: none of bench.power.GAPS
    proxy: str = ""                 # how a multi-class task was reduced to two classes ("AD vs rest")
    note: str = ""                  # why there is no gap
    n_sim: int = 0                  # simulations per gap
    power: float | None = None      # estimated power at ``gap`` (at GAPS[-1] when none is found)
    alpha: float = POWER_ALPHA      # the family's level (the board's alpha)
    n_pairs: int = 1                # pairs of the headline-protocol table: Holm's first step is alpha / n_pairs
    protocol: str = ""              # that table's protocol (the task's headline)
    metric: str = ""                # the main score named exactly (metric_name: "binary AUC (converts positive)")
    n_boot: int = POWER_BOOT        # bootstrap replicates of each simulated test
    power_below: float | None = None  # power at the step of bench.power.GAPS below ``gap`` (under 80 %)

    @property
    def found(self) -> bool:
        return self.gap is not None and not math.isnan(self.gap)

    @property
    def level(self) -> float:
        """The level each simulated test is held to: Holm's first (most stringent) step."""
        return self.alpha / max(self.n_pairs, 1)

    @property
    def mc_se(self) -> float | None:
        """Monte-Carlo standard error of :attr:`power` (binomial over :attr:`n_sim` simulations)."""
        from bench.power import mc_se

        return None if self.power is None or self.n_sim <= 0 else mc_se(self.power, self.n_sim)


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
    every = [c for found in cards.values() for c in found]
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
            len(distinct), lineage(card, every).describe() if data.get("steps") is not None else "-"))
    return rows


def _test_labels(entries: list[Entry], prefer: str = "") -> tuple[list, list[str]] | None:
    """(labels, subject ids) of the test examples one record kept predictions for (its first seed at
    the headline setting), from the first entry that has them, entries of protocol ``prefer`` (the
    headline table's, whose pairs the power line speaks of) first."""
    for e in sorted(entries, key=lambda e: e.protocol != prefer):
        r = e.record
        rows = [p for p in r.predictions or [] if p.get("split") == "test" and p.get("setting") == r.headline_setting]
        if rows:
            seed = min(p.get("seed", 0) for p in rows)
            rows = [p for p in rows if p.get("seed", 0) == seed]
            return [p.get("y_true") for p in rows], [str(p.get("participant_id")) for p in rows]
    return None


#: Main scores other than AUC, named as a paper names them.
METRIC_NAMES = {"mae": "mean absolute error", "c_index": "Harrell's C-index", "uno_c": "Uno's C-index",
                "dice": "Dice", "hd95": "95th-percentile Hausdorff distance", "pearson_r": "Pearson's r"}


def metric_name(spec) -> str:
    """The task's main score named exactly, classes included: ``bench.metrics.auc`` is the binary AUC
    (largest class positive) for two classes and the macro one-vs-rest AUC over the classes for more.
    The task's heading and its power line both name the score with it."""
    classes = [str(c) for c in (spec.label.classes or ())]
    listed = " / ".join(classes)
    if spec.main_score == "auc" and len(classes) > 2:
        return f"{len(classes)}-class macro one-vs-rest AUC ({listed})"
    if spec.main_score == "auc":
        return f"binary AUC ({classes[-1]} positive)" if classes else "AUC"
    if spec.main_score == "mauc":
        return f"{len(classes)}-class Hand & Till AUC ({listed})"
    return METRIC_NAMES.get(spec.main_score, spec.main_score.replace("_", " "))


def _binary_labels(spec, labels: list) -> tuple[np.ndarray, str] | str:
    """The labels the simulation reads (1: the largest class present, as ``bench.metrics.auc``'s
    positive class) and how a task of more than two classes was reduced ("AD vs rest"); or why not."""
    try:
        y = np.asarray(labels, dtype=float).astype(int)
    except (TypeError, ValueError):
        return "labels are not class indices"
    if not len(y):
        return "no test example"
    classes = list(spec.label.classes or ())
    proxy = ""
    if len(set(y.tolist())) != 2 or len(classes) > 2:
        proxy = f"{classes[y.max()] if 0 <= y.max() < len(classes) else 'last class'} vs rest"
    return (y == y.max()).astype(int), proxy


def split_power(spec, entries: list[Entry], n_sim: int = POWER_SIMS, *, n_pairs: int = 1,
                alpha: float = POWER_ALPHA, n_boot: int = POWER_BOOT) -> SplitPower:
    """The test split of a task's table (counts from a record's predictions, else its headline
    scores) and, for a classification task, its smallest AUC gap detected at 80 % power by the board's
    test at Holm's first level ``alpha / n_pairs`` (``n_pairs``: pairs of the task's headline-protocol
    table; 1, the default, is one unadjusted test; ``n_sim`` 0: not simulated)."""
    from bench.power import detectable_gap

    kept = _test_labels(entries, spec.headline)
    if kept is None:
        counts = [(s.n_subjects, s.n_examples) for e in entries for s in e.headline_scores if s.split == "test"]
        n_subjects, n_examples = max(counts) if counts else (None, None)
        return SplitPower(n_subjects, n_examples, note="no record kept its test predictions")
    labels, subjects = kept
    base = SplitPower(len(set(subjects)), len(subjects), alpha=alpha, n_pairs=max(int(n_pairs), 1),
                      protocol=spec.headline, n_boot=n_boot)
    if not spec.target.has_classes:
        return base
    base = replace(base, metric=metric_name(spec))
    if n_sim <= 0:
        return replace(base, note="not simulated (--power-sims 0)")
    binary = _binary_labels(spec, labels)
    if isinstance(binary, str):
        return replace(base, note=binary)
    y, proxy = binary
    if y.min() == y.max():
        return replace(base, gap=float("nan"), proxy=proxy, note="one class only", n_sim=n_sim)
    found = detectable_gap(y, subjects, alpha=base.level, n_sim=n_sim, n_boot=n_boot)
    return replace(base, gap=found.gap, proxy=proxy, n_sim=n_sim, power=found.power, power_below=found.power_below)


def _level_text(power: SplitPower) -> str:
    """The level the gap is computed at, and why that one."""
    from bench.leaderboard.fmt import protocol_label

    if power.n_pairs <= 1:
        return f"at alpha = {power.alpha:g} (unadjusted)"
    table = protocol_label(power.protocol) if power.protocol else "task"
    return (f"at alpha = {power.alpha:g}/{power.n_pairs} (Holm's first step over the {power.n_pairs} pairs of "
            f"the {table} table, so the gap holds for any pair of it)")


def power_text(power: SplitPower | None) -> str:
    """The power line under a task's heading (plain text: the renderers escape it): the split's size,
    the metric the gap stands for, the gap with its power and Monte-Carlo error, the level and test."""
    from bench.power import BASE_AUC, GAPS, TARGET_POWER

    if power is None or power.n_subjects is None:
        return "Test split: size unknown (no record gives it)."
    text = f"Test split: {power.n_subjects} subjects, {power.n_examples} examples."
    if power.metric:
        reduced = f"; power simulated for the {power.proxy.replace(' vs rest', '-vs-rest')} AUC" if power.proxy else ""
        text += f" Main score: {power.metric}{reduced}."
    if power.gap is None:
        return text + (f" Detectable AUC gap: not computed ({power.note})." if power.note else
                       " (The AUC power line is for classification tasks.)")
    at_80 = f"Smallest AUC gap detectable at {TARGET_POWER:.0%} power".replace("%", " %")
    mc = "" if power.mc_se is None else f" +/- {power.mc_se:.2f} Monte-Carlo s.e."
    how = (f"{_level_text(power)}; Wald test on the paired-bootstrap SE ({power.n_boot} replicates over subjects), "
           f"bench.power's binormal model (AUC {BASE_AUC:.2f} vs {BASE_AUC:.2f} - gap)")
    if not power.found:
        why = f": {power.note}" if power.note else ""
        tried = "" if power.power is None else \
            f" (power at {GAPS[-1]:.2f}: {power.power:.2f}{mc}, {power.n_sim} simulations per gap)"
        return (text + f" {at_80}: none up to {GAPS[-1]:.2f}{why}{tried} {how}; most pairs here cannot be "
                "told apart.")
    below = "" if power.power_below is None else \
        f"; at {GAPS[GAPS.index(power.gap) - 1]:.2f}: {power.power_below:.2f}"
    return (text + f" {at_80}: {power.gap:.2f} (power {power.power:.2f}{mc}{below}; {power.n_sim} simulations per "
            f"gap) {how}.")
