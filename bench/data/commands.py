"""``bench data import`` and ``bench data prepare``: real releases into cohorts, raw scans into
MNI space. Thin command layers over :mod:`bench.data.importers` and :mod:`bench.data.prepare`;
heavy libraries (SimpleITK) are imported only when a command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

console = Console(soft_wrap=True)  # paths stay whole, so they can be copied


def add_data_commands(data) -> None:
    """Add ``import`` and ``prepare`` to the ``bench data`` sub-parsers."""
    from bench.data.importers import DATASETS

    p = data.add_parser("import", help="map a real release (ADNI, OASIS-3, IXI, BraTS, UCSF-PDGM) into a "
                                       "cohort manifest, with counts of what was dropped and why")
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--root", required=True, help="folder the release was unpacked into")
    p.add_argument("--clinical", default=None,
                   help="clinical table (ADNIMERGE.csv, OASIS3_UDSb4_cdr.csv, IXI.xls/csv, survival_info.csv, "
                        "UCSF-PDGM-metadata_v2.csv); default: searched for under --root")
    p.add_argument("--out", default=None, help="output folder (default: --root); writes <name>.tsv, "
                                               "<name>_import.json, <name>_dropped.tsv")
    p.add_argument("--name", default=None, help="cohort name (default: the dataset); split files go to "
                                                "splits/<name>/")
    p.add_argument("--window-days", type=float, default=None,
                   help="ADNI / OASIS-3: largest gap between a scan and its clinical visit (default 90 / 180)")
    p.set_defaults(func=cmd_data_import)

    p = data.add_parser("calibrate", help="measure a synthetic cohort's population quantities beside their "
                                          "published values (the docs' calibration table)")
    from bench.commands._args import add_cohort_args

    add_cohort_args(p)
    p.add_argument("--markdown", default=None, metavar="FILE", help="also write the table as markdown")
    p.set_defaults(func=cmd_data_calibrate)

    p = data.add_parser("prepare", help="raw scans -> N4-corrected, MNI-registered, brain-masked, normalised "
                                        "scans with a QC figure each (resumable)")
    p.add_argument("--in", dest="inp", required=True, help="folder of raw NIfTI scans (searched recursively)")
    p.add_argument("--out", required=True, help="output folder: the same tree, plus qc/ and derivatives/prepare/")
    p.add_argument("--resolution", type=float, default=1.0, help="output voxel size in mm (template grid)")
    p.add_argument("--registration", choices=("rigid", "affine"), default="affine")
    p.add_argument("--no-n4", action="store_true", help="skip N4 bias correction (input already corrected)")
    p.add_argument("--co-registered", action="store_true",
                   help="each folder is one co-registered case (BraTS, UCSF-PDGM): register its T1 image once and "
                        "move the folder's other images and label maps with it")
    p.add_argument("--threads", type=int, default=None, help="SimpleITK threads (default: all cores)")
    p.add_argument("--force", action="store_true", help="redo scans that are already prepared")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_data_prepare)


def cmd_data_import(args: argparse.Namespace) -> int:
    from bench.data.importers import import_dataset

    result = import_dataset(args.dataset, args.root, args.out or args.root, clinical=args.clinical,
                            name=args.name, window_days=args.window_days)
    for line in result.report.lines():
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"wrote {result.manifest}\n      {result.report_json} (counts)\n      {result.dropped_tsv} "
                  f"(one line per dropped item)", highlight=False)
    console.print(f"next: bench splits make --cohort {result.manifest}\n      bench run --encoder random "
                  f"--task <{result.cohort.name}/task> --cohort {result.manifest}", highlight=False)
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from bench.data.prepare import PrepareConfig, prepare_tree

    cfg = PrepareConfig(resolution_mm=args.resolution, registration=args.registration, n4=not args.no_n4,
                        threads=args.threads, co_registered=args.co_registered)
    summary = prepare_tree(Path(args.inp), Path(args.out), cfg, force=args.force, progress=not args.no_progress)
    console.print(summary.line(), highlight=False)
    for failure in summary.failed:
        console.print(f"[red]failed[/red] {failure}", highlight=False, soft_wrap=True)
    return 1 if summary.failed else 0


def cmd_data_calibrate(args: argparse.Namespace) -> int:
    """Print every calibrated quantity: published value and band, citation, synthetic value."""
    from rich.table import Table

    from bench.data.sources import open_cohort
    from bench.data.synth.calibrate import markdown_table, measure, read_truth

    cohort = open_cohort(args.cohort, profile=args.profile, seed=args.seed, progress=not args.no_progress)
    rows = measure(*read_truth(cohort.root))
    table = Table(title=f"calibration of {cohort.name} ({cohort.root})")
    for col in ("quantity", "published (band)", "synth", "n", "within"):
        table.add_column(col)
    for r in rows:
        t = r.target
        table.add_row(t.quantity, f"{t.value:g} {t.unit} ({t.low:g} to {t.high:g})", f"{r.synth:.2f}", str(r.n),
                      "yes" if r.within else "[red]no[/red]")
    console.print(table)
    console.print(f"{sum(r.within for r in rows)} of {len(rows)} quantities within their published band")
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(rows) + "\n")
        console.print(f"wrote {args.markdown}")
    return 0
