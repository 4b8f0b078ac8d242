"""Is the synthetic cohort a fair test bed? Oracle latents vs naive image features.

The synthetic cohort is only useful for judging encoders if its disease and ageing effects
are (1) learnable from the images at all and (2) not so blatant that any intensity summary
solves them. This script measures both ends on the committed ``ad`` split of a profile's
cohort, for the two Alzheimer's-population tasks:

* AD diagnosis (CN / MCI / AD) on every T1w session: macro one-vs-rest AUC, balanced accuracy.
* Brain age on the cognitively normal (CN) sessions: MAE (years), Pearson r.

Feature sets, each followed by the same standardised linear model:

* ``stage (oracle)``: the latent disease stage itself. Diagnosis is a (per-subject noisy)
  threshold on it, so this is the ceiling for diagnosis; it is not used for brain age.
* ``anatomy latents (oracle)``: the generator's true structure volumes over ICV
  (hippocampus, ventricles, grey matter, CSF). What a perfect segmenter would measure;
  an encoder cannot beat it by much.
* ``intensity histogram (naive)``: mean, std and percentiles of the raw NIfTI intensities
  inside the brain mask. No anatomy, no harmonisation; an encoder must clearly beat it.
* ``cpu-small PCA(32)``: the volume store's z-scored 64^3 arrays, pooled to 32^3 and
  reduced by PCA, so a linear model on the encoder input space itself.
* references: ``age only`` for diagnosis, ``train mean`` for brain age, the scores one gets
  without looking at any image.

For diagnosis, age is appended to every image-derived set (atrophy is confounded with age
and clinicians know the age); brain age never sees it. Models are fitted on train + val,
their hyperparameter chosen by 5-fold cross-validation grouped by subject, and scored on
test and on external (the held-out site). The functions are importable
(``benchmarks.synth_sanity``) so the test suite runs the same pipeline on a small cohort.

Usage::

    MRIBENCH_CACHE=... python benchmarks/synth_sanity.py --profile default [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import log_loss
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from bench import metrics
from bench.data.cohort import DIAGNOSES, Cohort
from bench.data.store import VolumeStore
from bench.data.volumes import load_label, load_scan
from bench.errors import CohortError

#: Structure volumes of the ground truth used by the anatomy oracle, each divided by ICV so
#: that head size (which differs by sex and subject) does not masquerade as atrophy.
LATENT_VOLUMES: tuple[str, ...] = ("hippocampus_ml", "ventricles_ml", "gm_ml", "csf_ml")
#: Percentiles of the in-mask intensity histogram used by the naive baseline.
HISTOGRAM_PERCENTILES: tuple[int, ...] = (5, 25, 50, 75, 95)
#: Splits the models are fitted on, and the splits they are scored on.
FIT_SPLITS: tuple[str, ...] = ("train", "val")
SCORE_SPLITS: tuple[str, ...] = ("test", "external")
#: Inner cross-validation folds (grouped by subject) for the regularisation strength.
N_CV_FOLDS = 5
#: Grids of the inverse regularisation C (logistic) and of the ridge penalty alpha.
C_GRID: tuple[float, ...] = tuple(np.logspace(-3, 3, 13))
ALPHA_GRID: tuple[float, ...] = tuple(np.logspace(-3, 5, 17))
#: The store space of the image baseline, its extra pooling factor and PCA size.
IMAGE_SPACE = "cpu-small"
IMAGE_POOL = 2
IMAGE_COMPONENTS = 32


@dataclass
class FeatureSet:
    """One way of describing every scan row, and how to model it.

    ``values`` is aligned with the rows of the scan table. ``add_age`` appends the scan's age
    for diagnosis (never for brain age). ``n_components`` puts a PCA in front of the
    linear model, fitted inside each cross-validation fold so held-out rows never shape it.
    """

    name: str
    values: np.ndarray
    add_age: bool = True
    n_components: int | None = None


# --------------------------------------------------------------------------- scans


def ad_scans(cohort: Cohort, split_table: pd.DataFrame) -> pd.DataFrame:
    """T1w scans of the ``ad`` population's split subjects, with their latents and split.

    One row per scan (session); columns of the cohort table, ``split``, and the ground-truth
    latents (``stage``, the structure volumes, ``icv_ml``). Raises :class:`CohortError` when
    the cohort has no ground truth (a real cohort has no oracle) or a scan lacks a
    diagnosis, rather than quietly scoring on fewer scans.
    """
    if cohort.ground_truth is None:
        raise CohortError(f"{cohort.name}: no ground truth; the oracle sanity check needs the "
                          "synthetic cohort's derivatives/synth/ground_truth.tsv")
    table = cohort.table
    if "population" in table.columns:
        table = table[table["population"] == "ad"]
    table = table[table["sequence"] == "T1w"]
    splits = split_table[["participant_id", "split"]].astype({"participant_id": str})
    scans = table.merge(splits, on="participant_id", how="inner", validate="many_to_one")
    keys = ["participant_id", "session_id", "sequence"]
    latents = cohort.ground_truth[keys + ["stage", *LATENT_VOLUMES, "icv_ml"]]
    scans = scans.merge(latents, on=keys, how="left", validate="one_to_one")
    missing = scans[scans[["stage", "icv_ml"]].isna().any(axis=1)]
    if len(missing):
        r = missing.iloc[0]
        raise CohortError(f"{cohort.name}: {r.participant_id} {r.session_id} has no ground-truth "
                          "row; regenerate the synthetic cohort")
    undiagnosed = scans[scans["diagnosis"].isna()] if "diagnosis" in scans else scans
    if len(undiagnosed):
        r = undiagnosed.iloc[0]
        raise CohortError(f"{cohort.name}: {r.participant_id} {r.session_id} has no diagnosis")
    return scans.sort_values(keys).reset_index(drop=True)


# --------------------------------------------------------------------------- features


def stage_features(scans: pd.DataFrame) -> pd.DataFrame:
    """The latent disease stage, the quantity the diagnosis is thresholded from."""
    return scans[["stage"]].astype(float).reset_index(drop=True)


def latent_features(scans: pd.DataFrame) -> pd.DataFrame:
    """True structure volumes as fractions of ICV: the measurements a perfect pipeline makes."""
    icv = scans["icv_ml"].astype(float).to_numpy()
    return pd.DataFrame({f"{col.removesuffix('_ml')}_icv": scans[col].astype(float).to_numpy() / icv
                         for col in LATENT_VOLUMES})


def intensity_histogram(image_path: str, mask_path: str) -> np.ndarray:
    """Mean, std and :data:`HISTOGRAM_PERCENTILES` of raw intensities inside the brain mask.

    Raw on purpose: no bias correction, no per-site normalisation, so this is what a model
    gets from the scanner's intensity distribution alone.
    """
    image, _ = load_scan(image_path)
    mask, _ = load_label(mask_path)
    if mask.shape != image.shape:
        raise CohortError(f"{mask_path}: mask shape {mask.shape} differs from the scan's "
                          f"{image.shape} ({image_path})")
    values = image[mask > 0].astype(np.float64)
    if values.size == 0:
        raise CohortError(f"{mask_path}: empty brain mask for {image_path}")
    return np.concatenate([[values.mean(), values.std()],
                           np.percentile(values, HISTOGRAM_PERCENTILES)])


def histogram_features(scans: pd.DataFrame, workers: int = 2) -> pd.DataFrame:
    """:func:`intensity_histogram` of every scan, read in threads (gzip releases the GIL)."""
    if "mask_path" not in scans.columns or scans["mask_path"].isna().any():
        raise CohortError("every scan needs a brain mask (mask_path) for the histogram baseline")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        rows = list(pool.map(intensity_histogram, scans["path"], scans["mask_path"]))
    columns = ["mean", "std"] + [f"p{q}" for q in HISTOGRAM_PERCENTILES]
    return pd.DataFrame(np.vstack(rows), columns=columns)


def pool_volume(volume: np.ndarray, factor: int = IMAGE_POOL) -> np.ndarray:
    """Average-pool a 3D array by ``factor`` per axis (trailing voxels that do not fill a block
    are dropped); 64^3 -> 32^3 keeps the flattened vector small enough for PCA on a laptop."""
    shape = [n // factor for n in volume.shape]
    cropped = np.asarray(volume, dtype=np.float32)[tuple(slice(0, n * factor) for n in shape)]
    blocks = cropped.reshape(shape[0], factor, shape[1], factor, shape[2], factor)
    return blocks.mean(axis=(1, 3, 5))


def image_features(scans: pd.DataFrame, store: VolumeStore, space: str = IMAGE_SPACE,
                   workers: int = 2, progress: bool = True) -> np.ndarray:
    """Flattened, pooled store arrays of every scan, ``(n_scans, n_voxels)`` float32.

    The store is filled first (in parallel, reusing whatever is already cached), so the
    baseline sees exactly the arrays an encoder in ``space`` would be fed.
    """
    entries = store.prefetch(scans["path"], space, workers=workers, progress=progress)
    first = pool_volume(np.load(entries[0], mmap_mode="r"))
    out = np.empty((len(entries), first.size), dtype=np.float32)
    for i, entry in enumerate(entries):
        out[i] = pool_volume(np.load(entry, mmap_mode="r")).ravel()
    return out


# --------------------------------------------------------------------------- models


def _design(features: FeatureSet, scans: pd.DataFrame, with_age: bool) -> np.ndarray:
    """The feature matrix of a set, with the age column last when asked for."""
    values = np.asarray(features.values, dtype=np.float64 if features.n_components is None
                        else np.float32).reshape(len(scans), -1)
    if with_age:
        values = np.hstack([values, scans[["age"]].to_numpy(dtype=values.dtype)])
    return values


def _pipeline(estimator, features: FeatureSet, n_columns: int, n_rows: int) -> Pipeline:
    """Standardise (after an optional PCA of the image columns) then ``estimator``.

    ``n_columns`` is the width of the design matrix, ``n_rows`` the number of fitting rows.

    PCA sees only the image columns so that the appended age is not drowned among thousands
    of voxels; its size is capped below the smallest cross-validation training fold.
    """
    steps = []
    if features.n_components is not None:
        n_image = np.asarray(features.values).shape[1]
        smallest_fold = n_rows * (N_CV_FOLDS - 1) // N_CV_FOLDS
        pca = PCA(n_components=min(features.n_components, smallest_fold - 1, n_image),
                  svd_solver="randomized", random_state=0)
        steps.append(("reduce", ColumnTransformer([("pca", pca, np.arange(n_image))],
                                                  remainder="passthrough")))
    if n_columns:
        steps.append(("scale", StandardScaler()))
    steps.append(("model", estimator))
    return Pipeline(steps)


def _fit(pipeline: Pipeline, grid: dict, X: np.ndarray, y: np.ndarray, groups: np.ndarray,
         scoring):
    """Choose the hyperparameter by cross-validation grouped by subject, then refit on all.

    Grouping keeps a subject's other sessions out of the fold that scores it; otherwise
    near-duplicate longitudinal scans would reward overfitting.
    """
    n_groups = len(np.unique(groups))
    if not grid:
        return pipeline.fit(X, y)
    search = GridSearchCV(pipeline, grid, cv=GroupKFold(n_splits=min(N_CV_FOLDS, n_groups)),
                          scoring=scoring, error_score="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # a class absent from a CV fold
        return search.fit(X, y, groups=groups)


def _full_proba(model, X: np.ndarray) -> np.ndarray:
    """Class probabilities with one column per diagnosis, even for a class the fit never saw."""
    proba = np.zeros((len(X), len(DIAGNOSES)))
    proba[:, model.classes_] = model.predict_proba(X)
    return proba


def _neg_log_loss(model, X: np.ndarray, y: np.ndarray) -> float:
    """Cross-validation score: log loss over all diagnoses, defined when a fold lacks a class.

    A smooth score picks C more stably than accuracy; sklearn's built-in scorer refuses folds
    whose held-out subjects miss a class, which small cohorts produce.
    """
    proba = np.clip(_full_proba(model, X), 1e-15, 1.0)
    proba /= proba.sum(axis=1, keepdims=True)
    return -float(log_loss(y, proba, labels=np.arange(len(DIAGNOSES))))


def _chosen(model, name: str) -> float | None:
    """The hyperparameter value cross-validation picked (None for parameter-free models)."""
    best = getattr(model, "best_params_", None)
    return float(best[name]) if best else None


def _split_rows(scans: pd.DataFrame, split: str) -> np.ndarray:
    return (scans["split"] == split).to_numpy()


def evaluate_diagnosis(scans: pd.DataFrame, feature_sets: Sequence[FeatureSet],
                       score_splits: Sequence[str] = SCORE_SPLITS) -> list[dict]:
    """CN / MCI / AD from each feature set; one result row per (feature set, scored split).

    Every session is a sample (diagnosis changes within a subject); metrics come from
    :mod:`bench.metrics` so they match the benchmark's own definitions.
    """
    y = scans["diagnosis"].map({d: i for i, d in enumerate(DIAGNOSES)}).to_numpy(dtype=int)
    fit_rows = scans["split"].isin(FIT_SPLITS).to_numpy()
    groups = scans["participant_id"].to_numpy()
    results = []
    for fs in feature_sets:
        X = _design(fs, scans, with_age=fs.add_age)
        pipe = _pipeline(LogisticRegression(max_iter=5000), fs, X.shape[1], int(fit_rows.sum()))
        model = _fit(pipe, {"model__C": list(C_GRID)}, X[fit_rows], y[fit_rows],
                     groups[fit_rows], scoring=_neg_log_loss)
        for split in score_splits:
            rows = _split_rows(scans, split)
            if not rows.any():
                continue
            proba = _full_proba(model, X[rows])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=UserWarning)  # predicted class absent
                bacc = metrics.balanced_accuracy(y[rows], proba)
            results.append({
                "task": "ad_diagnosis", "features": fs.name, "split": split,
                "n_scans": int(rows.sum()), "n_subjects": int(scans.loc[rows, "participant_id"].nunique()),
                "auc": metrics.auc(y[rows], proba), "balanced_accuracy": bacc,
                "C": _chosen(model, "model__C"),
            })
    return results


def evaluate_brain_age(scans: pd.DataFrame, feature_sets: Sequence[FeatureSet],
                       score_splits: Sequence[str] = SCORE_SPLITS) -> list[dict]:
    """Age of CN sessions from each feature set (age itself is never an input).

    A feature set with no columns is the ``train mean`` reference: a constant prediction.
    """
    cn = scans[scans["diagnosis"] == "CN"].reset_index(drop=True)
    keep = (scans["diagnosis"] == "CN").to_numpy()
    y = cn["age"].to_numpy(dtype=float)
    fit_rows = cn["split"].isin(FIT_SPLITS).to_numpy()
    groups = cn["participant_id"].to_numpy()
    results = []
    for fs in feature_sets:
        subset = FeatureSet(fs.name, np.asarray(fs.values).reshape(len(scans), -1)[keep],
                            add_age=False, n_components=fs.n_components)
        X = _design(subset, cn, with_age=False)
        if X.shape[1] == 0:
            X = np.zeros((len(cn), 1))
            model = _fit(Pipeline([("model", DummyRegressor())]), {}, X[fit_rows], y[fit_rows],
                         groups[fit_rows], scoring="neg_mean_absolute_error")
        else:
            pipe = _pipeline(Ridge(), subset, X.shape[1], int(fit_rows.sum()))
            model = _fit(pipe, {"model__alpha": list(ALPHA_GRID)}, X[fit_rows], y[fit_rows],
                         groups[fit_rows], scoring="neg_mean_absolute_error")
        for split in score_splits:
            rows = _split_rows(cn, split)
            if not rows.any():
                continue
            pred = model.predict(X[rows])
            results.append({
                "task": "brain_age", "features": fs.name, "split": split,
                "n_scans": int(rows.sum()), "n_subjects": int(cn.loc[rows, "participant_id"].nunique()),
                "mae": metrics.mae(y[rows], pred), "pearson_r": metrics.pearson_r(y[rows], pred),
                "alpha": _chosen(model, "model__alpha"),
            })
    return results


def oracle_gaps(diagnosis: list[dict], brain_age: list[dict],
                oracle: str = "anatomy latents (oracle)",
                naive: str = "intensity histogram (naive)") -> dict[str, dict[str, float]]:
    """Oracle minus naive per scored split: AUC gain for diagnosis, MAE reduction for age.

    Positive numbers mean the oracle is better; this is the headline of the sanity check.
    """
    def pick(rows: list[dict], name: str, split: str, key: str) -> float:
        hits = [r[key] for r in rows if r["features"] == name and r["split"] == split]
        return hits[0] if hits else math.nan

    splits = sorted({r["split"] for r in diagnosis + brain_age}, key=SCORE_SPLITS.index)
    return {split: {
        "auc_gain": pick(diagnosis, oracle, split, "auc") - pick(diagnosis, naive, split, "auc"),
        "mae_reduction": pick(brain_age, naive, split, "mae") - pick(brain_age, oracle, split, "mae"),
    } for split in splits}


# --------------------------------------------------------------------------- report


def diagnosis_feature_sets(scans: pd.DataFrame, histogram: pd.DataFrame,
                           image: np.ndarray | None) -> list[FeatureSet]:
    """Feature sets for diagnosis, in reporting order (image PCA only if ``image`` is given)."""
    sets = [FeatureSet("stage (oracle)", stage_features(scans).to_numpy(), add_age=False),
            FeatureSet("anatomy latents (oracle)", latent_features(scans).to_numpy()),
            FeatureSet("intensity histogram (naive)", histogram.to_numpy())]
    if image is not None:
        sets.append(FeatureSet(f"{IMAGE_SPACE} PCA({IMAGE_COMPONENTS})", image,
                               n_components=IMAGE_COMPONENTS))
    sets.append(FeatureSet("age only (reference)", np.zeros((len(scans), 0))))
    return sets


def brain_age_feature_sets(scans: pd.DataFrame, histogram: pd.DataFrame,
                           image: np.ndarray | None) -> list[FeatureSet]:
    """Feature sets for brain age (no stage, no age), in reporting order."""
    sets = [FeatureSet("anatomy latents (oracle)", latent_features(scans).to_numpy(), add_age=False),
            FeatureSet("intensity histogram (naive)", histogram.to_numpy(), add_age=False)]
    if image is not None:
        sets.append(FeatureSet(f"{IMAGE_SPACE} PCA({IMAGE_COMPONENTS})", image, add_age=False,
                               n_components=IMAGE_COMPONENTS))
    sets.append(FeatureSet("train mean (reference)", np.zeros((len(scans), 0)), add_age=False))
    return sets


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def print_report(report: dict) -> None:
    """Two rich tables (one per task, splits side by side) and the oracle-minus-naive gaps."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    specs = (("ad_diagnosis", "AD diagnosis (CN/MCI/AD), all T1w sessions",
              (("auc", "macro AUC", 3), ("balanced_accuracy", "bal. acc.", 3))),
             ("brain_age", "Brain age, CN T1w sessions", (("mae", "MAE (y)", 2), ("pearson_r", "r", 3))))
    for task, title, cols in specs:
        rows = report[task]
        splits = [s for s in SCORE_SPLITS if any(r["split"] == s for r in rows)]
        sizes = ", ".join(f"{s}: {next(r['n_scans'] for r in rows if r['split'] == s)} scans / "
                          f"{next(r['n_subjects'] for r in rows if r['split'] == s)} subjects"
                          for s in splits)
        table = Table(title=f"{title} ({sizes})")
        table.add_column("features")
        for split in splits:
            for _, label, _ in cols:
                table.add_column(f"{split} {label}", justify="right")
        for name in dict.fromkeys(r["features"] for r in rows):
            cells = [name]
            for split in splits:
                hit = next((r for r in rows if r["features"] == name and r["split"] == split), {})
                cells += [_fmt(hit.get(key), digits) for key, _, digits in cols]
            table.add_row(*cells)
        console.print(table)
    for split, gap in report["oracle_minus_naive"].items():
        console.print(f"oracle vs naive on {split}: AUC {gap['auc_gain']:+.3f}, "
                      f"brain-age MAE {-gap['mae_reduction']:+.2f} y")
    console.print(f"wall time: {report['wall_time_s']:.1f} s")


