"""Split fingerprints: whether two groups evaluated the same subjects, without exchanging ids.

A split made by a rule (:mod:`bench.split_rules`) gives each subject a *hashed id* (the salted
SHA-256 its assignment was read from). The fingerprint is the SHA-256 of the sorted
``<hashed id>\\t<split>\\n`` lines: equal fingerprints mean the same subjects in the same splits.
A fingerprint cannot say how many subjects differ, so ``bench splits make`` also writes the list
of (hashed id, split) pairs beside the split file, ``<population>.fingerprint.json``, which
``bench splits compare`` counts differences from.

The sidecar also keeps the rule's (public) salt and ``rows``: the hashed id of each row of the
split file, in file order (sorted by participant id), which few-shot draws rank by
(:func:`draw_ids`); no participant id is written, so the file says no more than its pairs do.

That list is data under the release's use agreement: ADNI ids (``002_S_0295``) are few enough to
hash them all through the public salt, so a hashed id identifies a subject as well as the id. It
stays local like the split file itself, and is exchanged, if at all, as the release's terms allow.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.atomic import atomic_write_bytes
from bench.errors import SplitError

SUFFIX = ".fingerprint.json"
NOTICE = ("hashed subject ids of a real release: data under the release's use agreement "
          "(they can be matched to ids through the public salt); keep local, never commit or publish")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def fingerprint(hashed: Mapping[str, str]) -> str:
    """SHA-256 of the sorted ``hashed id<TAB>split`` lines."""
    text = "".join(f"{h}\t{s}\n" for h, s in sorted(hashed.items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sidecar_of(split_path: str | os.PathLike) -> Path:
    """``splits/adni/ad.tsv`` -> ``splits/adni/ad.fingerprint.json``."""
    path = Path(split_path)
    return path.with_name(path.name.removesuffix(".tsv") + SUFFIX)


def write_sidecar(split_path: str | os.PathLike, rule, hashed: Mapping[str, str], split_sha256: str,
                  participants: Mapping[str, str] | None = None) -> str:
    """Write the fingerprint sidecar of a rule-made split file; return the fingerprint.

    ``participants`` (participant id -> hashed id) is stored as ``rows``, the hashed ids in the split
    file's row order, so that few-shot draws can rank by hashed id without the sidecar naming anyone."""
    fp = fingerprint(hashed)
    body = {"notice": NOTICE, "rule": rule.name, "rule_sha256": rule.sha256, "split_sha256": split_sha256,
            "fingerprint": fp, "n_subjects": len(hashed), "subjects": dict(sorted(hashed.items()))}
    if participants is not None:
        body |= {"salt": rule.salt, "rows": [h for _, h in sorted(participants.items())]}
    atomic_write_bytes(sidecar_of(split_path), (json.dumps(body, indent=1) + "\n").encode("utf-8"), mode=0o600)
    return fp


def read_sidecar(path: str | os.PathLike) -> dict:
    """A fingerprint sidecar, its fingerprint recomputed from its pairs (an edited list is refused)."""
    path = Path(path)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SplitError(f"{path}: not a readable fingerprint file ({type(e).__name__})") from None
    subjects = body.get("subjects") if isinstance(body, dict) else None
    if not isinstance(subjects, dict):
        raise SplitError(f"{path}: not a fingerprint file (no 'subjects' mapping of hashed id to split)")
    if fingerprint(subjects) != body.get("fingerprint"):
        raise SplitError(f"{path}: its subjects do not give its fingerprint (edited?); "
                         "rewrite it with `bench splits make --force`")
    return body


def record_fields(split_path: str | os.PathLike, split_sha256: str) -> dict[str, str]:
    """What a record carries of a rule-made split: rule, rule hash, fingerprint; {} for other splits.

    A sidecar written for another version of the split file is refused rather than recorded.
    """
    path = sidecar_of(split_path)
    if not path.is_file():
        return {}
    body = read_sidecar(path)
    if body.get("split_sha256") != split_sha256:
        raise SplitError(f"{path} was written for another {Path(split_path).name} (split SHA-256 "
                         f"{str(body.get('split_sha256'))[:12]}, now {split_sha256[:12]}); "
                         "run `bench splits make --force` again")
    return {"split_rule": body["rule"], "split_rule_sha256": body["rule_sha256"],
            "split_fingerprint": body["fingerprint"]}


def draw_ids(split_path: str | os.PathLike, split_sha256: str, table) -> tuple[str, dict[str, str]]:
    """(rule salt, participant id -> hashed id) of a rule-made split, for its few-shot draws.

    ``table`` is the loaded split (sorted by participant id, as the file is). The sidecar must be
    this file's and name each row's hashed id in the split the file gives it; anything else is one
    line asking for ``bench splits make --force`` (which rewrites the same split, same hash)."""
    path = sidecar_of(split_path)
    body = read_sidecar(path)
    redo = "run `bench splits make --force` again"
    if body.get("split_sha256") != split_sha256:
        raise SplitError(f"{path} was written for another {Path(split_path).name}; {redo}")
    rows, salt = body.get("rows"), body.get("salt")
    rows = rows if isinstance(rows, list) and all(isinstance(h, str) for h in rows) else []
    if not isinstance(salt, str) or len(set(rows)) != len(table):
        raise SplitError(f"{path} lists no hashed id per row (written before few-shot draws read them); {redo}")
    subjects = body["subjects"]
    pids, splits = table["participant_id"].astype(str).tolist(), table["split"].astype(str).tolist()
    wrong = next((p for p, h, s in zip(pids, rows, splits) if subjects.get(h) != s), None)
    if wrong is not None:
        raise SplitError(f"{path}: the hashed id of row {wrong} is not in its split there (edited?); {redo}")
    return salt, dict(zip(pids, rows))


@dataclass(frozen=True)
class Comparison:
    """How two rule-made splits differ, counted over hashed ids."""

    shared: int
    moved: int          # shared subjects in another split (another rule, or an edited file)
    only_here: int
    only_there: int

    @property
    def differing(self) -> int:
        return self.moved + self.only_here + self.only_there

    def sentence(self) -> str:
        if not self.differing:
            return f"same subjects in the same splits ({self.shared} subjects)"
        return (f"{self.differing} subject(s) differ: {self.only_here} only here, {self.only_there} only there, "
                f"{self.moved} in another split; {self.shared} shared")


def compare(here: Mapping[str, str], there: Mapping[str, str]) -> Comparison:
    shared = here.keys() & there.keys()
    return Comparison(shared=len(shared), moved=sum(here[h] != there[h] for h in shared),
                      only_here=len(here.keys() - there.keys()), only_there=len(there.keys() - here.keys()))


def fingerprint_of_target(target: str) -> tuple[str, dict | None, str | None]:
    """(fingerprint, hashed pairs or None, the record's split file or None) of what
    ``bench splits compare`` was given: a fingerprint, a fingerprint sidecar, or a record."""
    if _HEX64.match(target.strip().lower()):
        return target.strip().lower(), None, None
    path = Path(target)
    if not path.is_file():
        raise SplitError(f"{target}: neither a 64-hex fingerprint nor a file")
    if path.name.endswith(SUFFIX):
        body = read_sidecar(path)
        return body["fingerprint"], body["subjects"], None
    from bench.results import load_record

    prov = load_record(path).provenance
    fp = prov.config.get("split_fingerprint")
    if not fp:
        raise SplitError(f"{path}: the record carries no split fingerprint (its split was not made by a rule)")
    return fp, None, prov.split_file
