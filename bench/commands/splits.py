"""``bench splits make | check | labels | compare``: patient-level split files, and the power table of their
test splits. On a real release with a committed rule (``splits/<dataset>/<population>.rule.yaml``), ``make``
applies the rule (:mod:`bench.split_rules`) instead of stratifying over the subjects present."""

from __future__ import annotations

import argparse
from pathlib import Path


from bench.commands._args import add_cohort_args, cohort_from, console, err_console, positive_int, print_listing
from bench.errors import MribenchError


#: Which subject column stratifies the split of each population.
SPLIT_LABELS = {"ad": "trajectory", "tumour": "marker", "healthy": "age"}


#: (val, test) fractions of each population's non-external subjects. Every population gives its
#: test split a third of its subjects: the power analysis of docs/calibration.md needs that many
#: test subjects to tell encoders apart.
SPLIT_FRACTIONS = {"ad": (0.15, 0.35), "healthy": (0.15, 0.35), "tumour": (0.15, 0.35)}
DEFAULT_FRACTIONS = (0.15, 0.2)


def register(sub) -> None:
    splits = sub.add_parser("splits", help="make and check patient-level split files").add_subparsers(
        dest="splits_command", required=True)
    p = splits.add_parser("make", help="write stratified patient-level split files + SHA-256")
    add_cohort_args(p)
    p.add_argument("--population", action="append", help="sub-cohort(s) to split (default: each)")
    p.add_argument("--label", default=None, help="subject column to stratify by")
    p.add_argument("--external-site", default=None, help="site held out as 'external'")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder (default: splits/<cohort>/)")
    p.add_argument("--force", action="store_true",
                   help="overwrite existing split files (committed ones are what every record is checked against)")
    p.add_argument("--no-rule", action="store_true",
                   help="stratify over the subjects present even where a split rule exists (such a split is "
                        "not comparable between groups)")
    add_power_args(p)
    p.set_defaults(func=cmd_splits_make)
    p = splits.add_parser("check", help="verify hashes, leakage and subjects of split files")
    p.add_argument("files", nargs="*", help="split TSVs (default: splits/<cohort>/*.tsv)")
    add_cohort_args(p)
    p.set_defaults(func=cmd_splits_check)
    p = splits.add_parser("labels", help="write (or --check) the label digests beside each split file, "
                                         "which bench verify holds records' examples and labels against")
    add_cohort_args(p)
    p.add_argument("--dir", default=None, help="folder of the split files (default: splits/<cohort>/)")
    p.add_argument("--check", action="store_true", help="compare with the committed digests, write nothing")
    p.set_defaults(func=cmd_splits_labels)
    p = splits.add_parser("compare", help="how many subjects a rule-made split shares with another group's "
                                          "(a fingerprint, a record, or their <population>.fingerprint.json)")
    p.add_argument("target", help="a split fingerprint, a record (JSON), or a <population>.fingerprint.json")
    p.add_argument("--split", default=None, help="the local split file (default: the record's split file)")
    p.set_defaults(func=cmd_splits_compare)


def cmd_splits_compare(args: argparse.Namespace) -> int:
    from bench.commands._rule_splits import cmd_splits_compare as compare

    return compare(args)


# -- bench splits ------------------------------------------------------------------------------
def default_split_dir(cohort_name: str) -> Path:
    from bench.paths import splits_root

    return splits_root() / cohort_name


def cmd_splits_make(args: argparse.Namespace) -> int:
    from bench.commands._rule_splits import make_by_rule
    from bench.data.synth.latents import EXTERNAL_SITE
    from bench.fingerprint import sidecar_of
    from bench.split_rules import cohort_dataset, find_rule
    from bench.splits import make_split, write_split

    cohort = cohort_from(args)
    subjects = cohort.subjects()
    populations = args.population or (sorted(subjects["population"].dropna().unique())
                                      if "population" in subjects.columns else ["all"])
    out_dir = Path(args.out) if args.out else default_split_dir(cohort.name)
    _refuse_overwrite([out_dir / f"{pop}.tsv" for pop in populations], args.force)
    external = args.external_site
    if external is None and cohort.name.startswith("synth"):
        external = EXTERNAL_SITE
    dataset = None if args.no_rule else cohort_dataset(cohort.table)
    for pop in populations:
        subj = subjects if pop == "all" else subjects[subjects["population"] == pop]
        label = args.label or SPLIT_LABELS.get(pop)
        if args.label is None and label not in subj.columns:  # e.g. IXI has no diagnosis, BraTS no marker
            label = None
        rule = find_rule(dataset, pop)
        if rule is not None:
            make_by_rule(args, cohort, rule, subj, label, out_dir / f"{pop}.tsv")
            continue
        held_out = external if external in set(subj["site"]) else None
        if external and held_out is None:
            console.print(f"note: {pop} has no subject at site {external}; no external split")
        val_frac, test_frac = SPLIT_FRACTIONS.get(pop, DEFAULT_FRACTIONS)
        df = make_split(subj, seed=args.split_seed, label=label, external_site=held_out,
                        val_frac=val_frac, test_frac=test_frac)
        path = out_dir / f"{pop}.tsv"
        digest = write_split(df, path)
        sidecar_of(path).unlink(missing_ok=True)  # a rule's fingerprint does not describe this split
        counts = df["split"].value_counts().to_dict()
        console.print(f"wrote {path} (sha256 {digest[:12]}): " +
                      ", ".join(f"{k} {counts.get(k, 0)}" for k in ("train", "val", "test", "external")))
    print_label_digests(cohort, out_dir)
    if not args.no_power:
        print_power(args, cohort, out_dir)
    return 0


