"""Paper-ready LaTeX tables: one task (``bench leaderboard --format latex --task T``), or the
encoder x task matrix of a cohort (``--format latex`` without ``--task``).

booktabs rules, one block per protocol, in bold every entry that no other entry beats after Holm's
adjustment within the table (as good as the best, so all of them are bold), the 95 % interval
in ``\\scriptsize`` after the score and the Holm-adjusted p against the best entry. Needs ``\\usepackage{booktabs}`` in the preamble.
"""

from __future__ import annotations

import re

from bench.errors import MribenchError
from bench.leaderboard import fmt
from bench.leaderboard.board import Board

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex(text: object) -> str:
    """Escape LaTeX's special characters."""
    return re.sub(r"[\\&%$#_{}~^]", lambda m: _SPECIAL[m.group(0)], str(text))


def render_latex(board: Board, task: str, *, cohort: str | None = None, protocols: list[str] | None = None,
                 digits: int = 3) -> str:
    """The table as a LaTeX ``table`` environment (a string; the CLI prints it)."""
    table = board.table(task, cohort)
    chosen = [p for p in table.by_protocol if not protocols or p in protocols]
    if not chosen:
        raise MribenchError(f"task '{task}' has no records for protocol(s) {', '.join(protocols or [])}; "
                            f"it has {', '.join(table.by_protocol)}")
    arrow = _arrow(table.higher_is_better)
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{llrrrr}", r"\toprule",
             rf"Encoder & Protocol & {tex(table.metric)} {arrow} & Rank & Holm $p$ vs best & $n$ \\", r"\midrule"]
    for i, protocol in enumerate(chosen):
        if i:
            lines.append(r"\midrule")
        for r in table.by_protocol[protocol]:
            e = r.entry
            score = _score_cell(r, digits)
            name = tex(e.encoder) + (r"$^\dagger$" if e.overlap else "") + (SUBMITTED if e.submitted else "")
            vs = "--" if r.status else tex(fmt.comparison(r.vs_best)).replace("<", r"$<$")
            lines.append(rf"{name} & {tex(fmt.protocol_label(protocol))} & {score} & {fmt.rank(r)} & {vs} & "
                         rf"{'--' if e.n_test_subjects is None else e.n_test_subjects} \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    overlap = any(r.entry.overlap for p in chosen for r in table.by_protocol[p])
    caption = (f"{tex(table.task)} (v{table.version}, cohort {tex(table.cohort)}): {tex(table.metric_label)} on "
               f"the test split, mean over seeds, with its 95\\,\\% interval in brackets (subjects, and seeds where "
               f"they change the fit). {_RULE.format(n_boot=board.n_boot, alpha=board.alpha)}")
    if overlap:
        caption += r" $^\dagger$: some test subjects were in the encoder's pretraining data."
    caption += submitted_note([r.entry for p in chosen for r in table.by_protocol[p]])
    lines += [rf"\caption{{{caption}}}", rf"\label{{tab:{re.sub(r'[^A-Za-z0-9]+', '-', table.task)}}}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"


#: The mark of a submitted row (a record from a ``bench submit`` bundle), as markdown and HTML
#: flag it "submitted (bundle)": a reader must see which rows the maintainers did not produce.
SUBMITTED = r"$^{\S}$"


def submitted_note(entries) -> str:
    """The caption's sentence for :data:`SUBMITTED` rows, naming their bundles ('' without any)."""
    bundles = sorted({e.submitted for e in entries if e.submitted})
    if not bundles:
        return ""
    return (f" {SUBMITTED}: submitted in a bench submit bundle ({', '.join(map(tex, bundles))}), verified against "
            "the repository, not rerun by its maintainers.")


#: The ranking rule as a caption states it.
_RULE = ("Rank: 1 + the entries that beat it in a paired bootstrap over the same test subjects ({n_boot} "
         "replicates), Holm-adjusted over all pairs of the table at $\\alpha = {alpha}$, monotone in score; "
         "bold: no entry beats it.")


def _arrow(higher_is_better: bool) -> str:
    return r"$\uparrow$" if higher_is_better else r"$\downarrow$"


def _score_cell(ranked, digits: int) -> str:
    """Score (bold where no entry beats it) with its interval in ``\\scriptsize`` after it."""
    e = ranked.entry
    if ranked.status:
        return tex(ranked.status)
    score = "--" if e.score is None else f"{e.score:.{digits}f}"
    if ranked.rank == 1 and not ranked.beaten_by:
        score = rf"\textbf{{{score}}}"
    low, high = e.ci
    if e.zero_width:
        score += r" {\scriptsize [no variation]}"
    elif low is not None and high is not None:
        score += rf" {{\scriptsize [{low:.{digits}f}, {high:.{digits}f}]}}"
    return score


def _matrix_cell(ranked, digits: int) -> str:
    """The score cell, with the pretraining-overlap mark (the matrix has no name per cell)."""
    return (_score_cell(ranked, digits) + (r"$^\dagger$" if ranked.entry.overlap else "")
            + (SUBMITTED if ranked.entry.submitted else ""))


def render_latex_matrix(board: Board, *, protocol: str = "linear_probe", cohort: str | None = None,
                        digits: int = 3) -> str:
    """Encoder x task under one protocol, one ``table`` per cohort: what a paper prints to compare
    encoders across a benchmark. Rows follow the cohort's mean rank (best first) where the board
    has one; an encoder without a record for a task shows ``--``."""
    cohorts = [c for c in board.cohorts if cohort is None or c == cohort]
    blocks = []
    for c in cohorts:
        tables = sorted((t for t in board.tables if t.cohort == c and protocol in t.by_protocol),
                        key=lambda t: t.task)
        if not tables:
            continue
        cells = {(r.entry.encoder, t.task): r for t in tables for r in t.by_protocol[protocol]}
        overall = next((o for o in board.overall if o.cohort == c), None)
        order = [row.encoder for row in overall.rows] if overall else []
        encoders = [e for e in order if any(k[0] == e for k in cells)]
        encoders += sorted({e for e, _ in cells} - set(encoders))
        head = " & ".join(f"{tex(t.task)} ({tex(t.metric)} {_arrow(t.higher_is_better)})" for t in tables)
        lines = [r"\begin{table}[t]", r"\centering", r"\scriptsize",
                 rf"\begin{{tabular}}{{l{'r' * len(tables)}}}", r"\toprule", rf"Encoder & {head} \\", r"\midrule"]
        for enc in encoders:
            row = [_matrix_cell(cells[(enc, t.task)], digits) if (enc, t.task) in cells else "--" for t in tables]
            lines.append(rf"{tex(enc)} & {' & '.join(row)} \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        caption = (f"Cohort {tex(c)}, protocol {tex(fmt.protocol_label(protocol))}: the main score of each task on "
                   f"its test split, mean over seeds, with its 95\\,\\% interval in brackets (subjects, and seeds "
                   f"where they change the fit). {_RULE.format(n_boot=board.n_boot, alpha=board.alpha)}")
        if any(r.entry.overlap for r in cells.values()):
            caption += r" $^\dagger$: some test subjects were in the encoder's pretraining data."
        caption += submitted_note([r.entry for r in cells.values()])
        lines += [rf"\caption{{{caption}}}", rf"\label{{tab:{re.sub(r'[^A-Za-z0-9]+', '-', c)}-{protocol}}}",
                  r"\end{table}"]
        blocks.append("\n".join(lines) + "\n")
    if not blocks:
        raise MribenchError(f"no verified {protocol} records" + (f" on cohort {cohort}" if cohort else "")
                            + f"; the board has cohort(s) {', '.join(board.cohorts) or 'none'}")
    return "\n".join(blocks)
