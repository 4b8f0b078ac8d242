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

Records score test and external only, so nothing here may choose a recipe: choose on the
validation split (``benchmarks/val_scores.py``) and make this table once. p-values are the board's
paired test, unadjusted. The committed board's version of these tables is rendered into README.md
by ``bench docs --write`` (:mod:`bench.doctables.ssl`).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from bench.doctables.cells import versus_text
from bench.doctables.settings import at_setting
from bench.leaderboard import fmt
from bench.leaderboard.entries import Entry, load_entries

INIT_SUFFIX = "@init"


def _p(pretrained: Entry | None, init: Entry | None) -> str:
    """The board's paired test of ``pretrained`` against ``init``, unadjusted, as the generated
    README tables print it (:func:`bench.doctables.cells.versus_text`)."""
    return versus_text(pretrained, init)


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
