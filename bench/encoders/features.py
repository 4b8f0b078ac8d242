"""``features``: evaluate precomputed per-scan features with the harness's protocols and records.

How a researcher evaluates FreeSurfer volumes, or embeddings computed in another framework,
against the same splits, heads, records and leaderboard as every other encoder::

    bench run --encoder features --features aseg_volumes.tsv [--name freesurfer-aseg] --task brain_age

The table has one row per scan, keyed by ``participant_id``, ``session_id`` and optionally
``sequence`` (without it a row applies to every sequence of its session, as a FreeSurfer
table of T1w-derived volumes does); every other column is a feature. Formats, by suffix:
``.tsv`` / ``.csv`` (UTF-8 text), ``.parquet`` (needs pyarrow, not a dependency of mribench) and
``.npz`` (string arrays ``participant_id``, ``session_id``, optional ``sequence``, and a float
array ``features`` of shape (N, E)).

Like the ``oracle`` the encoder never reads voxels: the harness hands it the cohort rows it
needs (``embed_rows``). Bad input stops before anything is fitted, with one line naming the file
and the place: a missing key column, an empty table, an unnamed or repeated column, a duplicate
key, a non-numeric column, a NaN / empty / infinite value (``line N`` of a text file as an editor
counts it, the header being line 1; ``row i``, 0-based, of a Parquet or npz table), and, when a
run needs a scan the table lacks, that scan's participant, session and sequence.

Values are only cast to float32: standardising is the probe head's job (it fits its scaler on
training subjects; scaling the whole table here would let test rows shape the features).

Identity: ``card.checkpoint_sha256`` and ``checkpoint_hash()`` are the SHA-256 of the bytes
that were parsed, so the embedding cache and every record bind the table itself; changing one
value makes another encoder as far as caches and records are concerned.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from bench.encoders.api import Encoder, EncoderCard, list_encoders, register_encoder
from bench.errors import MribenchError

#: Key columns every table has; ``sequence`` is optional (see the module docstring).
KEYS = ("participant_id", "session_id")
SEQUENCE = "sequence"
#: Cell texts that mean "no value" in the tables people write (pandas' and BIDS' spellings).
_MISSING = frozenset({"", "n/a", "na", "nan", "none", "null"})
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class FeatureTable:
    """A validated features table: one float32 vector per key, and the hash of its file."""

    path: Path
    sha256: str
    columns: tuple[str, ...]              # feature names, in file order
    values: np.ndarray                    # (rows, len(columns)) float32, all finite
    keys: tuple[tuple[str, ...], ...]     # per row: (participant, session[, sequence])
    by_sequence: bool                     # whether keys include the sequence

    @cached_property
    def index(self) -> dict[tuple[str, ...], int]:
        """Row of each key (built on first use)."""
        return {k: i for i, k in enumerate(self.keys)}

    def lookup(self, rows: pd.DataFrame) -> np.ndarray:
        """The vectors of cohort ``rows`` (with participant_id, session_id, sequence), in order."""
        key_columns = [*KEYS, SEQUENCE] if self.by_sequence else list(KEYS)
        wanted = list(zip(*(rows[c].astype(str) for c in key_columns)))
        index = self.index
        missing = [k for k in wanted if k not in index]
        if missing:
            more = (f" (and {len(missing) - 1} more of the {len(wanted)} scans this run needs)"
                    if len(missing) > 1 else "")
            raise MribenchError(f"{self.path}: no row for {_describe(missing[0])}{more}; keys must match the "
                                f"cohort's {', '.join(key_columns)} exactly")
        return self.values[[index[k] for k in wanted]]


def read_features(path: str | Path) -> FeatureTable:
    """Read and validate a features table (.tsv, .csv, .parquet or .npz); one-line errors."""
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise MribenchError(f"{path}: unsupported features format '{path.suffix}'; use .tsv, .csv, .parquet or .npz")
    if not path.is_file():
        raise MribenchError(f"{path}: features file not found")
    data = path.read_bytes()  # hashed and parsed from the same bytes: the identity is what was read
    names, frame, where = reader(path, data)
    return _validate(path, hashlib.sha256(data).hexdigest(), names, frame, where)


# ------------------------------------------------------------------------------------------ readers
# Each returns (column names, frame with positional columns, locator of a data row for messages).

Where = Callable[[int], str]


def _read_text(path: Path, data: bytes, sep: str) -> tuple[list[str], pd.DataFrame, Where]:
    """Python's csv reader rather than pandas': exact line numbers (blank lines skipped, not
    renumbered), header names kept as written (pandas renames a repeated 'x' to 'x.1'), and a
    ragged line is an error rather than padding."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise MribenchError(f"{path}: not UTF-8 text (byte {e.start}); save the table as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    header: list[str] | None = None
    rows, lines = [], []
    try:
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip() for f in fields]
                continue
            if len(fields) != len(header):
                raise MribenchError(f"{path}: line {reader.line_num} has {len(fields)} fields but the header has "
                                    f"{len(header)}")
            rows.append(fields)
            lines.append(reader.line_num)
    except csv.Error as e:
        raise MribenchError(f"{path}: line {reader.line_num}: {e}") from None
    if header is None:
        raise MribenchError(f"{path}: empty file; a features table needs a header and one row per scan")
    frame = pd.DataFrame(rows, columns=range(len(header)), dtype=object)
    return header, frame, lambda i: f"line {lines[i]}"


