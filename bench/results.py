"""The result record: one JSON per (encoder, task@version, protocol).

A record is what the leaderboard ingests and what a reader trusts, so it is schema-validated
(unknown keys are errors, not silently dropped), written atomically (an interrupted run leaves
either the old file or none, never half a file, so resume can redo exactly what is missing),
and carries the provenance needed to reproduce or distrust the numbers. Its identity
(:func:`record_identity`: encoder, weights hash, cohort and its hash, profile, seeds, task and
split hashes) is what decides whether a rerun may skip it. Records are read only through
:func:`load_record`, which bounds size and nesting before parsing (:func:`read_bounded_json`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import platform
import re
import secrets
import subprocess
import zlib
from datetime import datetime, timedelta, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench import __version__
from bench.errors import MribenchError
from bench.names import check_name, json_has_control, strip_tree

SCHEMA_VERSION = 1

#: Libraries whose versions can change a number; recorded so a diff between two runs is explainable.
LIBRARIES: tuple[str, ...] = ("torch", "numpy", "scikit-learn", "monai", "nibabel", "lifelines", "pandas",
                              "scipy")

EvalSplit = Literal["test", "external"]


class _Strict(BaseModel):
    """Base for every record model: a misspelt key is an error rather than a silently lost field."""

    model_config = ConfigDict(extra="forbid")


class CI(_Strict):
    """Bootstrap confidence interval over test subjects; bounds are None where undefined (n too small)."""

    point: float | None
    low: float | None
    high: float | None
    se: float | None
    n: int


class SettingScore(_Strict):
    """Metrics of one (setting, seed, split), e.g. ``fraction=0.1`` / seed 2 / ``test``.

    ``setting`` is the setting's label; its structured parameters (``{"fraction": 0.1}``) are in
    ``params`` beside what the fit chose, in records written since settings were structured (read
    older ones with :meth:`bench.protocols.Protocol.params_of`)."""

    setting: str
    seed: int
    split: EvalSplit
    metrics: dict[str, float | None]
    ci: dict[str, CI] = Field(default_factory=dict)
    n_subjects: int
    n_examples: int
    params: dict[str, Any] = Field(default_factory=dict)


class CohortInfo(_Strict):
    """Which data the numbers came from; ``root_hash`` pins the exact files when it is known."""

    name: str
    n_scans: int
    root_hash: str | None = None

    @field_validator("name")
    @classmethod
    def _cohort_is_a_name(cls, v: str) -> str:
        # the split file a record is checked against is found from this name: never a path
        return check_name("cohort", v)


class Hardware(_Strict):
    """The machine, because timings and (on GPU) some numerics depend on it."""

    platform: str
    processor: str
    cpu_count: int | None
    torch_threads: int | None
    cuda: str | None


class Provenance(_Strict):
    """Everything needed to reproduce a record, or to tell why two records disagree."""

    mribench_version: str
    git_commit: str | None
    git_dirty: bool | None
    task_spec_sha256: str
    split_sha256: str
    split_file: str
    cohort: CohortInfo
    encoder_card: dict[str, Any]
    checkpoint_sha256: str
    #: SHA-256 of the weights the harness saw loaded (the module's state dict; the card for an encoder
    #: without one), computed by the harness rather than declared; None in records written before it
    weights_sha256: str | None = None
    config: dict[str, Any]
    seeds: list[int]
    libraries: dict[str, str]
    hardware: Hardware
    started_at: str
    wall_time_s: float
    command: str
    #: where and how the job computed (:mod:`bench.devices`): device, precision, the micro-batch of a
    #: job that trains a network and its deterministic settings (``bit_reproducible``); None in records
    #: written before it, which were computed on a CPU in fp32
    compute: dict[str, Any] | None = None

    @field_validator("git_commit")
    @classmethod
    def _commit_is_hex(cls, v: str | None) -> str | None:
        # SHA-1 (40) or SHA-256 (64) object names; anything else means git output was misread.
        if v is not None and not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", v):
            raise ValueError(f"not a git commit hash: {v!r}")
        return v

    @field_validator("started_at")
    @classmethod
    def _started_at_is_utc(cls, v: str) -> str:
        # Records from many machines are compared; local times without an offset would be ambiguous.
        try:
            ts = datetime.fromisoformat(v)
        except ValueError:
            raise ValueError(f"not an ISO-8601 timestamp: {v!r}") from None
        if ts.utcoffset() != timedelta(0):
            raise ValueError(f"timestamp must be UTC: {v!r}")
        return v


class PredictionsFile(_Strict):
    """Where a record's per-example predictions are when they are not inline: a compact file beside
    the record (:mod:`bench.prediction_files`), pinned by its SHA-256 so an edit is detected."""

    file: str
    format: str
    sha256: str
    rows: int

    @field_validator("file")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        # a file beside the record, never a path: a record must not make a reader open another file
        from bench.prediction_files import SUFFIX

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v) or not v.endswith(SUFFIX):
            raise ValueError(f"not the name of a predictions file beside the record: {v!r}")
        return v

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError(f"not a SHA-256: {v!r}")
        return v


class ResultRecord(_Strict):
    """One JSON per (encoder, task@version, protocol); ``main_score`` is top-level so tools need no task
    knowledge to read the headline number."""

    schema_version: Literal[1] = SCHEMA_VERSION
    encoder: str
    task: str
    task_version: int
    protocol: str
    main_score_name: str
    main_score: float | None
    higher_is_better: bool
    headline_setting: str
    scores: list[SettingScore]
    summary: dict[str, dict[str, Any]]
    #: per-example rows (None: not kept). On disk they are inline, or (``write_record``'s default) in a
    #: predictions file beside the record that its ``predictions_file`` key names (a
    #: :class:`PredictionsFile`); :func:`load_record` reads either into this list.
    predictions: list[dict[str, Any]] | None = None
    flags: list[str] = Field(default_factory=list)
    provenance: Provenance
    #: robustness protocol only: score per perturbation x severity, relative drops, and what pins the
    #: perturbations (seed, severities, scans, parameters_sha256; per-scan ``parameters`` in older records)
    robustness: dict[str, Any] | None = None
    #: reliability protocol only: what its numbers are (value, ICC form, identification, tracking), the
    #: number of rescan pairs per split and the SHA-256 of the rescans it read
    reliability: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _text_is_text(cls, data: Any) -> Any:
        # free text loses its control characters; names keep them, so their validators refuse them
        return _strip_record_text(data) if isinstance(data, dict) else data

    @field_validator("encoder")
    @classmethod
    def _encoder_is_a_name(cls, v: str) -> str:
        return check_name("encoder", v)

    @field_validator("task")
    @classmethod
    def _task_is_a_name(cls, v: str) -> str:
        return check_name("task", v)

    @field_validator("protocol")
    @classmethod
    def _registered_protocol(cls, v: str) -> str:
        from bench.protocols import PROTOCOLS

        check_name("protocol", v)
        if v not in PROTOCOLS:
            raise ValueError(f"unknown protocol {v!r}; registered: {', '.join(PROTOCOLS)}")
        return v


#: Protocol blocks added to the record after its schema was first written (``reliability``): left out
#: of a record's JSON when empty, so other protocols' records are byte for byte what they were.
OPTIONAL_BLOCKS = ("reliability",)


#: Top-level record fields that are names: validated as they are (:func:`bench.names.check_name`),
#: never stripped, so a name with a control character is refused rather than quietly repaired.
_NAME_FIELDS = ("encoder", "task", "protocol")


def _strip_record_text(data: dict[str, Any]) -> dict[str, Any]:
    """The record's raw JSON with control characters stripped from every string
    (:func:`bench.names.strip_tree`) except the names (the top-level ones and the cohort's) and the
    per-example predictions, which :func:`load_record` strips as it reads them (walking a million
    rows here would double the time ``bench verify`` takes; the reader knows when none can need it)."""
    out = {k: v if k in _NAME_FIELDS or k == "predictions" else strip_tree(v) for k, v in data.items()}
    prov = data.get("provenance")
    cohort = prov.get("cohort") if isinstance(prov, dict) else None
    if isinstance(cohort, dict) and "name" in cohort:
        out["provenance"] = {**out["provenance"], "cohort": {**out["provenance"]["cohort"], "name": cohort["name"]}}
    return out


# --------------------------------------------------------------------------------------------- summary


def summary_key(setting: str, split: str) -> str:
    """Key of a summary entry; one string so the JSON stays a flat, sortable mapping."""
    return f"{setting}|{split}"


def summarise(scores: Iterable[SettingScore | Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Mean and sample std (ddof=1) over seeds of every metric, per ``setting|split``.

    A seed whose metric is None (undefined, e.g. AUC on a one-class draw) is left out rather than
    counted as zero, and ``n_seeds`` says how many were used. The std is None below two seeds: one
    seed says nothing about seed-to-seed spread, and 0.0 would claim it does.
    """
    groups: dict[str, list[Mapping[str, float | None]]] = {}
    for s in scores:
        row = s.model_dump() if isinstance(s, SettingScore) else s
        groups.setdefault(summary_key(row["setting"], row["split"]), []).append(row["metrics"])
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for key, rows in groups.items():
        names = sorted({name for r in rows for name in r})  # union: a metric missing from seed 0 still counts
        stats: dict[str, dict[str, Any]] = {}
        for name in names:
            vals = np.array([r[name] for r in rows if r.get(name) is not None], dtype=float)
            vals = vals[np.isfinite(vals)]
            stats[name] = {
                "mean": float(vals.mean()) if len(vals) else None,
                "std": float(vals.std(ddof=1)) if len(vals) > 1 else None,
                "n_seeds": int(len(vals)),
            }
        out[key] = stats
    return out


# ------------------------------------------------------------------------------------------ provenance


def _repo_root() -> Path:
    """The checkout the code runs from: the parent of the ``bench`` package."""
    return Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    """Output of a read-only git command in the repo root, or None when that is not a git checkout.

    The ``.git`` check keeps an installed copy nested in some unrelated repository from reporting that
    repository's commit. ``GIT_OPTIONAL_LOCKS=0`` stops ``git status`` from rewriting the index.
    """
    root = _repo_root()
    if not (root / ".git").exists():
        return None
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10,
                              check=True, env=env)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout; (None, None) outside git or where git is missing."""
    commit = _git("rev-parse", "HEAD")
    if not commit or not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", commit):
        return None, None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return commit, None if status is None else bool(status)


def library_versions() -> dict[str, str]:
    """Python and library versions, read from package metadata so nothing heavy is imported."""
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = version(lib)
        except PackageNotFoundError:
            out[lib] = "absent"
    return out


def hardware() -> Hardware:
    """The machine the run used (CUDA device name, or None on CPU)."""
    import torch

    return Hardware(platform=platform.platform(), processor=platform.processor() or platform.machine(),
                    cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
                    cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)


def collect_provenance(*, wall_time_s: float = 0.0, started_at: datetime | str | None = None,
                       **known: Any) -> Provenance:
    """Provenance from what the caller knows (hashes, cohort, card, config, seeds, command) plus what
    can be measured here: mribench version, git commit and dirtiness, library versions, hardware.

    Callers usually collect provenance once the job is done, so without an explicit ``started_at``
    the start is taken as now minus ``wall_time_s``. Any measured field can be overridden via ``known``.
    """
    if started_at is None:
        started_at = datetime.now(timezone.utc) - timedelta(seconds=float(wall_time_s))
    if isinstance(started_at, datetime):
        if started_at.tzinfo is None:
            raise MribenchError("collect_provenance: started_at must be timezone-aware (UTC)")
        started_at = started_at.astimezone(timezone.utc).isoformat(timespec="seconds")
    commit, dirty = git_state()
    fields: dict[str, Any] = {
        "mribench_version": __version__, "git_commit": commit, "git_dirty": dirty,
        "libraries": library_versions(), "hardware": hardware(),
        "started_at": started_at, "wall_time_s": float(wall_time_s),
    }
    fields.update(known)
    return Provenance.model_validate(fields)


# -------------------------------------------------------------------------------------------- identity
#: What a record's numbers are a function of, besides the code: two runs that differ in any of
#: these are two results, and one must not be taken for the other. (Task version, protocol and
#: encoder name are in the record's path already.)
IDENTITY_FIELDS: tuple[str, ...] = ("encoder", "weights", "cohort", "cohort hash", "profile", "profile settings",
                                    "seeds", "task hash", "split hash", "precision", "batch size", "cohort extras")


def record_identity(record: ResultRecord) -> dict[str, Any]:
    """The identity of an existing record, read from its provenance (fields it predates are None)."""
    p = record.provenance
    return {"encoder": record.encoder, "weights": p.weights_sha256, "cohort": p.cohort.name,
            "cohort hash": p.cohort.root_hash, "profile": p.config.get("profile"),
            "profile settings": p.config.get("profile_settings"), "seeds": list(p.seeds),
            "task hash": p.task_spec_sha256, "split hash": p.split_sha256,
            # written only when not the default (bench.devices), so records written before them match
            "precision": p.config.get("precision", "fp32"), "batch size": p.config.get("batch_size"),
            # what the protocol reads of the cohort beyond its table (bench.runner.cohort_extras)
            "cohort extras": p.config.get("cohort_extras")}


def _shown(value: Any) -> str:
    """A value of an identity field, short enough for a one-line error (hashes to 12 characters)."""
    if value is None:
        return "none"
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value):
        return value[:12]
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def identity_differences(existing: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """Each field that differs, as ``field old -> new`` (for a dict, only the keys that differ)."""
    out = []
    for field in IDENTITY_FIELDS:
        old, new = existing.get(field), requested.get(field)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            changed = ", ".join(f"{k} {_shown(old.get(k))} -> {_shown(new.get(k))}" for k in keys)
            out.append(f"{field} ({changed})")
        else:
            out.append(f"{field} {_shown(old)} -> {_shown(new)}")
    return out


def existing_record_matches(path: str | Path, requested: Mapping[str, Any]) -> ResultRecord | None:
    """Whether the job of ``path`` is done: the record, when a valid one with the requested identity is
    there (skip it; the caller reports it without reading it again), None when none or an unreadable
    one is (run it). A valid record of another
    run (other weights, cohort, profile, seeds, task or split) is a one-line ``MribenchError``:
    skipping would report that run's numbers as this one's, and replacing it silently would lose them.
    """
    try:
        record = load_record(path)
    except MribenchError:
        return None
    differences = identity_differences(record_identity(record), requested)
    if differences:
        raise MribenchError(f"{path}: holds the result of another run ({'; '.join(differences)}); rerun with "
                            "--overwrite to replace it, or write to another folder with --results DIR")
    return record


# ---------------------------------------------------------------------------------------------- paths


def safe_name(name: str) -> str:
    """A file-system-safe single path component (``dir/my_enc.py:Enc`` -> ``my_enc.py-Enc``).

    Leading/trailing dots and dashes are stripped so a name can never be ``.``/``..`` or hidden.
    """
    if ".py:" in name:
        path, _, cls = name.rpartition(":")
        file_name = re.split(r"[/\\]", path)[-1]  # POSIX or Windows separators
        name = f"{file_name}-{cls}"
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return cleaned or "encoder"


def record_path(results_dir: str | Path, encoder: str, task: str, task_version: int, protocol: str) -> Path:
    """``results_dir/<encoder>/<task>@v<version>/<protocol>.json``: one file per job, so resume is a
    file-existence check and parallel jobs never write the same file."""
    return (Path(results_dir) / safe_name(encoder) / f"{safe_name(task)}@v{int(task_version)}"
            / f"{safe_name(protocol)}.json")


# ------------------------------------------------------------------------------------------ write/read


def _clean(obj: Any) -> Any:
    """JSON-ready copy: NaN/inf -> None (JSON has no NaN), numpy scalars/arrays -> Python."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return None if not math.isfinite(f) else f
    return obj


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself; best effort, since not every platform can open a directory."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes, record: Path | None = None) -> None:
    """Write ``data`` atomically: a hidden temp file in the same folder, flush + fsync, then ``os.replace``.

    A crash at any point leaves the previous file (or no file), never a partial one; the temp file is
    removed on failure and never ends in ``.json``, so ``iter_records`` cannot pick it up. The temp file
    is created with mode 0o666 so the umask, not a private 0o600, decides who can read results. It is
    named after ``record`` (default ``path``), ``.<record name>.<pid>.<random>.tmp``, so the runner's
    :func:`bench.jobs.remove_stale_temporaries` finds what a killed writer of that record left.
    """
    tmp = path.parent / f".{(record or path).name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _scalar(value: Any) -> bool:
    return not isinstance(value, (dict, list, tuple))


