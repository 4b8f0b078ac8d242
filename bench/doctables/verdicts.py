"""Sentences that state what a family of paired tests shows, and nothing more.

A document's claim about "A against B" is one of three, read from the board's paired test
(:mod:`bench.doctables.cells`) with the family's p-values Holm-adjusted together, as the board
adjusts a table's (:func:`bench.stats.holm`): better, worse, or not told apart at adjusted
p < 0.05. Point estimates alone ("ahead on all three") are never a claim: two scores whose test
does not separate them are listed as not told apart.
"""

from __future__ import annotations

from bench.doctables.cells import ALPHA, Versus, join_names
from bench.stats import holm


def sort_out(tests: list[tuple[str, str, Versus | None]]) -> dict[str, dict[str, list[str]]]:
    """``better`` / ``worse`` / ``not told apart`` / ``untested`` -> name -> the tasks, from
    (name, task label, test) triples in order, at Holm-adjusted p < 0.05 over the triples' tests."""
    adjusted = holm([None if v is None else v.p for _, _, v in tests])
    out: dict[str, dict[str, list[str]]] = {k: {} for k in ("better", "worse", "not told apart", "untested")}
    for (name, task, v), p in zip(tests, adjusted):
        if v is None or p is None:
            kind = "untested"
        elif p < ALPHA and v.a_better:
            kind = "better"
        elif p < ALPHA and v.a_better is False:
            kind = "worse"
        else:
            kind = "not told apart"
        out[kind].setdefault(name, []).append(task)
    return out


def bullets(tests: list[tuple[str, str, Versus | None]], against: str) -> list[str]:
    """One bullet per verdict that occurs: ``- better than its init (Holm p < 0.05): `a` (brain age)``."""
    sorted_out = sort_out(tests)
    words = {"better": f"better than {against} (Holm p < {ALPHA:g})",
             "worse": f"worse than {against} (Holm p < {ALPHA:g})",
             "not told apart": f"not told apart from {against} (Holm p >= {ALPHA:g})",
             "untested": "no paired test (no shared predictions)"}
    lines = []
    for kind, by_name in sorted_out.items():
        if by_name:
            items = [f"`{name}` ({join_names(tasks)})" for name, tasks in by_name.items()]
            lines.append(f"- {words[kind]}: {'; '.join(items)}")
    return lines


def better_on_at_least(tests: list[tuple[str, str, Versus | None]], count: int) -> list[str]:
    """The names better (Holm p < 0.05 over the family) on at least ``count`` of their tasks."""
    better = sort_out(tests)["better"]
    return [name for name, tasks in better.items() if len(tasks) >= count]