def _has_parquet_engine() -> bool:
    return any(importlib.util.find_spec(m) is not None for m in ("pyarrow", "fastparquet"))


def _read_parquet(path: Path, data: bytes) -> tuple[list[str], pd.DataFrame, Where]:
    if not _has_parquet_engine():
        raise MribenchError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow), or save the table "
                            "as .tsv / .csv")
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as e:  # the engine's own errors: report them in one line
        raise MribenchError(f"{path}: not a readable Parquet file ({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:200]})") from None
    if any(n is not None for n in frame.index.names):  # keys saved as the index (df.set_index(...))
        frame = frame.reset_index()
    names = [str(c) for c in frame.columns]
    frame.columns = range(len(names))
    return names, frame.reset_index(drop=True), lambda i: f"row {i}"


def _read_npz(path: Path, data: bytes) -> tuple[list[str], pd.DataFrame, Where]:
    usage = "an .npz holds string arrays participant_id, session_id, [sequence] and a float array features (N, E)"
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise MribenchError(f"{path}: holds object arrays, which are not loaded (they would need pickle); "
                                "save ids with np.asarray(ids, dtype=str)") from None
        raise MribenchError(f"{path}: not a readable .npz file ({' '.join(str(e).split())[:200]})") from None
    except (OSError, EOFError) as e:
        raise MribenchError(f"{path}: not a readable .npz file ({type(e).__name__})") from None
    key_names = [*KEYS, *([SEQUENCE] if SEQUENCE in arrays else [])]
    for name in (*KEYS, "features"):
        if name not in arrays:
            raise MribenchError(f"{path}: no '{name}' array (arrays: {', '.join(sorted(arrays)) or 'none'}); {usage}")
    extra = sorted(set(arrays) - {*key_names, "features"})
    if extra:
        raise MribenchError(f"{path}: unexpected array(s) {', '.join(extra)}; {usage}")
    features = arrays["features"]
    if features.ndim != 2:
        raise MribenchError(f"{path}: features has shape {features.shape}; {usage}")
    columns = {}
    for name in key_names:
        ids = arrays[name]
        if ids.shape != (features.shape[0],):
            raise MribenchError(f"{path}: {name} has shape {ids.shape} but features has {features.shape[0]} rows")
        if ids.dtype.kind == "S":
            ids = np.char.decode(ids, "utf-8")
        if ids.dtype.kind != "U":
            raise MribenchError(f"{path}: {name} is {ids.dtype}, not strings; save it with np.asarray(ids, dtype=str)")
        columns[name] = ids
    names = [*key_names, *(f"features[:, {j}]" for j in range(features.shape[1]))]
    frame = pd.concat([pd.DataFrame(columns), pd.DataFrame(features)], axis=1, ignore_index=True)
    return names, frame, lambda i: f"row {i}"


