"""Compact, exact storage of a record's per-example predictions: a gzip-compressed columnar JSON file.

A record's ``predictions`` are a list of rows ``{example_id, participant_id, seed, setting, split,
y_pred, y_true}``; inline and indented they are most of a record's bytes (3 MB for a default-profile
``fractions`` record). :func:`encode` turns them into a *predictions file* (written beside the record
as ``<stem>.predictions.json.gz``, its SHA-256 in the record's ``predictions_file``) and
:func:`decode` gives back the very same rows, in the same order, with the same values and types.

Layout (one JSON object, gzip-compressed with no name or time in the header, so equal rows give
equal bytes)::

    {"format": "mribench-predictions/1", "rows": 12030,
     "example_id": [...], "participant_id": [...],          # each example once
     "blocks": [{"setting": "fraction=0.1", "seed": 0, "split": "test",
                 "rows": [0, 527],                          # example indices as [start, stop) runs
                 "y_true": [...],                           # as written in the record
                 "y_pred": {"micro": [...]}}, ...]}

A block is a run of consecutive rows with the same (setting, seed, split). ``y_pred`` is stored as
one of

* ``{"micro": [k, ...]}``: one float per row, each exactly ``k / 1e6`` (the harness rounds
  predictions to 6 decimals, so ``k`` is an integer and the float is restored bit for bit);
* ``{"micro_columns": [[k, ...], ..., [r, ...]]}``: one list of C floats per row (class
  probabilities), column by column; the last column is stored as its difference from
  ``1e6 - sum(other columns)``, which is 0 or +-1 where the row's probabilities sum to 1;
* ``{"json": [...]}``: the values as written, for anything else (a value not on the 1e-6 grid,
  None, an integer, rows of unequal length).

Rows that do not have exactly the seven keys above with string ids, labels and an integer seed, or
an example with two participant ids, are not encoded (:func:`encode` returns None) and stay inline.
"""

from __future__ import annotations

import gzip
import io
import json
from typing import Any

import numpy as np

FORMAT = "mribench-predictions/1"
#: Name of a record's predictions file: ``fractions.json`` -> ``fractions.predictions.json.gz``.
SUFFIX = ".predictions.json.gz"
KEYS = ("example_id", "participant_id", "seed", "setting", "split", "y_pred", "y_true")
SCALE = 1_000_000


#: Most bytes a predictions file may decompress to. The largest committed one is 245 KB
#: (``mae3d/ad_diagnosis@v1/few_shot``, 12,030 rows); 16 MiB is ~65x that, room for a real
#: cohort of ~10,000 examples at the default profile, and json.loads of it stays well under 300 MB.
MAX_DECOMPRESSED_BYTES = 16 * 1024 * 1024
#: Most a predictions file may expand by, past its first :data:`RATIO_FREE_BYTES`. Committed
#: files expand 3-7x, at most 49x (a 1.5 KB file of repeated labels); a gzip bomb of zeros
#: expands ~1000x and is stopped after ``ratio x`` its size, before it is parsed.
MAX_EXPANSION_RATIO = 100
RATIO_FREE_BYTES = 1024 * 1024
#: Decompressed bytes per step: the limits are checked between steps, never after the whole file.
CHUNK_BYTES = 256 * 1024


class PredictionsFileError(ValueError):
    """A predictions file that is not what :func:`encode` writes (the caller names the file)."""


