"""``bench results compact``: rewrite existing records in today's compact form.

Records written by this version need nothing; older ones are rewritten with every number as it
was (:func:`bench.results.compact_record`): inline predictions (a few MB) moved into
``<stem>.predictions.json.gz`` beside the record, a robustness record's per-scan perturbation
parameters replaced by its scans and their SHA-256 (``bench robustness params`` recomputes them),
and the JSON laid out by :func:`bench.results.record_json`. Running it again changes nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("results", help="maintain result folders (compact: rewrite records in the compact form)")
    actions = p.add_subparsers(dest="action", required=True)
    c = actions.add_parser("compact", help="rewrite records in the compact form (predictions files, no per-scan "
                                           "perturbation parameters, compact layout)",
                           description="Rewrite every record under the folders (or the files named) that is not in "
                                       "the compact form, every number kept: inline predictions into "
                                       "<stem>.predictions.json.gz beside it, a robustness block's per-scan parameters "
                                       "into its scans and their SHA-256, the compact JSON layout; idempotent. Exit "
                                       "status 1 if a record is not valid (it is left as it is).")
    c.add_argument("records", nargs="+", help="record files, or folders searched for *.json")
    c.set_defaults(func=cmd_compact)


def _record_files(targets: list[str]) -> list[Path]:
    from bench.errors import MribenchError

    files: list[Path] = []
    for target in map(Path, targets):
        if target.is_dir():
            files += sorted(p for p in target.rglob("*.json") if p.is_file() and ".jobs" not in p.parts)
        elif target.is_file():
            files.append(target)
        else:
            raise MribenchError(f"{target}: no such file or folder")
    return files


def cmd_compact(args: argparse.Namespace) -> int:
    from collections import Counter

    from rich.console import Console
    from bench.errors import MribenchError
    from bench.names import term as escape  # record text: markup escaped, control characters stripped
    from bench.results import compact_record

    out = Console(highlight=False, soft_wrap=True)
    done: Counter[str] = Counter()
    for path in _record_files(args.records):
        try:
            state = compact_record(path)
        except MribenchError as e:
            state = "invalid"
            out.print(f"[red]invalid[/red] {escape(str(e))}")
        else:
            if state != "already compact":
                out.print(f"{state} {escape(str(path))}")
        done[state] += 1
    out.print(", ".join(f"{n} {state}" for state, n in sorted(done.items())) or "no records found")
    return 1 if done["invalid"] else 0