def _flat(value: Any) -> bool:
    """A scalar, or a list of scalars: what fits on one line inside a one-line container."""
    return _scalar(value) or (isinstance(value, (list, tuple)) and all(map(_scalar, value)))


def record_json(obj: Any, depth: int = 0) -> str:
    """The JSON text of a record: keys sorted, one key per line indented by one space, but a list of
    scalars, or an object whose values are scalars or lists of scalars (a CI, a card's subject ids,
    one score's metrics), on one line. A third the size of ``indent=2`` (whose long lists of ids and
    small objects take a line per number), and still a diff that names the score that changed."""
    if _scalar(obj):
        return json.dumps(obj, allow_nan=False)
    pad = " " * (depth + 1)
    if isinstance(obj, Mapping):
        items = sorted((str(k), v) for k, v in obj.items())
        if all(_flat(v) for _, v in items):
            return "{" + ", ".join(f"{json.dumps(k)}: {record_json(v)}" for k, v in items) + "}"
        inner = ",\n".join(f"{pad}{json.dumps(k)}: {record_json(v, depth + 1)}" for k, v in items)
        return "{\n" + inner + "\n" + " " * depth + "}"
    if all(map(_scalar, obj)):
        return "[" + ", ".join(record_json(v) for v in obj) + "]"
    return "[\n" + ",\n".join(pad + record_json(v, depth + 1) for v in obj) + "\n" + " " * depth + "]"


