"""OASIS-3: BIDS-like MR sessions named by days since study entry, plus the clinical tables.

Layout (the BIDS export of OASIS-3 MR sessions; sessions are labelled by the day counter)::

    ROOT/sub-OAS30001/ses-d0129/anat/sub-OAS30001_ses-d0129_run-01_T1w.nii.gz  (+ .json sidecar)

Clinical data (OASIS-3 data files): ``OASIS3_UDSb4_cdr.csv`` with ``OASISID, days_to_visit,
age at visit, CDRTOT, dx1`` (older exports: ``Subject``, ``cdr``, ``dx1``, ``Age`` and a
``..._d0000`` label instead of ``days_to_visit``), and ``OASIS3_demographics.csv`` with
``OASISID, AgeatEntry, GENDER`` (1 = male, 2 = female). Column names follow those files. Without
the demographics file, sex is read from the BIDS ``participants.tsv`` at the root of the tree
(``participant_id``, ``sex``); the import summary says which file each such column came from.

Decisions (each dropped item is counted with its reason):

* An MR session is matched to the subject's clinical visit nearest in days, within
  ``window_days`` (clinical visits are roughly yearly and not on MR days); a session no visit
  explains is dropped; a clinical visit without an MR session is kept as follow-up.
* ``diagnosis`` from the global CDR: 0 -> CN, 0.5 -> MCI, >= 1 -> AD, except visits whose ``dx1``
  names a non-Alzheimer's cause (vascular, Lewy body, frontotemporal...), left empty.
* ``months_from_baseline`` = days since entry / 30.4375 (entry is day 0 of OASIS-3's counter);
  ``conversion_month`` / ``followup_months`` from all clinical visits, as for ADNI.
* ``age`` = ``AgeatEntry`` + days / 365.25 (else the nearest visit's ``age at visit`` moved by
  the day difference); ``site`` = the scanner in the JSON sidecar (OASIS-3 is one centre
  with several scanners), ``unknown`` without one.
* Extra runs of a sequence in a session: the first (lowest run, as the table always had) is the
  table's scan, written as before; the others are kept as runs of the same session (``run`` 02,
  03... in run order: ``Cohort.repeats``, for test-retest) with the session's values, and the
  scanner of their own sidecar where they have one. The report says "kept N repeat scan(s) as
  runs". A session no clinical visit explains is dropped with all its runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.importers.common import (DAYS_PER_MONTH, DAYS_PER_YEAR, ImportReport, bids_participants,
                                         find_table, release_niftis, need_columns, nifti_stem, norm_sex, pick_column, read_table,
                                         run_label, scanner_from_sidecar, to_float)
from bench.data.bids import parse_bids_name

SUBJECT = re.compile(r"(OAS3\d{4})")
DAY = re.compile(r"(?:ses-|_MR_|_ClinicalData_|_UDSb4_)?d(\d{3,5})$")
NON_AD = re.compile(r"vascular|lewy|dlbd|frontotemporal|ftd|non[\s-]?ad|parkinson|huntington|prion|"
                    r"alcohol|tumor|als\b|hydrocephalus|dementia with", re.IGNORECASE)
SEQUENCES = {"T1w": "T1w", "T2w": "T2w", "FLAIR": "FLAIR"}


def participant_id(oasis_id: str) -> str:
    return f"sub-{oasis_id}"


def cdr_diagnosis(cdr: float, dx1) -> str | float:
    """CN / MCI / AD from the global CDR; empty for a non-Alzheimer's dx1 or a missing CDR."""
    if np.isnan(cdr):
        return np.nan
    if isinstance(dx1, str) and NON_AD.search(dx1) and cdr > 0:
        return np.nan
    return "CN" if cdr == 0 else "MCI" if cdr == 0.5 else "AD"


