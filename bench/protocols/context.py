"""What every protocol shares: the read-only Context, evaluation splits, probe heads, scoring.

A protocol (one module each beside this one, registered in :mod:`bench.protocols`) is a
function of a :class:`Context` that returns typed :class:`~bench.results.SettingScore` entries:
one per (setting, seed, evaluation split), each with bootstrap CIs over subjects. Everything a
protocol needs to do that is here, public: the examples of a split (:func:`split_indices`,
:func:`eval_indices`), the task's probe head (:func:`make_head`, :func:`fit_head`,
:func:`fit_and_score`), frozen features (:func:`assemble_features`), voxels
(:func:`example_volumes`), scoring (:func:`setting_score`) and kept predictions
(:func:`record_predictions`). What depends on the target (labels, head, loss) is the task's
:class:`~bench.kinds.TargetKind` (``ctx.target``); nothing here branches on a kind's name.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bench import metrics as M
from bench.data.cohort import Cohort
from bench.errors import MribenchError
from bench.profiles import Profile
from bench.results import SettingScore
from bench.splits import Split
from bench.tasks import Examples
from bench.timing import phase

#: Evaluation splits, in the order a record lists them.
EVAL_SPLITS = ("test", "external")


@dataclass
class Context:
    """Everything a protocol needs; built once per (encoder, task) by the runner."""

    examples: Examples
    split: Split
    cohort: Cohort
    encoder: object
    profile: Profile
    features: list[np.ndarray] | None = None      # per example (L, S*E): frozen embeddings
    store: object = None                          # VolumeStore, for protocols that read voxels
    predictions: list[dict] = field(default_factory=list)
    keep_predictions: bool = True
    embeddings: object = None                     # EmbeddingCache, for protocols that embed more scans
    progress: bool = False
    extra: dict = field(default_factory=dict)     # protocol-specific blocks of the record
    fitted_heads: dict = field(default_factory=dict, repr=False)  # see fit_head
    options: dict = field(default_factory=dict)   # the job's protocol options (cross_cohort: sites, target)
    checkpoints: object = None                    # SeedCheckpoints of a job that trains networks
    compute: object = None                        # bench.devices.Compute: device, precision; None: CPU fp32
    run_info: dict = field(default_factory=dict)  # how it computed (micro-batch...): the record's provenance

    @property
    def spec(self):
        return self.examples.spec

    @property
    def target(self):
        """The task's target kind (:mod:`bench.kinds`)."""
        return self.examples.spec.target


@dataclass(frozen=True)
class Setting:
    """One setting of a protocol: its label in records (``fraction=0.1``) and its structured
    parameters (``{"fraction": 0.1}``), which go into each score's ``params``."""

    label: str
    params: dict[str, Any] = field(default_factory=dict)


FULL = Setting("full")


@dataclass(frozen=True)
class Prepared:
    """A task's examples on a cohort, tagged with the split file's splits (what the runner prepares)."""

    cohort: Cohort
    examples: Examples
    split: Split


@dataclass
class Scored:
    """What a record says was scored: the cohort and split of the evaluated side, its kept
    predictions, its evaluated subjects (for the pretraining-overlap flag) and the protocol's
    entries of the record's ``config``. By default the context's own (see :func:`scored_side`);
    a protocol that scores another side (cross_cohort) puts its own in ``ctx.extra["scored"]``."""

    cohort: Cohort
    split: Split
    predictions: list[dict] | None
    evaluated: set[str]
    config: dict[str, Any]


def scored_side(ctx: Context) -> Scored:
    """The side of ``ctx`` a record describes (see :class:`Scored`)."""
    if "scored" in ctx.extra:
        return ctx.extra["scored"]
    evaluated = set(ctx.examples.subjects("test")) | set(ctx.examples.subjects("external"))
    return Scored(ctx.cohort, ctx.split, ctx.predictions if ctx.keep_predictions else None, evaluated,
                  {"excluded_examples": ctx.examples.excluded})


def seeds(ctx: Context) -> range:
    return range(ctx.profile.seeds)


def compute_of(ctx: Context):
    """The job's :class:`~bench.devices.Compute` (CPU fp32 for a context built without one)."""
    from bench.devices import CPU

    return ctx.compute or CPU


