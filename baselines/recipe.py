"""What every pretraining recipe shares: its network, the weights it hands over, its card."""

from __future__ import annotations

import torch
from torch import nn


class Recipe:
    """Base of the SSL recipes in ``baselines/`` (see :class:`bench.pretrain.SSLMethod`).

    Subclasses set ``name``, ``net``, ``input_space``, ``encoder_cls`` (the encoder that loads the
    weights) and ``config_name``, and implement ``loss``.
    """

    sequences: tuple[str, ...] = ("T1w",)
    net: nn.Module
    encoder_cls: type
    config_name: str

    def network(self) -> nn.Module:
        return self.net

    def encoder_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def card(self, pool: list[str], cohort: str, steps: int) -> dict:
        """The encoder's card with the pool it was pretrained on (ids, so overlaps can be flagged)."""
        card = self.encoder_cls(config=self.config_name, untrained_ok=True).card
        return card.model_copy(update={"pretraining_data": {"cohort": cohort, "subjects": pool, "steps": steps}}
                               ).model_dump(mode="json")
