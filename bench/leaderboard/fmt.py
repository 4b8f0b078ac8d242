"""Number and label formatting shared by the renderers, so every output prints a value alike."""

from __future__ import annotations

import re

from bench.leaderboard.ranking import Comparison, Ranked

#: Markdown's inline metacharacters in text a record supplies: backslash, code spans, ``*``
#: emphasis, link and image brackets, strikethrough, headings, and ``@`` (e-mail autolinks).
#: ``_`` is left alone: it is common in names (``simclr_vit3d``) and inside a word is not emphasis.
_MD_SPECIAL = re.compile(r"([\\`*\[\]~!#@])")
#: Characters a spreadsheet reads as the start of a formula (OWASP's list, with line breaks), and
#: what a spreadsheet skips or folds into one of them first: a leading space (`` =1+1`` is a
#: formula in some), and the full-width forms ``＝ ＋ － ＠`` that NFKC-folding spreadsheets read as
#: ``= + - @``.
_CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r", "\n", " ", "\u00a0", "\u3000", "\uff1d", "\uff0b", "\uff0d",
                "\uff20")

def protocol_label(protocol: str) -> str:
    """The protocol with its headline setting, since that is what the table's score is (its
    registered ``label``)."""
    from bench.protocols import PROTOCOLS

    return PROTOCOLS[protocol].label if protocol in PROTOCOLS else protocol.replace("_", " ")


def num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ci(low: float | None, high: float | None, digits: int = 3) -> str:
    if low is None or high is None:
        return "CI n/a"
    return f"{low:.{digits}f}-{high:.{digits}f}"


def num_with_ci(value: float | None, low: float | None, high: float | None, digits: int = 3) -> str:
    """``value (low-high)``; the value alone without a CI."""
    if value is None:
        return "-"
    return f"{value:.{digits}f}" + (f" ({ci(low, high, digits)})" if low is not None and high is not None else "")


def robustness_score(row) -> str:
    """A robustness row's chance-corrected ratio, or why there is none."""
    if row.robustness_score is None:
        return "n/a (clean at chance)" if row.clean_at_chance else "-"
    return num(row.robustness_score)


def chance_note(rows) -> str | None:
    """The sentence under a robustness table: what chance is and what "n/a" means; None without rows."""
    if not rows:
        return None
    first = rows[0]
    level = "-" if first.chance is None else f"{first.chance:.3g}"
    source = ("the error of predicting the test labels' mean" if first.chance_source.startswith("mean")
              else "the metric's chance level")
    return (f"Chance-corrected: (score - chance) / (clean - chance), averaged over every artefact and severity; "
            f"1 = unaffected, 0 = down to chance. Chance = {source} ({level}). n/a: the clean score's 95 % "
            "interval includes chance, so there is no margin whose survival could be measured.")


def interval_text(entry, digits: int = 3) -> str:
    """An entry's interval as a cell shows it: ``low-high``, or "no variation" when it has no width
    (every resample scores the same, e.g. a perfect separation), or "CI n/a"."""
    low, high = entry.ci
    if low is None or high is None:
        return "CI n/a"
    if entry.zero_width:
        return f"no variation: every resample scores {low:.{digits}f}"
    return ci(low, high, digits)


def entry_score(entry, digits: int = 3) -> str:
    """An entry's ``score (interval)`` for a table cell; ``-`` when there is no entry or no score."""
    if entry is None or entry.score is None:
        return "-"
    low, high = entry.ci
    if low is None or high is None:
        return f"{entry.score:.{digits}f}"
    return f"{entry.score:.{digits}f} ({interval_text(entry, digits)})"


def score_with_ci(r: Ranked, digits: int = 3) -> str:
    """A ranked row's score cell; "n/a (...)" for an entry the task does not apply to."""
    if r.status:
        return r.status
    return entry_score(r.entry, digits)


