"""``temporal``: temporal-order SSL on a subject's scan sequence, after SSL-AD (Kaczmarek et al., 2025).

SSL-AD's code is not public; this follows the paper's description: a 3D CNN backbone embeds
each scan, and two self-supervised objectives over a subject's *own* scans with their time
gaps teach it what changes with time in one brain (atrophy), rather than what tells two brains
apart (anatomy, scanner):

* **temporal order**: two scans of a subject, in random order, without their dates; a small
  head predicts which came first from both embeddings and their difference (binary
  cross-entropy). Only features that change monotonically with time (ventricles, hippocampi)
  solve it, and those are the disease and ageing signal.
* **predictive contrastive**: a time-aware sequence model summarises a variable-length prefix
  of the subject's scans (1..n, with irregular gaps, months given relative to the last scan);
  from the summary and the gap to a later scan, a predictor must pick that later scan's
  embedding among the batch's other subjects' (InfoNCE, temperature 0.1). This trains the
  sequence model to carry the subject's rate of change.

Variable-length inputs: the sequence model is a causal Transformer over scan tokens plus a
time encoding, so ``sequence_features`` takes any number of scans >= 1 and returns, for each
scan, the learned summary of the history up to it. The harness appends those summaries to the
per-scan embeddings of sequence tasks (conversion, conversion detection); single-scan tasks
use the backbone embedding alone.

Configurations: ``small`` (cpu-small, ResNet-18 widths 16-32-64-128, stride-2 stem, 128-d)
and ``paper`` (the 3D-Neuro-SimCLR ResNet-18 at 1 mm, which SSL-AD's backbone follows; GPU work).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from monai.networks.nets import ResNet
from torch import nn

from baselines.random_init import resnet_feature_maps
from baselines.recipe import PretrainedEncoder, Recipe, named_config
from baselines.regularisers import described, weighted_variance_covariance, with_variance_covariance
from bench.encoders import EncoderCard
from bench.errors import MribenchError


@dataclass(frozen=True)
class TemporalConfig:
    name: str
    widths: tuple[int, int, int, int]
    stem_stride: int
    input_space: str
    sequence_dim: int = 64        # width of the sequence model's tokens
    max_context: int = 3          # scans in a pretraining prefix (1..max_context)
    temperature: float = 0.1
    var_cov: float = 0.0          # > 0: weight of the variance-covariance term on the scans' embeddings


SMALL = TemporalConfig("small", (16, 32, 64, 128), 2, "cpu-small")
CONFIGS = {
    "small": SMALL,
    # ``small`` plus VICReg's variance-covariance term on the backbone embeddings of the batch's scans
    # (baselines/regularisers.py): round 1's temporal embeddings collapsed like simclr3d's did
    "small-vc": with_variance_covariance(SMALL),
    "paper": TemporalConfig("paper", (64, 128, 256, 512), 1, "simclr-paper", sequence_dim=256, max_context=4),
}


def time_encoding(years: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal encoding of (possibly negative, irregular) times in years, (..., dim).

    Periods from 3 months to 32 years cover follow-up gaps from a quarterly visit to a lifetime.
    """
    half = dim // 2
    periods = torch.logspace(math.log10(0.25), math.log10(32.0), half, dtype=years.dtype, device=years.device)
    angle = 2 * math.pi * years[..., None] / periods
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


class SequenceModel(nn.Module):
    """Causal Transformer over a subject's scans: token i summarises scans 0..i with their times."""

    def __init__(self, embed_dim: int, dim: int):
        super().__init__()
        self.dim = dim
        self.inp = nn.Linear(embed_dim, dim)
        layer = nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=2 * dim, dropout=0.0, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, z: torch.Tensor, years: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, L, E), years (B, L) relative to each sequence's last real scan, pad (B, L) True = padding."""
        x = self.inp(z) + time_encoding(years, self.dim)
        causal = torch.triu(torch.ones(z.shape[1], z.shape[1], dtype=torch.bool, device=z.device), diagonal=1)
        return self.norm(self.transformer(x, mask=causal, src_key_padding_mask=pad))


