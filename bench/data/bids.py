"""Read a BIDS tree (participants.tsv, sub-*/sub-*_sessions.tsv, sub-*/ses-*/anat/*.nii.gz).

Works on the synthetic cohort and on real BIDS layouts. What BIDS leaves open is filled in a
documented order (months: sessions.tsv ``months_from_baseline``, else ``acq_time``, else an
``M<n>`` session label; age: sessions.tsv, else baseline age + months). Files that are not an
anatomical contrast we know are listed in ``Cohort.metadata['skipped_files']``, not hidden.
Anything inconsistent raises :class:`CohortError` naming the subject and the file to fix.

Several runs of one sequence in one session (``..._T1w`` and ``..._run-02_T1w``, or ``run-01`` and
``run-02``): the first (no run entity, else the lowest run number) is the table's row, as it would
be without the others; the later runs go to ``Cohort.repeats``, each with the brain mask of its own
run (``..._run-02_desc-brain_mask.nii.gz``), else the session's.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.bids_cache import ScanTables
from bench.data.cohort import Cohort, checked_numeric, repeat_mask
from bench.errors import CohortError

ANAT_SUFFIXES = ("T1w", "T2w", "FLAIR", "PDw", "T2starw")
_ENTITY = re.compile(r"([a-zA-Z]+)-([a-zA-Z0-9]+)")
_MONTH_LABEL = re.compile(r"^ses-M(\d+)$", re.IGNORECASE)
_SEX = {"f": "F", "female": "F", "m": "M", "male": "M"}
SUBJECT_COLUMNS = ("population", "risk_factor", "conversion_month", "followup_months", "marker",
                   "survival_months", "event", "site", "diagnosis")


def parse_bids_name(name: str) -> tuple[dict[str, str], str] | None:
    """``sub-01_ses-M06_run-1_T1w.nii.gz`` -> ({'sub': '01', 'ses': 'M06', 'run': '1'}, 'T1w')."""
    stem = re.sub(r"\.nii(\.gz)?$", "", name)
    if stem == name:
        return None
    *parts, suffix = stem.split("_")
    entities = {}
    for p in parts:
        m = _ENTITY.fullmatch(p)
        if not m:
            return None
        entities[m.group(1)] = m.group(2)
    return (entities, suffix) if "sub" in entities else None


def _read_tsv(path: Path, rows_needed: bool = False) -> pd.DataFrame:
    """A BIDS TSV (``n/a`` = missing); an empty file, or no rows where ``rows_needed``, is an error."""
    try:
        df = pd.read_csv(path, sep="\t", na_values=["n/a", "NA", ""], keep_default_na=False,
                         dtype={"participant_id": str, "session_id": str})
    except pd.errors.EmptyDataError:
        raise CohortError(f"{path}: empty file; it needs a header line and one row per "
                          f"{'participant' if path.name == 'participants.tsv' else 'session'}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise CohortError(f"{path}: not a readable TSV ({e}); fix the file") from None
    if rows_needed and df.empty:
        raise CohortError(f"{path}: no rows below the header; add one row per "
                          f"{'participant' if path.name == 'participants.tsv' else 'session'} or remove the file")
    return df


def _participants(root: Path) -> pd.DataFrame:
    path = root / "participants.tsv"
    if not path.is_file():
        raise CohortError(f"{root}: no participants.tsv; a BIDS dataset needs one "
                          "(participant_id, age, sex[, site, diagnosis...])")
    df = _read_tsv(path, rows_needed=True)
    if "participant_id" not in df.columns:
        raise CohortError(f"{path}: no participant_id column")
    df["participant_id"] = df["participant_id"].astype(str).str.strip()
    dup = df.loc[df["participant_id"].duplicated(), "participant_id"]
    if len(dup):
        raise CohortError(f"{path}: {dup.iloc[0]} appears more than once; keep one row per participant")
    for col in ("age", "sex"):
        if col not in df.columns:
            raise CohortError(f"{path}: no '{col}' column; add it (age in years at baseline, sex F/M)")
    df["age"] = checked_numeric(df["age"], "age", df["participant_id"], str(path), required=False)
    df["sex"] = df["sex"].map(lambda v: _SEX.get(str(v).strip().lower(), str(v)))
    return df.set_index("participant_id")


def _sessions(subject_dir: Path, sub: str) -> pd.DataFrame | None:
    path = subject_dir / f"{sub}_sessions.tsv"
    if not path.is_file():
        return None
    df = _read_tsv(path, rows_needed=True)
    if "session_id" not in df.columns:
        raise CohortError(f"{path}: no session_id column")
    dup = df.loc[df["session_id"].duplicated(), "session_id"]
    if len(dup):
        raise CohortError(f"{path}: session {dup.iloc[0]} is listed twice; keep one row per session")
    labels = sub + " " + df["session_id"].astype(str)
    for col in ("months_from_baseline", "age"):  # empty cells fall back (see _months); bad ones are errors
        if col in df.columns:
            df[col] = checked_numeric(df[col], col, labels, str(path), required=False)
    return df.set_index("session_id")


def _months(sub: str, sessions: pd.DataFrame | None, labels: list[str], path: Path) -> dict[str, float]:
    """Months from baseline of each session, by the documented precedence."""
    if sessions is not None and "months_from_baseline" in sessions.columns:
        vals = sessions["months_from_baseline"]
        missing = [s for s in labels if s not in vals.index or pd.isna(vals.get(s))]
        if not missing:
            return {s: float(vals[s]) for s in labels}
    if sessions is not None and "acq_time" in sessions.columns:
        times = pd.to_datetime(sessions["acq_time"], errors="coerce")
        if all(s in times.index and not pd.isna(times[s]) for s in labels):
            t0 = times[labels].min()
            return {s: round((times[s] - t0).days / 30.4375, 2) for s in labels}
    matches = [_MONTH_LABEL.match(s) for s in labels]
    if all(matches):
        return {s: float(m.group(1)) for s, m in zip(labels, matches)}  # type: ignore[union-attr]
    if len(labels) == 1:
        return {labels[0]: 0.0}
    raise CohortError(f"{sub}: cannot tell when sessions {labels} happened; add months_from_baseline "
                      f"or acq_time to {path}")


def _derivative(root: Path, sub: str, ses: str | None, pattern: str, stem: str | None = None) -> str | float:
    """The first ``derivatives/*/<sub>/[<ses>/]anat/<stem><pattern>`` (stem: ``sub[_ses]``), or NaN."""
    sesdir = f"{ses}/" if ses else ""
    stem = stem or (f"{sub}_{ses}" if ses else sub)
    hits = sorted((root / "derivatives").glob(f"*/{sub}/{sesdir}anat/{stem}{pattern}"))
    return str(hits[0]) if hits else np.nan


