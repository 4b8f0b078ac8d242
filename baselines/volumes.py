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
cohort has no such table: there the same six quantities come from FreeSurfer / FastSurfer output
under ``derivatives/freesurfer/`` (a SUBJECTS_DIR or an ``asegstats2table`` file; the session
rule and the quantities are in :mod:`bench.data.freesurfer`). Any other table of your own tool:
``bench run --encoder features --features your_freesurfer_table.tsv``.

``adnimerge_volumes``: the volumes ADNIMERGE holds per visit (FreeSurfer's, as ADNI computed them),
which the ADNI importer copies onto each scan of the visit it matched (``adnimerge_*`` columns).
They are other structures than the six above (whole brain, entorhinal, fusiform, middle temporal,
no GM / WM / CSF), hence an encoder and a row of their own, normalised by ICV in the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.data.freesurfer import QUANTITIES, SessionVolumes, find_freesurfer, read_freesurfer
from bench.data.importers.adni import ADNIMERGE_VOLUMES, volume_column
from bench.encoders import Encoder, EncoderCard
from bench.encoders.features import read_features
from bench.errors import MribenchError

#: Where the synthetic generator writes the volumes, under the cohort's root.
VOLUMES_FILE = Path("derivatives") / "synth" / "volumes.tsv"
#: The same measurements of the rescans (``run-02``), each with its own measurement error.
RESCAN_VOLUMES_FILE = Path("derivatives") / "synth" / "rescan_volumes.tsv"
#: Structures normalised by ICV, then ICV (the table's columns, in ml).
STRUCTURES = QUANTITIES[:-1]
ICV = QUANTITIES[-1]


def icv_normalised(ml: np.ndarray, where: list[str]) -> np.ndarray:
    """Columns but the last divided by the last (ICV), then ICV: the features both encoders give.

    ``where[i]`` names row i's file, subject and session for the error a non-positive ICV raises.
    """
    icv = ml[:, -1]
    bad = np.flatnonzero(~(icv > 0))
    if len(bad):
        raise MribenchError(f"{where[bad[0]]}: ICV is {icv[bad[0]]:g}, not a positive volume")
    return np.column_stack([ml[:, :-1] / icv[:, None], icv]).astype(np.float32)


class Volumes(Encoder):
    def __init__(self):
        self.card = EncoderCard(
            name="volumes", architecture="structure volumes / ICV + ICV (segmentation tool output)",
            n_parameters=0, embed_dim=len(STRUCTURES) + 1, input_space="cpu-small", ssl_method="none",
            reference="ICV-normalised volumes, as FreeSurfer's aseg reports them (Fischl 2012, NeuroImage 62)")
        self._sessions: dict[Path, dict[tuple[str, str], SessionVolumes]] = {}  # parsed once per source

    def embed(self, volumes: torch.Tensor) -> torch.Tensor:
        raise MribenchError("the volumes baseline reads derivatives/synth/volumes.tsv or FreeSurfer output, "
                            "not voxels")

    def embed_rows(self, rows: pd.DataFrame, cohort) -> np.ndarray:
        root = getattr(cohort, "root", None)
        source = find_freesurfer(Path(root)) if root is not None else None
        rescans = "run" in rows.columns and rows["run"].notna().any()
        if source is None or (Path(root) / VOLUMES_FILE).is_file():
            # a synthetic cohort's first acquisitions carry no run; its rescans (run-02) have a table of their own
            return self._synthetic(rows, Path(root) / RESCAN_VOLUMES_FILE if rescans else volumes_path(cohort))
        if rescans:
            raise MribenchError(f"{source}: FreeSurfer output is read per session, so a same-session repeat scan "
                                f"(participant {rows['participant_id'].iloc[0]}, session {rows['session_id'].iloc[0]}, "
                                f"run {rows['run'].iloc[0]}) would get its first scan's volumes; segment each run "
                                "and give them with --encoder features instead")
        return self._freesurfer(rows, source)

    def _synthetic(self, rows: pd.DataFrame, path: Path) -> np.ndarray:
        """The generator's table, through the features reader (so it gets the same checks)."""
        table = read_features(path)
        missing = [c for c in QUANTITIES if c not in table.columns]
        if missing:
            raise MribenchError(f"{table.path}: no column(s) {', '.join(missing)}; the volumes baseline needs "
                                f"{', '.join(QUANTITIES)}")
        ml = table.lookup(rows)[:, [table.columns.index(c) for c in QUANTITIES]]
        return icv_normalised(ml.astype(np.float64), [f"{table.path}: participant {r.participant_id}, session "
                                                      f"{r.session_id}" for r in rows.itertuples()])

    def _freesurfer(self, rows: pd.DataFrame, source: Path) -> np.ndarray:
        """The six quantities of each row's session from FreeSurfer output (one-line errors)."""
        if source not in self._sessions:
            self._sessions[source] = read_freesurfer(source)
        sessions = self._sessions[source]
        keys = list(zip(rows["participant_id"].astype(str), rows["session_id"].astype(str)))
        absent = [k for k in keys if k not in sessions]
        if absent:
            more = f" (and {len(absent) - 1} more of the {len(keys)} scans this run needs)" if len(absent) > 1 else ""
            raise MribenchError(f"{source}: no FreeSurfer subject {absent[0][0]}_{absent[0][1]} (or "
                                f"{absent[0][0]}_{absent[0][1]}.long.*) for participant {absent[0][0]}, session "
                                f"{absent[0][1]}{more}")
        ml = np.array([[sessions[k].in_ml(k)[q] for q in QUANTITIES] for k in keys], np.float64)
        return icv_normalised(ml, [f"{sessions[k].source}: participant {k[0]}, session {k[1]}" for k in keys])


class AdnimergeVolumes(Encoder):
    """ADNIMERGE's per-visit volumes (see the module docstring), read from the imported cohort's rows."""

    def __init__(self):
        self.card = EncoderCard(
            name="adnimerge_volumes", architecture="ADNIMERGE volumes / ICV + ICV (ADNI's FreeSurfer output)",
            n_parameters=0, embed_dim=len(ADNIMERGE_VOLUMES), input_space="cpu-small", ssl_method="none",
            reference="ADNIMERGE Hippocampus, Ventricles, WholeBrain, Entorhinal, Fusiform, MidTemp / ICV + ICV")

    def embed(self, volumes: torch.Tensor) -> torch.Tensor:
        raise MribenchError("adnimerge_volumes reads the ADNIMERGE columns of an imported ADNI cohort, not voxels")

    def embed_rows(self, rows: pd.DataFrame, cohort) -> np.ndarray:
        columns = [volume_column(v) for v in ADNIMERGE_VOLUMES]  # ICV last
        lacking = [c for c in columns if c not in rows.columns]
        if lacking:
            raise MribenchError(f"cohort {cohort.name}: no column(s) {', '.join(lacking)}; import ADNI with an "
                                f"ADNIMERGE.csv that has {', '.join(ADNIMERGE_VOLUMES)} (bench data import "
                                "--dataset adni)")
        ml = rows[columns].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64) / 1000  # mm^3 -> ml
        empty = np.argwhere(np.isnan(ml))
        if len(empty):
            i, j = empty[0]
            r = rows.iloc[i]
            raise MribenchError(f"cohort {cohort.name}: ADNIMERGE {ADNIMERGE_VOLUMES[j]} is empty for participant "
                                f"{r['participant_id']}, session {r['session_id']} (visit "
                                f"{r.get('visit_code', '?')}); drop that visit from the manifest or use another "
                                "encoder")
        return icv_normalised(ml, [f"cohort {cohort.name}: participant {r.participant_id}, session {r.session_id}"
                                   for r in rows.itertuples()])


def volumes_path(cohort) -> Path:
    """The cohort's synthetic volumes table; a cohort without one nor FreeSurfer output is a one-line error."""
    root = getattr(cohort, "root", None)
    path = Path(root) / VOLUMES_FILE if root is not None else None
    if path is None or not path.is_file():
        raise MribenchError(f"cohort {cohort.name} has no {VOLUMES_FILE.as_posix()} (only the synthetic generator "
                            "writes it) nor FreeSurfer output (a SUBJECTS_DIR or asegstats.tsv at "
                            "derivatives/freesurfer/); or evaluate your segmentation tool's table: "
                            "bench run --encoder features --features your_freesurfer_table.tsv")
    return path
