"""Does the number beat a network that learned nothing? Each result against its floors.

A score alone does not say whether pretraining helped: a random network's features already carry
intensity and size, and an encoder's own initialisation (``NAME@init``: the architecture with the
weights its recipe starts from) is the floor its pretraining must clear. After ``bench run``'s
results, each is compared with the records of those floors on the same task version, protocol and
cohort in the results folder, by the board's own test (:func:`bench.leaderboard.ranking.compare`,
the paired bootstrap over test subjects, unadjusted), so the command line and the board never
disagree. A floor with no record there is said in one line, with the command that makes it.
"""

from __future__ import annotations

from pathlib import Path

#: The floor every encoder is compared with; ``NAME@init`` is the other, where NAME has a recipe.
RANDOM = "random"


def floor_names(encoder: str, registered: set[str]) -> list[str]:
    """``random`` and the encoder's own ``@init`` where one is registered, never the encoder itself."""
    base = encoder.removesuffix("@init")
    names = [RANDOM] + ([f"{base}@init"] if f"{base}@init" in registered else [])
    return [n for n in names if n != encoder]


def verdict(comparison) -> str:
    """``+0.031, p = 0.63 (not separated)``: the difference (positive: the result is better, whichever
    way the metric points) and the board's verdict on it."""
    if comparison.delta is None:
        return "cannot be compared (no score)"
    delta = f"{comparison.delta:+.3f}"
    # unadjusted: Holm can only raise a p, so "not separated" holds on the board too; "separated"
    # may not survive the board's adjustment over its table's pairs, and says so
    separated = "separated before the board's Holm adjustment" if comparison.separable else "not separated"
    if comparison.method == "paired_bootstrap":
        p = comparison.p_value
        p_text = "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"
        return f"{delta}, {p_text} ({separated})"
    if comparison.method == "ci_overlap":  # no shared predictions: the board compares the intervals
        return f"{delta}, 95% intervals {'apart' if comparison.separable else 'overlap'} ({separated})"
    return f"{delta}, untestable (not separated)"


def _entry(path: Path):
    """The verified record at ``path`` as the board reads it, else the reason it is not one."""
    from bench.leaderboard.entries import Entry
    from bench.leaderboard.verify import verify_path

    if not path.is_file():
        return None, "no record"
    found = verify_path(path)
    if not found.ok:
        return None, f"its record does not verify ({found.reason})"
    return Entry(found.record, str(path)), None


def _versus(entry, floor: str, folder: Path) -> tuple[str | None, str | None]:
    """(compared text, missing text): one of the two is None."""
    from bench.leaderboard.ranking import compare
    from bench.results import record_path

    record = entry.record
    path = record_path(folder, floor, record.task, record.task_version, record.protocol)
    other, problem = _entry(path)
    if other is None:
        return None, f"{problem}: {path}"
    if other.cohort != entry.cohort:
        return None, f"its record at {path} is on cohort {other.cohort}, not {entry.cohort}"
    return f"vs {floor}: {verdict(compare(entry, other))}", None


def floor_lines(results: list, folder) -> list[str]:
    """One line per scored result with its floors' comparisons, and one per result whose floors lack
    a record (what to run to add them)."""
    from bench.encoders import list_encoders

    from bench.protocols import get_protocol

    registered = set(list_encoders())
    lines = []
    for r in results:
        if r.failed or r.main_score is None or not get_protocol(r.protocol).ranked:
            continue  # an unranked protocol's numbers (reliability's ICC) have no paired test
        floors = floor_names(r.encoder, registered)
        entry, problem = _entry(Path(r.path)) if floors else (None, None)
        if entry is None:
            if problem:
                lines.append(f"{r.encoder} {r.task} {r.protocol}: not compared with its floors ({problem})")
            continue
        done, missing = [], []
        for floor in floors:
            text, absent = _versus(entry, floor, Path(folder))
            if text:
                done.append(text)
            else:
                missing.append((floor, absent))
        if done:
            lines.append(f"{r.encoder} {r.task} {r.protocol} " + "; ".join(done))
        if missing:
            run = " ".join(f"--encoder {floor}" for floor, _ in missing)
            lines.append(f"{r.encoder} {r.task} {r.protocol}: no floor record for "
                         + "; ".join(f"{floor} ({why})" for floor, why in missing)
                         + f"; to add: bench run {run} --task {r.task} --protocol {r.protocol}")
    return lines