def micro_batch(ctx: Context, default: int) -> int:
    """Examples per optimiser step of a network the job trains: ``--batch-size`` when given, else the
    encoder's own (an optional ``micro_batch`` attribute), else ``default`` (the kind's / decoder's).
    Fixed whatever the device's memory, since BatchNorm makes the numbers depend on it; recorded."""
    size = compute_of(ctx).batch_size or getattr(ctx.encoder, "micro_batch", None) or default
    ctx.run_info["micro_batch"] = int(size)
    return int(size)


# -- examples of a split ------------------------------------------------------------------------
def split_indices(ctx: Context, split: str, subjects: set[str] | None = None) -> np.ndarray:
    """Example indices of ``split`` (restricted to ``subjects`` when given)."""
    t = ctx.examples.table
    m = (t["split"] == split).to_numpy()
    if subjects is not None:
        m &= t["participant_id"].isin(subjects).to_numpy()
    return np.flatnonzero(m)


def eval_indices(ctx: Context) -> dict[str, np.ndarray]:
    """Example indices of each evaluation split that has examples (test, then external)."""
    return {split: idx for split in EVAL_SPLITS if len(idx := split_indices(ctx, split))}


def task_train_order(ctx: Context) -> list[str]:
    """The task's training subjects in the split file's nested order (so fractions nest)."""
    order = ctx.split.table.set_index("participant_id")["order"]
    subs = ctx.examples.subjects("train")
    return sorted(subs, key=lambda s: (order.get(s, 10 ** 9), s))


def subject_labels(ctx: Context) -> pd.Series:
    """One class per training subject (its first example's label) for k-shot draws."""
    t = ctx.examples.table
    train = t[t["split"] == "train"]
    return train.groupby("participant_id")["y"].first().astype(int)


# -- features -----------------------------------------------------------------------------------
def assemble_features(examples: Examples, embeddings: dict[int, np.ndarray]) -> list[np.ndarray]:
    """Per example an (L, S*E) array: each step's input sequences' embeddings concatenated.

    An embedding with NaN / Inf fails here, naming the example, rather than inside a head.
    """
    features = [np.stack([np.concatenate([embeddings[int(r)] for r in step]) for step in rows])
                for rows in examples.rows]
    for i, f in enumerate(features):
        if not np.isfinite(f).all():
            raise M.NonFinitePrediction(
                f"task {examples.spec.name}: the encoder's embedding of example "
                f"{examples.table['example_id'].iloc[i]} holds {int(np.size(f) - np.isfinite(f).sum())} "
                "NaN / Inf value(s); fix the encoder (or its weights) before evaluating it")
    return features


def with_sequence_summaries(examples: Examples, features: list[np.ndarray], encoder) -> list[np.ndarray]:
    """Append an encoder's own learned history summaries to sequence examples' steps.

    An encoder with the :class:`~bench.encoders.api.Sequence` capability
    (``sequence_features(embeddings (L, F), months (L,)) -> (L, F')``, the temporal SSL baseline)
    models a subject's variable-length scan history itself; the harness then pools its output
    like any other features. Other encoders, and single-scan tasks, are left as they are.
    """
    from bench.encoders.api import Sequence

    if not examples.spec.is_sequence or not isinstance(encoder, Sequence):
        return features
    return [np.asarray(encoder.sequence_features(f, m), np.float32) for f, m in zip(features, examples.months)]


@phase("store")
def example_volumes(ctx: Context) -> list:
    """Per example a (L, S, D, H, W) float tensor of its scans in the encoder's input space."""
    import torch

    space = ctx.encoder.card.input_space
    paths = ctx.cohort.table["path"]
    ctx.store.prefetch([paths[r] for r in ctx.examples.scan_rows()], space, progress=False)
    return [torch.from_numpy(np.stack([np.stack([np.asarray(ctx.store.get(paths[r], space), np.float32)
                                                  for r in step]) for step in rows]))
            for rows in ctx.examples.rows]


# -- probe heads --------------------------------------------------------------------------------
def make_head(spec, seed: int):
    """The task's probe head: its kind's flat head, behind trajectory pooling for sequence input."""
    from bench.heads import SequenceHead

    target = spec.target
    if not target.uses_embeddings:
        raise MribenchError(f"no probe head for task kind {spec.kind}")
    if spec.is_sequence:
        n_outputs = max(len(spec.label.classes or []), 1)
        return SequenceHead(lambda: target.probe_head(spec, seed), n_outputs=n_outputs, seed=seed)
    return target.probe_head(spec, seed)


