"""Rescans: a second T1w acquisition of some sessions (BIDS ``run-02``), for test-retest questions.

A rescan images the very anatomy of its session (same warp, latents and tissue maps, same time
point) on the same site, so what differs from the session's first scan is only what an
acquisition adds: the scanner's texture, bias field, Rician noise and intensity scale (a fresh
draw of :meth:`Renderer.scanner`) and a small residual head position (a rigid transform of the
tissue maps). An encoder, or a segmentation tool, should give nearly the same answer for both.

Which sessions get one and everything about them is drawn from random streams of their own
(``STREAM_RESCAN``, ``STREAM_RESCAN_MEASURE``), added after the generator's others: every file
written before rescans existed keeps its bytes, and a cohort generated without them is upgraded
in place by rendering the rescans alone (``generate.py``).

Files: ``sub-X/ses-Y/anat/sub-X_ses-Y_run-02_T1w.nii.gz`` and its brain mask under
``derivatives/synth``; ``derivatives/synth/rescans.tsv`` (the drawn head positions) and
``derivatives/synth/rescan_volumes.tsv`` (what a segmentation tool reports for each rescan).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from bench.data.synth import effects as fx
from bench.data.synth.latents import STREAM_RESCAN, STREAM_RESCAN_MEASURE, Subject, stream_rng

#: Bumped when what a rescan is changes (its draws, files or tables); recorded in the cohort's
#: ``dataset_description.json`` so a cohort with older rescans has them redone.
RESCANS_VERSION = 1
RESCAN_RUN = "02"
RESCAN_SEQUENCE = "T1w"
RESCANS_TABLE = Path("derivatives") / "synth" / "rescans.tsv"
RESCAN_VOLUMES_TABLE = Path("derivatives") / "synth" / "rescan_volumes.tsv"
#: Where rescan files live (relative to the cohort's root): the stale ones are found this way.
RESCAN_FILE_GLOBS = (f"sub-*/ses-*/anat/*_run-{RESCAN_RUN}_*",
                     f"derivatives/synth/sub-*/ses-*/anat/*_run-{RESCAN_RUN}_*")
Vector3 = tuple[float, float, float]


def rescan_fraction(population: str) -> float:
    """The declared share of a population's sessions that get a rescan (0 for tumour)."""
    return {"healthy": fx.RESCAN_HEALTHY_SUBJECTS, "ad": fx.RESCAN_AD_SESSIONS}.get(population, 0.0)


def _stream_index(subject_index: int, visit_index: int) -> int:
    """The rescan stream's index of a session: the index of its T1w scan in ``STREAM_SCAN``."""
    return subject_index * 1000 + visit_index * 10


def _draw(seed: int, population: str, subject_index: int,
          visit_index: int) -> tuple[np.random.Generator, Vector3, Vector3] | None:
    """The session's rescan draws in their fixed order: selection (one uniform, always drawn), then
    the head position (rounded to what rescans.tsv records, so the table is what was rendered); the
    generator is returned positioned for the scanner's draws. None when not selected."""
    fraction = rescan_fraction(population)
    rng = stream_rng(seed, STREAM_RESCAN, _stream_index(subject_index, visit_index))
    if not rng.random() < fraction:
        return None
    translation = tuple(round(float(v), 3) for v in rng.normal(0.0, fx.RESCAN_TRANSLATION_SD_MM, 3))
    rotation = tuple(round(float(v), 3) for v in rng.normal(0.0, fx.RESCAN_ROTATION_SD_DEG, 3))
    return rng, translation, rotation  # type: ignore[return-value]


def is_rescanned(seed: int, population: str, subject_index: int, visit_index: int) -> bool:
    """Whether a session gets a rescan: the selection alone, without rendering anything."""
    return _draw(seed, population, subject_index, visit_index) is not None


@dataclass(frozen=True)
class RescanPlan:
    """One rescan to render: its session, site and head position."""

    seed: int
    subject_index: int
    visit_index: int
    participant_id: str
    session_id: str
    population: str
    site: str
    translation_mm: Vector3
    rotation_deg: Vector3

    def acquisition_rng(self) -> np.random.Generator:
        """A fresh generator for the scanner's draws (replayed from the stream, so rendering one
        rescan twice, or in another process, gives the same bytes)."""
        drawn = _draw(self.seed, self.population, self.subject_index, self.visit_index)
        assert drawn is not None, "a planned rescan is selected by construction"
        return drawn[0]

    @property
    def image_path(self) -> Path:
        sub, ses = self.participant_id, self.session_id
        return Path(sub) / ses / "anat" / f"{sub}_{ses}_run-{RESCAN_RUN}_{RESCAN_SEQUENCE}.nii.gz"

    @property
    def mask_path(self) -> Path:
        sub, ses = self.participant_id, self.session_id
        return (Path("derivatives") / "synth" / sub / ses / "anat"
                / f"{sub}_{ses}_run-{RESCAN_RUN}_desc-brain_mask.nii.gz")


