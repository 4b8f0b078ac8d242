"""Expand encoder x task x protocol into jobs, run the missing ones on an executor, one record per job.

Resumable and safe to run twice at once, by construction:

- a job whose record already exists (and validates) is skipped when the record is this run's
  result: same identity (the weights hash the harness computed, cohort hash, profile, seeds, task
  and split hashes, :func:`job_identity`); a record of another run makes the run refuse with a
  one-line error naming the fields that differ, never skip to that run's numbers;
- a job runs under a file lock (:mod:`bench.locks`), so two ``bench run`` processes (or Dask
  workers) on one results folder never compute or write the same record; a job another process
  holds is put off to the end of the grid, and then skipped if that process wrote it;
- each record is written atomically by the job that produced it, and embeddings are cached per
  scan, so a run killed at any point (even SIGKILL) loses at most the jobs in flight, and the next
  run does exactly what is missing;
- a job that fails leaves a failure marker with its error (see :mod:`bench.jobs`) and, with
  ``keep_going``, the rest of the grid still runs; the marker is cleared when the job succeeds.

Jobs run where the executor puts them (:mod:`bench.executors`): in this process (``local``, the
default) or on Dask workers. :func:`run_job` is the unit of work either way.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.cohort import Cohort
from bench.data.store import VolumeStore
from bench.embeddings import EmbeddingCache, encoder_key
from bench.errors import MribenchError
from bench.jobs import (Job, clear_failure, ensure_state_dir, expand_grid, remove_stale_temporaries,
                        write_failure)
from bench.locks import try_lock
from bench.paths import cache_home
from bench.paths import splits_root as default_splits_root
from bench.profiles import Profile
from bench.protocols import Context, assemble_features, needs_embeddings, run_protocol
from bench.splits import Split, load_split
from bench.tasks import Examples, TaskSpec, attach_split, build_examples, get_task

HEADLINE_SETTING = {"linear_probe": "full", "fractions": "fraction=1", "few_shot": "k=10",
                    "finetune": "full", "robustness": "clean"}

SKIPPED = "skipped (exists)"
BUSY = "busy (another run holds it)"


@dataclass
class JobResult:
    encoder: str
    task: str
    protocol: str
    path: Path
    status: str                 # "done", "skipped (exists)", "failed: ..."
    main_score: float | None = None
    ci: tuple[float | None, float | None] = (None, None)
    seconds: float = 0.0
    error: str | None = None    # one line, for failed jobs
    key: str = ""               # the job's key (encoder/task@vN/protocol)

    @property
    def failed(self) -> bool:
        return self.status.startswith("failed")


@dataclass(frozen=True)
class RunSettings:
    """What every job of a run needs besides the job itself; picklable, shipped to Dask workers."""

    profile: Profile
    results_dir: Path
    cache_root: Path
    overwrite: bool = False
    keep_predictions: bool = True
    progress: bool = False
    splits_root: Path | None = None     # folder laid out like splits/; None: bench.paths.splits_root()
    command: str = ""                   # recorded in provenance (a worker's own argv means nothing)


@dataclass
class Workspace:
    """Objects a process reuses from job to job: the caches, encoders, and prepared tasks."""

    store: VolumeStore
    embeddings: EmbeddingCache
    encoders: dict[tuple, Any] = field(default_factory=dict)
    prepared: dict[tuple, tuple] = field(default_factory=dict)

    @classmethod
    def at(cls, cache_root: Path) -> "Workspace":
        return cls(VolumeStore(Path(cache_root) / "store"), EmbeddingCache(Path(cache_root) / "embeddings"))

    def encoder(self, job: Job):
        key = (job.encoder, job.encoder_kwargs)
        if key not in self.encoders:
            import bench.encoders  # looked up at call time, so tests can substitute get_encoder

            self.encoders[key] = bench.encoders.get_encoder(job.encoder, **dict(job.encoder_kwargs))
        return self.encoders[key]

    def prepare(self, spec: TaskSpec, cohort: Cohort, splits_root: Path | None) -> tuple[Examples, Split]:
        key = (spec.name, spec.sha256, id(cohort), splits_root)
        hit = self.prepared.get(key)
        if hit is None or hit[0] is not cohort:  # identity check: an id can be reused after GC
            hit = (cohort, prepare_task(spec, cohort, splits_root=splits_root))
            self.prepared[key] = hit
        return hit[1]


#: Per-process workspaces of Dask workers, by cache root (a worker runs many jobs).
_WORKSPACES: dict[Path, Workspace] = {}


def process_workspace(cache_root: Path) -> Workspace:
    root = Path(cache_root)
    if root not in _WORKSPACES:
        _WORKSPACES[root] = Workspace.at(root)
    return _WORKSPACES[root]


def split_file(spec: TaskSpec, cohort_name: str, splits_root: Path | None = None) -> Path:
    """The task's split file for the cohort, under ``splits_root`` (default: :func:`bench.paths.splits_root`)."""
    if splits_root is None:
        return spec.split_path(cohort_name)
    return Path(splits_root) / spec.split.format(cohort=cohort_name)


