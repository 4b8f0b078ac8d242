"""What ``bench run`` and ``bench suite run`` print when the jobs are done: the results, whole.

A rich table cut to the terminal (or to 80 columns when piped) ends the headline in ``…`` and drops
the interval; the number is what the user came for. So the table is drawn only when every cell
fits the console's width; otherwise each result is one line, never cut (a terminal wraps it, a
file keeps it whole). A reused job says which record it read, and the floors it is compared with
follow (:mod:`bench.commands._floors`).
"""

from __future__ import annotations

import time

from bench.commands._args import console, err_console

COLUMNS = ("encoder", "task", "protocol", "main score (95% CI)", "status", "seconds")


def score_text(main: float | None, ci: tuple) -> str:
    """``0.614 (0.512-0.710)``: the headline and its whole interval; ``-`` without a score."""
    text = "-" if main is None else f"{main:.3f}"
    if ci[0] is not None and ci[1] is not None:
        text += f" ({ci[0]:.3f}-{ci[1]:.3f})"
    return text


def status_text(result) -> str:
    """The job's status; a reused one names the record it read (it was this run's identity)."""
    from bench.runner import SKIPPED

    return f"reused ({result.path})" if result.status == SKIPPED else result.status


def result_rows(results: list) -> list[list[str]]:
    return [[r.encoder, r.task, r.protocol, score_text(r.main_score, r.ci), status_text(r), f"{r.seconds:.1f}"]
            for r in results]


def fits(rows: list[list[str]], width: int) -> bool:
    """Whether a rich table of ``rows`` (and the header) is no wider than ``width`` uncut: each column
    as wide as its longest cell, plus the borders and one space of padding either side."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(COLUMNS, *rows)]
    return sum(widths) + 3 * len(widths) + 1 <= width


def print_rows(title: str, rows: list[list[str]]) -> None:
    """The table where it fits, else ``title`` and one line per result."""
    if fits(rows, console.width):
        from rich.table import Table

        table = Table(title=title)
        for col in COLUMNS:
            table.add_column(col, no_wrap=True)
        for row in rows:
            table.add_row(*row)
        console.print(table, highlight=False)
        return
    console.print(title, highlight=False, soft_wrap=True)
    for encoder, task, protocol, score, status, seconds in rows:
        console.print(f"  {encoder} {task} {protocol}: {score}; {status}; {seconds} s",
                      highlight=False, soft_wrap=True, markup=False)


def print_results(title: str, results: list, folder, start: float, floors: bool = True) -> list:
    """The results, one line per failure, the floors each result is compared with (``floors``: a
    suite's dozens of results leave that to the board) and the closing line; returns the failed
    results."""
    from bench.commands._floors import floor_lines

    print_rows(title, result_rows(results))
    failed = [r for r in results if r.failed]
    for r in failed:
        err_console.print(f"[red]failed[/red] {r.key}: {r.error}", highlight=False, soft_wrap=True)
    for line in floor_lines(results, folder) if floors else []:
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    console.print(f"records under {folder}; total {time.perf_counter() - start:.1f} s"
                  + (f"; {len(failed)} job(s) failed (see `bench status --results {folder}`)" if failed else ""),
                  highlight=False, soft_wrap=True)
    return failed
