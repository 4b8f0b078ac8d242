"""Run profiles: how big a run is (`smoke` for tests, `default` for a 2-core CPU, `full` for GPUs).

Every command that generates or evaluates takes ``--profile``; the profile sets the cohort
size and resolution here, and (in the harness) the number of seeds, steps and bootstrap draws.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.errors import MribenchError


@dataclass(frozen=True)
class Profile:
    name: str
    synth_ad_subjects: int
    synth_tumour_subjects: int
    synth_resolution: int  # mm
    description: str
    seeds: int = 3                # seeds per protocol setting
    n_boot: int = 1000            # bootstrap replicates for CIs
    few_shot_draws: int = 5       # seeded k-shot draws per k
    finetune_epochs: int = 20     # upper bound; early stopping on val ends sooner
    segmentation_steps: int = 400  # decoder optimiser steps (batches of 4); early stopping on val
    pretrain_steps: int = 400      # SSL optimiser steps of `bench pretrain` unless --steps/--epochs
    synth_healthy_subjects: int = 0  # healthy lifespan population (one T1w each: brain age)
    # The robustness protocol's grid: every evaluated scan is embedded once per perturbation x
    # severity, which is most of a suite's CPU time (10 perturbations x 5 severities = 50 passes over
    # the test and external scans per encoder). The default profile keeps every perturbation but
    # three severities (mild, middle, worst) on the test split: 5x fewer passes, the same curves' ends.
    robustness_severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    robustness_splits: tuple[str, ...] = ("test", "external")


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("smoke", 80, 12, 2, "tiny cohort, few steps: tests and CI, seconds",
                seeds=2, n_boot=200, few_shot_draws=2, finetune_epochs=2, segmentation_steps=150,
                pretrain_steps=20, synth_healthy_subjects=40),
        # default: sized by the power analysis of `bench splits make` (docs/calibration.md)
        Profile("default", 520, 160, 2, "the embedded default: minutes on 2 CPU cores",
                synth_healthy_subjects=880, robustness_severities=(1, 3, 5), robustness_splits=("test",)),
        Profile("full", 2000, 400, 1, "paper scale at 1 mm, for GPUs", seeds=5, n_boot=2000,
                few_shot_draws=10, finetune_epochs=100, segmentation_steps=3000,
                pretrain_steps=50000, synth_healthy_subjects=2000),
    )
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise MribenchError(f"unknown profile '{name}'; choose one of {', '.join(PROFILES)}") from None
