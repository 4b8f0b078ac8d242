"""The board: every table and summary the renderers draw, computed once from verified entries.

Renderers (markdown, HTML, CSV, LaTeX) only format what is here, so the four outputs can never
disagree about a number, a rank or a tie.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import MribenchError
from bench.leaderboard.aggregate import CriticalDifference, OverallRow, critical_difference, overall, roles
from bench.leaderboard.entries import Entry, Refused, load_entries, registered_names
from bench.leaderboard.label_efficiency import FractionRow, fraction_rows
from bench.leaderboard.ranking import ALPHA, Ranked, Replicates, rank_entries
from bench.leaderboard.reliability_rows import ReliabilityRow, reliability_rows
from bench.leaderboard.robustness_rows import RobustnessRow, robustness_rows
from bench.leaderboard.site_rows import SiteRow, site_rows
from bench.leaderboard.sections import (POWER_SIMS, CardRow, CrossCohortRow, SplitPower, card_rows, cross_cohort_rows,
                                        metric_name, split_power)


def protocol_order() -> tuple[str, ...]:
    """Display order of protocols within a task table (each protocol's ``order``)."""
    from bench.protocols import by_order

    return tuple(p.name for p in by_order())


@dataclass
class TaskTable:
    """All entries of one task version on one cohort, ranked within each protocol."""

    task: str
    version: int
    cohort: str
    metric: str
    higher_is_better: bool
    headline_protocol: str
    description: str
    by_protocol: dict[str, list[Ranked]]
    robustness: list[RobustnessRow] = field(default_factory=list)
    power: SplitPower | None = None     # the test split's size and detectable AUC gap
    ranking: bool = True                # the spec's ``ranking``: counts in the overall ranking
    metric_label: str = ""              # the main score named exactly ("3-class macro AUC ...")
    label_efficiency: list[FractionRow] = field(default_factory=list)  # ``fractions`` below 100 %
    unranked: dict[str, list[Entry]] = field(default_factory=dict)     # UNRANKED_PROTOCOLS' entries
    reliability: list[ReliabilityRow] = field(default_factory=list)   # ``reliability``: shown, not ranked
    site: list[SiteRow] = field(default_factory=list)                 # ``site``: a column, not a rank

    @property
    def anchor(self) -> str:
        return f"task-{self.task}-v{self.version}-{self.cohort}".replace("/", "-").replace(", split ", "-split-")

    @property
    def rows(self) -> list[Ranked]:
        return [r for p in protocol_order() for r in self.by_protocol.get(p, [])]

    @property
    def entries(self) -> list[Entry]:
        """Every entry of the table: the ranked rows' and the unranked protocols'."""
        return ([r.entry for r in self.rows] + [e for p in protocol_order() for e in self.unranked.get(p, [])]
                + [r.entry for r in self.reliability] + [r.entry for r in self.site])


@dataclass
class Overall:
    """Cross-task summary of one cohort under each task's headline protocol."""

    cohort: str
    tasks: list[str]
    rows: list[OverallRow]
    cd: CriticalDifference
    left_out: list[str] = field(default_factory=list)   # tasks without headline-protocol entries
    not_ranking: list[str] = field(default_factory=list)  # tasks whose spec says ranking: false


@dataclass
class Board:
    tables: list[TaskTable]
    overall: list[Overall]
    refused: list[Refused]
    n_boot: int
    seed: int
    alpha: float
    results_label: str
    plots: list = field(default_factory=list)  # bench.leaderboard.plots.Plot, filled by render
    note: str = ""                              # free text shown under the title (e.g. how it was made)
    cross_cohort: list[CrossCohortRow] = field(default_factory=list)  # transfers: shown, never ranked
    cards: list[CardRow] = field(default_factory=list)                # one per encoder on the board

    @property
    def entries(self) -> list[Entry]:
        """The ranked tables' entries (transfer records are in :attr:`cross_cohort`)."""
        return [e for t in self.tables for e in t.entries]

    @property
    def encoders(self) -> list[str]:
        return sorted({e.encoder for e in self.entries} | {r.encoder for r in self.cross_cohort})

    @property
    def protocols(self) -> list[str]:
        have = {e.protocol for e in self.entries} | {p for t in self.tables for p in t.unranked}
        return [p for p in protocol_order() if p in have]

    @property
    def cohorts(self) -> list[str]:
        return sorted({t.cohort for t in self.tables})

    def table(self, task: str, cohort: str | None = None) -> TaskTable:
        """The table of ``task`` (on ``cohort`` when several cohorts have it)."""
        found = [t for t in self.tables if t.task == task and (cohort is None or t.cohort == cohort)]
        if not found:
            known = sorted({t.task for t in self.tables})
            raise MribenchError(f"no verified records for task '{task}'"
                                + (f" on cohort {cohort}" if cohort else "")
                                + f"; the board has: {', '.join(known) or 'nothing'}")
        if len(found) > 1:
            raise MribenchError(f"task '{task}' has records on several cohorts "
                                f"({', '.join(t.cohort for t in found)}); choose one with --cohort")
        return found[0]


#: Protocols the board shows without ranking them: ``fractions`` at 100 % is the linear probe again
#: (:mod:`.label_efficiency`), so it is a label-efficiency table instead.
UNRANKED_PROTOCOLS = ("fractions",)
def section_protocols() -> tuple[str, ...]:
    """Protocols whose records are shown in a table of their own under the task, never ranked: the
    registry's unranked, non-transfer protocols with a check of their own (reliability, site)."""
    from bench.protocols import by_order

    return tuple(p.name for p in by_order() if not p.ranked and not p.transfer and p.check is not None)


def _power(spec, by_protocol: dict[str, list[Ranked]], entries: list[Entry], n_sim: int, alpha: float):
    """The split's power at the level the board tests the headline table's pairs: Holm's strictest step,
    alpha over its number of pairs."""
    n = sum(1 for r in by_protocol.get(spec.headline, []) if r.rank is not None)
    return split_power(spec, entries, n_sim, n_pairs=max(1, n * (n - 1) // 2), alpha=alpha)


def _task_table(key: tuple[str, int, str], members: list[Entry], reps: Replicates, *, n_boot: int, seed: int,
                alpha: float, power_sims: int) -> TaskTable:
    """One task version on one cohort: each protocol ranked (the unranked ones shown their own way)."""
    from bench.tasks import get_task

    task, version, cohort = key
    spec = get_task(task)
    by_protocol: dict[str, list[Ranked]] = {}
    sections = section_protocols()
    for protocol in protocol_order():
        chosen = [e for e in members if e.protocol == protocol]
        if chosen and protocol not in UNRANKED_PROTOCOLS and protocol not in sections:
            by_protocol[protocol] = rank_entries(chosen, n_boot=n_boot, seed=seed, alpha=alpha, reps=reps)
    # the task's metric, from a record scored by it (a section protocol's headline is its own: ICC, site)
    first = next((e.record for e in members if e.protocol not in sections), None)
    metric, higher = (first.main_score_name, first.higher_is_better) if first else (spec.main_score,
                                                                                   spec.higher_is_better)
    ranked_entries = [r.entry for p in protocol_order() for r in by_protocol.get(p, [])]
    return TaskTable(task, version, cohort, metric, higher, spec.headline,
                     " ".join(spec.description.split()), by_protocol,
                     robustness_rows([e for e in members if e.protocol == "robustness"]),
                     _power(spec, by_protocol, ranked_entries, power_sims, alpha), spec.ranking, metric_name(spec),
                     fraction_rows([e for e in members if e.protocol == "fractions"]),
                     {p: [e for e in members if e.protocol == p] for p in UNRANKED_PROTOCOLS
                      if any(e.protocol == p for e in members)},
                     reliability_rows([e for e in members if e.protocol == "reliability"]),
                     site_rows([e for e in members if e.protocol == "site"], spec.main_score))


def _overall(cohort: str, tables: list[TaskTable], alpha: float) -> Overall:
    """The cohort's summary over its ranking tasks' headline-protocol tables."""
    from bench.tasks import get_task

    headline = {t.task: t.by_protocol[t.headline_protocol] for t in tables
                if t.ranking and t.headline_protocol in t.by_protocol}
    single_scan = {t for t in headline if not get_task(t).is_sequence}
    who = roles(headline, single_scan)
    return Overall(cohort, sorted(headline), overall(headline, who), critical_difference(headline, alpha, who),
                   [t.task for t in tables if t.ranking and t.headline_protocol not in t.by_protocol],
                   [t.task for t in tables if not t.ranking])


def _table_key(e: Entry) -> tuple[str, int, str]:
    """(task, version, cohort), the cohort shown with its split fingerprint's short form when the record
    has one (a rule-made split): two groups' different downloads of one release never share a table."""
    fp = e.record.provenance.config.get("split_fingerprint")
    return e.table_key if not fp else (e.task, e.record.task_version, f"{e.cohort}, split {str(fp)[:12]}")


def build_board(entries: list[Entry], refused: list[Refused] | None = None, *, n_boot: int = 1000,
                seed: int = 0, alpha: float = ALPHA, results_label: str = "results",
                power_sims: int = POWER_SIMS) -> Board:
    """Rank every (task version, cohort, protocol) table and aggregate each cohort's tasks; transfer
    records (cross-cohort) go to a section of their own, unranked. ``power_sims``: simulated
    replicates per AUC gap of each classification task's power line (0: not simulated)."""
    from bench.protocols import PROTOCOLS

    transfers, ranked = [], []
    for e in entries:
        (transfers if e.protocol in PROTOCOLS and PROTOCOLS[e.protocol].transfer else ranked).append(e)
    groups: dict[tuple[str, int, str], list[Entry]] = {}
    for e in ranked:
        groups.setdefault(_table_key(e), []).append(e)
    reps = Replicates(n_boot, seed)
    tables = [_task_table(key, members, reps, n_boot=n_boot, seed=seed, alpha=alpha, power_sims=power_sims)
              for key, members in sorted(groups.items())]
    summaries = [_overall(cohort, [t for t in tables if t.cohort == cohort], alpha)
                 for cohort in sorted({t.cohort for t in tables})]
    return Board(tables, summaries, list(refused or []), n_boot, seed, alpha, results_label,
                 cross_cohort=cross_cohort_rows(transfers, ranked), cards=card_rows(entries))


def load_board(results_dir: str | Path | list, *, submissions: str | Path | None = None, n_boot: int = 1000,
               seed: int = 0, alpha: float = ALPHA, power_sims: int = POWER_SIMS) -> Board:
    """Verify every record under each results folder and, when ``submissions`` is a folder, under
    each ``bench submit`` bundle in it (``<submissions>/<bundle>/results/``, flagged as submitted);
    build the board from those that pass. A record whose (encoder, task, cohort, protocol) an
    earlier folder already holds is refused, so a submission cannot replace a reference."""
    folders = [Path(d) for d in (results_dir if isinstance(results_dir, list) else [results_dir])]
    entries, refused, seen = [], [], {}
    for folder in folders:
        got, bad = load_entries(folder, seen=seen)
        entries += got
        refused += bad
    bundles = submission_bundles(submissions)
    reserved = (registered_names() | {e.encoder for e in entries}) if bundles else set()
    for bundle in bundles:
        problem = bundle_problem(bundle)
        if problem:
            refused.append(Refused(bundle.name, problem))
            continue
        got, bad = load_entries(bundle / "results", submitted=bundle.name, seen=seen, reserved=reserved)
        entries += got
        refused += bad
    if not entries:
        reasons = "; ".join(f"{r.source}: {r.reason}" for r in refused[:3])
        raise MribenchError(f"no verified result records under {', '.join(map(str, folders))}"
                            + (f" ({len(refused)} refused, e.g. {reasons})" if refused else
                               "; run `bench run` first"))
    return build_board(entries, refused, n_boot=n_boot, seed=seed, alpha=alpha,
                       results_label=" + ".join(f.name for f in folders), power_sims=power_sims)


#: Records one ``bench submit`` bundle may hold: the standard suite writes at most 9 tasks x 4 protocols
#: = 36 on the synthetic cohort; a bundle of thousands would make the board verify without end.
MAX_RECORDS_PER_BUNDLE = 200


def bundle_problem(bundle: Path) -> str | None:
    """Why a ``bench submit`` bundle is refused whole: its folder name is not a name (it is shown as
    the rows' "submitted" mark), it holds a symbolic link, which could make a committed record, or
    any file on the maintainer's machine, pass for the submission's own, or it holds more records
    than :data:`MAX_RECORDS_PER_BUNDLE`; None when none of these."""
    from bench.names import name_problem

    problem = name_problem("bundle", bundle.name)
    if problem:
        return f"submission {problem}"
    if bundle.is_symlink():
        return "is a symbolic link; a bundle is a folder of its own files: copy it in"
    for folder, dirs, files in os.walk(bundle):
        links = sorted(n for n in dirs + files if (Path(folder) / n).is_symlink())
        if links:
            link = (Path(folder) / links[0]).relative_to(bundle).as_posix()
            return (f"holds a symbolic link ({link!r}); a bundle carries its own files, not links to others: "
                    "copy the files in")
    records = sum(1 for p in (bundle / "results").rglob("*.json") if p.is_file())
    if records > MAX_RECORDS_PER_BUNDLE:
        return (f"holds {records} records, more than the {MAX_RECORDS_PER_BUNDLE} a bundle may hold "
                "(the standard suite writes at most 36): split it")
    return None


def submission_bundles(submissions: str | Path | None) -> list[Path]:
    """The ``bench submit`` bundles in a submissions folder: its sub-folders holding ``results/``."""
    root = Path(submissions) if submissions else None
    if root is None or not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if d.is_dir() and (d / "results").is_dir())
