"""``fractions``: the probe on nested 1 / 10 / 20 / 50 / 100 % subsets of the training subjects.

The subsets follow the split file's ``order`` column, so the 10 % subset lies inside the 20 %
one. Each setting is ``fraction=<p>`` with ``{"fraction": p}`` in its scores' params.
"""

from __future__ import annotations

import math
import re

from bench.protocols import Protocol
from bench.protocols.context import Context, Setting, frozen_support, seeds, task_train_order
from bench.protocols.probe import probe

FRACTIONS = (0.01, 0.1, 0.2, 0.5, 1.0)


def setting(p: float) -> Setting:
    return Setting(f"fraction={p:g}", {"fraction": p})


def setting_params(label: str) -> dict:
    """``fraction=0.1`` -> ``{"fraction": 0.1}`` (records written before settings had params)."""
    m = re.fullmatch(r"fraction=([0-9.eE+-]+)", label)
    return {"fraction": float(m.group(1))} if m else {}


def fraction_subjects(ctx: Context, p: float) -> set[str]:
    ordered = task_train_order(ctx)
    return set(ordered[: max(1, math.ceil(p * len(ordered)))])


def run(ctx: Context) -> list:
    out = []
    for p in FRACTIONS:
        subjects = fraction_subjects(ctx, p)
        for seed in seeds(ctx):
            out += probe(ctx, subjects, seed, setting(p), frozen=True)
    return out


PROTOCOL = Protocol(
    name="fractions", run=run, label="fractions (100 %)", headline=setting(1.0).label, order=2, suite=True,
    probe_grid=True, description="the probe on nested 1/10/20/50/100 % of the training subjects",
    supports=frozen_support, setting_params=setting_params)