class TemporalNet(nn.Module):
    def __init__(self, config: TemporalConfig):
        super().__init__()
        self.encoder = ResNet("basic", [2, 2, 2, 2], list(config.widths), spatial_dims=3, n_input_channels=1,
                              conv1_t_size=7, conv1_t_stride=config.stem_stride, feed_forward=False)
        e, d = config.widths[-1], config.sequence_dim
        self.order_head = nn.Sequential(nn.Linear(3 * e, 64), nn.ReLU(), nn.Linear(64, 1))
        self.sequence = SequenceModel(e, d)
        self.predictor = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Linear(d, d))
        self.target = nn.Linear(e, d)   # projects the later scan's embedding for the contrastive loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return resnet_feature_maps(self.encoder, x)

    def order_logit(self, za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
        """Logit that scan a was acquired before scan b."""
        return self.order_head(torch.cat([za, zb, zb - za], dim=-1)).squeeze(-1)


@dataclass
class SequenceBatch:
    """A pretraining batch: per subject a prefix of 1..max_context scans and one later scan."""

    volumes: torch.Tensor          # (N, 1, D, H, W): all scans of the batch, subject by subject
    context: list[list[int]]       # per subject, indices into volumes of its prefix, in time order
    context_months: list[np.ndarray]
    target: list[int]              # per subject, index of its later scan
    target_months: np.ndarray


def draw_sequences(rows: pd.DataFrame, load: Callable[[str], np.ndarray], rng: np.random.Generator,
                   batch_size: int, max_context: int) -> SequenceBatch:
    """Subjects with >= 2 sessions; for each, a random prefix (in time order) and a later scan."""
    by_subject = {s: g.sort_values("months_from_baseline") for s, g in rows.groupby("participant_id", sort=True)
                  if g["months_from_baseline"].nunique() >= 2}
    if len(by_subject) < 2:
        raise MribenchError("temporal pretraining needs at least 2 subjects with 2 or more sessions in the pool")
    names = sorted(by_subject)
    picked = rng.choice(len(names), size=min(batch_size, len(names)), replace=False)
    volumes, context, context_months, target, target_months = [], [], [], [], []
    for i in np.sort(picked):
        g = by_subject[names[i]].drop_duplicates("months_from_baseline")
        n = len(g)
        t = int(rng.integers(1, n))                           # the later scan: any but the first
        k = int(rng.integers(1, min(max_context, t) + 1))     # prefix length among scans before it
        chosen = np.sort(rng.choice(t, size=k, replace=False))
        idx = []
        for j in chosen:
            idx.append(len(volumes))
            volumes.append(load(g["path"].iloc[j]))
        context.append(idx)
        context_months.append(g["months_from_baseline"].to_numpy(float)[chosen])
        target.append(len(volumes))
        volumes.append(load(g["path"].iloc[t]))
        target_months.append(float(g["months_from_baseline"].iloc[t]))
    return SequenceBatch(torch.from_numpy(np.stack(volumes)).float()[:, None], context, context_months, target,
                         np.asarray(target_months))


def pad_sequences(z: torch.Tensor, index: list[list[int]], months: list[np.ndarray]):
    """Gather per-subject sequences of embeddings into (B, L, E) with years relative to the last scan."""
    b, length = len(index), max(len(i) for i in index)
    seq = z.new_zeros(b, length, z.shape[1])
    years = z.new_zeros(b, length)
    pad = torch.ones(b, length, dtype=torch.bool, device=z.device)
    for r, (idx, m) in enumerate(zip(index, months)):
        seq[r, :len(idx)] = z[idx]
        years[r, :len(idx)] = torch.as_tensor((m - m[-1]) / 12.0, dtype=z.dtype)
        pad[r, :len(idx)] = False
    return seq, years, pad


class TemporalMethod(Recipe):
    """Pretraining recipe for :func:`bench.pretrain.pretrain` (draws subject sequences, not scans)."""

    def __init__(self, config: str | TemporalConfig = "small", seed: int = 0):
        self.config = config if isinstance(config, TemporalConfig) else named_config(CONFIGS, config, self.name)
        self.config_name = self.config.name
        self.input_space = self.config.input_space
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.net = TemporalNet(self.config)
        self._augment = None

    def draw_batch(self, rows: pd.DataFrame, load: Callable[[str], np.ndarray], rng: np.random.Generator,
                   batch_size: int) -> SequenceBatch:
        return draw_sequences(rows, load, rng, batch_size, self.config.max_context)

    def _augmented(self, volumes: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Scanner-like intensity changes only: a spatial augmentation would mimic atrophy."""
        from monai.transforms import Compose, RandAdjustContrast, RandShiftIntensity

        if self._augment is None:
            self._augment = Compose([RandShiftIntensity(offsets=0.3, prob=0.8),
                                     RandAdjustContrast(gamma=(0.7, 1.4), prob=0.8)])
        out = []
        for v in volumes:
            self._augment.set_random_state(seed=int(rng.integers(0, 2**31 - 1)))
            out.append(torch.as_tensor(self._augment(v)).float())
        return torch.stack(out)

    def loss(self, batch: SequenceBatch, rng: np.random.Generator) -> torch.Tensor:
        z = self.net(self._augmented(batch.volumes, rng))
        # temporal order: the last prefix scan vs the later scan, shown in a random order
        first = torch.stack([z[c[-1]] for c in batch.context])
        later = z[batch.target]
        swap = torch.as_tensor(rng.random(len(first)) < 0.5)
        a = torch.where(swap[:, None], later, first)
        b = torch.where(swap[:, None], first, later)
        order = nn.functional.binary_cross_entropy_with_logits(self.net.order_logit(a, b), (~swap).float())
        # predictive contrastive: summary of the prefix + gap -> the later scan among the batch's
        seq, years, pad = pad_sequences(z, batch.context, batch.context_months)
        summary = self.net.sequence(seq, years, pad)
        last = torch.as_tensor([len(c) - 1 for c in batch.context], device=summary.device)
        s = summary[torch.arange(len(last), device=summary.device), last]
        gap = torch.as_tensor((batch.target_months - np.array([m[-1] for m in batch.context_months])) / 12.0,
                              dtype=s.dtype, device=s.device)
        pred = nn.functional.normalize(self.net.predictor(torch.cat([s, time_encoding(gap, s.shape[1])], -1)), dim=1)
        tgt = nn.functional.normalize(self.net.target(later), dim=1)
        logits = pred @ tgt.T / self.config.temperature
        contrast = nn.functional.cross_entropy(logits, torch.arange(len(logits), device=logits.device))
        return order + contrast + self._regulariser(z)

    def _regulariser(self, z: torch.Tensor) -> torch.Tensor | float:
        """The config's variance-covariance term on every scan's pooled embedding (0 when off): the
        vector the probes read, kept from folding onto a few directions."""
        return weighted_variance_covariance(self.config.var_cov, z)


class TemporalSSL(PretrainedEncoder):
    """Backbone embedding per scan; ``sequence_features`` adds the learned history summary."""

    registry_name = "temporal"
    recipe = TemporalMethod  # the SSL recipe whose weights it loads

    def __init__(self, config: str = "small", weights: str | Path | None = None, untrained_ok: bool = False):
        self._build(CONFIGS, config, TemporalNet)
        sha, pretraining = self._load_weights(config, weights, untrained_ok=untrained_ok)
        c = self.config
        self.card = EncoderCard(
            name="temporal" if config == "small" else f"temporal-{config}",
            architecture=f"MONAI 3D ResNet-18 (widths {'-'.join(map(str, c.widths))}, stem stride {c.stem_stride}) "
                         f"+ causal time-aware Transformer over the scan sequence ({c.sequence_dim}-d)",
            n_parameters=sum(p.numel() for n, p in self.net.named_parameters()
                             if n.startswith(("encoder.", "sequence."))),
            embed_dim=c.widths[-1], input_space=c.input_space,
            ssl_method="temporal-order prediction + predictive contrastive over scan sequences"
                       + described(c.var_cov, "the scans' embeddings"),
            pretraining_data=pretraining, checkpoint_sha256=sha,
            reference="after Kaczmarek et al., arXiv 2509.10453 (SSL-AD); their code is not public",
            supports_finetune=True, supports_segmentation=True)

    def feature_maps(self, volumes: torch.Tensor) -> list[torch.Tensor]:
        self._require_weights()
        return self.net.features(volumes)

    def sequence_features(self, embeddings: np.ndarray, months: np.ndarray) -> np.ndarray:
        """(L, E) scan embeddings of one subject in time order + their months -> (L, E + d).

        Row i is scan i's embedding followed by the sequence model's summary of scans 0..i
        (causal, times relative to scan i), so any prefix length 1..L is handled.
        """
        self._require_weights()
        z = torch.as_tensor(np.asarray(embeddings, np.float32))
        m = np.asarray(months, float)
        e = self.config.widths[-1]  # a multi-sequence step concatenates sequences: the model reads the first
        rows = []
        with torch.inference_mode():
            for i in range(len(z)):
                years = torch.as_tensor((m[: i + 1] - m[i]) / 12.0, dtype=torch.float32)[None]
                rows.append(self.net.sequence(z[None, : i + 1, :e], years)[0, -1].numpy())
        return np.concatenate([np.asarray(embeddings, np.float32), np.stack(rows)], axis=1)

