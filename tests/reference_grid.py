"""The reference grid: every encoder kind x task kind x protocol on the smoke cohort, cheap settings.

``tests/data/reference_grid.json.gz`` holds the canonicalised records (scores, CIs, predictions,
robustness blocks, provenance that identifies the computation) of this grid as the harness
produced them at commit 975bcbb (before issue 18's redesign), taken with::

    MRIBENCH_CACHE=/tmp/refcache python tests/reference_grid.py --write tests/data/reference_grid.json.gz

(``--retake ENCODER/TASK/PROTOCOL`` re-takes one entry of the existing file.)

Six quick entries (random/tumour_marker/finetune, oracle/time_to_conversion/fractions,
oracle/ad_diagnosis/few_shot, features/tumour_survival/linear_probe,
simclr3d@init/tumour_survival/finetune, supervised/tumour_marker/finetune) were re-taken at commit
0dbdc89 on an AVX2-only CPU (AMD EPYC): the fixture's numbers came from a CPU whose BLAS kernels
differ (float differences from 1e-6, amplified by one-epoch fine-tuning and an ill-conditioned Cox
fit on the smoke cohort). random/tumour_marker/finetune and supervised/tumour_marker/finetune were
re-taken again with ``--retake`` on an AVX-512 CPU (AMD EPYC) with the kernels pinned to AVX2, at
the commit after 8217e1c. Every other entry is still 975bcbb's. Since then nothing is pinned: the
comparison allows what another CPU's kernels explain, so no entry needs re-taking for a new CPU.

``tests/test_reference_grid.py`` re-runs the grid with the current code and compares. The jobs of
:data:`QUICK` run by default (every protocol, every encoder kind and every target kind at least
once), the wider grid too when ``MRIBENCH_REFERENCE=full``; the fixture holds both (its entries'
``quick`` flag is the list as it was when the fixture was taken, and is not read).

Canonicalised: provenance fields that legitimately change from run to run or commit to commit
(mribench version, git commit and dirtiness, library versions, hardware, where it computed: device
and deterministic flags, start time, wall time, command line; a non-default precision or
micro-batch is also in ``config``, which is kept) are dropped; temporary paths are replaced by
``<tmp>``. Everything else is kept in clear and compared by :func:`record_differences`: numbers within what another CPU's kernels explain
(tolerances derived under "comparing" below), ill-conditioned fits by their shape only, everything
else exactly. The fixture holds on any x86-64 CPU: no kernel is pinned.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

#: Cheap settings: one seed, few bootstrap replicates, one k-shot draw, one fine-tuning epoch.
OVERRIDES = dict(seeds=1, n_boot=20, few_shot_draws=1, finetune_epochs=1, segmentation_steps=10)

ENCODER_KWARGS = {"features": "features"}  # the features encoder reads the table written by features_table()
PROBES = ("linear_probe", "fractions", "few_shot")

#: (encoder, task, protocol, quick). cross_cohort trains on site S1 and scores site S2 of the same cohort.
QUICK = [
    ("random", "tumour_marker", "linear_probe"),
    ("random", "tumour_marker", "robustness"),
    ("random", "tumour_marker", "finetune"),
    ("oracle", "conversion", "linear_probe"),
    ("oracle", "time_to_conversion", "fractions"),
    ("oracle", "tumour_segmentation", "linear_probe"),
    ("oracle", "ad_diagnosis", "few_shot"),
    ("oracle", "ad_diagnosis", "robustness"),          # refused: reads latents, not voxels
    ("volumes", "brain_age", "linear_probe"),
    ("volumes", "ad_diagnosis", "cross_cohort"),
    ("intensity", "sequence_classification", "linear_probe"),
    ("features", "conversion_detection", "fractions"),
    ("features", "tumour_survival", "linear_probe"),
    ("simclr3d@init", "tumour_survival", "finetune"),
    ("temporal@init", "conversion", "linear_probe"),    # the encoder's own sequence summaries
    ("supervised", "tumour_marker", "finetune"),
    ("supervised", "tumour_marker", "linear_probe"),   # refused: trained from scratch on each task
    ("volumes", "tumour_segmentation", "linear_probe"),  # fails: no feature maps
]

TASKS = ("ad_diagnosis", "conversion", "conversion_detection", "time_to_conversion", "brain_age",
         "tumour_segmentation", "tumour_survival", "tumour_marker", "sequence_classification")


def wide() -> list[tuple[str, str, str]]:
    """The wider grid: cheap encoders on every task under every protocol, the networks on fewer."""
    out = []
    for enc in ("oracle", "volumes", "intensity", "features"):
        out += [(enc, t, p) for t in TASKS for p in (*PROBES, "robustness", "finetune")]
        out += [(enc, t, "cross_cohort") for t in ("ad_diagnosis", "brain_age", "conversion")]
    out += [("random", t, p) for t in ("ad_diagnosis", "tumour_marker", "tumour_survival", "brain_age",
                                       "tumour_segmentation") for p in PROBES]
    out += [("random", t, "finetune") for t in ("tumour_marker", "tumour_survival", "tumour_segmentation")]
    out += [("simclr3d@init", t, p) for t in ("tumour_marker", "tumour_segmentation") for p in ("linear_probe", "finetune")]
    out += [("temporal@init", t, "linear_probe") for t in ("conversion", "time_to_conversion")]
    out += [("supervised", t, p) for t in ("tumour_marker", "tumour_survival") for p in ("finetune", "fractions")]
    quick = set(QUICK)
    return [j for j in dict.fromkeys(out) if j not in quick]


def grid(full: bool) -> list[tuple[str, str, str, bool]]:
    return [(*j, True) for j in QUICK] + ([(*j, False) for j in wide()] if full else [])


def features_table(cohort, folder: Path) -> Path:
    """A small deterministic per-scan features table of the cohort (what a FreeSurfer table would be)."""
    import numpy as np

    t = cohort.table
    sub = t["participant_id"].str.extract(r"(\d+)$")[0].astype(float).to_numpy()
    lines = ["participant_id\tsession_id\tsequence\tage\tmonths\tsubject_code\tsite_code"]
    for (pid, ses, seq, age, months, site), code in zip(
            t[["participant_id", "session_id", "sequence", "age", "months_from_baseline", "site"]].itertuples(index=False),
            sub):
        site_code = float(str(site).lstrip("S") or 0)
        lines.append(f"{pid}\t{ses}\t{seq}\t{float(age):.3f}\t{float(months):.3f}\t{np.sin(code):.6f}\t{site_code:g}")
    path = Path(folder) / "reference_features.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


DROPPED_PROVENANCE = ("mribench_version", "git_commit", "git_dirty", "libraries", "hardware", "started_at",
                      "wall_time_s", "command", "compute")


def canonical(record: dict, tmp: str) -> dict:
    """The record without what legitimately changes between runs (see the module docstring)."""
    rec = json.loads(json.dumps(record).replace(tmp, "<tmp>"))
    for key in DROPPED_PROVENANCE:
        rec["provenance"].pop(key, None)
    return rec


def run(cohort, results: Path, cache: Path, jobs: list[tuple[str, str, str, bool]]) -> dict:
    """Run ``jobs``; the canonical record (or failure) of each, keyed ``encoder/task/protocol``."""
    from bench.errors import MribenchError
    from bench.profiles import get_profile

    profile = replace(get_profile("smoke"), **OVERRIDES)
    table = features_table(cohort, results.parent)
    out = {}
    import time

    for enc, task, protocol, quick in jobs:
        key = f"{enc}/{task}/{protocol}"
        start = time.perf_counter()
        kwargs = {"features": str(table), "name": "reference-features"} if enc == "features" else {}
        try:
            entry = _one(cohort, profile, results, cache, enc, task, protocol, kwargs)
        except MribenchError as e:
            entry = {"status": "refused", "error": " ".join(str(e).split())}
        entry["quick"] = quick
        out[key] = json.loads(json.dumps(entry).replace(str(results.parent), "<tmp>"))
        print(f"{key} {entry['status']} {time.perf_counter() - start:.1f}s {entry.get('error', '')[:100]}",
              file=sys.stderr, flush=True)
    return out


def _one(cohort, profile, results: Path, cache: Path, enc: str, task: str, protocol: str, kwargs: dict) -> dict:
    from bench.results import read_bounded_json

    if protocol == "cross_cohort":
        return _cross(cohort, profile, results, cache, enc, task, kwargs)
    from bench.runner import Runner

    runner = Runner(cohort, profile, results, progress=False, keep_going=True, cache_root=cache, command="grid")
    (result,) = runner.run(enc, [task], [protocol], encoder_kwargs=kwargs)
    if result.failed:
        marker = read_bounded_json(runner.results_dir / ".jobs" / f"{result.key}.failed")
        return {"status": "failed", "error_type": marker["error_type"], "error": marker["error"]}
    return {"status": "done", "record": canonical(_record_json(result.path), str(results.parent))}


def _record_json(path: Path) -> dict:
    """The record as data with its predictions inline, whichever way the code at hand stores them."""
    try:
        from bench.results import read_record_json  # since issue 17: predictions in a file beside the record
    except ImportError:
        from bench.results import read_bounded_json as read_record_json
    return read_record_json(path)


def _cross(cohort, profile, results: Path, cache: Path, enc: str, task: str, kwargs: dict) -> dict:
    """Site S1 -> site S2 of the smoke cohort, through whichever API the code at hand offers."""
    try:
        from bench.protocols.cross_cohort import Side, run_cross_cohort  # since issue 18: through the Runner
    except ImportError:
        from bench.cross_cohort import Side, run_cross_cohort

    path = run_cross_cohort(enc, Side(cohort, task, "S1"), Side(cohort, task, "S2"), profile, results,
                            progress=False, encoder_kwargs=kwargs, cache_root=cache).path
    return {"status": "done", "record": canonical(_record_json(path), str(results.parent))}


# ----------------------------------------------------------------------------------------- comparing
# What "the same number" means on another CPU. BLAS / oneDNN / MKL pick kernels by CPU (AVX2,
# AVX-512...), which sum in another order: a float32 embedding moves by a few float32 epsilons
# (1.2e-7 relative). The tolerances follow that noise through the computation:
#   * a probe head (logistic / ridge / Cox fit on embeddings) is a convex fit whose solution moves
#     by the noise times its condition number; the small-sample fits of the smoke cohort (fractions
#     of a few subjects, 512 features) reach condition numbers near 1e3-1e4, so its predictions move
#     by up to 1e-3 of their scale (seen: 2.5e-4, random/brain_age fractions on AVX-512 vs AVX2);
#   * a network trained by SGD (finetune, and the segmentation decoders) carries the noise through
#     every step: after one epoch its predictions move by up to 1e-2 of their scale (seen: 2e-3);
#   * predictions are stored rounded to 6 decimals, so any two may also differ by a few 1e-6
#     (:data:`ROUNDING`);
#   * metrics, CIs and summaries are functions of the predictions: smooth ones (MAE, Pearson r)
#     move by the predictions' relative change; rank ones (AUC, C-index, balanced accuracy) by one
#     swapped near-tie, 1 / (n_pos x n_neg) ~ 1e-3 at the smoke cohort's 30-odd test subjects per
#     class. Both stay within the computation's tolerance relative to max(1, |value|).
# Anything else (ids, labels, counts, split files, digests, settings, statuses) is compared exactly.
# A regression (another metric, split, head or encoder) moves numbers by far more: percent, not
# per-mille (tests/test_reference_grid.py checks that a 1 % change is caught).
PROBE_TOL = 1e-3
NETWORK_TOL = 1e-2
ROUNDING = 1e-5  # 10 units of the stored predictions' 6th decimal
EXACT = 1e-9  # how differences() compares when not told otherwise

#: Fits with no well-conditioned answer on the smoke cohort: Cox models on data that a covariate
#: (nearly) separates, where the partial likelihood has no finite maximum and the coefficients run
#: off along a flat ridge (predictions of 1e14 in the fraction=1 fit). 1e-6 of kernel noise moved
#: their C-index by 0.13 (0.739 vs 0.870) and a prediction from -0.356 to -0.129: nothing about them
#: but their shape (examples, labels, counts) holds from one CPU to the next, so only that is
#: compared. Keyed ``encoder/task/protocol`` -> settings.
ILL_CONDITIONED = {
    "oracle/time_to_conversion/fractions": ("fraction=1",),
    "features/tumour_survival/linear_probe": ("full",),
}


def tolerance(protocol: str, task: str) -> float:
    """The relative tolerance of a record's numbers, by how they were computed (see above)."""
    return NETWORK_TOL if protocol.startswith("finetune") or "segmentation" in task else PROBE_TOL