def gunzip_bounded(blob: bytes, max_bytes: int = MAX_DECOMPRESSED_BYTES,
                   max_ratio: int = MAX_EXPANSION_RATIO) -> bytes:
    """``blob`` decompressed, in chunks, refused (:class:`PredictionsFileError`) as soon as it passes
    ``max_bytes`` or ``max_ratio`` times its compressed size (past :data:`RATIO_FREE_BYTES`): a
    65 KB file must not inflate into 64 MB (and gigabytes of parsed JSON) before it is judged.
    Reads one gzip member, as :func:`encode` writes; zlib errors propagate to the caller."""
    import zlib

    limit = min(max_bytes, max(RATIO_FREE_BYTES, max_ratio * len(blob)))
    inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip header and trailer checked
    out, size, pending = [], 0, blob
    while pending and not inflate.eof:
        chunk = inflate.decompress(pending, CHUNK_BYTES)
        pending = inflate.unconsumed_tail
        size += len(chunk)
        if size > limit:
            why = "bytes" if limit == max_bytes else f"bytes ({max_ratio}x its {len(blob)} compressed bytes)"
            raise PredictionsFileError(f"decompresses to more than {limit} {why}")
        out.append(chunk)
    if not inflate.eof:
        raise PredictionsFileError("a truncated gzip stream")
    return b"".join(out)


def sidecar_name(record_name: str) -> str:
    """The predictions file of a record file: ``few_shot.json`` -> ``few_shot.predictions.json.gz``."""
    stem = record_name[:-len(".json")] if record_name.endswith(".json") else record_name
    return stem + SUFFIX


# ------------------------------------------------------------------------------------------ encode


def _encodable(rows: list[Any]) -> bool:
    """Rows of the harness's shape: exactly :data:`KEYS`, string ids and labels, an integer seed."""
    for r in rows:
        if not isinstance(r, dict) or len(r) != len(KEYS) or any(k not in r for k in KEYS):
            return False
        if not all(isinstance(r[k], str) for k in ("example_id", "participant_id", "setting", "split")):
            return False
        if type(r["seed"]) is not int:
            return False
    return True


def _runs(indices: list[int]) -> list[int]:
    """[3, 4, 5, 9] -> [3, 6, 9, 10]: consecutive indices as flat [start, stop) pairs."""
    out: list[int] = []
    for i in indices:
        if out and out[-1] == i:
            out[-1] = i + 1
        else:
            out += [i, i + 1]
    return out


def _unruns(runs: list[int], n_ids: int) -> list[int]:
    """The example indices of [start, stop) runs, each run checked within ``n_ids`` before it is
    expanded (``[0, 10**9]`` in a small file must not become a billion integers)."""
    if not isinstance(runs, list) or len(runs) % 2 or not all(type(v) is int for v in runs):
        raise PredictionsFileError("a block's rows are not [start, stop) pairs of integers")
    if any(not 0 <= start <= stop <= n_ids for start, stop in zip(runs[::2], runs[1::2])):
        raise PredictionsFileError("a block names an example the file does not list")
    return [i for start, stop in zip(runs[::2], runs[1::2]) for i in range(start, stop)]


def _micro(values: np.ndarray) -> np.ndarray | None:
    """Integers k with k / 1e6 bit-identical to ``values`` (None when some value is off that grid)."""
    if not np.all(np.isfinite(values)) or np.any(np.abs(values) > 2.0**52 / SCALE):
        return None
    k = np.rint(values * SCALE).astype(np.int64)
    return k if np.array_equal((k / SCALE).view(np.int64), values.view(np.int64)) else None


def _encode_y_pred(values: list[Any]) -> dict[str, Any]:
    """One block's y_pred in the smallest exact form (see the module docstring)."""
    if all(type(v) is float for v in values):
        k = _micro(np.asarray(values, dtype=np.float64))
        if k is not None:
            return {"micro": k.tolist()}
    elif values and all(type(v) is list and v and all(type(x) is float for x in v) for v in values) \
            and len({len(v) for v in values}) == 1 and len(values[0]) >= 2:
        k = _micro(np.asarray(values, dtype=np.float64))
        if k is not None:
            k[:, -1] -= SCALE - k[:, :-1].sum(axis=1)
            return {"micro_columns": k.T.tolist()}
    return {"json": values}