def prepare_task(spec: TaskSpec, cohort: Cohort, splits_root: Path | None = None) -> tuple[Examples, Split]:
    """Examples of the task on the cohort, each tagged with its subject's split."""
    return examples_with_split(spec, cohort, split_file(spec, cohort.name, splits_root))


def examples_with_split(spec: TaskSpec, cohort: Cohort, path: Path) -> tuple[Examples, Split]:
    """Examples of the task on the cohort, tagged from the split file at ``path`` (verified)."""
    examples = build_examples(spec, cohort)
    split = load_split(path, cohort.subjects()["participant_id"].tolist())
    attach_split(examples, split.table, str(split.path))
    return examples, split


def headline(spec: TaskSpec, protocol: str, scores: list[dict]) -> tuple[float | None, tuple]:
    """Mean over seeds of the main metric on the test split at the protocol's headline setting."""
    setting = HEADLINE_SETTING.get(protocol, "full")
    rows = [s for s in scores if s["setting"] == setting and s["split"] == "test"]
    vals = [s["metrics"][spec.main_score] for s in rows if s["metrics"].get(spec.main_score) is not None]
    if not vals:
        return None, (None, None)
    lows = [s["ci"][spec.main_score]["low"] for s in rows if s["ci"][spec.main_score]["low"] is not None]
    highs = [s["ci"][spec.main_score]["high"] for s in rows if s["ci"][spec.main_score]["high"] is not None]
    return (float(np.mean(vals)), (float(np.mean(lows)) if lows else None,
                                   float(np.mean(highs)) if highs else None))


# ------------------------------------------------------------------------------------------- one job


def run_job(job: Job, settings: RunSettings, cohort: Cohort, *, wait: bool = True,
            workspace: Workspace | None = None, reraise: bool = False) -> JobResult:
    """Produce the record of ``job`` unless it exists; the unit of work of every executor.

    Holds the job's lock throughout. ``wait=False`` returns a ``busy`` result at once when another
    process holds it (the caller retries at the end). A failure is written to the job's marker
    and returned as a ``failed`` result, or raised again with ``reraise``. KeyboardInterrupt and
    other non-``Exception`` exits pass through untouched: they are not the job's fault.
    """
    results_dir = settings.results_dir
    record = job.record_path(results_dir)
    base = dict(encoder=job.encoder_name, task=job.task, protocol=job.protocol, path=record, key=job.key)
    with try_lock(job.lock_path(results_dir), wait=wait) as acquired:
        if not acquired:
            return JobResult(**base, status=BUSY)
        start = time.perf_counter()
        try:
            ws = workspace or process_workspace(settings.cache_root)
            # written meanwhile by another run: skipped if it is this run's result, refused if not
            if not settings.overwrite and record_done(record, job, ws, settings, cohort):
                clear_failure(results_dir, job)
                return JobResult(**base, status=SKIPPED)
            remove_stale_temporaries(record)
            main, ci = _compute(job, settings, cohort, ws, record, start)
        except Exception as e:
            write_failure(results_dir, job, e)
            if reraise:
                raise
            return JobResult(**base, status=f"failed: {type(e).__name__}", seconds=time.perf_counter() - start,
                             error=" ".join(f"{type(e).__name__}: {e}".split()))
        clear_failure(results_dir, job)
        return JobResult(**base, status="done", main_score=main, ci=ci, seconds=time.perf_counter() - start)


def cohort_sha256(cohort: Cohort) -> str:
    """SHA-256 of the cohort table (every row's ids, labels and covariates; file paths relative to
    the cohort's root, so the same cohort generated or copied elsewhere has the same hash). Scan
    contents are not read: the embedding cache keys each scan by its bytes. Kept on the object."""
    memo = getattr(cohort, "_mribench_sha256", None)
    if memo is not None:
        return memo
    import hashlib

    table = cohort.table.copy()
    root = Path(cohort.root).resolve() if cohort.root is not None else None
    for column in [c for c in table.columns if c == "path" or c.endswith("_path")]:
        table[column] = [_relative_to(p, root) for p in table[column]]
    table = table.reindex(sorted(table.columns), axis=1)
    table = table.sort_values([c for c in ("participant_id", "session_id", "sequence", "path") if c in table])
    digest = hashlib.sha256(table.to_csv(index=False, lineterminator="\n").encode()).hexdigest()
    try:
        cohort._mribench_sha256 = digest
    except AttributeError:
        pass
    return digest


