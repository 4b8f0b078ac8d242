"""``site``: how well the acquisition site can be read from an encoder's embeddings (site leakage).

OpenBHB (Dufumier et al. 2022, NeuroImage 263:119637) asks two things of a brain-age
representation: that it predicts age on sites it was trained on and on sites it never saw (the
challenge's internal and external MAE), and that it carries as little of the site as it can (how well
a linear probe decodes the site from it). This protocol reports the same three numbers for any task
scored by a probe head on one example per session, on any cohort with a ``site`` column:

* **Site decodability** (setting ``site``, the headline ``site_balanced_accuracy``, lower is
  better): on the task's *training* examples, a multinomial logistic probe (each dimension
  standardised on the fitting part; L2, C chosen by inner cross-validation log-loss over the
  remaining folds: the task heads' :class:`~bench.heads.LogisticHead`, so the probe does its best
  and a low score is not a too-strong penalty) predicts each example's site, 5-fold over the split
  file's ``fold`` column (a subject is in one fold only). Balanced accuracy of the out-of-fold
  predictions (argmax of the kept probabilities), with a subject-bootstrap 95 % interval; chance
  is one over the number of training sites, recorded in the score's ``params``. Only training
  subjects are used, so the external site (on the synthetic cohort, S4) is not among the classes:
  the default cohort has three. The score's ``split`` reads ``test`` only because a record's split
  must be an evaluation split; its ``params`` say the rows are out-of-fold training subjects.
* **The task itself** (setting ``full``): the task's probe head fitted on all training examples, as
  ``linear_probe`` fits it, scored on ``test`` (internal: the training sites) and ``external`` (the
  held-out site): OpenBHB's internal and external MAE for brain age.

Every prediction is rounded to 6 decimals before any number is computed from it, so ``bench
verify`` recomputes every score and interval exactly from the kept rows
(:mod:`bench.protocols.site_check`). The site probe's fit does not depend on the seed; the seeds
differ in the bootstrap replicates (and in the task head where it uses its seed).

Not ranked: a representation with no site in it is not thereby useful (a constant has none), and
one that decodes the site well may still transfer; the board shows this as a column beside the
internal and external score (lower site decodability at an equal external score is better).
"""

from __future__ import annotations

import numpy as np

from bench.errors import MribenchError
from bench.protocols import Protocol
from bench.protocols.context import (FULL, Context, eval_indices, fit_head, head_data, probe_heads_only,
                                     record_predictions, seeds, setting_score, split_indices)
from bench.protocols.site_check import METRIC, SITE, chance, check_scores, site_decodability
from bench.results import SettingScore

#: The headline metric and its direction (lower: less site in the embedding).
HEADLINE_METRIC = (METRIC, False)
#: What the site rows are, in every site score's params.
EVALUATED_ON = ("out-of-fold predictions on the task's training subjects (5 folds of the split file's "
                "fold column); 'test' is the schema's label for the split, not the test subjects")


def supports(spec, encoder) -> str | None:
    """Probe heads on one example per session (a sequence of sessions may span sites)."""
    reason = probe_heads_only("site", "segmentation tasks are not supported")(spec, encoder)
    if reason is None and spec.is_sequence:
        reason = (f"the site protocol decodes the site of one session's scan: task {spec.name} reads a "
                  "sequence of sessions")
    return reason


# -- the training examples and their sites ------------------------------------------------------------
#: Site labels that name no site: importers write ``unknown`` where a release records none.
NO_SITE = ("", "unknown", "nan", "none")


def example_sites(ctx: Context, idx: np.ndarray) -> np.ndarray:
    """The site of each example (its first scan's row of the cohort table), '' where it is missing
    or ``unknown`` (not a site the decoder could learn)."""
    table = ctx.cohort.table
    if "site" not in table.columns:
        raise MribenchError(f"cohort {ctx.cohort.name} has no 'site' column; the site protocol decodes it")
    rows = [int(ctx.examples.rows[i].ravel()[0]) for i in idx]
    sites = ["" if v is None or v != v else str(v).strip() for v in table.loc[rows, "site"]]
    return np.array(["" if v.lower() in NO_SITE else v for v in sites])


