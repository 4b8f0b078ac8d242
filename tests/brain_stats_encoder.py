"""A four-number encoder for protocol tests, named on the command line as a file: the protocol
under test decides who trains and who is scored, so the encoder only has to be cheap."""

from __future__ import annotations

import torch

from bench.encoders import Encoder, EncoderCard


class BrainStats(Encoder):
    def __init__(self):
        self.card = EncoderCard(name="brain_stats", architecture="mean, std, bright-half mean and extent of the brain",
                                n_parameters=0, embed_dim=4, input_space="cpu-small", ssl_method="none")

    def embed(self, volumes: torch.Tensor) -> torch.Tensor:
        v = volumes.flatten(1)
        inside = v != 0
        n = inside.sum(1).clamp(min=1)
        mean = (v * inside).sum(1) / n
        std = (((v - mean[:, None]) * inside) ** 2).sum(1).div(n).sqrt()
        bright = inside & (v > mean[:, None])
        top = (v * bright).sum(1) / bright.sum(1).clamp(min=1)
        return torch.stack([mean, std, top, n / v.shape[1]], 1)
