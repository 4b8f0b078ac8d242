"""``bench run``: evaluate encoders on tasks under protocols, locally or on Dask."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.commands._args import (FILE_ENCODER_NOTE, Later, add_cohort_args, add_executor_args, cohort_from,
                                  compute_for_executor, executor_from, positive_int)
from bench.devices import add_compute_args
from bench.errors import MribenchError


def register(sub) -> None:
    p = sub.add_parser("run", help="evaluate encoders on tasks under protocols; write result records")
    p.add_argument("--encoder", action="append", required=True,
                   help=f"registered name, or {FILE_ENCODER_NOTE} (repeatable)")
    p.add_argument("--task", action="append", required=True, help="task name (repeatable)")
    p.add_argument("--protocol", action="append", default=None, help=Later(_protocol_help))
    p.add_argument("--seeds", type=positive_int, default=None, help="seeds per setting, >= 1 (default: profile's)")
    p.add_argument("--weights", default=None, help="checkpoint for the encoder (e.g. a published one)")
    p.add_argument("--features", default=None, metavar="PATH",
                   help="--encoder features: precomputed per-scan features (.tsv, .csv, .parquet, .npz) keyed by "
                        "participant_id, session_id[, sequence]")
    p.add_argument("--name", default=None,
                   help="--encoder features: encoder name of the records (default: features-<file stem>)")
    p.add_argument("--results", default="leaderboard/results", help="results folder")
    p.add_argument("--overwrite", action="store_true", help="redo jobs whose record exists")
    p.add_argument("--no-predictions", action="store_true", help="leave per-subject predictions out")
    add_cohort_args(p)
    add_compute_args(p)
    add_executor_args(p)
    p.set_defaults(func=cmd_run)


def _protocol_help() -> str:
    """The protocols ``bench run`` takes (written when ``bench run --help`` is printed: it loads them)."""
    from bench.protocols import all_protocols

    return ", ".join(pr.name + (" (default)" if pr.name == "linear_probe" else "")
                     for pr in all_protocols() if not pr.options) + " (repeatable)"


# -- bench run ---------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    """Run the grid; every job is attempted, and the exit status is 1 when any of them failed."""
    from dataclasses import replace

    from bench.commands._args import results_folder
    from bench.commands._report import print_results
    from bench.encoders.features import run_options
    from bench.locks import cache_lock
    from bench.profiles import get_profile
    from bench.protocols import check_protocols
    from bench.runner import Runner
    from bench.tasks import check_task_args

    protocols = args.protocol or ["linear_probe"]
    check_protocols(protocols)
    check_task_args(args.task)           # before the cohort, which can take minutes to generate
    results_folder(args.results)
    compute = compute_for_executor(args)  # an absent device: one line, before the cohort (locally)
    if args.weights and len(args.encoder) > 1:
        raise MribenchError("--weights applies to one encoder; run one --encoder at a time with it")
    kwargs = {"weights": args.weights} if args.weights else {}
    kwargs |= run_options(args.encoder, args.features, args.name, args.weights)  # --encoder features: its table
    profile = get_profile(args.profile)
    if args.seeds is not None:
        profile = replace(profile, seeds=args.seeds)
    with cache_lock(f"cohort-{args.profile}-seed{args.seed}"):  # two runs must not generate one cohort twice
        cohort = cohort_from(args)
    executor = executor_from(args)
    with executor:
        runner = Runner(cohort, profile, Path(args.results), progress=not args.no_progress,
                        overwrite=args.overwrite, keep_predictions=not args.no_predictions, executor=executor,
                        keep_going=True, command=args.command_line, compute=compute)
        start = time.perf_counter()
        where = f"{executor.describe()}, {compute.device} {compute.precision}"
        results = runner.run_grid(args.encoder, args.task, protocols, encoder_kwargs=kwargs)
    failed = print_results(f"bench run: {', '.join(args.encoder)} on {cohort.name} ({profile.name} profile, {where})",
                           results, args.results, start)
    return 1 if failed else 0