@phase("heads")
def fit_head(ctx: Context, train: np.ndarray, seed: int):
    """The task's probe head for ``seed``, fitted on the training examples ``train``.

    Most heads do not depend on the seed: the fractions protocol trains on the same nested
    subset for every seed, and linear_probe / robustness on the whole training split, so the
    same deterministic fit would be repeated once per seed (two thirds of a fractions grid).
    A head whose ``uses_seed`` is False is fitted once per training set and context and
    shared; the seeds still differ where they matter (bootstrap resamples, k-shot draws).
    """
    head = make_head(ctx.spec, seed)
    key = (np.asarray(train).tobytes(), id(ctx.features)) if not head.uses_seed else None
    if key is not None and key in ctx.fitted_heads:
        return ctx.fitted_heads[key]
    val = split_indices(ctx, "val")
    head.fit(head_data(ctx, train, with_folds=True), head_data(ctx, val) if len(val) else None)
    if key is not None:
        ctx.fitted_heads[key] = head
    return head


def head_data(ctx: Context, idx: np.ndarray, with_folds: bool = False):
    from bench.heads import HeadData

    ex = ctx.examples
    feats = [ctx.features[i] for i in idx]
    sub = ex.table.iloc[idx]
    folds = None
    if with_folds:
        fold_of = ctx.split.table.set_index("participant_id")["fold"]
        folds = sub["participant_id"].map(fold_of).to_numpy()
    if ctx.spec.is_sequence:
        x, months = feats, [ex.months[i] for i in idx]
    else:
        x, months = np.stack([f[-1] for f in feats]), None
    y = ctx.target.head_targets(ex.labels()[idx])
    return HeadData(x=x, months=months, y=y, groups=sub["participant_id"].to_numpy(), folds=folds)


@phase("heads")
def fit_and_score(ctx: Context, train_subjects: set[str] | None, seed: int, setting: Setting) -> list[SettingScore]:
    """Train a probe head on the chosen training subjects, score it on test and external."""
    train = split_indices(ctx, "train", train_subjects)
    if len(train) == 0:
        raise MribenchError(f"{ctx.spec.name}: no training examples for setting {setting.label}")
    import sklearn

    from bench.heads import blas_single_thread

    # small dense problems (see blas_single_thread); our own finite arrays, so scikit-learn's
    # per-call argument validation (a third of a probe fit's time) is skipped
    with blas_single_thread(), sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        head = fit_head(ctx, train, seed)
        out = []
        for split, idx in eval_indices(ctx).items():
            data = head_data(ctx, idx)
            pred = head.predict(data)
            out.append(setting_score(ctx, idx, split, seed, setting, data.y, pred, {
                "n_train_examples": int(len(train)),
                "n_train_subjects": int(ctx.examples.table.iloc[train]["participant_id"].nunique()),
                **head.chosen}))
            record_predictions(ctx, idx, split, seed, setting, data.y, pred)
    return out


# -- scoring ------------------------------------------------------------------------------------
def metric_params(spec) -> dict[str, dict]:
    """Keyword arguments the task gives its metrics (its kind decides: e.g. a survival task's
    horizon is Uno's C truncation time tau, see :meth:`bench.kinds.Survival.metric_params`)."""
    return spec.target.metric_params(spec)


def score_predictions(spec, y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray,
                      n_boot: int, seed: int) -> tuple[dict, dict]:
    """Point metrics and bootstrap CIs (subjects resampled) for every metric of the task."""
    values, cis = {}, {}
    params = metric_params(spec)
    for name in spec.metrics:
        ci = M.bootstrap_ci(name, y_true, y_pred, n_boot=n_boot, seed=seed, groups=groups,
                            params=params.get(name))
        values[name] = finite_or_none(ci["point"])
        cis[name] = {k: finite_or_none(ci[k]) if isinstance(ci[k], float) else ci[k]
                     for k in ("point", "low", "high", "se", "n")}
    return values, cis