def training_sites(ctx: Context) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(example indices, site codes, site names) of the training examples whose site is known."""
    train = split_indices(ctx, "train")
    sites = example_sites(ctx, train)
    keep = sites != ""
    names = sorted(set(sites[keep]))
    if len(names) < 2:
        raise MribenchError(f"{ctx.spec.name} on cohort {ctx.cohort.name}: the training subjects come from "
                            f"{len(names)} site(s) ({', '.join(names) or 'none recorded'}); decoding the site "
                            "needs two or more")
    return train[keep], np.searchsorted(names, sites[keep]), names


def subject_folds(ctx: Context, idx: np.ndarray) -> np.ndarray:
    """The split file's fold of each example's subject (so no subject is in two folds)."""
    fold_of = ctx.split.table.set_index("participant_id")["fold"]
    folds = ctx.examples.table.iloc[idx]["participant_id"].map(fold_of).to_numpy()
    if len(np.unique(folds)) < 2 or (folds < 0).any():
        raise MribenchError(f"split {ctx.split.path.name}: the training subjects need two or more "
                            "cross-validation folds (the fold column) for out-of-fold site predictions")
    return folds.astype(int)


# -- the site decoder -----------------------------------------------------------------------------------
def out_of_fold(x: np.ndarray, codes: np.ndarray, folds: np.ndarray, groups: np.ndarray,
                n_sites: int) -> tuple[np.ndarray, list]:
    """Site probabilities of every example from a probe fitted on the other folds (rounded as kept),
    and the C each fold's inner cross-validation chose."""
    from bench.heads import HeadData, LogisticHead

    proba, chosen = np.zeros((len(codes), n_sites)), []
    for f in np.unique(folds):
        fit, held = folds != f, folds == f
        head = LogisticHead(n_sites).fit(HeadData(x=x[fit], y=codes[fit], groups=groups[fit], folds=folds[fit]))
        proba[held] = head.predict(HeadData(x=x[held], y=codes[held]))
        chosen.append(head.chosen.get("C"))
    return np.round(proba, 6), chosen


def _site_scores(ctx: Context) -> list[SettingScore]:
    idx, codes, names = training_sites(ctx)
    folds = subject_folds(ctx, idx)
    groups = ctx.examples.table.iloc[idx]["participant_id"].astype(str).to_numpy()
    x = np.stack([ctx.features[i][-1] for i in idx])
    proba, chosen = out_of_fold(x, codes, folds, groups, len(names))
    params = {"evaluated_on": EVALUATED_ON, "sites": names, "chance": chance(len(names)),
              "n_folds": int(len(np.unique(folds))), "C_per_fold": chosen,
              "n_left_out_without_site": int(len(split_indices(ctx, "train")) - len(idx)),
              "probe": "standardised multinomial logistic regression, C by inner-CV log-loss"}
    scores = []
    for seed in seeds(ctx):
        ci = site_decodability(codes, proba, groups, ctx.profile.n_boot, seed)
        scores.append(SettingScore(setting=SITE, seed=seed, split="test", metrics={METRIC: ci["point"]},
                                   ci={METRIC: ci}, n_subjects=int(len(set(groups))), n_examples=int(len(idx)),
                                   params=params))
        record_predictions(ctx, idx, "test", seed, SITE, codes, proba)
    return scores


# -- the task's own probe: internal (test) and external (held-out site) ---------------------------------
def _task_scores(ctx: Context, seed: int) -> list[SettingScore]:
    """The task's probe head as linear_probe fits it, its predictions rounded before they are scored."""
    train = split_indices(ctx, "train")
    head = fit_head(ctx, train, seed)
    out = []
    for split, idx in eval_indices(ctx).items():
        data = head_data(ctx, idx)
        pred = np.round(np.asarray(head.predict(data), dtype=float), 6)
        out.append(setting_score(ctx, idx, split, seed, FULL, data.y, pred, {
            "scored_on": "internal (training sites)" if split == "test" else "external (held-out site)",
            "n_train_examples": int(len(train)), **head.chosen}))
        record_predictions(ctx, idx, split, seed, FULL, data.y, pred)
    return out


def run(ctx: Context) -> list:
    import sklearn

    from bench.heads import blas_single_thread

    if ctx.features is None:
        raise MribenchError("the site protocol needs the frozen embeddings of the task's scans")
    with blas_single_thread(), sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        scores = _site_scores(ctx)
        return scores + [s for seed in seeds(ctx) for s in _task_scores(ctx, seed)]


PROTOCOL = Protocol(
    name="site", run=run, label="site decodability", headline=SITE, order=7, ranked=False,
    description="balanced accuracy of decoding the acquisition site from the embeddings (5-fold on training "
                "subjects) beside the task probe's internal and external score (OpenBHB)",
    supports=supports, metric=HEADLINE_METRIC, check=check_scores)
