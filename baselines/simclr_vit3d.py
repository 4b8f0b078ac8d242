"""``simclr_vit3d``: SimCLR on a 3D ViT, after BrainIAC (Tak et al., Nature Neuroscience 2026).

The backbone is MONAI's ``ViT`` (no classification token). Pretraining reuses the SimCLR recipe
of :mod:`baselines.simclr3d` (same views and NT-Xent) with a 2-layer projection head on the first
token of the last layer, as in BrainIAC. The encoder's embedding (``readout``, an encoder option)
is that first token (``paper``) or the mean of the last layer's tokens (``small``).

* ``paper``: 96^3 input (``brainiac-96`` space), patch 16, hidden 768, MLP 3072, 12 layers,
  12 heads. ``--weights BrainIAC.ckpt`` loads the released Lightning checkpoint: its encoder
  keys sit under ``backbone.`` and load strictly into the ViT (other keys, e.g. a projection
  head, are left out).
* ``small``: 64^3 (``cpu-small``), patch 16, hidden 192, MLP 768, 6 layers, 3 heads (3.5 M
  parameters), for CPUs.
* ``small-vc``: ``small``'s network with simclr3d's round-3 recipe (a 512-projection queue and
  VICReg's variance-covariance term on the first token): the committed checkpoint's recipe
  (issue 16, round 5: docs/pretraining-v2).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from monai.networks.nets import ViT
from torch import nn

from baselines.recipe import PretrainedEncoder, named_config
from baselines.regularisers import with_variance_covariance
from baselines.simclr3d import SimCLRConfig, SimCLRMethod, ssl_method_of
from bench.encoders import EncoderCard
from bench.encoders.api import load_strict, load_torch_file
from bench.errors import MribenchError

@dataclass(frozen=True)
class ViTConfig:
    name: str
    input_space: str
    img_size: int
    hidden: int
    mlp: int
    layers: int
    heads: int
    patch: int = 16
    readout: str = "first"               # the encoder's embedding of the last layer's tokens (READOUTS)


#: ``first``: the first token, BrainIAC's read-out (this ViT has no class token, so it is the
#: corner patch's output); ``mean``: the mean over all patch tokens
READOUTS = ("first", "mean")
#: what pretraining projects and regularises, whatever the encoder's read-out: the committed
#: checkpoints were pretrained this way, so a card's command reproduces its run
PRETRAINING_READOUT = "first"


# ``small`` reads the mean token: on the validation split it beat the first token for the init, v1's
# checkpoint and both round-5 runs (issue 16, docs/pretraining-v2); ``paper`` keeps BrainIAC's
SMALL = ViTConfig("small", "cpu-small", 64, 192, 768, 6, 3, readout="mean")
CONFIGS = {
    "paper": ViTConfig("paper", "brainiac-96", 96, 768, 3072, 12, 12),
    "small": SMALL,
    # the same network; only its recipe (VIEW_CONFIGS) differs
    "small-vc": dataclasses.replace(SMALL, name="small-vc"),
}
SMALL_VIEWS = SimCLRConfig("small", (0, 0, 0, 0), 1, "cpu-small", (58, 58, 58), projection_dim=128, rotation=0.1)
#: view pipeline and loss of the SimCLR recipe, per configuration
VIEW_CONFIGS = {
    "paper": SimCLRConfig("paper", (0, 0, 0, 0), 1, "brainiac-96", (48, 48, 48), projection_dim=128),
    # v1's recipe: its loss never left chance (log 15) in 150 steps of batch 8
    "small": SMALL_VIEWS,
    # simclr3d's round-3 recipe (issue 16) on the ViT: a 512-projection queue of negatives (a batch
    # of 8 alone gives 14) plus VICReg's variance-covariance term on the first token, the one
    # pretraining projects (PRETRAINING_READOUT)
    "small-vc": with_variance_covariance(dataclasses.replace(SMALL_VIEWS, queue_size=512)),
}


class SimCLRViTNet(nn.Module):
    def __init__(self, config: ViTConfig, projection_dim: int = 128):
        super().__init__()
        self.backbone = ViT(in_channels=1, img_size=config.img_size, patch_size=config.patch,
                            hidden_size=config.hidden, mlp_dim=config.mlp, num_layers=config.layers,
                            num_heads=config.heads, spatial_dims=3)
        self.projector = nn.Sequential(nn.Linear(config.hidden, config.hidden), nn.ReLU(),
                                       nn.Linear(config.hidden, projection_dim))
        self.readout = config.readout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.backbone(x)
        return tokens[:, 0] if self.readout == "first" else tokens.mean(dim=1)


def brainiac_backbone(state: dict, path: Path) -> dict[str, torch.Tensor]:
    """The ``backbone.`` part of a BrainIAC Lightning checkpoint's ``state_dict``, prefix removed."""
    backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    if not backbone:
        keys = sorted(state)
        raise MribenchError(f"{path}: no 'backbone.' keys (BrainIAC's encoder); keys: {', '.join(keys[:8])}"
                            + (f" ... ({len(keys)} in all)" if len(keys) > 8 else ""))
    return backbone


