"""The fine-tune protocol: encoder and a small head trained end to end, early stopping on val.

Each example's steps (sessions) and input sequences go through the same encoder; a sequence is
pooled as [mean of steps, last step, months since the previous scan, months spanned], so
variable lengths and irregular gaps are seen by the head. Each seed trains a fresh copy of
the encoder, so seeds are independent and the registered encoder is never modified. A progress
bar per seed (epochs, with the last validation loss) shows unless ``--no-progress``.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from bench.errors import MribenchError
from bench.progress import progress_bar
from bench.protocols import Context, _keep, _mask, eval_indices, example_volumes, seeds, setting_score


class FinetuneModel(nn.Module):
    def __init__(self, backbone: nn.Module, embed_dim: int, n_sequences: int, n_outputs: int):
        super().__init__()
        self.backbone = backbone
        width = n_sequences * embed_dim
        self.head = nn.Sequential(nn.LayerNorm(2 * width + 2), nn.Linear(2 * width + 2, n_outputs))

    def forward(self, volumes: list[torch.Tensor], months: list[np.ndarray]) -> torch.Tensor:
        """volumes[i]: (L_i, S, D, H, W) of example i; returns (n, n_outputs)."""
        flat = torch.cat([v.reshape(-1, 1, *v.shape[2:]) for v in volumes])
        emb = self.backbone(flat)
        out, start = [], 0
        for v, m in zip(volumes, months):
            n = v.shape[0] * v.shape[1]
            steps = emb[start:start + n].reshape(v.shape[0], -1)
            start += n
            gap = (m[-1] - m[-2]) if len(m) > 1 else 0.0
            time = torch.tensor([gap / 12.0, (m[-1] - m[0]) / 12.0], dtype=steps.dtype)
            out.append(torch.cat([steps.mean(0), steps[-1], time]))
        return self.head(torch.stack(out))


def cox_loss(risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Negative Cox partial log-likelihood (Breslow ties), averaged over events."""
    order = torch.argsort(time, descending=True)
    risk, event = risk[order], event[order]
    log_cum = torch.logcumsumexp(risk, dim=0)
    return -((risk - log_cum) * event).sum() / event.sum().clamp_min(1.0)


def finetune_scores(ctx: Context) -> list[dict]:
    card = ctx.encoder.card
    if not getattr(card, "supports_finetune", False) or not hasattr(ctx.encoder, "module"):
        raise MribenchError(f"encoder {card.name} does not support fine-tuning (its card says so)")
    if ctx.spec.kind == "segmentation":
        from bench.segmentation import segmentation_probe

        return [s for seed in seeds(ctx) for s in segmentation_probe(ctx, None, seed, "full", frozen=False)]
    vols = example_volumes(ctx)
    out = []
    for seed in seeds(ctx):
        out += _one_seed(ctx, vols, seed)
    return out


def _targets(ctx: Context, idx: np.ndarray, stats: tuple[float, float]) -> torch.Tensor:
    y = ctx.examples.labels()[idx]
    if ctx.spec.kind in ("classification", "sequence_classification"):
        return torch.as_tensor(y.astype(int))
    if ctx.spec.kind == "regression":
        return torch.as_tensor((y.astype(float) - stats[0]) / stats[1], dtype=torch.float32)
    return torch.as_tensor(y, dtype=torch.float32)


def _loss(ctx: Context, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    kind = ctx.spec.kind
    if kind in ("classification", "sequence_classification"):
        return nn.functional.cross_entropy(pred, target)
    if kind == "regression":
        return nn.functional.mse_loss(pred[:, 0], target)
    return cox_loss(pred[:, 0], target[:, 0], target[:, 1])


def _one_seed(ctx: Context, vols: list[torch.Tensor], seed: int) -> list[dict]:
    spec, ex = ctx.spec, ctx.examples
    n_out = len(spec.label.classes) if spec.kind in ("classification", "sequence_classification") else 1
    train, val = _mask(ctx, "train"), _mask(ctx, "val")
    y_train = ex.labels()[train]
    stats = (float(np.mean(y_train)), float(np.std(y_train) or 1.0)) if spec.kind == "regression" else (0.0, 1.0)
    with torch.random.fork_rng(), progress_bar(ctx.progress) as bar:
        task = bar.add_task(f"fine-tuning {spec.name} seed {seed}", total=ctx.profile.finetune_epochs)
        torch.manual_seed(seed)
        model = FinetuneModel(copy.deepcopy(ctx.encoder.module()), ctx.encoder.card.embed_dim,
                              len(spec.input.sequences), n_out)
        opt = torch.optim.AdamW([{"params": model.backbone.parameters(), "lr": 1e-4},
                                 {"params": model.head.parameters(), "lr": 1e-3}], weight_decay=1e-4)
        rng = np.random.default_rng(seed)
        best, best_state, bad, patience = np.inf, copy.deepcopy(model.state_dict()), 0, 3
        batch = 4 if spec.kind != "survival" else max(8, len(train))  # Cox needs risk sets
        for _ in range(ctx.profile.finetune_epochs):
            model.train()
            perm = rng.permutation(train)
            for start in range(0, len(perm), batch):
                idx = perm[start:start + batch]
                pred = model([vols[i] for i in idx], [ex.months[i] for i in idx])
                loss = _loss(ctx, pred, _targets(ctx, idx, stats))
                opt.zero_grad()
                loss.backward()
                opt.step()
            bar.advance(task)
            if not len(val):
                continue
            model.eval()
            with torch.no_grad():
                vloss = float(_loss(ctx, _predict(model, ctx, vols, val), _targets(ctx, val, stats)))
            bar.update(task, description=f"fine-tuning {spec.name} seed {seed} (val loss {vloss:.4f})")
            if vloss < best - 1e-4:
                best, best_state, bad = vloss, copy.deepcopy(model.state_dict()), 0
            else:
                bad += 1
                if bad >= patience:
                    break
        if len(val):
            model.load_state_dict(best_state)
    model.eval()
    out = []
    for split, idx in eval_indices(ctx).items():
        with torch.no_grad():
            raw = _predict(model, ctx, vols, idx)
        if spec.kind in ("classification", "sequence_classification"):
            pred = torch.softmax(raw, dim=1).numpy()
        elif spec.kind == "regression":
            pred = raw[:, 0].numpy() * stats[1] + stats[0]
        else:
            pred = raw[:, 0].numpy()
        y = ex.labels()[idx]
        out.append(setting_score(ctx, idx, split, seed, "full", y, pred,
                                 {"n_train_examples": int(len(train)), "best_val_loss": float(best)}))
        if ctx.keep_predictions:
            _keep(ctx, idx, split, seed, "full", y, pred)
    return out


def _predict(model: FinetuneModel, ctx: Context, vols: list[torch.Tensor], idx: np.ndarray) -> torch.Tensor:
    outs = [model([vols[i] for i in idx[s:s + 8]], [ctx.examples.months[i] for i in idx[s:s + 8]])
            for s in range(0, len(idx), 8)]
    return torch.cat(outs)
