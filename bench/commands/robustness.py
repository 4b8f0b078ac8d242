"""``bench robustness params RECORD``: the perturbation parameters of a robustness record's scans.

A robustness record does not keep every evaluated scan's drawn parameters (they are a pure function
of the perturbation seed, the scan, the perturbation and the severity, and would be most of its
bytes); it keeps the seed, the perturbations, the severities, the scans and the parameters'
SHA-256. This command recomputes them (:func:`bench.perturbations.block_parameters`) and
prints them as JSON, ``{perturbation: {severity: {scan id: parameters}}}``, optionally narrowed to
some perturbations, severities or scans. Exit status 1 (the parameters still printed) when they do
not have the SHA-256 the record names: ``bench verify`` refuses such a record.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(sub) -> None:
    p = sub.add_parser("robustness", help="robustness records: recompute their perturbation parameters"
                       ).add_subparsers(dest="robustness_command", required=True)
    q = p.add_parser("params", help="print the perturbation parameters of a robustness record's evaluated scans",
                     description="Recompute every evaluated scan's parameters for every perturbation x severity "
                                 "of a robustness record and print them as JSON.")
    q.add_argument("record", help="a robustness result record (.json)")
    q.add_argument("--perturbation", action="append", help="only this perturbation (repeatable)")
    q.add_argument("--severity", action="append", type=int, help="only this severity (repeatable)")
    q.add_argument("--scan", action="append", help="only this scan, as subject_session_sequence (repeatable)")
    q.set_defaults(func=cmd_params)


def cmd_params(args: argparse.Namespace) -> int:
    from bench.commands._args import err_console
    from bench.errors import MribenchError
    from bench.perturbations import block_digest, block_parameters, parameters_digest
    from bench.results import load_record

    record = load_record(args.record)
    if record.robustness is None:
        raise MribenchError(f"{args.record}: a {record.protocol} record, not a robustness one")
    params = block_parameters(record.robustness)
    matches = parameters_digest(params) == block_digest(record.robustness)
    shown = {name: {sev: {scan: p for scan, p in per_scan.items() if not args.scan or scan in args.scan}
                    for sev, per_scan in by_sev.items() if not args.severity or int(sev) in args.severity}
             for name, by_sev in params.items() if not args.perturbation or name in args.perturbation}
    sys.stdout.write(json.dumps(shown, indent=1, sort_keys=True) + "\n")
    if not matches:
        err_console.print(f"[yellow]warning:[/yellow] {args.record}: these parameters do not have the SHA-256 the "
                          "record names; bench verify refuses it", highlight=False, soft_wrap=True)
        return 1
    return 0
