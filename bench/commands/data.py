"""``bench data``: generate (synth), inspect (info, calibrate), check, import real releases and prepare raw scans.

Thin layers over :mod:`bench.data`; heavy libraries (SimpleITK) are imported only when a command runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.commands._args import (LazyChoices, Later, add_cohort_args, cohort_from, console, err_console,
                                  wrap_console)
from bench.commands.splits import add_power_args, default_split_dir, print_power
from bench.profiles import PROFILES


def register(sub) -> None:
    data = sub.add_parser("data", help="generate, inspect and check cohorts").add_subparsers(
        dest="data_command", required=True)
    p = data.add_parser("synth", help="generate the synthetic longitudinal cohort (BIDS)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--profile", default="default", choices=sorted(PROFILES))
    p.add_argument("--subjects", type=int, default=None, help="override the profile's cohort size")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--resolution", type=int, choices=(1, 2), default=None, help="mm (default: profile's)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--force", action="store_true", help="regenerate even if complete")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_data_synth)
    p = data.add_parser("info", help="summarise a cohort")
    add_cohort_args(p)
    add_power_args(p)
    p.set_defaults(func=cmd_data_info)
    p = data.add_parser("check", help="load every scan and report each unusable one")
    add_cohort_args(p)
    p.set_defaults(func=cmd_data_check)
    _add_import_prepare_calibrate(data)


def _datasets() -> tuple[str, ...]:
    """The releases ``bench data import`` maps (the importers load pandas: read when needed)."""
    from bench.data.importers import DATASETS

    return DATASETS


def _add_import_prepare_calibrate(data) -> None:
    """Add ``import`` and ``prepare`` to the ``bench data`` sub-parsers."""
    p = data.add_parser("import", help="map a real release (ADNI, OASIS-3, IXI, BraTS, UCSF-PDGM) into a "
                                       "cohort manifest, with counts of what was dropped and why")
    p.add_argument("--dataset", required=True, choices=LazyChoices(_datasets), metavar="DATASET",
                   help=Later(lambda: "one of " + ", ".join(_datasets())))
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


# -- bench data --------------------------------------------------------------------------------
def cmd_data_synth(args: argparse.Namespace) -> int:
    from bench.data.synth.generate import SynthConfig, generate, is_complete

    cfg = SynthConfig.from_profile(args.profile, seed=args.seed, subjects=args.subjects,
                                   resolution=args.resolution)
    out = Path(args.out)
    if is_complete(out, cfg) and not args.force:
        console.print(f"{out}: already generated with these parameters (use --force to redo)")
        return 0
    start = time.perf_counter()
    generate(cfg, out, workers=args.workers, progress=not args.no_progress, force=args.force)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    console.print(f"wrote {out}: {cfg.n_ad} ageing/AD + {cfg.n_healthy} healthy + {cfg.n_tumour} tumour subjects at "
                  f"{cfg.resolution} mm, {size / 1e6:.0f} MB in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    cohort = cohort_from(args)
    t = cohort.table
    from rich.table import Table

    table = Table(title=f"cohort {cohort.name} ({cohort.root})")
    for col in ("what", "value"):
        table.add_column(col)
    table.add_row("scans", str(len(t)))
    table.add_row("subjects", str(t["participant_id"].nunique()))
    table.add_row("sessions", str(t[["participant_id", "session_id"]].drop_duplicates().shape[0]))
    table.add_row("sequences", ", ".join(f"{k}: {v}" for k, v in t["sequence"].value_counts().items()))
    table.add_row("sites", ", ".join(f"{k}: {v}" for k, v in t.groupby("site")["participant_id"].nunique().items()))
    if "population" in t.columns:
        table.add_row("populations", ", ".join(
            f"{k}: {v}" for k, v in t.groupby("population")["participant_id"].nunique().items()))
    if "diagnosis" in t.columns:
        table.add_row("diagnoses (scans)", ", ".join(f"{k}: {v}" for k, v in t["diagnosis"].value_counts().items()))
    per_subject = t.groupby("participant_id")["session_id"].nunique()
    table.add_row("sessions per subject", f"min {per_subject.min()}, median {per_subject.median():g}, "
                                          f"max {per_subject.max()}")
    skipped = cohort.metadata.get("skipped_files", [])
    table.add_row("skipped files", str(len(skipped)))
    console.print(table)
    split_dir = default_split_dir(cohort.name)
    if not args.no_power and split_dir.is_dir():
        print_power(args, cohort, split_dir)
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    """Every scan through the sanity gate (:mod:`bench.data.sanity`), reporting every unusable file
    (one line each) rather than stopping at the first; warnings (oblique affines) are listed too."""
    from bench.data.sanity import gate_report

    cohort = cohort_from(args)
    problems, notes = gate_report(cohort, progress=not args.no_progress)
    for p in problems:
        err_console.print(f"[red]error[/red] {p}", highlight=False, soft_wrap=True)
    for n in notes:
        err_console.print(f"[yellow]warning[/yellow] {n}", highlight=False, soft_wrap=True)
    console.print(f"{cohort.name}: {len(cohort)} scans checked, {len(problems)} problem(s)"
                  + (f", {len(notes)} warning(s)" if notes else ""))
    return 1 if problems else 0


def cmd_data_import(args: argparse.Namespace) -> int:
    from bench.data.importers import import_dataset

    result = import_dataset(args.dataset, args.root, args.out or args.root, clinical=args.clinical,
                            name=args.name, window_days=args.window_days)
    for line in result.report.lines():
        wrap_console.print(line, highlight=False, soft_wrap=True)
    wrap_console.print(f"wrote {result.manifest}\n      {result.report_json} (counts)\n      {result.dropped_tsv} "
                  f"(one line per dropped item)", highlight=False)
    wrap_console.print(f"next: bench splits make --cohort {result.manifest}\n      bench run --encoder random "
                  f"--task <{result.cohort.name}/task> --cohort {result.manifest}", highlight=False)
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from bench.data.prepare import PrepareConfig, prepare_tree

    cfg = PrepareConfig(resolution_mm=args.resolution, registration=args.registration, n4=not args.no_n4,
                        threads=args.threads, co_registered=args.co_registered)
    summary = prepare_tree(Path(args.inp), Path(args.out), cfg, force=args.force, progress=not args.no_progress)
    wrap_console.print(summary.line(), highlight=False)
    for failure in summary.failed:
        wrap_console.print(f"[red]failed[/red] {failure}", highlight=False, soft_wrap=True)
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
    wrap_console.print(table)
    wrap_console.print(f"{sum(r.within for r in rows)} of {len(rows)} quantities within their published band")
    if args.markdown:
        from bench.atomic import atomic_write_bytes

        atomic_write_bytes(Path(args.markdown), (markdown_table(rows) + "\n").encode("utf-8"), mode=0o644)
        wrap_console.print(f"wrote {args.markdown}")
    return 0
