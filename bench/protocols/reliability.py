"""``reliability``: does an encoder give the same answer for a rescan, and follow a subject's change?

A longitudinal study (an atrophy endpoint in a trial, a brain-age trajectory) needs both. The probe
head is fitted once per seed on the clean training embeddings, as in ``linear_probe``; then, on the
task's evaluation splits:

* **Test-retest** (setting ``retest``, the headline): every evaluated example whose scan has a
  same-session repeat (``run-02``, :attr:`bench.data.cohort.Cohort.repeats`) is predicted from both
  acquisitions. The predicted value is the regression output (brain age) or the probability of the
  task's last class (AD, converter, the positive class). Metrics: ICC(2,1) (``icc``, the headline),
  the within-subject SD (``within_sd``, in the prediction's unit) and, for a regression, the ICC of
  the prediction's gap to the label (``icc_gap``: over ages 20-90 any age-tracking encoder has an
  ICC near 1; the brain-age gap is what a study reads, and its ICC is the stricter number).
* **Identification** (setting ``identification``): Finn et al.'s (2015) fingerprinting. Among the
  first acquisitions of every evaluated scan of a split, is a rescan's nearest embedding (cosine,
  after standardising each dimension by the training examples' mean and SD, so that no dimension's
  unit decides) its own first scan? The subject's other sessions are left out of the rivals (a
  visit six months apart is the same brain, not another person). Embeddings, not the head: this
  asks whether the representation itself is stable, whatever a probe makes of it.
* **Tracking** (setting ``tracking``): for an age-regression task, the within-subject slope of the
  predicted age against chronological age over the cohort's cognitively normal subjects with two or
  more sessions that the head never trained on (on the synthetic cohort: the ageing population's CN
  visits); fixed effects, i.e. values demeaned per subject then one least-squares slope, so 1 is
  perfect and differences between people cannot make it. For a classification task on a cohort
  whose generator knows each session's disease stage (``ground_truth.tsv``), the correlation
  between each test subject's change (first to last session) in the predicted log-odds and in the
  true stage (``tracking_r``). Real cohorts know no stage: there it is left out.

Every number has a subject-bootstrap 95 % CI (:func:`bench.reliability_stats.subject_bootstrap`)
with the record's bootstrap seed and replicates. The record keeps the paired predictions, the
identification hits and the tracking predictions, from which ``bench verify`` recomputes every
number (:func:`~bench.protocols.reliability_check.check_scores`); the hits themselves need the embeddings, which records do not keep.

Not ranked with the other protocols: a reliable encoder is not thereby a useful one (a constant
prediction has no within-subject SD), so the board shows reliability beside robustness, ordered
by ICC, and the ranked tables stay about accuracy.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from bench.errors import MribenchError
from bench.protocols import Protocol
from bench.protocols.context import (EVAL_SPLITS, Context, fit_head, head_data, probe_heads_only, record_predictions,
                                     seeds, split_indices)
from bench.protocols.reliability_check import check_scores
from bench.reliability_stats import (IDENTIFICATION, RETEST, TRACKING, identification_hits, retest_metrics,
                                     stage_tracking_r, subject_bootstrap, within_subject_slope)
from bench.results import SettingScore

#: Metric of each setting whose mean is compared across encoders, and whether higher is better.
HEADLINE_METRIC = ("icc", True)


def supports(spec, encoder) -> str | None:
    reason = probe_heads_only("reliability", "segmentation tasks are not supported")(spec, encoder)
    if reason is None and (spec.is_sequence or len(spec.input.sequences) != 1):
        reason = (f"the reliability protocol compares two acquisitions of one scan: task {spec.name} reads "
                  f"{'a sequence of sessions' if spec.is_sequence else 'several contrasts per example'}")
    if reason is None and spec.kind not in ("regression", "classification"):
        reason = f"the reliability protocol needs a predicted value or probability, not a {spec.kind} score"
    return reason


def predicted_value(pred: np.ndarray) -> np.ndarray:
    """The one number per example whose reliability is measured: a regression's output, or the
    probability of the last class (AD, converter, positive) of a classification."""
    pred = np.asarray(pred, dtype=float)
    return pred[:, -1] if pred.ndim == 2 else pred


# -- pairing the evaluated examples with their rescans ---------------------------------------------
def retest_pairs(ctx: Context) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per evaluation split: (example indices, repeats-table rows) of the examples with a rescan: the
    first repeat of the example's acquisition slot (:func:`~bench.data.cohort.acquisition_keys`; the
    cohort keeps each slot's repeats in run order)."""
    from bench.data.cohort import acquisition_keys

    repeats = ctx.cohort.repeats
    if repeats is None or repeats.empty:
        return {}
    slots = acquisition_keys(repeats)
    first = pd.Series(repeats.index, index=slots.to_numpy())[~slots.duplicated().to_numpy()]
    table_slots = acquisition_keys(ctx.cohort.table)
    out = {}
    for split in EVAL_SPLITS:
        idx = split_indices(ctx, split)
        keys = table_slots.loc[[int(ctx.examples.rows[i].ravel()[0]) for i in idx]].to_numpy()
        has = np.isin(keys, first.index)
        if has.any():
            out[split] = (idx[has], first.loc[keys[has]].to_numpy().astype(int))
    return out