def _relative_to(path, root: Path | None) -> str:
    """A table path as the cohort's identity sees it: relative to its root, else the file name."""
    if not isinstance(path, str) or not path:
        return "" if path is None or (isinstance(path, float) and np.isnan(path)) else str(path)
    try:
        return str(Path(path).resolve().relative_to(root)) if root is not None else Path(path).name
    except ValueError:
        return Path(path).name


def profile_settings(profile: Profile) -> dict[str, int]:
    """The profile's knobs that change a harness result (seeds are an identity field of their own;
    the synthetic-cohort sizes are the cohort's identity)."""
    return {"n_boot": profile.n_boot, "few_shot_draws": profile.few_shot_draws,
            "finetune_epochs": profile.finetune_epochs, "segmentation_steps": profile.segmentation_steps}


def job_identity(job: Job, encoder, settings: RunSettings, cohort: Cohort) -> dict[str, Any]:
    """The identity (:data:`bench.results.IDENTITY_FIELDS`) the record of ``job`` would have if it ran
    now: the weights the encoder object holds, the cohort, profile, seeds, task and split hashes."""
    from bench.encoders.api import weights_sha256
    from bench.splits import file_sha256

    spec = get_task(job.task)
    split = split_file(spec, cohort.name, settings.splits_root)
    return {"encoder": encoder.card.name, "weights": weights_sha256(encoder), "cohort": cohort.name,
            "cohort hash": cohort_sha256(cohort), "profile": settings.profile.name,
            "profile settings": profile_settings(settings.profile), "seeds": list(range(settings.profile.seeds)),
            "task hash": spec.sha256, "split hash": file_sha256(split) if split.is_file() else None}


def record_done(record: Path, job: Job, ws: Workspace, settings: RunSettings, cohort: Cohort) -> bool:
    """True when ``record`` holds this job's result already (skip it); False when it must run;
    a ``MribenchError`` when it holds another run's result (see
    :func:`bench.results.existing_record_matches`)."""
    from bench.results import existing_record_matches

    if not record.is_file():
        return False
    return existing_record_matches(record, job_identity(job, ws.encoder(job), settings, cohort))


def _compute(job: Job, settings: RunSettings, cohort: Cohort, ws: Workspace, record: Path,
             start: float) -> tuple[float | None, tuple]:
    from bench.results import safe_name, write_record

    spec = get_task(job.task)
    if spec.version != job.task_version:
        raise MribenchError(f"task {spec.name} is at version {spec.version} here but the job asked for "
                            f"v{job.task_version}: the worker runs other code than the client")
    encoder = ws.encoder(job)
    examples, split = ws.prepare(spec, cohort, settings.splits_root)
    ctx = Context(examples, split, cohort=cohort, encoder=encoder, profile=settings.profile,
                  keep_predictions=settings.keep_predictions, store=ws.store, embeddings=ws.embeddings,
                  progress=settings.progress)
    if not (hasattr(encoder, "embed_rows") and needs_embeddings(job.protocol, spec)):  # it reads voxels
        from bench.data.sanity import check_scans

        check_scans(cohort, ctx.examples.scan_rows())  # the scan sanity gate's header checks, before embedding
    if needs_embeddings(job.protocol, spec):
        # one process embeds a task's scans while its other protocols' jobs wait, then read the cache
        lock = settings.cache_root / "locks" / "embed" / f"{encoder_key(encoder)[:20]}-{safe_name(spec.name)}.lock"
        with try_lock(lock, wait=True):
            emb = ws.embeddings.embed(encoder, cohort, ctx.examples.scan_rows(), ws.store, progress=settings.progress)
        ctx.features = assemble_features(ctx.examples, emb)
    scores = run_protocol(job.protocol, ctx)
    write_record(build_record(spec, job.protocol, encoder, ctx, scores, start, settings, cohort), record)
    return headline(spec, job.protocol, scores)


