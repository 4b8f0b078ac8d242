"""``finetune``: encoder and a small head trained end to end, early stopping on val.

Each example's steps (sessions) and input sequences go through the same encoder; a sequence is
pooled as [mean of steps, last step, months since the previous scan, months spanned], so
variable lengths and irregular gaps are seen by the head. Each seed trains a fresh copy of
the encoder, so seeds are independent and the registered encoder is never modified. A progress
bar per seed (epochs, with the last validation loss) shows unless ``--no-progress``. The loss,
the target encoding and how outputs become predictions are the task's kind's
(:class:`bench.kinds.TargetKind`); segmentation tasks train the encoder with the decoder of
:mod:`bench.protocols.segmentation`. Applies to encoders with the
:class:`~bench.encoders.api.Trainable` capability whose card supports fine-tuning.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from bench.progress import progress_bar
from bench.protocols import Protocol
from bench.protocols.context import (FULL, Context, Setting, eval_indices, example_volumes, record_predictions, seeds,
                                     compute_of, micro_batch, segmentation_support, setting_score, split_indices)
from bench.protocols.probe import probe
from bench.seed_checkpoints import resumable_seed
from bench.timing import phase


class FinetuneModel(nn.Module):
    """The encoder's module and a small head. Volumes come from the CPU and are moved to the model's
    device here (non-blocking); the backbone runs under the run's autocast (``compute``), the head in fp32."""

    def __init__(self, backbone: nn.Module, embed_dim: int, n_sequences: int, n_outputs: int, compute=None):
        super().__init__()
        self.backbone = backbone
        self.compute = compute
        width = n_sequences * embed_dim
        self.head = nn.Sequential(nn.LayerNorm(2 * width + 2), nn.Linear(2 * width + 2, n_outputs))

    def forward(self, volumes: list[torch.Tensor], months: list[np.ndarray]) -> torch.Tensor:
        """volumes[i]: (L_i, S, D, H, W) of example i; returns (n, n_outputs)."""
        from bench.devices import autocast

        device = self.head[1].weight.device
        flat = torch.cat([v.reshape(-1, 1, *v.shape[2:]) for v in volumes]).to(device, non_blocking=True)
        with autocast(self.compute, device.type):
            emb = self.backbone(flat)
        emb = emb.float()
        out, start = [], 0
        for v, m in zip(volumes, months):
            n = v.shape[0] * v.shape[1]
            steps = emb[start:start + n].reshape(v.shape[0], -1)
            start += n
            gap = (m[-1] - m[-2]) if len(m) > 1 else 0.0
            time = torch.tensor([gap / 12.0, (m[-1] - m[0]) / 12.0], dtype=steps.dtype, device=steps.device)
            out.append(torch.cat([steps.mean(0), steps[-1], time]))
        return self.head(torch.stack(out))


def supports(spec, encoder) -> str | None:
    from bench.encoders.api import capabilities

    if not capabilities(encoder).finetunes:
        return f"encoder {encoder.card.name} does not support fine-tuning (its card says so)"
    return segmentation_support(spec, encoder)


def run(ctx: Context) -> list:
    if not ctx.target.uses_embeddings:
        return [s for seed in seeds(ctx) for s in probe(ctx, None, seed, FULL, frozen=False)]
    vols = example_volumes(ctx)
    out = []
    for seed in seeds(ctx):
        out += finetune_seed(ctx, vols, seed)
    return out


def _targets(ctx: Context, idx: np.ndarray, stats: tuple[float, float]) -> torch.Tensor:
    """The kind's training targets, on the model's device (the kinds build them on the CPU)."""
    return ctx.target.finetune_targets(ctx.examples.labels()[idx], stats).to(compute_of(ctx).torch_device())


def finetune_seed(ctx: Context, vols: list[torch.Tensor], seed: int, subjects: set[str] | None = None,
                  setting: Setting = FULL) -> list:
    """Fine-tune a fresh copy of the encoder with ``seed`` on the training examples of ``subjects``
    (all training subjects by default); its scores on test and external, labelled ``setting``.
    Early stopping always watches the whole validation split. A seed that an interrupted run of
    the same job finished is read back from the job's seed checkpoints instead."""
    return resumable_seed(ctx, setting.label, seed, lambda: _finetune_seed(ctx, vols, seed, subjects, setting))


