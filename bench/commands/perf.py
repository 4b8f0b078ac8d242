"""``bench perf``: the encoder's raw speed against the harness's, and what the heads cost.

Prints one table (see :mod:`bench.perf` for what each figure means) and, with ``--json FILE``,
writes every figure with the two headline ratios ``embed_ratio`` and ``grid_ratio`` at the top.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub) -> None:
    from bench.commands._args import FILE_ENCODER_NOTE, add_cohort_args

    p = sub.add_parser("perf", help="measure encoder vs harness throughput, the probe grid and memory",
                       description="(a) encoder forward on in-memory tensors, (b) harness embedding from "
                                   "the volume store, (c) the same from raw NIfTI with cold caches, (d) the "
                                   "warm linear-probe grid (fractions + few-shot) of one task, (e) peak memory.")
    p.add_argument("--encoder", default="simclr3d", help=f"registered name, or {FILE_ENCODER_NOTE}")
    p.add_argument("--weights", default=None, help="checkpoint to load into the encoder")
    p.add_argument("--task", default="conversion", help="task whose scans and probe grid are measured")
    add_cohort_args(p, profile_help="run profile: cohort size, seeds, draws and bootstrap replicates of the grid")
    p.add_argument("--repeats", type=int, default=5,
                   help="rounds of (a) and (b) (and up to 3 of (d)); each figure is the median round "
                        "(default 5)")
    p.add_argument("--batch-size", type=int, default=None, help="volumes per forward pass (default: the harness's)")
    p.add_argument("--workdir", default=None, help="where the temporary caches go (default: a temporary folder in the cache "
                        "folder, on the file system bench run writes its caches to)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON")
    from bench.devices import add_compute_args

    add_compute_args(p, batch_size=False)  # (--batch-size above is the forward pass's)
    p.set_defaults(func=cmd_perf)


def cmd_perf(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from bench.atomic import atomic_write_bytes
    from bench.data.sources import open_cohort
    from bench.perf import check_request, measure

    from bench.devices import compute_from_args

    check_request(args.task, args.repeats, args.batch_size)
    compute = compute_from_args(args)  # an absent device: one line, before the cohort
    console, err = Console(), Console(stderr=True)
    log = None if args.no_progress else (lambda msg: err.print(f"[dim]{msg}[/dim]", highlight=False))
    cohort = open_cohort(args.cohort, profile=args.profile, seed=args.seed, progress=not args.no_progress)
    kwargs = {"weights": args.weights} if args.weights else {}
    result = measure(args.encoder, args.task, args.profile, cohort=cohort, repeats=args.repeats,
                     batch_size=args.batch_size, workdir=args.workdir, encoder_kwargs=kwargs, log=log, compute=compute)
    fig = result.as_json()
    table = Table(title=f"bench perf: {result.encoder} on {result.task} ({cohort.name}, {result.profile} profile, "
                        f"{result.n_scans} scans in {result.input_space}, batch {result.batch_size}, "
                        f"{result.device} {result.precision})")
    for col, justify in (("figure", "left"), ("value", "right"), ("what", "left")):
        table.add_column(col, justify=justify)
    table.add_row("(a) encoder forward", f"{fig['forward_scans_per_s']:.1f} scans/s",
                  f"random tensors in memory; {fig['forward_seconds']:.2f} s ({fig['forward_cpu_seconds']:.2f} s CPU)")
    table.add_row("(b) harness from store", f"{fig['store_scans_per_s']:.1f} scans/s",
                  f"one embedding pass: {fig['embedding_pass_seconds']:.2f} s "
                  f"({fig['embedding_pass_cpu_seconds']:.2f} s CPU)")
    table.add_row("(c) harness from NIfTI", f"{fig['cold_scans_per_s']:.1f} scans/s",
                  f"empty store and embedding cache; {fig['cold_seconds']:.2f} s ({fig['cold_cpu_seconds']:.2f} s CPU)")
    if "loader_speedup" in fig:
        table.add_row(f"(b') reader thread", f"{fig['thread_scans_per_s']:.1f} scans/s",
                      f"(b) read by one thread instead of {result.loader_workers} DataLoader workers: "
                      f"the loader's speed-up {fig['loader_speedup']:.2f}x")
    detail = ", ".join(f"{k} {v:.2f} s" for k, v in fig["grid_detail"].items())
    table.add_row("(d) warm probe grid", f"{fig['grid_seconds']:.2f} s",
                  f"{fig['grid_settings']} (setting, seed) fits ({fig['grid_cpu_seconds']:.2f} s CPU); {detail}")
    peaks = fig["peak_rss_mib"]
    table.add_row("(e) peak memory", f"{peaks['process']:.0f} MiB",
                  "per phase: " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()
                                            if k != "process" and v is not None))
    table.add_row("embed_ratio (b)/(a)", f"{fig['embed_ratio']:.3f}",
                  f"target >= 0.9; in CPU time {fig['embed_ratio_cpu']:.3f}")
    table.add_row("grid_ratio (d)/(b)", f"{fig['grid_ratio']:.3f}",
                  f"target < 1.2; in CPU time {fig['grid_ratio_cpu']:.3f}")
    console.print(table)
    m = fig["machine"]
    console.print(f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} with {m['torch_threads']} threads"
                  + (f", load average {m['load_average'][0]:.2f}" if "load_average" in m else ""))
    if args.json:
        atomic_write_bytes(Path(args.json), (json.dumps(fig, indent=2) + "\n").encode())
        console.print(f"wrote {args.json}")
    return 0