def _anat_scans(files: list[Path], sub: str, skipped: list[str]) -> list[tuple]:
    """(session or None, sequence, entities, file) of each anatomical scan of subject ``sub``; any
    other file is added to ``skipped``."""
    scans = []
    for f in files:
        parsed = parse_bids_name(f.name)
        if parsed is None or parsed[1] not in ANAT_SUFFIXES or f"sub-{parsed[0]['sub']}" != sub:
            skipped.append(str(f))
            continue
        ent, suffix = parsed
        ses = f"ses-{ent['ses']}" if "ses" in ent else None
        seq = "T1ce" if suffix == "T1w" and "ce" in ent else suffix
        scans.append((ses, seq, ent, f))
    return scans


def _scan_row(root: Path, sub: str, p: pd.Series, sessions: pd.DataFrame | None, months: dict,
              ses: str | None, seq: str, ent: dict, f: Path) -> dict:
    """One cohort row: the scan, its session's month and age, and the subject / session columns."""
    key = ses or "ses-none"
    srow = sessions.loc[key] if sessions is not None and key in sessions.index else None
    m = months[key]
    age = srow["age"] if srow is not None and "age" in srow and not pd.isna(srow["age"]) \
        else float(p["age"]) + m / 12.0
    row = {"participant_id": sub, "session_id": key, "sequence": seq, "path": str(f),
           "months_from_baseline": m, "age": age, "sex": p["sex"],
           "acq": ent.get("acq", np.nan), "run": ent.get("run", np.nan)}
    for col in SUBJECT_COLUMNS:
        if srow is not None and col in srow.index and not pd.isna(srow[col]):
            row[col] = srow[col]
        elif col in p.index:
            row[col] = p[col]
    row.setdefault("site", "unknown")
    row["mask_path"] = _derivative(root, sub, ses, "_desc-brain_mask.nii*")
    row["seg_path"] = _derivative(root, sub, ses, "_dseg.nii*")
    return row


def _repeat_row(root: Path, row: dict) -> dict:
    """A repeat's row: its own run's brain mask and label map where the tree has them (the
    session's are aligned with the session's first scan, not with a rescan), else the session's."""
    sub, ses = row["participant_id"], row["session_id"]
    ses = None if ses == "ses-none" else ses
    stem = Path(row["path"]).name.rsplit("_", 1)[0]  # the scan's name without its suffix
    out = dict(row)
    for col, pattern in (("mask_path", "_desc-brain_mask.nii*"), ("seg_path", "_dseg.nii*")):
        own = _derivative(root, sub, ses, pattern, stem=stem)
        if isinstance(own, str):
            out[col] = own
    return out


