"""``random``: a randomly initialised 3D ResNet-10 (the floor every SSL encoder must beat).

MONAI's ResNet with a stride-2 first convolution: at 64^3 a stride-1 stem is 4-10x slower on a
CPU for no benefit to a frozen random network. Weights come from a seeded generator, so the
floor is the same on every machine.
"""

from __future__ import annotations

import torch
from monai.networks.nets import ResNet, resnet10
from torch import nn

from bench.encoders import Encoder, EncoderCard


def resnet_feature_maps(net: ResNet, x: torch.Tensor) -> list[torch.Tensor]:
    """A MONAI ResNet's multi-scale maps (stem, then each residual stage), for segmentation."""
    stem = net.act(net.bn1(net.conv1(x)))
    maps = [stem]
    x = net.maxpool(stem) if not net.no_max_pool else stem
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        x = layer(x)
        maps.append(x)
    return maps


class ResNetBackbone(nn.Module):
    """MONAI ResNet returning pooled features, with access to its multi-scale maps."""

    def __init__(self):
        super().__init__()
        self.net = resnet10(spatial_dims=3, n_input_channels=1, conv1_t_stride=2, feed_forward=False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return resnet_feature_maps(self.net, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RandomInit(Encoder):
    def __init__(self, seed: int = 0):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.net = ResNetBackbone().eval()
        self.card = EncoderCard(
            name="random" if seed == 0 else f"random-seed{seed}", architecture="monai.resnet10 (3D, stride-2 stem)",
            n_parameters=sum(p.numel() for p in self.net.parameters()), embed_dim=512,
            input_space="cpu-small", ssl_method="none (random init)", supports_finetune=True,
            supports_segmentation=True)

    def embed(self, volumes: torch.Tensor) -> torch.Tensor:
        return self.net(volumes)

    def feature_maps(self, volumes: torch.Tensor) -> list[torch.Tensor]:
        return self.net.features(volumes)

    def module(self) -> nn.Module:
        return self.net
