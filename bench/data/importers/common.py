"""What every importer shares: the report of what was dropped or missing and why, the manifest
writer, sequence names, label-map conversion and small parsers.

An import never fixes data by guessing. A value the release does not give stays empty and is
counted; a row that cannot enter the cohort table (a scan no clinical visit explains, a
duplicate visit, an unknown sequence...) is dropped, counted under a reason, and listed one per
line in ``<name>_dropped.tsv`` beside the manifest, so a researcher can check every decision.

A repeat scan (a second acquisition of one sequence at one visit) is not dropped: it is written to
the manifest as a ``run`` of its session (``run`` 02, 03...; the first acquisition, the one an
import has always kept, has an empty ``run`` and is written exactly as before), which the manifest
reader keeps out of the cohort table, in ``Cohort.repeats``. So the table, its hash and the splits
are what they were, and a test-retest protocol has its rescans.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.atomic import atomic_write_bytes
from bench.splits import file_sha256
from bench.data.cohort import REQUIRED_COLUMNS, Cohort, repeat_mask
from bench.errors import CohortError, MribenchError

#: Columns whose empty values the report counts (the cohort schema's, where an importer fills them).
COUNTED_COLUMNS = ("age", "sex", "site", "diagnosis", "marker", "survival_months",
                   "event", "seg_path")

#: Days per month used to turn day counts into months from baseline (mean Gregorian month).
DAYS_PER_MONTH = 30.4375
DAYS_PER_YEAR = 365.25

_NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)


class ImportFailed(MribenchError):
    """An import that cannot start: a missing clinical table, a column the release must have."""


@dataclass
class ImportReport:
    """What an import kept, dropped and could not fill, with a reason for each.

    ``dropped`` counts items left out by (kind, reason); ``notes`` counts kept items worth
    knowing about (e.g. clinical visits without a scan, kept for follow-up); ``items`` lists each
    dropped item, so the counts can be audited line by line; ``repeats`` counts repeat scans kept
    as runs (``Cohort.repeats``) by reason, each one a row of the manifest with its ``run``.
    """

    dataset: str
    dropped: Counter = field(default_factory=Counter)
    repeats: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    items: list[dict] = field(default_factory=list)
    missing: dict[str, int] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)
    #: cohort column -> the file (and its column) its values were read from, where a release has
    #: several possible sources (a release table, or the BIDS participants.tsv in its absence)
    columns: dict[str, str] = field(default_factory=dict)

    def drop(self, kind: str, reason: str, *, subject: str = "", session: str = "", file: str | os.PathLike = "",
             detail: str = "") -> None:
        """Leave one item (``kind``: 'scan', 'visit', 'subject', 'clinical row'...) out, saying why."""
        self.dropped[(kind, reason)] += 1
        self.items.append({"kind": kind, "reason": reason, "subject": subject, "session": session,
                           "file": str(file), "detail": detail})

    def keep_repeat(self, reason: str) -> None:
        """Count one repeat scan kept as a run of its session (not a table row, not dropped)."""
        self.repeats[reason] += 1

    def note(self, what: str, n: int = 1) -> None:
        """Count something kept but noteworthy (it is not an error and loses no data)."""
        if n:
            self.notes[what] += n

    def source(self, role: str, path: Path) -> None:
        """Record an input table and its SHA-256, so the import can be reproduced."""
        self.sources[role] = f"{path.name} sha256:{file_sha256(path)[:16]}"

    def column_source(self, column: str, source: str) -> None:
        """Say where a cohort column's values came from (shown in the summary and the JSON report)."""
        self.columns[column] = source

    def finish(self, table: pd.DataFrame) -> None:
        """Count what was kept and every empty value of the schema's columns."""
        self.kept = {"subjects": int(table["participant_id"].nunique()),
                     "sessions": int(table[["participant_id", "session_id"]].drop_duplicates().shape[0]),
                     "scans": int(len(table))}
        self.missing = {c: int(table[c].isna().sum()) for c in COUNTED_COLUMNS
                        if c in table.columns and table[c].isna().any()}

    def lines(self) -> list[str]:
        """The report as short sentences, in a fixed order (largest counts first)."""
        k = self.kept
        out = [f"{self.dataset}: kept {k.get('subjects', 0)} subjects, {k.get('sessions', 0)} sessions, "
               f"{k.get('scans', 0)} scans"]
        for reason, n in sorted(self.repeats.items(), key=lambda kv: (-kv[1], kv[0])):
            out.append(f"  kept {n} repeat scan(s) as runs: {reason}")
        for (kind, reason), n in sorted(self.dropped.items(), key=lambda kv: (-kv[1], kv[0])):
            out.append(f"  dropped {n} {kind}(s): {reason}")
        for what, n in sorted(self.notes.items(), key=lambda kv: (-kv[1], kv[0])):
            out.append(f"  note: {n} {what}")
        for col, source in sorted(self.columns.items()):
            out.append(f"  source: '{col}' from {source}")
        for col, n in self.missing.items():
            out.append(f"  missing: '{col}' empty on {n} scan row(s) (left empty, not guessed)")
        return out

    def to_json(self) -> dict:
        return {"dataset": self.dataset, "kept": self.kept, "sources": self.sources,
                "column_sources": dict(sorted(self.columns.items())),
                "dropped": [{"kind": kind, "reason": reason, "count": n}
                            for (kind, reason), n in sorted(self.dropped.items())],
                "repeats_kept_as_runs": [{"reason": reason, "count": n}
                                         for reason, n in sorted(self.repeats.items())],
                "notes": dict(sorted(self.notes.items())), "missing_values": self.missing}


