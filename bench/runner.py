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

The runner knows no protocol by name: it asks each job's :class:`~bench.protocols.Protocol`
whether it applies (``supports``, checked before any scan is read), whether it needs the frozen
embeddings, which setting is the headline and which blocks go into the record. A job's protocol
options (cross_cohort's target cohort, task and sites) travel in the job; the record then
describes the side it scored (:class:`~bench.protocols.context.Scored`).
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.cohort import Cohort
from bench.data.store import VolumeStore
from bench.devices import CPU, Compute, check_can_train, deterministic, place, resolve_here
from bench.embeddings import EmbeddingCache, encoder_key
from bench.errors import MribenchError
from bench.jobs import (Job, clear_failure, ensure_state_dir, expand_grid, remove_stale_temporaries,
                        write_failure)
from bench.locks import try_lock
from bench.paths import cache_home
from bench.paths import splits_root as default_splits_root
from bench.profiles import Profile
from bench.protocols import get_protocol
from bench.protocols.context import Context, Prepared, assemble_features, run_protocol, scored_side
from bench.splits import Split, load_split
from bench.tasks import Examples, TaskSpec, attach_split, build_examples, get_task
from bench.timing import measure, phase

#: The status of a job whose record of this run's identity exists: its numbers are read, not recomputed
#: (``bench run`` prints the record's path beside it).
SKIPPED = "reused"
BUSY = "busy (another run holds it)"


@dataclass
class JobResult:
    encoder: str
    task: str
    protocol: str
    path: Path
    status: str                 # "done", "reused" (SKIPPED), "failed: ..."
    main_score: float | None = None
    ci: tuple[float | None, float | None] = (None, None)
    seconds: float = 0.0
    error: str | None = None    # one line, for failed jobs
    key: str = ""               # the job's key (encoder/task@vN/protocol)
    #: wall and CPU seconds by phase, ``{phase: [wall, cpu]}`` (:mod:`bench.timing`), measured
    #: where the job ran (in this process or on a worker); empty for a record found up front
    phases: dict[str, list[float]] = field(default_factory=dict)

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
    compute: Compute = CPU              # device, precision, loader workers, micro-batch (bench.devices); a
    #                                     device sent to Dask workers as asked, resolved by each (on_this_machine)


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


def headline(spec: TaskSpec, protocol: str, scores: list) -> tuple[float | None, tuple]:
    """Mean over seeds of the main metric on the test split at the protocol's headline setting."""
    return get_protocol(protocol).headline_score(spec, scores)


def reused_result(job: Job, path: Path, rec) -> JobResult:
    """The result of a job whose record ``rec`` (read from ``path`` by :func:`record_done`) exists, with
    its headline score and CI: a rerun (the README's first command on a clone with the committed
    board) still prints the number."""
    main, ci = headline(get_task(rec.task), rec.protocol, rec.scores)  # the scored task (cross-cohort: its target)
    return JobResult(job.encoder_name, job.task, job.protocol, path, SKIPPED, main_score=main, ci=ci, key=job.key)


# ------------------------------------------------------------------------------------------- one job


def run_job(job: Job, settings: RunSettings, cohort: Cohort, *, wait: bool = True,
            workspace: Workspace | None = None, reraise: bool = False,
            cohorts: dict[str, Cohort] | None = None) -> JobResult:
    """Produce the record of ``job`` unless it exists; the unit of work of every executor.

    Holds the job's lock throughout. ``wait=False`` returns a ``busy`` result at once when another
    process holds it (the caller retries at the end). A failure is written to the job's marker
    and returned as a ``failed`` result, or raised again with ``reraise``. KeyboardInterrupt and
    other non-``Exception`` exits pass through untouched: they are not the job's fault.
    ``cohorts`` holds, by name, the other cohorts the job's options name (a cross-cohort target).
    The job's wall and CPU seconds by phase (:mod:`bench.timing`) come back in ``phases``.
    """
    with measure() as clock:
        result = _run_job(job, settings, cohort, wait=wait, workspace=workspace, reraise=reraise, cohorts=cohorts)
    result.phases = clock.totals
    return result


def _run_job(job: Job, settings: RunSettings, cohort: Cohort, *, wait: bool, workspace: Workspace | None,
             reraise: bool, cohorts: dict[str, Cohort] | None) -> JobResult:
    cohorts = {cohort.name: cohort, **(cohorts or {})}
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
            done = None if settings.overwrite else record_done(record, job, ws, settings, cohort, cohorts)
            if done is not None:
                clear_failure(results_dir, job)
                return reused_result(job, record, done)
            remove_stale_temporaries(record)
            main, ci = _compute(job, on_this_machine(settings), cohort, ws, record, start, cohorts)
        except Exception as e:
            write_failure(results_dir, job, e)
            if reraise:
                raise
            return JobResult(**base, status=f"failed: {type(e).__name__}", seconds=time.perf_counter() - start,
                             error=" ".join(f"{type(e).__name__}: {e}".split()))
        clear_failure(results_dir, job)
        return JobResult(**base, status="done", main_score=main, ci=ci, seconds=time.perf_counter() - start)


def on_this_machine(settings: RunSettings) -> RunSettings:
    """``settings`` with the device resolved by the process that runs the job (a Dask worker, or this
    one): a run sent to workers carries ``--device`` as asked, since ``auto`` on a launcher without a
    GPU would send ``cpu`` to GPU workers. A device absent here fails the job with the one-line error
    the local executor gives before the cohort; the record's provenance says the device resolved."""
    return replace(settings, compute=resolve_here(settings.compute))


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


def profile_settings(profile: Profile, protocol: str | None = None) -> dict[str, Any]:
    """The profile's knobs that change a harness result (seeds are an identity field of their own;
    the synthetic-cohort sizes are the cohort's identity); the robustness grid only in a
    robustness job's, so that changing it leaves every other record's identity as it was."""
    settings = {"n_boot": profile.n_boot, "few_shot_draws": profile.few_shot_draws,
                "finetune_epochs": profile.finetune_epochs, "segmentation_steps": profile.segmentation_steps}
    if protocol != "robustness":
        return settings
    from bench.protocols.robustness import grid_settings

    return settings | grid_settings(profile)


def scored_task(job: Job, cohort: Cohort, cohorts: dict[str, Cohort] | None = None) -> tuple[TaskSpec, Cohort]:
    """The task and cohort a job's record scores: its own, or those its options name (``test_task``,
    ``test_cohort``: a cross-cohort transfer scores another cohort's split)."""
    opts = dict(job.options)
    target = opts.get("test_cohort")
    if target is not None and target not in (cohorts or {}):
        raise MribenchError(f"job {job.key} scores cohort {target}, which this run was not given")
    return get_task(opts.get("test_task") or job.task), (cohorts[target] if target is not None else cohort)


def job_identity(job: Job, encoder, settings: RunSettings, cohort: Cohort,
                 cohorts: dict[str, Cohort] | None = None) -> dict[str, Any]:
    """The identity (:data:`bench.results.IDENTITY_FIELDS`) the record of ``job`` would have if it ran
    now: the weights the encoder object holds, the scored cohort, profile, seeds, task and split hashes."""
    from bench.encoders.api import weights_sha256
    from bench.splits import file_sha256

    spec = get_task(job.task)
    scored_spec, scored = scored_task(job, cohort, cohorts)
    split = split_file(scored_spec, scored.name, settings.splits_root)
    return {"encoder": encoder.card.name, "weights": weights_sha256(encoder), "cohort": scored.name,
            "cohort hash": cohort_sha256(scored), "profile": settings.profile.name,
            "profile settings": profile_settings(settings.profile, job.protocol),
            "seeds": list(range(settings.profile.seeds)),
            "task hash": spec.sha256, "split hash": file_sha256(split) if split.is_file() else None,
            **compute_identity(settings.compute, job.trains_network),
            "cohort extras": cohort_extras(job.protocol, scored)}


def cohort_extras(protocol: str, cohort: Cohort) -> dict[str, Any] | None:
    """What a record of ``protocol`` reads of the scored cohort beyond the table :func:`cohort_sha256`
    hashes: the hash of its same-session repeats for a protocol that reads them (a rescan added,
    dropped or re-imported then makes a new record instead of reusing one computed without it); None
    for every other protocol, so their records keep the identity they had."""
    if not get_protocol(protocol).reads_repeats:
        return None
    repeats = cohort.repeats_cohort()
    return {"repeats_sha256": cohort_sha256(repeats) if repeats is not None else None}


def compute_identity(compute: Compute, trains_network: bool) -> dict[str, Any]:
    """The identity fields :mod:`bench.devices` adds: the precision, and the micro-batch override of a
    job that trains a network (BatchNorm makes its numbers depend on it; a frozen encoder's do not).
    The device is not one: a CUDA result is the CPU's within float error (provenance says where)."""
    return {"precision": compute.precision, "batch size": compute.batch_size if trains_network else None}


def compute_config(compute: Compute, trains_network: bool) -> dict[str, Any]:
    """The record ``config`` entries the identity is read back from, written only when not the
    default, so that a CPU fp32 record is written as before (see :func:`bench.results.record_identity`)."""
    ident = compute_identity(compute, trains_network)
    return ({"precision": ident["precision"]} if ident["precision"] != "fp32" else {}) | (
        {"batch_size": ident["batch size"]} if ident["batch size"] is not None else {})


def _adopt_equal_settings(job: Job, store, encoder, settings: RunSettings, cohort: Cohort,
                          cohorts: dict[str, Cohort] | None) -> None:
    """Seeds of the job's settings that are another protocol's (``Protocol.same_as``, e.g.
    ``finetune_fractions`` at 100 % is ``finetune``), taken from that protocol's finished record
    of the same encoder, task and identity when the results folder has one. A record of another
    run (other weights, profile...) lends nothing."""
    from bench.results import existing_record_matches

    protocol = get_protocol(job.protocol)
    for label, other, other_label in protocol.same_as:
        sibling = replace(job, protocol=other, stem="")
        path = sibling.record_path(settings.results_dir)
        if not path.is_file():
            continue
        try:
            record = existing_record_matches(path, job_identity(sibling, encoder, settings, cohort, cohorts))
        except MribenchError:
            continue
        if record is None:
            continue
        seeds = store.adopt(record, other_label, label, protocol.setting_params(label),
                            with_predictions=settings.keep_predictions)
        if seeds:
            print(f"{job.key}: {label} is {other}'s {other_label} setting; seed(s) {', '.join(map(str, seeds))} "
                  f"taken from {path}", file=sys.stderr)


def record_done(record: Path, job: Job, ws: Workspace, settings: RunSettings, cohort: Cohort,
                cohorts: dict[str, Cohort] | None = None):
    """The record when ``record`` holds this job's result already (skip it); None when it must run;
    a ``MribenchError`` when it holds another run's result (see
    :func:`bench.results.existing_record_matches`)."""
    from bench.results import existing_record_matches

    if not record.is_file():
        return None
    return existing_record_matches(record, job_identity(job, ws.encoder(job), settings, cohort, cohorts))


def _compute(job: Job, settings: RunSettings, cohort: Cohort, ws: Workspace, record: Path,
             start: float, cohorts: dict[str, Cohort] | None = None) -> tuple[float | None, tuple]:
    from bench.results import write_record

    spec = get_task(job.task)
    if spec.version != job.task_version:
        raise MribenchError(f"task {spec.name} is at version {spec.version} here but the job asked for "
                            f"v{job.task_version}: the worker runs other code than the client")
    protocol = get_protocol(job.protocol)
    encoder = ws.encoder(job)
    reason = protocol.supports(spec, encoder)
    if reason:  # before any scan is read
        raise MribenchError(reason)
    if job.trains_network:
        check_can_train(settings.compute)
    place(encoder, settings.compute)  # once: a no-op for the process's later jobs on the same device
    examples, split = ws.prepare(spec, cohort, settings.splits_root)
    ctx = Context(examples, split, cohort=cohort, encoder=encoder, profile=settings.profile,
                  keep_predictions=settings.keep_predictions, store=ws.store, embeddings=ws.embeddings,
                  progress=settings.progress, options=_options(job, cohort, cohorts, ws, settings),
                  checkpoints=_seed_checkpoints(job, encoder, settings, cohort, cohorts), compute=settings.compute)
    _prepare_features(ctx, protocol, settings, ws)
    if job.trains_network:
        with deterministic(settings.compute) as held:
            scores = run_protocol(job.protocol, ctx)
        ctx.run_info.update(held)
    else:
        scores = run_protocol(job.protocol, ctx)
    write_record(build_record(spec, job.protocol, encoder, ctx, scores, start, settings, cohort), record)
    if ctx.checkpoints is not None:
        ctx.checkpoints.clear()
    return headline(spec, job.protocol, scores)


def _seed_checkpoints(job: Job, encoder, settings: RunSettings, cohort: Cohort,
                      cohorts: dict[str, Cohort] | None):
    """Where a job that trains networks keeps its finished seeds, valid for this run's identity
    (:mod:`bench.seed_checkpoints`); None for the jobs that fit heads on frozen embeddings."""
    if not job.trains_network:
        return None
    from bench.seed_checkpoints import SeedCheckpoints

    identity = job_identity(job, encoder, settings, cohort, cohorts)
    for name, default in (("precision", "fp32"), ("batch size", None)):  # seeds kept before these existed
        if identity[name] == default:
            del identity[name]
    identity |= {"options": dict(job.options), "keep predictions": settings.keep_predictions}
    store = SeedCheckpoints(job.seeds_path(settings.results_dir), identity, fresh=settings.overwrite)
    if not settings.overwrite:
        _adopt_equal_settings(job, store, encoder, settings, cohort, cohorts)
    finished = store.finished()
    if finished:
        print(f"{job.key}: {len(finished)} seed(s) finished by an interrupted run of this job are "
              f"reused ({store.folder})", file=sys.stderr)
    return store


def _options(job: Job, cohort: Cohort, cohorts: dict[str, Cohort] | None, ws: Workspace,
             settings: RunSettings) -> dict[str, Any]:
    """The job's protocol options, with the scored task prepared on its cohort as ``target`` when
    they name another one (see :func:`scored_task`)."""
    opts = dict(job.options)
    if "test_cohort" in opts:
        spec, scored = scored_task(job, cohort, cohorts)
        opts["target"] = Prepared(scored, *ws.prepare(spec, scored, settings.splits_root))
    return opts


def _prepare_features(ctx: Context, protocol, settings: RunSettings, ws: Workspace) -> None:
    """The scan sanity gate for encoders that read voxels, then the frozen embeddings if the protocol
    needs them (one process embeds a task's scans while its other jobs wait, then read the cache)."""
    from bench.encoders.api import capabilities
    from bench.results import safe_name

    spec, encoder, cohort = ctx.spec, ctx.encoder, ctx.cohort
    embeds = protocol.embeds(spec)
    if not (capabilities(encoder).latent and embeds):  # it reads voxels
        from bench.data.sanity import check_scans

        with phase("store"):
            check_scans(cohort, ctx.examples.scan_rows())  # the scan sanity gate's header checks, before embedding
    if embeds:
        lock = settings.cache_root / "locks" / "embed" / f"{encoder_key(encoder)[:20]}-{safe_name(spec.name)}.lock"
        with try_lock(lock, wait=True):
            emb = ws.embeddings.embed(encoder, cohort, ctx.examples.scan_rows(), ws.store, progress=settings.progress,
                                      compute=settings.compute)
        ctx.features = assemble_features(ctx.examples, emb)


def build_record(spec: TaskSpec, protocol: str, encoder, ctx: Context, scores: list, start: float,
                 settings: RunSettings, cohort: Cohort):
    """The record of a job: scores, summary, flags, predictions and provenance of the scored side."""
    from bench.encoders.api import weights_sha256
    from bench.fingerprint import record_fields
    from bench.paths import split_display_path
    from bench.results import ResultRecord, collect_provenance, summarise

    proto = get_protocol(protocol)
    main, _ = proto.headline_score(spec, scores)
    compute = settings.compute
    card = encoder.card
    scored = scored_side(ctx)
    overlap = card.overlap(scored.evaluated, cohort=scored.cohort.name)
    flags = [f"pretraining_overlap: {len(overlap)} evaluated subject(s) were in the encoder's "
             f"pretraining data, e.g. {sorted(overlap)[0]}"] if overlap else []
    provenance = collect_provenance(
        task_spec_sha256=spec.sha256, split_sha256=scored.split.sha256,
        split_file=split_display_path(scored.split.path),
        cohort={"name": scored.cohort.name, "n_scans": len(scored.cohort), "root_hash": cohort_sha256(scored.cohort)},
        encoder_card=card.model_dump(mode="json"), checkpoint_sha256=encoder.checkpoint_hash(),
        weights_sha256=weights_sha256(encoder),
        config={"profile": settings.profile.name, "protocol": protocol, "n_boot": settings.profile.n_boot,
                "profile_settings": profile_settings(settings.profile, protocol), **scored.config,
                **record_fields(scored.split.path, scored.split.sha256),  # a rule-made split: rule hash, fingerprint
                **compute_config(compute, proto.trains(spec)),
                **({"cohort_extras": extras} if (extras := cohort_extras(protocol, scored.cohort)) else {})},
        # the seeds asked for (every protocol scores each), which is what a rerun is compared with
        seeds=list(range(settings.profile.seeds)), wall_time_s=time.perf_counter() - start,
        command=settings.command,
        compute={"device": compute.device, "precision": compute.precision, **ctx.run_info},
    )
    return ResultRecord.model_validate({
        "encoder": card.name, "task": spec.name, "task_version": spec.version, "protocol": protocol,
        "main_score_name": proto.main_metric(spec)[0], "main_score": main,
        "higher_is_better": proto.main_metric(spec)[1], "headline_setting": proto.headline,
        "scores": scores, "summary": summarise(scores), "flags": flags, "predictions": scored.predictions,
        "provenance": provenance, **{k: ctx.extra[k] for k in proto.extra_blocks if k in ctx.extra},
    })


# ------------------------------------------------------------------------------------------- the grid


class Runner:
    """Runs grids of jobs for one cohort and profile into one results folder.

    ``executor`` (default: :class:`bench.executors.LocalExecutor`, jobs one after another in this
    process) decides where jobs run. ``keep_going=False`` (the library default) stops at the first
    failing job and raises its error, after writing its failure marker; ``bench run`` passes
    ``keep_going=True`` so the rest of the grid completes and the failures are reported at the end.
    ``cohorts`` are other cohorts jobs may score (a cross-cohort transfer's target), by name in the
    jobs' options.
    """

    def __init__(self, cohort: Cohort, profile: Profile, results_dir: Path, *, progress: bool = True,
                 overwrite: bool = False, keep_predictions: bool = True, cache_root: Path | None = None,
                 executor=None, keep_going: bool = False, splits_root: Path | None = None,
                 command: str | None = None, cohorts: list[Cohort] = (), compute: Compute = CPU):
        check_seeds(profile.seeds)
        results_dir = Path(results_dir)
        if results_dir.exists() and not results_dir.is_dir():
            raise MribenchError(f"results folder {results_dir} is a file; give a folder for the result records")
        self.cohort = cohort
        self.cohorts = {c.name: c for c in cohorts if c.name != cohort.name}
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
        self.compute = compute
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
                           command=self.command, compute=self.compute)

    def run(self, encoder_spec: str, tasks: list[str], protocols: list[str],
            encoder_kwargs: dict | None = None, options: dict | None = None) -> list[JobResult]:
        """Every job of one encoder x ``tasks`` x ``protocols``; results in grid order."""
        return self.run_grid([encoder_spec], tasks, protocols, encoder_kwargs, options)

    def jobs(self, encoder_specs: list[str], tasks: list[str], protocols: list[str],
             encoder_kwargs: dict | None = None, options: dict | None = None) -> list[Job]:
        """The grid as jobs. Instantiates each encoder here (its card names the records, and a bad
        encoder should fail before anything is submitted) and keeps it for in-process jobs.
        ``options`` are protocol options (those a protocol requires, e.g. cross_cohort's target)."""
        import bench.encoders
        from bench.encoders.api import capabilities
        from bench.protocols import PROTOCOLS, check_protocols

        check_protocols(protocols, options)
        frozen = sorted(p for p in protocols if not PROTOCOLS[p].trains_network)
        specs = [get_task(t) for t in tasks]  # an unknown task fails before any work
        encoders = []
        for spec in encoder_specs:
            encoder = bench.encoders.get_encoder(spec, **(encoder_kwargs or {}))
            if capabilities(encoder).finetune_only and frozen:
                raise MribenchError(f"encoder {encoder.card.name} is trained from scratch on each task: use "
                                    f"--protocol finetune (got {', '.join(frozen)})")
            kwargs = dict(encoder_kwargs or {})
            self.workspace.encoders[(spec, tuple(sorted(kwargs.items())))] = encoder
            encoders.append((spec, encoder.card.name, kwargs))
        return expand_grid(encoders, specs, protocols, options, cohort_name=self.cohort.name)

    def run_grid(self, encoder_specs: list[str], tasks: list[str], protocols: list[str],
                 encoder_kwargs: dict | None = None, options: dict | None = None) -> list[JobResult]:
        return self.run_jobs(self.jobs(encoder_specs, tasks, protocols, encoder_kwargs, options))

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
                exists = None if self.overwrite else record_done(
                    record, job, self.workspace, settings, self.cohort, {self.cohort.name: self.cohort, **self.cohorts})
            except MribenchError as e:
                refused.append(str(e))
                continue
            if exists is not None:
                clear_failure(self.results_dir, job)  # (left if a run died between record and clean-up)
                done[job.key] = reused_result(job, record, exists)
            else:
                todo.append(job)
        if refused:
            more = f" (+{len(refused) - 1} more job(s) like it)" if len(refused) > 1 else ""
            raise MribenchError(refused[0] + more)
        by_key = {job.key: job for job in todo}
        for wait in (False, True):
            results = self.executor.map(run_job, todo, {"wait": wait},
                                        shared={"settings": settings, "cohort": self.cohort,
                                                # (Dask cannot scatter an empty dict)
                                                **({"cohorts": self.cohorts} if self.cohorts else {})},
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


def check_seeds(seeds) -> None:
    """At least one seed: with none, a job writes a record without scores that verifies and blocks its slot."""
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise MribenchError(f"seeds must be a whole number >= 1, got {seeds!r}")
