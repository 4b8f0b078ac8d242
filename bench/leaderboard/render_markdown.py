"""``leaderboard/README.md``: the board as GitHub-flavoured markdown, plots linked relatively.

Every string a record supplies (encoder and cohort names, artefact names, refusal reasons, file
names) goes through :func:`bench.leaderboard.fmt.md` and every table cell through :func:`_cell`,
so a hostile card can neither break the tables nor add HTML, links or images to the page.
"""

from __future__ import annotations

from pathlib import Path

from bench.leaderboard import fmt
from bench.leaderboard.board import Board, Overall, TaskTable
from bench.leaderboard.reliability_rows import INTRO as RELIABILITY_INTRO, cells as reliability_cells
from bench.leaderboard.site_rows import INTRO as SITE_INTRO, cells as site_cells
from bench.leaderboard.plots import Plot
from bench.leaderboard.sections import CardRow, CrossCohortRow, power_text

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


def rank_rule(board: Board) -> str:
    """The ranking rule in two sentences, as every output states it."""
    return (f"Every pair of entries in a table is compared by a paired bootstrap over the same test subjects "
            f"({board.n_boot} replicates; seed variance added where seeds change the fit), and the p-values "
            f"are Holm-adjusted within the table (alpha = {board.alpha}). An entry's rank is 1 + the number of "
            "entries that beat it after adjustment, made monotone in score, so rank r means at least r - 1 "
            "entries are better and no entry ranks below a worse-scoring one.")


def method_notes(board: Board) -> list[str]:
    """How to read the numbers; shared wording with the HTML page."""
    return [
        "- **Score**: the task's main metric on the test split at the protocol's headline setting, mean "
        "over seeds. In brackets its 95 % interval: where the seeds agree (a deterministic head: `seeds` "
        "says *3 identical*), the bootstrap CI over subjects; where they change the fit (fine-tuning, "
        "few-shot draws: `seeds` gives their SD), score -/+ t x sqrt(SE subjects^2 + SD seeds^2 / seeds) "
        "with Welch-Satterthwaite degrees of freedom, so training noise is in it. *no variation*: every "
        "resample scores the same. *n/a (constant predictions)*: the encoder predicts one value for every "
        "example, so the task does not apply to it; not ranked.",
        f"- **Rank**: {rank_rule(board)} `vs best` is the Holm-adjusted p against the best entry. Where "
        "two entries share no per-subject predictions (segmentation records keep none) their 95 % "
        "intervals decide instead (apart only if they do not overlap); those pairs are outside the Holm family. "
        "Where more entries beat an entry than its rank says (a worse-scoring entry with a wide interval, "
        "which nothing separates from the top, holds its rank), its flags say by how many.",
        "- **Overall**: mean rank over the ranking tasks each encoder has (its coverage in brackets), "
        "under each task's headline protocol. The Friedman test and the Nemenyi critical difference "
        "(Demsar 2006) run on the ranking tasks every tested encoder has, without ceilings, without a second "
        "name for the same network and without sanity-check tasks (`ranking: false`), each named; with few "
        "tasks they are descriptive only, as stated beside them.",
        "- **Label efficiency** (`fractions`): the mean score at each fraction of the training subjects "
        "below 100 % (at 100 % it is the linear probe); the nested subsets are drawn once, so the variance of "
        "the subset drawn is not in these numbers.",
        "- **Test split** (under each task): its subjects and examples and, for a classification task, the "
        "smallest AUC gap between two encoders the board's paired test detects with 80 % power at Holm's "
        "strictest level (alpha over the headline table's pairs), simulated on the split's labels and subjects "
        "(`bench.power`), with the Monte-Carlo error of that power.",
        "- **pretraining overlap**: some evaluated subjects were in the encoder's pretraining data.",
        "- **submitted (bundle)**: a `bench submit` bundle from the submissions folder, verified like every record "
        "but not rerun by a maintainer: its numbers follow from its predictions of the task's test examples with "
        "the committed labels; only a rerun shows that the encoder produced them. Every row without this flag "
        "was computed by the project's own runs.",
        "- **score not recomputed (no per-case predictions)**: a segmentation record, whose Dice needs voxel "
        "maps the record does not keep; its hashes, consistency and interval shapes are checked, its score is not.",
        "- Only records that pass `bench verify` (schema, task-spec and split hashes, every test example scored "
        "once with the committed labels, scores and headline intervals recomputed from their predictions) are "
        "shown; refused files are listed with the reason.",
    ]