@dataclass
class ImportResult:
    """Where an import wrote its cohort (a manifest ``open_cohort`` reads) and its report."""

    manifest: Path
    report_json: Path
    dropped_tsv: Path
    report: ImportReport
    cohort: Cohort


# -- small parsers ---------------------------------------------------------------------------------
def to_float(value) -> float:
    """A number, or NaN for empty / non-numeric cells (never an error: releases have free text)."""
    try:
        out = float(str(value).strip())
    except (TypeError, ValueError):
        return float("nan")
    return out if np.isfinite(out) else float("nan")


def run_label(order: int) -> str:
    """The ``run`` of a visit's ``order``-th acquisition of a sequence (0 is the first, which has
    none): '02', '03'..., numbered in the order the importer ranks them (image id, run, file name)."""
    return f"{order + 1:02d}"


def is_nifti(path: Path) -> bool:
    return bool(_NIFTI.search(path.name))


#: Folders that hold outputs, not the release: BIDS derivatives, bench data prepare's QC figures,
#: and the label maps an import writes when its --out is the release folder.
NOT_RELEASE = frozenset({"derivatives", "qc", "labels"})


def release_niftis(root: Path) -> list[Path]:
    """Every NIfTI file of the release under ``root``, outputs (:data:`NOT_RELEASE`) left out."""
    return [p for p in sorted(root.rglob("*"))
            if is_nifti(p) and p.is_file() and not NOT_RELEASE & set(p.relative_to(root).parts[:-1])]


def release_dirs(root: Path) -> list[Path]:
    """Every folder of the release under ``root``, outputs (:data:`NOT_RELEASE`) left out."""
    return [p for p in sorted(root.rglob("*"))
            if p.is_dir() and not NOT_RELEASE & set(p.relative_to(root).parts)]


def nifti_stem(path: Path) -> str:
    return _NIFTI.sub("", path.name)


def norm_sex(value) -> str | float:
    """'M'/'F' from the spellings releases use (M, Male, 1 = male in OASIS-3 / IXI...), else NaN."""
    v = str(value).strip().lower()
    return {"m": "M", "male": "M", "f": "F", "female": "F"}.get(v, float("nan"))