def run(profile: str, workers: int, with_image: bool = True, progress: bool = True) -> dict:
    """The whole check on a profile's synthetic cohort and its committed ``ad`` split."""
    from bench.data.sources import open_cohort, synth_name
    from bench.paths import cache_home, repo_root
    from bench.splits import load_split

    start = time.perf_counter()
    timings: dict[str, float] = {}
    cohort = open_cohort(None, profile=profile, progress=progress)
    split_path = repo_root() / "splits" / synth_name(profile) / "ad.tsv"
    split = load_split(split_path, cohort_subjects=cohort.table["participant_id"].unique())
    scans = ad_scans(cohort, split.table)
    timings["load"] = time.perf_counter() - start

    t = time.perf_counter()
    histogram = histogram_features(scans, workers=workers)
    timings["histogram_features"] = time.perf_counter() - t
    image = None
    if with_image:
        t = time.perf_counter()
        image = image_features(scans, VolumeStore(cache_home() / "store"), workers=workers,
                               progress=progress)
        timings["image_features"] = time.perf_counter() - t

    t = time.perf_counter()
    diagnosis = evaluate_diagnosis(scans, diagnosis_feature_sets(scans, histogram, image))
    timings["diagnosis_models"] = time.perf_counter() - t
    t = time.perf_counter()
    brain_age = evaluate_brain_age(scans, brain_age_feature_sets(scans, histogram, image))
    timings["brain_age_models"] = time.perf_counter() - t
    return {
        "profile": profile, "cohort": cohort.name, "cohort_root": str(cohort.root),
        "split_file": str(split_path), "split_sha256": split.sha256,
        "n_scans": {s: int((scans["split"] == s).sum()) for s in (*FIT_SPLITS, *SCORE_SPLITS)},
        "ad_diagnosis": diagnosis, "brain_age": brain_age,
        "oracle_minus_naive": oracle_gaps(diagnosis, brain_age),
        "timings_s": timings, "wall_time_s": time.perf_counter() - start,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default", help="run profile whose synthetic cohort "
                        "and splits/synth-<profile>/ad.tsv are used (default: default)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                        help="threads for reading scans and filling the volume store")
    parser.add_argument("--no-image", action="store_true",
                        help=f"skip the {IMAGE_SPACE} PCA baseline (no volume store needed)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    report = run(args.profile, args.workers, with_image=not args.no_image, progress=not args.quiet)
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
