"""The ``bench`` command line: one sub-command per job, each a thin layer over the library.

Errors a user can fix (bad files, leaking splits...) are printed as one line naming what to
fix, with exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from rich.console import Console
from rich.table import Table

from bench.commands._args import add_cohort_args, positive_int
from bench.errors import MribenchError
from bench.profiles import PROFILES

console = Console(stderr=False)
err_console = Console(stderr=True)

#: Which subject column stratifies the split of each population.
SPLIT_LABELS = {"ad": "trajectory", "tumour": "marker", "healthy": "age"}
#: (val, test) fractions of each population's non-external subjects. Every population gives its
#: test split a third of its subjects: the power analysis of docs/calibration.md needs that many
#: test subjects to tell encoders apart.
SPLIT_FRACTIONS = {"ad": (0.15, 0.35), "healthy": (0.15, 0.35), "tumour": (0.15, 0.35)}
DEFAULT_FRACTIONS = (0.15, 0.2)


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


def _cohort(args: argparse.Namespace):
    from bench.data.sources import open_cohort

    return open_cohort(args.cohort, profile=args.profile, seed=args.seed,
                       progress=not args.no_progress)


# -- bench data --------------------------------------------------------------------------------
def cmd_data_synth(args: argparse.Namespace) -> int:
    from bench.data.synth.generate import SynthConfig, generate, is_complete

    cfg = SynthConfig.from_profile(args.profile, seed=args.seed, subjects=args.subjects,
                                   resolution=args.resolution)
    out = Path(args.out)
    if is_complete(out, cfg) and not args.force:
        console.print(f"{out}: already generated with these parameters (use --force to redo)")
        return 0
    start = time.perf_counter()
    generate(cfg, out, workers=args.workers, progress=not args.no_progress, force=args.force)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    console.print(f"wrote {out}: {cfg.n_ad} ageing/AD + {cfg.n_healthy} healthy + {cfg.n_tumour} tumour subjects at "
                  f"{cfg.resolution} mm, {size / 1e6:.0f} MB in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    cohort = _cohort(args)
    t = cohort.table
    table = Table(title=f"cohort {cohort.name} ({cohort.root})")
    for col in ("what", "value"):
        table.add_column(col)
    table.add_row("scans", str(len(t)))
    table.add_row("subjects", str(t["participant_id"].nunique()))
    table.add_row("sessions", str(t[["participant_id", "session_id"]].drop_duplicates().shape[0]))
    table.add_row("sequences", ", ".join(f"{k}: {v}" for k, v in t["sequence"].value_counts().items()))
    table.add_row("sites", ", ".join(f"{k}: {v}" for k, v in t.groupby("site")["participant_id"].nunique().items()))
    if "population" in t.columns:
        table.add_row("populations", ", ".join(
            f"{k}: {v}" for k, v in t.groupby("population")["participant_id"].nunique().items()))
    if "diagnosis" in t.columns:
        table.add_row("diagnoses (scans)", ", ".join(f"{k}: {v}" for k, v in t["diagnosis"].value_counts().items()))
    per_subject = t.groupby("participant_id")["session_id"].nunique()
    table.add_row("sessions per subject", f"min {per_subject.min()}, median {per_subject.median():g}, "
                                          f"max {per_subject.max()}")
    skipped = cohort.metadata.get("skipped_files", [])
    table.add_row("skipped files", str(len(skipped)))
    console.print(table)
    split_dir = _default_split_dir(cohort.name)
    if not args.no_power and split_dir.is_dir():
        _print_power(args, cohort, split_dir)
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    """Every scan through the sanity gate (:mod:`bench.data.sanity`), reporting every unusable file
    (one line each) rather than stopping at the first; warnings (oblique affines) are listed too."""
    from bench.data.sanity import gate_report

    cohort = _cohort(args)
    problems, notes = gate_report(cohort, progress=not args.no_progress)
    for p in problems:
        err_console.print(f"[red]error[/red] {p}", highlight=False, soft_wrap=True)
    for n in notes:
        err_console.print(f"[yellow]warning[/yellow] {n}", highlight=False, soft_wrap=True)
    console.print(f"{cohort.name}: {len(cohort)} scans checked, {len(problems)} problem(s)"
                  + (f", {len(notes)} warning(s)" if notes else ""))
    return 1 if problems else 0


# -- bench splits ------------------------------------------------------------------------------
def _default_split_dir(cohort_name: str) -> Path:
    from bench.paths import splits_root

    return splits_root() / cohort_name


def cmd_splits_make(args: argparse.Namespace) -> int:
    from bench.data.synth.latents import EXTERNAL_SITE
    from bench.splits import make_split, write_split

    cohort = _cohort(args)
    subjects = cohort.subjects()
    populations = args.population or (sorted(subjects["population"].dropna().unique())
                                      if "population" in subjects.columns else ["all"])
    out_dir = Path(args.out) if args.out else _default_split_dir(cohort.name)
    _refuse_overwrite([out_dir / f"{pop}.tsv" for pop in populations], args.force)
    external = args.external_site
    if external is None and cohort.name.startswith("synth"):
        external = EXTERNAL_SITE
    for pop in populations:
        subj = subjects if pop == "all" else subjects[subjects["population"] == pop]
        label = args.label or SPLIT_LABELS.get(pop)
        if args.label is None and label not in subj.columns:  # e.g. IXI has no diagnosis, BraTS no marker
            label = None
        held_out = external if external in set(subj["site"]) else None
        if external and held_out is None:
            console.print(f"note: {pop} has no subject at site {external}; no external split")
        val_frac, test_frac = SPLIT_FRACTIONS.get(pop, DEFAULT_FRACTIONS)
        df = make_split(subj, seed=args.split_seed, label=label, external_site=held_out,
                        val_frac=val_frac, test_frac=test_frac)
        path = out_dir / f"{pop}.tsv"
        digest = write_split(df, path)
        counts = df["split"].value_counts().to_dict()
        console.print(f"wrote {path} (sha256 {digest[:12]}): " +
                      ", ".join(f"{k} {counts.get(k, 0)}" for k in ("train", "val", "test", "external")))
    if not args.no_power:
        _print_power(args, cohort, out_dir)
    return 0


def _add_power_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-power", action="store_true", help="skip the per-task power table")
    p.add_argument("--power-sims", type=positive_int, default=100,
                   help="simulated replicates per AUC gap of the power table (default 100)")


def _print_power(args: argparse.Namespace, cohort, split_dir: Path) -> None:
    """Per task of this cohort: test / external counts and the smallest AUC gap the paired
    bootstrap detects at 80 % power on the test split (bench.power states the model)."""
    from bench.power import task_power
    from bench.runner import split_file
    from bench.tasks import list_tasks

    rows = []
    kind = "synth" if cohort.name.startswith("synth") else cohort.name
    for name, spec in list_tasks().items():
        if spec.cohort != kind:
            continue
        path = split_file(spec, split_dir.name, split_dir.parent)  # split_dir holds this cohort's files
        if not path.is_file():
            continue
        try:
            p = task_power(spec, cohort, path, n_sim=args.power_sims)
        except MribenchError as e:
            err_console.print(f"note: {name}: {e}", highlight=False)
            continue
        c = p.counts
        gap = "-" if p.gap is None else ("not found" if p.gap != p.gap else f"{p.gap:.2f}")
        rows.append([name, c.test_examples, c.test_subjects, c.external_examples, c.external_subjects,
                     ", ".join(f"{k}: {v}" for k, v in c.test_classes.items()),
                     gap + (f" ({p.proxy})" if p.proxy and p.gap is not None else "")])
    _print_listing(args, f"power of the test splits ({split_dir})",
                   ["task", "test examples", "test subjects", "external examples", "external subjects",
                    "test classes", "AUC gap at 80 % power"], rows)


def _refuse_overwrite(paths: list[Path], force: bool) -> None:
    """Split files are fixed once made (records carry their hashes): replacing one takes --force."""
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise MribenchError(f"{existing[0]} exists" + (f" (and {len(existing) - 1} more)" if len(existing) > 1 else "")
                            + "; records are checked against existing split files: pass --force to overwrite, "
                              "or --out DIR to write elsewhere")


def cmd_splits_check(args: argparse.Namespace) -> int:
    from bench.splits import check_split

    files = [Path(f) for f in args.files]
    cohort = _cohort(args)
    if not files:
        files = sorted(_default_split_dir(cohort.name).glob("*.tsv"))
        if not files:
            raise MribenchError(f"no split files under {_default_split_dir(cohort.name)}; "
                                "run `bench splits make` first")
    subjects = cohort.subjects()["participant_id"].tolist()
    n_bad = 0
    for f in files:
        problems = check_split(f, subjects)
        n_bad += bool(problems)
        for p in problems:
            err_console.print(f"[red]error[/red] {p}", highlight=False)
        if not problems:
            console.print(f"ok {f}")
    return 1 if n_bad else 0


# -- bench perturb -----------------------------------------------------------------------------
def _resolve_scan(args: argparse.Namespace):
    """(volume in the space, subject, session, sequence) for --scan: a NIfTI file or a cohort scan id."""
    from bench.data.bids import parse_bids_name
    from bench.data.sanity import load_gated_scan
    from bench.data.spaces import get_space, resample_to_space

    space = get_space(args.space)
    path = Path(args.scan)
    if path.is_file():
        parsed = parse_bids_name(path.name)
        entities, suffix = parsed if parsed else ({}, "")
        volume, affine = load_gated_scan(path)
        return (resample_to_space(volume, affine, space), f"sub-{entities.get('sub', path.name)}",
                f"ses-{entities.get('ses', 'none')}", suffix)
    cohort = _cohort(args)
    t = cohort.table
    ids = t["participant_id"] + "_" + t["session_id"] + "_" + t["sequence"]
    hits = t[ids.str.startswith(args.scan)]
    if hits.empty:
        raise MribenchError(f"--scan {args.scan}: neither a file nor a scan of cohort {cohort.name} "
                            f"(give e.g. {ids.iloc[0]})")
    row = hits.iloc[0]
    from bench.data.store import VolumeStore
    from bench.paths import cache_home

    volume = np.asarray(VolumeStore(cache_home() / "store").get(row["path"], space), dtype=np.float32)
    return volume, row["participant_id"], row["session_id"], row["sequence"]


def cmd_perturb_show(args: argparse.Namespace) -> int:
    from bench.data.spaces import get_space
    from bench.perturb_figure import perturbation_figure
    from bench.perturbations import PERTURBATIONS, SEVERITIES

    volume, subject, session, sequence = _resolve_scan(args)
    names = args.perturbation or list(PERTURBATIONS)
    severities = args.severity or list(SEVERITIES)
    params = perturbation_figure(volume, perturbations=names, severities=severities, out=Path(args.out),
                                 spacing_mm=get_space(args.space).spacing_mm, subject=subject,
                                 session=session, sequence=sequence, seed=args.perturbation_seed)
    console.print(f"wrote {args.out}: {subject} {session} {sequence}, {len(names)} perturbation(s) x "
                  f"severities {severities}", highlight=False)
    for name, by_sev in params.items():
        for sev, p in by_sev.items():
            shown = {k: v for k, v in p.items() if k not in ("severity",)}
            console.print(f"  {name} @{sev}: {shown}", highlight=False, soft_wrap=True)
    return 0


def cmd_perturb_list(args: argparse.Namespace) -> int:
    from bench.perturbations import PERTURBATIONS

    table = Table(title="perturbations (robustness protocol)")
    for col in ("perturbation", "what", "level unit", "severity 1..5"):
        table.add_column(col)
    for p in PERTURBATIONS.values():
        table.add_row(p.name, p.description, p.unit, ", ".join(f"{v:g}" for v in p.levels))
    console.print(table)
    return 0


# -- bench pretrain ----------------------------------------------------------------------------
def cmd_pretrain(args: argparse.Namespace) -> int:
    import math

    from baselines import ssl_methods
    from bench.pretrain import pretrain, pretraining_pool
    from bench.profiles import get_profile

    methods = ssl_methods()
    if args.encoder not in methods:
        raise MribenchError(f"no pretraining recipe for '{args.encoder}'; available: {', '.join(methods)}")
    method = methods[args.encoder](config=args.config, seed=args.seed_train)
    from bench.distributed import env_rank, launched_by_torchrun
    from bench.locks import cache_lock

    if args.nproc < 1:
        raise MribenchError(f"--nproc must be at least 1 (got {args.nproc})")
    with cache_lock(f"cohort-{args.profile}-seed{args.seed}"):  # generated once, before any rank reads it
        cohort = _cohort(args)
    steps = args.steps or get_profile(args.profile).pretrain_steps
    if args.epochs:  # an epoch = one pass over the pool's scans
        pool = set(pretraining_pool(cohort))
        n_scans = int((cohort.table["participant_id"].isin(pool) & cohort.table["sequence"].isin(method.sequences)).sum())
        steps = max(1, math.ceil(args.epochs * n_scans / args.batch_size))
    if args.nproc > 1 and not launched_by_torchrun():
        return _launch_pretrain(args, steps, cohort.name)
    result = pretrain(method, cohort, steps=steps, batch_size=args.batch_size, lr=args.lr,
                      lr_schedule=args.lr_schedule, seed=args.seed_train,
                      out_dir=Path(args.out) if args.out else None, resume=args.resume,
                      checkpoint_every=args.checkpoint_every, progress=not args.no_progress,
                      command=args.command_line)
    if env_rank() != 0:  # under torchrun, rank 0 reports for all
        return 0
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    console.print(f"pretrained {args.encoder} ({args.config}) for {result.steps} steps in {result.seconds:.0f} s: "
                  f"loss {first:.3f} -> {last:.3f} (mean of first / last 5 steps)", highlight=False)
    console.print(f"weights {result.encoder_path}\ncard    {result.card_path}\nloss log {result.out_dir / 'loss.tsv'}\n"
                  f"use: bench run --encoder {args.encoder} --weights {result.encoder_path} --task ...", highlight=False)
    return 0


def _launch_pretrain(args: argparse.Namespace, steps: int, cohort_name: str) -> int:
    """Re-run this `bench pretrain` in --nproc processes under torchrun (see bench.distributed);
    every choice is passed explicitly, so all ranks agree on the steps and the output folder."""
    from bench.distributed import launch
    from bench.pretrain import default_out_dir

    if args.batch_size % args.nproc or args.batch_size // args.nproc < 2:  # checked again by each rank
        raise MribenchError(f"--batch-size {args.batch_size} cannot be shared by --nproc {args.nproc}: use a "
                            f"multiple of {args.nproc} with at least 2 scans per process")
    out = Path(args.out) if args.out else default_out_dir(args.encoder, cohort_name)
    child = ["pretrain", "--encoder", args.encoder, "--config", args.config, "--steps", str(steps),
             "--batch-size", str(args.batch_size), "--lr", repr(args.lr), "--lr-schedule", args.lr_schedule,
             "--seed-train", str(args.seed_train),
             "--checkpoint-every", str(args.checkpoint_every), "--out", str(out), "--profile", args.profile,
             "--seed", str(args.seed)]
    child += (["--cohort", args.cohort] if args.cohort else []) + (["--resume"] if args.resume else []) \
        + (["--no-progress"] if args.no_progress else [])
    console.print(f"pretraining {args.encoder} in {args.nproc} processes (torchrun, "
                  f"{'NCCL' if _cuda() else 'gloo'}) into {out}", highlight=False)
    code = launch(args.nproc, child)
    if code != 0:
        raise MribenchError(f"pretraining under torchrun failed (exit status {code}; the ranks' errors are above); "
                            f"finished checkpoints are kept: rerun with --resume --out {out}")
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# -- bench run ---------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    """Run the grid; every job is attempted, and the exit status is 1 when any of them failed."""
    from dataclasses import replace

    from bench.commands._args import results_folder
    from bench.encoders.features import run_options
    from bench.executors import make_executor
    from bench.locks import cache_lock
    from bench.profiles import get_profile
    from bench.runner import Runner, check_protocols
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
        cohort = _cohort(args)
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


# -- bench list --------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "tasks":
        return _list_tasks(args)
    if args.what == "encoders":
        from bench.encoders import get_encoder, list_encoders

        rows = []
        for name in list_encoders():
            try:
                card = get_encoder(name).card
            except MribenchError as e:  # an encoder that needs arguments (features: --features PATH)
                rows.append([name, str(e), None, None, None, None])
                continue
            rows.append([name, card.architecture, card.n_parameters, card.embed_dim, card.input_space, card.ssl_method])
        _print_listing(args, "encoders", ["encoder", "architecture", "parameters", "embed dim", "input space",
                                          "SSL method"], rows)
    elif args.what == "profiles":
        _print_listing(args, "run profiles",
                       ["profile", "AD subjects", "healthy subjects", "tumour subjects", "resolution (mm)",
                        "what for"],
                       [[p.name, p.synth_ad_subjects, p.synth_healthy_subjects, p.synth_tumour_subjects,
                         p.synth_resolution, p.description]
                        for p in PROFILES.values()])
    else:
        from bench.data.spaces import SPACES

        _print_listing(args, "input spaces", ["space", "shape", "spacing (mm)", "description"],
                       [[s.name, "x".join(map(str, s.shape)), s.spacing_mm, s.description] for s in SPACES.values()])
    return 0


def _print_listing(args: argparse.Namespace, title: str, columns: list[str], rows: list[list], note: str = "") -> None:
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


def _existing_cohort(args: argparse.Namespace):
    """The cohort named by --cohort, or the profile's synthetic cohort if it is already generated;
    None otherwise. Listing never generates data (the default cohort takes minutes)."""
    from bench.data.bids import read_bids
    from bench.data.sources import synth_dir, synth_name
    from bench.data.synth.generate import SynthConfig, is_complete

    if args.cohort and args.cohort != "synth":
        return _cohort(args)
    folder = synth_dir(args.profile, args.seed)
    if is_complete(folder, SynthConfig.from_profile(args.profile, seed=args.seed)):
        return read_bids(folder, name=synth_name(args.profile))  # read, never (re)generate
    return None


def _list_tasks(args: argparse.Namespace) -> int:
    from bench.runner import prepare_task
    from bench.tasks import list_tasks

    cohort = _existing_cohort(args)
    splits = ("train", "val", "test", "external")
    rows = []
    for name, spec in list_tasks().items():
        counts: list = []
        if cohort is not None:
            try:
                examples, _ = prepare_task(spec, cohort)
                n = examples.table.groupby("split")["participant_id"].nunique()
                counts = [int(n.get(s, 0)) for s in splits]
            except MribenchError as e:
                counts = [None] * 4
                err_console.print(f"{name}: {e}", highlight=False, soft_wrap=True)
        arrow = "up" if spec.higher_is_better else "down"
        rows.append([name, spec.version, spec.kind, spec.cohort, *counts, f"{spec.main_score} ({arrow})"])
    columns = ["task", "version", "kind", "cohort", *(splits if cohort is not None else ()), "main score"]
    note = ("(subjects per split)" if cohort is not None else
            f"(subjects per split: give --cohort, or generate the {args.profile} cohort with `bench data synth`)")
    _print_listing(args, f"tasks on {cohort.name}" if cohort is not None else "tasks", columns, rows, note)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="generate, inspect and check cohorts").add_subparsers(
        dest="data_command", required=True)
    p = data.add_parser("synth", help="generate the synthetic longitudinal cohort (BIDS)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--profile", default="default", choices=sorted(PROFILES))
    p.add_argument("--subjects", type=int, default=None, help="override the profile's cohort size")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--resolution", type=int, choices=(1, 2), default=None, help="mm (default: profile's)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--force", action="store_true", help="regenerate even if complete")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_data_synth)
    p = data.add_parser("info", help="summarise a cohort")
    add_cohort_args(p)
    _add_power_args(p)
    p.set_defaults(func=cmd_data_info)
    p = data.add_parser("check", help="load every scan and report each unusable one")
    add_cohort_args(p)
    p.set_defaults(func=cmd_data_check)
    from bench.data.commands import add_data_commands

    add_data_commands(data)  # data import (real releases), data prepare (raw scans)

    splits = sub.add_parser("splits", help="make and check patient-level split files").add_subparsers(
        dest="splits_command", required=True)
    p = splits.add_parser("make", help="write stratified patient-level split files + SHA-256")
    add_cohort_args(p)
    p.add_argument("--population", action="append", help="sub-cohort(s) to split (default: each)")
    p.add_argument("--label", default=None, help="subject column to stratify by")
    p.add_argument("--external-site", default=None, help="site held out as 'external'")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder (default: splits/<cohort>/)")
    p.add_argument("--force", action="store_true",
                   help="overwrite existing split files (committed ones are what every record is checked against)")
    _add_power_args(p)
    p.set_defaults(func=cmd_splits_make)
    p = splits.add_parser("check", help="verify hashes, leakage and subjects of split files")
    p.add_argument("files", nargs="*", help="split TSVs (default: splits/<cohort>/*.tsv)")
    add_cohort_args(p)
    p.set_defaults(func=cmd_splits_check)

    p = sub.add_parser("run", help="evaluate encoders on tasks under protocols; write result records")
    p.add_argument("--encoder", action="append", required=True,
                   help="registered name or path/to/file.py:ClassName (repeatable)")
    p.add_argument("--task", action="append", required=True, help="task name (repeatable)")
    p.add_argument("--protocol", action="append", default=None,
                   help="linear_probe (default), fractions, few_shot, finetune, robustness (repeatable)")
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

    p = sub.add_parser("pretrain", help="self-supervised pretraining on the cohort's pretraining pool")
    p.add_argument("--encoder", required=True, help="encoder with a pretraining recipe (e.g. simclr3d)")
    p.add_argument("--config", default="small", help="small (cpu-small space) or paper")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the profile's)")
    p.add_argument("--epochs", type=float, default=None, help="passes over the pool's scans (overrides --steps)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (AdamW)")
    p.add_argument("--lr-schedule", choices=("cosine", "constant"), default="cosine",
                   help="cosine: warm-up over 5 %% of the steps, then cosine decay to 0 (default); constant")
    p.add_argument("--seed-train", type=int, default=0, help="seed of initialisation, batches and views")
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--out", default=None, help="output folder (default: the cache's checkpoints/)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--nproc", type=int, default=1,
                   help="data-parallel processes on this machine (torchrun; gloo on CPU, NCCL on GPUs); "
                        "--batch-size is the global batch, shared by them")
    add_cohort_args(p)
    p.set_defaults(func=cmd_pretrain)

    perturb = sub.add_parser("perturb", help="inspect the robustness protocol's acquisition artefacts"
                             ).add_subparsers(dest="perturb_command", required=True)
    p = perturb.add_parser("show", help="figure of a scan, clean and at each severity (mid-axial, mid-coronal)")
    p.add_argument("--scan", required=True,
                   help="a NIfTI file, or a scan of the cohort as sub-X_ses-Y[_SEQUENCE]")
    p.add_argument("--perturbation", action="append", help="perturbation (repeatable; default: all)")
    p.add_argument("--severity", action="append", type=int, help="severity 1-5 (repeatable; default: all)")
    p.add_argument("--out", required=True, help="figure file (.png or .svg)")
    p.add_argument("--space", default="cpu-small", help="input space to show the scan in")
    p.add_argument("--perturbation-seed", type=int, default=0, help="seed of the parameter draws")
    add_cohort_args(p)
    p.set_defaults(func=cmd_perturb_show)
    p = perturb.add_parser("list", help="the perturbations and their level per severity")
    p.set_defaults(func=cmd_perturb_list)

    p = sub.add_parser("list", help="list tasks, encoders, profiles or input spaces")
    p.add_argument("what", choices=("tasks", "encoders", "profiles", "spaces"))
    p.add_argument("--json", action="store_true", help="print a JSON list (one object per row)")
    add_cohort_args(p)
    p.set_defaults(func=cmd_list)
    _register_command_modules(sub)
    return parser


def _register_command_modules(sub) -> None:
    """Sub-commands that live in their own module under ``bench/commands/`` (one module, one
    command family) register themselves here, so cli.py need not grow with every feature."""
    import importlib
    import pkgutil

    import bench.commands

    for info in sorted(pkgutil.iter_modules(bench.commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):  # shared helpers, not a command family
            continue
        module = importlib.import_module(f"bench.commands.{info.name}")
        module.register(sub)


def _one_line_warnings(previous):
    """A ``warnings.showwarning`` that prints mribench's own warnings (a scan's oblique affine...)
    as one line, and hands every other warning to ``previous``."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        from bench.data.sanity import ScanWarning

        if issubclass(category, ScanWarning):
            err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)
        else:
            previous(message, category, filename, lineno, file, line)

    return show


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # what the user typed, for provenance (records, cards): main(argv) from a test or script too
    args.command_line = " ".join(["bench", *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    try:
        with warnings.catch_warnings():  # restores the default display when main() returns
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            return int(args.func(args) or 0)
    except MribenchError as e:
        err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted: finished work is kept; run the same command to continue")
        return 130


if __name__ == "__main__":
    sys.exit(main())
