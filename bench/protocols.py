"""Evaluation protocols: each a small function over (task examples, encoder, split) -> scores.

- ``linear_probe``: frozen encoder, cached embeddings, a head with inner-CV regularisation,
  trained on all training subjects, several seeds.
- ``fractions``: the same head on nested 1/10/20/50/100 % subsets of the training subjects.
- ``few_shot``: k = 1, 5, 10 training subjects per class, several seeded draws.
- ``finetune``: encoder and head trained end to end, early stopping on the validation split.
- ``robustness``: the probe head trained on clean scans, scored on test / external scans with
  each acquisition artefact at severities 1-5 (:mod:`bench.robustness`).
Segmentation tasks use a light decoder over the encoder's feature maps (frozen for the probe,
trained with the decoder for fine-tuning). Every setting is scored on test and external
subjects with a bootstrap CI that resamples subjects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench import metrics as M
from bench.data.cohort import Cohort
from bench.errors import MribenchError
from bench.profiles import Profile
from bench.splits import Split
from bench.tasks import Examples

FRACTIONS = (0.01, 0.1, 0.2, 0.5, 1.0)
SHOTS = (1, 5, 10)
EVAL_SPLITS = ("test", "external")
PROTOCOLS = ("linear_probe", "fractions", "few_shot", "finetune", "robustness")


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

    @property
    def spec(self):
        return self.examples.spec


# -- features and heads -------------------------------------------------------------------------
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

    An encoder with ``sequence_features(embeddings (L, F), months (L,)) -> (L, F')`` (the
    temporal SSL baseline) models a subject's variable-length scan history itself; the harness
    then pools its output like any other features. Other encoders, and single-scan tasks, are
    left as they are.
    """
    if not examples.spec.is_sequence or not hasattr(encoder, "sequence_features"):
        return features
    return [np.asarray(encoder.sequence_features(f, m), np.float32) for f, m in zip(features, examples.months)]


def make_head(spec, seed: int):
    from bench import heads

    n_classes = len(spec.label.classes or [])
    if spec.is_sequence:
        kind = {"sequence_classification": "classification"}.get(spec.kind, spec.kind)
        return heads.SequenceHead(kind, n_outputs=max(n_classes, 1), seed=seed)
    if spec.kind == "classification":
        return heads.LogisticHead(n_classes=n_classes, seed=seed)
    if spec.kind == "regression":
        return heads.RidgeHead()
    if spec.kind == "survival":
        return heads.CoxHead(seed=seed)
    raise MribenchError(f"no probe head for task kind {spec.kind}")


def fit_head(ctx: Context, train: np.ndarray, seed: int):
    """The task's probe head for ``seed``, fitted on the training examples ``train``.

    Most heads do not depend on the seed: the fractions protocol trains on the same nested
    subset for every seed, and linear_probe / robustness on the whole training split, so the
    same deterministic fit would be repeated once per seed (two thirds of a fractions grid).
    A head that says ``uses_seed = False`` is fitted once per training set and context and
    shared; the seeds still differ where they matter (bootstrap resamples, k-shot draws).
    """
    head = make_head(ctx.spec, seed)
    key = (np.asarray(train).tobytes(), id(ctx.features)) if not getattr(head, "uses_seed", True) else None
    if key is not None and key in ctx.fitted_heads:
        return ctx.fitted_heads[key]
    val = _mask(ctx, "val")
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
    y = ex.labels()[idx]
    if ctx.spec.kind in ("classification", "sequence_classification"):
        y = y.astype(int)
    return HeadData(x=x, months=months, y=y, groups=sub["participant_id"].to_numpy(), folds=folds)


def metric_params(spec) -> dict[str, dict]:
    """Keyword arguments the task gives its metrics: a survival task's ``label.horizon_months`` is
    Uno's C truncation time tau (only events before the horizon count; see :func:`bench.metrics.uno_c`)."""
    if spec.kind == "survival" and spec.label.horizon_months is not None and "uno_c" in spec.metrics:
        return {"uno_c": {"tau": float(spec.label.horizon_months)}}
    return {}


def score_predictions(spec, y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray,
                      n_boot: int, seed: int) -> tuple[dict, dict]:
    """Point metrics and bootstrap CIs (subjects resampled) for every metric of the task."""
    values, cis = {}, {}
    params = metric_params(spec)
    for name in spec.metrics:
        ci = M.bootstrap_ci(name, y_true, y_pred, n_boot=n_boot, seed=seed, groups=groups,
                            params=params.get(name))
        values[name] = _finite(ci["point"])
        cis[name] = {k: _finite(ci[k]) if isinstance(ci[k], float) else ci[k]
                     for k in ("point", "low", "high", "se", "n")}
    return values, cis


def setting_score(ctx: Context, idx: np.ndarray, split: str, seed: int, setting: str,
                  y_true: np.ndarray, y_pred: np.ndarray, params: dict) -> dict:
    """One scored (setting, seed, split) entry of a record, with CIs over its subjects.

    Predictions are checked once here, before any metric: a NaN / Inf fails the job naming the
    example. A metric left undefined for a reason (e.g. mauc with a class absent from the split)
    says why in ``params['metric_warnings']``.
    """
    import warnings

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
    params = {**params, **({"metric_warnings": notes} if notes else {})}
    return {"setting": setting, "seed": seed, "split": split, "metrics": values, "ci": cis,
            "n_subjects": int(len(set(groups))), "n_examples": int(len(idx)),
            "params": {k: _jsonable(v) for k, v in params.items()}}


def _finite(v) -> float | None:
    v = float(v)
    return None if math.isnan(v) or math.isinf(v) else v