def read_table(path: Path) -> pd.DataFrame:
    """A clinical table (CSV, TSV, or Excel) as strings; a bad file is a one-line error."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".xls", ".xlsx"):
            try:
                return pd.read_excel(path, dtype=str)
            except ImportError:
                raise ImportFailed(f"{path}: reading Excel files needs an extra package (pip install xlrd "
                                   "for .xls, openpyxl for .xlsx); or save the sheet as CSV and pass that") \
                    from None
        sep = "\t" if suffix == ".tsv" else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=True, low_memory=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise ImportFailed(f"{path}: not a readable table ({' '.join(str(e).split())})") from None


def find_table(root: Path, given: str | os.PathLike | None, patterns: tuple[str, ...], what: str,
               required: bool = True) -> Path | None:
    """The clinical table: ``given`` if named, else the first file under ``root`` matching a pattern."""
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise ImportFailed(f"{path}: {what} not found")
        return path
    for pattern in patterns:
        hits = sorted(root.rglob(pattern))
        if hits:
            return hits[0]
    if required:
        raise ImportFailed(f"{root}: no {what} found (looked for {', '.join(patterns)}); "
                           "pass it with --clinical FILE")
    return None


def bids_participants(root: Path, report: ImportReport) -> tuple[pd.DataFrame, Path] | None:
    """The BIDS ``participants.tsv`` at the root of the tree (rows by ``participant_id``), or None.

    Why: a BIDS export of a release may lack the release's own tables but state sex, age and
    more per participant here; an importer reads it where the release's table is absent rather
    than leaving those columns empty, and says so with :meth:`ImportReport.column_source`.
    """
    path = root / "participants.tsv"
    if not path.is_file():
        return None
    table = read_table(path)
    need_columns(table, ["participant_id"], path)
    report.source("participants", path)
    table["participant_id"] = table["participant_id"].astype(str).str.strip()
    return table.drop_duplicates("participant_id", keep="first").set_index("participant_id"), path


def need_columns(table: pd.DataFrame, columns: list[str], path: Path) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ImportFailed(f"{path}: missing column(s) {missing}; is this the right table? "
                           f"(columns found: {', '.join(map(str, table.columns[:12]))}...)")


def pick_column(table: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` the table has (releases renamed columns between versions)."""
    lower = {str(c).strip().lower(): c for c in table.columns}
    for n in names:
        if n.lower() in lower:
            return lower[n.lower()]
    return None


def sequence_of(text: str) -> str | None:
    """The cohort's sequence name for a series description or file suffix, or None.

    Order matters: FLAIR images are T2-weighted and MPRAGE names contain no 'T1', so FLAIR is
    tested first and the T1 family by its sequence names too. Dual-echo PD/T2 series are left
    out (neither a pure PD nor a pure T2 image).
    """
    t = str(text).lower().replace("-", "").replace(" ", "_")
    if "flair" in t:
        return "FLAIR"
    if re.search(r"t1c|t1ce|t1gd|t1_?post|mprage_?post|gad", t):
        return "T1ce"
    if re.search(r"mprage|mp_?rage|spgr|ir_?fspgr|(^|[^a-z0-9])t1(w)?([^a-z0-9]|$)|t1w", t):
        return "T1w"
    if re.search(r"pd_?t2|t2_?pd|dual", t):
        return None
    if re.search(r"(^|[^a-z0-9])t2(w)?([^a-z0-9*]|$)|t2w|t2_?fse|t2_?tse", t) and "star" not in t:
        return "T2w"
    if re.search(r"(^|[^a-z0-9])pd(w)?([^a-z0-9]|$)", t):
        return "PDw"
    return None


def scanner_from_sidecar(path: Path) -> str | float:
    """'Manufacturer Model field T' from the BIDS JSON beside a NIfTI, or NaN when there is none."""
    side = path.with_name(nifti_stem(path) + ".json")
    if not side.is_file():
        return float("nan")
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError):
        return float("nan")
    parts = [str(meta[k]) for k in ("Manufacturer", "ManufacturersModelName") if meta.get(k)]
    if meta.get("MagneticFieldStrength"):
        parts.append(f"{meta['MagneticFieldStrength']}T")
    return " ".join(parts) if parts else float("nan")