_READERS = {".tsv": lambda p, d: _read_text(p, d, "\t"), ".csv": lambda p, d: _read_text(p, d, ","),
            ".parquet": _read_parquet, ".npz": _read_npz}


# ------------------------------------------------------------------------------------------ checks


def _validate(path: Path, sha256: str, names: list[str], frame: pd.DataFrame, where: Where) -> FeatureTable:
    _check_header(path, names)
    frame = frame.set_axis(names, axis=1)
    if not len(frame):
        raise MribenchError(f"{path}: no rows; a features table needs one row per scan below its header")
    key_columns = [*KEYS, *([SEQUENCE] if SEQUENCE in names else [])]
    feature_columns = [n for n in names if n not in key_columns]
    if not feature_columns:
        raise MribenchError(f"{path}: no feature columns besides {', '.join(key_columns)}")
    keys = _keys(path, frame, key_columns, where)
    return FeatureTable(path=path, sha256=sha256, columns=tuple(feature_columns),
                        values=_numeric(path, frame[feature_columns], where), keys=keys,
                        by_sequence=SEQUENCE in key_columns)


def _check_header(path: Path, names: list[str]) -> None:
    for k, name in enumerate(names):
        if not name.strip() or name.startswith("Unnamed: "):
            raise MribenchError(f"{path}: column {k + 1} has no name (a saved row index? write the table with "
                                "index=False)")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise MribenchError(f"{path}: column '{repeated[0]}' appears more than once in the header")
    for key in KEYS:
        if key not in names:
            hint = ""
            if len(names) == 1:
                hint = " (one column only: is the file separated by the other of tab / comma? .tsv is tab, .csv comma)"
            shown = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
            raise MribenchError(f"{path}: no '{key}' column (columns: {shown}){hint}; a features table is keyed "
                                f"by participant_id, session_id and optionally sequence")


def _keys(path: Path, frame: pd.DataFrame, columns: list[str], where: Where) -> tuple[tuple[str, ...], ...]:
    """Keys as stripped strings; an empty key or one that repeats an earlier row is an error."""
    texts = []
    for col in columns:
        values = frame[col]
        empty = values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()
        if empty.any():
            raise MribenchError(f"{path}: {where(int(np.argmax(empty)))} has no {col}")
        texts.append(values.astype(str).str.strip())
    keys = tuple(zip(*texts))
    first: dict[tuple[str, ...], int] = {}
    for i, key in enumerate(keys):
        j = first.setdefault(key, i)
        if j != i:
            per = "scan" if SEQUENCE in columns else "session (no sequence column)"
            raise MribenchError(f"{path}: {where(i)} repeats the key of {where(j)} ({_describe(key)}); the table "
                                f"needs one row per {per}")
    return keys


def _numeric(path: Path, block: pd.DataFrame, where: Where) -> np.ndarray:
    """The feature block as float32; the first bad cell (in reading order) is a one-line error."""
    try:
        values = block.to_numpy(dtype=np.float64)
        fine = bool(np.all(np.abs(values) <= _FLOAT32_MAX))  # False for NaN and inf too
    except (TypeError, ValueError):
        fine = False
    if not fine:
        _raise_first_bad_cell(path, block, where)
    return values.astype(np.float32)


def _raise_first_bad_cell(path: Path, block: pd.DataFrame, where: Where) -> None:
    bad = []  # (row, column position, problem, not numeric) of each column's first bad cell
    for c, col in enumerate(block.columns):
        for i, value in enumerate(block[col].tolist()):
            problem = _cell_problem(value)
            if problem:
                bad.append((i, c, *problem))
                break
    if not bad:  # numpy and float() disagree on some text: name the column block at least
        raise MribenchError(f"{path}: the feature columns could not be read as numbers")
    i, c, problem, not_numeric = min(bad)
    col = block.columns[c]
    if not_numeric:
        raise MribenchError(f"{path}: column '{col}' is not numeric: {where(i)} has {problem}; every column "
                            f"besides {', '.join([*KEYS, SEQUENCE])} must be a number (drop or encode it)")
    raise MribenchError(f"{path}: {where(i)}, column '{col}' {problem}; features must be finite numbers "
                        "(impute or drop that row)")


