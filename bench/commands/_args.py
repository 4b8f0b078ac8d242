"""Arguments several command families share (not a command: the loader skips ``_`` modules)."""

from __future__ import annotations

import argparse


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
