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
COMMAND = f"python benchmarks/cohort_generation.py --profile default --json {MEASUREMENT}"


#: The run that measured the rescans' share of the rendering (timed per subject and per rescan inside
#: one generation, so the machine's load, which was high, cancels in the ratio).
RESCANS = "benchmarks/results/cohort_generation-default-rescans.json"
RESCANS_COMMAND = f"python benchmarks/cohort_generation.py --profile default --json {RESCANS}"


def rescans_sentence(src: Sources) -> str:
    """The rescans' cost as a share of the main scans' render CPU, from the run that timed both."""
    path = src.root / RESCANS
    if not path.is_file():
        return ""
    m = json.loads(path.read_text(encoding="utf-8"))
    r = m["render"]
    return (f" Its {m['n_rescans']} same-session rescans (run-02, added since) cost {100 * r['rescan_to_main_cpu']:.1f} % "
            f"of the main scans' render CPU ({r['rescans_cpu_s']:.0f} s against {r['main_scans_cpu_s']:.0f} s, timed "
            f"within one generation under load {m['load_before'][0]:.1f}), measured with `{RESCANS_COMMAND}`.")


def generation_line(src: Sources) -> str:
    """One paragraph: the measured wall time first, then what it was measured under, then the rescans' share."""
    m = json.loads((src.root / MEASUREMENT).read_text(encoding="utf-8"))
    same = m.get("compare") or {}
    identical = (f"; the tree was byte-identical to the committed board's cohort ({same['files']:,} files)"
                 if same.get("identical") else "")
    load = ", ".join(f"{v:.2f}" for v in m["load_before"])
    return (f"Generating the default cohort took {m['wall_s'] / 60:.1f} minutes ({m['wall_s']:.1f} s wall, "
            f"{m['cpu_s']:.0f} s CPU, {m['n_scans']:,} scans, {m['workers']} workers on {m['cores']} cores; "
            f"load average {load} before it started){identical}, measured with `{COMMAND}`.{rescans_sentence(src)}")
