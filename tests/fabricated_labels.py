"""Label digests for the records tests make by hand (:func:`test_leaderboard.make_record`).

``bench verify`` holds every record's examples and labels to the digests beside the split file
(:mod:`bench.label_digests`). Hand-made records score a few committed test subjects with labels
the test chose, so they verify only against a repository that says those are the task's labels:
each test gets its own copy of ``splits/`` (``MRIBENCH_SPLITS``, set by ``tests/conftest.py``),
and every hand-made record declares its examples there. The committed sidecars are never written.

Declarations are kept for the session (module-scoped fixtures make records before a test's copy
exists) and applied to each test's copy when it is made; the latest declaration of a (task, set)
wins, so records of one task that a test verifies together must score the same examples.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.label_digests import FIRST, digest, labels_path, load_sidecar, task_key, write_sidecar

#: (split file name relative to the splits root, task key, evaluation set) -> digest JSON
DECLARED: dict[tuple[str, str, str], dict] = {}
REPO_SPLITS = Path(__file__).resolve().parents[1] / "splits"
#: Hand-made records are on this cohort: the committed smoke split files, copied under its name.
HANDMADE, SOURCE = "synth-handmade", "synth-smoke"


def copy_splits(root: Path) -> None:
    """The committed splits/ at ``root``, plus the smoke split files (not their label digests) as the
    hand-made cohort's."""
    import shutil

    shutil.copytree(REPO_SPLITS, root)
    (root / HANDMADE).mkdir()
    for f in (root / SOURCE).iterdir():
        if f.name.endswith((".tsv", ".sha256")):
            shutil.copy2(f, root / HANDMADE / f.name)


def declare(spec, cohort: str, protocol, split: str, pairs: list[tuple[str, object]]) -> None:
    """Say that ``pairs`` (example id, label) are ``spec``'s ``split`` examples on ``cohort`` (each
    subject's first example, for a protocol that scores one per subject)."""
    eval_set = split + (FIRST if protocol.one_example_per_subject else "")
    rel = spec.split.format(cohort=cohort)
    DECLARED[(rel, task_key(spec.name, spec.version), eval_set)] = digest(pairs).as_json()
    apply_to(current_root())


def current_root() -> Path | None:
    """The splits root this test reads, unless it is the repository's own (never written)."""
    from bench.paths import splits_root

    root = splits_root().resolve()
    return None if root == REPO_SPLITS.resolve() else root


def apply_to(root: Path | None) -> None:
    """Write every declaration into the sidecars under ``root`` (a test's copy of ``splits/``)."""
    if root is None:
        return
    by_file: dict[str, list[tuple[str, str, dict]]] = {}
    for (rel, key, eval_set), value in DECLARED.items():
        by_file.setdefault(rel, []).append((key, eval_set, value))
    for rel, entries in by_file.items():
        split_path = root / rel
        if not split_path.is_file():
            continue
        sidecar = load_sidecar(split_path) if labels_path(split_path).is_file() else {
            "format": "mribench-labels/1", "split_file": split_path.name, "tasks": {}}
        for key, eval_set, value in entries:
            sidecar["tasks"].setdefault(key, {})[eval_set] = value
        from bench.splits import file_sha256

        sidecar["split_sha256"] = file_sha256(split_path)
        write_sidecar(split_path, json.loads(json.dumps(sidecar)))
