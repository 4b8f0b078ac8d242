"""ADNI: NIfTI images as the LONI IDA archive delivers them, plus the ADNIMERGE clinical table.

Layout (IDA "NIfTI" download, one folder per subject, series description, acquisition date and
image id)::

    ROOT/ADNI/002_S_0295/MPRAGE/2006-04-18_08_20_30.0/I13722/
        ADNI_002_S_0295_MR_MPRAGE_br_raw_20060418193713091_1_S13408_I13722.nii

``ADNIMERGE.csv`` (ADNI's merged table) gives one row per visit with the columns used here:
``RID, PTID, SITE, VISCODE, EXAMDATE, DX_bl, AGE, PTGENDER, DX, M`` (``Month``, ``Month_bl``,
``Years_bl``, ``IMAGEUID`` where present). Column names and the layout follow the ADNIMERGE data
dictionary and the IDA download structure; ``DX`` is ``CN`` / ``MCI`` / ``Dementia`` in current
releases and ``NL`` / ``MCI`` / ``Dementia`` / ``NL to MCI`` ... in older ones.

Decisions (each dropped item is counted with its reason):

* A scan is matched to the visit whose ``IMAGEUID`` is its image id, else to the visit of the same
  subject whose ``EXAMDATE`` is nearest its acquisition date, within ``window_days``.
  A scan no visit explains is dropped; a visit without a scan is kept as clinical follow-up.
* ``months_from_baseline`` is the nominal visit month (``M``, or the number in ``VISCODE``,
  ``bl`` = 0), as ClinicaDL labels sMCI / pMCI: the month-36 visit counts inside a 36-month
  horizon even when it took place at month 36.4.
* ``diagnosis``: CN (CN, NL), MCI, AD (Dementia, AD); a transition label (``MCI to Dementia``)
  gives its end state. Empty ``DX`` stays empty.
* ``conversion_month``: first visit diagnosed AD after a visit diagnosed CN or MCI, from all
  visits (with or without a scan); ``followup_months``: last visit with a diagnosis.
* Duplicate (PTID, VISCODE) rows: the first is kept. Repeat scans of one sequence at one visit
  (e.g. ``MPRAGE`` and ``MPRAGE_Repeat``): the lowest image id is the table's scan, written as it
  always was; the others are kept as runs of the same session (``run`` 02, 03... by image id:
  ``Cohort.repeats``, for test-retest), with the visit's clinical values and their own image id,
  description and scanner. The report says "kept N repeat scan(s) as runs".
* ``age``: baseline ``AGE`` plus the time since the baseline exam (``Years_bl`` or dates);
  ``site``: the site code of ``PTID`` (``002`` of ``002_S_0295``; ``SITE`` holds the same number).
* ``split_id`` (what the split rule ``splits/adni/ad.rule.yaml`` hashes) is the ``PTID``.
* Volumes: where ADNIMERGE has the FreeSurfer columns ``Hippocampus, Ventricles, WholeBrain,
  Entorhinal, Fusiform, MidTemp, ICV`` (mm^3), each scan gets those of the visit it was matched to,
  as ``adnimerge_hippocampus`` ... ``adnimerge_icv`` (the ``adnimerge_volumes`` encoder reads them);
  an empty value stays empty and the scanned visits lacking one are counted.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.importers.common import (DAYS_PER_YEAR, ImportReport, find_table, release_niftis,
                                         need_columns, norm_sex, pick_column, read_table, run_label,
                                         scanner_from_sidecar, sequence_of, to_float)

PTID = re.compile(r"(\d{3}_S_\d{4})")
IMAGE_ID = re.compile(r"_I(\d+)(?:\D|$)")
DATE_DIR = re.compile(r"^(\d{4}-\d{2}-\d{2})_\d{2}_\d{2}_\d{2}")
VISCODE_MONTH = re.compile(r"^m(\d+)$", re.IGNORECASE)
#: ADNIMERGE's per-visit FreeSurfer volumes (mm^3), ICV last (it normalises the others).
ADNIMERGE_VOLUMES = ("Hippocampus", "Ventricles", "WholeBrain", "Entorhinal", "Fusiform", "MidTemp", "ICV")
_DX = {"cn": "CN", "nl": "CN", "mci": "MCI", "dementia": "AD", "ad": "AD"}


def participant_id(ptid: str) -> str:
    """``002_S_0295`` -> ``sub-ADNI002S0295`` (Clinica's ADNI-to-BIDS convention)."""
    return "sub-ADNI" + ptid.replace("_", "")


def volume_column(name: str) -> str:
    """The cohort column of an ADNIMERGE volume: ``ICV`` -> ``adnimerge_icv``."""
    return "adnimerge_" + name.lower()


def _volumes(visit: pd.Series) -> dict[str, float]:
    """The ADNIMERGE volumes of a visit, under their cohort column names (only those ADNIMERGE has)."""
    return {volume_column(v): to_float(visit[v]) for v in ADNIMERGE_VOLUMES if v in visit.index}


def _note_missing_volumes(rows: list[dict], report: ImportReport) -> None:
    """Count the scanned visits whose volumes are incomplete: adnimerge_volumes stops at them."""
    columns = [volume_column(v) for v in ADNIMERGE_VOLUMES]
    if rows and all(c in rows[0] for c in columns):
        lacking = {(r["participant_id"], r["session_id"]) for r in rows if any(np.isnan(r[c]) for c in columns)}
        report.note("scanned visit(s) with an empty ADNIMERGE volume (adnimerge_volumes cannot embed them)",
                    len(lacking))


def diagnosis(dx) -> str | float:
    """ADNIMERGE DX -> CN / MCI / AD; a transition ('MCI to Dementia') gives its end state."""
    if dx is None or (isinstance(dx, float) and np.isnan(dx)):
        return np.nan
    text = str(dx).strip()
    if " to " in text.lower():
        text = re.split(r"\s+to\s+", text, flags=re.IGNORECASE)[-1]
    return _DX.get(text.strip().lower(), np.nan)


def visit_month(row: pd.Series, month_col: str | None) -> float:
    code = str(row["VISCODE"]).strip().lower()
    if code == "bl":
        return 0.0
    m = VISCODE_MONTH.match(code)
    if m:
        return float(m.group(1))
    return to_float(row[month_col]) if month_col else np.nan


def _visits(table: pd.DataFrame, path: Path, report: ImportReport) -> pd.DataFrame:
    need_columns(table, ["PTID", "VISCODE", "EXAMDATE", "AGE", "PTGENDER", "DX"], path)
    t = table.copy()
    t["PTID"] = t["PTID"].astype(str).str.strip()
    month_col = pick_column(t, ("M", "Month"))
    t["month"] = [visit_month(r, month_col) for _, r in t.iterrows()]
    for r in t[t["month"].isna()].itertuples():
        report.drop("visit", "VISCODE is not bl / mNN and no month column gives its month",
                    subject=participant_id(r.PTID), detail=str(r.VISCODE))
    t = t[t["month"].notna()]
    dup = t.duplicated(["PTID", "VISCODE"], keep="first")
    for r in t[dup].itertuples():
        report.drop("visit", "duplicate (PTID, VISCODE) row in ADNIMERGE; kept the first",
                    subject=participant_id(r.PTID), session=str(r.VISCODE))
    t = t[~dup].copy()
    t["date"] = pd.to_datetime(t["EXAMDATE"], errors="coerce")
    t["dx"] = t["DX"].map(diagnosis)
    unknown = t["DX"].notna() & t["dx"].isna()
    report.note("visit(s) with a DX label that is not CN/MCI/Dementia (diagnosis left empty)", int(unknown.sum()))
    report.note("visit(s) without a diagnosis in ADNIMERGE (diagnosis left empty)", int(t["DX"].isna().sum()))
    return t.sort_values(["PTID", "month"]).reset_index(drop=True)


def _subject_info(visits: pd.DataFrame) -> pd.DataFrame:
    """Per PTID: baseline date and age, sex, site, conversion and follow-up months."""
    rows = {}
    for ptid, v in visits.groupby("PTID", sort=True):
        bl = v.iloc[0]
        known = v[v["dx"].notna()]
        conv = np.nan
        seen_non_ad = False
        for r in known.itertuples():
            if r.dx == "AD" and seen_non_ad:
                conv = float(r.month)
                break
            seen_non_ad |= r.dx in ("CN", "MCI")
        site = ptid.split("_")[0]  # the site code, zero-padded as in PTID (ADNIMERGE's SITE drops the zeros)
        ages = v["AGE"].map(to_float).dropna()
        sexes = v["PTGENDER"].map(norm_sex).dropna()
        rows[ptid] = {"bl_date": bl["date"], "bl_age": ages.iloc[0] if len(ages) else np.nan,
                      "sex": sexes.iloc[0] if len(sexes) else np.nan, "site": site,
                      "conversion_month": conv,
                      "followup_months": float(known["month"].max()) if len(known) else np.nan}
    return pd.DataFrame.from_dict(rows, orient="index")


def _scans(root: Path, report: ImportReport) -> pd.DataFrame:
    """Every NIfTI under ``root`` with PTID, image id, acquisition date, description and sequence."""
    rows = []
    for f in release_niftis(root):
        parts = f.relative_to(root).parts
        m = PTID.search(f.name) or next((PTID.fullmatch(p) for p in parts if PTID.fullmatch(p)), None)
        if m is None:
            report.drop("scan", "no ADNI subject id (NNN_S_NNNN) in its path", file=f)
            continue
        ptid = m.group(1)
        date = next((DATE_DIR.match(p).group(1) for p in parts if DATE_DIR.match(p)), None)
        image = IMAGE_ID.search(f.name)
        try:
            desc = parts[parts.index(ptid) + 1]
        except (ValueError, IndexError):
            desc = re.sub(r"^ADNI_\d{3}_S_\d{4}_MR_|_br_raw.*$", "", f.name)
        seq = sequence_of(desc)
        if seq is None:
            report.drop("scan", "series is not a T1w / T2w / FLAIR / PD image", subject=participant_id(ptid),
                        file=f, detail=desc)
            continue
        rows.append({"PTID": ptid, "path": f, "date": pd.to_datetime(date, errors="coerce"),
                     "image_id": f"I{image.group(1)}" if image else np.nan, "description": desc, "sequence": seq})
    return pd.DataFrame(rows, columns=["PTID", "path", "date", "image_id", "description", "sequence"])


def _match(scan: pd.Series, visits: pd.DataFrame, by_image: dict, window_days: float) -> tuple[int | None, str]:
    """Index of the visit a scan belongs to, or None with the reason."""
    if isinstance(scan["image_id"], str) and scan["image_id"] in by_image:
        return by_image[scan["image_id"]], ""
    if pd.isna(scan["date"]):
        return None, "no acquisition date folder (YYYY-MM-DD_hh_mm_ss.s) and no IMAGEUID match"
    dated = visits[visits["date"].notna()]
    if dated.empty:
        return None, f"no ADNIMERGE visit within {window_days:g} days of the scan date"
    gap = (dated["date"] - scan["date"]).abs().dt.days
    best = gap.idxmin()
    if gap[best] > window_days:
        return None, f"no ADNIMERGE visit within {window_days:g} days of the scan date"
    return int(best), ""


def _visits_by_image(v: pd.DataFrame, image_col: str | None) -> dict[str, int]:
    """A subject's visits by the image id ADNIMERGE gives them (``I<uid>``)."""
    by_image = {}
    if image_col:
        for i, uid in v[image_col].items():
            if pd.notna(uid) and str(uid).strip():
                by_image[f"I{int(to_float(uid))}" if not np.isnan(to_float(uid)) else str(uid)] = i
    return by_image


def _row(sub: str, session: str, seq: str, s, visit, info, years_col: str | None) -> dict:
    """The cohort row of scan ``s`` kept at ``visit``: its age from the baseline age and the years since."""
    if years_col and not np.isnan(to_float(visit[years_col])):
        since = to_float(visit[years_col])
    elif pd.notna(visit["date"]) and pd.notna(info["bl_date"]):
        since = (visit["date"] - info["bl_date"]).days / DAYS_PER_YEAR
    else:
        since = visit["month"] / 12.0
    return {
        "participant_id": sub, "session_id": session, "sequence": seq, "path": str(s["path"]),
        "months_from_baseline": float(visit["month"]), "age": info["bl_age"] + since,
        "sex": info["sex"], "site": info["site"], "population": "ad", "diagnosis": visit["dx"],
        "conversion_month": info["conversion_month"], "followup_months": info["followup_months"],
        "visit_code": str(visit["VISCODE"]).strip(), "image_id": s["image_id"],
        "description": s["description"], "scanner": scanner_from_sidecar(Path(s["path"])), **_volumes(visit),
    }


def _visit_rows(ptid: str, seq: str, cands: list, visit: pd.Series, info: pd.Series, years_col: str | None,
                report: ImportReport) -> list[dict]:
    """The rows of a visit's scans of one sequence: the lowest image id as the table's scan, any
    other as a run of the same session (a same-visit rescan, kept for test-retest)."""
    cands = sorted(cands, key=lambda s: (int(s["image_id"][1:]) if isinstance(s["image_id"], str)
                                         else 10 ** 12, str(s["path"])))
    sub, session = participant_id(ptid), f"ses-M{int(visit['month']):03d}"
    rows = [{**_row(sub, session, seq, cands[0], visit, info, years_col), "split_id": ptid}]
    for order, extra in enumerate(cands[1:], start=1):
        report.keep_repeat(f"repeat {seq} at the same visit (the lowest image id is the table's scan)")
        rows.append({**_row(sub, session, seq, extra, visit, info, years_col), "split_id": ptid,
                     "run": run_label(order)})
    return rows


def import_adni(root: Path, clinical: str | None, report: ImportReport, *, window_days: float = 90,
                **_: object) -> list[dict]:
    """Cohort rows for an ADNI download (see the module docstring for every decision)."""
    path = find_table(root, clinical, ("ADNIMERGE*.csv",), "ADNIMERGE table")
    report.source("clinical", path)
    visits = _visits(read_table(path), path, report)
    subjects = _subject_info(visits)
    image_col = pick_column(visits, ("IMAGEUID",))
    scans = _scans(root, report)
    rows: list[dict] = []
    used_visits: set[int] = set()
    years_col = pick_column(visits, ("Years_bl",))
    for ptid, group in scans.groupby("PTID", sort=True):
        sub = participant_id(ptid)
        v = visits[visits["PTID"] == ptid]
        if v.empty:
            for s in group.itertuples():
                report.drop("scan", "subject not in ADNIMERGE", subject=sub, file=s.path)
            continue
        by_image = _visits_by_image(v, image_col)
        matched: dict[tuple[int, str], list] = {}
        for _, s in group.iterrows():
            idx, why = _match(s, v, by_image, window_days)
            if idx is None:
                report.drop("scan", why, subject=sub, file=s["path"], detail=str(s["date"].date())
                            if pd.notna(s["date"]) else "")
                continue
            matched.setdefault((idx, s["sequence"]), []).append(s)
        info = subjects.loc[ptid]
        for (idx, seq), cands in sorted(matched.items(), key=lambda kv: (visits.at[kv[0][0], "month"], kv[0][1])):
            used_visits.add(idx)
            rows += _visit_rows(ptid, seq, cands, visits.loc[idx], info, years_col, report)
    _note_missing_volumes(rows, report)
    no_scan = visits.index.difference(sorted(used_visits))
    report.note("ADNIMERGE visit(s) without a scan (kept for diagnosis follow-up and conversion)", len(no_scan))
    scanned = set(scans["PTID"])
    report.note("ADNIMERGE subject(s) with no scan in the download", int((~subjects.index.isin(scanned)).sum()))
    return rows