def print_label_digests(cohort, split_dir: Path) -> None:
    """Write the label digests of the split files just made (what verify checks records against)."""
    from bench.label_digests import write_cohort_sidecars
    from bench.paths import display_path

    for path, n_tasks in write_cohort_sidecars(cohort, split_dir):
        console.print(f"wrote {display_path(path)} ({n_tasks} task versions)", highlight=False)


def cmd_splits_labels(args: argparse.Namespace) -> int:
    """Write or check the label digests of a cohort's split files. --check computes them in a
    temporary folder and compares: a committed digest that the cohort does not give
    means the records were checked against labels this cohort does not have."""
    import json
    import shutil
    import tempfile

    from bench.label_digests import labels_path, write_cohort_sidecars
    from bench.paths import display_path
    from bench.splits import sidecar_path

    cohort = cohort_from(args)
    split_dir = Path(args.dir) if args.dir else default_split_dir(cohort.name)
    if not sorted(split_dir.glob("*.tsv")):
        raise MribenchError(f"no split files under {split_dir}; run `bench splits make` first")
    if not args.check:
        print_label_digests(cohort, split_dir)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for tsv in split_dir.glob("*.tsv"):
            for f in (tsv, sidecar_path(tsv)):
                shutil.copy2(f, Path(tmp) / f.name)
        fresh = write_cohort_sidecars(cohort, Path(tmp))
        bad = 0
        for path, _ in fresh:
            committed = labels_path(split_dir / path.name.replace(".labels.json", ".tsv"))
            same = committed.is_file() and json.loads(committed.read_text()) == json.loads(path.read_text())
            bad += not same
            console.print(f"ok {display_path(committed)}" if same else f"[red]differs[/red] {display_path(committed)}: the cohort gives other "
                          "examples or labels (rewrite with `bench splits labels` only if the split is new)",
                          highlight=False)
    return 1 if bad else 0


def add_power_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-power", action="store_true", help="skip the per-task power table")
    p.add_argument("--power-sims", type=positive_int, default=None,
                   help="simulated replicates per AUC gap of the power table (default 400: Monte-Carlo "
                        "error of the power <= 0.02)")


def print_power(args: argparse.Namespace, cohort, split_dir: Path) -> None:
    """Per task of this cohort: test / external counts and the smallest AUC gap the paired
    bootstrap detects at 80 % power on the test split (bench.power states the model)."""
    from bench.power import N_SIM, task_power
    from bench.runner import split_file
    from bench.tasks import list_tasks

    rows = []
    kind = "synth" if cohort.name.startswith("synth") else cohort.name
    for name, spec in list_tasks().items():
        if spec.cohort != kind:
            continue
        path = split_file(spec, split_dir.name, split_dir.parent)  # split_dir holds this cohort's files
        if not path.is_file():
            continue
        try:
            p = task_power(spec, cohort, path, n_sim=args.power_sims or N_SIM)
        except MribenchError as e:
            err_console.print(f"note: {name}: {e}", highlight=False)
            continue
        c = p.counts
        gap = "-" if p.gap is None else p.summary
        rows.append([name, c.test_examples, c.test_subjects, c.external_examples, c.external_subjects,
                     ", ".join(f"{k}: {v}" for k, v in c.test_classes.items()),
                     gap + (f" ({p.proxy})" if p.proxy and p.gap is not None else "")])
    print_listing(args, f"power of the test splits ({split_dir})",
                   ["task", "test examples", "test subjects", "external examples", "external subjects",
                    "test classes", "AUC gap at 80 % power"], rows)


def _refuse_overwrite(paths: list[Path], force: bool) -> None:
    """Split files are fixed once made (records carry their hashes): replacing one takes --force."""
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise MribenchError(f"{existing[0]} exists" + (f" (and {len(existing) - 1} more)" if len(existing) > 1 else "")
                            + "; records are checked against existing split files: pass --force to overwrite, "
                              "or --out DIR to write elsewhere")


def cmd_splits_check(args: argparse.Namespace) -> int:
    from bench.splits import check_split

    files = [Path(f) for f in args.files]
    cohort = cohort_from(args)
    if not files:
        files = sorted(default_split_dir(cohort.name).glob("*.tsv"))
        if not files:
            raise MribenchError(f"no split files under {default_split_dir(cohort.name)}; "
                                "run `bench splits make` first")
    subjects = cohort.subjects()["participant_id"].tolist()
    n_bad = 0
    for f in files:
        problems = check_split(f, subjects)
        n_bad += bool(problems)
        for p in problems:
            err_console.print(f"[red]error[/red] {p}", highlight=False)
        if not problems:
            console.print(f"ok {f}")
    return 1 if n_bad else 0
