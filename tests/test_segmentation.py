"""The segmentation decoder must be able to read a perfect representation.

If the decoder cannot turn the oracle's own label maps back into the label map, every
segmentation score in the benchmark measures the decoder rather than the encoder.
"""

from __future__ import annotations

import numpy as np
import torch

from baselines.oracle import Oracle
from bench.metrics import dice_per_subject
from bench.protocols.segmentation import fit_decoder, predict_logits


def _blob_labels(n: int, size: int, seed: int) -> torch.Tensor:
    """Label volumes with an oedema ball (1) around a core ball (2) at random places."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), -1).astype(float)
    out = np.zeros((n, size, size, size), np.int64)
    for i in range(n):
        centre = rng.uniform(size * 0.3, size * 0.7, 3)
        r_core, r_oedema = rng.uniform(2.5, 4.0), rng.uniform(5.5, 8.0)
        dist = np.linalg.norm(grid - centre, axis=-1)
        out[i][dist < r_oedema] = 1
        out[i][dist < r_core] = 2
    return torch.from_numpy(out)


def test_decoder_recovers_the_oracle_label_maps():
    labels = _blob_labels(14, 32, seed=0)
    oracle = Oracle()
    maps_of = lambda idx: oracle.label_maps(labels[idx], 3)[:3]  # noqa: E731  (coarser levels would be 1 voxel)
    train, val, test = np.arange(8), np.arange(8, 10), np.arange(10, 14)
    decoder, info = fit_decoder(maps_of, labels, train, val, n_classes=3, size=(32, 32, 32),
                                steps=150, seed=0)
    with torch.no_grad():
        pred = predict_logits(decoder, maps_of, test, (32, 32, 32)).argmax(1).numpy()
    dice = dice_per_subject(labels[test].numpy(), pred)
    assert info["steps"] >= 10 and info["best_val_loss"] is not None
    assert dice.mean() > 0.85, dice


def test_decoder_training_is_seeded():
    labels = _blob_labels(6, 32, seed=1)
    oracle = Oracle()
    maps_of = lambda idx: oracle.label_maps(labels[idx], 3)[:3]  # noqa: E731  (coarser levels would be 1 voxel)
    outs = []
    for _ in range(2):
        decoder, _ = fit_decoder(maps_of, labels, np.arange(4), np.arange(4, 6), n_classes=3,
                                 size=(32, 32, 32), steps=20, seed=3)
        with torch.no_grad():
            outs.append(predict_logits(decoder, maps_of, np.arange(6), (32, 32, 32)))
    assert torch.equal(outs[0], outs[1])