@phase("fine-tuning")
def _finetune_seed(ctx: Context, vols: list[torch.Tensor], seed: int, subjects: set[str] | None,
                   setting: Setting) -> list:
    spec, ex, target = ctx.spec, ctx.examples, ctx.target
    train, val = split_indices(ctx, "train", subjects), split_indices(ctx, "val")
    stats = target.finetune_stats(ex.labels()[train])
    with torch.random.fork_rng(), progress_bar(ctx.progress) as bar:
        task = bar.add_task(f"fine-tuning {spec.name} seed {seed}", total=ctx.profile.finetune_epochs)
        torch.manual_seed(seed)
        compute = compute_of(ctx)
        model = FinetuneModel(copy.deepcopy(ctx.encoder.module()), ctx.encoder.card.embed_dim,
                              len(spec.input.sequences), target.n_outputs(spec), compute).to(compute.torch_device())
        opt = torch.optim.AdamW([{"params": model.backbone.parameters(), "lr": 1e-4},
                                 {"params": model.head.parameters(), "lr": 1e-3}], weight_decay=1e-4)
        best = _train(ctx, model, opt, vols, train, val, stats, seed, bar, task)
    model.eval()
    out = []
    for split, idx in eval_indices(ctx).items():
        with torch.no_grad():
            raw = _predict(model, ctx, vols, idx)
        pred = target.finetune_predictions(raw.float().cpu(), stats)
        y = ex.labels()[idx]
        out.append(setting_score(ctx, idx, split, seed, setting, y, pred,
                                 {"n_train_examples": int(len(train)), "best_val_loss": float(best)}))
        record_predictions(ctx, idx, split, seed, setting, y, pred)
    return out


def _train(ctx: Context, model: FinetuneModel, opt, vols: list[torch.Tensor], train: np.ndarray, val: np.ndarray,
           stats: tuple[float, float], seed: int, bar, task) -> float:
    """Epochs of training with early stopping on the validation loss (patience 3); the best state
    is restored. Returns the best validation loss (inf without a validation split)."""
    from bench.devices import grad_scaler
    from bench.devices import step as optimiser_step

    spec, ex, target = ctx.spec, ctx.examples, ctx.target
    rng = np.random.default_rng(seed)
    best, best_state, bad, patience = np.inf, copy.deepcopy(model.state_dict()), 0, 3
    batch = micro_batch(ctx, target.finetune_batch(len(train)))
    scaler = grad_scaler(compute_of(ctx))  # fp16 only
    for _ in range(ctx.profile.finetune_epochs):
        model.train()
        perm = rng.permutation(train)
        for start in range(0, len(perm), batch):
            idx = perm[start:start + batch]
            pred = model([vols[i] for i in idx], [ex.months[i] for i in idx])
            optimiser_step(target.finetune_loss(pred, _targets(ctx, idx, stats)), opt, scaler)
        bar.advance(task)
        if not len(val):
            continue
        model.eval()
        with torch.no_grad():
            vloss = float(target.finetune_loss(_predict(model, ctx, vols, val), _targets(ctx, val, stats)))
        bar.update(task, description=f"fine-tuning {spec.name} seed {seed} (val loss {vloss:.4f})")
        if vloss < best - 1e-4:
            best, best_state, bad = vloss, copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
            if bad >= patience:
                break
    if len(val):
        model.load_state_dict(best_state)
    return best


def _predict(model: FinetuneModel, ctx: Context, vols: list[torch.Tensor], idx: np.ndarray) -> torch.Tensor:
    outs = [model([vols[i] for i in idx[s:s + 8]], [ctx.examples.months[i] for i in idx[s:s + 8]])
            for s in range(0, len(idx), 8)]
    return torch.cat(outs)


PROTOCOL = Protocol(
    name="finetune", run=run, label="fine-tune", headline="full", order=1, needs_embeddings=False,
    trains_network=True, description="encoder and head trained end to end, early stopping on val",
    supports=supports)
