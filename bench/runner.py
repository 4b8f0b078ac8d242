"""Expand encoder x task x protocol into jobs, run the missing ones, write one record per job.

Resumable by construction: a job whose record already exists (and validates) is skipped, each
record is written atomically when its job finishes, and embeddings are cached per scan on disk,
so an interrupted run loses at most the job in flight and the next run does only what is missing.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data.cohort import Cohort
from bench.data.store import VolumeStore
from bench.embeddings import EmbeddingCache
from bench.errors import MribenchError
from bench.paths import cache_home
from bench.profiles import Profile
from bench.protocols import Context, assemble_features, needs_embeddings, run_protocol
from bench.splits import Split, load_split
from bench.tasks import Examples, TaskSpec, attach_split, build_examples, get_task

HEADLINE_SETTING = {"linear_probe": "full", "fractions": "fraction=1", "few_shot": "k=10",
                    "finetune": "full", "robustness": "clean"}


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


def prepare_task(spec: TaskSpec, cohort: Cohort) -> tuple[Examples, Split]:
    """Examples of the task on the cohort, each tagged with its subject's split."""
    examples = build_examples(spec, cohort)
    split = load_split(spec.split_path(cohort.name), cohort.subjects()["participant_id"].tolist())
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


class Runner:
    def __init__(self, cohort: Cohort, profile: Profile, results_dir: Path, *, progress: bool = True,
                 overwrite: bool = False, keep_predictions: bool = True, cache_root: Path | None = None):
        self.cohort = cohort
        self.profile = profile
        self.results_dir = Path(results_dir)
        self.progress = progress
        self.overwrite = overwrite
        self.keep_predictions = keep_predictions
        root = cache_root or cache_home()
        self.store = VolumeStore(root / "store")
        self.embeddings = EmbeddingCache(root / "embeddings")

    def run(self, encoder_spec: str, tasks: list[str], protocols: list[str],
            encoder_kwargs: dict | None = None) -> list[JobResult]:
        from bench.encoders import get_encoder
        from bench.results import record_exists, record_path

        encoder = get_encoder(encoder_spec, **(encoder_kwargs or {}))
        if getattr(encoder, "finetune_only", False) and set(protocols) - {"finetune"}:
            raise MribenchError(f"encoder {encoder.card.name} is trained from scratch on each task: use "
                                f"--protocol finetune (got {', '.join(sorted(set(protocols) - {'finetune'}))})")
        results = []
        for task_name in tasks:
            spec = get_task(task_name)
            prepared = None
            for protocol in protocols:
                path = record_path(self.results_dir, encoder.card.name, spec.name, spec.version, protocol)
                if record_exists(path) and not self.overwrite:
                    results.append(JobResult(encoder.card.name, spec.name, protocol, path, "skipped (exists)"))
                    continue
                if prepared is None:
                    prepared = prepare_task(spec, self.cohort)
                start = time.perf_counter()
                ctx = Context(*prepared, cohort=self.cohort, encoder=encoder, profile=self.profile,
                              keep_predictions=self.keep_predictions, store=self.store,
                              embeddings=self.embeddings, progress=self.progress)
                if needs_embeddings(protocol, spec):
                    emb = self.embeddings.embed(encoder, self.cohort, ctx.examples.scan_rows(), self.store,
                                                progress=self.progress)
                    ctx.features = assemble_features(ctx.examples, emb)
                scores = run_protocol(protocol, ctx)
                record = self.build_record(spec, protocol, encoder, ctx, scores, start)
                from bench.results import write_record

                write_record(record, path)
                main, ci = headline(spec, protocol, scores)
                results.append(JobResult(encoder.card.name, spec.name, protocol, path, "done", main, ci,
                                         time.perf_counter() - start))
        return results

    def build_record(self, spec: TaskSpec, protocol: str, encoder, ctx: Context, scores: list[dict],
                     start: float):
        from bench.results import ResultRecord, collect_provenance, summarise

        main, _ = headline(spec, protocol, scores)
        card = encoder.card
        evaluated = set(ctx.examples.subjects("test")) | set(ctx.examples.subjects("external"))
        overlap = card.overlap(evaluated, cohort=self.cohort.name)
        flags = [f"pretraining_overlap: {len(overlap)} evaluated subject(s) were in the encoder's "
                 f"pretraining data, e.g. {sorted(overlap)[0]}"] if overlap else []
        provenance = collect_provenance(
            task_spec_sha256=spec.sha256, split_sha256=ctx.split.sha256,
            split_file=_display_path(ctx.split.path),
            cohort={"name": self.cohort.name, "n_scans": len(self.cohort)},
            encoder_card=card.model_dump(mode="json"), checkpoint_sha256=encoder.checkpoint_hash(),
            config={"profile": self.profile.name, "protocol": protocol, "n_boot": self.profile.n_boot,
                    "excluded_examples": ctx.examples.excluded},
            seeds=sorted({s["seed"] for s in scores}), wall_time_s=time.perf_counter() - start,
            command=" ".join(shlex.quote(a) for a in sys.argv),
        )
        return ResultRecord.model_validate({
            "encoder": card.name, "task": spec.name, "task_version": spec.version, "protocol": protocol,
            "main_score_name": spec.main_score, "main_score": main,
            "higher_is_better": spec.higher_is_better, "headline_setting": HEADLINE_SETTING[protocol],
            "scores": scores, "summary": summarise(scores), "flags": flags,
            "predictions": ctx.predictions if self.keep_predictions else None,
            "provenance": provenance,
            **({"robustness": ctx.extra["robustness"]} if "robustness" in ctx.extra else {}),
        })


def _display_path(path: Path) -> str:
    """Repo-relative when inside the checkout, so records carry no machine-specific paths."""
    from bench.paths import repo_root

    try:
        return str(Path(path).resolve().relative_to(repo_root()))
    except ValueError:
        return Path(path).name


def check_protocols(protocols: list[str]) -> None:
    from bench.protocols import PROTOCOLS

    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad:
        raise MribenchError(f"unknown protocol(s) {bad}; choose from {', '.join(PROTOCOLS)}")
