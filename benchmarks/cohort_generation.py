"""How long does a synthetic cohort take to generate? Wall and CPU seconds of ``bench data synth``.

Issue 31 (item 4): the default cohort is a newcomer's first wait, so the figure the README states
has to come from a command. This runs ``bench data synth`` once, as a user would (a fresh process,
imports included, output piped), into a temporary folder, and reports its wall seconds, the CPU
seconds of that process (user + system), the workers it used, the cores of the machine and the load
average before and after: the machine is shared, so a figure measured under load says so.

With ``--compare DIR`` it also checks that the tree it wrote is byte-for-byte ``DIR`` (SHA-256 of
every file): the generator's output must not depend on the worker count or on how it computes.

Usage::

    python benchmarks/cohort_generation.py [--profile default] [--seed 0] [--workers 2]
        [--compare DIR] [--keep DIR] [--json out.json]

where ``--compare`` names an existing cohort of the same profile and seed (for the default one:
the cache's ``cohorts/synth-default-seed0-2mm``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def bench_command() -> list[str]:
    """The ``bench`` console script of this interpreter's environment, else ``python -m bench.cli``."""
    script = Path(sys.executable).with_name("bench")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "bench.cli"]


def tree_digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, by relative path (as tests/conftest.py computes it)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def child_cpu_seconds() -> float:
    """User + system seconds of this process's finished children (the generator, once it exits)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def generate(profile: str, seed: int, workers: int, out: Path) -> dict:
    """Run ``bench data synth`` into ``out`` (which must not exist) and time it."""
    cmd = [*bench_command(), "data", "synth", "--out", str(out), "--profile", profile, "--seed", str(seed),
           "--workers", str(workers), "--force"]
    load_before = os.getloadavg()
    cpu, start = child_cpu_seconds(), time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    description = json.loads((out / "dataset_description.json").read_text())["mribench"]
    return {"profile": profile, "seed": seed, "workers": workers, "cores": os.cpu_count(),
            "wall_s": round(wall, 1), "cpu_s": round(child_cpu_seconds() - cpu, 1),
            "n_scans": description["n_scans"], "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()]}


def compare(tree: Path, reference: Path) -> dict:
    """Files that differ, are missing or are extra in ``tree`` against ``reference``."""
    mine, theirs = tree_digest(tree), tree_digest(reference)
    return {"files": len(mine), "identical": mine == theirs,
            "differ": sorted(k for k in mine.keys() & theirs.keys() if mine[k] != theirs[k])[:20],
            "missing": sorted(theirs.keys() - mine.keys())[:20], "extra": sorted(mine.keys() - theirs.keys())[:20]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--compare", type=Path, help="a tree the generated one must equal byte for byte")
    p.add_argument("--keep", type=Path, help="write the cohort here (kept) instead of a temporary folder")
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="mribench-cohort-"))
    out = args.keep if args.keep else scratch / "cohort"
    try:
        result = generate(args.profile, args.seed, args.workers, out)
        if args.compare:
            result["compare"] = {"reference": args.compare.name, **compare(out, args.compare)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if result.get("compare", {}).get("identical", True) else 1


if __name__ == "__main__":
    sys.exit(main())
