"""Few-shot draws, data fractions, verification and board tables of rule-made (real-release) splits.

Issue 30's remainder: on a split a committed rule made, k-shot draws rank each class's train subjects
by a hash of their hashed ids, so two groups with the same subjects draw alike whatever their row
order, participant ids or other classes' subjects; fractions of two downloads nest on their shared
subjects; ``bench verify`` refuses a record of another split fingerprint by naming both; and the board
never puts two fingerprints of one cohort in one table. Fabricated subject tables only, no images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_leaderboard import COHORT, ERRORS, age_record, entry

from bench.errors import SplitError
from bench.fingerprint import fingerprint, sidecar_of, write_sidecar
from bench.leaderboard.board import build_board
from bench.leaderboard.verify import verify_record
from bench.paths import splits_root
from bench.split_rules import apply_rule, find_rule, hashed_ids
from bench.splits import Split, load_split, write_split
from bench.tasks import get_task

CLASSES = ("CN->CN", "MCI->AD", "MCI->MCI")
RULE = find_rule("adni", "ad")


def cohort(n: int, start: int = 0, prefix: str = "sub-ADNI") -> tuple[pd.DataFrame, pd.Series]:
    """(one row per subject, participant_id -> dataset id) of ``n`` fabricated ADNI subjects."""
    numbers = range(start, start + n)
    pids = [f"{prefix}{i:04d}" for i in numbers]
    subjects = pd.DataFrame({"participant_id": pids, "site": [f"{i % 7:03d}" for i in numbers],
                             "trajectory": [CLASSES[i % 3] for i in numbers]})
    return subjects, pd.Series([f"{i % 900:03d}_S_{i:04d}" for i in numbers], index=pids)


def rule_split(folder: Path, subjects: pd.DataFrame, ids: pd.Series) -> Split:
    """What ``bench splits make`` writes for these subjects (split, hash, fingerprint sidecar), loaded."""
    table, hashed = apply_rule(RULE, subjects, ids, "trajectory")
    path = folder / "ad.tsv"
    sha = write_split(table, path)
    write_sidecar(path, RULE, hashed, sha, participants=hashed_ids(RULE, ids.loc[table["participant_id"]]))
    return load_split(path)


def labels_of(subjects: pd.DataFrame) -> pd.Series:
    return subjects.set_index("participant_id")["trajectory"]


def by_id(pids: list[str], ids: pd.Series) -> set[str]:
    return {ids[p] for p in pids}


# ------------------------------------------------------------------------------------------ k-shot


def test_k_shot_does_not_depend_on_row_order_ids_or_other_classes(tmp_path):
    """Group B lists the same subjects in reverse, under other participant ids, plus 60 subjects of
    one class: the other classes' draws are A's, and B's draw of that class keeps none of A's
    subjects that A did not draw."""
    subjects, ids = cohort(300)
    a = rule_split(tmp_path / "a", subjects, ids)
    renamed = subjects.assign(participant_id=subjects["participant_id"].str.replace("sub-ADNI", "sub-Z"))
    extra, extra_ids = cohort(180, start=300, prefix="sub-Y")
    extra = extra[extra["trajectory"] == "MCI->AD"]
    b_subjects = pd.concat([renamed.iloc[::-1], extra], ignore_index=True)
    b_ids = pd.concat([pd.Series(ids.to_numpy(), index=renamed["participant_id"]), extra_ids.loc[extra.participant_id]])
    b = rule_split(tmp_path / "b", b_subjects, b_ids)
    assert a.rule_made and b.rule_made
    label_a, label_b = labels_of(subjects), labels_of(b_subjects).iloc[::-1]
    for repeat in range(3):
        for k in (1, 5):
            draw_a = a.k_shot(label_a, k, repeat, "ad_diagnosis")
            draw_b = b.k_shot(label_b, k, repeat, "ad_diagnosis")
            for cls in CLASSES:
                of_a = by_id([p for p in draw_a if label_a[p] == cls], ids)
                of_b = by_id([p for p in draw_b if label_b[p] == cls], b_ids)
                assert len(of_a) == len(of_b) == k
                if cls != "MCI->AD":
                    assert of_a == of_b
                else:
                    assert (of_b & set(ids)) <= of_a
    assert set(a.k_shot(label_a, 1, 0, "t")) <= set(a.k_shot(label_a, 5, 0, "t"))   # nested in k
    assert a.k_shot(label_a, 5, 0, "t") == a.k_shot(label_a, 5, 0, "other", seed=3)  # by hashed id alone
    assert a.k_shot(label_a, 5, 0, "t") != a.k_shot(label_a, 5, 1, "t")


def test_synthetic_k_shot_is_unchanged():
    """A committed synthetic split has no fingerprint sidecar and draws as before (pinned): the
    committed few-shot records must reproduce."""
    split = load_split(Path(__file__).resolve().parents[1] / "splits" / "synth-smoke" / "ad.tsv")
    assert not split.rule_made
    pids = split.table["participant_id"].tolist()
    labels = pd.Series([("CN", "MCI", "AD")[i % 3] for i in range(len(pids))], index=pids)
    assert split.k_shot(labels, 2, 0, "ad_diagnosis") == [
        "sub-0033", "sub-0041", "sub-0049", "sub-0058", "sub-0063", "sub-0077"]
    assert split.k_shot(labels, 2, 1, "ad_diagnosis") == [
        "sub-0004", "sub-0005", "sub-0041", "sub-0069", "sub-0075", "sub-0076"]


def test_a_sidecar_without_row_ids_or_of_another_file_is_refused(tmp_path):
    subjects, ids = cohort(60)
    split = rule_split(tmp_path, subjects, ids)
    side = sidecar_of(split.path)
    body = json.loads(side.read_text())
    side.write_text(json.dumps({k: v for k, v in body.items() if k != "rows"}))
    with pytest.raises(SplitError, match=r"lists no hashed id per row.*bench splits make --force"):
        load_split(split.path).k_shot(labels_of(subjects), 1, 0, "t")
    side.write_text(json.dumps(body | {"split_sha256": "0" * 64}))
    with pytest.raises(SplitError, match="written for another ad.tsv"):
        load_split(split.path).k_shot(labels_of(subjects), 1, 0, "t")
    side.write_text(json.dumps(body | {"rows": body["rows"][::-1]}))
    with pytest.raises(SplitError, match="is not in its split there"):
        load_split(split.path).k_shot(labels_of(subjects), 1, 0, "t")


# ------------------------------------------------------------------------------------------ fractions


def test_fractions_of_two_downloads_nest_on_their_shared_subjects(tmp_path):
    """Downloads of subjects 0-199 and 60-299: leaving out both downloads' class leads, the shared
    subjects in B's p-fraction are the first shared ones of A's ranking, so the two p-fractions cut
    down to shared subjects are nested."""
    subjects, ids = cohort(300)
    a = rule_split(tmp_path / "a", subjects.iloc[:200], ids.iloc[:200])
    b = rule_split(tmp_path / "b", subjects.iloc[60:], ids.iloc[60:])
    order_a, order_b = (s.table.set_index("participant_id")["order"] for s in (a, b))
    leads = set(order_a.index[order_a.between(0, 2)]) | set(order_b.index[order_b.between(0, 2)])
    shared = sorted(set(a.subjects("train")) & set(b.subjects("train")) - leads, key=order_a.get)
    assert len(shared) > 30
    for p in (0.1, 0.2, 0.3, 0.5, 0.8):
        in_a, in_b = set(a.fraction(p)) & set(shared), set(b.fraction(p)) & set(shared)
        assert in_b == set(shared[:len(in_b)]) and in_a == set(shared[:len(in_a)])
        assert in_a <= in_b or in_b <= in_a


# ------------------------------------------------------------------------------------------ verify


class _Rule:
    """What write_sidecar reads of a rule."""

    name, sha256, salt = "adni/ad", "c" * 64, "fabricated salt"


def _fingerprint_sidecar(spec, pairs: dict[str, str]) -> str:
    """A fingerprint sidecar beside the hand-made cohort's split of ``spec`` (in this test's splits/)."""
    from bench.splits import file_sha256

    path = splits_root() / spec.split.format(cohort=COHORT)
    return write_sidecar(path, _Rule, pairs, file_sha256(path))


def _fp_config(fp: str) -> dict:
    return {"split_fingerprint": fp, "split_rule": "adni/ad", "split_rule_sha256": "c" * 64}


def test_verify_refuses_a_record_of_another_fingerprint():
    spec = get_task("brain_age")
    ours = {"a" * 64: "test", "b" * 64: "train"}
    theirs = fingerprint(ours | {"d" * 64: "test"})
    record = age_record("A", ERRORS["A"], config=_fp_config(theirs))
    assert verify_record(record) and "has no healthy.fingerprint.json" in verify_record(record)[0]
    here = _fingerprint_sidecar(spec, ours)
    problem = verify_record(record)[0]
    assert f"split fingerprint {theirs} of the record is not {here} of {COHORT}/healthy.tsv" in problem
    assert "`bench splits compare RECORD`" in problem and "\n" not in problem
    assert verify_record(age_record("A", ERRORS["A"], config=_fp_config(here))) == []


# ------------------------------------------------------------------------------------------ board


def test_two_fingerprints_of_one_cohort_get_two_tables(tmp_path):
    records = [age_record("A", ERRORS["A"], config=_fp_config("1" * 64)),
               age_record("B", ERRORS["B"], config=_fp_config("1" * 64)),
               age_record("C", ERRORS["C"], config=_fp_config("2" * 64)),
               age_record("D", ERRORS["D"])]
    board = build_board([entry(r) for r in records], n_boot=200, power_sims=0)
    tables = {t.cohort: sorted(e.encoder for e in t.entries) for t in board.tables}
    assert tables == {COHORT: ["D"], f"{COHORT}, split 111111111111": ["A", "B"],
                      f"{COHORT}, split 222222222222": ["C"]}
    assert {t.anchor for t in board.tables} == {
        "task-brain_age-v2-synth-handmade", "task-brain_age-v2-synth-handmade-split-111111111111",
        "task-brain_age-v2-synth-handmade-split-222222222222"}
    from bench.leaderboard.render_markdown import render_markdown

    text = render_markdown(board, tmp_path).read_text()
    assert f"## brain_age v2 ({COHORT}, split 111111111111)" in text and f"## brain_age v2 ({COHORT})" in text
    assert np.isfinite([e.score for e in board.entries]).all()
