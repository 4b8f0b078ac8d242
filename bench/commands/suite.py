"""``bench suite``: run a declared suite (``suites/<name>.yaml``) of encoders x tasks x protocols.

``bench suite run`` ends with the suite's wall and CPU time by phase (:mod:`bench.timing`):
cohort (opening or generating it), store (preprocessing and reading volumes), embeddings (encoder
forward passes), perturbations (robustness's perturbed scans), heads (probe heads), bootstraps
(metrics with bootstrap CIs), fine-tuning (networks trained end to end) and other; the phases add
up to the total. Jobs whose record existed are counted as reused and are not timed. The table is
appended as one JSON line (profile, cohort, jobs run / reused, CPU count, phases) to
``<results>/.jobs/suite-timing-<suite>.jsonl``. With ``--executor dask`` the jobs' phases are
measured on the workers and come back with each job's result: they are worker-seconds, summed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.devices import add_compute_args
from bench.commands._args import (add_cohort_args, add_executor_args, cohort_from, compute_for_executor, console,
                                  executor_from, positive_int)


def register(sub) -> None:
    suite = sub.add_parser("suite", help="declared suites of encoders x tasks x protocols (suites/*.yaml)"
                           ).add_subparsers(dest="suite_command", required=True)
    p = suite.add_parser("run", help="run every job of a suite that applies; skip the rest with the reason",
                         description="Run every job of a suite that applies (skip the rest with the reason), then "
                                     "print the time by phase: cohort, store (volumes), embeddings (encoder "
                                     "forward passes), perturbations (robustness), heads (probe heads), bootstraps "
                                     "(metric CIs), fine-tuning and other, in wall and CPU seconds; appended as "
                                     "JSON to <results>/.jobs/suite-timing-<suite>.jsonl. Jobs whose record "
                                     "exists are reused and not timed.")
    p.add_argument("name", help="a suite under suites/ (e.g. default, smoke) or a suite YAML file")
    p.add_argument("--results", default="leaderboard/results", help="results folder")
    p.add_argument("--seeds", type=positive_int, default=None, help="seeds per setting, >= 1 (default: profile's)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (jobs and skips) and run nothing")
    p.add_argument("--overwrite", action="store_true", help="redo jobs whose record exists")
    for flag, what in (("--encoder", "encoder"), ("--task", "task"), ("--protocol", "protocol")):
        p.add_argument(flag, action="append", default=None, metavar=what.upper(),
                       help=f"run only this {what} of the suite (repeatable; default: all)")
    add_cohort_args(p)
    add_compute_args(p)
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
    """Plan the suite on the cohort, print the skips, run the jobs, then the time by phase (see
    :mod:`bench.timing`); exit 1 when any job failed."""
    from bench.commands._args import results_folder
    from bench.commands._report import print_results
    from bench.suite import load_suite, restrict, timing_report
    from bench.timing import measure

    suite = restrict(load_suite(args.name), args.encoder, args.task, args.protocol)  # a bad suite fails before the cohort, which can take minutes
    results_folder(args.results, writable=not args.dry_run)
    with measure() as clock:
        ran = _run(args, suite)
    if ran is None:  # --dry-run
        return 0
    cohort, profile, results, where, in_process, start = ran
    failed = print_results(f"bench suite run {suite.name} on {cohort.name} ({profile.name} profile, {where})",
                           results, args.results, start, floors=False)
    report = {"suite": suite.name, "profile": profile.name, "cohort": cohort.name, "executor": where,
              "cpu_count": os.cpu_count(), **timing_report(clock.totals, results, in_process)}
    _print_timing(report, _write_timing(report, Path(args.results), suite.name))
    return 1 if failed else 0


def _run(args: argparse.Namespace, suite):
    """Open the cohort, plan and (unless ``--dry-run``) run the suite's jobs; None for a dry run."""
    from dataclasses import replace

    from bench.locks import cache_lock
    from bench.profiles import get_profile
    from bench.runner import Runner
    from bench.suite import GRID, job_options, plan, suite_jobs
    from bench.timing import phase

    compute = compute_for_executor(args)  # an absent device: one line, before the cohort (locally)
    profile = get_profile(args.profile)
    if args.seeds is not None:
        profile = replace(profile, seeds=args.seeds)
    with cache_lock(f"cohort-{args.profile}-seed{args.seed}"), phase("cohort"):
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
        return None
    executor = executor_from(args)
    with executor:
        runner = Runner(cohort, profile, Path(args.results), progress=not args.no_progress, overwrite=args.overwrite,
                        executor=executor, keep_going=True, command=args.command_line, compute=compute)
        start = time.perf_counter()
        jobs = suite_jobs(runner, planned, options)
        with phase(GRID):
            results = runner.run_jobs(jobs)
        return cohort, profile, results, executor.describe(), executor.in_process, start


def timing_path(results: Path, suite_name: str) -> Path:
    """Where ``bench suite run`` appends its time by phase: one JSON object per line, per run, in the
    results folder's local state (``.jobs``, never committed; not ``*.json``, which is a record)."""
    from bench.jobs import STATE_DIR
    from bench.results import safe_name

    return results / STATE_DIR / f"suite-timing-{safe_name(suite_name)}.jsonl"


def _write_timing(report: dict, results: Path, suite_name: str) -> Path:
    path = timing_path(results, suite_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **report}
    with open(path, "a") as f:
        f.write(json.dumps(_rounded(line)) + "\n")
    return path


def _rounded(value):
    """Seconds to the millisecond and shares to 0.1 % in the file."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def _print_timing(report: dict, path: Path) -> None:
    """The time by phase: wall and CPU seconds and share of the wall time, the dominant phase."""
    from rich.table import Table

    remote = report["measured"] != "this process"
    jobs = report["jobs"]
    table = Table(title=f"time by phase ({jobs['run']} job(s) run, {jobs['reused']} reused and not timed, "
                        f"{report['cpu_count']} CPUs" + ("; jobs in worker-seconds)" if remote else ")"))
    for col in ("phase", "wall s", "CPU s", "share"):
        table.add_column(col, justify="left" if col == "phase" else "right")
    for name, p in report["phases"].items():
        table.add_row(name, f"{p['wall_s']:.2f}", f"{p['cpu_s']:.2f}", f"{100 * p['share']:.1f} %")
    table.add_row("total", f"{report['wall_s']:.2f}", f"{report['cpu_s']:.2f}", "100.0 %")
    console.print(table)
    dominant = report["dominant"]
    console.print(f"dominant phase: {dominant} ({100 * report['phases'][dominant]['share']:.0f} % of the wall time)"
                  + (f"; {report['measured']}; elapsed {report['elapsed_s']:.1f} s" if remote else "")
                  + f"; appended to {path}", highlight=False)