def plan_subject(seed: int, subject: Subject) -> list[RescanPlan]:
    """The rescans of one subject's sessions, in visit order."""
    plans = []
    for vi, visit in enumerate(subject.visits):
        drawn = _draw(seed, subject.population, subject.index, vi)
        if drawn is not None:
            plans.append(RescanPlan(seed, subject.index, vi, subject.participant_id, visit.session_id,
                                    subject.population, subject.site, drawn[1], drawn[2]))
    return plans


def plan_rescans(seed: int, subjects: Iterable[Subject]) -> dict[int, list[RescanPlan]]:
    """Every subject's rescans by subject index (subjects without one are left out)."""
    plans = {s.index: plan_subject(seed, s) for s in subjects}
    return {i: p for i, p in sorted(plans.items()) if p}


def rescans_table(plans: Sequence[RescanPlan]) -> pd.DataFrame:
    """rescans.tsv: one row per rescan, its run and the head position it was rendered with."""
    rows = [{"participant_id": p.participant_id, "session_id": p.session_id, "run": RESCAN_RUN,
             "sequence": RESCAN_SEQUENCE,
             **{f"translation_{a}_mm": v for a, v in zip("xyz", p.translation_mm)},
             **{f"rotation_{a}_deg": v for a, v in zip("xyz", p.rotation_deg)}} for p in plans]
    columns = ["participant_id", "session_id", "run", "sequence", *[f"translation_{a}_mm" for a in "xyz"],
               *[f"rotation_{a}_deg" for a in "xyz"]]
    return pd.DataFrame(rows, columns=columns)


def rescan_volumes(plans: Sequence[RescanPlan], true_volumes: Mapping[tuple[str, str], Mapping[str, float]],
                   site_bias: Mapping[str, Mapping[str, float]], structures: Sequence[str]) -> pd.DataFrame:
    """rescan_volumes.tsv: what the segmentation tool reports for each rescan. The session's true
    volumes (as in ground_truth.tsv), times the site's bias (the one ``volumes.tsv`` has), times a
    measurement error of its own: the columns of volumes.tsv with ``run`` after ``session_id``."""
    rows = []
    for p in plans:
        rng = stream_rng(p.seed, STREAM_RESCAN_MEASURE,
                         int(p.participant_id.split("-")[1]) * 100 + int(p.session_id[5:]))
        truth = true_volumes[(p.participant_id, p.session_id)]
        row = {"participant_id": p.participant_id, "session_id": p.session_id, "run": RESCAN_RUN,
               "sequence": RESCAN_SEQUENCE}
        for k in structures:
            error = float(np.exp(rng.normal(0, fx.MEASUREMENT_CV[k])))
            row[k] = round(float(truth[k]) * float(site_bias[p.site][k]) * error, 2)
        rows.append(row)
    return pd.DataFrame(rows, columns=["participant_id", "session_id", "run", "sequence", *structures])


def write_tables(root: Path, plans: Sequence[RescanPlan], true_volumes: Mapping[tuple[str, str], Mapping[str, float]],
                 site_bias: Mapping[str, Mapping[str, float]], structures: Sequence[str]) -> None:
    """Write rescans.tsv and rescan_volumes.tsv under ``root`` (formatted as volumes.tsv is)."""
    (root / RESCANS_TABLE).parent.mkdir(parents=True, exist_ok=True)
    rescans_table(plans).to_csv(root / RESCANS_TABLE, sep="\t", index=False, lineterminator="\n")
    rescan_volumes(plans, true_volumes, site_bias, structures).to_csv(
        root / RESCAN_VOLUMES_TABLE, sep="\t", index=False, lineterminator="\n")


def description_block(n_rescans: int) -> dict:
    """The ``rescans`` entry of dataset_description.json's ``mribench`` block."""
    return {"version": RESCANS_VERSION, "healthy_subjects": fx.RESCAN_HEALTHY_SUBJECTS,
            "ad_sessions": fx.RESCAN_AD_SESSIONS, "translation_sd_mm": fx.RESCAN_TRANSLATION_SD_MM,
            "rotation_sd_deg": fx.RESCAN_ROTATION_SD_DEG, "n_rescans": n_rescans}


def block_is_current(block: object) -> bool:
    """Whether a recorded ``rescans`` entry was written with the current version and parameters."""
    if not isinstance(block, dict) or not isinstance(block.get("n_rescans"), int):
        return False
    expected = description_block(0)
    return all(block.get(k) == v for k, v in expected.items() if k != "n_rescans")