def _repeat_features(ctx: Context, rows: np.ndarray) -> dict[int, np.ndarray]:
    """Embeddings of repeats-table rows, through the same cache as every other embedding."""
    cohort = ctx.cohort.repeats_cohort()
    return ctx.embeddings.embed(ctx.encoder, cohort, np.unique(rows), ctx.store, progress=ctx.progress,
                                compute=ctx.compute)


# -- the three settings -----------------------------------------------------------------------------
def _score(setting: str, seed: int, split: str, groups: np.ndarray, n_examples: int, metrics: dict,
           params: dict) -> SettingScore:
    return SettingScore(setting=setting, seed=seed, split=split, n_subjects=int(len(set(groups))),
                        n_examples=int(n_examples), params=params,
                        metrics={k: v["point"] for k, v in metrics.items()},
                        ci={k: {key: v[key] for key in ("point", "low", "high", "se", "n")} for k, v in metrics.items()})


def _retest(ctx: Context, heads: dict, pairs: dict, emb: dict[int, np.ndarray]) -> list[SettingScore]:
    from bench.heads import HeadData

    regression = ctx.spec.kind == "regression"
    scores = []
    for seed, head in heads.items():
        for split, (idx, rows) in pairs.items():
            first = head_data(ctx, idx)
            second = HeadData(x=np.stack([emb[int(r)] for r in rows]), y=first.y, groups=first.groups)
            # rounded as kept, so that `bench verify` recomputes exactly these numbers from the record
            values = np.round(np.column_stack([predicted_value(head.predict(first)),
                                               predicted_value(head.predict(second))]), 6)
            groups = first.groups
            metrics = retest_metrics(values, first.y if regression else None, groups, ctx.profile.n_boot, seed)
            scores.append(_score(RETEST, seed, split, groups, len(idx), metrics, {"value": _value_name(ctx)}))
            record_predictions(ctx, idx, split, seed, RETEST, first.y, values)
    return scores


def _value_name(ctx: Context) -> str:
    if ctx.spec.kind == "regression":
        return f"predicted {ctx.spec.label.type}"
    return f"probability of {ctx.spec.label.classes[-1] if ctx.spec.label.classes else 'the positive class'}"


def _keep(ctx: Context, seed: int, ids: list[str], subjects: list[str], y_true: list, y_pred: list) -> None:
    """Tracking rows, which are not the task's examples (other subjects' visits, or a subject's first and
    last session), in the record's prediction shape under ids of their own."""
    if not ctx.keep_predictions:
        return
    for eid, pid, yt, yp in zip(ids, subjects, y_true, y_pred):
        ctx.predictions.append({"example_id": str(eid), "participant_id": str(pid), "split": "test", "seed": seed,
                                "setting": TRACKING, "y_true": yt, "y_pred": yp})


