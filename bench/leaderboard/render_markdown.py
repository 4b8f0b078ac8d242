"""``leaderboard/README.md``: the board as GitHub-flavoured markdown, plots linked relatively.

Every string a record supplies (encoder and cohort names, artefact names, refusal reasons, file
names) goes through :func:`bench.leaderboard.fmt.md` and every table cell through :func:`_cell`,
so a hostile card can neither break the tables nor add HTML, links or images to the page.
"""

from __future__ import annotations

from pathlib import Path

from bench.leaderboard import fmt
from bench.leaderboard.board import Board, Overall, TaskTable
from bench.leaderboard.plots import Plot
from bench.leaderboard.sections import CardRow, CrossCohortRow, SplitPower

#: Heading of the cross-cohort section (markdown and HTML).
CROSS_COHORT_TITLE = "Cross-cohort (held-out site / cohort)"


def _cell(text: object) -> str:
    """A table cell: one line, with ``|`` escaped so it cannot open another column."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(header: list[str], rows: list[list[object]], align: str | None = None) -> list[str]:
    align = align or "l" * len(header)
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks[a] for a in align) + " |"]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def method_notes(board: Board) -> list[str]:
    """How to read the numbers; shared wording with the HTML page."""
    return [
        "- **Score**: the task's main metric on the test split at the protocol's headline setting, mean "
        "over seeds; in brackets the mean over seeds of the per-seed 95 % bootstrap CI over subjects.",
        f"- **Rank**: entries that a paired bootstrap over the same test subjects ({board.n_boot} "
        f"replicates, seed {board.seed}, two-sided alpha = {board.alpha}) cannot separate from the best "
        f"entry of the protocol share its rank; the next best separable entry opens the next rank "
        f"group (ranks 1, 1, 3 ...). `p` is the paired test against the best entry; where no shared "
        f"per-subject predictions exist the 95 % CIs decide (separable only if they do not overlap).",
        "- **Borda**: per task, one point per encoder (with every task) in a strictly worse rank group, "
        "summed over tasks, under each task's headline protocol; empty where an encoder lacks a task. "
        "**Mean rank** averages the per-task ranks the encoder has.",
        "- **Critical difference**: Friedman test over tasks and the Nemenyi critical difference on "
        "mean ranks (Demsar 2006); with few tasks it is descriptive only, as stated beside it.",
        "- **Test split** (under each task): its subjects and examples and, for a classification task, the "
        "smallest AUC gap between two encoders the paired bootstrap detects at 80 % power, simulated on the "
        "split's labels and subjects (`bench.power`: binormal scores, AUC 0.80 vs 0.80 - gap); a smaller "
        "gap between two entries is not reliably told apart there.",
        "- **pretraining overlap**: some evaluated subjects were in the encoder's pretraining data.",
        "- **submitted (bundle)**: a `bench submit` bundle from the submissions folder, verified like every record.",
        "- Only records that pass `bench verify` (schema, task-spec and split hashes, scores "
        "recomputed from their predictions) are shown; refused files are listed with the reason.",
    ]


def _overall(summary: Overall, plots: list[Plot], several: bool) -> list[str]:
    out = ["## Overall" + (f" ({fmt.md(summary.cohort)})" if several else ""), ""]
    out.append(f"Each task's headline protocol (linear probe unless the task says otherwise), "
               f"{len(summary.tasks)} task(s) on cohort {fmt.md(summary.cohort)}."
               + (f" Left out (no headline-protocol records): {', '.join(summary.left_out)}."
                  if summary.left_out else ""))
    out.append("")
    header = ["encoder", "Borda", "mean rank (tasks)"] + summary.tasks
    rows = [[fmt.md(r.encoder), "-" if r.borda is None else r.borda,
             f"{fmt.num(r.mean_rank, 2)} ({r.n_tasks})"] + ["-" if r.ranks[t] is None else r.ranks[t]
                                                           for t in summary.tasks] for r in summary.rows]
    out += _table(header, rows, "lrr" + "r" * len(summary.tasks))
    out += ["", "**Critical difference.** " + cd_text(summary), ""]
    for p in plots:
        if p.kind == "critical_difference" and p.cohort == summary.cohort:
            out += [f"![{fmt.md(p.alt)}]({p.png})", ""]
    return out


def cd_text(summary: Overall, name=fmt.md) -> str:
    """The critical-difference summary; encoder names through ``name`` (markdown-inert by default;
    the HTML page passes them plain and escapes the whole text as HTML)."""
    cd = summary.cd
    if not cd.computed:
        return cd.note[:1].upper() + cd.note[1:] + "."
    ranks = ", ".join(f"{name(e)} {r:.2f}" for e, r in sorted(cd.mean_ranks.items(), key=lambda kv: (kv[1], kv[0])))
    pairs = ("; pairs further apart than the CD: " + ", ".join(f"{name(a)} vs {name(b)}" for a, b in cd.different)
             if cd.different else "; no pair of encoders is further apart than the CD")
    text = (f"Friedman chi2 = {cd.chi2:.2f} (k = {len(cd.encoders)} encoders, N = {cd.n_tasks} tasks), "
            f"p = {cd.p_value:.3g}; Nemenyi CD = {cd.cd:.2f} at alpha = {cd.alpha}; mean ranks: {ranks}{pairs}.")
    if cd.note:
        text += f" Caution: {cd.note}."
    return text


def power_text(power: SplitPower | None) -> str:
    """The power line under a task's heading (plain text: the renderers escape it)."""
    from bench.power import GAPS

    if power is None or power.n_subjects is None:
        return "Test split: size unknown (no record gives it)."
    text = f"Test split: {power.n_subjects} subjects, {power.n_examples} examples."
    if power.gap is None:
        return text + (f" Detectable AUC gap: not computed ({power.note})." if power.note else
                       " (The AUC power line is for classification tasks.)")
    proxy = f"{power.proxy}; " if power.proxy else ""
    how = f"{proxy}paired bootstrap, {power.n_sim} simulated replicates per gap, bench.power's model"
    if not power.found:
        why = f": {power.note}" if power.note else ""
        return text + (f" Smallest AUC gap detectable at 80 % power: none up to {GAPS[-1]:.2f}{why} "
                       f"({how}); rank groups here mostly reflect chance.")
    return text + f" Smallest AUC gap detectable at 80 % power: {power.gap:.2f} ({how})."