def _record_bytes(payload: Mapping[str, Any]) -> bytes:
    return (record_json(payload) + "\n").encode("utf-8")


def _pack_predictions(payload: dict[str, Any], path: Path) -> bytes | None:
    """Move the JSON-ready ``payload``'s predictions into a predictions file for the record at
    ``path`` (:mod:`bench.prediction_files`): returns the file's bytes and points the payload at
    it, or None (payload unchanged) when there are none or they are not of the harness's shape.
    The file is decoded again before it is used, so only an exact round trip leaves the record."""
    from bench.prediction_files import FORMAT, decode, encode, sidecar_name

    rows = payload.get("predictions")
    packed = encode(rows) if isinstance(rows, list) else None
    if packed is None:
        return None
    again = decode(json.loads(gzip.decompress(packed)))
    if json.dumps(again, sort_keys=True) != json.dumps(rows, sort_keys=True):
        return None  # never lose a digit: keep them inline
    payload["predictions"] = None
    payload["predictions_file"] = {"file": sidecar_name(path.name), "format": FORMAT,
                                   "sha256": hashlib.sha256(packed).hexdigest(), "rows": len(rows)}
    return packed


def write_record(record: ResultRecord, path: str | Path, *, inline_predictions: bool = False) -> Path:
    """Write a record atomically (:func:`_write_atomic`): the record JSON, and its per-example
    predictions in a compact predictions file beside it (``<stem>.predictions.json.gz``, whose
    SHA-256 the record names) unless ``inline_predictions``, or they are not of the harness's shape.

    The predictions file is written first, so a crash in between leaves the previous record, which
    names another SHA-256 and so no longer loads: resume redoes the job. A predictions file left from
    an earlier write of the same record is removed when the new one keeps none.
    """
    from bench.prediction_files import sidecar_name

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = _clean(record.model_dump(mode="python"))
    for block in OPTIONAL_BLOCKS:  # absent rather than null: records written before the block existed stay alike
        if payload.get(block) is None:
            payload.pop(block, None)
    packed = None if inline_predictions else _pack_predictions(payload, path)
    sidecar = path.parent / sidecar_name(path.name)
    if packed is not None:
        _write_atomic(sidecar, packed, record=path)
    _write_atomic(path, _record_bytes(payload))
    if packed is None:
        sidecar.unlink(missing_ok=True)
    return path