def _clinical(path: Path, report: ImportReport) -> pd.DataFrame:
    t = read_table(path)
    sub_col = pick_column(t, ("OASISID", "Subject"))
    cdr_col = pick_column(t, ("CDRTOT", "cdr", "CDGLOBAL"))
    need_columns(t, [c for c in ("OASISID",) if sub_col is None] + [c for c in ("CDRTOT",) if cdr_col is None], path)
    day_col = pick_column(t, ("days_to_visit",))
    if day_col is not None:
        days = t[day_col].map(to_float)
    else:  # older exports: a label such as OAS30001_ClinicalData_d0000
        label_col = pick_column(t, ("ADRC_ADRCCLINICALDATA ID", "OASIS_session_label", "Date"))
        need_columns(t, ["days_to_visit"] if label_col is None else [], path)
        days = t[label_col].map(lambda s: to_float(DAY.search(str(s)).group(1)) if DAY.search(str(s)) else np.nan)
    dx_col = pick_column(t, ("dx1",))
    age_col = pick_column(t, ("age at visit", "Age", "ageAtEntry"))
    out = pd.DataFrame({
        "subject": t[sub_col].astype(str).str.extract(SUBJECT, expand=False),
        "day": days, "cdr": t[cdr_col].map(to_float),
        "dx1": t[dx_col] if dx_col else np.nan,
        "age": t[age_col].map(to_float) if age_col else np.nan})
    for r in out[out["subject"].isna() | out["day"].isna()].itertuples():
        report.drop("clinical row", "no OASIS-3 subject id or day", detail=str(r.subject))
    out = out[out["subject"].notna() & out["day"].notna()]
    dup = out.duplicated(["subject", "day"], keep="first")
    for r in out[dup].itertuples():
        report.drop("clinical row", "duplicate (subject, day) clinical visit; kept the first",
                    subject=participant_id(r.subject), detail=f"d{int(r.day):04d}")
    out = out[~dup].copy()
    out["dx"] = [cdr_diagnosis(c, d) for c, d in zip(out["cdr"], out["dx1"])]
    report.note("clinical visit(s) without a CDR (diagnosis left empty)", int(out["cdr"].isna().sum()))
    report.note("clinical visit(s) with a non-Alzheimer's dx1 (diagnosis left empty)",
                int((out["cdr"].notna() & out["dx"].isna()).sum()))
    return out.sort_values(["subject", "day"]).reset_index(drop=True)


def _demographics(root: Path, clinical: Path, report: ImportReport) -> pd.DataFrame:
    path = find_table(clinical.parent, None, ("*demographics*.csv",), "demographics", required=False) or \
        find_table(root, None, ("*demographics*.csv",), "demographics", required=False)
    if path is None:
        return _participants(root, report)
    report.source("demographics", path)
    t = read_table(path)
    sub_col = pick_column(t, ("OASISID", "Subject"))
    need_columns(t, ["OASISID"] if sub_col is None else [], path)
    sex_col = pick_column(t, ("GENDER", "M/F", "Sex"))
    age_col = pick_column(t, ("AgeatEntry", "ageAtEntry"))
    if sex_col:
        report.column_source("sex", f"{path.name} ({sex_col})")
    if age_col:
        report.column_source("age", f"{path.name} ({age_col}) + days since entry")
    out = pd.DataFrame({"subject": t[sub_col].astype(str).str.extract(SUBJECT, expand=False),
                        "age_entry": t[age_col].map(to_float) if age_col else np.nan,
                        "sex": t[sex_col].map(_sex) if sex_col else np.nan})
    out = out.dropna(subset=["subject"]).drop_duplicates("subject", keep="first")
    return out.set_index("subject")


def _sex(value) -> str | float:
    """M / F from OASIS-3's GENDER (1 = male, 2 = female) or a spelled-out sex."""
    return {"1": "M", "2": "F"}.get(str(value).strip().split(".")[0], norm_sex(value))


def _participants(root: Path, report: ImportReport) -> pd.DataFrame:
    """Sex from the BIDS ``participants.tsv`` where ``OASIS3_demographics.csv`` is absent.

    Why: a BIDS export of OASIS-3 may ship without the demographics file but state each subject's
    sex there; leaving sex empty on every scan would throw that away. Age stays from the clinical
    visits: participants.tsv's ``age`` does not say at which session it was taken.
    """
    found = bids_participants(root, report)
    sex_col = pick_column(found[0], ("sex", "gender", "M/F")) if found is not None else None
    if found is None or sex_col is None:
        report.note("no OASIS3_demographics.csv and no participants.tsv with a sex column: sex empty, "
                    "age from clinical visits")
        return pd.DataFrame(columns=["age_entry", "sex"])
    table, path = found
    report.column_source("sex", f"{path.name} ({sex_col}); no OASIS3_demographics.csv found")
    report.column_source("age", "the clinical table's age at visit (no age at entry given)")
    out = pd.DataFrame({"subject": table.index.str.extract(SUBJECT, expand=False),
                        "age_entry": np.nan, "sex": table[sex_col].map(_sex).to_numpy()})
    out = out.dropna(subset=["subject"]).drop_duplicates("subject", keep="first")
    return out.set_index("subject")


def _sessions(root: Path, report: ImportReport) -> pd.DataFrame:
    rows = []
    for f in release_niftis(root):
        subject = SUBJECT.search(str(f.relative_to(root)))
        parsed = parse_bids_name(f.name)
        ses = (parsed[0].get("ses") if parsed else None) or next(
            (m.group(1) for p in f.relative_to(root).parts for m in [DAY.search(p)] if m), None)
        day_m = DAY.search(f"d{ses.lstrip('d')}") if ses else None
        if subject is None or day_m is None:
            report.drop("scan", "no OASIS-3 subject (OAS3NNNN) and session day (dNNNN) in its path", file=f)
            continue
        suffix = parsed[1] if parsed else nifti_stem(f).rsplit("_", 1)[-1]
        if suffix not in SEQUENCES:
            report.drop("scan", "not a T1w / T2w / FLAIR image", subject=participant_id(subject.group(1)),
                        file=f, detail=suffix)
            continue
        run = to_float(parsed[0].get("run", 1)) if parsed else 1.0
        rows.append({"subject": subject.group(1), "day": float(day_m.group(1)), "sequence": SEQUENCES[suffix],
                     "run": run if not np.isnan(run) else 1.0, "path": f})
    return pd.DataFrame(rows, columns=["subject", "day", "sequence", "run", "path"])


