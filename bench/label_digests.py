"""Digests of each task's evaluation examples and labels, kept beside the split file they follow from.

``bench verify`` recomputes a record's numbers from its own predictions, and those rows carry
their own ``y_true``: without something to hold them against, a record whose labels were
rewritten to match its predictions, or whose worst test subjects were dropped, or whose rows
were duplicated under new ids, is consistent with itself. A *label digest* is what the repository
says the rows must be: for every task version defined on a split file, and for each evaluation
set, the count and the SHA-256 of the sorted ``(example_id, y_true)`` pairs.

The digests live in a sidecar of their own, ``<population>.labels.json`` beside
``<population>.tsv``, so no split file and no split hash changes (every committed record names
its split's hash). They are computed from the cohort (:func:`task_digests`, written by
``bench splits labels``; ``bench splits make`` writes them with the split) and carry the split
file's hash, so a sidecar left from another split is refused rather than believed.

A digest, not the labels: on a real release (ADNI, OASIS-3) the labels are data under the
release's use agreement and are never committed; the digest tells a verifier whether a
record's rows are the task's without telling anyone what they are.

Evaluation sets, per task: ``test`` and ``external`` (the split file's splits), each also as
``<split>/first-per-subject`` (the first example, in table order the earliest session, of each
subject: what a protocol with ``one_example_per_subject`` scores, e.g. robustness), and ``all``
(every example of the task on the cohort: what a cross-cohort transfer scores as ``external``
when its target is a whole other cohort).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

FORMAT = "mribench-labels/1"
#: Suffix of the set of each subject's first example in a split.
FIRST = "/first-per-subject"
SUFFIX = ".labels.json"


def labels_path(split_path: str | Path) -> Path:
    """``splits/<cohort>/ad.tsv`` -> ``splits/<cohort>/ad.labels.json``."""
    path = Path(split_path)
    return path.with_name(path.stem + SUFFIX)


def canonical_label(value: Any) -> str:
    """One text per label whatever its JSON spelling: a class ``1`` and ``1.0`` are the same label,
    a survival label is its ``[time, event]`` pair. Floats are written with Python's shortest
    round-trip repr, so a label read back from a record gives the text it was digested with."""
    def as_float(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [as_float(x) for x in v]
        return float(v)

    return json.dumps(as_float(value.tolist() if hasattr(value, "tolist") else value))


@dataclass(frozen=True)
class Digest:
    """How many examples a set holds, and the SHA-256 of its sorted (example_id, label) pairs."""

    n: int
    sha256: str

    def as_json(self) -> dict:
        return {"n": self.n, "sha256": self.sha256}


def digest(pairs: Iterable[tuple[str, Any]]) -> Digest:
    """The digest of ``(example_id, label)`` pairs, in any order (sorted by example id here)."""
    lines = sorted(f"{eid}\t{canonical_label(label)}\n" for eid, label in pairs)
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8"))
    return Digest(len(lines), h.hexdigest())


def task_key(name: str, version: int) -> str:
    return f"{name}@v{version}"


def task_digests(examples, split_path: Path, subjects: list[str]) -> dict[str, Digest]:
    """Digest of each evaluation set of a task's ``examples`` (built on the cohort whose
    ``subjects`` these are), tagged from the split file at ``split_path``: the harness's own
    example building and labels, so the digests are of what a run scores."""
    import numpy as np

    from bench.splits import load_split
    from bench.tasks import attach_split

    split = load_split(split_path, subjects)
    attach_split(examples, split.table, str(split_path))
    table = examples.table
    ids = table["example_id"].astype(str).to_numpy()
    labels = list(examples.labels())
    splits = table["split"].astype(str).to_numpy()
    first = ~table["participant_id"].duplicated().to_numpy()  # table order: the earliest session
    out = {"all": digest(zip(ids, labels))}
    for name in ("test", "external"):
        keep = np.flatnonzero(splits == name)
        out[name] = digest((ids[i], labels[i]) for i in keep)
        out[name + FIRST] = digest((ids[i], labels[i]) for i in keep if first[i])
    return out


def build_sidecar(split_path: Path, per_task: dict[str, tuple[str, dict[str, Digest]]]) -> dict:
    """The sidecar's JSON: the split file's hash, and per ``task@vN`` its spec hash and digests."""
    from bench.splits import file_sha256

    return {"format": FORMAT, "split_file": split_path.name, "split_sha256": file_sha256(split_path),
            "tasks": {key: {"task_spec_sha256": spec_sha, **{s: d.as_json() for s, d in sorted(digests.items())}}
                      for key, (spec_sha, digests) in sorted(per_task.items())}}


def write_sidecar(split_path: Path, sidecar: dict) -> Path:
    """Write the sidecar atomically beside its split file (fixed formatting: same digests, same bytes)."""
    from bench.atomic import atomic_write_bytes

    path = labels_path(split_path)
    atomic_write_bytes(path, (json.dumps(sidecar, indent=1, sort_keys=True) + "\n").encode("utf-8"), mode=0o644)
    return path


class LabelDigestError(ValueError):
    """A sidecar that is missing, unreadable or from another split (the message says which)."""


def load_sidecar(split_path: Path) -> dict:
    """The sidecar of ``split_path``, checked against the split file's current hash."""
    from bench.splits import file_sha256

    path = labels_path(split_path)
    shown = f"{path.parent.name}/{path.name}"
    if not path.is_file():
        raise LabelDigestError(f"{shown} is missing: the split's labels cannot be checked "
                               "(`bench splits labels` writes it from the cohort)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise LabelDigestError(f"{shown} is not a label-digest file: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("tasks"), dict):
        raise LabelDigestError(f"{shown} is not a {FORMAT} file")
    if data.get("split_sha256") != file_sha256(split_path):
        raise LabelDigestError(f"{shown} was computed on another version of {split_path.name}; "
                               "rewrite it with `bench splits labels`")
    return data


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def expected(sidecar: dict, key: str, eval_set: str) -> Digest | None:
    """The digest the sidecar holds for ``key`` (``task@vN``) and ``eval_set``; None when it has none."""
    entry = sidecar.get("tasks", {}).get(key, {}).get(eval_set)
    if not isinstance(entry, dict) or not isinstance(entry.get("n"), int) or not isinstance(entry.get("sha256"), str):
        return None
    return Digest(entry["n"], entry["sha256"])


