"""Time of each robustness perturbation per volume of an input space (default cpu-small, 64^3).

Each perturbation is applied at every severity to the same volumes (T1w scans of a profile's
synthetic cohort, already in the volume store); the figure is the median wall time per volume
over all of them, after one warm-up call per perturbation (imports, FFT plans). Run on an idle
machine; the numbers are for comparing perturbations, and against one encoder forward pass.

Usage::

    python benchmarks/perturbation_speed.py [--profile smoke] [--volumes 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    from bench.data.sources import open_cohort
    from bench.data.spaces import get_space
    from bench.data.store import VolumeStore
    from bench.encoders import get_encoder
    from bench.paths import cache_home
    from bench.perturbations import PERTURBATIONS, SEVERITIES, perturb_scan

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--space", default="cpu-small")
    ap.add_argument("--volumes", type=int, default=8)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    space = get_space(args.space)
    cohort = open_cohort(None, profile=args.profile, progress=False)
    rows = cohort.table[cohort.table.sequence == "T1w"].drop_duplicates("participant_id").head(args.volumes)
    store = VolumeStore(cache_home() / "store")
    store.prefetch(rows["path"].tolist(), space, progress=False)
    vols = [(np.asarray(store.get(r.path, space), np.float32), r.participant_id, r.session_id)
            for r in rows.itertuples()]

    results = {}
    for name in PERTURBATIONS:
        perturb_scan(vols[0][0], name, 1, seed=0, subject="warm", session="up", spacing_mm=space.spacing_mm)
        times = []
        for vol, sub, ses in vols:
            for s in SEVERITIES:
                t0 = time.perf_counter()
                perturb_scan(vol, name, s, seed=0, subject=sub, session=ses, sequence="T1w",
                             spacing_mm=space.spacing_mm)
                times.append(time.perf_counter() - t0)
        results[name] = 1000 * float(np.median(times))

    encoder = get_encoder("random")
    batch = torch.from_numpy(np.stack([v for v, _, _ in vols[:8]]))[:, None]
    with torch.inference_mode():
        encoder.embed(batch)
        t0 = time.perf_counter()
        encoder.embed(batch)
    forward_ms = 1000 * (time.perf_counter() - t0) / len(batch)

    shape = "x".join(map(str, space.shape))
    print(f"{'perturbation':16s} ms per {shape} volume (median of {len(vols) * len(SEVERITIES)})")
    for name, ms in results.items():
        print(f"{name:16s} {ms:8.1f}   ({ms / forward_ms:.2f} x a random-init ResNet-10 forward)")
    print(f"{'(forward pass)':16s} {forward_ms:8.1f}   random-init encoder, batch of {len(batch)}, "
          f"{torch.get_num_threads()} threads")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"space": args.space, "ms_per_volume": results, "forward_ms_per_volume": forward_ms,
                       "threads": torch.get_num_threads(), "n_volumes": len(vols)}, f, indent=2)


if __name__ == "__main__":
    main()