def masked(record: dict | None, settings: tuple[str, ...]) -> dict | None:
    """``record`` with every float of the ill-conditioned ``settings`` (predictions, scores,
    summary rows, the main score when it is theirs) set to None; the rest untouched."""
    if record is None or not settings:
        return record
    rec = json.loads(json.dumps(record))
    for row in rec.get("predictions") or []:
        if row.get("setting") in settings:
            row["y_pred"] = None
    for score in rec.get("scores", []):
        if score.get("setting") in settings:
            score.update(_floats_to_none({k: score[k] for k in ("ci", "metrics", "params") if k in score}))
    for key in list(rec.get("summary") or {}):
        if key.split("|")[0] in settings:
            rec["summary"][key] = _floats_to_none(rec["summary"][key])
    if rec.get("headline_setting") in settings:
        rec["main_score"] = None
    return rec


def _floats_to_none(value):
    if isinstance(value, dict):
        return {k: _floats_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats_to_none(v) for v in value]
    return None if isinstance(value, float) else value


#: Metrics in the predictions' units: 1-Lipschitz in them (|dMAE| <= max |dy|), so they, their
#: intervals and SEs may move as far as the predictions do.
IN_PREDICTION_UNITS = ("mae",)
#: Metrics of the predicted class (argmax): well-conditioned only where no prediction's top two
#: classes lie within the prediction tolerance of each other (a random encoder's probe, all
#: probabilities near the class priors, flips classes on 1e-6 of noise: balanced accuracy 0.40 vs
#: 0.45 under OpenBLAS's Sandybridge kernels); elsewhere compared by shape only.
ARGMAX_METRICS = ("balanced_accuracy", "accuracy")


