"""A record scored the task's evaluation examples, each once, with the committed labels.

Recomputing a record's numbers from its own predictions (:mod:`bench.leaderboard.verify`) proves
they are consistent with those rows, not that the rows are the task's: a record whose ``y_true``
was rewritten to match its predictions, whose worst test subjects were dropped, or whose rows
were repeated under new example ids, is consistent with itself. Here every (setting, seed, split)
block of predictions is held against the label digest the repository keeps beside the split file
(:mod:`bench.label_digests`): its (example_id, y_true) pairs must be exactly the task's ``test``
(or ``external``) examples with their labels (each subject's first example, for a protocol that
scores one per subject). A transfer record's ``external`` block may instead
be every example of its target cohort (``all``), which is what a transfer to another cohort scores.

What this cannot tell apart: a perfect encoder from perfect predictions written by hand, with the
real labels and every example. Only a rerun shows who produced the predictions.
"""

from __future__ import annotations

from pathlib import Path


def check_examples(blocks: dict[tuple[str, int, str], list[dict]], scored_spec, split_path: Path,
                   protocol) -> list[str]:
    """Problems with the examples and labels of a record's prediction ``blocks`` (by setting, seed and
    split; :func:`bench.leaderboard.verify.prediction_blocks`), empty when they are the task's, or the
    one line saying why they cannot be checked (no or stale label digests). ``protocol`` says which
    set each split's block must be (every example, or each subject's first; a transfer's external
    block may be its whole target cohort)."""
    from bench.label_digests import (FIRST, LabelDigestError, digest, expected, labels_path, load_sidecar,
                                     task_key)

    if not blocks:
        return []
    try:
        sidecar = load_sidecar(split_path)
    except LabelDigestError as e:
        return [str(e)]
    key = task_key(scored_spec.name, scored_spec.version)
    shown = f"{split_path.parent.name}/{labels_path(split_path).name}"
    if key not in sidecar["tasks"]:
        return [f"{shown} holds no labels of {key}: the record's examples cannot be checked "
                "(`bench splits labels` writes them)"]
    for (setting, seed, split), rows in sorted(blocks.items()):
        sets = [split + (FIRST if protocol.one_example_per_subject else "")]
        sets += ["all"] if protocol.transfer and split == "external" else []
        wanted = [d for d in (expected(sidecar, key, s) for s in sets) if d is not None]
        where = f"{setting} / seed {seed} / {split}"
        if not wanted:
            return [f"{shown} holds no {split} examples of {key}, yet the record has predictions at {where}"]
        try:
            got = digest((str(r["example_id"]), r["y_true"]) for r in rows)
        except (KeyError, TypeError, ValueError):
            return [f"predictions at {where} have a malformed y_true"]
        if got in wanted:
            continue
        return [_mismatch(got.n, wanted[0].n, split, where, shown)]
    return []


def _mismatch(n: int, n_task: int, split: str, where: str, shown: str) -> str:
    """One line: a subset, extra rows, or the same count with other examples or labels."""
    if n < n_task:
        return (f"predictions at {where} cover {n} of the task's {n_task} {split} examples: a record scores "
                f"every {split} example (a subset is refused)")
    if n > n_task:
        return (f"predictions at {where} hold {n} examples where the task's {split} split has {n_task}: "
                "rows were added")
    return (f"predictions at {where} are not the task's {n_task} {split} examples with their committed labels "
            f"({shown}): y_true was rewritten, or examples were replaced")
