"""Number and label formatting shared by the renderers, so every output prints a value alike."""

from __future__ import annotations

import re

from bench.leaderboard.ranking import Comparison, Ranked

#: Markdown's inline metacharacters in text a record supplies: backslash, code spans, ``*``
#: emphasis, link and image brackets, strikethrough, headings, and ``@`` (e-mail autolinks).
#: ``_`` is left alone: it is common in names (``simclr_vit3d``) and inside a word is not emphasis.
_MD_SPECIAL = re.compile(r"([\\`*\[\]~!#@])")
#: Characters a spreadsheet reads as the start of a formula (OWASP's list, with line breaks).
_CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r", "\n")

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


#: The mark of a robustness score whose clean score is at chance (explained by :func:`chance_note`).
CHANCE_MARK = "†"


def robustness_score(row) -> str:
    """A robustness row's mean score / clean, marked when its clean score is at chance."""
    return num(row.robustness_score) + (f" {CHANCE_MARK}" if row.clean_at_chance else "")


def chance_note(rows) -> str | None:
    """The footnote under a robustness table that marks a row (:func:`robustness_score`), else None."""
    marked = next((r for r in rows if r.clean_at_chance), None)
    if marked is None:
        return None
    return (f"{CHANCE_MARK} the clean score's 95 % CI includes chance ({marked.chance:g}): the encoder is at "
            "chance with or without artefacts, so its ratio to clean says nothing about robustness; listed last.")


def entry_score(entry, digits: int = 3) -> str:
    """An entry's ``score (low-high)`` for a table cell; the score alone when it has no CI, ``-``
    when there is no entry or no score."""
    return "-" if entry is None else num_with_ci(entry.score, *entry.ci, digits)


def score_with_ci(r: Ranked, digits: int = 3) -> str:
    e = r.entry
    if e.score is None:
        return "-"
    low, high = e.ci
    return f"{e.score:.{digits}f} ({ci(low, high, digits)})"


def p_value(p: float | None, n_boot: int) -> str:
    """``= p`` or ``< floor``: a bootstrap p-value is floored at the resolution the replicates allow."""
    if p is None:
        return "-"
    floor = 2.0 / n_boot
    return f"< {floor:.2g}" if p < floor else f"= {p:.2g}"


def comparison(c: Comparison | None, n_boot: int) -> str:
    """How an entry compares with the best one: the paired p-value, or which fallback decided."""
    if c is None:
        return "best"
    if c.method == "paired_bootstrap":
        return f"p {p_value(c.p_value, n_boot)}"
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


def rank(r: Ranked) -> str:
    return "-" if r.rank is None else str(r.rank)


def short_flags(r: Ranked) -> str:
    flags = (["pretraining overlap"] if r.entry.overlap else []) + \
        ([f"submitted ({md(r.entry.submitted)})"] if r.entry.submitted else [])
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
    tab or a line break gets a leading apostrophe (shown as text, OWASP's advice); numbers and
    booleans are written as they are, so they stay numbers."""
    if isinstance(value, str) and value.startswith(_CSV_FORMULA):
        return "'" + value
    return value
