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
