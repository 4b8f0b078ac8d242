"""``bench status``: which jobs of a grid are done, missing, failed or running in a results folder.

A job is *done* when its record validates, *failed* when the last attempt left a failure marker
(with the error, see :mod:`bench.jobs`), *running* while a process holds its lock, *invalid* when a
record file is there but does not validate (the next run redoes it), and *missing* otherwise.
The grid is ``--encoder`` x ``--task`` x ``--protocol``; an axis left out is taken from what the
folder holds, so a bare ``bench status`` shows what is left of the runs made into it.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

from bench.errors import MribenchError

STATES = ("done", "running", "failed", "invalid", "missing")
_TASK_DIR = re.compile(r"^(?P<task>.+)@v(?P<version>\d+)$")


@dataclass(frozen=True)
class JobStatus:
    encoder: str        # the record folder's name (the card name made file-system safe)
    task: str
    task_version: int
    protocol: str
    state: str
    detail: str = ""    # error of a failed job, validation problem of an invalid record

    @property
    def key(self) -> str:
        return f"{self.encoder}/{self.task}@v{self.task_version}/{self.protocol}"


def register(sub) -> None:
    p = sub.add_parser("status", help="done / missing / failed / running jobs of a results folder")
    p.add_argument("--results", default="leaderboard/results", help="results folder (default: leaderboard/results)")
    p.add_argument("--encoder", action="append", help="encoder of the grid (repeatable; default: those in the folder)")
    p.add_argument("--task", action="append", help="task of the grid (repeatable; default: those in the folder)")
    p.add_argument("--protocol", action="append", help="protocol of the grid (repeatable; default: those in the folder)")
    p.add_argument("--only", choices=STATES, action="append", help="list only jobs in this state (repeatable)")
    p.set_defaults(func=cmd_status)


def _found(results: Path) -> set[tuple[str, str, int, str]]:
    """(encoder, task, version, protocol) of every record, failure marker and lock in the folder."""
    from bench.jobs import STATE_DIR

    cells = set()
    patterns = [(results, "*/*/*.json", ".json"), (results / STATE_DIR, "*/*/*.failed", ".failed"),
                (results / STATE_DIR, "*/*/*.lock", ".lock")]
    for root, pattern, suffix in patterns:
        for path in root.glob(pattern):
            m = _TASK_DIR.match(path.parent.name)
            if m and not path.name.startswith("."):
                cells.add((path.parent.parent.name, m["task"], int(m["version"]), path.name[: -len(suffix)]))
    return cells


def collect_status(results: str | Path, encoders: list[str] | None = None, tasks: list[str] | None = None,
                   protocols: list[str] | None = None) -> list[JobStatus]:
    """The state of every job of the grid, sorted by key."""
    from bench.jobs import STATE_DIR, read_failure
    from bench.locks import is_locked
    from bench.results import load_record, safe_name
    from bench.tasks import get_task

    results = Path(results)
    if not results.is_dir():
        raise MribenchError(f"{results}: {'a file, not a' if results.exists() else 'no such'} results folder")
    found = _found(results)
    if encoders:
        from bench.encoders import get_encoder

        enc_names = sorted({safe_name(get_encoder(e).card.name) for e in encoders})
    else:
        enc_names = sorted({c[0] for c in found})
    if tasks:
        task_keys = sorted({(safe_name(s.name), s.version) for s in map(get_task, tasks)})
    else:
        task_keys = sorted({(c[1], c[2]) for c in found})
    proto_names = sorted(set(protocols)) if protocols else sorted({c[3] for c in found})

    out = []
    for enc in enc_names:
        for task, version in task_keys:
            for proto in proto_names:
                rel = Path(enc) / f"{task}@v{version}"
                record = results / rel / f"{proto}.json"
                state, detail = "missing", ""
                if record.is_file():
                    try:
                        load_record(record)
                        state = "done"
                    except MribenchError as e:
                        state, detail = "invalid", str(e)
                if state != "done":
                    if is_locked(results / STATE_DIR / rel / f"{proto}.lock"):
                        state, detail = "running", ""
                    elif (failure := read_failure(results / STATE_DIR / rel / f"{proto}.failed")) is not None:
                        state = "failed"
                        detail = f"{failure.get('error_type', '')}: {failure.get('error', '')} " \
                                 f"({failure.get('failed_at', '?')} on {failure.get('host', '?')})"
                out.append(JobStatus(enc, task, version, proto, state, detail))
    return out


def cmd_status(args: argparse.Namespace) -> int:
    """Print the grid's jobs and a count per state; exit 0 only when every job is done."""
    from rich.console import Console
    from rich.table import Table

    from bench.names import term

    console = Console()
    jobs = collect_status(args.results, args.encoder, args.task, args.protocol)
    counts = {s: sum(j.state == s for j in jobs) for s in STATES}
    shown = [j for j in jobs if not args.only or j.state in args.only]
    colour = {"done": "green", "running": "cyan", "failed": "red", "invalid": "yellow", "missing": "yellow"}
    table = Table(title=f"jobs in {args.results}")
    for col in ("encoder", "task", "protocol", "state", "detail"):
        table.add_column(col, overflow="fold")
    for j in shown:  # names come from folder names, details from files: shown as text, never as markup
        table.add_row(term(j.encoder), term(f"{j.task}@v{j.task_version}"), term(j.protocol),
                      f"[{colour[j.state]}]{j.state}[/{colour[j.state]}]", term(j.detail))
    if shown:
        console.print(table)
    console.print(f"{len(jobs)} job(s): " + ", ".join(f"{n} {s}" for s, n in counts.items()), highlight=False)
    return 0 if jobs and counts["done"] == len(jobs) else 1
