"""``bench run``: evaluate encoders on tasks under protocols, locally or on Dask."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.table import Table

from bench.commands._args import add_cohort_args, cohort_from, console, err_console, positive_int
from bench.errors import MribenchError


def register(sub) -> None:
    p = sub.add_parser("run", help="evaluate encoders on tasks under protocols; write result records")
    p.add_argument("--encoder", action="append", required=True,
                   help="registered name or path/to/file.py:ClassName (repeatable)")
    p.add_argument("--task", action="append", required=True, help="task name (repeatable)")
    from bench.protocols import all_protocols

    p.add_argument("--protocol", action="append", default=None,
                   help=", ".join(pr.name + (" (default)" if pr.name == "linear_probe" else "")
                                  for pr in all_protocols() if not pr.options) + " (repeatable)")
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
    _add_executor_args(p)
    p.set_defaults(func=cmd_run)


def _add_executor_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scale out (pip install 'mribench[cluster]')")
    g.add_argument("--executor", choices=("local", "dask"), default="local",
                   help="local: jobs one by one in this process (default); dask: jobs on Dask workers")
    g.add_argument("--scheduler", default=None, metavar="ADDR",
                   help="address of a running Dask scheduler (e.g. tcp://10.0.0.5:8786); implies --executor dask")
    g.add_argument("--cluster", choices=("slurm", "pbs"), default=None,
                   help="start Dask workers as SLURM/PBS jobs (dask-jobqueue); implies --executor dask")
    g.add_argument("--workers", type=int, default=2,
                   help="dask: worker processes of the local cluster, or batch jobs of --cluster (default 2)")
    g.add_argument("--worker-cores", type=int, default=None, help="--cluster: cores per batch job (default 4)")
    g.add_argument("--worker-memory", default=None, help="--cluster: memory per batch job (default 16GB)")
    g.add_argument("--gpus-per-worker", type=int, default=0,
                   help="--cluster: GPUs per batch job; jobs that train a network are then placed on them")
    g.add_argument("--walltime", default=None, help="--cluster: wall time per batch job (e.g. 04:00:00)")
    g.add_argument("--queue", default=None, help="--cluster: partition / queue")
    g.add_argument("--account", default=None, help="--cluster: account to charge")
    g.add_argument("--interface", default=None,
                   help="--cluster: network interface compute nodes reach this machine by (e.g. ib0)")


# -- bench run ---------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    """Run the grid; every job is attempted, and the exit status is 1 when any of them failed."""
    from dataclasses import replace

    from bench.commands._args import results_folder
    from bench.encoders.features import run_options
    from bench.executors import make_executor
    from bench.locks import cache_lock
    from bench.profiles import get_profile
    from bench.protocols import check_protocols
    from bench.runner import Runner
    from bench.tasks import check_task_args

    protocols = args.protocol or ["linear_probe"]
    check_protocols(protocols)
    check_task_args(args.task)           # before the cohort, which can take minutes to generate
    results_folder(args.results)
    if args.weights and len(args.encoder) > 1:
        raise MribenchError("--weights applies to one encoder; run one --encoder at a time with it")
    kwargs = {"weights": args.weights} if args.weights else {}
    kwargs |= run_options(args.encoder, args.features, args.name, args.weights)  # --encoder features: its table
    profile = get_profile(args.profile)
    if args.seeds is not None:
        profile = replace(profile, seeds=args.seeds)
    with cache_lock(f"cohort-{args.profile}-seed{args.seed}"):  # two runs must not generate one cohort twice
        cohort = cohort_from(args)
    executor = make_executor(args.executor, scheduler=args.scheduler, cluster=args.cluster, workers=args.workers,
                             **({"cores": args.worker_cores, "memory": args.worker_memory, "gpus": args.gpus_per_worker,
                                 "walltime": args.walltime, "queue": args.queue, "account": args.account,
                                 "interface": args.interface} if args.cluster else {}))
    with executor:
        runner = Runner(cohort, profile, Path(args.results), progress=not args.no_progress,
                        overwrite=args.overwrite, keep_predictions=not args.no_predictions, executor=executor,
                        keep_going=True, command=args.command_line)
        start = time.perf_counter()
        where = executor.describe()
        results = runner.run_grid(args.encoder, args.task, protocols, encoder_kwargs=kwargs)
    table = Table(title=f"bench run: {', '.join(args.encoder)} on {cohort.name} ({profile.name} profile, {where})")
    for col in ("encoder", "task", "protocol", "main score (95% CI)", "status", "seconds"):
        table.add_column(col)
    for r in results:
        score = "-" if r.main_score is None else f"{r.main_score:.3f}"
        if r.ci[0] is not None:
            score += f" ({r.ci[0]:.3f}-{r.ci[1]:.3f})"
        table.add_row(r.encoder, r.task, r.protocol, score, r.status, f"{r.seconds:.1f}")
    console.print(table)
    failed = [r for r in results if r.failed]
    for r in failed:
        err_console.print(f"[red]failed[/red] {r.key}: {r.error}", highlight=False, soft_wrap=True)
    console.print(f"records under {args.results}; total {time.perf_counter() - start:.1f} s"
                  + (f"; {len(failed)} job(s) failed (see `bench status --results {args.results}`)" if failed else ""))
    return 1 if failed else 0
