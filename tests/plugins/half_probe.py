"""A toy protocol (tests/test_extensibility.py): the linear probe on the first half of the training
subjects. All a protocol is: a ``run`` over the public Context and a declared ``Protocol``."""

from bench.protocols import Protocol
from bench.protocols.context import Setting, fit_and_score, frozen_support, seeds, task_train_order

HALF = Setting("half", {"fraction": 0.5})


def run(ctx) -> list:
    order = task_train_order(ctx)
    subjects = set(order[: max(1, len(order) // 2)])
    return [s for seed in seeds(ctx) for s in fit_and_score(ctx, subjects, seed, HALF)]


PROTOCOL = Protocol(name="half_probe", run=run, label="half probe (50 %)", headline=HALF.label, order=6,
                    description="the probe on the first half of the training subjects", supports=frozen_support)