def standardised(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each dimension centred and scaled by the training examples' mean and SD (SD 0 -> 1)."""
    mean, sd = reference.mean(axis=0), reference.std(axis=0)
    return (x - mean) / np.where(sd > 0, sd, 1.0)


def _identification(ctx: Context, pairs: dict, emb: dict[int, np.ndarray]) -> list[SettingScore]:
    train = np.stack([ctx.features[i][-1] for i in split_indices(ctx, "train")])
    scores = []
    for split, (idx, rows) in pairs.items():
        everyone = split_indices(ctx, split)
        gallery = standardised(np.stack([ctx.features[i][-1] for i in everyone]), train)
        queries = standardised(np.stack([emb[int(r)] for r in rows]), train)
        own = np.searchsorted(everyone, idx)
        groups = ctx.examples.table.iloc[idx]["participant_id"].to_numpy()
        hits = identification_hits(gallery, queries, own, ctx.examples.table.iloc[everyone]["participant_id"].to_numpy(),
                                   groups)
        for seed in seeds(ctx):
            metric = {"identification": subject_bootstrap(lambda r: float(hits[r].mean()), groups,
                                                          n_boot=ctx.profile.n_boot, seed=seed)}
            scores.append(_score(IDENTIFICATION, seed, split, groups, len(idx), metric,
                                 {"gallery_scans": int(len(everyone))}))
            record_predictions(ctx, idx, split, seed, IDENTIFICATION, [1] * len(idx), hits)
    return scores


# -- tracking ------------------------------------------------------------------------------------
def age_tracking_rows(ctx: Context) -> np.ndarray:
    """Cohort rows of cognitively normal subjects with two or more sessions (of the task's contrast)
    that the head never trained on: where predicted age should follow chronological age."""
    t = ctx.cohort.table
    sequence = ctx.spec.input.sequences[0]
    seen = set(ctx.examples.subjects("train")) | set(ctx.examples.subjects("val"))
    keep = (t["sequence"] == sequence) & ~t["participant_id"].isin(seen) & t["age"].notna()
    if "diagnosis" in t.columns:
        keep &= t["diagnosis"] == "CN"
    sessions = t[keep].groupby("participant_id")["session_id"].transform("nunique")
    chosen = t[keep][sessions >= 2].drop_duplicates(["participant_id", "session_id"])
    return chosen.sort_values(["participant_id", "months_from_baseline"]).index.to_numpy()


def _age_tracking(ctx: Context, heads: dict) -> list[SettingScore]:
    from bench.heads import HeadData

    rows = age_tracking_rows(ctx)
    if not len(rows):
        return []
    emb = ctx.embeddings.embed(ctx.encoder, ctx.cohort, rows, ctx.store, progress=ctx.progress, compute=ctx.compute)
    t = ctx.cohort.table.loc[rows]
    x, groups = np.stack([emb[int(r)] for r in rows]), t["participant_id"].to_numpy()
    age = np.round(t["age"].to_numpy(float), 6)
    ids = [f"{p}_{s}" for p, s in zip(t["participant_id"], t["session_id"])]
    scores = []
    for seed, head in heads.items():
        pred = np.round(predicted_value(head.predict(HeadData(x=x, y=age, groups=groups))), 6)
        metric = {"slope": subject_bootstrap(lambda r: within_subject_slope(pred[r], age[r], groups[r]), groups,
                                             n_boot=ctx.profile.n_boot, seed=seed)}
        scores.append(_score(TRACKING, seed, "test", groups, len(rows), metric,
                             {"tracking_set": "cognitively normal subjects with 2+ sessions, not in train / val"}))
        _keep(ctx, seed, ids, list(groups), [float(a) for a in age], [float(p) for p in pred])
    return scores


def _first_last(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    """Example indices of the first and last session of every test subject with two or more."""
    idx = split_indices(ctx, "test")
    t = ctx.examples.table.iloc[idx][["participant_id"]].assign(_i=idx, _m=[ctx.examples.months[i][-1] for i in idx])
    t = t[t.groupby("participant_id")["_i"].transform("size") >= 2].sort_values(["participant_id", "_m"])
    return (t.groupby("participant_id").head(1)["_i"].to_numpy(),
            t.groupby("participant_id").tail(1)["_i"].to_numpy())


def _stage_tracking(ctx: Context, heads: dict) -> list[SettingScore]:
    truth = ctx.cohort.ground_truth
    first, last = _first_last(ctx)
    if truth is None or "stage" not in truth.columns or not len(first):
        return []
    stage = truth.drop_duplicates(["participant_id", "session_id"]).set_index(["participant_id", "session_id"])["stage"]
    table = ctx.examples.table
    subjects = table["participant_id"].to_numpy()[first]
    true = np.round(np.column_stack([[float(stage[(table.at[i, "participant_id"], table.at[i, "session_id"])])
                                      for i in ends] for ends in (first, last)]), 6)
    scores = []
    for seed, head in heads.items():
        p = np.round(np.column_stack([predicted_value(head.predict(head_data(ctx, ends))) for ends in (first, last)]), 6)
        metric = {"tracking_r": subject_bootstrap(lambda r: stage_tracking_r(true[r], p[r]), subjects,
                                                  n_boot=ctx.profile.n_boot, seed=seed)}
        scores.append(_score(TRACKING, seed, "test", subjects, len(subjects), metric,
                             {"tracking_set": "test subjects with 2+ sessions: first to last session"}))
        _keep(ctx, seed, [f"{s}_first-last" for s in subjects], list(subjects), true.tolist(), p.tolist())
    return scores


def _tracking(ctx: Context, heads: dict) -> list[SettingScore]:
    if ctx.spec.kind == "regression" and ctx.spec.label.type == "age":
        return _age_tracking(ctx, heads)
    if ctx.spec.kind == "classification":
        return _stage_tracking(ctx, heads)
    return []


# -- the protocol ------------------------------------------------------------------------------------
def run(ctx: Context) -> list:
    spec = ctx.spec
    if ctx.features is None or ctx.embeddings is None:
        raise MribenchError("reliability needs the clean embeddings and the embedding cache")
    pairs = retest_pairs(ctx)
    if not pairs:
        raise MribenchError(f"{spec.name} on cohort {ctx.cohort.name}: no test or external example has a "
                            "same-session repeat scan (a run-02 of its session); reliability needs rescans "
                            "(the synthetic generator writes them; importers keep them as runs)")
    train = split_indices(ctx, "train")
    heads = {seed: fit_head(ctx, train, seed) for seed in seeds(ctx)}
    emb = _repeat_features(ctx, np.concatenate([rows for _, rows in pairs.values()]))
    scores = _retest(ctx, heads, pairs, emb) + _identification(ctx, pairs, emb) + _tracking(ctx, heads)
    ctx.extra["reliability"] = _block(ctx, pairs)
    return scores


def _block(ctx: Context, pairs: dict) -> dict:
    """What the record says about how its numbers were made (and pins the rescans it read)."""
    repeats = ctx.cohort.repeats
    scans = sorted(f"{repeats.at[int(r), 'participant_id']}_{repeats.at[int(r), 'session_id']}_run-"
                   f"{repeats.at[int(r), 'run']}_{repeats.at[int(r), 'sequence']}"
                   for _, rows in pairs.values() for r in rows)
    return {"value": _value_name(ctx), "pairs": {split: int(len(idx)) for split, (idx, _) in pairs.items()},
            "rescans_sha256": hashlib.sha256("\n".join(scans).encode()).hexdigest(),
            "icc": "ICC(2,1), Shrout & Fleiss 1979: two-way random, absolute agreement, single measurement",
            "identification": "nearest first-acquisition embedding by cosine after standardising each "
                              "dimension by the training examples' mean and SD, the subject's other sessions "
                              "left out of the rivals (Finn et al. 2015)",
            "tracking": ("within-subject (fixed-effects) slope of predicted on chronological age"
                         if ctx.spec.kind == "regression" else
                         "Pearson r of first-to-last change in predicted log-odds and in true stage"),
            "not_recomputable": "the identification hits (they need the embeddings; their mean and CI are)"}


PROTOCOL = Protocol(
    name="reliability", run=run, label="reliability (ICC)", headline=RETEST, order=5, ranked=False,
    description="test-retest ICC of the probe's predictions on same-session rescans, fingerprinting "
                "of rescans by their embeddings, and within-subject tracking of change",
    supports=supports, extra_blocks=("reliability",), metric=HEADLINE_METRIC, check=check_scores,
    reads_repeats=True)
