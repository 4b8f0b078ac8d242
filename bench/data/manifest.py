"""Read a CSV/TSV manifest: the fallback for data that is not organised as BIDS.

The manifest has the cohort columns (see ``bench.data.cohort.REQUIRED_COLUMNS``), one row per
scan; relative paths are resolved against the manifest's folder. A ``run`` column names repeat
scans as BIDS does: of the rows of one (subject, session, sequence, acq), the first (empty run,
else the lowest run number) is the table's row and the later runs go to ``Cohort.repeats``
(:func:`bench.data.cohort.split_repeats`); the importers write same-session rescans that way.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.data.cohort import REQUIRED_COLUMNS, Cohort, split_repeats, validate_table, validate_repeats
from bench.errors import CohortError


def _run_labels(path: Path, sep: str) -> pd.Series:
    """The ``run`` column as written ('02', not the number 2 pandas reads): labels of the repeats."""
    return pd.read_csv(path, sep=sep, usecols=["run"], dtype=str, na_values=["n/a", "NA", ""],
                       keep_default_na=False)["run"]


def read_manifest(path: str | Path, name: str | None = None) -> Cohort:
    """The cohort of a manifest (see the module docstring); errors name the file and the subject."""
    path = Path(path).resolve()
    if not path.is_file():
        raise CohortError(f"{path}: manifest not found")
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        table = pd.read_csv(path, sep=sep, na_values=["n/a", "NA", ""], keep_default_na=False,
                            dtype={"participant_id": str, "session_id": str, "site": str})
    except pd.errors.EmptyDataError:
        raise CohortError(f"{path}: empty file; a manifest needs a header {list(REQUIRED_COLUMNS)} and one "
                          "row per scan") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise CohortError(f"{path}: not a readable {'TSV' if sep == chr(9) else 'CSV'} ({e})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise CohortError(f"{path}: missing column(s) {missing}; a manifest needs {list(REQUIRED_COLUMNS)}")
    if table.empty:
        raise CohortError(f"{path}: no rows below the header; a manifest needs one row per scan")
    for r in table.itertuples():
        if not isinstance(r.path, str) or not r.path.strip():
            raise CohortError(f"{path}: {r.participant_id} {r.session_id} has an empty path; give the scan's "
                              "file (absolute or relative to the manifest) or remove the row")
    for col in ("path", "mask_path", "seg_path"):
        if col in table.columns:
            table[col] = [str((path.parent / p).resolve()) if isinstance(p, str) else p
                          for p in table[col]]
    for r in table.itertuples():
        if not Path(r.path).is_file():
            raise CohortError(f"{path}: {r.participant_id} {r.session_id} points to {r.path}, "
                              "which does not exist; fix the path or remove the row")
    repeats = None
    if "run" in table.columns:
        table, repeats = split_repeats(table, _run_labels(path, sep))
    checked = validate_table(table, source=str(path))  # values checked here, so errors name the manifest file
    if repeats is not None:
        validate_repeats(repeats, checked, source=str(path))
    return Cohort(table, name=name or path.stem, root=path.parent, metadata={"source": "manifest"},
                  repeats=repeats)
