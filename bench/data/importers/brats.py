"""BraTS: multi-institutional pre-operative glioma scans with expert tumour labels.

Layout (BraTS 2021 training data; BraTS 2020 uses ``BraTS20_Training_001`` the same way)::

    ROOT/BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz
    ROOT/BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t1n,t1c,t2w,t2f,seg}.nii.gz   (BraTS 2023)

Clinical data: only BraTS 2017-2020 give any, in ``survival_info.csv`` with ``Brats20ID``
(``BraTS18ID`` / ``Brats17ID`` earlier), ``Age``, ``Survival_days`` and ``Extent_of_Resection``;
``name_mapping.csv`` adds ``Grade`` (HGG / LGG). Names follow the BraTS 2020 release.

Decisions (each dropped item is counted with its reason):

* Sex is never given and stays empty; age only where survival_info.csv lists the patient.
  The site is ``unknown``: BraTS does not say which institution a case came from.
* ``Survival_days`` is overall survival of deceased patients (event 1); an entry such as
  ``ALIVE (361 days later)`` is censored at that day (event 0); anything else stays empty.
* Labels 1 (necrotic core) and 4 (enhancing; 3 in BraTS 2023) become core (2), label 2 (oedema)
  becomes 1.
  Cases without ``_seg`` (validation data) have no label map.
* ``split_id`` (what the split rule hashes) is the BraTS 2021 id: ``BraTS2021_00495`` as named, a 2023
  ``BraTS-GLI-00495-000`` mapped to it; other cases keep their own name.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.importers.common import (DAYS_PER_MONTH, ImportFailed, ImportReport, find_table, is_nifti, nifti_stem,
                                         pick_column, read_table, release_dirs, to_float)
from bench.data.importers.tumour import glioma_split_id, subject_rows

CASE = re.compile(r"^(BraTS(?:20)?\d{0,2}_(?:Training_|Validation_)?\d+|BraTS-[A-Z]+-\d{5}-\d{3})$",
                  re.IGNORECASE)
#: file suffixes of BraTS 2017-2021 (t1, t1ce, t2, flair) and BraTS 2023 (t1n, t1c, t2w, t2f)
SEQUENCES = {"t1": "T1w", "t1ce": "T1ce", "t2": "T2w", "flair": "FLAIR",
             "t1n": "T1w", "t1c": "T1ce", "t2w": "T2w", "t2f": "FLAIR"}
ALIVE = re.compile(r"alive\D*(\d+)", re.IGNORECASE)


def participant_id(case: str) -> str:
    """``BraTS2021_00000`` -> ``sub-BraTS202100000`` (BIDS labels are alphanumeric)."""
    return "sub-" + re.sub(r"[^A-Za-z0-9]", "", case)


def survival(value) -> tuple[float, float]:
    """(months, event) from Survival_days; censored for 'ALIVE (N days later)'; NaNs if unknown."""
    days = to_float(value)
    if not np.isnan(days):
        return days / DAYS_PER_MONTH, 1.0
    m = ALIVE.search(str(value))
    if m:
        return float(m.group(1)) / DAYS_PER_MONTH, 0.0
    return np.nan, np.nan


def _clinical(root: Path, clinical: str | None, report: ImportReport) -> pd.DataFrame:
    path = find_table(root, clinical, ("survival_info.csv", "survival_data.csv", "*survival*.csv"),
                      "BraTS survival table", required=False)
    cols = ["age", "survival_months", "event", "extent_of_resection", "grade"]
    if path is None:
        report.note("no survival_info.csv (BraTS 2021 has none): age, survival and event left empty")
        return pd.DataFrame(columns=cols)
    report.source("clinical", path)
    t = read_table(path)
    id_col = pick_column(t, ("Brats20ID", "BraTS_2020_subject_ID", "BraTS18ID", "Brats17ID", "BraTS21ID", "ID"))
    if id_col is None:
        raise ImportFailed(f"{path}: no case id column (Brats20ID, BraTS18ID, ...)")
    rows = {}
    for r in t.to_dict("records"):
        case = str(r[id_col]).strip()
        if case in rows:
            report.drop("clinical row", "duplicate case id in the survival table; kept the first",
                        subject=participant_id(case))
            continue
        months, event = survival(r.get("Survival_days", r.get("Survival", np.nan)))
        rows[case] = {"age": to_float(r.get("Age")), "survival_months": months, "event": event,
                      "extent_of_resection": r.get("Extent_of_Resection", np.nan)}
    out = pd.DataFrame.from_dict(rows, orient="index", columns=cols[:4])
    mapping = find_table(path.parent, None, ("name_mapping.csv",), "name mapping", required=False)
    if mapping is not None:
        m = read_table(mapping)
        mid = pick_column(m, ("BraTS_2020_subject_ID", "BraTS_2019_subject_ID"))
        if mid and "Grade" in m.columns:
            report.source("name_mapping", mapping)
            out = out.join(m.set_index(mid)["Grade"].rename("grade"), how="outer")
    return out


def import_brats(root: Path, clinical: str | None, report: ImportReport, *, out: Path, **_: object) -> list[dict]:
    """Cohort rows for a BraTS release (see the module docstring for every decision)."""
    info = _clinical(root, clinical, report)
    rows: list[dict] = []
    cases = [d for d in release_dirs(root) if CASE.match(d.name)]
    for d in cases:
        case, sub = d.name, participant_id(d.name)
        files, seg = {}, None
        for f in sorted(p for p in d.iterdir() if p.is_file() and is_nifti(p)):
            key = nifti_stem(f)[len(case) + 1:].lower() if nifti_stem(f).startswith(case) else ""
            if key == "seg":
                seg = f
            elif key in SEQUENCES:
                files[SEQUENCES[key]] = f
            else:
                report.drop("scan", "file is not <case>_{t1,t1ce,t2,flair,seg}.nii.gz (or 2023's t1n, t1c, "
                            "t2w, t2f)", subject=sub, file=f)
        if not files:
            report.drop("subject", "case folder holds no t1 / t1ce / t2 / flair image", subject=sub, file=d)
            continue
        c = info.loc[case] if case in info.index else None
        if c is None and len(info):
            report.note("case(s) not in the survival table (age, survival left empty)")
        fields = {"split_id": glioma_split_id(case) or case,
                  "age": c["age"] if c is not None else np.nan, "sex": np.nan, "site": "unknown",
                  "survival_months": c["survival_months"] if c is not None else np.nan,
                  "event": c["event"] if c is not None else np.nan,
                  "extent_of_resection": c["extent_of_resection"] if c is not None else np.nan,
                  "grade": c["grade"] if c is not None and "grade" in c.index else np.nan}
        rows += subject_rows(sub, files, seg, out, report, fields)
    listed = {d.name for d in cases}
    for case in info.index:
        if case not in listed and pd.notna(info.at[case, "survival_months"]):
            report.drop("clinical row", "case in the survival table without a case folder",
                        subject=participant_id(str(case)))
    return rows
