"""UCSF-PDGM: pre-operative diffuse glioma MRI with molecular markers and survival.

Layout (the TCIA NIfTI release)::

    ROOT/UCSF-PDGM-v3/UCSF-PDGM-0004_nifti/UCSF-PDGM-0004_{T1,T1c,T2,FLAIR,tumor_segmentation}.nii.gz

plus other series (``_DWI``, ``_ADC``, ``_SWI``, ``_brain_segmentation``...), not used here.
Metadata: ``UCSF-PDGM-metadata_v2.csv`` (or later versions) with ``ID`` (``UCSF-PDGM-004``:
three digits where the folders have four), ``Sex``, ``Age at MRI``, ``WHO CNS Grade``,
``Final pathologic diagnosis (WHO 2021)``, ``MGMT status``, ``1p/19q``, ``IDH``, ``OS``
(days) and ``1-dead 0-alive``. Names follow the TCIA release.

Decisions (each dropped item is counted with its reason):

* IDs are matched by their number, so ``UCSF-PDGM-004`` is the folder ``UCSF-PDGM-0004``.
* ``marker`` is IDH: ``wildtype`` -> 0; ``mutated (NOS)``, ``IDH1 p.R132H``, other IDH1/IDH2
  variants -> 1; anything else empty. ``mgmt`` (positive 1, negative 0) and ``codeletion_1p19q``
  (co-deletion or relative co-deletion 1, intact 0) likewise; ``who_grade`` as given.
* ``survival_months`` = ``OS`` / 30.4375, ``event`` = ``1-dead 0-alive``; empty stays empty.
* Tumour labels follow BraTS (1 necrotic core, 2 oedema, 4 enhancing) and are converted.
  The site is ``UCSF`` (a single centre).
* ``split_id`` (what the split rule hashes) is the patient's ``BraTS21 ID``, shared with the BraTS rule,
  so a patient in both releases falls in one split; ``UCSF-PDGM-NNNN`` without one.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.importers.common import (DAYS_PER_MONTH, ImportReport, find_table, is_nifti, need_columns,
                                         nifti_stem, norm_sex, read_table, release_dirs, to_float)
from bench.data.importers.tumour import glioma_split_id, subject_rows

CASE_DIR = re.compile(r"^UCSF-PDGM-(\d+)(?:_nifti)?$", re.IGNORECASE)
NUMBER = re.compile(r"UCSF-PDGM-(\d+)", re.IGNORECASE)
SEQUENCES = {"t1": "T1w", "t1c": "T1ce", "t2": "T2w", "flair": "FLAIR"}
SEG = "tumor_segmentation"


def participant_id(number: int) -> str:
    return f"sub-UCSFPDGM{number:04d}"


def idh(value) -> float:
    v = str(value).strip().lower()
    if v in ("wildtype", "wild-type", "wild type", "negative"):
        return 0.0
    if v.startswith("mutant") or v.startswith("mutated") or re.match(r"idh[12]", v) or v == "positive":
        return 1.0
    return np.nan


def mgmt(value) -> float:
    return {"positive": 1.0, "negative": 0.0}.get(str(value).strip().lower(), np.nan)


def codeletion(value) -> float:
    v = str(value).strip().lower()
    return 1.0 if "co-deletion" in v or "codeletion" in v else 0.0 if v == "intact" else np.nan


def _metadata(root: Path, clinical: str | None, report: ImportReport) -> pd.DataFrame:
    path = find_table(root, clinical, ("UCSF-PDGM-metadata*.csv", "UCSF-PDGM*metadata*.csv",
                                       "UCSF-PDGM-metadata*.xlsx"), "UCSF-PDGM metadata table")
    report.source("clinical", path)
    t = read_table(path)
    need_columns(t, ["ID"], path)
    rows = {}
    for r in t.to_dict("records"):
        m = NUMBER.search(str(r["ID"]))
        if m is None:
            report.drop("clinical row", "ID is not UCSF-PDGM-<number>", detail=str(r["ID"]))
            continue
        n = int(m.group(1))
        if n in rows:
            report.drop("clinical row", "duplicate ID in the metadata; kept the first", subject=participant_id(n))
            continue
        age_col = next((c for c in ("Age at MRI", "Age") if c in r), None)
        rows[n] = {"age": to_float(r.get(age_col)) if age_col else np.nan, "sex": norm_sex(r.get("Sex")),
                   "marker": idh(r.get("IDH")), "mgmt": mgmt(r.get("MGMT status")),
                   "codeletion_1p19q": codeletion(r.get("1p/19q")), "who_grade": to_float(r.get("WHO CNS Grade")),
                   "survival_months": to_float(r.get("OS")) / DAYS_PER_MONTH,
                   "event": to_float(r.get("1-dead 0-alive")),
                   "pathology": r.get("Final pathologic diagnosis (WHO 2021)", np.nan),
                   "brats21_id": r.get("BraTS21 ID", np.nan)}
    out = pd.DataFrame.from_dict(rows, orient="index")
    if len(out):
        unknown = out["marker"].isna().sum()
        report.note("patient(s) with an IDH status that is neither wildtype nor a mutation (marker left empty)",
                    int(unknown))
    return out


def import_ucsf_pdgm(root: Path, clinical: str | None, report: ImportReport, *, out: Path,
                     **_: object) -> list[dict]:
    """Cohort rows for UCSF-PDGM (see the module docstring for every decision)."""
    meta = _metadata(root, clinical, report)
    rows: list[dict] = []
    seen: set[int] = set()
    for d in (p for p in release_dirs(root) if CASE_DIR.match(p.name)):
        n = int(CASE_DIR.match(d.name).group(1))
        sub = participant_id(n)
        if n in seen:
            report.drop("subject", "second folder for the same patient number", subject=sub, file=d)
            continue
        files, seg = {}, None
        for f in sorted(p for p in d.iterdir() if p.is_file() and is_nifti(p)):
            key = nifti_stem(f).split("_", 1)[1].lower() if "_" in nifti_stem(f) else ""
            if key == SEG:
                seg = f
            elif key in SEQUENCES:
                files[SEQUENCES[key]] = f
            else:
                report.note("file(s) of series not used here (DWI, ADC, SWI, ASL, brain masks...)")
        if not files:
            report.drop("subject", "folder holds no T1 / T1c / T2 / FLAIR image", subject=sub, file=d)
            continue
        if n not in meta.index:
            for f in files.values():
                report.drop("scan", "patient not in the metadata table", subject=sub, file=f)
            continue
        seen.add(n)
        fields = {k: meta.at[n, k] for k in meta.columns}
        split_id = glioma_split_id(fields.get("brats21_id", "")) or f"UCSF-PDGM-{n:04d}"
        rows += subject_rows(sub, files, seg, out, report, {**fields, "site": "UCSF", "split_id": split_id})
    report.note("metadata patient(s) without an image folder", int((~meta.index.isin(seen)).sum()) if len(meta) else 0)
    return rows
