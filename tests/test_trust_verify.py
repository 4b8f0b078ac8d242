"""Verify checks what a record claims to have scored (issue 32, item 1).

Each forgery below is consistent with itself: every number recomputes from its own predictions,
so the old checks passed it. What refuses it now is the repository's label digest beside the split
file (the task's test examples and their labels, :mod:`bench.label_digests`) and the recomputed
headline interval. Perfect predictions of the real examples with the real labels still verify:
only a rerun tells them from a perfect encoder, which is what the board's legend says.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_leaderboard import COHORT, class_record, make_record, split_test_subjects, write_board

from bench.label_digests import canonical_label, digest, labels_path, load_sidecar
from bench.leaderboard.verify import verify_path
from bench.paths import splits_root
from bench.tasks import get_task

N = 12


def truth(n: int = N) -> list[int]:
    return [i % 3 for i in range(n)]


def probs(labels: list[int], hit: float = 0.6) -> list[list[float]]:
    """Imperfect but informative class probabilities: the true class gets ``hit``."""
    miss = (1 - hit) / 2
    return [[hit if c == t else miss for c in range(3)] for t in labels]


def honest(encoder: str = "honest"):
    """The reference record: ad_diagnosis on 12 test subjects, whose examples and labels are the
    task's (declared in this test's copy of splits/)."""
    subjects = split_test_subjects("ad_diagnosis", N)
    return make_record(encoder, "ad_diagnosis", {"full": {0: probs(truth())}}, truth(), subjects)


def forged(preds, labels, subjects, ids=None):
    """A self-consistent record whose examples or labels are not the declared ones."""
    return make_record("forged", "ad_diagnosis", {"full": {0: preds}}, labels, subjects, example_ids=ids,
                       declare_labels=False)


def written(tmp_path: Path, record) -> Path:
    root = write_board(tmp_path / "results", [record])
    return next(root.rglob("*.json"))


def one_line(reason: str) -> bool:
    return reason.strip() != "" and "\n" not in reason


def test_the_honest_record_and_perfect_predictions_verify(tmp_path):
    assert verify_path(written(tmp_path, honest())).ok
    perfect = class_record("perfect", "ad_diagnosis", "perfect", n=N)  # real labels, every example
    verdict = verify_path(written(tmp_path / "p", perfect))
    assert verdict.ok and perfect.main_score == 1.0, verdict.problems


def test_relabelled_y_true_is_refused(tmp_path):
    honest()
    labels = truth()
    labels[0], labels[1] = labels[1], labels[0]  # y_true rewritten (here: to what the predictions say)
    record = forged(probs(labels), labels, split_test_subjects("ad_diagnosis", N))
    verdict = verify_path(written(tmp_path, record))
    assert not verdict.ok and one_line(verdict.reason)
    assert "not the task's 12 test examples with their committed labels" in verdict.reason, verdict.reason


def test_a_subset_of_the_test_subjects_is_refused(tmp_path):
    honest()
    keep = 8  # the worst third dropped
    record = forged(probs(truth())[:keep], truth()[:keep], split_test_subjects("ad_diagnosis", N)[:keep])
    verdict = verify_path(written(tmp_path, record))
    assert not verdict.ok and "cover 8 of the task's 12 test examples" in verdict.reason, verdict.reason


def test_rows_duplicated_under_new_example_ids_are_refused(tmp_path):
    honest()
    subjects = split_test_subjects("ad_diagnosis", N)
    ids = [f"{s}_ses-M00" for s in subjects] + [f"{s}_ses-M99" for s in subjects[:4]]
    labels = truth() + truth()[:4]
    record = forged(probs(labels), labels, subjects + subjects[:4], ids=ids)
    verdict = verify_path(written(tmp_path, record))
    assert not verdict.ok and "hold 16 examples where the task's test split has 12" in verdict.reason, verdict.reason


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _headline_ci(data: dict) -> dict:
    return data["scores"][0]["ci"]["auc"]


def test_an_edited_interval_is_refused(tmp_path):
    path = written(tmp_path, honest())
    _edit(path, lambda d: _headline_ci(d).update(low=0.97, high=0.99))
    verdict = verify_path(path)
    assert not verdict.ok and one_line(verdict.reason)
    assert "auc interval at full / seed 0 / test is not what its predictions give" in verdict.reason
    assert "bootstrap seed 0 and 200 replicates" in verdict.reason, verdict.reason


def test_an_interval_that_is_not_one_is_refused(tmp_path):
    path = written(tmp_path, honest())
    _edit(path, lambda d: _headline_ci(d).update(low=0.9, high=0.1))
    assert "runs from 0.9 down to 0.1" in verify_path(path).reason


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused_at_read(tmp_path, token):
    path = written(tmp_path, honest())
    text = path.read_text()
    low = _headline_ci(json.loads(text))["low"]
    path.write_text(text.replace(f'"low": {json.dumps(low)}', f'"low": {token}', 1))
    verdict = verify_path(path)
    assert verdict.record is None and f"{token} is not a JSON number" in verdict.reason, verdict.reason


def test_an_overflowing_number_is_refused(tmp_path):
    """``1e999`` is valid JSON that Python reads as infinity."""
    path = written(tmp_path, honest())
    text = path.read_text()
    high = _headline_ci(json.loads(text))["high"]
    path.write_text(text.replace(f'"high": {json.dumps(high)}', '"high": 1e999', 1))
    assert "non-finite high (inf)" in verify_path(path).reason


def test_a_record_without_its_predictions_is_refused(tmp_path):
    """The simplest forgery: drop the predictions file, write any score, recompute the summary."""
    path = written(tmp_path, honest())
    (path.parent / path.name.replace(".json", ".predictions.json.gz")).unlink()
    _edit(path, lambda d: d.update(predictions_file=None, predictions=None))
    verdict = verify_path(path)
    assert not verdict.ok and "keeps no per-example predictions" in verdict.reason, verdict.reason


def test_a_missing_or_stale_label_digest_is_one_line(tmp_path):
    path = written(tmp_path, honest())
    sidecar = labels_path(get_task("ad_diagnosis").split_path(COHORT))
    data = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps(data | {"split_sha256": "0" * 64}))
    assert "was computed on another version of ad.tsv" in verify_path(path).reason
    sidecar.unlink()
    reason = verify_path(path).reason
    assert one_line(reason) and "ad.labels.json is missing" in reason and "bench splits labels" in reason


def test_the_digest_is_of_sorted_pairs_and_one_label_spelling():
    assert canonical_label(1) == canonical_label(1.0) == canonical_label(np.int64(1)) == "1.0"
    assert canonical_label([12.5, 1]) == "[12.5, 1.0]"
    a = digest([("b", 1), ("a", 0)])
    assert a == digest([("a", 0.0), ("b", 1.0)]) and a.n == 2
    assert a != digest([("a", 1), ("b", 0)])  # labels swapped


def test_the_committed_digests_cover_every_committed_task():
    """Every split file the committed records use has its label digests, for the split it holds."""
    root = Path(__file__).resolve().parents[1] / "splits"
    for split_file in sorted(root.glob("*/*.tsv")):
        data = load_sidecar(split_file)
        assert data["tasks"] and all(math.isfinite(v["n"]) for t in data["tasks"].values()
                                     for k, v in t.items() if k != "task_spec_sha256")
    assert splits_root() != root  # the tests read their own copy (conftest), never write the committed one


@pytest.mark.slow
def test_the_committed_smoke_digests_are_what_the_cohort_gives(capsys, monkeypatch):
    """``bench splits labels --check`` recomputes the digests from the smoke cohort (generated once per
    session) and finds the committed ones (read only: --check writes nothing)."""
    from bench.cli import main

    monkeypatch.setenv("MRIBENCH_SPLITS", str(Path(__file__).resolve().parents[1] / "splits"))
    assert main(["splits", "labels", "--profile", "smoke", "--check", "--no-progress"]) == 0
    assert capsys.readouterr().out.count("ok ") == 3


def test_malformed_prediction_rows_are_one_line_not_a_crash():
    """The label and interval checks read rows the score check found well formed: a row without its
    prediction, or without its seed, is refused by that check alone."""
    from bench.leaderboard.verify import verify_record

    record = honest()
    without_pred = record.model_copy(update={"predictions": [
        {k: v for k, v in row.items() if k != "y_pred"} for row in record.predictions]})
    assert verify_record(without_pred) == ["predictions for full / seed 0 / test are malformed"]
    without_seed = record.model_copy(update={"predictions": [
        {k: v for k, v in row.items() if k != "seed"} for row in record.predictions]})
    assert verify_record(without_seed) == ["a prediction lacks setting / seed / split: the record was edited"]
