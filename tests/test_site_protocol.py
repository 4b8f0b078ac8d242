"""The site protocol: its balanced accuracy and interval against a hand computation, and the protocol
end to end on the smoke cohort: with its real sites (which the oracle's latents do not carry, so its
site is at chance) and with sites that follow age (which the oracle's biological age decodes), the
record verifying and an edited site score or a test subject among the site rows being refused."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bench.protocols.site_check import chance, site_decodability

#: Fabricated out-of-fold predictions: subject, true site, predicted site probabilities.
SUBJECTS = np.array(["a", "b", "c", "d", "e", "f", "g", "h", "i"])
TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
PRED = np.array([[.7, .2, .1], [.6, .3, .1], [.2, .5, .3], [.1, .8, .1], [.5, .4, .1],
                 [.1, .1, .8], [.2, .1, .7], [.3, .3, .4], [.1, .6, .3]])


def _balanced_accuracy_by_hand(true: np.ndarray, predicted: np.ndarray) -> float:
    """Mean over the sites present of the share of their examples predicted as that site."""
    return float(np.mean([np.mean(predicted[true == c] == c) for c in np.unique(true)]))


def test_balanced_accuracy_and_interval_by_hand():
    labels = PRED.argmax(1)
    # site 0: 2 of 3 right, site 1: 1 of 2, site 2: 3 of 4 -> (2/3 + 1/2 + 3/4) / 3
    assert _balanced_accuracy_by_hand(TRUE, labels) == pytest.approx((2 / 3 + 1 / 2 + 3 / 4) / 3)
    got = site_decodability(TRUE, PRED, SUBJECTS, n_boot=200, seed=4)
    assert got["point"] == pytest.approx((2 / 3 + 1 / 2 + 3 / 4) / 3) and got["n"] == 9
    draws = np.random.default_rng(4).integers(0, 9, size=(200, 9))  # subjects resampled whole
    boots = [_balanced_accuracy_by_hand(TRUE[d], labels[d]) for d in draws]
    assert (got["low"], got["high"]) == pytest.approx(tuple(np.quantile(boots, [0.025, 0.975])))
    assert chance(3) == pytest.approx(1 / 3)


# -- the protocol end to end ---------------------------------------------------------------------------
def _run(tmp_path, encoder: str, cohort):
    from bench.paths import cache_home
    from bench.profiles import get_profile
    from bench.results import load_record
    from bench.runner import Runner

    profile = replace(get_profile("smoke"), seeds=1, n_boot=50)
    runner = Runner(cohort, profile, tmp_path / "results", progress=False, cache_root=cache_home(), command="t")
    (result,) = runner.run(encoder, ["brain_age"], ["site"])
    assert result.status == "done", result.error
    return result.path, load_record(result.path)


def _smoke():
    from bench.data.sources import open_cohort

    return open_cohort(None, profile="smoke", progress=False)


def _by_setting(record) -> dict:
    return {(s.setting, s.split): s for s in record.scores}


@pytest.fixture(scope="module")
def smoke_records(tmp_path_factory):
    """The oracle's and the random encoder's site records on the smoke cohort's own sites (in the
    session's private cache, as conftest's per-test fixture sets it: module fixtures run before it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MRIBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        cohort = _smoke()
        return {e: _run(tmp_path_factory.mktemp(e), e, cohort) for e in ("oracle", "random")}


def test_protocol_records_verify_with_chance_and_both_task_scores(smoke_records):
    from bench.leaderboard.verify import verify_path

    for encoder, (path, record) in smoke_records.items():
        assert record.main_score_name == "site_balanced_accuracy" and record.higher_is_better is False
        by = _by_setting(record)
        site = by[("site", "test")]
        assert site.params["sites"] == ["S1", "S2", "S3"] and site.params["chance"] == pytest.approx(1 / 3)
        assert site.n_examples == 17 and {("full", "test"), ("full", "external")} <= set(by)
        site_rows = [p for p in record.predictions if p["setting"] == "site"]
        assert {p["participant_id"] for p in site_rows}.isdisjoint(
            {p["participant_id"] for p in record.predictions if p["setting"] == "full"})  # training subjects only
        verdict = verify_path(path)
        assert verdict.ok, (encoder, verdict.problems)
    mae = {e: _by_setting(r)[("full", "external")].metrics["mae"] for e, (_, r) in smoke_records.items()}
    assert mae["oracle"] < mae["random"]  # the held-out site's brain age, from latents vs random features
    # the oracle's latents hold no site: its decoder is at chance (balanced accuracy 1/3)
    assert smoke_records["oracle"][1].main_score == pytest.approx(1 / 3, abs=0.1)


def test_sites_that_follow_age_are_decoded_from_the_oracle(tmp_path):
    cohort = _smoke()
    t = cohort.table.copy()
    t["site"] = np.where(t["age"] < 45, "S1", np.where(t["age"] < 65, "S2", "S3"))  # the oracle reads age
    _, record = _run(tmp_path, "oracle", replace(cohort, table=t))
    assert record.main_score > 0.6 and _by_setting(record)[("site", "test")].params["sites"] == ["S1", "S2", "S3"]


def _written(record, tmp_path, name: str):
    from bench.leaderboard.verify import verify_path
    from bench.results import summarise, write_record

    record.summary = summarise(record.scores)
    path = tmp_path / name / "record.json"
    write_record(record, path)
    return verify_path(path)


def test_verify_refuses_an_edited_site_score_and_a_test_subject(smoke_records, tmp_path):
    from bench.results import load_record

    path = smoke_records["random"][0]
    record = load_record(path)
    site = _by_setting(record)[("site", "test")]
    site.metrics["site_balanced_accuracy"] = 0.2  # consistent elsewhere: main score and summary follow
    record.main_score = 0.2
    verdict = _written(record, tmp_path, "edited")
    assert not verdict.ok
    assert "site_balanced_accuracy 0.2 at site / seed 0 / test is not what its predictions give" in verdict.reason

    record = load_record(path)
    test_subject = next(p["participant_id"] for p in record.predictions
                        if p["split"] == "test" and p["setting"] == "full")
    row = next(p for p in record.predictions if p["setting"] == "site")
    row["participant_id"] = test_subject
    verdict = _written(record, tmp_path, "leaked")
    assert not verdict.ok and "that are not training subjects of the split file" in verdict.reason


def test_board_shows_site_leakage_as_a_column_beside_the_task_scores(smoke_records, tmp_path):
    import shutil

    from bench.leaderboard.board import build_board
    from bench.leaderboard.entries import load_entries
    from bench.leaderboard.render_csv import csv_rows
    from bench.leaderboard.render_markdown import render_markdown
    from bench.leaderboard.site_rows import INTRO, cells

    results = tmp_path / "results"
    for encoder, (path, _) in smoke_records.items():
        shutil.copytree(path.parent, results / encoder / path.parent.name)
    entries, refused = load_entries(results)
    assert not refused and len(entries) == 2
    board = build_board(entries, n_boot=50, power_sims=0)
    table = board.table("brain_age")
    assert table.metric == "mae" and not table.rows  # the task's metric; nothing ranked
    rows = table.site
    assert [r.decodability for r in rows] == sorted(r.decodability for r in rows)  # lowest first
    header, body = cells(rows)
    assert header[-2:] == ["internal mae (test)", "external mae (held-out site)"] and body[0][2] == "0.333"
    assert {r["section"] for r in csv_rows(board)} == {"site"}
    page = render_markdown(board, tmp_path / "board").read_text()
    assert INTRO in page