def _typed(table: pd.DataFrame) -> pd.DataFrame:
    """Integer label columns as nullable integers (the reader's dtypes, which the cache keeps)."""
    for col in ("risk_factor", "marker", "event"):
        if col in table.columns:
            table[col] = pd.to_numeric(table[col], errors="coerce").astype("Int64")
    return table


def _split_rows(root: Path, rows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(table of the first acquisitions, repeats or None). The table is built from its own rows
    alone, so it is the very table the tree would give without its repeats; the repeats have the
    table's columns (plus ``run`` and any column only they fill)."""
    keys = pd.DataFrame([{k: r[k] for k in ("participant_id", "session_id", "sequence", "acq", "run")}
                         for r in rows])
    mask = repeat_mask(keys)
    table = _typed(pd.DataFrame([r for r, m in zip(rows, mask) if not m]).dropna(axis=1, how="all"))
    if not mask.any():
        return table, None
    repeats = _typed(pd.DataFrame([_repeat_row(root, r) for r, m in zip(rows, mask) if m]))
    extra = [c for c in repeats.columns if c not in table.columns and repeats[c].notna().any()]
    return table, repeats.reindex(columns=list(table.columns) + extra)


def read_bids(root: str | Path, name: str | None = None, cache: bool = True) -> Cohort:
    """Build a :class:`Cohort` from a BIDS tree (one row per anatomical scan; later runs of a
    scan in ``Cohort.repeats``).

    The tables are kept between runs (:mod:`bench.data.bids_cache`) and read afresh whenever a file
    of the tree changes; ``cache=False`` always reads the tree."""
    from bench.data.bids_cache import cached_scans

    root = Path(root).resolve()
    if cache:
        scans = cached_scans(root, lambda: read_bids_scans(root), code=_READER_CODE)
    else:
        scans = read_bids_scans(root)
    truth = None
    truth_path = root / "derivatives" / "synth" / "ground_truth.tsv"
    if truth_path.is_file():
        truth = _read_tsv(truth_path)
    return Cohort(scans.table, name=name or root.name, root=root, ground_truth=truth,
                  metadata={"source": "bids", "skipped_files": scans.skipped}, repeats=scans.repeats)


def read_bids_table(root: Path) -> tuple[pd.DataFrame, list[str]]:
    """The tree's scan table as the reader builds it (before the Cohort's checks; first
    acquisitions only), and the files that are not an anatomical scan we know."""
    scans = read_bids_scans(root)
    return scans.table, scans.skipped


def read_bids_scans(root: Path) -> ScanTables:
    """The tree's scan table, its repeat scans (None without any) and the files that are not an
    anatomical scan we know, as the reader builds them (before the Cohort's checks)."""
    participants = _participants(root)
    subject_dirs = sorted(p for p in root.glob("sub-*") if p.is_dir())
    unknown = [p.name for p in subject_dirs if p.name not in participants.index]
    if unknown:
        raise CohortError(f"{root}: {unknown[0]} has scans but no row in participants.tsv; add it")
    rows, skipped = [], []
    for sdir in subject_dirs:
        sub = sdir.name
        sessions = _sessions(sdir, sub)
        files = sorted(sdir.glob("ses-*/anat/*.nii*")) + sorted(sdir.glob("anat/*.nii*"))
        scans = _anat_scans(files, sub, skipped)
        labels = sorted({s or "ses-none" for s, *_ in scans})
        if sessions is not None:
            empty = [s for s in sessions.index if s not in labels]
            if empty:
                raise CohortError(f"{sdir / (sub + '_sessions.tsv')} lists {empty[0]} but "
                                  f"{sdir / empty[0] / 'anat'} holds no scan; restore the file or "
                                  "remove the row")
        if not scans:
            continue
        months = _months(sub, sessions, labels, sdir / f"{sub}_sessions.tsv")
        rows += [_scan_row(root, sub, participants.loc[sub], sessions, months, *scan) for scan in scans]
    if not rows:
        raise CohortError(f"{root}: no anatomical scans found under sub-*/[ses-*/]anat/")
    table, repeats = _split_rows(root, rows)  # entity columns no file of the table uses are dropped
    return ScanTables(table, repeats, skipped)


#: The source that turns a tree into a table: part of the cached table's fingerprint, so a change
#: to the reader reads every tree again (cohort.py: which scans are repeats, :func:`repeat_mask`).
_READER_CODE = (Path(__file__), Path(__file__).with_name("bids_cache.py"), Path(__file__).with_name("cohort.py"))