def _blocks(rows: list[dict], index: dict[str, int]) -> list[dict]:
    """Consecutive rows of one (setting, seed, split), each as a block."""
    blocks: list[dict] = []
    start = 0
    for end in range(1, len(rows) + 1):
        key = (rows[start]["setting"], rows[start]["seed"], rows[start]["split"])
        if end < len(rows) and (rows[end]["setting"], rows[end]["seed"], rows[end]["split"]) == key:
            continue
        part = rows[start:end]
        blocks.append({"setting": key[0], "seed": key[1], "split": key[2],
                       "rows": _runs([index[r["example_id"]] for r in part]),
                       "y_true": [r["y_true"] for r in part],
                       "y_pred": _encode_y_pred([r["y_pred"] for r in part])})
        start = end
    return blocks


def encode(rows: list[dict]) -> bytes | None:
    """The predictions file of ``rows`` (JSON-ready: what ``write_record`` would write inline), or
    None when they are not of the harness's shape and must stay inline."""
    if not rows or not _encodable(rows):
        return None
    index: dict[str, int] = {}
    participants: list[str] = []
    for r in rows:
        i = index.setdefault(r["example_id"], len(index))
        if i == len(participants):
            participants.append(r["participant_id"])
        elif participants[i] != r["participant_id"]:
            return None  # one example, two subjects: keep the rows as they are
    doc = {"format": FORMAT, "rows": len(rows), "example_id": list(index), "participant_id": participants,
           "blocks": _blocks(rows, index)}
    text = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as f:
        f.write(text)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ decode


def _decode_y_pred(stored: Any, n: int) -> list[Any]:
    if not isinstance(stored, dict) or len(stored) != 1:
        raise PredictionsFileError("a block's y_pred is not one of micro / micro_columns / json")
    (kind, values), = stored.items()
    if kind == "json" and isinstance(values, list):
        out = values
    elif kind == "micro":
        out = (np.asarray(values, dtype=np.int64) / SCALE).tolist()
    elif kind == "micro_columns":
        k = np.asarray(values, dtype=np.int64).T.copy()
        if k.ndim != 2 or k.shape[1] < 2:
            raise PredictionsFileError("a block's micro_columns are not columns of integers")
        k[:, -1] += SCALE - k[:, :-1].sum(axis=1)
        out = (k / SCALE).tolist()
    else:
        raise PredictionsFileError(f"a block's y_pred is stored as {kind!r}, which this version cannot read")
    if len(out) != n:
        raise PredictionsFileError(f"a block has {n} rows but {len(out)} predictions")
    return out


def _decode_block(block: Any, ids: list, participants: list) -> list[dict]:
    if not isinstance(block, dict) or set(block) != {"setting", "seed", "split", "rows", "y_true", "y_pred"}:
        raise PredictionsFileError("a block does not have setting / seed / split / rows / y_true / y_pred")
    rows = _unruns(block["rows"], len(ids))
    y_true = block["y_true"]
    if not isinstance(y_true, list) or len(y_true) != len(rows):
        raise PredictionsFileError(f"a block has {len(rows)} rows but y_true is not a list of that length")
    if rows and (min(rows) < 0 or max(rows) >= len(ids)):
        raise PredictionsFileError("a block names an example the file does not list")
    y_pred = _decode_y_pred(block["y_pred"], len(rows))
    seed, setting, split = block["seed"], block["setting"], block["split"]
    return [{"example_id": ids[i], "participant_id": participants[i], "seed": seed, "setting": setting,
             "split": split, "y_pred": yp, "y_true": yt} for i, yt, yp in zip(rows, y_true, y_pred)]


def decode(doc: Any) -> list[dict]:
    """The rows of a parsed predictions file; :class:`PredictionsFileError` when it is malformed."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise PredictionsFileError(f"not a predictions file of format {FORMAT}")
    ids, participants, blocks = doc.get("example_id"), doc.get("participant_id"), doc.get("blocks")
    if not (isinstance(ids, list) and isinstance(participants, list) and len(ids) == len(participants)
            and isinstance(blocks, list)):
        raise PredictionsFileError("example_id / participant_id / blocks are missing or of unequal length")
    rows = [row for block in blocks for row in _decode_block(block, ids, participants)]
    if doc.get("rows") != len(rows):
        raise PredictionsFileError(f"it says {doc.get('rows')} rows but holds {len(rows)}")
    return rows
