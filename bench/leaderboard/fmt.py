"""Number and label formatting shared by the renderers, so every output prints a value alike."""

from __future__ import annotations

from bench.leaderboard.ranking import Comparison, Ranked

PROTOCOL_LABELS = {"linear_probe": "linear probe", "finetune": "fine-tune", "fractions": "fractions (100 %)",
                   "few_shot": "few-shot (k = 10)", "robustness": "robustness (clean)"}


def protocol_label(protocol: str) -> str:
    """The protocol with its headline setting, since that is what the table's score is."""
    return PROTOCOL_LABELS.get(protocol, protocol.replace("_", " "))


def num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ci(low: float | None, high: float | None, digits: int = 3) -> str:
    if low is None or high is None:
        return "CI n/a"
    return f"{low:.{digits}f}-{high:.{digits}f}"


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


def rank(r: Ranked) -> str:
    return "-" if r.rank is None else str(r.rank)


def short_flags(r: Ranked) -> str:
    return "pretraining overlap" if r.entry.overlap else ""
