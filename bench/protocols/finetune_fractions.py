"""``finetune_fractions``: fine-tuning on nested 1 / 10 / 20 / 100 % subsets of the training subjects.

The source papers' central claim is that self-supervised pretraining beats training from
scratch when labels are scarce. This protocol tests it on equal terms: the ``finetune``
protocol's model, optimiser and early stopping (on the whole validation split), trained on the
same nested subsets the ``fractions`` probe uses (the split file's ``order``), so an SSL encoder
fine-tuned at 10 % is compared with ``supervised`` fine-tuned on the very same subjects. Each
setting is ``fraction=<p>`` with ``{"fraction": p}`` in its scores' params; the headline is 100 %.
Embedding tasks only (a segmentation task fine-tunes its decoder under ``finetune``).

At 100 % the subjects, seeds, model and optimiser are the ``finetune`` protocol's, so the
``fraction=1`` setting *is* that protocol's ``full`` setting (``same_as``): when the job's
``finetune`` record with the same identity is already in the results folder, its seeds are
reused rather than trained again (an hour per seed of a ResNet-10 on 2 CPU cores).
"""

from __future__ import annotations

from bench.protocols import Protocol
from bench.protocols.context import Context, example_volumes, seeds
from bench.protocols.finetune import finetune_seed
from bench.protocols.finetune import supports as finetune_supports
from bench.protocols.fractions import fraction_subjects, setting, setting_params

FRACTIONS = (0.01, 0.1, 0.2, 1.0)


def supports(spec, encoder) -> str | None:
    if not spec.target.uses_embeddings:
        return f"finetune_fractions scores embedding tasks only; {spec.name} is {spec.target.name} (use finetune)"
    return finetune_supports(spec, encoder)


def run(ctx: Context) -> list:
    vols = example_volumes(ctx)
    out = []
    for p in FRACTIONS:
        subjects = fraction_subjects(ctx, p)
        for seed in seeds(ctx):
            out += finetune_seed(ctx, vols, seed, subjects, setting(p))
    return out


PROTOCOL = Protocol(
    name="finetune_fractions", run=run, label="fine-tune fractions (100 %)", headline=setting(1.0).label,
    order=6, needs_embeddings=False, trains_network=True,
    description="encoder and head trained end to end on nested 1/10/20/100 % of the training subjects",
    supports=supports, setting_params=setting_params, same_as=((setting(1.0).label, "finetune", "full"),))
