"""``mae3d``: a masked autoencoder on a 3D ViT (MONAI's ``MaskedAutoEncoderViT``).

Pretraining hides 75 % of the patches and regresses the voxels of the hidden ones (mean squared
error on masked patches only, as in He et al. 2022). The embedding reads the encoder's patch
tokens with nothing masked, by one of three read-outs (``readout``, an encoder option):

* ``mean``: the mean of the last layer's tokens (the MAE paper's linear-probe read-out);
* ``mid``: the mean of the middle layer's tokens (MAE's last layers specialise in pixel
  reconstruction; intermediate layers often probe better, Lehner et al. 2023, Walmer et al. 2023);
* ``grid``: the last layer's tokens averaged over the 2 x 2 x 2 octants of the volume and
  concatenated (8 x hidden): a global mean dilutes the local atrophy the tasks measure.

Which one is the default was chosen on the validation split (``benchmarks/val_scores.py``),
for the pretrained network, before any test score was looked at; the init floor uses the same.
``small`` reads ``mid``: on val (v2 default cohort, linear probe, 3 seeds) it gave brain-age MAE
15.07 y vs 15.90 (``mean``) and 15.21 (``grid``), conversion AUC 0.554 vs 0.537 and 0.509, and AD
AUC 0.522 vs 0.529 and 0.508 (docs/pretraining-v2). ``paper`` keeps the MAE paper's ``mean``.

* ``small``: 64^3 (``cpu-small``), patch 8 (512 tokens), hidden 192, 6 layers, 3 heads;
  decoder hidden 96, 2 layers.
* ``paper``: 96^3 (``brainiac-96``), patch 16, ViT-B (hidden 768, 12 layers, 12 heads);
  decoder hidden 384, 4 layers. GPU work.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.networks.nets import MaskedAutoEncoderViT

from baselines.recipe import PretrainedEncoder, Recipe, named_config
from baselines.regularisers import described, weighted_variance_covariance, with_variance_covariance
from bench.encoders import EncoderCard
from bench.errors import MribenchError


@dataclass(frozen=True)
class MAEConfig:
    name: str
    input_space: str
    img_size: int
    patch: int
    hidden: int
    mlp: int
    layers: int
    heads: int
    decoder_hidden: int
    decoder_layers: int
    masking_ratio: float = 0.75
    readout: str = "mean"                # how patch tokens become the embedding (see the module docstring)
    var_cov: float = 0.0                 # > 0: weight of the variance-covariance term on the read-out of the
    #                                      unmasked batch (baselines/regularisers.py; issue 16)


READOUTS = ("mean", "mid", "grid")


SMALL = MAEConfig("small", "cpu-small", 64, 8, 192, 768, 6, 3, 96, 2, readout="mid")
CONFIGS = {
    "small": SMALL,
    "small-vc": with_variance_covariance(SMALL),
    "paper": MAEConfig("paper", "brainiac-96", 96, 16, 768, 3072, 12, 12, 384, 4),
}


#: The warning torch gives for MONAI's ``torch.meshgrid`` call without ``indexing`` (its sin-cos
#: position embedding, MONAI 1.3-1.6): the default it warns about, "ij", is the one MONAI means, so the
#: user would read a line about a library's internals that changes nothing (issue 31: no library
#: warning in a run's output).
_MONAI_MESHGRID_WARNING = r"torch\.meshgrid: in an upcoming release, it will be required to pass the indexing"


def build(config: MAEConfig) -> MaskedAutoEncoderViT:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_MONAI_MESHGRID_WARNING, category=UserWarning)
        return MaskedAutoEncoderViT(
            in_channels=1, img_size=config.img_size, patch_size=config.patch, hidden_size=config.hidden,
            mlp_dim=config.mlp, num_layers=config.layers, num_heads=config.heads, masking_ratio=config.masking_ratio,
            decoder_hidden_size=config.decoder_hidden, decoder_mlp_dim=4 * config.decoder_hidden,
            decoder_num_layers=config.decoder_layers, decoder_num_heads=config.heads, spatial_dims=3)


def patchify(volumes: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, 1, D, H, W) -> (B, tokens, patch^3) in the token order of MONAI's conv patch embedding."""
    b, c, d, h, w = volumes.shape
    x = volumes.reshape(b, c, d // patch, patch, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, (d // patch) * (h // patch) * (w // patch), -1)


def encode(net: MaskedAutoEncoderViT, volumes: torch.Tensor, readout: str = "mean") -> torch.Tensor:
    """The embedding of unmasked volumes by ``readout`` (``mean``, ``mid`` or ``grid``)."""
    tokens = net.patch_embedding(volumes)
    x = torch.cat([net.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
    stop = len(net.blocks) // 2 if readout == "mid" else len(net.blocks)
    for block in list(net.blocks)[:stop]:
        x = block(x)
    patches = x[:, 1:]
    if readout != "grid":
        return patches.mean(dim=1)
    b, n, c = patches.shape
    g = round(n ** (1 / 3))  # tokens per axis, in the (d, h, w) order of the conv patch embedding
    octants = patches.reshape(b, 2, g // 2, 2, g // 2, 2, g // 2, c).mean(dim=(2, 4, 6))
    return octants.reshape(b, 8 * c)


def embed_dim_of(config: MAEConfig) -> int:
    return 8 * config.hidden if config.readout == "grid" else config.hidden


class MAEMethod(Recipe):
    """Pretraining recipe for :func:`bench.pretrain.pretrain`."""

    def __init__(self, config: str = "small", seed: int = 0):
        self.config = named_config(CONFIGS, config, self.name)
        self.config_name = config
        self.input_space = self.config.input_space
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.net = build(self.config)

    def loss(self, batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        # the patch mask is drawn by MONAI from torch's generator, which pretrain() seeds and saves
        pred, mask = self.net(batch)
        target = patchify(batch, self.config.patch)
        per_token = ((pred - target) ** 2).mean(dim=-1)
        return (per_token * mask).sum() / mask.sum() + self.spread(batch)

    def spread(self, batch: torch.Tensor) -> torch.Tensor | float:
        """The variance-covariance term on the embeddings the probes read (the read-out of the
        unmasked volumes: one more pass of the encoder, so it is only run when the term is on)."""
        if not self.config.var_cov:
            return 0.0
        return weighted_variance_covariance(self.config.var_cov, encode(self.net, batch, self.config.readout))


class MAE3D(PretrainedEncoder):
    registry_name = "mae3d"
    recipe = MAEMethod  # the SSL recipe whose weights it loads

    def __init__(self, config: str = "small", weights: str | Path | None = None, untrained_ok: bool = False,
                 readout: str | None = None):
        self._build(CONFIGS, config, build)
        if readout is not None:
            if readout not in READOUTS:
                raise MribenchError(f"mae3d: unknown read-out '{readout}'; choose one of {', '.join(READOUTS)}")
            self.config = dataclasses.replace(self.config, readout=readout)
        sha, pretraining = self._load_weights(config, weights, untrained_ok=untrained_ok)
        c = self.config
        encoder_params = sum(p.numel() for n, p in self.net.named_parameters() if not n.startswith(("decoder", "mask")))
        self.card = EncoderCard(
            name="mae3d" if config == "small" else f"mae3d-{config}",
            architecture=f"MONAI MaskedAutoEncoderViT (3D, {c.img_size}^3, patch {c.patch}, hidden {c.hidden}, "
                         f"{c.layers} layers; read-out: {c.readout})",
            n_parameters=encoder_params, embed_dim=embed_dim_of(c), input_space=c.input_space,
            ssl_method=f"masked autoencoding ({int(c.masking_ratio * 100)} % of patches"
                       + described(c.var_cov, f"the {c.readout} read-out of the unmasked volumes") + ")",
            pretraining_data=pretraining, checkpoint_sha256=sha, reference="He et al., CVPR 2022 (MAE)",
            supports_finetune=False)  # its module is the masked autoencoder, not volumes -> embeddings

    def embed(self, volumes: torch.Tensor) -> torch.Tensor:
        self._require_weights()
        return encode(self.net, volumes, self.config.readout)