def record_differences(key: str, ref: dict | None, new: dict | None, limit: int = 20) -> list[str]:
    """Where record ``new`` of job ``key`` (``encoder/task/protocol``, a suite record's path also
    does) differs from ``ref`` beyond what another CPU explains: predictions within the job's
    tolerance of their scale (plus the stored rounding), every other float within the tolerance of
    max(1, |value|) (metrics in the predictions' units as the predictions), ill-conditioned
    settings and near-tie argmax metrics compared by shape only."""
    encoder, task, protocol = key.removesuffix(".json").split("/")[:3]
    tol = tolerance(protocol, task)
    settings = ILL_CONDITIONED.get(f"{encoder}/{task.split('@')[0]}/{protocol}", ())
    ref, new = masked(ref, settings), masked(new, settings)
    if not (isinstance(ref, dict) and isinstance(new, dict)):
        return differences(ref, new, limit=limit, tol=tol)
    scale = max([1.0, *(abs(v) for v in _numbers(ref.get("predictions")))])
    bound = tol * scale + ROUNDING
    near = _near_ties(ref.get("predictions") or [], 2 * bound)
    ref, new = _argmax_masked(ref, near), _argmax_masked(new, near)
    out: list[str] = []
    for k in sorted(set(ref) | set(new)):
        if k in ref and k in new and k != "predictions":
            _compare(ref[k], new[k], f"/{k}", out, limit, tol, bound)
        elif k != "predictions":
            out.append(f"/{k}: {'missing' if k not in new else 'added'}")
    return differences(ref.get("predictions"), new.get("predictions"), "/predictions", out, limit, bound,
                       relative=False)


