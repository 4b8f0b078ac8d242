"""The job grid: encoder x task x protocol, one independent job per result record.

A job is a small frozen value (picklable, so Dask can ship it to a worker) that knows the three
files it owns under a results folder: its record (``<encoder>/<task>@v<N>/<protocol>.json``), its
lock and its failure marker (both under the hidden ``.jobs/`` folder, so the leaderboard, which
reads ``*.json``, never sees them). One job, one record: resume is a file-existence check and
parallel jobs never write the same file.

Why not finer jobs (one per seed or setting)? A record holds every seed and setting of its
protocol, and the embeddings those share are cached per scan, so splitting a record into
several jobs would add a merge step (and a new way to lose or double-count a seed) for little
parallelism: a grid has many more records than a machine has workers.
"""

from __future__ import annotations

import json
import os
import platform
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from bench.atomic import atomic_write_bytes
from bench.results import record_path, safe_name

#: Hidden folder of a results directory holding job locks, failure markers and finished seeds.
STATE_DIR = ".jobs"


@dataclass(frozen=True)
class Job:
    """One record to produce: an encoder (as the user named it) on one task under one protocol."""

    encoder: str                          # registered name or path/to/file.py:Class, as given
    encoder_name: str                     # the card's name: names the record's folder
    task: str
    task_version: int
    protocol: str
    encoder_kwargs: tuple[tuple[str, Any], ...] = ()   # e.g. (("weights", "w.pt"),)
    trains_network: bool = False          # fine-tuning or a segmentation decoder: wants a GPU
    options: tuple[tuple[str, Any], ...] = ()          # protocol options, e.g. (("test_site", "S2"),)
    stem: str = ""                        # record file name (without .json) when not the protocol's

    @property
    def key(self) -> str:
        """``encoder/task@vN/<protocol or stem>``: unique within a results folder."""
        return f"{safe_name(self.encoder_name)}/{safe_name(self.task)}@v{self.task_version}/{self.stem or self.protocol}"

    def record_path(self, results_dir: str | Path) -> Path:
        return record_path(results_dir, self.encoder_name, self.task, self.task_version, self.stem or self.protocol)

    def lock_path(self, results_dir: str | Path) -> Path:
        return _state_path(results_dir, self.key, ".lock")

    def failure_path(self, results_dir: str | Path) -> Path:
        return _state_path(results_dir, self.key, ".failed")

    def seeds_path(self, results_dir: str | Path) -> Path:
        """The finished seeds of a job that trains networks (:mod:`bench.seed_checkpoints`)."""
        return _state_path(results_dir, self.key, ".seeds")


def _state_path(results_dir: str | Path, key: str, suffix: str) -> Path:
    return Path(results_dir) / STATE_DIR / f"{key}{suffix}"


def ensure_state_dir(results_dir: str | Path) -> Path:
    """Create ``<results>/.jobs`` with a ``.gitignore`` of its own: locks and failure markers are
    local state, never something to commit beside the records."""
    folder = Path(results_dir) / STATE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        atomic_write_bytes(ignore, b"# job locks and failure markers of `bench run` (see bench/jobs.py)\n*\n",
                           mode=0o644)
    return folder


def expand_grid(encoders: Iterable[tuple[str, str, dict]], tasks: Iterable, protocols: Iterable[str],
                options: dict | None = None, cohort_name: str = "") -> list[Job]:
    """Jobs of encoders x tasks x protocols, in that nesting order (the order results are reported).

    ``encoders`` are (spec, card name, constructor kwargs); ``tasks`` are :class:`~bench.tasks.TaskSpec`.
    ``options`` go to the jobs of the protocols that take them (those that name a record of their
    own from them and the cohort, :attr:`bench.protocols.Protocol.record_name`).
    """
    from bench.protocols import get_protocol

    # a task or protocol named twice is one job (Dask would also merge their identical task keys)
    tasks = list({t.name: t for t in tasks}.values())
    protocols = [get_protocol(p) for p in dict.fromkeys(protocols)]
    encoders = list({(spec, tuple(sorted(kw.items()))): (spec, name, kw) for spec, name, kw in encoders}.values())
    jobs = []
    for spec, name, kwargs in encoders:
        for t in tasks:
            for p in protocols:
                opts = dict(options or {}) if p.record_name is not None else {}
                jobs.append(Job(encoder=spec, encoder_name=name, task=t.name, task_version=t.version,
                                protocol=p.name, encoder_kwargs=tuple(sorted(kwargs.items())),
                                trains_network=p.trains(t), options=tuple(sorted(opts.items())),
                                stem=p.record_name(cohort_name, opts) if p.record_name is not None else ""))
    return jobs


# ----------------------------------------------------------------------------------------- failures


def write_failure(results_dir: str | Path, job: Job, error: BaseException) -> Path:
    """Leave a durable marker that ``job`` failed, with its error and traceback.

    ``bench status`` lists these; the marker is removed when the job later succeeds. Written
    atomically, so a marker is always readable JSON.
    """
    marker = {
        "job": job.key, "encoder": job.encoder_name, "task": job.task, "task_version": job.task_version,
        "protocol": job.protocol, "error_type": type(error).__name__, "error": " ".join(str(error).split()),
        "traceback": "".join(traceback.format_exception(error)),
        "failed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "pid": os.getpid(),
    }
    path = job.failure_path(results_dir)
    atomic_write_bytes(path, (json.dumps(marker, indent=2, sort_keys=True) + "\n").encode(), mode=0o644)
    return path


def read_failure(path: str | Path) -> dict | None:
    """The marker's content, or None when there is none (or it is unreadable or not a JSON object:
    treated as absent). Read with the bounds of records, so a crafted marker cannot stop
    ``bench status``."""
    from bench.errors import MribenchError
    from bench.results import read_bounded_json

    if not Path(path).is_file():
        return None
    try:
        marker = read_bounded_json(path, "failure marker")
    except MribenchError:
        return None
    return marker if isinstance(marker, dict) else None


def clear_failure(results_dir: str | Path, job: Job) -> None:
    job.failure_path(results_dir).unlink(missing_ok=True)


def remove_stale_temporaries(record: Path) -> int:
    """Delete temporary files a killed writer left beside ``record``; return how many.

    Only safe while holding the job's lock: then no live process is writing this record, so
    every ``.<name>.*.tmp`` beside it belongs to a dead one.
    """
    n = 0
    for tmp in record.parent.glob(f".{record.name}.*.tmp"):
        tmp.unlink(missing_ok=True)
        n += 1
    return n
