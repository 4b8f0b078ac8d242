"""A paper-ready LaTeX table of one task (``bench leaderboard --format latex --task T``).

booktabs rules, one block per protocol, the best rank group in bold (entries a paired bootstrap
cannot separate from the best are as good as the best, so all of them are bold), and the 95 % CI
in ``\\scriptsize`` after the score. Needs ``\\usepackage{booktabs}`` in the preamble.
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
    arrow = r"$\uparrow$" if table.higher_is_better else r"$\downarrow$"
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{llrrr}", r"\toprule",
             rf"Encoder & Protocol & {tex(table.metric)} {arrow} & Rank & $n$ \\", r"\midrule"]
    for i, protocol in enumerate(chosen):
        if i:
            lines.append(r"\midrule")
        for r in table.by_protocol[protocol]:
            e = r.entry
            score = "--" if e.score is None else f"{e.score:.{digits}f}"
            if r.group == 1:
                score = rf"\textbf{{{score}}}"
            low, high = e.ci
            if low is not None and high is not None:
                score += rf" {{\scriptsize [{low:.{digits}f}, {high:.{digits}f}]}}"
            name = tex(e.encoder) + (r"$^\dagger$" if e.overlap else "")
            lines.append(rf"{name} & {tex(fmt.protocol_label(protocol))} & {score} & {fmt.rank(r)} & "
                         rf"{'--' if e.n_test_subjects is None else e.n_test_subjects} \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    overlap = any(r.entry.overlap for p in chosen for r in table.by_protocol[p])
    caption = (f"{tex(table.task)} (v{table.version}, cohort {tex(table.cohort)}): {tex(table.metric)} on "
               f"the test split, mean over seeds, with the mean 95\\,\\% bootstrap CI over subjects in "
               f"brackets. Bold: the best rank group (not separable from the best entry by a paired "
               f"bootstrap over the same test subjects, {board.n_boot} replicates, $\\alpha = {board.alpha}$).")
    if overlap:
        caption += r" $^\dagger$: some test subjects were in the encoder's pretraining data."
    lines += [rf"\caption{{{caption}}}", rf"\label{{tab:{re.sub(r'[^A-Za-z0-9]+', '-', table.task)}}}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"
