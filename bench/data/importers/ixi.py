"""IXI: about 600 healthy adults scanned once at three London hospitals.

Layout (the IXI tarballs, unpacked into one folder or one folder per contrast)::

    ROOT/IXI-T1/IXI002-Guys-0828-T1.nii.gz     ROOT/IXI-T2/IXI002-Guys-0828-T2.nii.gz
    ROOT/IXI-PD/IXI002-Guys-0828-PD.nii.gz     (MRA and DTI files are not used)

Demographics: ``IXI.xls`` (or the same sheet saved as CSV) with ``IXI_ID``,
``SEX_ID (1=m, 2=f)``, ``DOB``, ``STUDY_DATE`` and ``AGE``. Names follow the IXI release; the
hospital is the second field of the file name and the scanners are those IXI lists for each
(Guys: Philips 1.5T, HH: Philips 3T, IOP: GE 1.5T).

Decisions (each dropped item is counted with its reason):

* An ``IXI_ID`` listed more than once: identical rows count once; rows that disagree on age or sex
  leave that value empty (neither row is preferred).
* An empty ``AGE`` is computed from ``DOB`` and ``STUDY_DATE`` when both are given (that is how
  IXI computes it), else stays empty. Scans of subjects missing from the sheet are dropped.
* No diagnosis column: IXI recruited healthy volunteers and states no per-subject diagnosis.
  ``population`` is ``ad``, the schema's ageing / Alzheimer's sub-cohort (here: ageing only).
* A second file of the same contrast for a subject (IXI scanned each subject once): the first in
  file order is the table's scan, written as before; one of another name is kept as a run of the
  session (``run`` 02, 03...: ``Cohort.repeats``; the report says "kept N repeat scan(s) as
  runs"), one of the same name in another folder is a copy, not a rescan, and is dropped.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.importers.common import (DAYS_PER_YEAR, ImportReport, find_table, need_columns, release_niftis,
                                         pick_column, read_table, run_label, to_float)

FILE = re.compile(r"^IXI(\d{3})-([A-Za-z]+)-(\d+)-([A-Za-z0-9]+)(?:-\d+)?\.nii(\.gz)?$")
SEQUENCES = {"T1": "T1w", "T2": "T2w", "PD": "PDw"}
SCANNERS = {"Guys": "Philips 1.5T", "HH": "Philips 3T", "IOP": "GE 1.5T"}


def participant_id(ixi_id: int) -> str:
    return f"sub-IXI{ixi_id:03d}"


def _one(values: pd.Series):
    """The value if all non-empty rows agree, else NaN (conflict) — never one of them at random."""
    v = values.dropna().unique()
    return v[0] if len(v) == 1 else np.nan


def _demographics(path: Path, report: ImportReport) -> pd.DataFrame:
    t = read_table(path)
    need_columns(t, ["IXI_ID"], path)
    sex_col = pick_column(t, ("SEX_ID (1=m, 2=f)", "SEX_ID"))
    t = t.assign(ixi=t["IXI_ID"].map(to_float))
    t = t[t["ixi"].notna()]
    age = t["AGE"].map(to_float) if "AGE" in t.columns else pd.Series(np.nan, index=t.index)
    if {"DOB", "STUDY_DATE"} <= set(t.columns):
        computed = (pd.to_datetime(t["STUDY_DATE"], errors="coerce")
                    - pd.to_datetime(t["DOB"], errors="coerce")).dt.days / DAYS_PER_YEAR
        filled = age.isna() & computed.notna()
        report.note("subject row(s) with AGE computed from DOB and STUDY_DATE", int(filled.sum()))
        age = age.where(~filled, computed)
    sex = t[sex_col].map(lambda v: {"1": "M", "2": "F"}.get(str(v).strip().split(".")[0], np.nan)) \
        if sex_col else pd.Series(np.nan, index=t.index)
    df = pd.DataFrame({"ixi": t["ixi"].astype(int), "age": age.round(2), "sex": sex})
    rows = {}
    for ixi, g in df.groupby("ixi", sort=True):
        if len(g) > 1:
            agree = len(g.drop_duplicates()) == 1
            reason = ("duplicate IXI_ID row, identical to the first" if agree else
                      "duplicate IXI_ID row that disagrees on age or sex; that value is left empty")
            for _ in range(len(g) - 1):
                report.drop("sheet row", reason, subject=participant_id(int(ixi)))
        rows[ixi] = {"age": _one(g["age"]), "sex": _one(g["sex"])}
    return pd.DataFrame.from_dict(rows, orient="index")


def _ixi_files(root: Path, demo: pd.DataFrame, report: ImportReport) -> dict[tuple[int, str], list[Path]]:
    """The release's usable files by (IXI id, contrast), in file order; the others are dropped."""
    files: dict[tuple[int, str], list[Path]] = {}
    for f in release_niftis(root):
        m = FILE.match(f.name)
        if m is None:
            report.drop("scan", "name is not IXI<id>-<hospital>-<n>-<contrast>.nii.gz", file=f)
            continue
        ixi, contrast = int(m.group(1)), m.group(4)
        sub = participant_id(ixi)
        if contrast not in SEQUENCES:
            report.drop("scan", "contrast not used (MRA, DTI)", subject=sub, file=f, detail=contrast)
            continue
        if ixi not in demo.index:
            report.drop("scan", "subject not in the demographics sheet", subject=sub, file=f)
            continue
        same = files.setdefault((ixi, contrast), [])
        if any(g.name == f.name for g in same):
            report.drop("scan", "same file name as another file of the contrast: a copy, not a rescan",
                        subject=sub, file=f)
            continue
        same.append(f)
    return files


def _ixi_row(f: Path, ixi: int, contrast: str, d: pd.Series) -> dict:
    hospital = FILE.match(f.name).group(2)
    return {"participant_id": participant_id(ixi), "session_id": "ses-01", "sequence": SEQUENCES[contrast],
            "path": str(f), "months_from_baseline": 0.0, "age": d["age"], "sex": d["sex"],
            "site": hospital, "scanner": SCANNERS.get(hospital, np.nan), "population": "ad",
            "split_id": f"IXI{ixi:03d}"}


def import_ixi(root: Path, clinical: str | None, report: ImportReport, **_: object) -> list[dict]:
    """Cohort rows for IXI (see the module docstring for every decision)."""
    path = find_table(root, clinical, ("IXI.xls", "IXI.csv", "IXI*.xls", "IXI*.csv", "IXI*.xlsx"),
                      "IXI demographics sheet (IXI.xls)")
    report.source("demographics", path)
    demo = _demographics(path, report)
    rows: list[dict] = []
    files = _ixi_files(root, demo, report)
    for (ixi, contrast), found in sorted(files.items(), key=lambda kv: str(kv[1][0])):
        rows.append(_ixi_row(found[0], ixi, contrast, demo.loc[ixi]))
        for order, f in enumerate(found[1:], start=1):
            report.keep_repeat("second file of the same contrast (the first file is the table's scan)")
            rows.append({**_ixi_row(f, ixi, contrast, demo.loc[ixi]), "run": run_label(order)})
    scanned = {ixi for ixi, _ in files}
    report.note("sheet subject(s) without any scan", int((~demo.index.isin(scanned)).sum()))
    return rows
