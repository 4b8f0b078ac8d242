"""``intensity``: a naive baseline that sees only the histogram of brain intensities.

No spatial information at all: if this scores close to the oracle, a task can be solved from
global contrast alone and the synthetic disease effects would be too easy. It is the
"naive intensity baseline" the synthetic cohort is checked against.
"""

from __future__ import annotations

import torch

from bench.encoders import Encoder, EncoderCard

BINS = torch.linspace(-3.0, 3.0, 17)


class IntensityHistogram(Encoder):
    def __init__(self):
        self.card = EncoderCard(
            name="intensity", architecture="16-bin histogram + moments of non-zero voxels",
            n_parameters=0, embed_dim=20, input_space="cpu-small", ssl_method="none (handcrafted)")

    def embed(self, volumes: torch.Tensor) -> torch.Tensor:
        out = []
        for v in volumes.flatten(1):
            x = v[v != 0]
            hist = torch.histc(x.clamp(-3, 3), bins=16, min=-3.0, max=3.0) / max(len(x), 1)
            q = torch.quantile(x, torch.tensor([0.1, 0.5, 0.9]))
            out.append(torch.cat([hist, q, torch.tensor([len(x) / v.numel()])]))
        return torch.stack(out)