# -- tumour label maps ------------------------------------------------------------------------------
#: BraTS / UCSF-PDGM labels -> the cohort's (1 oedema, 2 core): 1 necrotic / non-enhancing core and
#: 4 (or 3 since BraTS 2023) enhancing tumour are core; 2 peritumoral oedema is oedema.
BRATS_TO_COHORT = {0: 0, 1: 2, 2: 1, 3: 2, 4: 2}


def convert_tumour_labels(src: Path, dst: Path) -> str | None:
    """Write ``src`` (BraTS labels) as the cohort's label map at ``dst``; return a problem or None.

    Resumable: an existing ``dst`` newer than ``src`` is kept. Values outside the BraTS set are
    refused (the map is left out and counted), never mapped to something.
    """
    import nibabel as nib

    if dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime:
        return None
    try:
        img = nib.load(str(src))
        data = np.rint(np.asarray(img.dataobj, dtype=np.float32)).astype(np.int64)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported, not raised
        return f"unreadable label map ({' '.join(str(e).split())[:80]})"
    values = set(np.unique(data).tolist())
    unexpected = sorted(values - set(BRATS_TO_COHORT))
    if unexpected:
        return f"label values {unexpected} are not BraTS labels (0, 1, 2, 3, 4)"
    lut = np.zeros(max(BRATS_TO_COHORT) + 1, np.uint8)
    for k, v in BRATS_TO_COHORT.items():
        lut[k] = v
    out = nib.Nifti1Image(lut[data], img.affine)
    out.set_data_dtype(np.uint8)
    atomic_write_bytes(dst, gzip.compress(out.to_bytes(), mtime=0), mode=0o644)
    return None


# -- output ---------------------------------------------------------------------------------------
def write_import(rows: list[dict], report: ImportReport, out: Path, name: str) -> ImportResult:
    """Write ``<name>.tsv`` (a manifest ``open_cohort`` reads), ``<name>_import.json`` (counts) and
    ``<name>_dropped.tsv`` (one line per dropped item) into ``out``; return them with the cohort.

    The manifest is read back through the ordinary manifest reader before returning, so an import
    that succeeds is a cohort the harness accepts.
    """
    if not rows:
        raise CohortError(f"{report.dataset}: no scan could be imported; see the reasons above "
                          f"({', '.join(f'{r}: {n}' for (_, r), n in report.dropped.most_common(3))})")
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows)
    table["dataset"] = report.dataset
    first = list(REQUIRED_COLUMNS)
    table = table[first + [c for c in table.columns if c not in first]]
    table = table.sort_values(["participant_id", "months_from_baseline", "sequence"], kind="stable")
    report.finish(table[~repeat_mask(table)])  # the kept counts are the table's: repeats are runs
    manifest = out / f"{name}.tsv"
    text = table.to_csv(sep="\t", index=False, na_rep="n/a", lineterminator="\n", float_format="%.10g")
    atomic_write_bytes(manifest, text.encode(), mode=0o644)
    report_json = out / f"{name}_import.json"
    atomic_write_bytes(report_json, (json.dumps(report.to_json(), indent=2) + "\n").encode(), mode=0o644)
    dropped_tsv = out / f"{name}_dropped.tsv"
    items = pd.DataFrame(report.items, columns=["kind", "reason", "subject", "session", "file", "detail"])
    atomic_write_bytes(dropped_tsv, items.to_csv(sep="\t", index=False, lineterminator="\n").encode(),
                       mode=0o644)
    from bench.data.manifest import read_manifest

    cohort = read_manifest(manifest)
    return ImportResult(manifest, report_json, dropped_tsv, report, cohort)
