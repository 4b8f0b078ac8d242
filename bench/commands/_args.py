"""Arguments several command families share (not a command: the loader skips ``_`` modules)."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

console = Console(stderr=False)
err_console = Console(stderr=True)


def add_cohort_args(p: argparse.ArgumentParser, *,
                    profile_help: str = "run profile (sets the synthetic cohort's size)") -> None:
    """--cohort, --profile, --seed (of the synthetic cohort) and --no-progress, spelled one way."""
    from bench.profiles import PROFILES

    p.add_argument("--cohort", default=None,
                   help="BIDS folder or CSV/TSV manifest; default: the profile's synthetic cohort")
    p.add_argument("--profile", default="default", choices=sorted(PROFILES), help=profile_help)
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic cohort")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--seeds 0`` or ``-1`` is a usage error, not a silent default)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def results_folder(path: str, must_exist: bool = False):
    """``--results``: a folder (created later when missing, unless ``must_exist``); a file there is a
    one-line error instead of a traceback from mkdir."""
    from pathlib import Path

    from bench.errors import MribenchError

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise MribenchError(f"--results {path}: a file, not a folder; give the folder of result records "
                            "(it is created when missing)")
    if must_exist and not folder.is_dir():
        raise MribenchError(f"--results {path}: no such results folder")
    return folder


def cohort_from(args: argparse.Namespace):
    from bench.data.sources import open_cohort

    return open_cohort(args.cohort, profile=args.profile, seed=args.seed,
                       progress=not args.no_progress)


def print_listing(args: argparse.Namespace, title: str, columns: list[str], rows: list[list], note: str = "") -> None:
    """A listing: a table on a terminal; whole values, tab-separated, when stdout is not a terminal
    (a table there is cut to 80 columns and names become ``ad_dia…``); a JSON list with ``--json``."""
    if getattr(args, "json", False):  # commands whose listing is not their main output have no --json
        print(json.dumps([dict(zip(columns, row)) for row in rows], indent=2))
        return
    cells = [["-" if v is None else f"{v:,}" if isinstance(v, int) and v >= 10_000 else str(v) for v in row]
             for row in rows]
    if not console.is_terminal:
        print("\n".join("\t".join(row) for row in [columns, *cells]))
        return
    table = Table(title=title)
    for col in columns:
        table.add_column(col, overflow="fold")  # wrap, never cut, a name that does not fit
    for row in cells:
        table.add_row(*row)
    console.print(table, highlight=False)
    if note:
        console.print(note, highlight=False)

