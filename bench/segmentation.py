"""Segmentation protocols: a light decoder on the encoder's multi-scale feature maps.

``frozen=True`` (linear-probe analogue): the encoder's maps are computed once per scan under
no_grad and only the decoder trains. ``frozen=False`` (fine-tune): encoder and decoder train
together. Dice and HD95 are computed per subject in the input space and bootstrapped over
subjects like every other metric.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from bench.errors import MribenchError
from bench.heads import SegmentationDecoder
from bench.protocols import EVAL_SPLITS, Context, _mask, setting_score


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


def _feature_fn(ctx: Context, frozen: bool, n_classes: int):
    enc = ctx.encoder
    if hasattr(enc, "label_maps"):  # the oracle: the truth itself, at every scale
        return None
    if not getattr(enc.card, "supports_segmentation", False):
        raise MribenchError(f"encoder {enc.card.name} exposes no feature maps for segmentation")
    if frozen:
        return enc.feature_maps
    return copy.deepcopy(enc.module()).features


def segmentation_probe(ctx: Context, train_subjects: set[str] | None, seed: int, setting: str,
                       frozen: bool = True) -> list[dict]:
    from monai.losses import DiceCELoss

    n_classes = len(ctx.spec.label.classes)
    vols, labs = _volumes_and_labels(ctx)
    train, val = _mask(ctx, "train", train_subjects), _mask(ctx, "val")
    fn = _feature_fn(ctx, frozen, n_classes)
    if fn is None:
        maps_of = lambda idx: ctx.encoder.label_maps(labs[idx], n_classes)  # noqa: E731
    elif frozen:
        with torch.no_grad():
            cached = [fn(vols[i:i + 4]) for i in range(0, len(vols), 4)]
        cached = [torch.cat([c[k] for c in cached]) for k in range(len(cached[0]))]
        maps_of = lambda idx: [m[idx] for m in cached]  # noqa: E731
    else:
        maps_of = lambda idx: fn(vols[idx])  # noqa: E731
    channels = [m.shape[1] for m in maps_of(np.array([0]))]
    size = tuple(vols.shape[2:])
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        decoder = SegmentationDecoder(channels, n_classes)
        params = list(decoder.parameters())
        if fn is not None and not frozen:
            params += list(fn.__self__.parameters())
        opt = torch.optim.AdamW(params, lr=1e-2 if frozen else 1e-3, weight_decay=1e-4)
        rng = np.random.default_rng(seed)
        best, best_state, bad = np.inf, copy.deepcopy(decoder.state_dict()), 0
        for _ in range(ctx.profile.segmentation_epochs):
            decoder.train()
            perm = rng.permutation(train)
            for s in range(0, len(perm), 4):
                idx = perm[s:s + 4]
                loss = loss_fn(decoder(maps_of(idx), size), labs[idx].unsqueeze(1))
                opt.zero_grad()
                loss.backward()
                opt.step()
            if len(val):
                decoder.eval()
                with torch.no_grad():
                    v = float(loss_fn(decoder(maps_of(val), size), labs[val].unsqueeze(1)))
                if v < best - 1e-4:
                    best, best_state, bad = v, copy.deepcopy(decoder.state_dict()), 0
                elif (bad := bad + 1) >= 5:
                    break
        if len(val) and frozen:
            decoder.load_state_dict(best_state)
    decoder.eval()
    spacing = _spacing(ctx)
    out = []
    for split in EVAL_SPLITS:
        idx = _mask(ctx, split)
        if not len(idx):
            continue
        with torch.no_grad():
            pred = torch.cat([decoder(maps_of(idx[s:s + 4]), size).argmax(1)
                              for s in range(0, len(idx), 4)]).numpy()
        out.append(setting_score(ctx, idx, split, seed, setting, labs[idx].numpy(), pred, {
            "n_train_examples": int(len(train)), "frozen_encoder": frozen,
            "hd95_units": f"voxels of {spacing} mm"}))
    return out


def _spacing(ctx: Context) -> float:
    from bench.data.spaces import get_space

    return get_space(ctx.encoder.card.input_space).spacing_mm

