"""How fast do commands start? Each command's wall time as a ratio of the imports it cannot avoid.

Issue 31 measured 54 s for a rerun of the README's first command with everything cached: half a
minute reading 1,560 session TSVs, 21 s importing torch and MONAI to build the parser. The goals,
as ratios measured in one run on one machine (absolute seconds depend on the machine and its load,
ratios much less):

* ``bench --help`` within 2x of ``python -c "import yaml, rich"`` (it must import no numerical
  library: the parser is built from light modules, help that names protocols is written lazily);
* ``bench run --encoder simclr3d --task conversion`` on a warm cache, reusing its record, within 2x
  of ``python -c "import torch, monai"`` (the cohort table comes from its cache, checked against
  the tree by sizes and modification times).

Each command runs ``--repeats`` times, interleaved with its baseline, and the medians are compared.
The run command needs the profile's synthetic cohort and the record already there (it generates
nothing: without them that row says so). It also times the cohort table read afresh and from its
cache (``bench.data.bids``), in this process.

Usage::

    MRIBENCH_CACHE=... python benchmarks/startup.py [--profile default] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: (name, command, baseline name, goal ratio): what is timed, and against what.
GOALS = (("bench --help", "help", "import yaml, rich", 2.0),
         ("bench run (reused record)", "run", "import torch, monai", 2.0))


def bench_command() -> list[str]:
    """The ``bench`` console script of this interpreter's environment, else ``python -m bench.cli``."""
    script = Path(sys.executable).with_name("bench")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "bench.cli"]


def commands(profile: str, results: str) -> dict[str, list[str]]:
    bench = bench_command()
    return {"import yaml, rich": [sys.executable, "-c", "import yaml, rich"],
            "import torch, monai": [sys.executable, "-c", "import torch, monai"],
            "help": [*bench, "--help"],
            "run": [*bench, "run", "--encoder", "simclr3d", "--task", "conversion", "--profile", profile,
                    "--results", results]}


def wall(cmd: list[str]) -> float:
    """Seconds ``cmd`` takes, its output discarded (piped, as in a CI log); a failure stops the script."""
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   env={**os.environ, "COLUMNS": "80"})
    return time.perf_counter() - start


def run_ready(profile: str, results: str) -> str | None:
    """Why the run row cannot be measured without computing (no cohort, no record), else None."""
    from bench.data.sources import synth_dir
    from bench.data.synth.generate import SynthConfig, is_complete
    from bench.results import record_path
    from bench.tasks import get_task

    if not is_complete(synth_dir(profile), SynthConfig.from_profile(profile)):
        return f"the {profile} cohort is not generated (run the command once: it generates it)"
    if not record_path(results, "simclr3d", "conversion", get_task("conversion").version, "linear_probe").is_file():
        return f"no simclr3d conversion record under {results}"
    return None


def time_commands(profile: str, results: str, repeats: int) -> tuple[dict[str, float], str | None]:
    """Median seconds of each command and baseline, the runs interleaved; the run row's skip reason."""
    skip = run_ready(profile, results)
    cmds = commands(profile, results)
    names = [n for n in cmds if not (n == "run" and skip)]
    if "run" in names:
        wall(cmds["run"])  # warms the cohort table's cache (the first read after a change builds it)
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(repeats):
        for name in names:
            times[name].append(wall(cmds[name]))
    return {n: statistics.median(t) for n, t in times.items()}, skip


def cohort_read(profile: str) -> dict[str, float] | None:
    """Seconds to read the profile's cohort table afresh and from its cache (None: not generated)."""
    from bench.data.bids import read_bids
    from bench.data.sources import synth_dir

    root = synth_dir(profile)
    if not root.is_dir():
        return None
    start = time.perf_counter()
    read_bids(root, cache=False)
    fresh = time.perf_counter() - start
    read_bids(root)  # (stored if it was not)
    start = time.perf_counter()
    read_bids(root)
    return {"fresh": fresh, "cached": time.perf_counter() - start}


def report(medians: dict[str, float], skip: str | None, reads: dict[str, float] | None) -> list[dict]:
    rows = []
    print(f"{'command':<28}{'median s':>10}  {'baseline':<20}{'baseline s':>11}{'ratio':>8}  goal")
    for label, name, base, goal in GOALS:
        if name not in medians:
            print(f"{label:<28}{'-':>10}  skipped: {skip}")
            continue
        ratio = medians[name] / medians[base]
        verdict = "met" if ratio <= goal else "NOT met"
        print(f"{label:<28}{medians[name]:>10.2f}  {base:<20}{medians[base]:>11.2f}{ratio:>8.2f}  <= {goal:g}x: {verdict}")
        rows.append({"command": label, "seconds": medians[name], "baseline": base,
                     "baseline_seconds": medians[base], "ratio": ratio, "goal": goal, "met": ratio <= goal})
    if reads:
        print(f"cohort table: read afresh {reads['fresh']:.2f} s, from its cache {reads['cached']:.2f} s "
              f"({reads['fresh'] / reads['cached']:.0f}x)")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="default", help="profile of the cohort the run command reads")
    p.add_argument("--results", default="leaderboard/results", help="results folder holding the record")
    p.add_argument("--repeats", type=int, default=3, help="runs of each command (the median is kept)")
    p.add_argument("--json", default=None, help="also write the measurements here")
    args = p.parse_args(argv)
    if shutil.which(bench_command()[0]) is None and not Path(bench_command()[0]).is_file():
        raise SystemExit("no bench command: install the package (pip install -e .)")
    medians, skip = time_commands(args.profile, args.results, max(1, args.repeats))
    reads = cohort_read(args.profile)
    rows = report(medians, skip, reads)
    if args.json:
        Path(args.json).write_text(json.dumps({"medians": medians, "goals": rows, "cohort_read": reads,
                                               "cpu_count": os.cpu_count()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
