"""``supervised``: the 3D ResNet-10 trained from scratch on each task (the fine-tune protocol only).

The same backbone as ``random`` (MONAI ResNet-10, stride-2 stem, seeded initialisation); what
makes it a baseline of its own is the protocol: every weight is learned from the task's
training labels, which is what an SSL encoder's pretraining has to beat when labels are
plentiful. Frozen protocols would only repeat ``random``, so the harness refuses them.
"""

from __future__ import annotations

from baselines.random_init import RandomInit


class Supervised(RandomInit):
    #: the runner refuses every protocol but fine-tuning for such encoders
    finetune_only = True

    def __init__(self, seed: int = 0):
        super().__init__(seed=seed)
        self.card = self.card.model_copy(update={
            "name": "supervised" if seed == 0 else f"supervised-seed{seed}",
            "ssl_method": "none (trained from scratch on the task: fine-tune protocol)"})
