"""``oracle``: the synthetic cohort's ground-truth latents as the embedding (the ceiling).

Reads ``derivatives/synth/ground_truth.tsv`` rather than voxels, so it shows how well a task
can be solved from what generated the images. For segmentation it offers the true label map
(one-hot, at the decoder's scales).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from bench.encoders import Encoder, EncoderCard
from bench.errors import MribenchError

#: The latents that generated the image (nuisances such as head size are left out: a ceiling
#: should not need to learn to ignore them from a few dozen subjects). The biological age
#: (chronological age plus the subject's brain-age gap) is what the ageing effects were drawn
#: from, so the oracle's brain-age error is the gap itself.
FEATURES = ("stage", "hippocampus", "ventricles", "gm", "wm", "biological_age", "tumour_core_ml",
            "tumour_oedema_ml", "marker", "T1w", "T2w", "FLAIR")


class Oracle(Encoder):
    def __init__(self):
        self.card = EncoderCard(
            name="oracle", architecture="ground-truth latents", n_parameters=0, embed_dim=len(FEATURES),
            input_space="cpu-small", ssl_method="oracle", supports_finetune=False,
            supports_segmentation=True, version="2")

    def embed(self, volumes: torch.Tensor) -> torch.Tensor:
        raise MribenchError("the oracle reads the synthetic cohort's latents, not voxels")

    def embed_rows(self, rows: pd.DataFrame, cohort) -> np.ndarray:
        truth = getattr(cohort, "ground_truth", None)
        if truth is None:
            raise MribenchError("the oracle needs a synthetic cohort with derivatives/synth/ground_truth.tsv")
        gt = truth.set_index(["participant_id", "session_id", "sequence"])
        keys = list(zip(rows["participant_id"], rows["session_id"], rows["sequence"]))
        missing = [k for k in keys if k not in gt.index]
        if missing:
            raise MribenchError(f"ground truth has no row for {missing[0]}")
        g = gt.loc[keys]
        icv = g["icv_ml"].to_numpy(float)
        if "biological_age" not in g.columns:
            raise MribenchError("the oracle needs a v2 synthetic cohort (ground truth without biological_age); "
                                "regenerate it with `bench data synth --force`")
        cols = [g["stage"], 1000 * g["hippocampus_ml"] / icv, 1000 * g["ventricles_ml"] / icv,
                g["gm_ml"] / icv, g["wm_ml"] / icv, g["biological_age"],
                g.get("tumour_core_ml", pd.Series(0.0, index=g.index)).fillna(0.0),
                g.get("tumour_oedema_ml", pd.Series(0.0, index=g.index)).fillna(0.0),
                g["marker"].clip(lower=0)]
        seq = rows["sequence"].to_numpy()
        onehot = [(seq == s).astype(float) for s in ("T1w", "T2w", "FLAIR")]
        return np.column_stack([np.asarray(c, float) for c in cols] + onehot).astype(np.float32)

    def label_maps(self, labels: torch.Tensor, n_classes: int) -> list[torch.Tensor]:
        """The true label map, one-hot, at the scales of a 5-level encoder pyramid."""
        onehot = torch.nn.functional.one_hot(labels.long(), n_classes).permute(0, 4, 1, 2, 3).float()
        return [torch.nn.functional.avg_pool3d(onehot, 2 ** k) for k in range(1, 6)]