def _compare(ref, new, path: str, out: list, limit: int, tol: float, bound: float) -> None:
    """:func:`differences`, with the predictions' absolute ``bound`` under metrics in their units."""
    if isinstance(ref, dict) and isinstance(new, dict) and set(ref) == set(new):
        for k in sorted(ref):
            if k in IN_PREDICTION_UNITS:
                differences(ref[k], new[k], f"{path}/{k}", out, limit, bound, relative=False)
            else:
                _compare(ref[k], new[k], f"{path}/{k}", out, limit, tol, bound)
    elif isinstance(ref, list) and isinstance(new, list) and len(ref) == len(new):
        for i, (a, b) in enumerate(zip(ref, new)):
            _compare(a, b, f"{path}[{i}]", out, limit, tol, bound)
    else:
        differences(ref, new, path, out, limit, tol)


def _near_ties(predictions: list[dict], margin: float) -> set[tuple]:
    """(setting, split, seed) of the class predictions where some example's two likeliest classes
    are within ``margin`` of each other: their predicted classes are noise."""
    out = set()
    for row in predictions:
        y = row.get("y_pred")
        if isinstance(y, list) and len(y) > 1 and all(isinstance(v, float) for v in y):
            top = sorted(y, reverse=True)
            if top[0] - top[1] <= margin:
                out.add((row.get("setting"), row.get("split"), row.get("seed")))
    return out


