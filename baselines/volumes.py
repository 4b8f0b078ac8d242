"""``volumes``: structure volumes as a segmentation tool reports them, the classical reference.

Every imaging paper compares a learned representation with the volumes FreeSurfer (or FSL,
SynthSeg...) measures: hippocampus, ventricles, grey and white matter, CSF and intracranial
volume. The synthetic generator writes them per scan to ``derivatives/synth/volumes.tsv``, in
ml and with a realistic test-retest measurement error (no latents: what a tool would report),
so this baseline sits where it does in real studies: above ``random``, below ``oracle``.

Features: the five structures as fractions of intracranial volume, plus ICV itself. Imaging
papers normalise by ICV because head size varies by about 10 % between people (and with sex)
and scales every structure with it; a raw hippocampal volume mostly measures head size, its
fraction of ICV measures atrophy. ICV stays as a feature since head size carries information
of its own (sex, and the cohort effects a linear head can use); the residual method (regressing
each structure on ICV) would fit on all subjects, which is the head's job on training subjects.

The table is read through the ``features`` encoder's reader, so it gets the same checks. A real
BIDS cohort has no such table: evaluate your own tool's output with
``bench run --encoder features --features your_freesurfer_table.tsv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.encoders import Encoder, EncoderCard
from bench.encoders.features import read_features
from bench.errors import MribenchError

#: Where the synthetic generator writes the volumes, under the cohort's root.
VOLUMES_FILE = Path("derivatives") / "synth" / "volumes.tsv"
#: Structures normalised by ICV, then ICV (the table's columns, in ml).
STRUCTURES = ("hippocampus_ml", "ventricles_ml", "gm_ml", "wm_ml", "csf_ml")
ICV = "icv_ml"


class Volumes(Encoder):
    def __init__(self):
        self.card = EncoderCard(
            name="volumes", architecture="structure volumes / ICV + ICV (segmentation tool output)",
            n_parameters=0, embed_dim=len(STRUCTURES) + 1, input_space="cpu-small", ssl_method="none",
            reference="ICV-normalised volumes, as FreeSurfer's aseg reports them (Fischl 2012, NeuroImage 62)")

    def embed(self, volumes: torch.Tensor) -> torch.Tensor:
        raise MribenchError("the volumes baseline reads derivatives/synth/volumes.tsv, not voxels")

    def embed_rows(self, rows: pd.DataFrame, cohort) -> np.ndarray:
        table = read_features(volumes_path(cohort))
        missing = [c for c in (*STRUCTURES, ICV) if c not in table.columns]
        if missing:
            raise MribenchError(f"{table.path}: no column(s) {', '.join(missing)}; the volumes baseline needs "
                                f"{', '.join((*STRUCTURES, ICV))}")
        bad = np.flatnonzero(table.values[:, table.columns.index(ICV)] <= 0)
        if len(bad):
            raise MribenchError(f"{table.path}: {ICV} is not positive for {', '.join(table.keys[bad[0]])}")
        ml = table.lookup(rows)
        icv = ml[:, table.columns.index(ICV)]
        parts = [ml[:, table.columns.index(c)] / icv for c in STRUCTURES]
        return np.column_stack([*parts, icv]).astype(np.float32)


def volumes_path(cohort) -> Path:
    """The cohort's volumes table; a cohort without one (real data) is a one-line error."""
    root = getattr(cohort, "root", None)
    path = Path(root) / VOLUMES_FILE if root is not None else None
    if path is None or not path.is_file():
        raise MribenchError(f"cohort {cohort.name} has no {VOLUMES_FILE.as_posix()} (only the synthetic generator "
                            "writes it); for a real cohort evaluate your segmentation tool's table: "
                            "bench run --encoder features --features your_freesurfer_table.tsv")
    return path
