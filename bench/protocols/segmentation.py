"""Segmentation: a light decoder on the encoder's multi-scale feature maps (not a protocol of its
own: what the probe, fractions and fine-tune protocols run for the segmentation kind).

``frozen=True`` (linear-probe analogue): the encoder's maps are computed once per scan under
no_grad and only the decoder trains. ``frozen=False`` (fine-tune): encoder and decoder train
together. Dice and HD95 are computed per subject in the input space and bootstrapped over
subjects like every other metric.

On a GPU (:mod:`bench.devices`) the volumes and labels stay on the CPU and each batch is moved to
the model's device; the encoder's maps come from its forward under the run's autocast and are
turned back to fp32, so the decoder, the loss and the metrics are fp32 whatever the precision.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch

from bench.errors import MribenchError
from bench.heads import SegmentationDecoder
from bench.progress import progress_bar
from bench.protocols.context import (Context, Setting, compute_of, eval_indices, input_spacing, micro_batch,
                                     setting_score, split_indices)
from bench.timing import phase

BATCH = 4         # volumes per optimiser step
EVAL_EVERY = 10   # steps between validation checks
PATIENCE = 8      # validation checks without improvement before stopping


@phase("store")
def _volumes_and_labels(ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    space = ctx.encoder.card.input_space
    table = ctx.cohort.table
    rows = [int(r[0, 0]) for r in ctx.examples.rows]
    if "seg_path" not in table.columns or table.loc[rows, "seg_path"].isna().any():
        raise MribenchError(f"{ctx.cohort.name}: tumour_segmentation needs a label map (seg_path) for every scan")
    ctx.store.prefetch([table.at[r, "path"] for r in rows], space, progress=False)
    ctx.store.prefetch([table.at[r, "seg_path"] for r in rows], space, kind="label", progress=False)
    vols = np.stack([np.asarray(ctx.store.get(table.at[r, "path"], space), np.float32) for r in rows])
    labs = np.stack([np.asarray(ctx.store.get(table.at[r, "seg_path"], space, kind="label")) for r in rows])
    return torch.from_numpy(vols).unsqueeze(1), torch.from_numpy(labs.astype(np.int64))


def _feature_fn(ctx: Context, frozen: bool):
    """The encoder's feature maps (a fresh trainable copy's when not ``frozen``); None for an encoder
    with label maps (the oracle: the truth itself, at every scale)."""
    from bench.encoders.api import LabelMaps

    enc = ctx.encoder
    if isinstance(enc, LabelMaps):
        return None
    if frozen:
        return enc.feature_maps
    return copy.deepcopy(enc.module()).features


def _maps(fn, volumes: torch.Tensor, compute) -> list[torch.Tensor]:
    """The encoder's feature maps of CPU ``volumes``, computed on the run's device under its
    autocast, in fp32 (the decoder's precision)."""
    from bench.devices import autocast

    device = compute.torch_device()
    with autocast(compute, device.type):
        maps = fn(volumes.to(device, non_blocking=True))
    return [m.float() for m in maps]


def _maps_of(ctx: Context, fn, frozen: bool, vols: torch.Tensor, labs: torch.Tensor, n_classes: int):
    """``maps_of(batch indices) -> feature maps`` on the run's device: the oracle's label maps, the
    frozen encoder's (computed once per scan), or a trainable copy's (computed per batch)."""
    compute = compute_of(ctx)
    if fn is None:
        return lambda idx: [m.to(compute.torch_device()) for m in ctx.encoder.label_maps(labs[idx], n_classes)]
    if not frozen:
        return lambda idx: _maps(fn, vols[idx], compute)
    with torch.no_grad(), phase("embeddings"):
        cached = [_maps(fn, vols[i:i + 4], compute) for i in range(0, len(vols), 4)]
    cached = [torch.cat([c[k] for c in cached]) for k in range(len(cached[0]))]
    return lambda idx: [m[idx] for m in cached]


def segmentation_probe(ctx: Context, train_subjects: set[str] | None, seed: int, setting: Setting,
                       frozen: bool = True) -> list:
    n_classes = len(ctx.spec.label.classes)
    vols, labs = _volumes_and_labels(ctx)
    train, val = split_indices(ctx, "train", train_subjects), split_indices(ctx, "val")
    fn = _feature_fn(ctx, frozen)
    maps_of = _maps_of(ctx, fn, frozen, vols, labs, n_classes)
    size = tuple(vols.shape[2:])
    extra = [fn.__self__] if fn is not None and not frozen else []
    with phase("heads" if frozen else "fine-tuning"):  # a decoder on frozen maps is a probe head
        decoder, info = fit_decoder(maps_of, labs, train, val, n_classes=n_classes, size=size,
                                    steps=ctx.profile.segmentation_steps, seed=seed,
                                    lr=1e-2 if frozen else 1e-3, also_train=extra, progress=ctx.progress,
                                    batch=micro_batch(ctx, BATCH), compute=compute_of(ctx),
                                    description=f"{'decoder' if frozen else 'fine-tuning'} {ctx.spec.name} "
                                                f"{setting.label} seed {seed}")
        decoder.eval()
        spacing = input_spacing(ctx)
        out = []
        for split, idx in eval_indices(ctx).items():
            with torch.no_grad():
                pred = predict_logits(decoder, maps_of, idx, size).argmax(1).cpu().numpy()
            truth = labs[idx].numpy()
            out.append(setting_score(ctx, idx, split, seed, setting, truth, pred, {
                "n_train_examples": int(len(train)), "frozen_encoder": frozen, **info,
                "hd95_units": f"voxels of {spacing} mm", **missed_summary(truth, pred, size)}))
    return out


def missed_summary(truth: np.ndarray, pred: np.ndarray, size: tuple[int, int, int]) -> dict:
    """How many evaluated subjects had a tumour and no predicted voxel, and the HD95 they were given
    (:func:`bench.metrics.hd95_penalty`: the grid's diagonal, BraTS's 373.13 mm on its grid)."""
    from bench.metrics import hd95_penalty, missed_structures

    return {"n_missed": missed_structures(truth, pred), "hd95_missed_penalty": round(hd95_penalty(size), 2)}


def fit_decoder(maps_of: Callable[[np.ndarray], list[torch.Tensor]], labels: torch.Tensor,
                train: np.ndarray, val: np.ndarray, *, n_classes: int, size: tuple[int, int, int],
                steps: int, seed: int, lr: float = 1e-2, also_train: list[torch.nn.Module] = (),
                progress: bool = False, description: str = "decoder", batch: int = BATCH,
                compute=None) -> tuple[SegmentationDecoder, dict]:
    """Train a :class:`SegmentationDecoder` on ``maps_of(batch indices)`` against ``labels``.

    Counted in optimiser steps, not epochs: a tumour training split of five subjects is two
    batches per epoch, and an epoch budget left the decoder far from converged. Every
    ``EVAL_EVERY`` steps the validation DiceCE loss is checked; the best state is restored and
    training stops after ``PATIENCE`` checks without improvement. ``also_train`` holds encoder
    modules that train with the decoder (fine-tune); they are restored to their best state too.
    ``progress`` shows a bar per optimiser step with the last validation loss (minutes per seed on CPU).
    ``batch`` volumes per step; ``compute`` (:mod:`bench.devices`): the device the decoder trains on
    (``maps_of`` gives maps there) and, for fp16, the gradient scaler.
    """
    from monai.losses import DiceCELoss

    from bench.devices import CPU, grad_scaler
    from bench.devices import step as optimiser_step

    device = (compute or CPU).torch_device()

    # Background left out of the Dice term: tumours fill under 1 % of the volume, and with the
    # background class in it one seed of the oracle stalled at Dice 0.70 where others reach 0.92.
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    channels = [m.shape[1] for m in maps_of(np.asarray(train[:1]))]
    with torch.random.fork_rng(), progress_bar(progress) as bar:
        task = bar.add_task(description, total=steps)
        torch.manual_seed(seed)
        decoder = SegmentationDecoder(channels, n_classes).to(device)
        trained: list[torch.nn.Module] = [decoder, *also_train]
        params = [p for m in trained for p in m.parameters()]
        opt, scaler = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4), grad_scaler(compute)
        rng = np.random.default_rng(seed)
        best, best_state, bad, steps_done = np.inf, _snapshot(trained), 0, 0
        for step in range(1, steps + 1):
            for m in trained:
                m.train()
            idx = np.sort(rng.choice(train, size=min(batch, len(train)), replace=False))
            optimiser_step(loss_fn(decoder(maps_of(idx), size), labels[idx].unsqueeze(1).to(device)), opt, scaler)
            steps_done = step
            bar.advance(task)
            if len(val) and step % EVAL_EVERY == 0:
                for m in trained:
                    m.eval()
                with torch.no_grad():
                    v = float(loss_fn(predict_logits(decoder, maps_of, val, size),
                                      labels[val].unsqueeze(1).to(device)))
                bar.update(task, description=f"{description} (val loss {v:.4f})")
                if v < best - 1e-4:
                    best, best_state, bad = v, _snapshot(trained), 0
                elif (bad := bad + 1) >= PATIENCE:
                    break
        if np.isfinite(best):
            for m, state in zip(trained, best_state):
                m.load_state_dict(state)
    for m in trained:
        m.eval()
    return decoder, {"steps": steps_done, "best_val_loss": float(best) if np.isfinite(best) else None}


def _snapshot(modules: list[torch.nn.Module]) -> list[dict]:
    return [copy.deepcopy(m.state_dict()) for m in modules]


def predict_logits(decoder, maps_of, idx: np.ndarray, size: tuple[int, int, int]) -> torch.Tensor:
    """Decoder logits for ``idx`` in batches (bounded memory at any resolution)."""
    return torch.cat([decoder(maps_of(idx[s:s + BATCH]), size) for s in range(0, len(idx), BATCH)])
