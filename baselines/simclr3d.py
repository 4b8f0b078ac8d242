"""``simclr3d``: SimCLR on whole 3D volumes, after 3D-Neuro-SimCLR (Kaczmarek et al., 2025).

Network: MONAI's 3D ResNet-18 (one input channel, no classifier) plus a projection
Linear(F, F, no bias) - ReLU - Linear(F, 64, no bias); loss NT-Xent at temperature 0.5 between
two views of each volume: a random-size crop resized back, a flip, a rotation, an intensity
shift and a gamma change (MONAI transforms).

Two configurations:

* ``paper``: the published network (first conv 7^3 stride 1, widths 64-512, 512-d features) in
  the ``simclr-paper`` space (MNI 1 mm, 150x192x192). Its state-dict layout is the authors':
  ``encoder.*`` (the ResNet) and ``projector.0/2.weight``, so their released
  ``simclr_3d_brain_foundation.tar`` loads strictly with ``--weights``. GPU work.
* ``small``: the same ResNet-18 layout with widths 16-32-64-128 and a stride-2 first conv in
  the ``cpu-small`` space (64^3 at 3 mm): 2 M parameters, pretrainable on 2 CPU cores in
  minutes, a checkpoint under 10 MB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.networks.nets import ResNet
from torch import nn

from baselines.random_init import resnet_feature_maps
from baselines.recipe import PretrainedEncoder, Recipe, named_config
from baselines.regularisers import described, weighted_variance_covariance, with_variance_covariance
from bench.encoders import EncoderCard
from bench.errors import MribenchError

@dataclass(frozen=True)
class SimCLRConfig:
    name: str
    widths: tuple[int, int, int, int]
    stem_stride: int
    input_space: str
    min_crop: tuple[int, int, int]       # smallest random crop, resized back to the input shape
    projection_dim: int = 64
    temperature: float = 0.5
    rotation: float = 0.3                # largest random rotation about each axis, radians
    queue_size: int = 0                  # memory queue of past projections used as extra negatives (0: none)
    views: str = "crop_resize"           # "crop_resize" (the paper's) or "anatomy" (no change of scale)
    momentum: float = 0.0                # > 0: queue and positives come from an EMA key network (MoCo)
    max_shift: int = 3                   # "anatomy" views: largest translation per axis, voxels
    var_cov: float = 0.0                 # > 0: weight of the variance-covariance regulariser on the pooled
                                         # embeddings (baselines/regularisers.py, against dimensional collapse)


SMALL = SimCLRConfig("small", (16, 32, 64, 128), 2, "cpu-small", (58, 58, 58), rotation=0.1, queue_size=512)
CONFIGS = {
    "paper": SimCLRConfig("paper", (64, 128, 256, 512), 1, "simclr-paper", (30, 40, 40)),
    "small": SMALL,
    # the recipe tried against collapse (see below): the backbone temporal-small is warm-started from
    "small-anatomy-moco": SimCLRConfig("small-anatomy-moco", (16, 32, 64, 128), 2, "cpu-small", (58, 58, 58),
                                       rotation=0.1, queue_size=512, views="anatomy", momentum=0.99),
    # ``small`` plus VICReg's variance-covariance term on the pooled embeddings: the measured
    # failure of round 1 was dimensional collapse (90 % of the variance in one direction)
    "small-vc": with_variance_covariance(SMALL),
}
VIEW_KINDS = ("crop_resize", "anatomy")
# Why ``small`` keeps a queue: on 2 CPU cores a batch is 8 volumes, so NT-Xent sees 14 negatives
# per view and its loss stays near chance; the queue adds the last 512 projections (64 steps of
# both views) as negatives, MoCo-style (He et al. 2020) without the momentum encoder.
# Why ``small`` has milder views than the paper: every synthetic subject is warped from the one
# MNI template, so brains differ far less than real ones. With the paper's views (crops down to
# 75 % per side, rotations up to 0.3 rad) two views of one cpu-small scan correlate 0.26 voxel-
# wise on average, exactly as much as views of two different subjects (0.26): the positive pair
# is no closer than a negative, NT-Xent stayed at chance (ln 15) for 400 steps, and the encoder
# learnt nothing. Crops down to 90 % and 0.1 rad give 0.67 within vs 0.60 across subjects
# (12 default-cohort scans, measured once; see the README's encoder table).
# Two recipe options tried on the v2 cohort and *not* kept for ``small`` (docs/pretraining-v2):
# * ``views="anatomy"``: rigid views (flip, rotation, 3-voxel shift, bias field, intensity, noise;
#   no resized crop), so that the positive pair agrees on every size the tasks measure. With the
#   queue filled by the online network it fell to NT-Xent 4.8 by step 700, then climbed back to
#   exactly ln 526 (every embedding equal) by step 1,300: the queue's negatives come from older
#   states of the network and drifting away from them is a shortcut, the failure He et al.
#   (2020, MoCo) report without a momentum encoder.
# * ``momentum=0.99`` (MoCo's EMA key network feeding the positives and the queue) with anatomy
#   views: stable (InfoNCE 5.66 -> 5.08 over 800 steps, chance ln 520 = 6.25), but on the
#   validation split it probed worse than the crop-resize run on all three headline tasks
#   (AD AUC 0.546 vs 0.561, brain-age MAE 14.83 vs 13.13 y, conversion AUC 0.494 vs 0.517) and
#   than its own init on all three, so ``small`` keeps the crop-resize views and the plain queue.


class SimCLRNet(nn.Module):
    """ResNet-18 encoder + projection head, with the authors' attribute names."""

    def __init__(self, config: SimCLRConfig):
        super().__init__()
        self.encoder = ResNet("basic", [2, 2, 2, 2], list(config.widths), spatial_dims=3, n_input_channels=1,
                              conv1_t_size=7, conv1_t_stride=config.stem_stride, feed_forward=False)
        f = config.widths[-1]
        self.projector = nn.Sequential(nn.Linear(f, f, bias=False), nn.ReLU(), nn.Linear(f, config.projection_dim,
                                                                                         bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale maps for the segmentation decoder: stem, then each residual stage."""
        return resnet_feature_maps(self.encoder, x)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float,
            queue: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised-temperature cross entropy over 2B views: each view's positive is its pair, the
    other 2B - 2 views and the rows of ``queue`` (normalised past projections, no gradient) are
    its negatives."""
    z = nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    n = len(z1)
    sim.fill_diagonal_(float("-inf"))
    if queue is not None and len(queue):
        sim = torch.cat([sim, z @ queue.T / temperature], dim=1)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(sim.device)
    return nn.functional.cross_entropy(sim, target)


class ProjectionQueue(nn.Module):
    """A FIFO of the most recent normalised projections, kept as buffers so that a resumed
    pretraining run (``last.pt`` holds the recipe's network state) continues with the same
    negatives an uninterrupted run would have."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("items", torch.zeros(size, dim))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("head", torch.zeros((), dtype=torch.long))

    def negatives(self) -> torch.Tensor:
        """The queued projections (only the filled part, oldest first is not guaranteed)."""
        return self.items[: int(self.filled)]

    @torch.no_grad()
    def push(self, z: torch.Tensor) -> None:
        """Enqueue ``z`` (normalised, detached), overwriting the oldest entries."""
        z = nn.functional.normalize(z.detach(), dim=1)
        size = len(self.items)
        for row in z[-size:]:
            self.items[int(self.head)] = row
            self.head.fill_((int(self.head) + 1) % size)
        self.filled.fill_(min(size, int(self.filled) + len(z)))


class SimCLRTraining(nn.Module):
    """What pretraining updates and resumes: the network and, when configured, its queue and its
    momentum key network (``key``: an EMA of ``net``, never trained by the optimiser)."""

    def __init__(self, net: SimCLRNet, queue: ProjectionQueue | None, momentum: float = 0.0):
        super().__init__()
        self.net = net
        self.queue = queue
        self.key = None
        if momentum > 0:
            import copy

            self.key = copy.deepcopy(net).eval()
            self.key.requires_grad_(False)

    @torch.no_grad()
    def update_key(self, momentum: float) -> None:
        """key <- m key + (1 - m) net for the weights; BatchNorm statistics are copied."""
        for k, q in zip(self.key.parameters(), self.net.parameters()):
            k.mul_(momentum).add_(q.detach(), alpha=1 - momentum)
        for k, q in zip(self.key.buffers(), self.net.buffers()):
            k.copy_(q)


def info_nce(q: torch.Tensor, k: torch.Tensor, temperature: float, queue: torch.Tensor) -> torch.Tensor:
    """MoCo's loss: each query's positive is its own key (the other view through the key
    network); the other keys of the batch and the queue's rows are its negatives."""
    q, k = nn.functional.normalize(q, dim=1), nn.functional.normalize(k, dim=1)
    logits = torch.cat([q @ k.T, q @ queue.T], dim=1) / temperature
    return nn.functional.cross_entropy(logits, torch.arange(len(q), device=logits.device))


def make_views(config: SimCLRConfig, shape: tuple[int, int, int]):
    """The SimCLR view pipeline (MONAI transforms, seeded by the caller): the paper's random resized
    crops, or rigid "anatomy" views that keep every size (see the note on ``CONFIGS``)."""
    from monai.transforms import (Compose, RandAdjustContrast, RandAffine, RandBiasField, RandFlip,
                                  RandGaussianNoise, RandRotate, RandShiftIntensity, RandSpatialCrop, Resize)

    if config.views not in VIEW_KINDS:
        raise MribenchError(f"unknown SimCLR views '{config.views}'; choose one of {', '.join(VIEW_KINDS)}")
    intensity = [RandShiftIntensity(offsets=0.5, prob=0.8), RandAdjustContrast(gamma=(0.5, 1.5), prob=0.8)]
    if config.views == "anatomy":
        return Compose([
            RandFlip(prob=0.5, spatial_axis=0),
            RandAffine(prob=1.0, rotate_range=(config.rotation,) * 3, translate_range=(config.max_shift,) * 3,
                       mode="bilinear", padding_mode="zeros"),
            RandBiasField(coeff_range=(0.0, 0.3), prob=0.5),
            *intensity,
            RandGaussianNoise(prob=0.5, std=0.1),
        ])
    return Compose([
        RandSpatialCrop(roi_size=config.min_crop, random_center=True, random_size=True),
        Resize(spatial_size=shape, mode="trilinear"),
        RandFlip(prob=0.5, spatial_axis=0),
        RandRotate(range_x=config.rotation, range_y=config.rotation, range_z=config.rotation, prob=0.5,
                   mode="bilinear", padding_mode="zeros"),
        *intensity,
    ])


class SimCLRMethod(Recipe):
    """Pretraining recipe for :func:`bench.pretrain.pretrain`."""

    def __init__(self, config: str = "small", seed: int = 0):
        self.config = named_config(CONFIGS, config, self.name)
        self.config_name = config
        self.input_space = self.config.input_space
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.net = SimCLRNet(self.config)
        self._attach_queue()
        self._views = None

    def _attach_queue(self) -> None:
        """Wrap ``self.net`` with the config's memory queue (if any): what pretraining updates."""
        queue = (ProjectionQueue(self.config.queue_size, self.config.projection_dim)
                 if self.config.queue_size else None)
        self.training = SimCLRTraining(self.net, queue, self.config.momentum)

    def network(self) -> nn.Module:
        return self.training

    def loss(self, batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self._views is None:
            self._views = make_views(self.config, tuple(batch.shape[2:]))
        views = []
        for _ in range(2):
            out = []
            for volume in batch:
                self._views.set_random_state(seed=int(rng.integers(0, 2**31 - 1)))
                out.append(torch.as_tensor(self._views(volume)).float())
            views.append(torch.stack(out))
        if self.training.key is not None:
            return self._momentum_loss(views)
        h1, h2 = self.net(views[0]), self.net(views[1])
        z1, z2 = self.net.projector(h1), self.net.projector(h2)
        queue = self.training.queue
        # a copy: pushing below overwrites the queue in place, which the backward pass must not see
        negatives = None if queue is None else queue.negatives().clone()
        loss = nt_xent(z1, z2, self.config.temperature, negatives) + self._regulariser(h1, h2)
        if queue is not None:
            queue.push(torch.cat([z1, z2]))
        return loss

    def _regulariser(self, h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor | float:
        """The config's variance-covariance term on both views' pooled embeddings (0 when off)."""
        return weighted_variance_covariance(self.config.var_cov, torch.cat([h1, h2]))

    def _momentum_loss(self, views: list[torch.Tensor]) -> torch.Tensor:
        """Symmetric InfoNCE: view 1's queries against view 2's keys and back; the keys enter the queue."""
        key, queue = self.training.key, self.training.queue
        with torch.no_grad():
            k1, k2 = (key.projector(key(v)) for v in views)
        h1, h2 = (self.net(v) for v in views)
        q1, q2 = self.net.projector(h1), self.net.projector(h2)
        negatives = queue.negatives().clone() if queue is not None else q1.new_zeros(0, q1.shape[1])
        t = self.config.temperature
        loss = (info_nce(q1, k2, t, negatives) + info_nce(q2, k1, t, negatives)) / 2 + self._regulariser(h1, h2)
        if queue is not None:
            queue.push(torch.cat([k1, k2]))
        return loss

    def warm_started(self) -> None:
        """After ``--init-from`` loaded weights into the network: the key network starts from them."""
        if self.training.key is not None:
            self.training.key.load_state_dict(self.net.state_dict())

    def after_step(self, step: int, total_steps: int) -> None:
        """The key network follows the trained one (MoCo's momentum update)."""
        if self.training.key is not None:
            self.training.update_key(self.config.momentum)


def ssl_method_of(config: SimCLRConfig, embeddings: str = "the pooled embeddings") -> str:
    """The card's one-line description of the recipe: loss, negatives and views (``embeddings``:
    the vectors the variance-covariance term reads, when it is on)."""
    views = "rigid anatomy-preserving views" if config.views == "anatomy" else "random resized crops"
    if config.momentum:
        return (f"SimCLR views with MoCo's momentum-{config.momentum:g} key network and {config.queue_size}-key "
                f"queue (InfoNCE, temperature {config.temperature:g}; {views})")
    queue = f", {config.queue_size}-projection memory queue" if config.queue_size else ""
    vc = described(config.var_cov, embeddings)
    return f"SimCLR (NT-Xent, temperature {config.temperature:g}{queue}{vc}; {views})"


class SimCLR3D(PretrainedEncoder):
    """The SimCLR 3D ResNet-18; embeddings are the pooled encoder features (before projection)."""

    registry_name = "simclr3d"
    recipe = SimCLRMethod  # the SSL recipe whose weights it loads

    def __init__(self, config: str = "small", weights: str | Path | None = None, untrained_ok: bool = False):
        self._build(CONFIGS, config, SimCLRNet)
        # 3D-Neuro-SimCLR's release (``model_state_dict``, maybe ``module.``) or our own encoder.pt: the
        # default strict load reads either, with weights_only=True (a .tar of tensors and plain containers)
        sha, pretraining = self._load_weights(config, weights, untrained_ok=untrained_ok)
        self.card = EncoderCard(
            name="simclr3d" if config == "small" else f"simclr3d-{config}",
            architecture=f"MONAI 3D ResNet-18 (widths {'-'.join(map(str, self.config.widths))}, "
                         f"stem stride {self.config.stem_stride})",
            n_parameters=sum(p.numel() for n, p in self.net.named_parameters() if n.startswith("encoder.")),
            embed_dim=self.config.widths[-1], input_space=self.config.input_space,
            ssl_method=ssl_method_of(self.config),
            pretraining_data=pretraining,
            checkpoint_sha256=sha, reference="Kaczmarek et al., arXiv 2509.10620 (3D-Neuro-SimCLR)",
            supports_finetune=True, supports_segmentation=True)

    def feature_maps(self, volumes: torch.Tensor) -> list[torch.Tensor]:
        self._require_weights()
        return self.net.features(volumes)

