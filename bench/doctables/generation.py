"""How long the default cohort takes to generate, from the committed measurement.

The newcomer's first wait is the default cohort's generation. Its figure in the README is the
one ``benchmarks/cohort_generation.py`` measured and wrote (wall and CPU seconds, workers, cores,
the machine's load before and after, and whether the tree was byte-identical to the committed
board's cohort), committed under ``benchmarks/results/``: re-measure with the command the block
names and ``bench docs --write`` carries the new figure into every document.
"""

from __future__ import annotations

import json

from bench.doctables.sources import Sources

#: The committed measurement, relative to the repository.
MEASUREMENT = "benchmarks/results/cohort_generation-default.json"
COMMAND = (f"python benchmarks/cohort_generation.py --profile default --compare "
           f"~/.cache/mribench/cohorts/synth-default-seed0-2mm --json {MEASUREMENT}")
#: Where the rendering's CPU goes (``benchmarks/generation_breakdown.py``): what the 3-minute goal is up against.
BREAKDOWN = "benchmarks/results/generation_breakdown-default.json"
BREAKDOWN_COMMAND = f"python benchmarks/generation_breakdown.py --profile default --json {BREAKDOWN}"
#: Issue 31's goal for the newcomer's first wait, in seconds of wall time on 2 cores.
GOAL_S = 180


def rescans_sentence(m: dict) -> str:
    """The rescans' cost as a share of the main scans' render CPU, timed within the same generation."""
    r = m.get("render")
    if not r:
        return ""
    return (f" Its {m['n_rescans']} same-session rescans (run-02) took {100 * r['rescan_to_main_cpu']:.1f} % of the "
            f"main scans' render CPU ({r['rescans_cpu_s']:.0f} s against {r['main_scans_cpu_s']:.0f} s).")


def goal_sentence(src: Sources, m: dict) -> str:
    """Against the 3-minute goal: how much of the rendering's CPU the byte-identical output pins, and
    the wall time that part alone takes on the measured cores."""
    path = src.root / BREAKDOWN
    if m["wall_s"] <= GOAL_S or not path.is_file() or not m.get("render"):
        return ""
    b = json.loads(path.read_text(encoding="utf-8"))
    render_cpu = m["render"]["main_scans_cpu_s"] + m["render"]["rescans_cpu_s"]
    parts = ", ".join(f"{p['what']} {100 * p['share']:.0f} %" for p in b["parts"].values())
    return (f" That is over the {GOAL_S / 60:.0f}-minute goal. The output must stay byte-identical, which pins every "
            f"floating-point operation and the compressed bytes: {100 * b['pinned_share']:.0f} % of the rendering's "
            f"CPU goes to operations whose cost that fixes ({parts}; one thread, {b['subjects']} subjects, measured "
            f"with `{BREAKDOWN_COMMAND}`), about {b['pinned_share'] * render_cpu / m['cores']:.0f} s of wall time "
            f"on {m['cores']} cores before any of the remaining arithmetic, which is already done in place.")


def generation_line(src: Sources) -> str:
    """One paragraph: the measured wall time first, then what it was measured under, the rescans' share
    and, when over the goal, what the goal is up against."""
    m = json.loads((src.root / MEASUREMENT).read_text(encoding="utf-8"))
    same = m.get("compare") or {}
    identical = (f"; the tree was byte-identical to the committed board's cohort ({same['files']:,} files)"
                 if same.get("identical") else "")
    load = ", ".join(f"{v:.2f}" for v in m["load_before"])
    scans = f"{m['n_scans']:,} scans" + (f" and {m['n_rescans']} rescans" if m.get("n_rescans") else "")
    return (f"Generating the default cohort took {m['wall_s'] / 60:.1f} minutes ({m['wall_s']:.1f} s wall, "
            f"{m['cpu_s']:.0f} s CPU, {scans}, {m['workers']} worker processes on {m['cores']} cores; "
            f"load average {load} before it started){identical}, measured with `{COMMAND}`."
            f"{rescans_sentence(m)}{goal_sentence(src, m)}")
