"""The Cohort: one table of scans plus a way to load them. The only thing tasks see.

Every data source (the synthetic generator's BIDS tree, a real BIDS tree, a CSV manifest)
is turned into the same table, so tasks, splits and the store never care where data came
from. The schema is documented here and enforced by :func:`validate_table`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import CohortError

#: Columns every cohort table has: one row per scan file.
REQUIRED_COLUMNS: dict[str, str] = {
    "participant_id": "subject label with its BIDS prefix, e.g. 'sub-0001'",
    "session_id": "session label with its BIDS prefix, e.g. 'ses-M06'",
    "sequence": "MRI contrast of the file: 'T1w', 'T2w' or 'FLAIR' (BIDS suffix)",
    "path": "absolute path of the NIfTI file",
    "months_from_baseline": "time of the session since the subject's first session, in months",
    "age": "age in years at the session; may be empty where the release does not say",
    "sex": "'F' or 'M'; may be empty where the release does not say (e.g. BraTS)",
    "site": "scanner / site label",
}

#: Columns a cohort may have; missing values stay missing (NaN), never invented.
OPTIONAL_COLUMNS: dict[str, str] = {
    "population": "sub-cohort: 'ad' (ageing / Alzheimer's) or 'tumour'",
    "diagnosis": "clinical diagnosis at the session: 'CN', 'MCI' or 'AD'",
    "conversion_month": "months from baseline of MCI->AD conversion; NaN if not observed",
    "risk_factor": "1 if the subject carries the onset-shifting risk factor (APOE4-like)",
    "marker": "tumour marker status (IDH-like mutation), 0 or 1",
    "survival_months": "tumour survival or censoring time from the session, in months",
    "event": "1 if survival_months is a death, 0 if censored",
    "mask_path": "brain mask NIfTI aligned with the scan",
    "seg_path": "tumour label map aligned with the scan (1 oedema, 2 core)",
    "run": "BIDS run entity where a session has several runs",
    "followup_months": "last month (from baseline) at which the subject's diagnosis is known, "
                       "including clinical visits without a scan (imported ADNI / OASIS-3)",
    "dataset": "release the row was imported from ('adni', 'oasis3', 'ixi', 'brats', 'ucsf-pdgm')",
    "acq": "BIDS acq entity",
}

SEQUENCES = ("T1w", "T2w", "FLAIR")
DIAGNOSES = ("CN", "MCI", "AD")

#: What a numeric column may hold: (lowest, highest, why), finite in any case. An age outside
#: 0-120 is a data-entry error (months typed as years, a sentinel such as -1 or 999) that would
#: skew brain age and every age covariate; months since the first session cannot be negative.
VALUE_RANGES: dict[str, tuple[float, float, str]] = {
    "age": (0.0, 120.0, "an age must be a finite number of years within 0-120: fix the value "
                        "(or leave it empty where unknown)"),
    "months_from_baseline": (0.0, np.inf, "months since the subject's first session must be finite and >= 0"),
}


@dataclass
class Cohort:
    """A table of scans (see :data:`REQUIRED_COLUMNS`) and where it came from.

    ``ground_truth`` holds per-scan latents (stage, structure volumes...) when the cohort
    is synthetic; real cohorts have none.
    """

    table: pd.DataFrame
    name: str
    root: Path | None = None
    ground_truth: pd.DataFrame | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.table = validate_table(self.table, source=self.name)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def scan_ids(self) -> pd.Series:
        """A unique, stable identifier of each scan row (used for caches and predictions)."""
        return scan_ids(self.table)

    def subjects(self) -> pd.DataFrame:
        """One row per participant: baseline age, sex, site, population, baseline diagnosis.

        ``trajectory`` (first and last observed diagnosis, e.g. ``MCI->AD``) is what the
        Alzheimer's splits stratify on: converters are the scarce class of the conversion tasks,
        and stratifying on the baseline diagnosis alone can leave a small test split without them.
        """
        t = self.table.sort_values(["participant_id", "months_from_baseline"])
        first = t.groupby("participant_id", sort=True).first()
        out = pd.DataFrame(
            {
                "age": first["age"],
                "sex": first["sex"],
                "site": first["site"],
                "n_sessions": t.groupby("participant_id")["session_id"].nunique(),
            }
        )
        for col in ("population", "diagnosis", "risk_factor", "marker", "conversion_month",
                    "survival_months", "event"):
            if col in t.columns:
                out[col if col != "diagnosis" else "diagnosis_bl"] = first[col]
        if "diagnosis" in t.columns:
            known = t.dropna(subset=["diagnosis"]).groupby("participant_id", sort=True)["diagnosis"]
            out["trajectory"] = (known.first() + "->" + known.last()).reindex(out.index)
        return out.reset_index()

    def select(self, mask: pd.Series | np.ndarray) -> "Cohort":
        """A cohort restricted to some rows (same name, root and ground truth)."""
        return Cohort(self.table[np.asarray(mask)].reset_index(drop=True), self.name,
                      self.root, self.ground_truth, dict(self.metadata))

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Load row ``index`` as (float32 volume, 4x4 affine) through the scan sanity gate
        (:func:`bench.data.sanity.load_gated_scan`), an error naming the subject and session."""
        from bench.data.sanity import load_gated_scan, scan_label

        row = self.table.loc[index]
        return load_gated_scan(row["path"], scan_label(row))

    def require_labels(self, columns: list[str] | tuple[str, ...], population: str | None = None) -> None:
        """Fail, naming the subjects, when any scan of the (sub-)cohort lacks a needed label.

        Tasks call this rather than dropping unlabelled subjects silently.
        """
        t = self.table
        if population is not None and "population" in t.columns:
            t = t[t["population"] == population]
        for col in columns:
            if col not in t.columns:
                raise CohortError(f"{self.name}: column '{col}' is missing; add it to "
                                  "participants.tsv / sessions.tsv (or the manifest)")
            bad = t.loc[t[col].isna(), "participant_id"].unique()
            if len(bad):
                shown = ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else "")
                raise CohortError(
                    f"{self.name}: {len(bad)} participant(s) have no '{col}' label: {shown}; "
                    f"fill it in or exclude them in the task's population filter")


