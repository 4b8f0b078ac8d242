"""The README's SSL-against-init blocks: the committed checkpoint on the quick-start task, the
linear-probe table on the three headline tasks, what the paired tests there show, and the
fine-tuned pairs at 100 % of the labels.

All numbers are the board's entries (:mod:`bench.doctables.sources`): the linear probe at 100 %
is the ``linear_probe`` record (the board's table; the ``fractions`` record at 100 % holds the same
fit), 10 % is the ``fractions`` record at ``fraction=0.1``, fine-tuning is the ``finetune`` record.
Scarce-label fine-tuning (``finetune_fractions``) records are not committed, so no block shows them.
"""

from __future__ import annotations

from bench.doctables.cells import score, score_ci, versus, versus_text
from bench.doctables.settings import cached_at_setting
from bench.doctables.sources import Sources
from bench.doctables.verdicts import better_on_at_least, bullets

#: (task, column head, decimals): the headline tasks in the README's order.
TASKS = (("ad_diagnosis", "AD diagnosis, AUC", 3), ("brain_age", "brain age, MAE (y)", 2),
         ("conversion", "MCI conversion, AUC", 3))
#: Short task names for sentences.
SHORT = {"ad_diagnosis": "AD diagnosis", "brain_age": "brain age", "conversion": "MCI conversion"}
#: The reference SSL encoders, each with its seeded init ``NAME@init``, in the README's order.
SSL = ("dino2d", "simclr3d", "mae3d", "temporal", "simclr_vit3d")
INIT = "@init"


def _probe_cell(src: Sources, encoder: str, task: str, digits: int) -> str:
    full = src.entry(encoder, task, "linear_probe")
    fractions = src.entry(encoder, task, "fractions")
    tenth = cached_at_setting(fractions, "fraction=0.1") if fractions is not None else None
    return f"{score(tenth, digits)} / {score_ci(full, digits)}"


def _vs_init_cell(src: Sources, encoder: str) -> str:
    return " / ".join(versus_text(src.entry(encoder, t, "linear_probe"), src.entry(encoder + INIT, t, "linear_probe"))
                      for t, _, _ in TASKS)


def linear_probe_table(src: Sources) -> str:
    """Encoders x headline tasks: 10 % / 100 % (CI at 100 %), and each SSL encoder against its init."""
    rows = [("oracle", " (ceiling)"), ("volumes", ""), ("random", " (floor)")]
    rows += [(name, "") for s in SSL for name in (s + INIT, s)]
    head = "| encoder | " + " | ".join(h for _, h, _ in TASKS) + " | vs init at 100 %: AD / age / conversion |"
    lines = [head, "|---" * (len(TASKS) + 2) + "|"]
    for name, note in rows:
        cells = [_probe_cell(src, name, t, d) for t, _, d in TASKS]
        vs = _vs_init_cell(src, name) if name in SSL else ""
        lines.append(f"| `{name}`{note} | " + " | ".join(cells) + f" | {vs} |")
    tuned = [f"- / {score_ci(src.entry('supervised', t, 'finetune'), d)}" for t, _, d in TASKS]
    lines.append("| `supervised` (fine-tuned) | " + " | ".join(tuned) + " | |")
    return "\n".join(lines) + (
        "\n\nCells: score at 10 % / at 100 % of the training subjects (95 % CI at 100 %, the board's interval). "
        "`vs init`: the board's paired test of the encoder against its own `@init` over the same test subjects at "
        "100 %, **unadjusted** p (+ = pretrained better, * = better at p < 0.05). `supervised` is fine-tuned "
        "(`finetune` record); its 10 % run is not a committed record, hence `-`.")


def _probe_tests(src: Sources) -> list[tuple[str, str, object]]:
    return [(s, SHORT[t], versus(src.entry(s, t, "linear_probe"), src.entry(s + INIT, t, "linear_probe")))
            for s in SSL for t, _, _ in TASKS]