def _nearest_visit(v: pd.DataFrame, day: float, window_days: float) -> tuple[int | None, str, str]:
    """(index of the subject's clinical visit nearest the MR day, "", "") or (None, why, detail)."""
    if v.empty:
        return None, "subject not in the clinical table", ""
    gap = (v["day"] - day).abs()
    best = gap.idxmin()
    if gap[best] > window_days:
        return (None, f"no clinical visit within {window_days:g} days of the MR session",
                f"nearest {int(gap[best])} days")
    return int(best), "", ""


def _session_row(subject: str, day: float, seq: str, f: Path, v: pd.DataFrame, best: int,
                 demo: pd.DataFrame) -> dict:
    """The cohort row of the session's first scan ``f`` of ``seq``, matched to clinical visit ``best``."""
    known = v[v["dx"].notna()]
    conv, seen_non_ad = np.nan, False
    for r in known.itertuples():
        if r.dx == "AD" and seen_non_ad:
            conv = r.day / DAYS_PER_MONTH
            break
        seen_non_ad |= r.dx in ("CN", "MCI")
    d = demo.loc[subject] if subject in demo.index else None
    if d is not None and not np.isnan(to_float(d["age_entry"])):
        age = to_float(d["age_entry"]) + day / DAYS_PER_YEAR
    elif not np.isnan(v.at[best, "age"]):
        age = v.at[best, "age"] + (day - v.at[best, "day"]) / DAYS_PER_YEAR
    else:
        age = np.nan
    scanner = scanner_from_sidecar(f)
    return {
        "participant_id": participant_id(subject), "split_id": subject, "session_id": f"ses-d{int(day):04d}",
        "sequence": seq, "path": str(f), "months_from_baseline": round(day / DAYS_PER_MONTH, 3), "age": age,
        "sex": d["sex"] if d is not None else np.nan,
        "site": scanner if isinstance(scanner, str) else "unknown", "scanner": scanner,
        "population": "ad", "diagnosis": v.at[best, "dx"], "cdr": v.at[best, "cdr"],
        "clinical_day_gap": int(abs(v.at[best, "day"] - day)), "conversion_month": conv,
        "followup_months": known["day"].max() / DAYS_PER_MONTH if len(known) else np.nan,
    }


def _repeat_rows(first: dict, extras: list[Path], report: ImportReport) -> list[dict]:
    """The session's later runs of the first scan's sequence, kept as runs 02, 03...: the session's
    row with the file's path, and its scanner where its own sidecar names one (same session, same
    scanner otherwise)."""
    rows = []
    for order, f in enumerate(extras, start=1):
        report.keep_repeat(f"extra run of {first['sequence']} in the session (the first run is the table's scan)")
        scanner = scanner_from_sidecar(f)
        own = {"site": scanner, "scanner": scanner} if isinstance(scanner, str) else {}
        rows.append({**first, "path": str(f), **own, "run": run_label(order)})
    return rows


def import_oasis3(root: Path, clinical: str | None, report: ImportReport, *, window_days: float = 180,
                  **_: object) -> list[dict]:
    """Cohort rows for an OASIS-3 download (see the module docstring for every decision)."""
    path = find_table(root, clinical, ("OASIS3_UDSb4_cdr.csv", "*UDSb4*.csv", "*ClinicalData*.csv",
                                       "*clinical*.csv"), "OASIS-3 clinical (CDR) table")
    report.source("clinical", path)
    visits = _clinical(path, report)
    demo = _demographics(root, path, report)
    scans = _sessions(root, report)
    rows: list[dict] = []
    used: set[int] = set()
    for (subject, day, seq), cands in scans.groupby(["subject", "day", "sequence"], sort=True):
        files = [Path(p) for p in cands.sort_values(["run", "path"])["path"]]
        v = visits[visits["subject"] == subject]
        best, why, detail = _nearest_visit(v, day, window_days)
        if best is None:
            for f in files:  # the session's every run goes with its first
                report.drop("scan", why, subject=participant_id(subject), session=f"ses-d{int(day):04d}",
                            file=f, detail=detail)
            continue
        used.add(best)
        first = _session_row(subject, day, seq, files[0], v, best, demo)
        rows += [first] + _repeat_rows(first, files[1:], report)
    report.note("clinical visit(s) without an MR session (kept for follow-up and conversion)",
                len(visits.index.difference(sorted(used))))
    return rows
