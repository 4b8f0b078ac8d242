"""``bench splits make`` on a real release with a committed rule, and ``bench splits compare``.

Kept apart from :mod:`bench.commands.splits` because a rule-made split has what a stratified one
lacks: a fingerprint sidecar, a balance table instead of a stratification guarantee (a hash does
not balance labels, so the user must see the balance), and the rule's power target.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import pandas as pd

from bench.commands._args import console, err_console, print_listing
from bench.errors import MribenchError

#: Sites listed per split in the balance table (the rest are counted as "+N more").
_SITES_SHOWN = 4


def make_by_rule(args: argparse.Namespace, cohort, rule, subjects: pd.DataFrame, label: str | None,
                 path: Path) -> None:
    """Apply ``rule`` to the subjects present, write the split, its hash and its fingerprint sidecar
    (with each row's hashed id, which few-shot draws rank by), and print the balance per split with a
    warning where the test split is below the power target."""
    from bench.fingerprint import NOTICE, sidecar_of, write_sidecar
    from bench.paths import display_path
    from bench.split_rules import apply_rule, hashed_ids, subject_ids
    from bench.splits import write_split

    if args.external_site is not None:
        raise MribenchError(f"{display_path(rule.path)} fixes the external sites ({list(rule.external_sites)}); "
                            "drop --external-site, or pass --no-rule to stratify over the subjects present")
    ids = subject_ids(cohort.table, f"cohort {cohort.name}")
    table, hashed = apply_rule(rule, subjects, ids, label)
    digest = write_split(table, path)
    rows = hashed_ids(rule, ids.loc[table["participant_id"]])
    fp = write_sidecar(path, rule, hashed, digest, participants=rows)
    console.print(f"wrote {path} by rule {rule.name} (rule sha256 {rule.sha256[:12]}, split sha256 "
                  f"{digest[:12]})\nsplit fingerprint {fp}", highlight=False)
    console.print(f"wrote {sidecar_of(path)}: {NOTICE}", highlight=False)
    print_balance(args, path, subjects, table, label)
    warn_small(rule, table)


def print_balance(args: argparse.Namespace, path: Path, subjects: pd.DataFrame, table: pd.DataFrame,
                  label: str | None) -> None:
    """Label, site, age and sex per split: what a hash assignment does not balance by construction."""
    merged = table.merge(subjects, on="participant_id", how="left")
    rows = []
    for name, part in merged.groupby("split", sort=False):
        rows.append([name, len(part), _counts(part[label]) if label in part.columns else "-",
                     _counts(part["site"], _SITES_SHOWN), _age(part["age"]), _counts(part["sex"])])
    order = {"train": 0, "val": 1, "test": 2, "external": 3}
    rows.sort(key=lambda r: order.get(r[0], 9))
    print_listing(args, f"balance of {path.name}", ["split", "subjects", label or "label", "sites", "age", "sex"], rows)


def _counts(values: pd.Series, top: int | None = None) -> str:
    counts = Counter(values.map(lambda v: str(v) if pd.notna(v) else "n/a"))
    shown = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    more = len(shown) - top if top is not None and len(shown) > top else 0
    text = ", ".join(f"{k}: {n}" for k, n in shown[:top])
    return text + (f" (+{more} more)" if more else "")


def _age(values: pd.Series) -> str:
    age = pd.to_numeric(values, errors="coerce")
    if age.notna().sum() == 0:
        return "n/a"
    missing = int(age.isna().sum())
    return f"{age.mean():.1f} +- {age.std(ddof=0):.1f}" + (f" ({missing} n/a)" if missing else "")


def warn_small(rule, table: pd.DataFrame) -> None:
    """A warning where the test split holds fewer subjects than the rule's power target, or a split
    with a positive fraction is empty (tasks then have nothing to tune or to score on)."""
    counts = table["split"].value_counts()
    for name, frac in zip(("train", "val", "test"), rule.fractions):
        if frac > 0 and not counts.get(name, 0):
            err_console.print(f"[yellow]warning:[/yellow] {rule.name}: the {name} split is empty", highlight=False)
    n_test = int(counts.get("test", 0))
    if 0 < n_test < rule.min_test_subjects:
        err_console.print(f"[yellow]warning:[/yellow] {rule.name}: {n_test} test subjects, fewer than the "
                          f"{rule.min_test_subjects} of the rule's power target; differences between encoders "
                          "will be hard to tell from noise", highlight=False)


# -- bench splits compare ------------------------------------------------------------------------
def cmd_splits_compare(args: argparse.Namespace) -> int:
    """Compare the local rule-made split with a fingerprint, a record, or another group's sidecar."""
    from bench.fingerprint import compare, fingerprint_of_target, read_sidecar, sidecar_of
    from bench.paths import splits_root

    there_fp, there, record_split = fingerprint_of_target(args.target)
    split = Path(args.split) if args.split else (splits_root().parent / record_split if record_split else None)
    if split is None:
        raise MribenchError("say which local split to compare with: --split splits/<cohort>/<population>.tsv")
    local_path = sidecar_of(split)
    if not local_path.is_file():
        raise MribenchError(f"{local_path} not found: {split.name} was not made by a split rule here; "
                            "run `bench splits make` on the imported cohort")
    here = read_sidecar(local_path)
    console.print(f"here  {here['fingerprint']} ({split})\nthere {there_fp}", highlight=False)
    if there is not None:
        console.print(compare(here["subjects"], there).sentence(), highlight=False)
    elif there_fp == here["fingerprint"]:
        console.print(f"same subjects in the same splits ({here['n_subjects']} subjects)", highlight=False)
    else:
        console.print("the fingerprints differ: other subjects, or other splits. A fingerprint cannot say how "
                      f"many: compare with the other group's {local_path.name} (hashed ids, data under the "
                      "release's use agreement: exchange it only as that allows)", highlight=False)
    return 0 if there_fp == here["fingerprint"] else 1
