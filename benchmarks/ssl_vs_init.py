"""Does pretraining help? Each SSL encoder against its own random initialisation (``NAME@init``)
and the reference rows, at chosen label fractions, with paired tests over test subjects.

Reads records written by ``bench run`` (nothing is recomputed but the paired test, which is the
leaderboard's own :func:`bench.leaderboard.ranking.compare` on the chosen setting's predictions)::

    bench run --encoder simclr3d --weights FILE --encoder simclr3d@init ... --encoder random \\
        --encoder volumes --encoder oracle --task ad_diagnosis --task brain_age --task conversion \\
        --protocol fractions --results DIR
    python benchmarks/ssl_vs_init.py DIR [--split test|external] [--markdown FILE]

Two tables come out: encoder x (task, fraction) scores with 95 % CIs, and for every SSL encoder
the paired-bootstrap p-value of "pretrained beats its init" per task and fraction. Records score
test and external only, so nothing here chooses a recipe: recipes are chosen by pretext loss
before this table is made, once.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from bench.leaderboard.entries import Entry, load_entries
from bench.leaderboard.ranking import compare

REFERENCES = ("random", "volumes", "supervised", "oracle")
INIT_SUFFIX = "@init"


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
    return Entry(record, entry.source)


def _cell(entry: Entry | None) -> str:
    if entry is None or entry.score is None:
        return "-"
    lo, hi = entry.ci
    return f"{entry.score:.3f} ({lo:.3f}-{hi:.3f})" if lo is not None else f"{entry.score:.3f}"


def _p(pretrained: Entry | None, init: Entry | None) -> str:
    if pretrained is None or init is None:
        return "-"
    c = compare(pretrained, init)
    if c.p_value is None:
        return c.method
    better = c.delta is not None and c.delta > 0
    shown = "p<0.001" if c.p_value < 0.001 else f"p={c.p_value:.3f}"
    return f"{'+' if better else '-'} {shown}" + (" *" if better and c.p_value < 0.05 else "")


def _setting_label(setting: str) -> str:
    return f"{100 * float(setting.split('=')[1]):g} %" if setting.startswith("fraction=") else setting


def tables(results: list[Path], settings: list[str], split: str) -> str:
    """The score table and the pretrained-vs-init table, in markdown."""
    found: dict[tuple[str, str], dict[str, Entry]] = defaultdict(dict)  # (task, setting) -> encoder -> entry
    tasks: set[str] = set()
    for folder in results:
        entries, _ = load_entries(folder)
        for e in entries:
            task = f"{e.task} v{e.record.task_version}"
            tasks.add(task)
            for setting in settings:
                # a fine-tune record has one setting ("full"): it stands for 100 % of the labels
                chosen = "full" if e.protocol == "finetune" and setting == "fraction=1" else setting
                if e.protocol in ("fractions", "finetune"):
                    shown = at_setting(e, chosen, split)
                    if shown is not None:
                        found[(task, setting)][e.encoder] = shown
    encoders = sorted({enc for row in found.values() for enc in row})
    ssl = sorted({enc[: -len(INIT_SUFFIX)] for enc in encoders if enc.endswith(INIT_SUFFIX)})
    order = [e for e in ("random",) if e in encoders] + [x for s in ssl for x in (f"{s}{INIT_SUFFIX}", s)
                                                          if x in encoders]
    order += [e for e in REFERENCES[1:] if e in encoders] + [e for e in encoders if e not in order
                                                            and e not in REFERENCES]
    columns = [(t, s) for t in sorted(tasks) for s in settings if (t, s) in found]
    head = "| encoder | " + " | ".join(f"{t} {_setting_label(s)}" for t, s in columns) + " |"
    lines = [f"Scores ({split} split, mean of seeds, 95 % CI over subjects):", "", head,
             "|---|" + "---|" * len(columns)]
    lines += [f"| {enc} | " + " | ".join(_cell(found[c].get(enc)) for c in columns) + " |" for enc in order]
    lines += ["", f"Pretrained vs its own init (paired bootstrap over {split} subjects; + = pretrained better, "
              "* = p < 0.05):", "", head, "|---|" + "---|" * len(columns)]
    lines += [f"| {s} | " + " | ".join(_p(found[c].get(s), found[c].get(s + INIT_SUFFIX)) for c in columns) + " |"
              for s in ssl]
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