def seeds(entry) -> str:
    """What the seeds did: ``3, SD 1.37`` where they changed the fit (training noise is in the
    interval), ``3 identical`` where a deterministic head gave the same fit three times."""
    n = entry.seeds
    if n <= 1:
        return str(n)
    return f"{n}, SD {entry.seed_sd:.3g}" if entry.seeds_vary else f"{n} identical"


def p_value(p: float | None) -> str:
    """``= p`` to two significant digits, ``< 0.001`` below that (a Wald p-value is continuous; its
    precision is the bootstrap SE's, not worth more digits)."""
    if p is None:
        return "-"
    return "< 0.001" if p < 0.001 else f"= {p:.2g}"


def comparison(c: Comparison | None) -> str:
    """How an entry compares with the best one: the Holm-adjusted paired p-value, or the fallback."""
    if c is None:
        return "best"
    if c.method == "paired_bootstrap":
        return f"p {p_value(c.p_adjusted)}"
    if c.method == "ci_overlap":
        return "CIs apart" if c.separable else "CIs overlap"
    return "untestable"


def parameters(n: int | None) -> str:
    """A parameter count as people read it: ``11.2 M``, ``850 k``, ``12``; ``-`` when unknown."""
    if n is None:
        return "-"
    for scale, unit in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def drop(value: float | None, digits: int = 3) -> str:
    """A cross-cohort drop with its sign (positive: worse out of distribution)."""
    return "-" if value is None else f"{value:+.{digits}f}"


def drop_with_ci(value: float | None, interval: tuple[float, float] | None, digits: int = 3) -> str:
    """A cross-cohort drop with its sign and its 95 % interval."""
    if value is None:
        return "-"
    return drop(value, digits) + ("" if interval is None else f" ({interval[0]:+.{digits}f} to {interval[1]:+.{digits}f})")


def rank(r: Ranked) -> str:
    return "-" if r.rank is None else str(r.rank)


def held_rank(r) -> str | None:
    """Where more entries beat an entry (after Holm) than its rank says: its rank was held by a
    worse-scoring entry that nothing separates from the top (monotone ranks), so say how many."""
    beaten, rank = getattr(r, "beaten_by", ()), getattr(r, "rank", None)
    if rank is None or len(beaten) < rank:
        return None
    return f"beaten by {len(beaten)} after Holm (rank held by a worse-scoring entry)"


#: Flag of a row whose record keeps no per-example predictions (segmentation: Dice over voxel maps
#: the record does not hold), so verify could not recompute its score; any other kind is refused.
NOT_RECOMPUTED = "score not recomputed (no per-case predictions)"


def short_flags(r) -> str:
    flags = (["pretraining overlap"] if r.entry.overlap else []) + \
        ([f"submitted ({md(r.entry.submitted)})"] if r.entry.submitted else []) + \
        ([NOT_RECOMPUTED] if not r.entry.record.predictions else []) + \
        [f for f in [held_rank(r)] if f]
    return ", ".join(flags)


def md(text: object) -> str:
    """Text from a record (encoder, cohort, artefact names, refusal reasons) made inert in markdown:
    one line (control characters and line breaks become spaces), no HTML (``<``, ``>``, ``&`` as
    entities), no code span, emphasis, link or image (their characters backslash-escaped), and no
    bare-URL autolink (``://`` and ``www.`` broken by an escape). A table cell's ``|`` is escaped
    by the table writer, which every cell goes through."""
    line = " ".join(re.sub(r"[\x00-\x1f\x7f]", " ", str(text)).split())
    line = line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    line = _MD_SPECIAL.sub(r"\\\1", line)
    return line.replace("://", "\\://").replace("www.", "www\\.")


def csv_cell(value: object) -> object:
    """A CSV value that a spreadsheet cannot run: text starting with ``=``, ``+``, ``-``, ``@``, a
    tab, a line break, a space or a full-width ``＝ ＋ － ＠`` gets a leading apostrophe (shown as text, OWASP's advice); numbers and
    booleans are written as they are, so they stay numbers."""
    if isinstance(value, str) and value.startswith(_CSV_FORMULA):
        return "'" + value
    return value