def _overall_name(r) -> str:
    return fmt.md(r.encoder) + (f" ({fmt.md(r.role)})" if r.role else "")


def _overall(summary: Overall, plots: list[Plot], several: bool) -> list[str]:
    out = ["## Overall" + (f" ({fmt.md(summary.cohort)})" if several else ""), ""]
    out.append(overall_intro(summary))
    out.append("")
    header = ["encoder", "mean rank (tasks)"] + summary.tasks
    rows = [[_overall_name(r), f"{fmt.num(r.mean_rank, 2)} ({r.n_tasks}/{len(summary.tasks)})"]
            + ["-" if r.ranks[t] is None else r.ranks[t] for t in summary.tasks] for r in summary.rows]
    out += _table(header, rows, "lr" + "r" * len(summary.tasks))
    out += ["", "**Overall test.** " + cd_text(summary), ""]
    for p in plots:
        if p.kind == "critical_difference" and p.cohort == summary.cohort:
            out += [f"![{fmt.md(p.alt)}]({p.png})", ""]
    return out


def overall_intro(summary: Overall) -> str:
    """The sentence above the overall table (plain text with markdown-inert names)."""
    text = (f"Mean rank over the {len(summary.tasks)} ranking task(s) on cohort {fmt.md(summary.cohort)}, each "
            "under its headline protocol (linear probe unless the task says otherwise); sorted by mean rank, "
            "coverage in brackets.")
    if summary.not_ranking:
        text += f" Not ranking tasks (sanity checks, `ranking: false`): {', '.join(summary.not_ranking)}."
    if summary.left_out:
        text += f" Left out (no headline-protocol records): {', '.join(summary.left_out)}."
    return text


def cd_text(summary: Overall, name=fmt.md) -> str:
    """The overall test; encoder names through ``name`` (markdown-inert by default; the HTML page
    passes them plain and escapes the whole text as HTML)."""
    cd = summary.cd
    left = "; ".join(f"{name(e)} ({name(why)})" for e, why in sorted(cd.left_out.items()))
    scope = (f"Tested: {len(cd.encoders)} encoders on the {cd.n_tasks} ranking tasks all of them have"
             + (f" ({', '.join(cd.tasks)})" if cd.tasks else "") + "."
             + (f" Left out: {left}." if left else "")
             + (" Tasks left out: " + "; ".join(f"{t} ({why})" for t, why in cd.tasks_left_out.items()) + "."
                if cd.tasks_left_out else ""))
    if not cd.computed:
        return scope + " " + cd.note[:1].upper() + cd.note[1:] + "."
    ranks = ", ".join(f"{name(e)} {r:.2f}" for e, r in sorted(cd.mean_ranks.items(), key=lambda kv: (kv[1], kv[0])))
    pairs = ("; pairs further apart than the CD: " + ", ".join(f"{name(a)} vs {name(b)}" for a, b in cd.different)
             if cd.different else "; no pair of encoders is further apart than the CD")
    text = (f"{scope} Friedman chi2 = {cd.chi2:.2f} (k = {len(cd.encoders)}, N = {cd.n_tasks}), "
            f"p = {cd.p_value:.3g}; Nemenyi CD = {cd.cd:.2f} at alpha = {cd.alpha}; mean ranks by point score on "
            f"those tasks: {ranks}{pairs}.")
    if cd.note:
        text += f" Caution: {cd.note}."
    return text


def task_heading_text(table: TaskTable) -> str:
    """The line under a task's description: its main score named exactly, and whether it ranks."""
    direction = "higher" if table.higher_is_better else "lower"
    text = (f"Main score `{table.metric}`: {table.metric_label} ({direction} is better); headline protocol "
            f"{fmt.protocol_label(table.headline_protocol)}.")
    if not table.ranking:
        text += " A sanity check (`ranking: false`): ranked here, left out of the overall ranking."
    return text