def _argmax_masked(record: dict, near: set[tuple]) -> dict:
    """``record`` with the :data:`ARGMAX_METRICS` of the ``near`` groups' scores and summary rows
    set to None."""
    if not near:
        return record
    rec = json.loads(json.dumps(record))
    for score in rec.get("scores", []):
        if (score.get("setting"), score.get("split"), score.get("seed")) in near:
            for part in (score.get("ci") or {}, score.get("metrics") or {}):
                for name in ARGMAX_METRICS:
                    if name in part:
                        part[name] = _floats_to_none(part[name])
    rows = {f"{setting}|{split}" for setting, split, _ in near}
    for row, metrics in (rec.get("summary") or {}).items():
        for name in ARGMAX_METRICS:
            if row in rows and name in metrics:
                metrics[name] = _floats_to_none(metrics[name])
    if any(rec.get("main_score_name") == name for name in ARGMAX_METRICS) and \
            any(setting == rec.get("headline_setting") for setting, _, _ in near):
        rec["main_score"] = None
    return rec


def _numbers(value):
    """Every float in ``value`` (nested lists and dicts)."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, float):
        yield value


def differences(ref, new, path: str = "", out: list | None = None, limit: int = 20, tol: float = EXACT,
                relative: bool = True) -> list[str]:
    """Paths where ``new`` differs from ``ref``: floats by more than ``tol`` x max(1, |ref|)
    (``relative``) or by more than ``tol`` (not), everything else at all."""
    out = [] if out is None else out
    if len(out) >= limit:
        return out
    if isinstance(ref, dict) and isinstance(new, dict):
        for k in sorted(set(ref) | set(new)):
            if k not in ref or k not in new:
                out.append(f"{path}/{k}: {'missing' if k not in new else 'added'}")
            else:
                differences(ref[k], new[k], f"{path}/{k}", out, limit, tol, relative)
    elif isinstance(ref, list) and isinstance(new, list):
        if len(ref) != len(new):
            out.append(f"{path}: length {len(ref)} -> {len(new)}")
        else:
            for i, (a, b) in enumerate(zip(ref, new)):
                differences(a, b, f"{path}[{i}]", out, limit, tol, relative)
    elif isinstance(ref, float) and isinstance(new, (int, float)) and not isinstance(new, bool):
        bound = tol * max(1.0, abs(ref)) if relative else tol
        if not abs(ref - new) <= bound:
            out.append(f"{path}: {ref!r} -> {new!r} (tolerance {bound:.2g})")
    elif ref != new or type(ref) is not type(new):
        out.append(f"{path}: {ref!r} -> {new!r}")
    return out


def load(path: Path) -> dict:
    with gzip.open(path, "rt") as f:
        return json.load(f)


def main() -> int:
    import tempfile

    from bench.data.sources import open_cohort
    from bench.paths import cache_home

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", required=True, help="the .json.gz to write")
    parser.add_argument("--quick", action="store_true", help="only the quick grid")
    parser.add_argument("--retake", action="append", default=[], metavar="ENCODER/TASK/PROTOCOL",
                        help="re-take only this entry of the existing --write file (repeatable)")
    args = parser.parse_args()
    cohort = open_cohort(None, profile="smoke", progress=False)
    jobs = grid(full=not args.quick)
    if args.retake:
        jobs = [j for j in grid(full=True) if "/".join(j[:3]) in args.retake]
    with tempfile.TemporaryDirectory() as tmp:
        entries = run(cohort, Path(tmp) / "results", cache_home(), jobs)
    if args.retake:
        entries = load(Path(args.write)) | entries
    with gzip.GzipFile(args.write, "wb", mtime=0) as f:
        f.write(json.dumps(entries, sort_keys=True, separators=(",", ":")).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