def _task(table: TaskTable, board: Board, plots: list[Plot]) -> list[str]:
    direction = "higher" if table.higher_is_better else "lower"
    out = [f"## {fmt.md(table.task)} v{table.version} ({fmt.md(table.cohort)})", "", table.description, "",
           f"Main score `{table.metric}` ({direction} is better); headline protocol "
           f"{fmt.protocol_label(table.headline_protocol)}.", "", fmt.md(power_text(table.power)), ""]
    header = ["rank", "encoder", "protocol", f"{table.metric} (95 % CI)", "vs best", "n test", "task",
              "split", "flags"]
    rows = []
    for r in table.rows:
        e = r.entry
        rows.append([fmt.rank(r), fmt.md(e.encoder), fmt.protocol_label(e.protocol), fmt.score_with_ci(r),
                     fmt.comparison(r.vs_best, board.n_boot), "-" if e.n_test_subjects is None else e.n_test_subjects,
                     f"v{e.record.task_version}", f"`{e.split_sha_short}`", fmt.short_flags(r)])
    out += _table(header, rows, "rllllrlll")
    if table.robustness:
        out += ["", "Robustness (test split; score / clean averaged over every artefact and severity, "
                    "1 = unaffected):", ""]
        out += _table(["encoder", f"clean {table.metric} (95 % CI)", "robustness score", "worst artefact (mean drop)"],
                      [[fmt.md(r.encoder), fmt.num_with_ci(r.clean, *r.clean_ci),
                        fmt.robustness_score(r),
                        "-" if r.worst is None else f"{fmt.md(r.worst)} ({100 * r.worst_drop:.1f} %)"]
                       for r in table.robustness], "lrrl")
        note = fmt.chance_note(table.robustness)
        if note:
            out += ["", note]
    mine = [p for p in plots if p.task == table.task and p.cohort == table.cohort]
    if mine:
        out += [""] + [f"![{fmt.md(p.alt)}]({p.png})" for p in mine]
    return out + [""]


def transfer_groups(rows: list[CrossCohortRow]) -> list[list[CrossCohortRow]]:
    """Cross-cohort rows grouped by task and transfer, in board order (one table each)."""
    groups: dict[tuple, list[CrossCohortRow]] = {}
    for r in rows:
        groups.setdefault((r.task, r.version, r.train, r.test), []).append(r)
    return list(groups.values())


def transfer_intro() -> str:
    return ("A probe head fitted on the training side (its train split, its sites) and scored on the test side "
            "(its test split, or every subject the head never saw when the side has no test subjects, e.g. a "
            "held-out site), beside the same encoder's in-distribution linear probe on the task and training "
            "cohort. **Drop**: in-distribution minus cross-cohort score in the direction of worse (positive: "
            "worse out of distribution). Not ranked; not part of Borda or the critical difference.")


