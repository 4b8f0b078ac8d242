"""``few_shot``: the probe head on k = 1, 5, 10 training subjects per class, several seeded draws.

The draw is the seed of its scores; each setting is ``k=<k>`` with ``{"k": k}`` in its params.
"""

from __future__ import annotations

import re

from bench.protocols import Protocol
from bench.protocols.context import Context, Setting, fit_and_score, frozen_support, subject_labels

SHOTS = (1, 5, 10)


def setting(k: int) -> Setting:
    return Setting(f"k={k}", {"k": k})


def setting_params(label: str) -> dict:
    """``k=10`` -> ``{"k": 10}`` (records written before settings had params)."""
    m = re.fullmatch(r"k=([0-9]+)", label)
    return {"k": int(m.group(1))} if m else {}


def supports(spec, encoder) -> str | None:
    if not spec.target.has_classes:
        return f"few-shot needs class labels; {spec.name} is {spec.kind}"
    return frozen_support(spec, encoder)


def run(ctx: Context) -> list:
    labels = subject_labels(ctx)
    out = []
    for k in SHOTS:
        for draw in range(ctx.profile.few_shot_draws):
            subjects = set(ctx.split.k_shot(labels, k, draw, ctx.spec.name))
            out += fit_and_score(ctx, subjects, draw, setting(k))
    return out


PROTOCOL = Protocol(
    name="few_shot", run=run, label="few-shot (k = 10)", headline=setting(10).label, order=3, suite=True,
    probe_grid=True, description="k = 1, 5, 10 training subjects per class, seeded draws",
    supports=supports, setting_params=setting_params)