def compact_record(path: str | Path) -> str:
    """Rewrite a record in today's compact form, every number kept: inline predictions moved into a
    predictions file, a robustness block's per-scan ``parameters`` replaced by the scans and their
    SHA-256 (:func:`bench.perturbations.slim_block`, only when they are exactly what the recomputation
    gives) and the JSON laid out by :func:`record_json`; idempotent. Returns what was done:
    ``compacted`` (something was rewritten), else ``already compact``, ``no predictions`` or ``kept
    inline`` (rows not of the harness's shape). An invalid record is a one-line ``MribenchError``."""
    from bench.perturbations import slim_block

    path = Path(path)
    record = load_record(path)
    payload = read_bounded_json(path, "result record")
    state = ("already compact" if payload.get("predictions_file") is not None
             else "no predictions" if not record.predictions else "kept inline")
    packed = _pack_predictions(payload, path) if state == "kept inline" else None
    slim = slim_block(payload.get("robustness"))
    if slim is not None:
        payload["robustness"] = slim
    data = _record_bytes(payload)
    if packed is None and data == path.read_bytes():
        return state
    if packed is not None:
        _write_atomic(path.parent / payload["predictions_file"]["file"], packed, record=path)
    _write_atomic(path, data)
    return "compacted"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


#: Largest record file read (bytes). A smoke record is tens of KB and a full-profile record with
#: every per-example prediction a few MB; a bigger file is refused before it is read into memory.
MAX_RECORD_BYTES = 64 * 1024 * 1024
#: Deepest nesting of ``[`` / ``{`` in a record. Records nest about 6 deep; Python's JSON parser
#: recurses once per level and dies with RecursionError near 1000, so depth is checked first.
MAX_JSON_DEPTH = 64

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')


