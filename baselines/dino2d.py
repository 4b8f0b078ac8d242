"""``dino2d``: DINO self-distillation of a 2D ViT on axial slices, after BrainDINO (arXiv 2604.27277).

BrainDINO's weights are unreleased; this follows DINO (Caron et al., ICCV 2021) as BrainDINO
describes it: a student and a teacher ViT of the same shape see different crops of an axial
slice; the student is trained to match the teacher's sharpened, centred distribution over K
prototypes (cross-entropy), the teacher is an exponential moving average of the student
(momentum 0.996 -> 1, cosine), and the centre is an EMA of the teacher outputs (prevents
collapse). Multi-crop: two global crops (40-100 % of the slice) and several local ones (10-40 %)
per slice (2 in ``small``, 8 in ``paper``); the teacher sees only the global crops. Every crop
is resized to the ViT's input size (MONAI's ViT has fixed position embeddings), so local crops
are zoomed-in views.

A volume's embedding is the mean of the teacher's class tokens over the axial slices that
contain brain (slices whose mean absolute intensity is below 5 % of the volume's busiest slice
are skipped), the slice-wise read-out BrainDINO uses for 3D tasks.

* ``small``: cpu-small slices (64^2), patch 8, hidden 192, 4 layers, 3 heads, 1024 prototypes;
  2 slices per volume per step (a step of 8 volumes is 64 student crops: ~2 s on 2 cores).
* ``paper``: ViT-B/16 (hidden 768, 12 layers, 12 heads) on 224^2 slices resampled from
  ``brainiac-96``, 65536 prototypes. GPU work.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.networks.nets import ViT
from torch import nn

from baselines.recipe import PretrainedEncoder, Recipe, named_config
from baselines.regularisers import described, weighted_variance_covariance, with_variance_covariance
from bench.encoders import EncoderCard


@dataclass(frozen=True)
class DINOConfig:
    name: str
    input_space: str
    img_size: int            # slices are resized to this square
    patch: int
    hidden: int
    mlp: int
    layers: int
    heads: int
    prototypes: int
    slices_per_volume: int = 2          # axial slices drawn from each volume of a pretraining batch
    local_crops: int = 2
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    momentum: float = 0.996
    centre_momentum: float = 0.9
    var_cov: float = 0.0                # > 0: weight of the variance-covariance term on the student's class
    #                                     tokens of the global crops (baselines/regularisers.py; issue 16)


SMALL = DINOConfig("small", "cpu-small", 64, 8, 192, 768, 4, 3, 1024)
CONFIGS = {
    "small": SMALL,
    "small-vc": with_variance_covariance(SMALL),
    "paper": DINOConfig("paper", "brainiac-96", 224, 16, 768, 3072, 12, 12, 65536, slices_per_volume=8,
                        local_crops=8),
}


def build_vit(config: DINOConfig) -> ViT:
    """MONAI's 2D ViT with a class token; its classification head is replaced by the identity."""
    vit = ViT(in_channels=1, img_size=config.img_size, patch_size=config.patch, hidden_size=config.hidden,
              mlp_dim=config.mlp, num_layers=config.layers, num_heads=config.heads, spatial_dims=2,
              classification=True, num_classes=1)
    vit.classification_head = nn.Identity()
    return vit


class DINOHead(nn.Module):
    """MLP to a 256-d bottleneck, L2-normalised, then weight-normalised prototypes (as in DINO)."""

    def __init__(self, dim: int, prototypes: int, hidden: int = 512, bottleneck: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.prototypes = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, prototypes, bias=False))
        with torch.no_grad():  # DINO fixes the norm of the prototypes at 1
            self.prototypes.parametrizations.weight.original0.fill_(1.0)
        self.prototypes.parametrizations.weight.original0.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prototypes(nn.functional.normalize(self.mlp(x), dim=-1))


class DINONet(nn.Module):
    """Student and teacher (backbone + head each) and the running centre: everything a resume needs."""

    def __init__(self, config: DINOConfig):
        super().__init__()
        self.student = nn.ModuleDict({"backbone": build_vit(config), "head": DINOHead(config.hidden,
                                                                                      config.prototypes)})
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.register_buffer("centre", torch.zeros(1, config.prototypes))