def scan_ids(table: pd.DataFrame) -> pd.Series:
    """``sub-X_ses-Y[_acq-A][_run-R]_SEQ`` for each row."""
    parts = table["participant_id"].astype(str) + "_" + table["session_id"].astype(str)
    for ent in ("acq", "run"):
        if ent in table.columns:
            val = table[ent]
            parts = parts + np.where(val.notna(), "_" + ent + "-" + val.astype(str), "")
    return parts + "_" + table["sequence"].astype(str)


def checked_numeric(values: pd.Series, column: str, labels: pd.Series, where: str,
                    required: bool) -> pd.Series:
    """``values`` parsed as floats, checked for what ``column`` can hold (:data:`VALUE_RANGES`).

    An empty cell is NaN unless ``required``; a cell that is not a number, an empty required cell
    or a value out of range raises :class:`CohortError` ``<where>: <label> has ...`` naming the
    first offending row by its ``labels`` entry (subject, or subject and session).
    """
    raw = values.reset_index(drop=True)
    labels = labels.reset_index(drop=True)
    numbers = pd.to_numeric(raw, errors="coerce").astype(float)
    empty = raw.isna() | raw.astype(str).str.strip().isin(["", "nan", "NaN"])
    unparsed = numbers.isna() & (~empty | required)
    if unparsed.any():
        i = int(np.flatnonzero(unparsed)[0])
        got = "empty" if empty[i] else f"got {str(raw[i])!r}"
        raise CohortError(f"{where}: {labels[i]} has no numeric '{column}' ({got}); fill in a number")
    if column in VALUE_RANGES:
        lo, hi, why = VALUE_RANGES[column]
        bad = numbers.notna() & ~(np.isfinite(numbers) & (numbers >= lo) & (numbers <= hi))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CohortError(f"{where}: {labels[i]} has {column} {numbers[i]:g}; {why}")
    return pd.Series(numbers.to_numpy(), index=values.index)


def validate_table(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check the schema and consistency of a cohort table; return it with normalised dtypes.

    Raises :class:`CohortError` naming the first offending subject / session.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise CohortError(f"{source}: missing required column(s) {missing}; "
                          f"a cohort table needs {list(REQUIRED_COLUMNS)}")
    if table.empty:
        raise CohortError(f"{source}: the cohort table has no rows; it needs one row per scan")
    t = table.copy()
    for col in ("participant_id", "session_id", "sequence", "path", "site"):
        t[col] = t[col].astype(str)
    t["sex"] = t["sex"].where(t["sex"].isna(), t["sex"].astype(str))  # unknown sex stays missing
    labels = t["participant_id"] + " " + t["session_id"]
    for col in ("months_from_baseline", "age"):  # age may be unknown, months may not
        t[col] = checked_numeric(t[col], col, labels, source, required=col != "age")
    bad_sex = t[t["sex"].notna() & ~t["sex"].isin(["F", "M"])]
    if len(bad_sex):
        r = bad_sex.iloc[0]
        raise CohortError(f"{source}: {r.participant_id} has sex '{r.sex}'; use 'F' or 'M'")
    if "diagnosis" in t.columns:
        bad_dx = t[t["diagnosis"].notna() & ~t["diagnosis"].isin(DIAGNOSES)]
        if len(bad_dx):
            r = bad_dx.iloc[0]
            raise CohortError(f"{source}: {r.participant_id} {r.session_id} has diagnosis "
                              f"'{r.diagnosis}'; use one of {DIAGNOSES} or leave it empty")
    ids = scan_ids(t)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise CohortError(f"{source}: duplicate scan rows for {dup.iloc[0]}; each (subject, "
                          "session, sequence[, acq, run]) must appear once")
    return t.sort_values(["participant_id", "months_from_baseline", "sequence"]).reset_index(drop=True)
