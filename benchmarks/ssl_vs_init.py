"""Does pretraining help? Each SSL encoder against its own random initialisation (``NAME@init``)
and the reference rows, at chosen label fractions, with paired tests over test subjects.

Reads records written by ``bench run`` (nothing is recomputed but the paired test, which is the
leaderboard's own :func:`bench.leaderboard.ranking.compare` on the chosen setting's predictions)::

    bench run --encoder simclr3d --weights FILE --encoder simclr3d@init ... --encoder random \\
        --encoder volumes --encoder oracle --task ad_diagnosis --task brain_age --task conversion \\
        --protocol fractions --results DIR
    python benchmarks/ssl_vs_init.py DIR [--split test|external] [--markdown FILE]

Tables: encoder x (task, fraction) scores with 95 % CIs; for every SSL encoder the
paired-bootstrap p-value of "pretrained beats its init" (``fractions`` probe records) per task and
fraction; and, where ``finetune_fractions`` records are given, each fine-tuned SSL encoder
against ``supervised`` (and against its own ``NAME@init`` fine-tuned: the same network trained
from scratch) on the same subjects (the source papers' claim that
pretraining helps when labels are scarce)::

    bench run --encoder supervised --encoder simclr3d --encoder temporal --task ad_diagnosis \\
        --task conversion --protocol finetune_fractions --results DIR
    python benchmarks/ssl_vs_init.py DIR --setting fraction=0.01 --setting fraction=0.1 \\
        --setting fraction=0.2 --setting fraction=1

Records score test and external only, so nothing here chooses a recipe: recipes are chosen by
pretext loss before this table is made, once.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from bench.leaderboard import fmt
from bench.leaderboard.entries import Entry, load_entries
from bench.leaderboard.ranking import compare

INIT_SUFFIX = "@init"
BOOT = 1000  # replicates of the paired test


def at_setting(entry: Entry, setting: str, split: str) -> Entry | None:
    """``entry`` re-headlined on ``setting`` and ``split``: the leaderboard's score, CI and paired
    test then read that setting's per-seed results; None when the record has no such setting."""
    r = entry.record
    summary = r.summary.get(f"{setting}|{split}")
    if summary is None or r.main_score_name not in summary:
        return None
    scores = [s.model_copy(update={"split": "test"}) for s in r.scores if s.setting == setting and s.split == split]
    predictions = [{**p, "split": "test"} for p in r.predictions or [] if p.get("setting") == setting
                   and p.get("split") == split]
    record = r.model_copy(update={"headline_setting": setting, "main_score": summary[r.main_score_name]["mean"],
                                  "scores": scores, "predictions": predictions})
    return replace(entry, record=record)


def _p(pretrained: Entry | None, init: Entry | None) -> str:
    if pretrained is None or init is None:
        return "-"
    c = compare(pretrained, init, n_boot=BOOT)
    if c.p_value is None:
        return c.method
    better = c.delta is not None and c.delta > 0
    # floored at what the bootstrap resolves (2 / replicates), as the leaderboard prints it
    return f"{'+' if better else '-'} p {fmt.p_value(c.p_value, BOOT)}" + (" *" if better and c.p_value < 0.05 else "")


def _setting_label(setting: str) -> str:
    return f"{100 * float(setting.split('=')[1]):g} %" if setting.startswith("fraction=") else setting


FINETUNED = " (fine-tuned)"


def _row_label(entry: Entry) -> str:
    """Probe rows are the encoder's name; trained-end-to-end rows say so."""
    return entry.encoder + (FINETUNED if entry.protocol in ("finetune", "finetune_fractions") else "")


def collect(results: list[Path], settings: list[str], split: str) -> dict[tuple[str, str], dict[str, Entry]]:
    """(task, setting) -> row label -> the entry re-headlined on that setting. A ``finetune`` record
    (one setting, ``full``) stands for 100 % of the labels."""
    found: dict[tuple[str, str], dict[str, Entry]] = defaultdict(dict)
    for folder in results:
        entries, _ = load_entries(folder)
        for e in entries:
            if e.protocol not in ("fractions", "finetune", "finetune_fractions"):
                continue
            for wanted in settings:
                chosen = "full" if e.protocol == "finetune" and wanted == "fraction=1" else wanted
                shown = at_setting(e, chosen, split)
                if shown is not None:
                    found[(f"{e.task} v{e.record.task_version}", wanted)].setdefault(_row_label(e), shown)
    return found


def _comparison(found, columns, pairs: list[tuple[str, str, str]], title: str, head: str) -> list[str]:
    """One row per (row name, candidate, reference): the paired test of candidate vs reference."""
    if not pairs:
        return []
    lines = ["", title, "", head, "|---|" + "---|" * len(columns)]
    return lines + [f"| {name} | " + " | ".join(_p(found[c].get(a), found[c].get(b)) for c in columns) + " |"
                    for name, a, b in pairs]


def tables(results: list[Path], settings: list[str], split: str) -> str:
    """The score table, pretrained-vs-init (probe) and fine-tuned-vs-supervised, in markdown."""
    found = collect(results, settings, split)
    rows = sorted({r for row in found.values() for r in row})
    ssl = sorted({r[: -len(INIT_SUFFIX)] for r in rows if r.endswith(INIT_SUFFIX)})
    order = [r for r in ("random",) if r in rows] + [x for s in ssl for x in (f"{s}{INIT_SUFFIX}", s) if x in rows]
    order += [r for r in ("volumes", "oracle") if r in rows]
    order += sorted(r for r in rows if r.endswith(FINETUNED) and r not in order)
    order += [r for r in rows if r not in order]
    columns = [(t, s) for t in sorted({t for t, _ in found}) for s in settings if (t, s) in found]
    head = "| encoder | " + " | ".join(f"{t} {_setting_label(s)}" for t, s in columns) + " |"
    lines = [f"Scores ({split} split, mean of seeds, 95 % CI over subjects):", "", head,
             "|---|" + "---|" * len(columns)]
    lines += [f"| {r} | " + " | ".join(fmt.entry_score(found[c].get(r)) for c in columns) + " |" for r in order]
    lines += _comparison(found, columns, [(s, s, s + INIT_SUFFIX) for s in ssl],
                         f"Pretrained vs its own init, linear probe (paired bootstrap over {split} subjects; "
                         "+ = pretrained better, * = p < 0.05):", head)
    tuned = sorted(r for r in rows if r.endswith(FINETUNED) and not r.startswith("supervised"))
    lines += _comparison(found, columns, [(r, r, "supervised" + FINETUNED) for r in tuned if "supervised" + FINETUNED in rows],
                         f"Fine-tuned SSL vs supervised from scratch (paired bootstrap over {split} subjects; "
                         "+ = SSL better, * = p < 0.05):", head)
    # the same architecture trained from scratch: NAME@init fine-tuned on the same subjects
    own = [(r, r, r[: -len(FINETUNED)] + INIT_SUFFIX + FINETUNED) for r in tuned
           if r[: -len(FINETUNED)] + INIT_SUFFIX + FINETUNED in rows]
    lines += _comparison(found, columns, own,
                         f"Fine-tuned SSL vs the same network fine-tuned from its init (trained from scratch; "
                         f"paired bootstrap over {split} subjects; + = pretraining better, * = p < 0.05):", head)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="results folder(s) written by bench run")
    parser.add_argument("--setting", action="append", default=None,
                        help="fractions setting to show (repeatable; default fraction=0.1 and fraction=1)")
    parser.add_argument("--split", choices=("test", "external"), default="test")
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    text = tables(args.results, args.setting or ["fraction=0.1", "fraction=1"], args.split)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