def _cross_cohort(board: Board) -> list[str]:
    if not board.cross_cohort:
        return []
    out = [f"## {CROSS_COHORT_TITLE}", "", transfer_intro(), ""]
    for group in transfer_groups(board.cross_cohort):
        first = group[0]
        out += [f"### {fmt.md(first.task)} v{first.version}: {fmt.md(first.train)} -> {fmt.md(first.test)}", "",
                f"Scored as task {fmt.md(first.test_task)}; main score `{first.metric}` "
                f"({'higher' if first.higher_is_better else 'lower'} is better).", ""]
        rows = [[fmt.md(r.encoder), fmt.entry_score(r.entry), r.split,
                 "-" if r.entry.n_test_subjects is None else r.entry.n_test_subjects,
                 fmt.entry_score(r.in_distribution), fmt.drop(r.drop),
                 f"`{r.entry.split_sha_short}`", fmt.short_flags(r)] for r in group]
        out += _table(["encoder", f"cross-cohort {first.metric} (95 % CI)", "scored on", "n scored",
                       f"in-distribution linear probe {first.metric} (95 % CI)", "drop", "split", "flags"],
                      rows, "llllllll") + [""]
    return out


def card_cells(c: CardRow) -> list[str]:
    """A card's cells (plain text; the renderers escape them): what the encoder is and what it saw."""
    data = "-" if c.pretraining_cohort is None else (
        f"{c.pretraining_cohort}, {'-' if c.pretraining_subjects is None else c.pretraining_subjects} subjects, "
        f"{'-' if c.pretraining_steps is None else c.pretraining_steps} steps")
    mixed = f" ({c.n_cards} cards differ across its records)" if c.n_cards > 1 else ""
    return [c.encoder + mixed, c.architecture, fmt.parameters(c.n_parameters),
            "-" if c.embed_dim is None else str(c.embed_dim), c.input_space, c.ssl_method, data,
            c.checkpoint_short or "-"]


CARD_HEADER = ["encoder", "architecture", "parameters", "embed dim", "input space", "SSL method",
               "pretraining data (cohort, subjects, steps)", "checkpoint"]


def _cards(board: Board) -> list[str]:
    if not board.cards:
        return []
    rows = [[fmt.md(v) for v in card_cells(c)] for c in board.cards]
    for row, c in zip(rows, board.cards):
        row[-1] = f"`{row[-1]}`" if c.checkpoint_short else row[-1]
    return ["## Encoder cards", "", "As each encoder's records carry its card (`provenance.encoder_card`); "
            "checkpoint: the first 12 hex digits of its SHA-256.", ""] + _table(CARD_HEADER, rows, "llrrllll") + [""]


def render_markdown(board: Board, out_dir: str | Path) -> Path:
    """Write ``out_dir/README.md``; the screenshot is shown when ``out_dir/screenshot.png`` exists."""
    out_dir = Path(out_dir)
    several = len(board.cohorts) > 1
    lines = ["# mribench leaderboard", "",
             f"Rendered by `bench leaderboard` from {len(board.entries) + len(board.cross_cohort)} verified "
             f"result record(s){f' ({len(board.cross_cohort)} cross-cohort)' if board.cross_cohort else ''} in "
             f"`{board.results_label}/` ({len(board.encoders)} encoders, {len({t.task for t in board.tables})} "
             f"tasks, cohort {', '.join(fmt.md(c) for c in board.cohorts)}); {len(board.refused)} refused. "
             "The same board as a sortable, filterable page: [index.html](index.html); as CSV: "
             "[results.csv](results.csv).", ""]
    if board.note:
        lines += [board.note, ""]
    if (out_dir / "screenshot.png").is_file():
        lines += ["![the leaderboard page in a browser](screenshot.png)", ""]
    for summary in board.overall:
        lines += _overall(summary, board.plots, several)
    for table in board.tables:
        lines += _task(table, board, board.plots)
    lines += _cross_cohort(board) + _cards(board)
    if board.refused:
        lines += ["## Refused records", ""]
        lines += [f"- {fmt.md(r.source)}: {fmt.md(r.reason)}" for r in board.refused] + [""]
    lines += ["## How to read this", ""] + method_notes(board) + [""]
    from bench.atomic import atomic_write_bytes

    return atomic_write_bytes(out_dir / "README.md", "\n".join(lines).encode("utf-8"), mode=0o644)
