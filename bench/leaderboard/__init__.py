"""The leaderboard: verified result records -> ranked tables, plots, markdown / HTML / CSV / LaTeX.

Data flows one way: :mod:`.verify` checks each record against the repository, :mod:`.entries`
loads a results folder into verified entries, :mod:`.ranking` turns one table's entries into
ranks (all pairs tested, Holm-adjusted, monotone in score), :mod:`.aggregate` summarises across
tasks (mean rank, Friedman / Nemenyi over the encoders it can measure), :mod:`.board` holds all of it, :mod:`.plots` draws the figures and
the ``render_*`` modules format the board. :mod:`.api_checks` and :mod:`.submit` are the way a
new encoder gets onto the board (``bench submit``).
"""

from __future__ import annotations

from pathlib import Path

from bench.leaderboard.board import Board, build_board, load_board

FORMATS = ("markdown", "html", "csv")

__all__ = ["Board", "FORMATS", "build_board", "load_board", "render"]


def render(board: Board, out_dir: str | Path, formats: tuple[str, ...] | list[str] = FORMATS, *,
           screenshot: bool = False) -> list[Path]:
    """Write the board's plots and the chosen outputs into ``out_dir``; return the files written.

    Plots are redrawn every time and stale ones (from encoders or tasks no longer on the board)
    are removed, so ``out_dir/plots`` always matches the records. With ``screenshot`` the page is
    photographed in headless Chromium (:mod:`.browser`) before the README, which shows it.
    """
    from bench.leaderboard.plots import write_plots
    from bench.leaderboard.render_csv import render_csv
    from bench.leaderboard.render_html import render_html
    from bench.leaderboard.render_markdown import render_markdown

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if {"markdown", "html"} & set(formats) or screenshot:
        board.plots = write_plots(board, out_dir)
        keep = {out_dir / p.png for p in board.plots} | {out_dir / p.svg for p in board.plots}
        for stale in sorted((out_dir / "plots").glob("*")):
            if stale.suffix in (".png", ".svg") and stale not in keep:
                stale.unlink()
        written += sorted(keep)
    if "csv" in formats:
        written.append(render_csv(board, out_dir))
    if "html" in formats or screenshot:
        written.append(render_html(board, out_dir))
    if screenshot:
        from bench.leaderboard.browser import screenshot as take

        written.append(take(out_dir / "index.html", out_dir / "screenshot.png"))
    if "markdown" in formats:
        written.append(render_markdown(board, out_dir))
    return written
