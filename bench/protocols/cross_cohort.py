"""``cross_cohort``: fit the probe head on one cohort (or site), score it on another.

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

It runs through the :class:`~bench.runner.Runner` like every other protocol (job lock, failure
marker, resume): the runner's cohort is the training side, and the job's options name the target
(``test_cohort``, ``test_task``, ``train_site``, ``test_site``; a side may name several sites joined
by ``+``, e.g. ``S1+S2+S3``). Its record sits beside the task's
other protocols as ``cross_cohort-<train>-to-<test>.json``; both sides are recorded in its
provenance (cohort, site, task, split file and hash, subject counts). Labels must mean the same on
both sides (same kind, label type and classes), which the task pair is checked for, e.g.
``adni/ad_diagnosis`` -> ``oasis3/ad_diagnosis``. The leaderboard verifies these records and shows
them in a section of their own beside the in-distribution linear-probe score; it does not rank them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data.cohort import Cohort
from bench.errors import MribenchError
from bench.protocols import Protocol
from bench.protocols.context import (FULL, Context, Scored, assemble_features, fit_head, from_scratch_support, head_data,
                                     record_predictions, seeds, setting_score, with_sequence_summaries)
from bench.tasks import Examples, TaskSpec, get_task
from bench.timing import phase

NAME = "cross_cohort"
#: Joins several sites of one side (``--train-site S1+S2+S3``: the head trains on all three).
SITE_JOIN = "+"


@dataclass
class Side:
    """One end of a transfer: a cohort, the task spec read on it, and an optional site."""

    cohort: Cohort
    task: str
    site: str | None = None

    @property
    def label(self) -> str:
        return self.cohort.name + (f"@{self.site}" if self.site else "")


def check_compatible(train: TaskSpec, test: TaskSpec) -> None:
    """The two specs must define the same label, or a score across them means nothing."""
    if not train.target.uses_embeddings or not test.target.uses_embeddings:
        raise MribenchError("cross_cohort scores probe heads (classification, regression, survival); "
                            "segmentation transfer is not supported yet")
    same = (train.kind == test.kind and train.label.type == test.label.type
            and (train.label.classes or []) == (test.label.classes or [])
            and train.label.horizon_months == test.label.horizon_months
            and train.input.sequences == test.input.sequences and train.input.mode == test.input.mode)
    if not same:
        raise MribenchError(f"tasks {train.name} and {test.name} do not measure the same thing (kind, label, "
                            "classes, horizon and input must match); pick a test task that does")


def check_transfer(train: Side, test: Side) -> None:
    """Refuse a pair that is no transfer, before any work."""
    check_compatible(get_task(train.task), get_task(test.task))
    check_sites(train.cohort.name, train.site, test.cohort.name, test.site)


def check_sites(train_cohort: str, train_site: str | None, test_cohort: str, test_site: str | None) -> None:
    """Within one cohort both sides name their sites, and no site is on both sides."""
    if train_cohort == test_cohort and (not site_names(train_site) or not site_names(test_site)
                                        or set(site_names(train_site)) & set(site_names(test_site))):
        raise MribenchError(f"train and test are both cohort {train_cohort}: a transfer within one cohort "
                            "needs --train-site and --test-site, and no site may be on both sides")


def options(train: Side, test: Side) -> dict:
    """The job options of the transfer ``train`` -> ``test`` (cohort objects by name)."""
    return {"test_cohort": test.cohort.name, "test_task": test.task, "train_site": train.site,
            "test_site": test.site}


def record_stem(cohort_name: str, options: dict) -> str:
    """``cross_cohort-<train cohort[@site]>-to-<test cohort[@site]>``: one record per transfer."""
    from bench.results import safe_name

    train = _labelled(cohort_name, options.get("train_site"))
    test = _labelled(options.get("test_cohort") or cohort_name, options.get("test_site"))
    return f"{NAME}-{safe_name(train)}-to-{safe_name(test)}"


def _labelled(cohort_name: str, site: str | None) -> str:
    return cohort_name + (f"@{site}" if site else "")


def example_sites(examples: Examples, cohort: Cohort) -> np.ndarray:
    """Site of each example: that of its index scan (the last step's first sequence)."""
    sites = cohort.table["site"].to_numpy()
    return np.array([sites[int(rows[-1][0])] for rows in examples.rows], dtype=object)


def site_names(site: str | None) -> list[str]:
    """The sites a side names: one, several joined by ``+`` (``S1+S2+S3``), or none (every site)."""
    return [] if site is None else [s for s in str(site).split(SITE_JOIN) if s]


def _subset_with_sites(examples: Examples, cohort: Cohort, site: str | None) -> Examples:
    if site is None:
        return examples
    sites = example_sites(examples, cohort)
    missing = [s for s in site_names(site) if s not in set(sites)]
    if missing or not site_names(site):
        raise MribenchError(f"{cohort.name}: no example of task {examples.spec.name} at site "
                            f"'{missing[0] if missing else site}'; sites: {', '.join(sorted(map(str, set(sites))))}")
    return examples.subset(np.isin(sites.astype(str), site_names(site)))


def _sides(ctx: Context) -> tuple[Examples, Examples]:
    """The training examples (train / val of the training site) and the scored ones (the target
    site's, less any subject the head was trained on)."""
    o = ctx.options
    target = o["target"]
    src = _subset_with_sites(ctx.examples, ctx.cohort, o.get("train_site"))
    src = src.subset(src.table["split"].isin(["train", "val"]).to_numpy())
    dst = _subset_with_sites(target.examples, target.cohort, o.get("test_site"))
    trained_on = set(src.subjects("train")) | set(src.subjects("val"))
    if target.cohort.name == ctx.cohort.name:  # a subject is at one site, but a moved scanner must not leak
        dst = dst.subset(~dst.table["participant_id"].isin(trained_on).to_numpy())
    if not len(src.subjects("train")):
        raise MribenchError(f"{_label(ctx.cohort, o.get('train_site'))}: task {ctx.spec.name} has no training "
                            "subjects there")
    if not len(dst):
        raise MribenchError(f"{_label(target.cohort, o.get('test_site'))}: task {target.examples.spec.name} has "
                            "no example left to score")
    return src, dst


def _label(cohort: Cohort, site: str | None) -> str:
    return _labelled(cohort.name, site)


def _side_context(ctx: Context, examples: Examples, split, cohort: Cohort) -> Context:
    emb = ctx.embeddings.embed(ctx.encoder, cohort, examples.scan_rows(), ctx.store, progress=ctx.progress,
                               compute=ctx.compute)
    features = with_sequence_summaries(examples, assemble_features(examples, emb), ctx.encoder)
    return Context(examples, split, cohort, ctx.encoder, ctx.profile, features=features, store=ctx.store,
                   keep_predictions=ctx.keep_predictions, embeddings=ctx.embeddings, progress=ctx.progress,
                   compute=ctx.compute)


def run(ctx: Context) -> list:
    """Fit on the training side's train split, score on the target side; the record describes the target."""
    target = ctx.options["target"]
    check_compatible(ctx.spec, target.examples.spec)
    check_sites(ctx.cohort.name, ctx.options.get("train_site"), target.cohort.name, ctx.options.get("test_site"))
    src, dst = _sides(ctx)
    ctx_src = _side_context(ctx, src, ctx.split, ctx.cohort)
    ctx_dst = _side_context(ctx, dst, target.split, target.cohort)
    src_t, dst_t = ctx_src.examples.table, ctx_dst.examples.table
    train_idx = np.flatnonzero((src_t["split"] == "train").to_numpy())
    evaluate = {"test": np.flatnonzero((dst_t["split"] == "test").to_numpy()), "external": np.arange(len(dst_t))}
    evaluate = {k: v for k, v in evaluate.items() if len(v)}
    scores: list = []
    labels = {"train": _label(ctx.cohort, ctx.options.get("train_site")),
              "test": _label(target.cohort, ctx.options.get("test_site"))}
    for seed in seeds(ctx):
        head = fit_head(ctx_src, train_idx, seed)
        for split, idx in evaluate.items():
            data = head_data(ctx_dst, idx)
            with phase("heads"):
                pred = head.predict(data)
            scores.append(setting_score(ctx_dst, idx, split, seed, FULL, data.y, pred, {
                "n_train_examples": int(len(train_idx)),
                "n_train_subjects": int(src_t.iloc[train_idx]["participant_id"].nunique()), **labels, **head.chosen}))
            record_predictions(ctx_dst, idx, split, seed, FULL, data.y, pred)
    ctx.extra["scored"] = Scored(
        cohort=target.cohort, split=target.split, predictions=ctx_dst.predictions or None,
        evaluated=set(dst_t["participant_id"]),
        config={"train": _side_info(ctx.cohort, ctx.options.get("train_site"), ctx.spec, ctx_src, "train"),
                "test": _side_info(target.cohort, ctx.options.get("test_site"), target.examples.spec, ctx_dst,
                                   "test"),
                "excluded_examples": {"train": ctx.examples.excluded, "test": target.examples.excluded}})
    return scores


def _side_info(cohort: Cohort, site: str | None, spec: TaskSpec, ctx: Context, role: str) -> dict:
    from bench.paths import split_display_path

    t = ctx.examples.table
    splits = ("train", "val") if role == "train" else ("test",)
    return {"cohort": cohort.name, "n_scans": int(len(cohort)), "site": site,
            "task": f"{spec.name}@v{spec.version}", "task_spec_sha256": spec.sha256,
            "split_file": split_display_path(ctx.split.path), "split_sha256": ctx.split.sha256,
            "n_subjects": {s: int(t.loc[t["split"] == s, "participant_id"].nunique()) for s in splits}
            | ({"all": int(t["participant_id"].nunique())} if role == "test" else {})}


def headline_split(scores: list) -> str:
    """The target's ``test`` split, or ``external`` when the target has no test subjects (e.g. a
    held-out site, which its split file puts wholly in external)."""
    return "test" if any(s.split == "test" for s in scores) or not scores else "external"


def supports(spec, encoder) -> str | None:
    if not spec.target.uses_embeddings:
        return ("cross_cohort scores probe heads (classification, regression, survival); "
                "segmentation transfer is not supported yet")
    return from_scratch_support(spec, encoder)


def run_cross_cohort(encoder_spec: str, train: Side, test: Side, profile, results_dir: Path, *,
                     overwrite: bool = False, progress: bool = True, keep_predictions: bool = True,
                     encoder_kwargs: dict | None = None, cache_root: Path | None = None, command: str | None = None,
                     compute=None):
    """Fit on ``train`` (its train split, its site), score on ``test``: one job of the Runner, whose
    :class:`~bench.runner.JobResult` is returned (``status``, ``path``, ``main_score``, ``ci``...)."""
    from bench.runner import Runner

    check_transfer(train, test)
    runner = Runner(train.cohort, profile, results_dir, progress=progress, overwrite=overwrite,
                    keep_predictions=keep_predictions, cache_root=cache_root, command=command,
                    **({"compute": compute} if compute is not None else {}),
                    cohorts=[test.cohort])
    (result,) = runner.run(encoder_spec, [train.task], [NAME], encoder_kwargs, options=options(train, test))
    return result


PROTOCOL = Protocol(
    name=NAME, run=run, label="cross cohort", headline=FULL.label, order=5, ranked=False,
    needs_embeddings=False, description="probe head fitted on one cohort or site, scored on another",
    supports=supports, headline_split=headline_split, options=("test_cohort",), record_name=record_stem,
    accepts=("test_cohort", "test_task", "train_site", "test_site"), transfer=True)