def ssl_vs_init_verdict(src: Sources) -> str:
    """What the ``vs init`` column shows, encoder by encoder, and who passes the two-of-three bar."""
    tests = _probe_tests(src)
    two = better_on_at_least(tests, 2)
    return "\n".join([
        f"Each pretrained encoder against its own init, linear probe at 100 % of the training subjects: "
        f"{len(tests)} paired tests over the same test subjects, their p-values Holm-adjusted together (the "
        "column above shows them unadjusted):", "",
        *bullets(tests, "its init"), "",
        "Better than its own init on at least two of the three tasks: "
        + (", ".join(f"`{n}`" for n in two) if two else "**none**") + "."])


#: The quick-start command's encoder, then what it is compared with.
QUICK = (("simclr3d", "the committed checkpoint"), ("random", "the floor"), ("simclr3d" + INIT, "its own init"))


def quickstart(src: Sources) -> str:
    """The quick-start command's record beside the floor and its own init, with the board's test."""
    entries = {name: src.entry(name, "conversion", "linear_probe") for name, _ in QUICK}
    main = entries["simclr3d"]
    lines = ["| encoder | conversion AUC (95 % CI) | test subjects | `simclr3d` against it, unadjusted p |",
             "|---|---|---|---|"]
    verdicts = []
    for name, note in QUICK:
        e = entries[name]
        n = "-" if e is None or e.n_test_subjects is None else str(e.n_test_subjects)
        cell = "" if name == "simclr3d" else versus_text(main, e)
        lines.append(f"| `{name}` ({note}) | {score_ci(e, 3)} | {n} | {cell} |")
        v = None if name == "simclr3d" else versus(main, e)
        if v is not None:
            word = "not told apart from" if not v.significant else ("better than" if v.a_better else "worse than")
            verdicts.append(f"{word} `{name}`")
    return "\n".join(lines) + (
        "\n\nThe test is the board's paired bootstrap over the same test subjects (`bench leaderboard --task "
        "conversion`), p unadjusted (+ = `simclr3d` higher). At p < 0.05 the committed checkpoint is "
        + " and ".join(verdicts) + " on this task.")


def finetune_table(src: Sources) -> str:
    """The fine-tuned pairs at 100 %: each SSL encoder fine-tuned against its init fine-tuned (the
    same network from scratch) and against ``supervised``, with what the tests show."""
    tuned = [s for s in SSL if src.entry(s, TASKS[0][0], "finetune") is not None]
    lines = ["| task | encoder | fine-tuned | its `@init` fine-tuned | `supervised` | vs its init | vs `supervised` |",
             "|---|---|---|---|---|---|---|"]
    own, scratch = [], []
    for task, head, digits in TASKS:
        sup = src.entry("supervised", task, "finetune")
        for s in tuned:
            e, init = src.entry(s, task, "finetune"), src.entry(s + INIT, task, "finetune")
            lines.append(f"| {head} | `{s}` | {score_ci(e, digits)} | {score_ci(init, digits)} | "
                         f"{score_ci(sup, digits)} | {versus_text(e, init)} | {versus_text(e, sup)} |")
            own.append((s, SHORT[task], versus(e, init)))
            scratch.append((s, SHORT[task], versus(e, sup)))
    own.sort(key=lambda t: SSL.index(t[0]))
    scratch.sort(key=lambda t: SSL.index(t[0]))
    return "\n".join(lines + [
        "", "`finetune` records, 3 seeds, test split; the board's interval and paired test, **unadjusted** p "
        "(+ = the SSL encoder better, * = better at unadjusted p < 0.05). Fine-tuned SSL encoder against the "
        "same network fine-tuned from its init (Holm over these tests):", "", *bullets(own, "its init"), "",
        "and against `supervised` (a different network, MONAI's ResNet-10, trained from scratch; Holm over these "
        "tests):", "",
        *bullets(scratch, "`supervised`")])