def build_record(spec: TaskSpec, protocol: str, encoder, ctx: Context, scores: list[dict], start: float,
                 settings: RunSettings, cohort: Cohort):
    from bench.results import ResultRecord, collect_provenance, summarise

    main, _ = headline(spec, protocol, scores)
    card = encoder.card
    evaluated = set(ctx.examples.subjects("test")) | set(ctx.examples.subjects("external"))
    overlap = card.overlap(evaluated, cohort=cohort.name)
    flags = [f"pretraining_overlap: {len(overlap)} evaluated subject(s) were in the encoder's "
             f"pretraining data, e.g. {sorted(overlap)[0]}"] if overlap else []
    from bench.encoders.api import weights_sha256

    provenance = collect_provenance(
        task_spec_sha256=spec.sha256, split_sha256=ctx.split.sha256,
        split_file=_display_path(ctx.split.path),
        cohort={"name": cohort.name, "n_scans": len(cohort), "root_hash": cohort_sha256(cohort)},
        encoder_card=card.model_dump(mode="json"), checkpoint_sha256=encoder.checkpoint_hash(),
        weights_sha256=weights_sha256(encoder),
        config={"profile": settings.profile.name, "protocol": protocol, "n_boot": settings.profile.n_boot,
                "profile_settings": profile_settings(settings.profile), "excluded_examples": ctx.examples.excluded},
        # the seeds asked for (every protocol scores each), which is what a rerun is compared with
        seeds=list(range(settings.profile.seeds)), wall_time_s=time.perf_counter() - start,
        command=settings.command,
    )
    return ResultRecord.model_validate({
        "encoder": card.name, "task": spec.name, "task_version": spec.version, "protocol": protocol,
        "main_score_name": spec.main_score, "main_score": main,
        "higher_is_better": spec.higher_is_better, "headline_setting": HEADLINE_SETTING[protocol],
        "scores": scores, "summary": summarise(scores), "flags": flags,
        "predictions": ctx.predictions if settings.keep_predictions else None,
        "provenance": provenance,
        **({"robustness": ctx.extra["robustness"]} if "robustness" in ctx.extra else {}),
    })


# ------------------------------------------------------------------------------------------- the grid


