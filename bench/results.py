"""The result record: one JSON per (encoder, task@version, protocol), schema-validated, written
atomically, carrying the provenance a reader needs to trust or reproduce the numbers.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
import tempfile
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Iterator

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from bench import __version__
from bench.errors import MribenchError

LIBRARIES = ("torch", "numpy", "scikit-learn", "monai", "nibabel", "lifelines", "pandas", "scipy", "nilearn")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CI(_Strict):
    point: float | None
    low: float | None
    high: float | None
    se: float | None
    n: int


class SettingScore(_Strict):
    setting: str
    seed: int
    split: str
    metrics: dict[str, float | None]
    ci: dict[str, CI]
    n_subjects: int
    n_examples: int
    params: dict = {}


class Provenance(_Strict):
    mribench_version: str
    git_commit: str | None
    git_dirty: bool | None
    task_spec_sha256: str
    split_sha256: str
    split_file: str
    cohort: dict
    encoder_card: dict
    checkpoint_sha256: str
    config: dict
    seeds: list[int]
    libraries: dict[str, str]
    hardware: dict
    started_at: str
    wall_time_s: float
    command: str


class ResultRecord(_Strict):
    schema_version: int = 1
    encoder: str
    task: str
    task_version: int
    protocol: str
    main_score_name: str
    main_score: float | None
    higher_is_better: bool
    headline_setting: str
    scores: list[SettingScore]
    summary: dict[str, dict]
    predictions: list[dict] | None = None
    flags: list[str] = []
    provenance: Provenance


def summarise(scores: list[dict]) -> dict[str, dict]:
    """Per 'setting|split': mean and std over seeds of every metric (None where undefined)."""
    groups: dict[str, list[dict]] = {}
    for s in scores:
        groups.setdefault(f"{s['setting']}|{s['split']}", []).append(s["metrics"])
    out = {}
    for key, rows in groups.items():
        stats = {}
        for name in rows[0]:
            vals = np.array([r[name] for r in rows if r.get(name) is not None], float)
            stats[name] = {"mean": float(vals.mean()) if len(vals) else None,
                           "std": float(vals.std(ddof=1)) if len(vals) > 1 else (0.0 if len(vals) else None),
                           "n_seeds": int(len(vals))}
        out[key] = stats
    return out


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = version(lib)
        except PackageNotFoundError:
            out[lib] = "absent"
    return out


def hardware() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def collect_provenance(*, wall_time_s: float, **known) -> Provenance:
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return Provenance(mribench_version=__version__, git_commit=commit or None,
                      git_dirty=None if status is None else bool(status),
                      libraries=library_versions(), hardware=hardware(),
                      started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      wall_time_s=float(wall_time_s), **known)


def safe_name(name: str) -> str:
    """A file-system-safe form of an encoder name (``dir/my_enc.py:Enc`` -> ``my_enc.py-Enc``)."""
    if ".py:" in name:
        path, _, cls = name.rpartition(":")
        name = f"{Path(path).name}-{cls}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "encoder"


def record_path(results_dir: str | Path, encoder: str, task: str, task_version: int, protocol: str) -> Path:
    return Path(results_dir) / safe_name(encoder) / f"{task}@v{task_version}" / f"{protocol}.json"


def _clean(obj):
    """NaN/inf -> None (JSON has no NaN), numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_record(record: ResultRecord, path: str | Path) -> Path:
    """Atomic write: a temp file in the same folder, fsync, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_clean(record.model_dump(mode="python")), indent=2, sort_keys=True, allow_nan=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_record(path: str | Path) -> ResultRecord:
    path = Path(path)
    try:
        return ResultRecord.model_validate(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as e:
        raise MribenchError(f"{path}: not a readable result record ({e})") from None
    except ValidationError as e:
        first = e.errors()[0]
        raise MribenchError(f"{path}: invalid record at '{'.'.join(map(str, first['loc']))}': {first['msg']}") from None


def record_exists(path: str | Path) -> bool:
    """True only for a record that validates: a partial or corrupt file counts as missing."""
    try:
        load_record(path)
        return True
    except MribenchError:
        return False


def iter_records(results_dir: str | Path) -> Iterator[tuple[Path, ResultRecord | MribenchError]]:
    for path in sorted(Path(results_dir).rglob("*.json")):
        try:
            yield path, load_record(path)
        except MribenchError as e:
            yield path, e
