"""What the default board cost: the suite commands' timing lines
(``leaderboard/suite-timing-default.jsonl``, appended by ``bench suite run``, :mod:`bench.timing`)
and the committed records' own wall times (``provenance.wall_time_s``).

The timing file cannot say which encoders a line ran; :data:`PASSES` names its stretches (the
first pass, then reruns for new checkpoints) by line numbers, as the session that ran them
recorded. Lines after the last stretch are shown as such, so an appended line changes the
rendered table and ``bench docs --check`` asks for a re-render.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from bench.doctables.sources import Sources, read_json

#: (what ran, first line, last line; 1-based, inclusive) of the timing file.
PASSES = (
    ("the default suite, first pass (`simclr3d`'s 26 jobs twice: rounds 1 and 3)", 1, 56),
    ("`temporal` again, for its round-4 checkpoint", 57, 62),
    ("`simclr_vit3d` and its init again, for round 5's checkpoint and read-out (side by side)", 63, 64),
)


def _ran(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in lines if d.get("jobs", {}).get("run", 0) > 0]


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def _stretches(lines: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    out = [(what, a, min(b, len(lines))) for what, a, b in PASSES if a <= len(lines)]
    last = PASSES[-1][2]
    if len(lines) > last:
        out.append(("lines appended since (not yet described in bench/doctables/cost.py)", last + 1, len(lines)))
    return out


def passes_table(src: Sources) -> str:
    """One row per stretch of the timing file: commands that ran jobs, job runs, wall and CPU."""
    lines = src.timing_lines()
    rows = ["| what ran | timing lines | commands that ran jobs | job runs | wall (min) | CPU (min) | "
            "of it fine-tuning (CPU min) |", "|---|---|---:|---:|---:|---:|---:|"]
    for what, a, b in _stretches(lines) + [("all lines", 1, len(lines))]:
        ran = _ran(lines[a - 1:b])
        tuning = sum(d["phases"].get("fine-tuning", {}).get("cpu_s", 0.0) for d in ran)
        rows.append(f"| {what} | {a}-{b} | {len(ran)} | {sum(d['jobs']['run'] for d in ran)} | "
                    f"{_minutes(sum(d['wall_s'] for d in ran))} | {_minutes(sum(d['cpu_s'] for d in ran))} | "
                    f"{_minutes(tuning)} |")
    return "\n".join(rows)


def phases_table(src: Sources) -> str:
    """The first pass by phase (each phase exclusive of those nested in it), largest CPU first."""
    _, a, b = PASSES[0]
    ran = _ran(src.timing_lines()[a - 1:b])
    wall: dict[str, float] = defaultdict(float)
    cpu: dict[str, float] = defaultdict(float)
    for d in ran:
        for phase, t in d["phases"].items():
            wall[phase] += t["wall_s"]
            cpu[phase] += t["cpu_s"]
    total = sum(cpu.values())
    rows = ["| phase | wall (min) | CPU (min) | share of CPU |", "|---|---:|---:|---:|"]
    rows += [f"| {p} | {_minutes(wall[p])} | {_minutes(cpu[p])} | {100 * cpu[p] / total:.0f} % |"
             for p in sorted(cpu, key=lambda p: -cpu[p])]
    cpu_s = sum(d["cpu_s"] for d in ran)
    return "\n".join(rows) + (
        f"\n\nThe first pass (timing lines {a}-{b}): {len(ran)} suite commands ran "
        f"{sum(d['jobs']['run'] for d in ran)} job runs in {_minutes(sum(d['wall_s'] for d in ran))} wall-minutes and "
        f"{_minutes(cpu_s)} CPU-minutes ({cpu_s / 3600:.1f} CPU-hours), summed from the lines' `phases` blocks.")


def records_wall_table(src: Sources) -> str:
    """Per protocol, the board's records and their own wall times (``provenance.wall_time_s``: the
    job's time in its process, measured while other jobs shared the cores)."""
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    longest: dict[str, tuple[float, str]] = {}
    for path in src.record_files():
        r = read_json(path)
        protocol, wall = r["protocol"], float(r["provenance"]["wall_time_s"])
        total[protocol] += wall
        count[protocol] += 1
        longest[protocol] = max(longest.get(protocol, (0.0, "")), (wall, f"`{r['encoder']}` on {r['task']}"))
    rows = ["| protocol | records | wall (min), summed | longest record |", "|---|---:|---:|---|"]
    rows += [f"| {p} | {count[p]} | {_minutes(total[p])} | {longest[p][1]}, {_minutes(longest[p][0])} min |"
             for p in sorted(total, key=lambda p: -total[p])]
    rows.append(f"| all | {sum(count.values())} | {_minutes(sum(total.values()))} | |")
    return "\n".join(rows)