def _cell_problem(value) -> tuple[str, bool] | None:
    """(what is wrong, whether it is not a number at all) for a cell, or None when it is usable."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        text = str(value).strip()
        if text.lower() in _MISSING:
            return f"is empty ({text!r})", False
        return repr(text[:40]), True
    if math.isnan(x):
        return "is NaN", False
    if math.isinf(x):
        return "is infinite", False
    if abs(x) > _FLOAT32_MAX:
        return f"is {x:g}, beyond float32", False
    return None


def _describe(key: tuple[str, ...]) -> str:
    labels = ("participant", "session", "sequence")
    return ", ".join(f"{label} {value}" for label, value in zip(labels, key))


# ------------------------------------------------------------------------------------------ encoder


def default_name(path: str | Path) -> str:
    """``features-<file stem>``, made a valid results-folder name."""
    from bench.results import safe_name

    return f"features-{safe_name(Path(path).stem)}"


def check_name(name: str) -> str:
    """A features run's name files its records: a safe folder name, not a registered encoder's."""
    from bench.results import safe_name

    if safe_name(name) != name:
        raise MribenchError(f"--name {name!r}: use letters, digits, '.', '_' or '-' (it names the results folder), "
                            f"e.g. {safe_name(name)}")
    if name.lower() in {n.lower() for n in list_encoders()}:  # folders may be case-insensitive
        raise MribenchError(f"--name {name}: a registered encoder has that name and its records would mix with "
                            "these; choose another")
    return name


@register_encoder("features")
class FeaturesEncoder(Encoder):
    """Precomputed per-scan features from a table (see the module docstring)."""

    def __init__(self, features: str | Path | None = None, name: str | None = None):
        if features is None:
            raise MribenchError("precomputed features: give the table with --features PATH "
                                "(.tsv, .csv, .parquet or .npz keyed by participant_id, session_id[, sequence])")
        self.table = read_features(features)
        self.card = EncoderCard(
            name=check_name(name or default_name(features)), architecture="precomputed features",
            n_parameters=0, embed_dim=len(self.table.columns), input_space="cpu-small", ssl_method="none",
            checkpoint_sha256=self.table.sha256, reference=f"precomputed table {self.table.path.name}")

    def embed(self, volumes: torch.Tensor) -> torch.Tensor:
        raise MribenchError(f"{self.card.name} reads precomputed features by scan key, not voxels")

    def embed_rows(self, rows: pd.DataFrame, cohort) -> np.ndarray:
        return self.table.lookup(rows)

    def checkpoint_hash(self) -> str:
        """The table file's SHA-256: caches and records bind the features actually read."""
        return self.table.sha256


def run_options(encoders: list[str], features: str | None, name: str | None,
                weights: str | None = None) -> dict[str, str]:
    """Encoder arguments of ``bench run --encoder features --features PATH [--name NAME]``.

    Checked (the table read and validated) before the cohort is opened, so a bad table stops the
    run in a second rather than after the cohort is generated.
    """
    if weights is not None and "features" in encoders:
        raise MribenchError("--weights does not apply to --encoder features: the table is the encoder")
    if features is None:
        if name is not None:
            raise MribenchError("--name names the records of a features table: use it with "
                                "--encoder features --features PATH")
        if "features" in encoders:
            FeaturesEncoder()  # raises: says how to give the table
        return {}
    if list(encoders) != ["features"]:
        raise MribenchError(f"--features is the table of --encoder features, alone (got --encoder "
                            f"{' --encoder '.join(encoders)})")
    path = str(Path(features).resolve())  # workers in other folders read the same file
    FeaturesEncoder(path, name)
    return {"features": path, **({"name": name} if name else {})}
