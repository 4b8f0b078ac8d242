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


def generation_line(src: Sources) -> str:
    """One paragraph: the measured wall time first, then what it was measured under."""
    m = json.loads((src.root / MEASUREMENT).read_text(encoding="utf-8"))
    same = m.get("compare") or {}
    identical = (f"; the tree was byte-identical to the committed board's cohort ({same['files']:,} files)"
                 if same.get("identical") else "")
    load = ", ".join(f"{v:.2f}" for v in m["load_before"])
    return (f"Generating the default cohort took {m['wall_s'] / 60:.1f} minutes ({m['wall_s']:.1f} s wall, "
            f"{m['cpu_s']:.0f} s CPU, {m['n_scans']:,} scans, {m['workers']} workers on {m['cores']} cores; "
            f"load average {load} before it started){identical}, measured with `{COMMAND}`.")