def setting_score(ctx: Context, idx: np.ndarray, split: str, seed: int, setting: Setting | str,
                  y_true: np.ndarray, y_pred: np.ndarray, params: dict) -> SettingScore:
    """One scored (setting, seed, split) entry of a record, with CIs over its subjects.

    Predictions are checked once here, before any metric: a NaN / Inf fails the job naming the
    example. A metric left undefined for a reason (e.g. mauc with a class absent from the split)
    says why in ``params['metric_warnings']``. The setting's structured parameters come first in
    ``params``.
    """
    setting = setting if isinstance(setting, Setting) else Setting(setting)
    table = ctx.examples.table.iloc[idx]
    M.check_finite_predictions(y_pred, labels=table["example_id"].to_numpy())
    groups = table["participant_id"].to_numpy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", M.MetricWarning)
        values, cis = score_predictions(ctx.spec, y_true, y_pred, groups, ctx.profile.n_boot, seed)
    notes = sorted({str(w.message) for w in caught if issubclass(w.category, M.MetricWarning)})
    for w in caught:  # anything else goes on as it would have
        if not issubclass(w.category, M.MetricWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    params = {**setting.params, **params, **({"metric_warnings": notes} if notes else {})}
    return SettingScore(setting=setting.label, seed=seed, split=split, metrics=values, ci=cis,
                        n_subjects=int(len(set(groups))), n_examples=int(len(idx)),
                        params={k: jsonable(v) for k, v in params.items()})


def finite_or_none(v) -> float | None:
    v = float(v)
    return None if math.isnan(v) or math.isinf(v) else v


def jsonable(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def record_predictions(ctx: Context, idx, split: str, seed: int, setting: Setting | str, y_true, y_pred) -> None:
    """Keep the per-example predictions of one scored entry for the record (if the run keeps them)."""
    if not ctx.keep_predictions:
        return
    label = setting.label if isinstance(setting, Setting) else setting
    t = ctx.examples.table.iloc[idx]
    for (eid, pid), yt, yp in zip(t[["example_id", "participant_id"]].itertuples(index=False), y_true, y_pred):
        ctx.predictions.append({"example_id": eid, "participant_id": pid, "split": split, "seed": seed,
                                "setting": label, "y_true": jsonable(np.asarray(yt)),
                                "y_pred": jsonable(np.round(np.asarray(yp, dtype=float), 6))})


def input_spacing(ctx: Context) -> float:
    """Voxel size (mm) of the encoder's input space."""
    from bench.data.spaces import get_space

    return get_space(ctx.encoder.card.input_space).spacing_mm


# -- does a protocol apply? -----------------------------------------------------------------------
def segmentation_support(spec, encoder) -> str | None:
    """A segmentation task needs an encoder that segments (feature maps, or the oracle's label maps)."""
    from bench.encoders.api import capabilities

    if spec.target.uses_embeddings or capabilities(encoder).segments:
        return None
    return (f"segmentation needs feature maps: encoder {encoder.card.name} exposes none "
            "(card.supports_segmentation is false)")


def from_scratch_support(spec, encoder) -> str | None:
    """A frozen protocol means nothing for an encoder trained from scratch on each task."""
    from bench.encoders.api import capabilities

    if capabilities(encoder).finetune_only:
        return f"encoder {encoder.card.name} is trained from scratch on each task: use --protocol finetune"
    return None


def frozen_support(spec, encoder) -> str | None:
    """Where a frozen-encoder probe (a head, or a decoder for segmentation) applies."""
    return from_scratch_support(spec, encoder) or segmentation_support(spec, encoder)


def probe_heads_only(protocol: str, why: str):
    """A ``supports`` for protocols that score probe heads only (no segmentation decoder)."""
    def supports(spec, encoder) -> str | None:
        if not spec.target.uses_embeddings:
            return f"the {protocol} protocol scores probe heads; {why}"
        return from_scratch_support(spec, encoder)
    return supports


# -- running a protocol ---------------------------------------------------------------------------
def run_protocol(name: str, ctx: Context) -> list[SettingScore]:
    """Run protocol ``name`` on ``ctx`` (after its ``supports`` check): its typed setting scores."""
    from bench.protocols import get_protocol

    protocol = get_protocol(name)
    reason = protocol.supports(ctx.spec, ctx.encoder)
    if reason:
        raise MribenchError(reason)
    if ctx.features is not None and not ctx.extra.get("sequence_summaries"):
        ctx.features = with_sequence_summaries(ctx.examples, ctx.features, ctx.encoder)
        ctx.extra["sequence_summaries"] = True
    return protocol.run(ctx)
