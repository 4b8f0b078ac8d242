"""``bench cross-cohort``: fit a probe head on one cohort or site, score it on another.

A front end to the ``cross_cohort`` protocol (:mod:`bench.protocols.cross_cohort`), which runs
through the :class:`~bench.runner.Runner` like every protocol: job lock, failure marker, resume."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    from bench.commands._args import FILE_ENCODER_NOTE, positive_int
    from bench.devices import add_compute_args
    from bench.profiles import PROFILES

    p = sub.add_parser("cross-cohort", help="out-of-distribution probe: train on one cohort / site, test on another")
    p.add_argument("--encoder", required=True, help=f"registered name, or {FILE_ENCODER_NOTE}")
    p.add_argument("--task", required=True, help="task on the training cohort, e.g. adni/ad_diagnosis")
    p.add_argument("--train-cohort", default=None,
                   help="BIDS folder or manifest (default: the profile's synthetic cohort)")
    p.add_argument("--train-site", default=None, help="train only on this site's subjects (several: S1+S2+S3)")
    p.add_argument("--test-cohort", default=None, help="cohort to score on (default: the training cohort)")
    p.add_argument("--test-task", default=None,
                   help="the same task on the test cohort, e.g. oasis3/ad_diagnosis (default: --task)")
    p.add_argument("--test-site", default=None, help="score only this site's subjects (several: S1+S2)")
    p.add_argument("--weights", default=None, help="checkpoint for the encoder")
    p.add_argument("--seeds", type=positive_int, default=None, help="seeds, >= 1 (default: the profile's)")
    p.add_argument("--results", default="leaderboard/results", help="results folder")
    p.add_argument("--overwrite", action="store_true", help="redo the pair if its record exists")
    p.add_argument("--no-predictions", action="store_true", help="leave per-subject predictions out")
    p.add_argument("--profile", default="default", choices=sorted(PROFILES))
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic cohort")
    p.add_argument("--no-progress", action="store_true")
    add_compute_args(p, batch_size=False)
    p.set_defaults(func=cmd_cross_cohort)


def cmd_cross_cohort(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rich.console import Console

    from bench.commands._args import results_folder
    from bench.protocols.cross_cohort import Side, run_cross_cohort
    from bench.data.sources import open_cohort
    from bench.devices import compute_from_args
    from bench.profiles import get_profile
    from bench.tasks import check_task_args

    check_task_args([args.task] + ([args.test_task] if args.test_task else []))  # before the cohorts
    results_folder(args.results)
    compute = compute_from_args(args)  # an absent device: one line, before the cohorts
    profile = get_profile(args.profile)
    if args.seeds is not None:
        profile = replace(profile, seeds=args.seeds)

    def cohort(spec):
        return open_cohort(spec, profile=args.profile, seed=args.seed, progress=not args.no_progress)

    train_cohort = cohort(args.train_cohort)
    same = args.test_cohort is None or args.test_cohort == args.train_cohort
    test_cohort = train_cohort if same else cohort(args.test_cohort)
    train = Side(train_cohort, args.task, args.train_site)
    test = Side(test_cohort, args.test_task or args.task, args.test_site)
    result = run_cross_cohort(args.encoder, train, test, profile, Path(args.results), overwrite=args.overwrite,
                              progress=not args.no_progress, keep_predictions=not args.no_predictions,
                              encoder_kwargs={"weights": args.weights} if args.weights else None,
                              command=args.command_line, compute=compute)
    console = Console(soft_wrap=True)
    score = "-" if result.main_score is None else f"{result.main_score:.3f}"
    if result.ci[0] is not None:
        score += f" (95% CI {result.ci[0]:.3f}-{result.ci[1]:.3f})"
    console.print(f"{args.encoder}: {args.task} trained on {train.label}, tested on {test.label}: "
                  f"{score} ({result.status}, {result.seconds:.1f} s)\nrecord {result.path}", highlight=False,
                  markup=False)
    return 0
