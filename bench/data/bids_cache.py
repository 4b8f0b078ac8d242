"""The table :func:`bench.data.bids.read_bids` builds, kept between runs and checked against the tree.

Reading a BIDS tree means one TSV per subject and a dozen globs per scan: the default synthetic
cohort took half a minute, paid by every command that opens it. The table is kept under the
cache folder (``<cache>/cohort-tables/``, one JSON file per resolved tree) with a fingerprint of
the tree: every file's relative path, size and modification time, and the reader's own source.
Any change to the tree (a session TSV edited, a scan added or removed) or to the reader gives
another fingerprint, and the table is read afresh and stored again.

The cohort table is hashed into every record's identity (``cohort_sha256``), so the cached table
must be the very table the reader builds: same columns in the same order, same dtypes, same
values. It is stored as JSON (no pickle: the cache folder is not trusted with code), column by
column with its dtype, and a file whose dtypes do not come back as stored counts as a miss.
The repeat scans (``Cohort.repeats``: run-02... of a session's scan) are stored beside the table,
the same way; a stored file without them (written by :func:`cached_read`) is a miss for
:func:`cached_scans`, so a tree's repeats are never lost to an older entry.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import pandas as pd

from bench.atomic import atomic_write_bytes
from bench.paths import cache_home

#: Bumped when the stored layout changes; part of every fingerprint (2: repeats stored too).
FORMAT = 2


class ScanTables(NamedTuple):
    """What reading a tree gives: the table (first acquisitions), the repeat scans (or None) and
    the files that are not an anatomical scan the reader knows."""

    table: pd.DataFrame
    repeats: pd.DataFrame | None
    skipped: list[str]


def cache_file(root: Path) -> Path:
    """Where the table of the tree at ``root`` (resolved) is kept."""
    key = hashlib.sha256(str(root).encode()).hexdigest()[:32]
    return cache_home() / "cohort-tables" / f"{key}.json"


def tree_fingerprint(root: Path, code: tuple[Path, ...] = ()) -> str:
    """SHA-256 over every file under ``root`` (relative path, size, mtime in ns) and the bytes of
    the ``code`` files that turn the tree into a table. One ``stat`` per file: milliseconds where
    reading the TSVs takes seconds."""
    digest = hashlib.sha256(f"format {FORMAT}\n".encode())
    for path in code:
        digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        rel = os.path.relpath(folder, root)
        for name in sorted(files):
            try:
                st = os.stat(os.path.join(folder, name))
            except FileNotFoundError:  # removed while we walk: the next read sees the change
                continue
            digest.update(f"{rel}/{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """A cell as JSON holds it: numpy scalars as Python numbers, missing as None (NaN in floats)."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def encode_table(table: pd.DataFrame) -> dict:
    """The table as JSON-ready lists, column by column, with each column's dtype."""
    columns = []
    for name in table.columns:
        col = table[name]
        if col.dtype == np.float64:
            values = [None if math.isnan(v) else v for v in col.tolist()]
        else:
            values = [_plain(v) for v in col.tolist()]
        columns.append({"name": name, "dtype": str(col.dtype), "values": values})
    return {"n_rows": len(table), "columns": columns}


def decode_table(data: dict) -> pd.DataFrame | None:
    """The table :func:`encode_table` stored, or None when its dtypes would not come back as stored."""
    series = {}
    for col in data["columns"]:
        dtype = col["dtype"]
        values = col["values"]
        if dtype == "float64":
            values = [np.nan if v is None else v for v in values]
        elif dtype == "object":
            values = [np.nan if v is None else v for v in values]  # the reader's missing cells are NaN
        series[col["name"]] = pd.Series(values, dtype=dtype)
    table = pd.DataFrame(series, index=pd.RangeIndex(data["n_rows"]))
    if [str(t) for t in table.dtypes] != [c["dtype"] for c in data["columns"]]:
        return None
    return table


def _load(path: Path, fingerprint: str, with_repeats: bool) -> ScanTables | None:
    """The stored tables when the stored fingerprint is ``fingerprint`` and every table comes back
    with its dtypes (and the repeats were stored, where ``with_repeats``); else None (a miss)."""
    try:
        stored = json.loads(path.read_text())
        if stored.get("fingerprint") != fingerprint or (with_repeats and "repeats" not in stored):
            return None
        table = decode_table(stored["table"])
        repeats = stored.get("repeats")
        decoded = decode_table(repeats) if repeats is not None else None
        if table is None or (repeats is not None and decoded is None):
            return None
        return ScanTables(table, decoded, list(stored["skipped"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing, unreadable or of another layout: read the tree


def _store(path: Path, root: Path, fingerprint: str, scans: ScanTables, with_repeats: bool) -> None:
    """Keep the tables (atomically: two runs at once both read, and the last rename wins with the
    same content); a read-only cache folder costs the next run the read, nothing else."""
    payload = {"root": str(root), "fingerprint": fingerprint, "table": encode_table(scans.table),
               "skipped": scans.skipped}
    if with_repeats:
        payload["repeats"] = None if scans.repeats is None else encode_table(scans.repeats)
    try:
        atomic_write_bytes(path, json.dumps(payload).encode())
    except OSError:
        pass


def cached_scans(root: Path, read: Callable[[], ScanTables], code: tuple[Path, ...] = ()) -> ScanTables:
    """``read()``'s tables of the tree at ``root``: from the cache when the tree's fingerprint is the
    stored one, else read and stored."""
    path, fingerprint = cache_file(root), tree_fingerprint(root, code)
    hit = _load(path, fingerprint, with_repeats=True)
    if hit is not None:
        return hit
    scans = read()
    _store(path, root, fingerprint, scans, with_repeats=True)
    return scans


def cached_read(root: Path, read: Callable[[], tuple[pd.DataFrame, list[str]]],
                code: tuple[Path, ...] = ()) -> tuple[pd.DataFrame, list[str]]:
    """``read()``'s (table, skipped files) of the tree at ``root``, for a caller that wants the table
    alone: from the cache when the fingerprint matches (whoever stored it), else read and stored
    without repeats (so :func:`cached_scans` reads the tree again rather than lose them)."""
    path, fingerprint = cache_file(root), tree_fingerprint(root, code)
    hit = _load(path, fingerprint, with_repeats=False)
    if hit is not None:
        return hit.table, hit.skipped
    table, skipped = read()
    _store(path, root, fingerprint, ScanTables(table, None, skipped), with_repeats=False)
    return table, skipped
