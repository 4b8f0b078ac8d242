"""How long does a synthetic cohort take to generate? Wall and CPU seconds of ``bench data synth``.

Issue 31 (item 4): the default cohort is a newcomer's first wait, so the figure the README states
has to come from a command. This runs ``bench data synth`` once, as a user would (a fresh process,
imports included, output piped; the process is this script's timed child, which calls bench's
``main`` with the same arguments), into a temporary folder, and reports its wall seconds, the CPU
seconds of that process (user + system), the workers it used, the cores of the machine and the load
average before and after: the machine is shared, so a figure measured under load says so.

With ``--compare DIR`` it also checks that the tree it wrote is byte-for-byte ``DIR`` (SHA-256 of
every file): the generator's output must not depend on the worker count or on how it computes.

It also reports what the rescans (``bench/data/synth/rescans.py``) cost, measured inside the same
run so that the machine's load falls on both sides alike: the command runs in a child of this
script that times each subject's rendering and, within it, each rescan's (CPU seconds of the
worker's thread, and wall seconds, summed over the workers), and writes them to a file this script
reads. ``render`` reports the seconds of the main scans (the subject's rendering less its
rescans'), of the rescans, and their ratio.

Usage::

    python benchmarks/cohort_generation.py [--profile default] [--seed 0] [--workers 2] [--subjects N]
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
import threading
import time
from pathlib import Path


def tree_digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, by relative path (as tests/conftest.py computes it)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def child_cpu_seconds() -> float:
    """User + system seconds of this process's finished children (the generator, once it exits)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class RenderTimer:
    """Seconds spent in the generator's per-subject rendering and, within it, in its rescans: CPU
    seconds of the calling thread and wall seconds, summed over the calls of every worker.

    The workers are forked processes (``bench/data/synth/workers.py``), so a call's timing cannot be
    added to a counter of this process: each call appends one line to ``log`` (an append of one short
    line is atomic), and :meth:`summary` adds the lines up once the command has finished."""

    def __init__(self, log: Path) -> None:
        self.log = log
        log.write_text("")

    def wrap(self, kind: str, fn):
        log = self.log

        def timed(*args, **kwargs):
            cpu, wall = time.thread_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                line = json.dumps({"kind": kind, "cpu": time.thread_time() - cpu, "wall": time.perf_counter() - wall})
                with open(log, "a") as f:
                    f.write(line + "\n")
        return timed

    def totals(self) -> tuple[dict[str, float], dict[str, int]]:
        seconds = {"subject_cpu": 0.0, "subject_wall": 0.0, "rescan_cpu": 0.0, "rescan_wall": 0.0}
        calls = {"subject": 0, "rescan": 0}
        for line in self.log.read_text().splitlines():
            call = json.loads(line)
            seconds[f"{call['kind']}_cpu"] += call["cpu"]
            seconds[f"{call['kind']}_wall"] += call["wall"]
            calls[call["kind"]] += 1
        return seconds, calls

    def summary(self) -> dict:
        s, calls = self.totals()
        main_cpu, main_wall = s["subject_cpu"] - s["rescan_cpu"], s["subject_wall"] - s["rescan_wall"]
        return {"main_scans_cpu_s": round(main_cpu, 1), "rescans_cpu_s": round(s["rescan_cpu"], 1),
                "rescan_to_main_cpu": round(s["rescan_cpu"] / main_cpu, 4) if main_cpu else None,
                "main_scans_wall_s": round(main_wall, 1), "rescans_wall_s": round(s["rescan_wall"], 1),
                "rescan_to_main_wall": round(s["rescan_wall"] / main_wall, 4) if main_wall else None,
                "subjects_rendered": calls["subject"], "rescans_rendered": calls["rescan"]}


def timed_child(timings: Path, argv: list[str]) -> int:
    """Run ``bench`` with ``argv`` in this process, timing the rendering (:class:`RenderTimer`);
    write the timings to ``timings``."""
    from bench.cli import main as bench_main
    from bench.data.synth import generate as gen

    timer = RenderTimer(timings.with_name(timings.name + ".calls"))
    gen.render_subject = timer.wrap("subject", gen.render_subject)
    gen._write_rescan = timer.wrap("rescan", gen._write_rescan)
    rc = bench_main(argv)
    timings.write_text(json.dumps(timer.summary(), indent=2) + "\n")
    timer.log.unlink()
    return rc


def generate(profile: str, seed: int, workers: int, out: Path, subjects: int | None = None) -> dict:
    """Run ``bench data synth`` into ``out`` (which must not exist) in a timed child and time it."""
    args = ["data", "synth", "--out", str(out), "--profile", profile, "--seed", str(seed),
            "--workers", str(workers), "--force"] + (["--subjects", str(subjects)] if subjects else [])
    timings = out.with_name(out.name + ".render-timings.json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--timed-child", str(timings), "--", *args]
    load_before = os.getloadavg()
    cpu, start = child_cpu_seconds(), time.perf_counter()
    try:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        wall = time.perf_counter() - start
        render = json.loads(timings.read_text())
    finally:
        timings.unlink(missing_ok=True)
    description = json.loads((out / "dataset_description.json").read_text())["mribench"]
    return {"profile": profile, "seed": seed, "workers": workers, "cores": os.cpu_count(),
            "wall_s": round(wall, 1), "cpu_s": round(child_cpu_seconds() - cpu, 1),
            "n_scans": description["n_scans"], "n_rescans": description.get("rescans", {}).get("n_rescans"),
            "render": render, "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()]}


def compare(tree: Path, reference: Path) -> dict:
    """Files that differ, are missing or are extra in ``tree`` against ``reference``."""
    mine, theirs = tree_digest(tree), tree_digest(reference)
    return {"files": len(mine), "identical": mine == theirs,
            "differ": sorted(k for k in mine.keys() & theirs.keys() if mine[k] != theirs[k])[:20],
            "missing": sorted(theirs.keys() - mine.keys())[:20], "extra": sorted(mine.keys() - theirs.keys())[:20]}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--timed-child"]:  # the generating child: --timed-child FILE -- BENCH ARGS
        return timed_child(Path(argv[1]), argv[3:])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--subjects", type=int, help="shrink the profile's cohort to this many subjects (a quick look)")
    p.add_argument("--compare", type=Path, help="a tree the generated one must equal byte for byte")
    p.add_argument("--keep", type=Path, help="write the cohort here (kept) instead of a temporary folder")
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="mribench-cohort-"))
    out = args.keep if args.keep else scratch / "cohort"
    try:
        result = generate(args.profile, args.seed, args.workers, out, args.subjects)
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