def fraction_cells(table: TaskTable) -> tuple[list[str], list[list[str]]]:
    """Header and rows (plain text) of a task's label-efficiency table."""
    from bench.leaderboard.label_efficiency import fractions_of

    fractions = fractions_of(table.label_efficiency)
    header = ["encoder"] + [f"{100 * f:g} %" for f in fractions]
    rows = []
    for r in table.label_efficiency:
        cells = [r.encoder]
        for f in fractions:
            mean, sd = r.points.get(f, (None, None))
            cells.append("-" if mean is None else fmt.num(mean) + ("" if not sd else f" (SD {sd:.3f})"))
        rows.append(cells)
    return header, rows


LABEL_EFFICIENCY_INTRO = ("Label efficiency (`fractions`): mean test score over seeds at each fraction of the training "
                          "subjects (at 100 % it is the linear probe above; SD over seeds where they differ). "
                          "Not ranked: each nested subset was drawn once, so the variance of the subset drawn is "
                          "not in these numbers.")
ROBUSTNESS_INTRO = "Robustness (test split; chance-corrected score / clean over every artefact and severity):"


def _task(table: TaskTable, board: Board, plots: list[Plot]) -> list[str]:
    out = [f"## {fmt.md(table.task)} v{table.version} ({fmt.md(table.cohort)})", "", table.description, "",
           task_heading_text(table), "", fmt.md(power_text(table.power)), ""]
    header = ["rank", "encoder", "protocol", f"{table.metric} (95 % interval)", "Holm p vs best", "seeds", "n test",
              "task", "split", "flags"]
    rows = []
    for r in table.rows:
        e = r.entry
        rows.append([fmt.rank(r), fmt.md(e.encoder), fmt.protocol_label(e.protocol), fmt.score_with_ci(r),
                     "-" if r.status else fmt.comparison(r.vs_best), fmt.seeds(e),
                     "-" if e.n_test_subjects is None else e.n_test_subjects,
                     f"v{e.record.task_version}", f"`{e.split_sha_short}`", fmt.short_flags(r)])
    out += _table(header, rows, "rlllllrlll")
    if table.label_efficiency:
        head, cells = fraction_cells(table)
        out += ["", LABEL_EFFICIENCY_INTRO, ""]
        out += _table(head, [[fmt.md(c[0])] + c[1:] for c in cells], "l" + "r" * (len(head) - 1))
    if table.robustness:
        out += ["", ROBUSTNESS_INTRO, ""]
        out += _table(["encoder", f"clean {table.metric} (95 % interval)", "robustness (chance-corrected)",
                       "worst artefact (share of the margin over chance lost)"],
                      [[fmt.md(r.encoder), fmt.num_with_ci(r.clean, *r.clean_ci), fmt.robustness_score(r),
                        "-" if r.worst is None else f"{fmt.md(r.worst)} ({100 * r.worst_drop:.1f} %)"]
                       for r in table.robustness], "lrrl")
        out += ["", fmt.chance_note(table.robustness)]
    if table.reliability:
        head, cells = reliability_cells(table.reliability)
        out += ["", RELIABILITY_INTRO, ""]
        out += _table(head, [[fmt.md(c) for c in row] for row in cells], "llr" + "r" * (len(head) - 3))
    if table.site:
        head, cells = site_cells(table.site)
        out += ["", SITE_INTRO, ""]
        out += _table(head, [[fmt.md(c) for c in row] for row in cells], "l" + "r" * (len(head) - 1))
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
            "worse out of distribution), with its 95 % interval (the two scores are on different subjects: their variances "
            "add). Not ranked; not part of the overall ranking or its test.")


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
                 fmt.entry_score(r.in_distribution), fmt.drop_with_ci(r.drop, r.drop_ci),
                 f"`{r.entry.split_sha_short}`", fmt.short_flags(r)] for r in group]
        out += _table(["encoder", f"cross-cohort {first.metric} (95 % CI)", "scored on", "n scored",
                       f"in-distribution linear probe {first.metric} (95 % CI)", "drop", "split", "flags"],
                      rows, "llllllll") + [""]
    return out


def card_cells(c: CardRow) -> list[str]:
    """A card's cells (plain text; the renderers escape them): what the encoder is and what it saw."""
    data = "-" if c.pretraining_cohort is None else (
        f"{c.pretraining_cohort}, {'-' if c.pretraining_subjects is None else c.pretraining_subjects} subjects, "
        f"{c.lineage} steps")
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
    lines += [f"**How ranks are decided.** {rank_rule(board)}", ""]
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