def _mask(ctx: Context, split: str, subjects: set[str] | None = None) -> np.ndarray:
    t = ctx.examples.table
    m = (t["split"] == split).to_numpy()
    if subjects is not None:
        m &= t["participant_id"].isin(subjects).to_numpy()
    return np.flatnonzero(m)


def eval_indices(ctx: Context) -> dict[str, np.ndarray]:
    """Example indices of each evaluation split that has examples (test, then external)."""
    return {split: idx for split in EVAL_SPLITS if len(idx := _mask(ctx, split))}


def fit_and_score(ctx: Context, train_subjects: set[str] | None, seed: int, setting: str) -> list[dict]:
    """Train a probe head on the chosen training subjects, score it on test and external."""
    train = _mask(ctx, "train", train_subjects)
    if len(train) == 0:
        raise MribenchError(f"{ctx.spec.name}: no training examples for setting {setting}")
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
                **getattr(head, "chosen", {})}))
            if ctx.keep_predictions:
                _keep(ctx, idx, split, seed, setting, data.y, pred)
    return out


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def _keep(ctx: Context, idx, split, seed, setting, y_true, y_pred) -> None:
    t = ctx.examples.table.iloc[idx]
    for (eid, pid), yt, yp in zip(t[["example_id", "participant_id"]].itertuples(index=False), y_true, y_pred):
        ctx.predictions.append({"example_id": eid, "participant_id": pid, "split": split, "seed": seed,
                                "setting": setting, "y_true": _jsonable(np.asarray(yt)),
                                "y_pred": _jsonable(np.round(np.asarray(yp, dtype=float), 6))})


def example_volumes(ctx: Context, kind: str = "image") -> list:
    """Per example a (L, S, D, H, W) float tensor of its scans in the encoder's input space."""
    import torch

    space = ctx.encoder.card.input_space
    paths = ctx.cohort.table["path"]
    ctx.store.prefetch([paths[r] for r in ctx.examples.scan_rows()], space, progress=False)
    return [torch.from_numpy(np.stack([np.stack([np.asarray(ctx.store.get(paths[r], space), np.float32)
                                                  for r in step]) for step in rows]))
            for rows in ctx.examples.rows]


# -- training subsets ---------------------------------------------------------------------------
def task_train_order(ctx: Context) -> list[str]:
    """The task's training subjects in the split file's nested order (so fractions nest)."""
    order = ctx.split.table.set_index("participant_id")["order"]
    subs = ctx.examples.subjects("train")
    return sorted(subs, key=lambda s: (order.get(s, 10 ** 9), s))


def fraction_subjects(ctx: Context, p: float) -> set[str]:
    ordered = task_train_order(ctx)
    return set(ordered[: max(1, math.ceil(p * len(ordered)))])


def subject_labels(ctx: Context) -> pd.Series:
    """One class per training subject (its first example's label) for k-shot draws."""
    t = ctx.examples.table
    train = t[t["split"] == "train"]
    return train.groupby("participant_id")["y"].first().astype(int)


# -- protocols ----------------------------------------------------------------------------------
def seeds(ctx: Context) -> range:
    return range(ctx.profile.seeds)


def linear_probe(ctx: Context) -> list[dict]:
    if ctx.spec.kind == "segmentation":
        from bench.segmentation import segmentation_probe

        return [s for seed in seeds(ctx) for s in segmentation_probe(ctx, None, seed, "full", frozen=True)]
    return [s for seed in seeds(ctx) for s in fit_and_score(ctx, None, seed, "full")]


def fractions(ctx: Context) -> list[dict]:
    out = []
    for p in FRACTIONS:
        subjects = fraction_subjects(ctx, p)
        for seed in seeds(ctx):
            setting = f"fraction={p:g}"
            if ctx.spec.kind == "segmentation":
                from bench.segmentation import segmentation_probe

                out += segmentation_probe(ctx, subjects, seed, setting, frozen=True)
            else:
                out += fit_and_score(ctx, subjects, seed, setting)
    return out


def few_shot(ctx: Context) -> list[dict]:
    if ctx.spec.kind not in ("classification", "sequence_classification"):
        raise MribenchError(f"few_shot needs class labels; task {ctx.spec.name} is {ctx.spec.kind}")
    labels = subject_labels(ctx)
    out = []
    for k in SHOTS:
        for draw in range(ctx.profile.few_shot_draws):
            subjects = set(ctx.split.k_shot(labels, k, draw, ctx.spec.name))
            out += fit_and_score(ctx, subjects, draw, f"k={k}")
    return out


def finetune(ctx: Context) -> list[dict]:
    from bench.finetune import finetune_scores

    return finetune_scores(ctx)


def robustness(ctx: Context) -> list[dict]:
    from bench.robustness import robustness as run

    return run(ctx)


def run_protocol(name: str, ctx: Context) -> list[dict]:
    try:
        fn = {"linear_probe": linear_probe, "fractions": fractions, "few_shot": few_shot,
              "finetune": finetune, "robustness": robustness}[name]
    except KeyError:
        raise MribenchError(f"unknown protocol '{name}'; choose from {', '.join(PROTOCOLS)}") from None
    if ctx.features is not None and not ctx.extra.get("sequence_summaries"):
        ctx.features = with_sequence_summaries(ctx.examples, ctx.features, ctx.encoder)
        ctx.extra["sequence_summaries"] = True
    return fn(ctx)


def needs_embeddings(name: str, spec) -> bool:
    return name in ("linear_probe", "fractions", "few_shot", "robustness") and spec.kind != "segmentation"