def json_depth(text: str) -> int:
    """Deepest bracket nesting of a JSON text, brackets inside strings not counted.

    Vectorised (strings removed by one regex, then a cumulative sum over the bracket characters),
    so checking a multi-MB record costs milliseconds. A malformed text may be over-counted; it
    would not parse anyway.
    """
    brackets = re.sub(r"[^\[\]{}]+", "", _JSON_STRING.sub("", text))
    if not brackets:
        return 0
    codes = np.frombuffer(brackets.encode("ascii"), dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def refuse_non_finite(token: str) -> Any:
    """``parse_constant`` of every reader of files nobody vouches for: Python's json reads ``NaN``,
    ``Infinity`` and ``-Infinity``, which JSON does not allow and mribench never writes
    (``allow_nan=False``); a CI of [NaN, Infinity] must be refused at read, not printed as ``nan-inf``."""
    raise ValueError(f"{token} is not a JSON number (mribench writes none)")


def read_bounded_json(path: str | Path, what: str = "JSON file", *, max_bytes: int = MAX_RECORD_BYTES,
                      max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a JSON file nobody vouches for (records, failure markers, cards): its size is checked
    before it is read and its nesting depth before it is parsed, so a crafted file is a one-line
    ``MribenchError`` naming it, never a MemoryError or RecursionError that stops the command."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise MribenchError(f"{path}: not a readable {what} ({size} bytes, more than the {max_bytes} allowed); "
                                "delete it or rerun the job")
        text = path.read_text(encoding="utf-8")
        depth = json_depth(text)
        if depth > max_depth:
            raise MribenchError(f"{path}: not a readable {what} (nested {depth} deep, more than the {max_depth} "
                                "allowed); delete it or rerun the job")
        return json.loads(text, parse_constant=refuse_non_finite)
    except (OSError, ValueError, RecursionError) as e:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise MribenchError(f"{path}: not a readable {what} ({_one_line(e)}); delete it or rerun the job") from None


def read_predictions_file(path: str | Path, expected: PredictionsFile, record_name: str) -> list[dict]:
    """The rows of the predictions file at ``path``, which the record ``record_name`` names with
    ``expected``; a missing, altered (SHA-256) or unreadable file is a one-line ``MribenchError``
    naming it. Size, decompressed size and nesting are bounded as for records."""
    from bench.prediction_files import FORMAT, PredictionsFileError, decode, gunzip_bounded

    path = Path(path)
    if not path.is_file():
        raise MribenchError(f"{path}: missing; {record_name} keeps its predictions there: restore the file "
                            "beside the record or rerun the job")
    try:
        if path.stat().st_size > MAX_RECORD_BYTES:
            raise ValueError(f"{path.stat().st_size} bytes, more than the {MAX_RECORD_BYTES} allowed")
        blob = path.read_bytes()
        actual = hashlib.sha256(blob).hexdigest()
        if actual != expected.sha256:
            raise MribenchError(f"{path}: SHA-256 {actual[:12]} is not the {expected.sha256[:12]} {record_name} "
                                "names: the predictions were altered or replaced; restore them or rerun the job")
        if expected.format != FORMAT:
            raise ValueError(f"format {expected.format!r}; this version reads {FORMAT}")
        text = gunzip_bounded(blob).decode("utf-8")  # byte and expansion-ratio limits, before allocating
        if json_depth(text) > MAX_JSON_DEPTH:
            raise ValueError(f"nested more than {MAX_JSON_DEPTH} deep")
        rows = decode(json.loads(text, parse_constant=refuse_non_finite))
        if json_has_control(text):  # text is text: ids lose their control characters as records do
            rows = strip_tree(rows)
        if len(rows) != expected.rows:
            raise ValueError(f"{len(rows)} rows where {record_name} says {expected.rows}")
        return rows
    except (OSError, EOFError, zlib.error, ValueError, TypeError, OverflowError, RecursionError,
            PredictionsFileError) as e:
        raise MribenchError(f"{path}: not a readable predictions file ({_one_line(e)}); rerun the job") from None


def _with_predictions(path: Path, data: Any) -> Any:
    """The record's JSON with its predictions read from the predictions file its ``predictions_file``
    names (that key removed, so both forms validate as the same :class:`ResultRecord`)."""
    if not isinstance(data, dict):
        return data
    if "predictions_file" not in data:  # inline (older records): few, so always stripped
        return {**data, "predictions": strip_tree(data["predictions"])} if "predictions" in data else data
    data = dict(data)
    ref = data.pop("predictions_file")
    if ref is None:
        return {**data, "predictions": strip_tree(data.get("predictions"))}
    try:
        ref = PredictionsFile.model_validate(ref)
    except ValidationError as e:
        raise _invalid(path, e, prefix="predictions_file.") from None
    if data.get("predictions") is not None:
        raise MribenchError(f"{path}: has inline predictions and a predictions file; keep one (rerun the job)")
    data["predictions"] = read_predictions_file(_beside(path, ref.file), ref, path.name)
    return data


def _beside(record: Path, name: str) -> Path:
    """The file ``name`` beside ``record``, refused (one line) when it is a symbolic link or resolves
    anywhere else: a record reads its own predictions, never another record's through a link."""
    sidecar = record.parent / name
    if sidecar.is_symlink() or sidecar.resolve().parent != record.parent.resolve():
        raise MribenchError(f"{record}: its predictions file {name!r} is a symbolic link or lies outside the "
                            "record's folder; copy the file itself beside the record")
    return sidecar


def read_record_json(path: str | Path) -> dict[str, Any]:
    """A record file's JSON as the harness wrote it before predictions files: predictions inline (read
    from the predictions file when there is one), no ``predictions_file``. For tools and tests that
    compare records as data; not validated (use :func:`load_record` for that)."""
    path = Path(path)
    return _with_predictions(path, read_bounded_json(path, "result record"))


def load_record(path: str | Path) -> ResultRecord:
    """Read and validate one record; any problem is a one-line ``MribenchError`` naming the file.

    Every reader of records (``bench run``'s resume, ``status``, ``verify``, ``leaderboard``)
    comes through here, and so through :func:`read_bounded_json`. Predictions kept in a
    predictions file are read into ``predictions`` (:func:`read_predictions_file`), so readers
    see the same rows whichever way the record stores them."""
    path = Path(path)
    data = _with_predictions(path, read_bounded_json(path, "result record"))
    try:
        return ResultRecord.model_validate(data)
    except ValidationError as e:
        raise _invalid(path, e) from None


def _invalid(path: Path, e: ValidationError, prefix: str = "") -> MribenchError:
    """One line naming the file, the first invalid field and how many more there are."""
    errors = e.errors()
    first = errors[0]
    loc = prefix + ".".join(map(str, first["loc"])) if first["loc"] else prefix.rstrip(".") or "<root>"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return MribenchError(f"{path}: invalid result record at '{loc}': {_one_line(first['msg'])}{more}")


def record_exists(path: str | Path) -> bool:
    """True only for a record that validates: a partial or corrupt file counts as missing, so resume
    redoes that job instead of trusting it."""
    try:
        load_record(path)
    except MribenchError:
        return False
    return True


def iter_records(results_dir: str | Path) -> Iterator[tuple[Path, ResultRecord | MribenchError]]:
    """Every ``*.json`` under ``results_dir`` in path order, with its record or the error that makes it
    unusable, so callers decide whether to skip, report or fail."""
    for path in sorted(Path(results_dir).rglob("*.json")):
        if not path.is_file():
            continue
        try:
            yield path, load_record(path)
        except MribenchError as e:
            yield path, e