def class_tokens(vit: ViT, slices: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) -> (N, hidden): the class token of the last layer (after the final norm)."""
    out, _ = vit(slices)
    return out


def brain_slices(volume: torch.Tensor, floor: float = 0.05) -> torch.Tensor:
    """Indices of the axial slices (last axis) of a (1, D, H, W) volume that hold brain."""
    energy = volume.abs().mean(dim=(0, 1, 2))
    return torch.nonzero(energy >= floor * energy.max()).flatten()


def resize_slices(slices: torch.Tensor, size: int) -> torch.Tensor:
    if slices.shape[-1] == size and slices.shape[-2] == size:
        return slices
    return nn.functional.interpolate(slices, size=(size, size), mode="bilinear", align_corners=False)


def random_crops(slices: torch.Tensor, scale: tuple[float, float], size: int, rng: np.random.Generator,
                 flip: bool = True) -> torch.Tensor:
    """Random-resized crops (area fraction in ``scale``, aspect 3/4-4/3), flips and intensity jitter."""
    n, _, h, w = slices.shape
    out = []
    for i in range(n):
        area = rng.uniform(*scale) * h * w
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        ch = int(round(min(h, max(4, math.sqrt(area / aspect)))))
        cw = int(round(min(w, max(4, math.sqrt(area * aspect)))))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = slices[i:i + 1, :, y:y + ch, x:x + cw]
        if flip and rng.random() < 0.5:
            crop = crop.flip(-1)
        crop = crop * float(rng.uniform(0.8, 1.25)) + float(rng.uniform(-0.3, 0.3))
        out.append(resize_slices(crop, size))
    return torch.cat(out)


class DINOMethod(Recipe):
    """Pretraining recipe for :func:`bench.pretrain.pretrain`: slices, multi-crop, EMA teacher."""

    def __init__(self, config: str | DINOConfig = "small", seed: int = 0):
        self.config = config if isinstance(config, DINOConfig) else named_config(CONFIGS, config, self.name)
        self.config_name = self.config.name
        self.input_space = self.config.input_space
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.net = DINONet(self.config)
        self._teacher_out: torch.Tensor | None = None

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """The teacher's backbone: DINO evaluates the teacher, which is the better of the two."""
        return {k: v.detach().clone() for k, v in self.net.teacher["backbone"].state_dict().items()}

    def _slices(self, batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        picked = []
        for volume in batch:
            idx = brain_slices(volume).numpy()
            take = rng.choice(idx, size=min(self.config.slices_per_volume, len(idx)), replace=False)
            picked.append(volume[0, :, :, np.sort(take)].permute(2, 0, 1)[:, None])
        return resize_slices(torch.cat(picked), self.config.img_size)

    def loss(self, batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        c, size = self.config, self.config.img_size
        slices = self._slices(batch, rng)
        globals_ = [random_crops(slices, (0.4, 1.0), size, rng) for _ in range(2)]
        locals_ = [random_crops(slices, (0.1, 0.4), size, rng) for _ in range(c.local_crops)]
        student, teacher = self.net.student, self.net.teacher
        tokens = [class_tokens(student["backbone"], v) for v in globals_ + locals_]
        s_out = [student["head"](t) / c.student_temp for t in tokens]
        with torch.no_grad():
            t_raw = [teacher["head"](class_tokens(teacher["backbone"], v)) for v in globals_]
            t_out = [nn.functional.softmax((t - self.net.centre) / c.teacher_temp, dim=-1) for t in t_raw]
        self._teacher_out = torch.cat(t_raw).detach()
        total, terms = 0.0, 0
        for ti, t in enumerate(t_out):
            for si, s in enumerate(s_out):
                if si == ti:  # a view is never its own target
                    continue
                total = total + torch.sum(-t * nn.functional.log_softmax(s, dim=-1), dim=-1).mean()
                terms += 1
        return total / terms + self.spread(torch.cat(tokens[:len(globals_)]))

    def spread(self, tokens: torch.Tensor) -> torch.Tensor | float:
        """The variance-covariance term on the global crops' class tokens, the vectors whose
        (teacher's EMA) mean over slices the probes read; 0 when the config leaves it off."""
        return weighted_variance_covariance(self.config.var_cov, tokens)

    def after_step(self, step: int, total_steps: int) -> None:
        """Teacher EMA (momentum cosine-scheduled to 1) and centre EMA of the teacher's outputs."""
        c = self.config
        m = 1 - (1 - c.momentum) * (math.cos(math.pi * step / max(1, total_steps)) + 1) / 2
        with torch.no_grad():
            for ps, pt in zip(self.net.student.parameters(), self.net.teacher.parameters()):
                pt.mul_(m).add_(ps.detach(), alpha=1 - m)
            if self._teacher_out is not None:
                batch_centre = self._teacher_out.mean(dim=0, keepdim=True)
                self.net.centre.mul_(c.centre_momentum).add_(batch_centre, alpha=1 - c.centre_momentum)


class DINO2D(PretrainedEncoder):
    """A volume's embedding: the mean teacher class token over its brain-holding axial slices."""

    registry_name = "dino2d"
    recipe = DINOMethod  # the SSL recipe whose weights it loads

    def __init__(self, config: str = "small", weights: str | Path | None = None, untrained_ok: bool = False):
        self._build(CONFIGS, config, build_vit)
        sha, pretraining = self._load_weights(config, weights, untrained_ok=untrained_ok)
        c = self.config
        self.card = EncoderCard(
            name="dino2d" if config == "small" else f"dino2d-{config}",
            architecture=f"MONAI ViT (2D, {c.img_size}^2 axial slices, patch {c.patch}, hidden {c.hidden}, "
                         f"{c.layers} layers, {c.heads} heads; class token, mean over brain slices)",
            n_parameters=sum(p.numel() for p in self.net.parameters()), embed_dim=c.hidden,
            input_space=c.input_space, ssl_method="DINO self-distillation (EMA teacher, centring, multi-crop"
                                                  + described(c.var_cov, "the global crops' class tokens") + ")",
            pretraining_data=pretraining, checkpoint_sha256=sha,
            reference="after BrainDINO, arXiv 2604.27277 (weights unreleased); Caron et al., ICCV 2021",
            supports_finetune=False)  # its module reads 2D slices, not volumes

    def embed(self, volumes: torch.Tensor) -> torch.Tensor:
        self._require_weights()
        out = []
        for volume in volumes:
            idx = brain_slices(volume)
            slices = resize_slices(volume[0, :, :, idx].permute(2, 0, 1)[:, None], self.config.img_size)
            out.append(class_tokens(self.net, slices).mean(dim=0))
        return torch.stack(out)

