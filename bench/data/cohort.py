"""The Cohort: one table of scans plus a way to load them. The only thing tasks see.

Every data source (the synthetic generator's BIDS tree, a real BIDS tree, a CSV manifest)
is turned into the same table, so tasks, splits and the store never care where data came
from. The schema is documented here and enforced by :func:`validate_table`.

Repeat scans (a second acquisition of one sequence in one session: a BIDS ``run-02``, ADNI's
``MPRAGE_Repeat``) are kept out of the table, in ``Cohort.repeats`` (:data:`REPEAT_COLUMNS`):
every task sees one scan per (subject, session, sequence, acq), the first, so adding rescans to a
tree changes no task's examples and no record's ``cohort_sha256``; a test-retest protocol reads
them through :meth:`Cohort.repeats_cohort`.
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
    "run": "BIDS run entity of the scan's file where it has one (e.g. a real tree's run-01); "
           "later runs of the same (subject, session, sequence, acq) are in Cohort.repeats",
    "followup_months": "last month (from baseline) at which the subject's diagnosis is known, "
                       "including clinical visits without a scan (imported ADNI / OASIS-3)",
    "dataset": "release the row was imported from ('adni', 'oasis3', 'ixi', 'brats', 'ucsf-pdgm')",
    "acq": "BIDS acq entity",
}

#: ``Cohort.repeats``: one row per second-or-later acquisition of a (participant_id, session_id,
#: sequence, acq) whose first acquisition is a row of the table. Same columns as the table's rows
#: (checked by :func:`validate_table` too), plus:
REPEAT_COLUMNS: dict[str, str] = {
    "run": "run label of the repeat as a string, e.g. '02' (the BIDS run entity); the first "
           "acquisition (no run entity, else the lowest run number) is the table's row",
}

#: What identifies one acquisition slot: the first fills the table, later runs are repeats.
ACQUISITION_KEY = ("participant_id", "session_id", "sequence", "acq")

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
    is synthetic; real cohorts have none. ``repeats`` holds same-session repeat scans
    (:data:`REPEAT_COLUMNS`), None when there are none: never rows of ``table``, so that no task
    and no ``cohort_sha256`` sees them.
    """

    table: pd.DataFrame
    name: str
    root: Path | None = None
    ground_truth: pd.DataFrame | None = None
    metadata: dict = field(default_factory=dict)
    repeats: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        self.table = validate_table(self.table, source=self.name)
        if self.repeats is not None:
            self.repeats = validate_repeats(self.repeats, self.table, source=self.name)

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
        """A cohort restricted to some rows (same name, root and ground truth), with the repeats
        of the rows kept (a repeat without its first scan in the table would be an orphan)."""
        table = self.table[np.asarray(mask)].reset_index(drop=True)
        repeats = None
        if self.repeats is not None:
            kept = self.repeats[acquisition_keys(self.repeats).isin(set(acquisition_keys(table)))]
            repeats = kept.reset_index(drop=True) if len(kept) else None
        return Cohort(table, self.name, self.root, self.ground_truth, dict(self.metadata), repeats)

    def repeats_cohort(self) -> "Cohort | None":
        """The repeats as a cohort of their own (row ``i`` is ``repeats`` row ``i``; same root,
        ground truth and metadata; named ``<name>+repeats``), or None without repeats.

        Why: the embedding cache and the loaders take a cohort and row indices, so a test-retest
        protocol embeds a rescan exactly as it embeds the table's scan of the same session."""
        if self.repeats is None:
            return None
        return Cohort(self.repeats.reset_index(drop=True), f"{self.name}+repeats", self.root,
                      self.ground_truth, dict(self.metadata))

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


def acquisition_keys(table: pd.DataFrame) -> pd.Series:
    """``sub/ses/sequence/acq`` (acq empty where absent) of each row: the slot a scan fills
    (:data:`ACQUISITION_KEY`); the first acquisition of a slot is a table row, later runs repeats."""
    acq = table["acq"] if "acq" in table.columns else pd.Series(np.nan, index=table.index)
    acq = acq.astype(str).where(acq.notna(), "")
    return (table["participant_id"].astype(str) + "/" + table["session_id"].astype(str) + "/"
            + table["sequence"].astype(str) + "/" + acq)


