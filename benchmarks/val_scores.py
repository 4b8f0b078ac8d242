"""Validation-split scores of candidate encoders: how a recipe or read-out is chosen without
looking at test.

Records score the test and external splits only, and nothing may be tuned on them. When two
recipes (or two read-outs of one network) are candidates, this script fits each task's probe
head on the training split exactly as ``linear_probe`` does (same head, same seeds, same
cached embeddings) and scores the **validation** split, with CIs over its subjects, so the
choice is made on val and test is looked at once, afterwards:

    python benchmarks/val_scores.py --encoder mae3d@init --encoder mae3d=RUN/encoder.pt \\
        --task ad_diagnosis --task brain_age --task conversion [--profile default] [--seeds 3]

``NAME=WEIGHTS`` loads weights; ``NAME:key=value`` passes an encoder option (e.g. a read-out).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np


def parse_encoder(spec: str) -> tuple[str, dict]:
    """``name[=weights][:key=value...]`` -> (name, keyword arguments of the encoder)."""
    head, *options = spec.split(":")
    name, _, weights = head.partition("=")
    kwargs = dict(option.split("=", 1) for option in options)
    if weights:
        kwargs["weights"] = weights
    return name, kwargs


def val_score(ctx, seed: int) -> dict[str, float]:
    """The task's main score on val (point and 95 % CI) of a head fitted on train."""
    from bench.protocols.context import fit_head, head_data, score_predictions, split_indices

    train, val = split_indices(ctx, "train"), split_indices(ctx, "val")
    head = fit_head(ctx, train, seed)
    data = head_data(ctx, val)
    groups = ctx.examples.table.iloc[val]["participant_id"].to_numpy()
    _, cis = score_predictions(ctx.spec, data.y, head.predict(data), groups, ctx.profile.n_boot, seed)
    ci = cis[ctx.spec.main_score]
    return {"point": ci["point"], "low": ci["low"], "high": ci["high"]}


def context_for(encoder, task: str, cohort, profile, store, cache):
    """The probe's context of ``encoder`` on ``task``: the committed split and cached embeddings."""
    from bench.protocols.context import Context, assemble_features
    from bench.runner import prepare_task
    from bench.tasks import get_task

    examples, split = prepare_task(get_task(task), cohort)
    ctx = Context(examples, split, cohort=cohort, encoder=encoder, profile=profile, store=store, embeddings=cache)
    ctx.features = assemble_features(examples, cache.embed(encoder, cohort, examples.scan_rows(), store,
                                                           progress=False))
    return ctx


def main(argv: list[str] | None = None) -> int:
    from bench.data.sources import open_cohort
    from bench.data.store import VolumeStore
    from bench.embeddings import EmbeddingCache
    from bench.encoders import get_encoder
    from bench.paths import cache_home
    from bench.profiles import get_profile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", action="append", required=True,
                        help="NAME, NAME=WEIGHTS, NAME:key=value (repeatable)")
    parser.add_argument("--task", action="append", required=True)
    parser.add_argument("--profile", default="default")
    parser.add_argument("--seeds", type=int, default=None, help="head seeds (default: the profile's)")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    if args.seeds:
        profile = dataclasses.replace(profile, seeds=args.seeds)
    cohort = open_cohort(None, profile=args.profile, progress=False)
    cache, store = EmbeddingCache(cache_home() / "embeddings"), VolumeStore(cache_home() / "store")
    print(f"validation split of {cohort.name}, linear probe on the training split, mean of "
          f"{profile.seeds} seed(s), 95 % CI over val subjects (first seed)\n")
    print("| encoder | " + " | ".join(args.task) + " |\n|---|" + "---|" * len(args.task))
    for spec in args.encoder:
        name, kwargs = parse_encoder(spec)
        encoder = get_encoder(name, **kwargs)
        cells = []
        for task in args.task:
            ctx = context_for(encoder, task, cohort, profile, store, cache)
            scores = [val_score(ctx, seed) for seed in range(profile.seeds)]
            first = scores[0]
            cells.append(f"{np.mean([s['point'] for s in scores]):.3f} ({first['low']:.3f}-{first['high']:.3f})")
        print(f"| {spec} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
