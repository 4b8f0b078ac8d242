"""The reference encoders on the default cohort: scores with CIs, the oracle's CI half-width and
whether the oracle beats the floor (paired bootstrap over test subjects).

Reads records written by ``bench run`` (the numbers are the records', nothing is recomputed but
the paired test, which is the leaderboard's own :func:`bench.leaderboard.ranking.compare`).
Produces the reference table of ``docs/calibration.md``::

    bench run --encoder oracle --encoder volumes --encoder intensity --encoder random \\
        --task ad_diagnosis --task conversion --task brain_age ... --protocol linear_probe --results DIR
    python benchmarks/reference_encoders.py DIR [--markdown FILE]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from bench.leaderboard import fmt
from bench.leaderboard.entries import Entry, load_entries
from bench.leaderboard.ranking import compare

ENCODERS = ("oracle", "volumes", "intensity", "random")


def _half_width(entry: Entry | None) -> str:
    if entry is None or entry.ci[0] is None:
        return "-"
    lo, hi = entry.ci
    width = (hi - lo) / 2
    relative = f" ({100 * width / entry.score:.0f} % of the score)" if not entry.record.higher_is_better else ""
    return f"{width:.3f}{relative}"


def table(results: Path, protocol: str = "linear_probe") -> str:
    entries, _ = load_entries(results)
    by_task: dict[str, dict[str, Entry]] = defaultdict(dict)
    for e in entries:
        if e.protocol == protocol:
            by_task[f"{e.task} v{e.record.task_version}"][e.encoder] = e
    lines = ["| task | main score | " + " | ".join(ENCODERS) + " | oracle CI half-width | oracle vs random |",
             "|---|---|" + "---|" * (len(ENCODERS) + 2)]
    for task in sorted(by_task):
        row = by_task[task]
        any_entry = next(iter(row.values()))
        versus = "-"
        if "oracle" in row and "random" in row:
            c = compare(row["oracle"], row["random"])
            # floored at what 1000 paired replicates resolve, as the leaderboard prints it
            versus = f"p {fmt.p_value(c.p_value, 1000)}" if c.p_value is not None else c.method
            versus += " (oracle better)" if c.delta is not None and c.delta > 0 else " (oracle not better)"
        lines.append(f"| {task} | {any_entry.record.main_score_name} | "
                     + " | ".join(fmt.entry_score(row.get(e)) for e in ENCODERS)
                     + f" | {_half_width(row.get('oracle'))} | {versus} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--protocol", default="linear_probe")
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    text = table(args.results, args.protocol)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
