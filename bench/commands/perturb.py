"""``bench perturb show | list``: the robustness protocol's acquisition artefacts."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.commands._args import add_cohort_args, cohort_from, console
from bench.errors import MribenchError


def register(sub) -> None:
    perturb = sub.add_parser("perturb", help="inspect the robustness protocol's acquisition artefacts"
                             ).add_subparsers(dest="perturb_command", required=True)
    p = perturb.add_parser("show", help="figure of a scan, clean and at each severity (mid-axial, mid-coronal)")
    p.add_argument("--scan", required=True,
                   help="a NIfTI file, or a scan of the cohort as sub-X_ses-Y[_SEQUENCE]")
    p.add_argument("--perturbation", action="append", help="perturbation (repeatable; default: all)")
    p.add_argument("--severity", action="append", type=int, help="severity 1-5 (repeatable; default: all)")
    p.add_argument("--out", required=True, help="figure file (.png or .svg)")
    p.add_argument("--space", default="cpu-small", help="input space to show the scan in")
    p.add_argument("--perturbation-seed", type=int, default=0, help="seed of the parameter draws")
    add_cohort_args(p)
    p.set_defaults(func=cmd_perturb_show)
    p = perturb.add_parser("list", help="the perturbations and their level per severity")
    p.set_defaults(func=cmd_perturb_list)


# -- bench perturb -----------------------------------------------------------------------------
def _resolve_scan(args: argparse.Namespace):
    """(volume in the space, subject, session, sequence) for --scan: a NIfTI file or a cohort scan id."""
    from bench.data.bids import parse_bids_name
    from bench.data.sanity import load_gated_scan
    from bench.data.spaces import get_space, resample_to_space

    space = get_space(args.space)
    path = Path(args.scan)
    if path.is_file():
        parsed = parse_bids_name(path.name)
        entities, suffix = parsed if parsed else ({}, "")
        volume, affine = load_gated_scan(path)
        return (resample_to_space(volume, affine, space), f"sub-{entities.get('sub', path.name)}",
                f"ses-{entities.get('ses', 'none')}", suffix)
    cohort = cohort_from(args)
    t = cohort.table
    ids = t["participant_id"] + "_" + t["session_id"] + "_" + t["sequence"]
    hits = t[ids.str.startswith(args.scan)]
    if hits.empty:
        raise MribenchError(f"--scan {args.scan}: neither a file nor a scan of cohort {cohort.name} "
                            f"(give e.g. {ids.iloc[0]})")
    row = hits.iloc[0]
    import numpy as np

    from bench.data.store import VolumeStore
    from bench.paths import cache_home

    volume = np.asarray(VolumeStore(cache_home() / "store").get(row["path"], space), dtype=np.float32)
    return volume, row["participant_id"], row["session_id"], row["sequence"]


def cmd_perturb_show(args: argparse.Namespace) -> int:
    from bench.data.spaces import get_space
    from bench.perturb_figure import perturbation_figure
    from bench.perturbations import PERTURBATIONS, SEVERITIES

    volume, subject, session, sequence = _resolve_scan(args)
    names = args.perturbation or list(PERTURBATIONS)
    severities = args.severity or list(SEVERITIES)
    params = perturbation_figure(volume, perturbations=names, severities=severities, out=Path(args.out),
                                 spacing_mm=get_space(args.space).spacing_mm, subject=subject,
                                 session=session, sequence=sequence, seed=args.perturbation_seed)
    console.print(f"wrote {args.out}: {subject} {session} {sequence}, {len(names)} perturbation(s) x "
                  f"severities {severities}", highlight=False)
    for name, by_sev in params.items():
        for sev, p in by_sev.items():
            shown = {k: v for k, v in p.items() if k not in ("severity",)}
            console.print(f"  {name} @{sev}: {shown}", highlight=False, soft_wrap=True)
    return 0


def cmd_perturb_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from bench.perturbations import PERTURBATIONS

    table = Table(title="perturbations (robustness protocol)")
    for col in ("perturbation", "what", "level unit", "severity 1..5"):
        table.add_column(col)
    for p in PERTURBATIONS.values():
        table.add_row(p.name, p.description, p.unit, ", ".join(f"{v:g}" for v in p.levels))
    console.print(table)
    return 0
