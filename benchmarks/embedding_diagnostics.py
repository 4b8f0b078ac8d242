"""How much of its width does an encoder use? Effective rank and dead dimensions of its embeddings
of a population's scans, for a pretrained encoder beside its own init.

A pretrained encoder that probes worse than its random initialisation has usually thrown
information away: a few directions carry the variance (dimensional collapse) or units died. This
reads the embeddings the harness cached (computing what is missing) for every T1w scan of the
population's training subjects (no test subject is looked at) and prints, per encoder:

* participation ratio of the covariance eigenvalues, (sum l)^2 / sum l^2: the number of
  directions the variance is spread over (1 = one direction, embed_dim = isotropic);
* the number of principal directions holding 90 % of the variance;
* dead dimensions: standard deviation below 1e-6 of the largest one's.

    python benchmarks/embedding_diagnostics.py --encoder mae3d@init --encoder mae3d=PATH/encoder.pt \\
        [--population healthy] [--profile default]
"""

from __future__ import annotations

import argparse

import numpy as np


def spread(embeddings: np.ndarray) -> dict[str, float]:
    """Participation ratio, directions for 90 % of the variance and dead dimensions of (n, d) rows."""
    x = embeddings.astype(np.float64) - embeddings.mean(axis=0)
    eig = np.clip(np.linalg.eigvalsh(x.T @ x / max(1, len(x) - 1))[::-1], 0.0, None)
    total = eig.sum()
    std = x.std(axis=0)
    return {"dim": x.shape[1],
            "participation_ratio": float(total ** 2 / (eig ** 2).sum()) if total > 0 else 0.0,
            "dirs_90": int(np.searchsorted(np.cumsum(eig) / total, 0.9) + 1) if total > 0 else 0,
            "dead": int((std < 1e-6 * std.max()).sum()) if std.max() > 0 else x.shape[1]}


def main(argv: list[str] | None = None) -> int:
    from bench.data.sources import open_cohort
    from bench.data.store import VolumeStore
    from bench.embeddings import EmbeddingCache
    from bench.encoders import get_encoder
    from bench.paths import cache_home, splits_root

    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", action="append", required=True, help="NAME or NAME=WEIGHTS (repeatable)")
    parser.add_argument("--population", default="healthy", help="split file (population) whose train subjects to embed")
    parser.add_argument("--profile", default="default")
    args = parser.parse_args(argv)
    cohort = open_cohort(None, profile=args.profile, progress=False)
    split = pd.read_csv(splits_root() / cohort.name / f"{args.population}.tsv", sep="\t", dtype=str)
    train = set(split.loc[split["split"] == "train", "participant_id"])
    t = cohort.table
    rows = np.flatnonzero((t["participant_id"].isin(train) & (t["sequence"] == "T1w")).to_numpy())
    cache, store = EmbeddingCache(cache_home() / "embeddings"), VolumeStore(cache_home() / "store")
    print(f"{len(rows)} T1w scans of {len(train)} {args.population} training subjects ({cohort.name})\n")
    print("| encoder | dim | participation ratio | directions for 90 % | dead dims |\n|---|---|---|---|---|")
    for spec in args.encoder:
        name, _, weights = spec.partition("=")
        encoder = get_encoder(name, **({"weights": weights} if weights else {}))
        emb = cache.embed(encoder, cohort, rows, store, progress=False)
        s = spread(np.stack([emb[int(r)] for r in rows]))
        label = f"{name} (pretrained)" if weights else name
        print(f"| {label} | {s['dim']} | {s['participation_ratio']:.1f} | {s['dirs_90']} | {s['dead']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
