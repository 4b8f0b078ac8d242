"""``bench pretrain``: self-supervised pretraining (one process, or several under torchrun)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.commands._args import add_cohort_args, cohort_from, console
from bench.errors import MribenchError


def register(sub) -> None:
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
    p.add_argument("--init-from", default=None, metavar="ENCODER.pt",
                   help="start from another run's weights: tensors of the same name and shape are copied "
                        "(e.g. temporal from simclr3d's backbone); a run's last.pt continues its whole "
                        "training network (e.g. DINO's heads and teacher); recorded in the card")
    p.add_argument("--nproc", type=int, default=1,
                   help="data-parallel processes on this machine (torchrun; gloo on CPU, NCCL on GPUs); "
                        "--batch-size is the global batch, shared by them")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N",
                   help="where one process trains (auto: the first CUDA device if present, else the CPU); "
                        "under --nproc each process takes its own GPU when there are GPUs")
    from bench.devices import DEFAULT_PRECISION, PRECISIONS

    p.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                   help="autocast precision of the loss's forward pass (fp16 with a gradient scaler, on a GPU "
                        "only); the optimiser and its weights stay fp32; written in the card when not fp32")
    add_cohort_args(p)
    p.set_defaults(func=cmd_pretrain)


# -- bench pretrain ----------------------------------------------------------------------------
def cmd_pretrain(args: argparse.Namespace) -> int:
    import math

    from bench.pretrain import pretrain, pretraining_pool, ssl_recipes
    from bench.profiles import get_profile

    methods = ssl_recipes()
    if args.encoder not in methods:
        raise MribenchError(f"no pretraining recipe for '{args.encoder}'; available: {', '.join(methods)}")
    method = methods[args.encoder](config=args.config, seed=args.seed_train)
    from bench.distributed import env_rank, launched_by_torchrun
    from bench.locks import cache_lock

    if args.nproc < 1:
        raise MribenchError(f"--nproc must be at least 1 (got {args.nproc})")
    from bench.devices import compute_from

    # an absent device or fp16 on a CPU: one line, before the cohort is opened
    device = compute_from(args.device, args.precision).device
    with cache_lock(f"cohort-{args.profile}-seed{args.seed}"):  # generated once, before any rank reads it
        cohort = cohort_from(args)
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
                      command=args.command_line, init_from=Path(args.init_from) if args.init_from else None,
                      device=device, precision=args.precision)
    if env_rank() != 0:  # under torchrun, rank 0 reports for all
        return 0
    import numpy as np

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
             "--seed", str(args.seed), "--device", args.device, "--precision", args.precision]
    child += (["--cohort", args.cohort] if args.cohort else []) + (["--resume"] if args.resume else []) \
        + (["--init-from", args.init_from] if args.init_from else []) \
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
