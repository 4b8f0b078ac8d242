"""A record of a rule-made split is checked against the local split by its fingerprint.

A real release's split file is local (it may not be committed), so two groups' ``splits/adni/ad.tsv``
differ whenever their downloads do. A record made on a rule-made split carries the rule's hash and
the split fingerprint (:func:`bench.fingerprint.record_fields`); comparing that fingerprint with the
local split's sidecar says *why* the record does not match here (other subjects, or other splits)
before the split-hash check says only *that* it does not, and points at ``bench splits compare``,
which counts the subjects that differ. Records without a fingerprint (the synthetic cohorts') are
left to the split-hash check alone.
"""

from __future__ import annotations

from pathlib import Path

from bench.errors import MribenchError
from bench.results import ResultRecord

_COMPARE = "`bench splits compare RECORD` counts the subjects that differ"


def fingerprint_problem(record: ResultRecord, split_path: Path) -> str | None:
    """Why the record's split fingerprint is not the local split's, in one line; None when it is, or
    when the record carries none (its split was not made by a rule)."""
    from bench.fingerprint import read_sidecar, sidecar_of

    config = record.provenance.config
    theirs = config.get("split_fingerprint")
    if not theirs:
        return None
    side = sidecar_of(split_path)
    shown = f"{split_path.parent.name}/{split_path.name}"
    if not side.is_file():
        return (f"the record's split was made by rule {config.get('split_rule')} (fingerprint {theirs}) but "
                f"{shown} here has no {side.name}: make it with `bench splits make`, then {_COMPARE}")
    try:
        here = read_sidecar(side)
    except MribenchError as e:
        return f"the fingerprint sidecar of {shown} is not usable: {e}"
    if here["fingerprint"] == theirs:
        return None
    return (f"split fingerprint {theirs} of the record is not {here['fingerprint']} of {shown} here"
            f"{_rule_note(config, here)}: other subjects or other splits; {_COMPARE}")


def _rule_note(config: dict, here: dict) -> str:
    """', made by another version of the rule' when the two rule hashes differ too ('' otherwise):
    then every subject may have moved, not only those one download lacks."""
    theirs, mine = config.get("split_rule_sha256"), here.get("rule_sha256")
    if not theirs or theirs == mine:
        return ""
    return f" (made by another version of rule {config.get('split_rule')}: rule hash {str(theirs)[:12]}, " \
           f"here {str(mine)[:12]})"
