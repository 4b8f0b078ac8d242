"""The reference encoders on the default cohort: scores with CIs, the oracle's CI half-width and
whether the oracle beats the floor (paired bootstrap over test subjects).

Reads records written by ``bench run`` (the numbers are the records', nothing is recomputed but
the paired test, which is the leaderboard's own :func:`bench.leaderboard.ranking.compare`).
The table is :mod:`bench.doctables.reference`'s, which ``bench docs --write`` also renders from the
committed records into README.md and ``docs/calibration.md``::

    bench run --encoder oracle --encoder volumes --encoder intensity --encoder random \\
        --task ad_diagnosis --task conversion --task brain_age ... --protocol linear_probe --results DIR
    python benchmarks/reference_encoders.py DIR [--markdown FILE]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from bench.doctables.reference import reference_table
from bench.leaderboard.entries import Entry, load_entries


def table(results: Path, protocol: str = "linear_probe") -> str:
    """The reference table (:func:`bench.doctables.reference.reference_table`) of one results folder."""
    entries, _ = load_entries(results)
    by_task: dict[str, dict[str, Entry]] = defaultdict(dict)
    for e in entries:
        if e.protocol == protocol:
            by_task[f"{e.task} v{e.record.task_version}"][e.encoder] = e
    return reference_table(by_task)


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
