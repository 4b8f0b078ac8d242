"""Cross-cohort protocol: fit the probe head on one cohort (or site), score it on another.

This is the source papers' out-of-distribution setting: an encoder whose frozen embeddings only
separate classes within one scanner population looks good in-distribution and falls apart here.
The head is trained exactly as in ``linear_probe`` (same heads, inner-CV folds of the training
cohort's split file, early stopping on its ``val`` subjects), then scored on the target side:

* ``test``: the target cohort's own test split (restricted to the target site if given), so the
  number sits next to the in-distribution linear-probe score on the very same subjects;
* ``external``: every target subject the head never saw (all of another cohort; for a site
  transfer within one cohort, all subjects of the target site), for a larger sample.

The record's ``main_score`` is the ``test`` score, or the ``external`` one when the target has no
test subjects (a site its split file holds out whole, e.g. the synthetic cohort's S4).

Both sides are recorded in the record's provenance (cohort, site, task, split file and hash,
subject counts); the record's protocol is ``cross_cohort``. Labels must mean the same on both
sides (same kind, label type and classes), which the task pair is checked for, e.g.
``adni/ad_diagnosis`` -> ``oasis3/ad_diagnosis``.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data.cohort import Cohort
from bench.errors import MribenchError
from bench.profiles import Profile
from bench.tasks import Examples, TaskSpec, get_task

PROTOCOL = "cross_cohort"
SETTING = "full"


@dataclass
class Side:
    """One end of a transfer: a cohort, the task spec read on it, and an optional site."""

    cohort: Cohort
    task: str
    site: str | None = None

    @property
    def label(self) -> str:
        return self.cohort.name + (f"@{self.site}" if self.site else "")


@dataclass
class CrossResult:
    path: Path
    status: str                 # "done" or "skipped (exists)"
    main_score: float | None = None
    ci: tuple[float | None, float | None] = (None, None)
    seconds: float = 0.0


def check_compatible(train: TaskSpec, test: TaskSpec) -> None:
    """The two specs must define the same label, or a score across them means nothing."""
    if train.kind == "segmentation" or test.kind == "segmentation":
        raise MribenchError("cross_cohort scores probe heads (classification, regression, survival); "
                            "segmentation transfer is not supported yet")
    same = (train.kind == test.kind and train.label.type == test.label.type
            and (train.label.classes or []) == (test.label.classes or [])
            and train.label.horizon_months == test.label.horizon_months
            and train.input.sequences == test.input.sequences and train.input.mode == test.input.mode)
    if not same:
        raise MribenchError(f"tasks {train.name} and {test.name} do not measure the same thing (kind, label, "
                            "classes, horizon and input must match); pick a test task that does")


def example_sites(examples: Examples, cohort: Cohort) -> np.ndarray:
    """Site of each example: that of its index scan (the last step's first sequence)."""
    sites = cohort.table["site"].to_numpy()
    return np.array([sites[int(rows[-1][0])] for rows in examples.rows], dtype=object)


def _display(path: Path) -> str:
    from bench.paths import repo_root

    try:
        return str(Path(path).resolve().relative_to(repo_root()))
    except ValueError:
        return Path(path).name


def record_file(results_dir: Path, encoder: str, spec: TaskSpec, train: Side, test: Side) -> Path:
    """``<results>/<encoder>/<task>@v<N>/cross_cohort-<train>-to-<test>.json``: one file per pair,
    beside the task's other protocols, so resume is a file-existence check as for ``bench run``."""
    from bench.results import record_path, safe_name

    base = record_path(results_dir, encoder, spec.name, spec.version, PROTOCOL)
    return base.with_name(f"{PROTOCOL}-{safe_name(train.label)}-to-{safe_name(test.label)}.json")


def _subset_with_sites(examples: Examples, cohort: Cohort, site: str | None) -> Examples:
    if site is None:
        return examples
    sites = example_sites(examples, cohort)
    if site not in set(sites):
        raise MribenchError(f"{cohort.name}: no example of task {examples.spec.name} at site '{site}'; sites: "
                            f"{', '.join(sorted(map(str, set(sites))))}")
    return examples.subset(sites == site)


def run_cross_cohort(encoder_spec: str, train: Side, test: Side, profile: Profile, results_dir: Path, *,
                     overwrite: bool = False, progress: bool = True, keep_predictions: bool = True,
                     encoder_kwargs: dict | None = None, cache_root: Path | None = None) -> CrossResult:
    """Fit on ``train`` (its train split, its site), score on ``test``; write one record."""
    from bench import protocols as P
    from bench.data.store import VolumeStore
    from bench.embeddings import EmbeddingCache
    from bench.encoders import get_encoder
    from bench.paths import cache_home
    from bench.runner import prepare_task

    train_spec, test_spec = get_task(train.task), get_task(test.task)
    check_compatible(train_spec, test_spec)
    same_cohort = train.cohort.name == test.cohort.name
    if same_cohort and (train.site is None or test.site is None or train.site == test.site):
        raise MribenchError(f"train and test are both cohort {train.cohort.name}: a transfer within one cohort "
                            "needs --train-site and --test-site, and they must differ")
    encoder = get_encoder(encoder_spec, **(encoder_kwargs or {}))
    path = record_file(results_dir, encoder.card.name, train_spec, train, test)
    if not overwrite and _done(path, encoder, train_spec, test_spec, test, profile):
        return CrossResult(path, "skipped (exists)")
    start = time.perf_counter()
    root = cache_root or cache_home()
    store, cache = VolumeStore(root / "store"), EmbeddingCache(root / "embeddings")

    src_all, src_split = prepare_task(train_spec, train.cohort)
    src = _subset_with_sites(src_all, train.cohort, train.site)
    src = src.subset(src.table["split"].isin(["train", "val"]).to_numpy())
    dst_all, dst_split = prepare_task(test_spec, test.cohort)
    dst = _subset_with_sites(dst_all, test.cohort, test.site)
    trained_on = set(src.subjects("train")) | set(src.subjects("val"))
    if same_cohort:  # a subject is at one site, but a moved scanner or a relabelled site must not leak
        dst = dst.subset(~dst.table["participant_id"].isin(trained_on).to_numpy())
    if not len(src.subjects("train")):
        raise MribenchError(f"{train.label}: task {train_spec.name} has no training subjects there")
    if not len(dst):
        raise MribenchError(f"{test.label}: task {test_spec.name} has no example left to score")

    def side_context(examples: Examples, split, cohort: Cohort) -> P.Context:
        emb = cache.embed(encoder, cohort, examples.scan_rows(), store, progress=progress)
        features = P.assemble_features(examples, emb)
        if hasattr(P, "with_sequence_summaries"):  # encoders that model the scan history themselves
            features = P.with_sequence_summaries(examples, features, encoder)
        return P.Context(examples, split, cohort, encoder, profile, features=features, store=store,
                         keep_predictions=keep_predictions, embeddings=cache, progress=progress)

    ctx_src = side_context(src, src_split, train.cohort)
    ctx_dst = side_context(dst, dst_split, test.cohort)
    src_t = ctx_src.examples.table
    train_idx = np.flatnonzero((src_t["split"] == "train").to_numpy())
    dst_t = ctx_dst.examples.table
    evaluate = {"test": np.flatnonzero((dst_t["split"] == "test").to_numpy()), "external": np.arange(len(dst_t))}
    evaluate = {k: v for k, v in evaluate.items() if len(v)}
    scores: list[dict] = []
    for seed in range(profile.seeds):
        head = P.fit_head(ctx_src, train_idx, seed)
        for split, idx in evaluate.items():
            data = P.head_data(ctx_dst, idx)
            pred = head.predict(data)
            scores.append(P.setting_score(ctx_dst, idx, split, seed, SETTING, data.y, pred, {
                "n_train_examples": int(len(train_idx)),
                "n_train_subjects": int(src_t.iloc[train_idx]["participant_id"].nunique()),
                "train": train.label, "test": test.label, **getattr(head, "chosen", {})}))
            if keep_predictions:
                _keep(ctx_dst, idx, split, seed, data.y, pred)
    record = _record(train_spec, test_spec, encoder, ctx_src, ctx_dst, train, test, profile, scores, start,
                     excluded={"train": src_all.excluded, "test": dst_all.excluded})
    from bench.results import write_record

    write_record(record, path)
    main, ci = headline(train_spec, scores)
    return CrossResult(path, "done", main, ci, time.perf_counter() - start)


def headline(spec: TaskSpec, scores: list[dict]) -> tuple[float | None, tuple]:
    """Mean over seeds of the main metric on the target's ``test`` split, or on ``external`` when the
    target has no test subjects (e.g. a held-out site, which its split file puts wholly in external)."""
    from bench.runner import headline as on_test

    main, ci = on_test(spec, PROTOCOL, scores)
    if main is None and not any(s["split"] == "test" for s in scores):
        main, ci = on_test(spec, PROTOCOL, [{**s, "split": "test"} for s in scores if s["split"] == "external"])
    return main, ci


def _keep(ctx, idx: np.ndarray, split: str, seed: int, y_true, y_pred) -> None:
    t = ctx.examples.table.iloc[idx]
    for (eid, pid), yt, yp in zip(t[["example_id", "participant_id"]].itertuples(index=False), y_true, y_pred):
        ctx.predictions.append({"example_id": eid, "participant_id": pid, "split": split, "seed": seed,
                                "setting": SETTING, "y_true": np.asarray(yt).tolist(),
                                "y_pred": np.round(np.asarray(yp, dtype=float), 6).tolist()})


def _side_info(side: Side, spec: TaskSpec, ctx, role: str) -> dict:
    t = ctx.examples.table
    splits = ("train", "val") if role == "train" else ("test",)
    return {"cohort": side.cohort.name, "n_scans": int(len(side.cohort)), "site": side.site,
            "task": f"{spec.name}@v{spec.version}", "task_spec_sha256": spec.sha256,
            "split_file": _display(ctx.split.path), "split_sha256": ctx.split.sha256,
            "n_subjects": {s: int(t.loc[t["split"] == s, "participant_id"].nunique()) for s in splits}
            | ({"all": int(t["participant_id"].nunique())} if role == "test" else {})}


def _done(path: Path, encoder, train_spec: TaskSpec, test_spec: TaskSpec, test: Side, profile: Profile) -> bool:
    """True when ``path`` holds this transfer's result (skip it); a one-line error when it holds
    another run's (other weights, cohort, profile or seeds), as for ``bench run``."""
    from bench.encoders.api import weights_sha256
    from bench.results import existing_record_matches
    from bench.runner import cohort_sha256, profile_settings, split_file
    from bench.splits import file_sha256

    if not path.is_file():
        return False
    split = split_file(test_spec, test.cohort.name)
    return existing_record_matches(path, {
        "encoder": encoder.card.name, "weights": weights_sha256(encoder), "cohort": test.cohort.name,
        "cohort hash": cohort_sha256(test.cohort), "profile": profile.name,
        "profile settings": profile_settings(profile), "seeds": list(range(profile.seeds)),
        "task hash": train_spec.sha256, "split hash": file_sha256(split) if split.is_file() else None})


def _record(train_spec: TaskSpec, test_spec: TaskSpec, encoder, ctx_src, ctx_dst, train: Side, test: Side,
            profile: Profile, scores: list[dict], start: float, excluded: dict):
    from bench.results import ResultRecord, collect_provenance, summarise

    main, _ = headline(train_spec, scores)
    card = encoder.card
    evaluated = set(ctx_dst.examples.table["participant_id"])
    overlap = card.overlap(evaluated, cohort=test.cohort.name)
    flags = [f"pretraining_overlap: {len(overlap)} evaluated subject(s) were in the encoder's pretraining data, "
             f"e.g. {sorted(overlap)[0]}"] if overlap else []
    from bench.encoders.api import weights_sha256
    from bench.runner import cohort_sha256, profile_settings

    provenance = collect_provenance(
        task_spec_sha256=train_spec.sha256, split_sha256=ctx_dst.split.sha256,
        split_file=_display(ctx_dst.split.path),
        cohort={"name": test.cohort.name, "n_scans": len(test.cohort), "root_hash": cohort_sha256(test.cohort)},
        encoder_card=card.model_dump(mode="json"), checkpoint_sha256=encoder.checkpoint_hash(),
        weights_sha256=weights_sha256(encoder),
        config={"profile": profile.name, "protocol": PROTOCOL, "n_boot": profile.n_boot,
                "profile_settings": profile_settings(profile),
                "train": _side_info(train, train_spec, ctx_src, "train"),
                "test": _side_info(test, test_spec, ctx_dst, "test"),
                "excluded_examples": excluded},
        seeds=list(range(profile.seeds)), wall_time_s=time.perf_counter() - start,
        command=" ".join(shlex.quote(a) for a in sys.argv))
    return ResultRecord.model_validate({
        "encoder": card.name, "task": train_spec.name, "task_version": train_spec.version, "protocol": PROTOCOL,
        "main_score_name": train_spec.main_score, "main_score": main,
        "higher_is_better": train_spec.higher_is_better, "headline_setting": SETTING,
        "scores": scores, "summary": summarise(scores), "flags": flags,
        "predictions": ctx_dst.predictions or None, "provenance": provenance,
    })