def _run_order(label: object) -> tuple[int, float, str]:
    """Sort key of a run label: no run first, then runs by number ('2' before '10'), then by text."""
    if label is None or (isinstance(label, float) and np.isnan(label)) or not str(label).strip():
        return (0, 0.0, "")
    text = str(label).strip()
    return (1, float(int(text)) if text.isdigit() else np.inf, text)


def repeat_mask(table: pd.DataFrame, runs: pd.Series | None = None) -> np.ndarray:
    """True on each row that is a second-or-later acquisition of its slot (:func:`acquisition_keys`).

    ``runs`` are the rows' run labels as written (default: the ``run`` column). The first of a slot
    is the row without a run label, else the lowest run number. Only a row with a run label of its
    own number can be a repeat: two rows without one, or with the same number, are a duplicate that
    :func:`validate_table` reports, as it always did."""
    if runs is None:
        if "run" not in table.columns:
            return np.zeros(len(table), dtype=bool)
        runs = table["run"]
    slots: dict[str, list[tuple[tuple[int, float, str], int]]] = {}
    for pos, (key, label) in enumerate(zip(acquisition_keys(table), runs)):
        slots.setdefault(key, []).append((_run_order(label), pos))
    mask = np.zeros(len(table), dtype=bool)
    for members in slots.values():
        members.sort()
        seen = {members[0][0][:2]}
        for order, pos in members[1:]:
            if order[0] == 1 and order[:2] not in seen:
                mask[pos] = True
            seen.add(order[:2])
    return mask


def split_repeats(table: pd.DataFrame, runs: pd.Series | None = None
                  ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(first acquisitions, repeats or None): :func:`repeat_mask`'s rows moved to a frame of their
    own whose ``run`` holds the labels as strings ('02'). Without a repeat the table comes back
    untouched; with one, a ``run`` column left empty in the table is dropped, so the table is the
    one the same data had without its repeats."""
    labels = table["run"] if runs is None and "run" in table.columns else runs
    mask = repeat_mask(table, labels)
    if not mask.any():
        return table, None
    repeats = table[mask].copy()
    repeats["run"] = [str(v).strip() for v in np.asarray(labels, dtype=object)[mask]]
    first = table[~mask].reset_index(drop=True)
    if "run" in first.columns and first["run"].isna().all():
        first = first.drop(columns="run")
    return first, repeats.reset_index(drop=True)


def validate_repeats(repeats: pd.DataFrame, table: pd.DataFrame, source: str) -> pd.DataFrame | None:
    """:func:`validate_table`'s checks on the repeats, plus: each has a run label, its first
    acquisition in ``table`` and a scan id no table row has. Returns them sorted as a table is, runs
    in order within a slot (so a cohort of them keeps that order), or None when there are none."""
    if repeats.empty:
        return None
    where = f"{source} (repeat scans)"
    if "run" not in repeats.columns or repeats["run"].isna().any():
        bad = repeats if "run" not in repeats.columns else repeats[repeats["run"].isna()]
        who = " ".join(str(bad[c].iloc[0]) for c in ("participant_id", "session_id") if c in bad.columns)
        raise CohortError(f"{where}: {who or 'a repeat scan'} has a repeat scan without a run label ('run' "
                          "column); a repeat is a run-02 (run-03...) of a scan of the table")
    t = validate_table(repeats.assign(run=repeats["run"].astype(str).str.strip()), source=where)
    orphan = ~acquisition_keys(t).isin(set(acquisition_keys(table)))
    if orphan.any():
        r = t[orphan].iloc[0]
        raise CohortError(f"{where}: {r.participant_id} {r.session_id} run-{r.run} {r.sequence} has no "
                          "first scan in the table; keep its first acquisition or drop the repeat")
    clash = scan_ids(t).isin(set(scan_ids(table)))
    if clash.any():
        raise CohortError(f"{where}: {scan_ids(t)[clash].iloc[0]} is also a row of the table; "
                          "a repeat needs a run label of its own")
    keys = [_run_order(v) for v in t["run"]]
    rank = {k: i for i, k in enumerate(sorted(set(keys)))}
    t = t.assign(_run=[rank[k] for k in keys])
    t = t.sort_values(["participant_id", "months_from_baseline", "sequence", "_run"], kind="stable")
    return t.drop(columns="_run").reset_index(drop=True)


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
