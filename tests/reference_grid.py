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
fit on the smoke cohort). Since then the kernels are pinned to AVX2 for the tests and for this
script (:mod:`cpu_kernels`), which reproduces those entries on an AVX-512 CPU too, except
random/tumour_marker/finetune and supervised/tumour_marker/finetune (one fine-tuning epoch of the
ResNet-10 still moves in the fourth decimal through MKL): those two were re-taken with
``--retake`` on an AVX-512 CPU (AMD EPYC) with the pins, at the commit after 8217e1c. Every other
entry is still 975bcbb's.

``tests/test_reference_grid.py`` re-runs the grid with the current code and compares. The jobs of
:data:`QUICK` run by default (every protocol, every encoder kind and every target kind at least
once), the wider grid too when ``MRIBENCH_REFERENCE=full``; the fixture holds both (its entries'
``quick`` flag is the list as it was when the fixture was taken, and is not read).

Canonicalised: provenance fields that legitimately change from run to run or commit to commit
(mribench version, git commit and dirtiness, library versions, hardware, start time, wall time,
command line) are dropped; temporary paths are replaced by ``<tmp>``. Everything else is kept in
clear and compared with a float tolerance of 1e-9 (relative) / 1e-12 (absolute).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cpu_kernels import pin_avx2_kernels  # noqa: E402

pin_avx2_kernels()  # the kernels the fixture is taken with, before numpy or torch loads

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
                      "wall_time_s", "command")


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
def differences(ref, new, path: str = "", out: list | None = None, limit: int = 20) -> list[str]:
    """Paths where ``new`` differs from ``ref`` (floats within 1e-9 relative / 1e-12 absolute)."""
    out = [] if out is None else out
    if len(out) >= limit:
        return out
    if isinstance(ref, dict) and isinstance(new, dict):
        for k in sorted(set(ref) | set(new)):
            if k not in ref or k not in new:
                out.append(f"{path}/{k}: {'missing' if k not in new else 'added'}")
            else:
                differences(ref[k], new[k], f"{path}/{k}", out, limit)
    elif isinstance(ref, list) and isinstance(new, list):
        if len(ref) != len(new):
            out.append(f"{path}: length {len(ref)} -> {len(new)}")
        else:
            for i, (a, b) in enumerate(zip(ref, new)):
                differences(a, b, f"{path}[{i}]", out, limit)
    elif isinstance(ref, float) and isinstance(new, (int, float)) and not isinstance(new, bool):
        if not math.isclose(ref, new, rel_tol=1e-9, abs_tol=1e-12):
            out.append(f"{path}: {ref!r} -> {new!r}")
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