def write_cohort_sidecars(cohort, split_dir: Path) -> list[tuple[Path, int]]:
    """Write the sidecar of every split file in ``split_dir`` that a task defined on ``cohort``
    names: (sidecar path, number of task versions in it) per file. A task whose examples cannot be
    built on this cohort (a missing column) is left out of the sidecar, as it has no records here;
    so is a segmentation task, whose labels are voxel maps and whose records keep no predictions."""
    from bench.errors import MribenchError
    from bench.tasks import build_examples, list_tasks, task_may_run_on

    per_file: dict[Path, dict[str, tuple[str, dict[str, Digest]]]] = {}
    subjects: list[str] | None = None  # the cohort's subject list, read once for every split file
    for spec in list_tasks().values():
        if not task_may_run_on(spec, cohort.name) or spec.target.name == "segmentation":
            continue
        path = split_dir / Path(spec.split.format(cohort=cohort.name)).name
        if not path.is_file():
            continue
        try:
            examples = build_examples(spec, cohort)
        except MribenchError:  # the task reads a column or population this cohort lacks
            continue
        subjects = subjects if subjects is not None else cohort.subjects()["participant_id"].tolist()
        digests = task_digests(examples, path, subjects)  # a bad split file is an error, not a skip
        per_file.setdefault(path, {})[task_key(spec.name, spec.version)] = (spec.sha256, digests)
    return [(write_sidecar(path, build_sidecar(path, tasks)), len(tasks)) for path, tasks in sorted(per_file.items())]
