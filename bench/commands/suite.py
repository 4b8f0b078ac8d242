"""``bench suite``: run a declared suite (``suites/<name>.yaml``) of encoders x tasks x protocols."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.commands._args import (add_cohort_args, add_executor_args, cohort_from, console, executor_from, positive_int,
                                  print_results)


def register(sub) -> None:
    suite = sub.add_parser("suite", help="declared suites of encoders x tasks x protocols (suites/*.yaml)"
                           ).add_subparsers(dest="suite_command", required=True)
    p = suite.add_parser("run", help="run every job of a suite that applies; skip the rest with the reason")
    p.add_argument("name", help="a suite under suites/ (e.g. default, smoke) or a suite YAML file")
    p.add_argument("--results", default="leaderboard/results", help="results folder")
    p.add_argument("--seeds", type=positive_int, default=None, help="seeds per setting, >= 1 (default: profile's)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (jobs and skips) and run nothing")
    p.add_argument("--overwrite", action="store_true", help="redo jobs whose record exists")
    for flag, what in (("--encoder", "encoder"), ("--task", "task"), ("--protocol", "protocol")):
        p.add_argument(flag, action="append", default=None, metavar=what.upper(),
                       help=f"run only this {what} of the suite (repeatable; default: all)")
    add_cohort_args(p)
    add_executor_args(p)
    p.set_defaults(func=cmd_suite_run)
    p = suite.add_parser("list", help="the suites under suites/")
    p.set_defaults(func=cmd_suite_list)


def cmd_suite_list(args: argparse.Namespace) -> int:
    from bench.suite import list_suites, load_suite

    for name in list_suites():
        s = load_suite(name)
        tasks = "all" if s.tasks == "all" else len(s.tasks)
        console.print(f"{name}: {s.description} ({len(s.encoders)} encoders, tasks {tasks}, "
                      f"protocols {', '.join(s.protocols)})", highlight=False)
    return 0


def cmd_suite_run(args: argparse.Namespace) -> int:
    """Plan the suite on the cohort, print the skips, run the jobs; exit 1 when any job failed."""
    from dataclasses import replace

    from bench.commands._args import results_folder
    from bench.locks import cache_lock
    from bench.profiles import get_profile
    from bench.runner import Runner
    from bench.suite import job_options, load_suite, plan, restrict, suite_jobs

    suite = restrict(load_suite(args.name), args.encoder, args.task, args.protocol)  # a bad suite fails before the cohort, which can take minutes
    results_folder(args.results)
    profile = get_profile(args.profile)
    if args.seeds is not None:
        profile = replace(profile, seeds=args.seeds)
    with cache_lock(f"cohort-{args.profile}-seed{args.seed}"):
        cohort = cohort_from(args)
    planned = plan(suite, cohort.name)
    options = job_options(suite, cohort.name)
    for encoder, task, protocol, reason in planned.skipped:
        console.print(f"skip {encoder} / {task} / {protocol}: {reason}", highlight=False)
    console.print(f"suite {suite.name} on {cohort.name}: {len(planned.jobs)} job(s), {len(planned.skipped)} "
                  "skipped", highlight=False)
    if args.dry_run:
        for encoder, task, protocol in planned.jobs:
            given = ", ".join(f"{k}={v}" for k, v in sorted(options.get(protocol, {}).items()))
            console.print(f"job  {encoder} / {task} / {protocol}" + (f" ({given})" if given else ""),
                          highlight=False, markup=False, soft_wrap=True)
        return 0
    executor = executor_from(args)
    with executor:
        runner = Runner(cohort, profile, Path(args.results), progress=not args.no_progress, overwrite=args.overwrite,
                        executor=executor, keep_going=True, command=args.command_line)
        start = time.perf_counter()
        results = runner.run_jobs(suite_jobs(runner, planned, options))
        where = executor.describe()
    failed = print_results(f"bench suite run {suite.name} on {cohort.name} ({profile.name} profile, {where})",
                           results, args.results, start)
    return 1 if failed else 0