class SimCLRViTMethod(SimCLRMethod):
    """The SimCLR recipe with the ViT backbone."""

    def __init__(self, config: str = "small", seed: int = 0):
        self.vit_config = named_config(CONFIGS, config, self.name)
        self.config = VIEW_CONFIGS[config]
        self.config_name = config
        self.input_space = self.vit_config.input_space
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.net = SimCLRViTNet(dataclasses.replace(self.vit_config, readout=PRETRAINING_READOUT),
                                    self.config.projection_dim)
        self._attach_queue()
        self._views = None


class SimCLRViT3D(PretrainedEncoder):
    registry_name = "simclr_vit3d"
    recipe = SimCLRViTMethod  # the SSL recipe whose weights it loads

    def __init__(self, config: str = "small", weights: str | Path | None = None, untrained_ok: bool = False,
                 readout: str | None = None):
        self._build(CONFIGS, config, SimCLRViTNet)
        if readout is not None:  # an encoder option: the same weights read another way
            if readout not in READOUTS:
                raise MribenchError(f"simclr_vit3d: unknown read-out '{readout}'; choose one of {', '.join(READOUTS)}")
            self.config = dataclasses.replace(self.config, readout=readout)
            self.net.readout = readout
        sha, pretraining = self._load_weights(config, weights, self._load, untrained_ok=untrained_ok)
        c = self.config
        tokens = "first token" if c.readout == "first" else "mean token"
        self.card = EncoderCard(
            name="simclr_vit3d" if config == "small" else f"simclr_vit3d-{config}",
            architecture=f"MONAI ViT (3D, {c.img_size}^3, patch {c.patch}, hidden {c.hidden}, "
                         f"{c.layers} layers, {c.heads} heads; {tokens})",
            n_parameters=sum(p.numel() for p in self.net.backbone.parameters()), embed_dim=c.hidden,
            input_space=c.input_space, ssl_method=ssl_method_of(VIEW_CONFIGS[config], "the first token"),
            pretraining_data=pretraining, checkpoint_sha256=sha,
            reference="Tak et al., Nature Neuroscience 2026 (BrainIAC)", supports_finetune=True)

    def _load(self, path: Path) -> None:
        # read once (BrainIAC.ckpt is large), tensors and plain containers only (weights_only=True)
        raw = load_torch_file(path)
        if isinstance(raw, dict) and "state_dict" in raw:  # BrainIAC's Lightning release: the backbone only
            load_strict(self.net.backbone, brainiac_backbone(raw["state_dict"], path), path)
        elif isinstance(raw, dict):  # our own pretraining: backbone + projector
            load_strict(self.net, raw, path)
        else:
            raise MribenchError(f"{path}: not a state dict (a dict of tensors, or a Lightning checkpoint with "
                                f"'state_dict'); it holds a {type(raw).__name__}")

