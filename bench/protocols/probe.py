"""``linear_probe``: the frozen encoder, cached embeddings, the task's probe head with inner-CV
regularisation, trained on all training subjects, one score per seed and evaluation split.

Segmentation tasks get the frozen-encoder decoder of :mod:`bench.protocols.segmentation` instead
of a head: the task's kind decides (:func:`probe`, which the fractions protocol uses too).
"""

from __future__ import annotations

from bench.protocols import Protocol
from bench.protocols.context import FULL, Context, Setting, fit_and_score, frozen_support, seeds
from bench.protocols.segmentation import segmentation_probe


def probe(ctx: Context, train_subjects: set[str] | None, seed: int, setting: Setting,
          frozen: bool = True) -> list:
    """The probe of the task's kind: a head on frozen embeddings, or a decoder on feature maps
    (``frozen=False``: the encoder trains with the decoder, as fine-tuning does)."""
    if ctx.target.uses_embeddings:
        return fit_and_score(ctx, train_subjects, seed, setting)
    return segmentation_probe(ctx, train_subjects, seed, setting, frozen=frozen)


def run(ctx: Context) -> list:
    return [s for seed in seeds(ctx) for s in probe(ctx, None, seed, FULL, frozen=True)]


PROTOCOL = Protocol(
    name="linear_probe", run=run, label="linear probe", headline="full", order=0, suite=True,
    description="frozen encoder; logistic / ridge / Cox head with inner-CV regularisation",
    supports=frozen_support)