class Runner:
    """Runs grids of jobs for one cohort and profile into one results folder.

    ``executor`` (default: :class:`bench.executors.LocalExecutor`, jobs one after another in this
    process) decides where jobs run. ``keep_going=False`` (the library default) stops at the first
    failing job and raises its error, after writing its failure marker; ``bench run`` passes
    ``keep_going=True`` so the rest of the grid completes and the failures are reported at the end.
    """

    def __init__(self, cohort: Cohort, profile: Profile, results_dir: Path, *, progress: bool = True,
                 overwrite: bool = False, keep_predictions: bool = True, cache_root: Path | None = None,
                 executor=None, keep_going: bool = False, splits_root: Path | None = None,
                 command: str | None = None):
        check_seeds(profile.seeds)
        results_dir = Path(results_dir)
        if results_dir.exists() and not results_dir.is_dir():
            raise MribenchError(f"results folder {results_dir} is a file; give a folder for the result records")
        self.cohort = cohort
        self.profile = profile
        self.results_dir = results_dir
        self.progress = progress
        self.overwrite = overwrite
        self.keep_predictions = keep_predictions
        self.keep_going = keep_going
        self.cache_root = Path(cache_root or cache_home())
        # resolved here, so workers read the splits this process would, whatever their environment
        self.splits_root = Path(splits_root) if splits_root is not None else default_splits_root()
        self.command = command if command is not None else " ".join(shlex.quote(a) for a in sys.argv)
        self.workspace = Workspace.at(self.cache_root)
        self.store = self.workspace.store
        self.embeddings = self.workspace.embeddings
        if executor is None:
            from bench.executors import LocalExecutor

            executor = LocalExecutor()
        self.executor = executor

    def settings(self) -> RunSettings:
        return RunSettings(profile=self.profile, results_dir=self.results_dir, cache_root=self.cache_root,
                           overwrite=self.overwrite, keep_predictions=self.keep_predictions,
                           progress=self.progress and self.executor.in_process, splits_root=self.splits_root,
                           command=self.command)

    def run(self, encoder_spec: str, tasks: list[str], protocols: list[str],
            encoder_kwargs: dict | None = None) -> list[JobResult]:
        """Every job of one encoder x ``tasks`` x ``protocols``; results in grid order."""
        return self.run_grid([encoder_spec], tasks, protocols, encoder_kwargs)

    def jobs(self, encoder_specs: list[str], tasks: list[str], protocols: list[str],
             encoder_kwargs: dict | None = None) -> list[Job]:
        """The grid as jobs. Instantiates each encoder here (its card names the records, and a bad
        encoder should fail before anything is submitted) and keeps it for in-process jobs."""
        import bench.encoders

        specs = [get_task(t) for t in tasks]  # an unknown task fails before any work
        encoders = []
        for spec in encoder_specs:
            encoder = bench.encoders.get_encoder(spec, **(encoder_kwargs or {}))
            if getattr(encoder, "finetune_only", False) and set(protocols) - {"finetune"}:
                raise MribenchError(f"encoder {encoder.card.name} is trained from scratch on each task: use "
                                    f"--protocol finetune (got {', '.join(sorted(set(protocols) - {'finetune'}))})")
            kwargs = dict(encoder_kwargs or {})
            self.workspace.encoders[(spec, tuple(sorted(kwargs.items())))] = encoder
            encoders.append((spec, encoder.card.name, kwargs))
        return expand_grid(encoders, specs, protocols)

    def run_grid(self, encoder_specs: list[str], tasks: list[str], protocols: list[str],
                 encoder_kwargs: dict | None = None) -> list[JobResult]:
        return self.run_jobs(self.jobs(encoder_specs, tasks, protocols, encoder_kwargs))

    def run_jobs(self, jobs: list[Job]) -> list[JobResult]:
        """Run the jobs whose record is missing; jobs held by another process go last, waited for.

        An existing record of the same run (same identity: weights, cohort, profile, seeds, task and
        split hashes) is skipped; one of another run makes the whole run refuse, before any job
        starts, with a one-line error naming the fields that differ.
        """
        self.workspace.prepared.clear()  # split files are re-read (and re-verified) once per run
        settings = self.settings()
        ensure_state_dir(self.results_dir)
        done: dict[str, JobResult] = {}
        todo, refused = [], []
        for job in jobs:
            record = job.record_path(self.results_dir)
            try:
                exists = not self.overwrite and record_done(record, job, self.workspace, settings, self.cohort)
            except MribenchError as e:
                refused.append(str(e))
                continue
            if exists:
                clear_failure(self.results_dir, job)  # (left if a run died between record and clean-up)
                done[job.key] = JobResult(job.encoder_name, job.task, job.protocol, record, SKIPPED, key=job.key)
            else:
                todo.append(job)
        if refused:
            more = f" (+{len(refused) - 1} more job(s) like it)" if len(refused) > 1 else ""
            raise MribenchError(refused[0] + more)
        by_key = {job.key: job for job in todo}
        for wait in (False, True):
            results = self.executor.map(run_job, todo, {"wait": wait},
                                        shared={"settings": settings, "cohort": self.cohort},
                                        local={"workspace": self.workspace, "reraise": not self.keep_going})
            for job, outcome in results:
                result = outcome if isinstance(outcome, JobResult) else self._lost(job, outcome)
                if result.failed and not self.keep_going:  # the executor could not re-raise (remote)
                    self.executor.cancel()
                    raise MribenchError(f"job {result.key} failed: {result.error}")
                done[result.key] = result
            todo = [by_key[k] for k, r in done.items() if r.status == BUSY]
            if not todo:
                break
        return [done[job.key] for job in jobs]

    def _lost(self, job: Job, error: BaseException) -> JobResult:
        """A job that died without reporting (its worker was killed, could not import the code...):
        record the failure here, since the job could not."""
        write_failure(self.results_dir, job, error)
        return JobResult(job.encoder_name, job.task, job.protocol, job.record_path(self.results_dir),
                         f"failed: {type(error).__name__}", error=" ".join(f"{type(error).__name__}: {error}".split()),
                         key=job.key)

    def build_record(self, spec: TaskSpec, protocol: str, encoder, ctx: Context, scores: list[dict],
                     start: float):
        return build_record(spec, protocol, encoder, ctx, scores, start, self.settings(), self.cohort)


def _display_path(path: Path) -> str:
    """Repo-relative when inside the checkout, so records carry no machine-specific paths."""
    from bench.paths import repo_root

    try:
        return str(Path(path).resolve().relative_to(repo_root()))
    except ValueError:
        return Path(path).name


def check_seeds(seeds) -> None:
    """At least one seed: with none, a job writes a record without scores that verifies and blocks its slot."""
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise MribenchError(f"seeds must be a whole number >= 1, got {seeds!r}")


def check_protocols(protocols: list[str]) -> None:
    from bench.protocols import PROTOCOLS

    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad:
        raise MribenchError(f"unknown protocol(s) {bad}; choose from {', '.join(PROTOCOLS)}")
