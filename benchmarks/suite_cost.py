"""What a suite costs on this machine, phase by phase: unit costs measured here x the suite's counts.

``bench suite run`` times the jobs it runs (wall and CPU seconds by phase, appended to
``<results>/.jobs/suite-timing-<suite>.jsonl``), but on 2 CPU cores the default suite's
fine-tuning and robustness jobs take hours, so a session may never see them finish. This script
measures, in one run, the unit cost of each of those phases and multiplies it by the suite's own
counts on the cohort (from the committed split files and the suite's plan):

* **embeddings**: one frozen forward pass per scan (``bench.perf.forward_pass``: the harness's
  batches and inference mode) x the distinct scans of the encoder's probe jobs;
* **perturbations + embeddings (robustness)**: one artefact per scan (mean over the perturbations
  at the profile's severities, on a real scan of the cohort) plus one forward pass, x the evaluated
  scans (one per subject of the profile's robustness splits) x perturbations x severities;
* **fine-tuning**: one forward + backward + optimiser step per training scan (batch 4, the
  classification / regression batch) and one forward pass per validation scan, per epoch, x the
  profile's epoch bound x seeds. Early stopping (patience 3) usually ends sooner, so this is the
  bound; the per-epoch figure is printed too.

Clean-embedding and robustness costs are omitted for latent encoders (they read a table), and the
segmentation decoder, the heads and the bootstraps are left to the suite's own timing, which
measures them in minutes.

    python benchmarks/suite_cost.py [--suite default] [--profile default] [--scans 16]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

def finetune_batch() -> int:
    """Examples per fine-tuning step of the headline tasks (classification and regression: the kinds' own)."""
    from bench.kinds import target_kind

    return target_kind("classification").finetune_batch(0)


def train_step_seconds(encoder, n_scans: int, seed: int = 0) -> float:
    """Seconds per scan of forward + backward + Adam step of the encoder's trainable network."""
    import torch

    from bench.data.spaces import get_space

    shape = get_space(encoder.card.input_space).shape
    net = encoder.module()
    head = torch.nn.Linear(encoder.card.embed_dim, 1)
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=1e-4)
    batch = finetune_batch()
    x = torch.randn((batch, 1, *shape), generator=torch.Generator().manual_seed(seed))
    net.train()

    def step():
        loss = head(net(x)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    steps = max(1, n_scans // batch)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / (steps * batch)


def eval_forward_seconds(encoder, n_scans: int, seed: int = 0) -> float:
    """Seconds per scan of the trainable network's forward pass in eval mode (fine-tuning's validation)."""
    import torch

    from bench.data.spaces import get_space

    shape = get_space(encoder.card.input_space).shape
    net = encoder.module().eval()
    batch = finetune_batch()
    x = torch.randn((batch, 1, *shape), generator=torch.Generator().manual_seed(seed))
    steps = max(1, n_scans // batch)
    with torch.no_grad():
        net(x)
        start = time.perf_counter()
        for _ in range(steps):
            net(x)
    return (time.perf_counter() - start) / (steps * batch)


def perturbation_seconds(volume: np.ndarray, severities, spacing: float) -> float:
    """Mean seconds of one artefact on ``volume`` over every perturbation x severity (after a warm-up)."""
    from bench.perturbations import PERTURBATIONS, perturb_scan

    def one(name, severity):
        perturb_scan(volume, name, severity, seed=0, subject="sub-cost", session="ses-1", sequence="T1w",
                     spacing_mm=spacing)

    for name in PERTURBATIONS:
        one(name, severities[0])
    start = time.perf_counter()
    for name in PERTURBATIONS:
        for s in severities:
            one(name, s)
    return (time.perf_counter() - start) / (len(PERTURBATIONS) * len(severities))


def suite_counts(suite_name: str, cohort, profile) -> dict:
    """Per encoder: distinct scans of its embedding jobs, robustness scan-settings, and per
    fine-tune job the training and validation scans of one epoch."""
    from bench.perturbations import PERTURBATIONS
    from bench.protocols import get_protocol
    from bench.protocols.robustness import grid_of
    from bench.runner import prepare_task
    from bench.suite import load_suite, plan
    from bench.tasks import get_task

    planned = plan(load_suite(suite_name), cohort.name)
    severities, splits = grid_of(profile)
    prepared = {}
    embed_rows: dict[str, set[int]] = defaultdict(set)
    robust_rows: dict[str, set[int]] = defaultdict(set)
    finetune: dict[tuple[str, str], tuple[int, int]] = {}
    for enc, task, protocol in planned.jobs:
        spec = get_task(task)
        if task not in prepared:
            prepared[task] = prepare_task(spec, cohort)[0]
        ex = prepared[task]
        split = ex.table["split"].to_numpy()
        scans_of = lambda mask: [int(r) for i in np.flatnonzero(mask) for r in np.ravel(ex.rows[i])]  # noqa: E731
        if protocol == "robustness":
            first = ~ex.table["participant_id"].duplicated().to_numpy()  # robustness: one example per subject
            robust_rows[enc] |= set(scans_of(np.isin(split, list(splits)) & first))
        elif protocol == "finetune":
            finetune[(enc, task)] = (len(scans_of(split == "train")), len(scans_of(split == "val")))
        elif get_protocol(protocol).embeds(spec):
            embed_rows[enc] |= set(ex.scan_rows().tolist())
    encoders = sorted({e for e, _, _ in planned.jobs})
    return {"encoders": encoders, "embed": {e: len(embed_rows[e]) for e in encoders},
            "robust": {e: len(robust_rows[e]) * len(PERTURBATIONS) * len(severities) for e in encoders},
            "finetune": finetune, "settings": len(PERTURBATIONS) * len(severities)}


def main(argv: list[str] | None = None) -> int:
    import torch

    from bench.data.sources import open_cohort
    from bench.data.store import VolumeStore
    from bench.encoders import get_encoder
    from bench.encoders.api import capabilities
    from bench.paths import cache_home
    from bench.perf import forward_pass
    from bench.profiles import get_profile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="default")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--scans", type=int, default=16, help="scans per unit-cost measurement")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    cohort = open_cohort(None, profile=args.profile, progress=False)
    counts = suite_counts(args.suite, cohort, profile)
    store = VolumeStore(cache_home() / "store")
    row = cohort.table.iloc[0]
    volume = np.asarray(store.get(row["path"], "cpu-small"), np.float32)
    from bench.data.spaces import get_space

    spacing = get_space("cpu-small").spacing_mm
    perturb = perturbation_seconds(volume, profile.robustness_severities, spacing)
    print(f"suite {args.suite} on {cohort.name} ({profile.name} profile), {torch.get_num_threads()} torch threads; "
          f"one artefact: {perturb * 1000:.0f} ms per scan (mean of {counts['settings']} settings)\n")
    print("| encoder | forward s/scan | train s/scan | embeddings (s) | robustness (s) | fine-tuning, bound (s) "
          "| fine-tuning per epoch (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    totals = defaultdict(float)
    for name in counts["encoders"]:
        encoder = get_encoder(name)
        caps = capabilities(encoder)
        frozen = not (caps.latent or caps.finetune_only)  # has a frozen forward pass over volumes
        fwd = forward_pass(encoder, args.scans, 8).wall / args.scans if frozen else 0.0
        tuned = {t: n for (e, t), n in counts["finetune"].items() if e == name}
        train = train_step_seconds(encoder, args.scans) if tuned else 0.0
        val = eval_forward_seconds(encoder, args.scans) if tuned else 0.0
        embed = counts["embed"][name] * fwd
        robust = counts["robust"][name] * (perturb + fwd) if frozen else 0.0
        per_epoch = sum(n_train * train + n_val * val for n_train, n_val in tuned.values()) * profile.seeds
        bound = per_epoch * profile.finetune_epochs
        for phase, value in (("embeddings", embed), ("robustness", robust), ("fine-tuning", bound)):
            totals[phase] += value
        print(f"| {name} | {fwd:.3f} | {train:.3f} | {embed:.0f} | {robust:.0f} | {bound:.0f} | {per_epoch:.0f} |")
    total = sum(totals.values())
    print(f"\ntotal: {total / 3600:.1f} h on this machine; " + ", ".join(
        f"{phase} {value / 3600:.1f} h ({100 * value / total:.0f} %)" for phase, value in totals.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
