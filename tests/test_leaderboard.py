"""The leaderboard on small fabricated records whose ranks, ties and aggregates are hand-computable.

Records are built exactly as the harness builds them (metrics and bootstrap CIs by
``bench.protocols.score_predictions``, ``summarise``, real task-spec and split hashes, real test
subjects of the committed smoke split), but from hand-made predictions, so every expected number
below is worked out in a comment rather than read back from the code under test.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.leaderboard import load_board, render
from bench.leaderboard.aggregate import nemenyi_q
from bench.leaderboard.board import build_board
from bench.leaderboard.entries import Entry, load_entries
from bench.leaderboard.ranking import compare, rank_entries
from bench.leaderboard.render_latex import render_latex
from bench.leaderboard.verify import verify_path
from bench.results import ResultRecord, read_record_json, summarise, write_record
from bench.protocols import get_protocol
from bench.splits import file_sha256, load_split
from bench.tasks import get_task
from fabricated_labels import declare

#: The cohort of hand-made records: the committed smoke split files under another name (a copy the
#: tests' splits/ holds, tests/conftest.py), so the labels hand-made records declare never stand in
#: for the smoke cohort's own, which real runs in the same session are verified against.
COHORT = "synth-handmade"
N_BOOT = 2000
HEADLINE = {"linear_probe": "full", "fractions": "fraction=1", "few_shot": "k=10", "robustness": "clean",
            "cross_cohort": "full", "finetune_fractions": "fraction=1"}


def handmade_split(spec) -> Path:
    """The split file of ``spec`` on :data:`COHORT`: the committed smoke file it is a copy of, read from
    the checkout (records are made at collection and in module fixtures, before a test's splits/ copy
    exists; the copy has the same bytes, so the same hash)."""
    from fabricated_labels import REPO_SPLITS, SOURCE

    return REPO_SPLITS / SOURCE / Path(spec.split.format(cohort=COHORT)).name


def split_test_subjects(task: str, n: int) -> list[str]:
    """The first ``n`` test subjects of the task's split (the committed smoke split, under :data:`COHORT`)."""
    spec = get_task(task)
    return load_split(handmade_split(spec)).subjects("test")[:n]


def make_record(encoder: str, task: str, preds: dict[str, dict[int, list]], y_true: list, subjects: list[str],
                protocol: str = "linear_probe", keep_predictions: bool = True, flags: list[str] | None = None,
                split: str = "test", config: dict | None = None, card: dict | None = None,
                example_ids: list[str] | None = None, declare_labels: bool = True) -> ResultRecord:
    """A valid record from hand-made predictions: ``preds[setting][seed]`` = one prediction per subject
    of ``split``; ``card`` overrides fields of the hand-made encoder card. Its examples and labels
    are declared the task's (:mod:`fabricated_labels`) unless ``declare_labels`` is False (a forgery
    of a record whose labels were declared before); ``example_ids`` default to each subject's M00."""
    from bench.protocols.context import score_predictions

    spec = get_task(task)
    split_path = handmade_split(spec)
    ids = example_ids or [f"{s}_ses-M00" for s in subjects]
    scores, predictions = [], []
    for setting, by_seed in preds.items():
        for seed, pred in by_seed.items():
            values, cis = score_predictions(spec, np.asarray(y_true), np.asarray(pred, dtype=float),
                                            np.asarray(subjects), 200, seed)
            scores.append({"setting": setting, "seed": seed, "split": split, "metrics": values, "ci": cis,
                           "n_subjects": len(set(subjects)), "n_examples": len(subjects), "params": {}})
            predictions += [{"example_id": e, "participant_id": s, "split": split, "seed": seed,
                             "setting": setting, "y_true": t, "y_pred": p}
                            for e, s, t, p in zip(ids, subjects, y_true, pred)]
    if declare_labels:
        declare(spec, COHORT, get_protocol(protocol), split, list(zip(ids, y_true)))
    config = {"n_boot": 200, **(config or {})}  # the replicate count score_predictions used above
    head = [s["metrics"][spec.main_score] for s in scores if s["setting"] == HEADLINE[protocol]]
    card = {"name": encoder, "architecture": "hand-made", "n_parameters": 0, "embed_dim": 1,
            "input_space": "cpu-small", "ssl_method": "none", "pretraining_data": {"cohort": None, "subjects": []},
            "checkpoint_sha256": None, "reference": "", "supports_finetune": False,
            "supports_segmentation": False, "version": "1"} | (card or {})
    return ResultRecord.model_validate({
        "encoder": encoder, "task": task, "task_version": spec.version, "protocol": protocol,
        "main_score_name": spec.main_score, "main_score": float(np.mean(head)),
        "higher_is_better": spec.higher_is_better, "headline_setting": HEADLINE[protocol], "scores": scores,
        "summary": summarise(scores), "predictions": predictions if keep_predictions else None,
        "flags": flags or [],
        "provenance": {
            "mribench_version": "0.1.0", "git_commit": None, "git_dirty": None,
            "task_spec_sha256": spec.sha256, "split_sha256": file_sha256(split_path),
            "split_file": f"splits/{COHORT}/{split_path.name}", "cohort": {"name": COHORT, "n_scans": 1},
            "encoder_card": card, "checkpoint_sha256": "0" * 64, "config": config, "seeds": sorted(
                {s for by_seed in preds.values() for s in by_seed}), "libraries": {},
            "hardware": {"platform": "test", "processor": "test", "cpu_count": 1, "torch_threads": 1, "cuda": None},
            "started_at": "2026-01-01T00:00:00+00:00", "wall_time_s": 1.0, "command": "fabricated by a test"},
    })


# ---------------------------------------------------------------------------------- hand-made cases
AGE_SUBJECTS = 10


def age_record(encoder: str, errors: list[float], **kw) -> ResultRecord:
    """brain_age (MAE, lower is better) on 10 test subjects: prediction = truth + error."""
    subjects = split_test_subjects("brain_age", AGE_SUBJECTS)
    truth = [70.0 + i for i in range(AGE_SUBJECTS)]
    preds = kw.pop("preds", None) or {"full": {0: [t + e for t, e in zip(truth, errors)]}}
    return make_record(encoder, "brain_age", preds, truth, subjects, **kw)


#   A: every error 1.0 -> MAE 1.00      B: like A but subject 0 off by 1.5 -> MAE 1.05
#   C: every error 3.0 -> MAE 3.00      D: like C but subject 0 off by 3.5 -> MAE 3.05
ERRORS = {"A": [1.0] * 10, "B": [1.5] + [1.0] * 9, "C": [3.0] * 10, "D": [3.5] + [3.0] * 9}


def class_record(encoder: str, task: str, quality: str, n: int = 12, **kw) -> ResultRecord:
    """A classification record whose predictions are perfect or exactly inverted (AUC 1 or 0)."""
    spec = get_task(task)
    classes = len(spec.label.classes)
    subjects = split_test_subjects(task, n)
    truth = [i % classes for i in range(n)]
    if classes == 2:
        pred = [0.9 if t == 1 else 0.1 for t in truth]
        pred = pred if quality == "perfect" else [1 - p for p in pred]
    else:
        hit, miss = (0.8, 0.1) if quality == "perfect" else (0.1, 0.45)
        pred = [[hit if c == t else miss for c in range(classes)] for t in truth]
    return make_record(encoder, task, {"full": {0: pred}}, truth, subjects, **kw)


def entry(record: ResultRecord) -> Entry:
    return Entry(record, f"{record.encoder}/{record.task}.json")


def write_board(root: Path, records: list[ResultRecord]) -> Path:
    from bench.protocols.cross_cohort import record_stem
    from bench.results import record_path

    for r in records:
        stem = r.protocol
        if r.protocol == "cross_cohort":  # as the runner names it: one file per transfer
            train, test = r.provenance.config["train"], r.provenance.config["test"]
            stem = record_stem(train["cohort"], {"train_site": train["site"], "test_cohort": test["cohort"],
                                                 "test_site": test["site"]})
        write_record(r, record_path(root, r.encoder, r.task, r.task_version, stem))
    return root


def borda_case() -> list[ResultRecord]:
    """P, Q complete on three tasks; R lacks conversion (see test_borda_mean_rank_and_cd_by_hand)."""
    return [age_record("P", ERRORS["A"]), age_record("Q", ERRORS["B"]), age_record("R", ERRORS["C"]),
            class_record("P", "ad_diagnosis", "perfect"), class_record("Q", "ad_diagnosis", "perfect"),
            class_record("R", "ad_diagnosis", "inverted"),
            class_record("P", "conversion", "perfect"), class_record("Q", "conversion", "inverted")]


def transfer_record(encoder: str, task: str, pred_of, train_site: str = "S1+S2+S3", n: int = 6,
                    **kw) -> ResultRecord:
    """A cross_cohort record as the runner writes one for a site transfer within the smoke cohort:
    scored on the first ``n`` subjects of the held-out site S4 (all ``external`` in the split file),
    ``pred_of(i, truth)`` the prediction of the i-th; both sides in the provenance config."""
    from bench.splits import file_sha256

    spec = get_task(task)
    path = handmade_split(spec)
    subjects = load_split(path).subjects("external")[:n]
    classes = len(spec.label.classes or [])
    truth = [i % classes for i in range(n)] if classes else [40.0 + 3 * i for i in range(n)]
    side = {"cohort": COHORT, "n_scans": 1, "task": f"{task}@v{spec.version}", "task_spec_sha256": spec.sha256,
            "split_file": f"splits/{COHORT}/{path.name}", "split_sha256": file_sha256(path)}
    config = {"protocol": "cross_cohort", "train": side | {"site": train_site, "n_subjects": {"train": 1, "val": 1}},
              "test": side | {"site": "S4", "n_subjects": {"test": 0, "all": n}}}
    return make_record(encoder, task, {"full": {0: [pred_of(i, t) for i, t in enumerate(truth)]}}, truth, subjects,
                       protocol="cross_cohort", split="external", config=config, **kw)


def age_off_by(error: float):
    return lambda i, t: t + error


# ------------------------------------------------------------------------------------------- tests
def test_fabricated_records_pass_verification(tmp_path):
    root = write_board(tmp_path, borda_case())
    verdicts = [verify_path(p) for p in sorted(root.rglob("*.json"))]
    assert len(verdicts) == 8 and all(v.ok for v in verdicts), [v.reason for v in verdicts]


def test_tie_groups_on_a_hand_made_case():
    entries = [entry(age_record(name, errs)) for name, errs in ERRORS.items()]
    ranked = rank_entries(entries, n_boot=N_BOOT, seed=0)
    assert [(r.entry.encoder, r.rank, r.group) for r in ranked] == [
        ("A", 1, 1), ("B", 1, 1), ("C", 3, 2), ("D", 3, 2)]
    by = {r.entry.encoder: r for r in ranked}
    # B - A differs only on subject 0 (+0.5 / 10 per draw of it): delta* = 0.05 * k, k ~ Binomial(10, 0.1),
    # so the bootstrap SE is 0.05 * sqrt(0.9) and the Wald p = 2 * Phi(-1 / sqrt(0.9)) = 0.292.
    assert by["B"].vs_best.method == "paired_bootstrap"
    assert by["B"].vs_best.p_value == pytest.approx(0.292, abs=0.03)
    # six pairs: A-C and B-D differ by exactly 2.0 on every replicate (SE 0, p 0), A-D and B-C by about 2
    # with SE 0.047 (p ~ 1e-300); A-B and C-D are the two p = 0.292, 5th and 6th of the family, so Holm
    # multiplies both by 2: 0.584.
    assert by["B"].vs_best.p_adjusted == pytest.approx(2 * by["B"].vs_best.p_value)
    assert not by["B"].vs_best.separable
    assert by["C"].vs_best.p_value == 0.0 and by["C"].vs_best.separable
    assert by["C"].vs_best.delta == pytest.approx(2.0)
    # C and D are both beaten by A and B (rank 3 = 1 + 2), and C does not beat D
    assert by["C"].beaten_by == by["D"].beaten_by == ("A", "B")


def test_tie_test_is_seeded_and_resamples_subjects_jointly():
    a, b = entry(age_record("A", ERRORS["A"])), entry(age_record("B", ERRORS["B"]))
    first = compare(a, b, n_boot=500, seed=7)
    assert compare(a, b, n_boot=500, seed=7) == first                  # same seed, same answer
    # identical predictions: delta* is 0 on every replicate, p = 1 (joint resampling: no noise added)
    same = compare(a, entry(age_record("A2", ERRORS["A"])), n_boot=500, seed=7)
    assert same.p_value == 1.0 and not same.separable


def test_without_predictions_the_cis_decide():
    a = entry(age_record("A", ERRORS["A"], keep_predictions=False))
    b = entry(age_record("B", ERRORS["B"], keep_predictions=False))
    c = entry(age_record("C", ERRORS["C"], keep_predictions=False))
    ranked = {r.entry.encoder: r for r in rank_entries([a, b, c], n_boot=500)}
    # A's MAE CI is [1, 1] and C's [3, 3]: apart; B's CI reaches 1.0 (resamples without subject 0)
    assert ranked["B"].vs_best.method == "ci_overlap" and ranked["B"].rank == 1
    assert ranked["B"].vs_best.p_adjusted is None                        # outside the Holm family
    assert ranked["C"].vs_best.method == "ci_overlap" and ranked["C"].vs_best.separable
    assert ranked["C"].rank == 3                                           # beaten by A and B


def test_mean_rank_and_cd_by_hand(tmp_path):
    board = load_board(write_board(tmp_path, borda_case()), n_boot=N_BOOT)
    summary = board.overall[0]
    rows = {r.encoder: r for r in summary.rows}
    # per-task ranks: brain_age P1 Q1 R3 (as A/B/C above); ad_diagnosis P and Q identical -> P1 Q1,
    # R inverted -> 3; conversion P1, Q inverted -> 2, R has no record.
    assert rows["P"].ranks == {"ad_diagnosis": 1, "brain_age": 1, "conversion": 1}
    assert rows["Q"].ranks == {"ad_diagnosis": 1, "brain_age": 1, "conversion": 2}
    assert rows["R"].ranks == {"ad_diagnosis": 3, "brain_age": 3, "conversion": None}
    assert rows["Q"].mean_rank == pytest.approx(4 / 3) and rows["R"].mean_rank == 3.0 and rows["R"].n_tasks == 2
    assert [r.encoder for r in summary.rows] == ["P", "Q", "R"]             # by mean rank
    # P and Q predict identically on ad_diagnosis but not on brain_age (both single-scan), so they are two
    # networks; R has 2 of the 3 tasks (at least half): tested, so the test runs on the two tasks R has.
    cd = summary.cd
    assert cd.left_out == {}
    assert cd.encoders == ["P", "Q", "R"] and cd.tasks == ["ad_diagnosis", "brain_age"]
    assert cd.tasks_left_out == {"conversion": "2 of the 3 tested encoders have it"}
    # Friedman over P, Q, R by point score: ad_diagnosis (1.5, 1.5, 3), brain_age (1, 2, 3) -> mean ranks
    # 1.25, 1.75, 3; chi2 = 12 * 2 / (3 * 4) * (1.25^2 + 1.75^2 + 3^2 - 3 * 16 / 4) = 3.25
    assert cd.computed and cd.mean_ranks == pytest.approx({"P": 1.25, "Q": 1.75, "R": 3.0})
    assert cd.chi2 == pytest.approx(3.25)
    assert cd.cd == pytest.approx(nemenyi_q(3) * math.sqrt(3 * 4 / 12), rel=1e-6)
    assert "only 2 tasks" in cd.note


def test_nemenyi_q_matches_demsar_table():
    # Demsar (2006), Table 5(a), alpha = 0.05 (printed to 3 decimals, truncated)
    assert [nemenyi_q(k) for k in (2, 3, 4, 5)] == pytest.approx([1.960, 2.343, 2.569, 2.728], abs=1e-3)


def test_cd_degrades_gracefully_with_one_task():
    board = build_board([entry(age_record(n, ERRORS[n])) for n in "AC"], n_boot=500)
    cd = board.overall[0].cd
    assert not cd.computed and "needs at least 2 tasks" in cd.note


def test_outputs_match_the_records(tmp_path):
    """The CSV / markdown / HTML / LaTeX numbers are the records' numbers, read independently."""
    results = write_board(tmp_path / "results", borda_case() + [age_record(
        "P", ERRORS["A"], protocol="fractions", preds={f"fraction={p:g}": {0: [70.0 + i + e for i, e in enumerate(
            [4.0 - 3 * p] * 10)], 1: [70.0 + i + e for i, e in enumerate([4.2 - 3 * p] * 10)]}
            for p in (0.01, 0.1, 0.2, 0.5, 1)})])
    board = load_board(results, n_boot=N_BOOT)
    out = tmp_path / "board"
    render(board, out)
    for name in ("README.md", "index.html", "results.csv", "plots/critical_difference.png",
                 "plots/critical_difference.svg", "plots/label_efficiency-brain_age.png"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 9
    for row in rows:
        raw = json.loads((results / row["record"]).read_text())
        head = [s for s in raw["scores"] if s["setting"] == raw["headline_setting"] and s["split"] == "test"]
        metric = raw["main_score_name"]
        assert float(row["main_score"]) == pytest.approx(np.mean([s["metrics"][metric] for s in head]))
        if row["seed_sd"] in ("", "0.0"):  # deterministic: the record's subject CI, as the harness wrote it
            assert float(row["ci_low"]) == pytest.approx(np.mean([s["ci"][metric]["low"] for s in head]))
            assert float(row["ci_high"]) == pytest.approx(np.mean([s["ci"][metric]["high"] for s in head]))
        assert int(row["n_test_subjects"]) == head[0]["n_subjects"]
        assert row["split_sha256"] == raw["provenance"]["split_sha256"]
        assert row["task_version"] == str(raw["task_version"])
    # the fractions record's headline is fraction=1: errors 1.0 (seed 0) and 1.2 (seed 1) -> MAE 1.1; it is
    # shown as label efficiency, not ranked (at 100 % it would repeat the probe)
    frac = next(r for r in rows if r["protocol"] == "fractions")
    assert float(frac["main_score"]) == pytest.approx(1.1) and frac["n_seeds"] == "2"
    assert frac["rank"] == "" and frac["section"] == "fractions"
    ranks = {(r["task"], r["encoder"]): r["rank"] for r in rows if r["protocol"] == "linear_probe"}
    assert ranks == {("brain_age", "P"): "1", ("brain_age", "Q"): "1", ("brain_age", "R"): "3",
                     ("ad_diagnosis", "P"): "1", ("ad_diagnosis", "Q"): "1", ("ad_diagnosis", "R"): "3",
                     ("conversion", "P"): "1", ("conversion", "Q"): "2"}

    md = (out / "README.md").read_text()
    assert "| P | 1.00 (3/3) | 1 | 1 | 1 |" in md                           # overall: mean rank, coverage
    assert "| 3 | R | linear probe | 3.000 (no variation: every resample scores 3.000) | p < 0.001 | 1 | 10 | v2 |" in md
    # label efficiency below 100 %: seed 0 errors 4 - 3p, seed 1 4.2 - 3p -> mean 4.07 - 3p, SD 0.141
    assert "| P | 4.070 (SD 0.141) | 3.800 (SD 0.141) | 3.500 (SD 0.141) | 2.600 (SD 0.141) |" in md
    assert "![label efficiency of P on brain_age" in md
    assert "Holm-adjusted within the table" in md                           # the rule, stated on the board
    page = (out / "index.html").read_text()
    assert "http://" not in page and "https://" not in page and "default-src 'none'" in page
    assert page.count("data:image/png;base64,") == 2                   # CD + label efficiency, inlined

    latex = render_latex(board, "brain_age", protocols=["linear_probe"])
    assert latex.count(r"\toprule") == latex.count(r"\midrule") == latex.count(r"\bottomrule") == 1
    bold = [line for line in latex.splitlines() if r"\textbf" in line]
    assert [line.split(" & ")[0] for line in bold] == ["P", "Q"]           # rank 1: nobody beats them
    assert r"R & linear probe & 3.000 {\scriptsize [no variation]} & 3 & p $<$ 0.001 & 10 \\" in latex
    assert "Holm-adjusted over all pairs" in latex


def test_latex_from_the_cli(tmp_path, capsys):
    results = write_board(tmp_path, borda_case())
    assert main(["leaderboard", "--results", str(results), "--format", "latex", "--task", "conversion",
                 "--n-boot", "500"]) == 0
    text = capsys.readouterr().out
    assert r"\begin{tabular}" in text and r"\textbf{1.000}" in text and r"{\scriptsize [" in text


def test_latex_matrix_of_encoders_by_tasks(tmp_path, capsys):
    """Without --task: encoder x task, bold where the entry is in the task's best rank group, '--'
    where an encoder has no record (ranks as in test_outputs_match_the_records)."""
    results = write_board(tmp_path, borda_case())
    assert main(["leaderboard", "--results", str(results), "--format", "latex", "--n-boot", "500"]) == 0
    text = capsys.readouterr().out
    assert text.count(r"\begin{table}") == 1 and r"\begin{tabular}{lrrr}" in text
    rows = {line.split(" & ")[0]: [c.strip() for c in line.removesuffix(r" \\").split(" & ")[1:]]
            for line in text.splitlines() if line[:2] in ("P ", "Q ", "R ")}
    header = next(line for line in text.splitlines() if line.startswith("Encoder &"))
    assert header.index("ad") < header.index("brain") < header.index("conversion")  # tasks by name
    # columns: ad_diagnosis (AUC), brain_age (MAE), conversion (AUC)
    assert [c.split(" ")[0] for c in rows["P"]] == [r"\textbf{1.000}", r"\textbf{1.000}", r"\textbf{1.000}"]
    assert [c.split(" ")[0] for c in rows["Q"]] == [r"\textbf{1.000}", r"\textbf{1.050}", "0.000"]
    assert [c.split(" ")[0] for c in rows["R"]] == ["0.000", "3.000", "--"]
    assert list(rows) == ["P", "Q", "R"]  # the cohort's mean-rank order
    assert main(["leaderboard", "--results", str(results), "--format", "latex", "--protocol", "few_shot"]) == 2
    assert "no verified few_shot records" in capsys.readouterr().err


def _tamper(path: Path, edit) -> Path:
    """Edit a record as data: written back in the inline form, predictions and all."""
    data = read_record_json(path)
    edit(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("edit, reason", [
    pytest.param(lambda d: d.update(main_score=0.5), "main_score 0.5 is not the mean over seeds", id="main_score"),
    # a careful forger changes the per-seed score, the summary and the headline together ...
    pytest.param(lambda d: (d["scores"][0]["metrics"].update(mae=0.5),
                            d["summary"]["full|test"]["mae"].update(mean=0.5), d.update(main_score=0.5)),
                 "mae 0.5 at full / seed 0 / test is not what its predictions give", id="score+summary+headline"),
    pytest.param(lambda d: d["provenance"].update(split_sha256="f" * 64), "split hash ffffffffffff does not match",
                 id="split_hash"),
    pytest.param(lambda d: d["provenance"].update(task_spec_sha256="e" * 64),
                 "task spec hash eeeeeeeeeeee does not match", id="task_hash"),
    pytest.param(lambda d: d.update(task_version=9), "record is brain_age@v9 but tasks/ defines v2", id="version"),
    pytest.param(lambda d: d["predictions"][0].update(participant_id="sub-9999"),
                 "outside the split file's test split", id="subject"),
    pytest.param(lambda d: d.update(surprise=1), "invalid result record at 'surprise'", id="schema"),
])
def test_tampered_records_are_refused_with_one_line(tmp_path, capsys, edit, reason):
    results = write_board(tmp_path / "results", [age_record("A", ERRORS["A"]), age_record("C", ERRORS["C"])])
    bad = _tamper(next(results.glob("A/**/*.json")), edit)
    verdict = verify_path(bad)
    assert not verdict.ok and reason in verdict.reason and "\n" not in verdict.reason
    entries, refused = load_entries(results)
    assert [e.encoder for e in entries] == ["C"]
    assert len(refused) == 1 and refused[0].source.startswith("A/") and reason in refused[0].reason
    # the CLI: `bench verify` says REFUSED and exits 1; `bench leaderboard` renders the rest and names it
    assert main(["verify", str(results)]) == 1
    out = capsys.readouterr().out
    assert "REFUSED" in out and "1 of 2 record(s) verified" in out
    assert main(["leaderboard", "--results", str(results), "--out", str(tmp_path / "out"), "--format", "markdown",
                 "--n-boot", "200"]) == 0
    assert "refused A/" in capsys.readouterr().err
    assert "## Refused records" in (tmp_path / "out" / "README.md").read_text()


def test_predictions_files_verify_and_a_missing_altered_or_forged_one_is_refused(tmp_path, capsys):
    """Records keep their predictions in a predictions file beside them (the default); inline records
    (as written before) verify the same; the file is pinned by the SHA-256 in the record."""
    results = write_board(tmp_path / "results", [age_record("A", ERRORS["A"]), age_record("C", ERRORS["C"])])
    a, c = sorted(results.glob("*/**/linear_probe.json"))
    sidecar = a.with_name("linear_probe.predictions.json.gz")
    assert sidecar.is_file() and json.loads(a.read_text())["predictions"] is None
    write_record(age_record("C", ERRORS["C"]), c, inline_predictions=True)
    assert not c.with_name(sidecar.name).exists() and json.loads(c.read_text())["predictions"]
    assert verify_path(a).ok and verify_path(c).ok
    good = sidecar.read_bytes()
    doc = json.loads(gzip.decompress(good))
    doc["blocks"][0]["y_pred"] = {"json": [0.0] * len(doc["blocks"][0]["y_true"])}
    sidecar.write_bytes(gzip.compress(json.dumps(doc).encode()))
    for reason in ("SHA-256", "missing"):
        verdict = verify_path(a)
        assert not verdict.ok and str(sidecar) in verdict.reason and reason in verdict.reason
        assert "\n" not in verdict.reason
        assert main(["verify", str(results)]) == 1
        out = capsys.readouterr().out
        assert "REFUSED" in out and sidecar.name in out and "1 of 2 record(s) verified" in out
        sidecar.unlink(missing_ok=True)
    # a forger who also puts the new file's hash in the record is caught by the recomputed scores
    sidecar.write_bytes(gzip.compress(json.dumps(doc).encode()))
    data = json.loads(a.read_text())
    data["predictions_file"]["sha256"] = file_sha256(sidecar)
    a.write_text(json.dumps(data))
    verdict = verify_path(a)
    assert not verdict.ok and "is not what its predictions give" in verdict.reason


def test_verify_accepts_good_records_from_the_cli(tmp_path, capsys):
    results = write_board(tmp_path, borda_case())
    assert main(["verify", *map(str, sorted(results.rglob("*.json")))]) == 0
    assert "8 of 8 record(s) verified" in capsys.readouterr().out


def test_no_valid_records_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "junk.json").write_text("{not json")
    assert main(["leaderboard", "--results", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no verified result records" in err and "junk.json" in err


def test_overlap_flag_is_shown(tmp_path):
    flagged = age_record("A", ERRORS["A"], flags=["pretraining_overlap: 2 evaluated subject(s) were in the "
                                                  "encoder's pretraining data, e.g. sub-0001"])
    board = load_board(write_board(tmp_path / "r", [flagged, age_record("C", ERRORS["C"])]), n_boot=200)
    render(board, tmp_path / "o", ("csv", "markdown"))
    rows = {r["encoder"]: r for r in csv.DictReader((tmp_path / "o" / "results.csv").open())}
    assert rows["A"]["pretraining_overlap"] == "True" and rows["C"]["pretraining_overlap"] == "False"
    assert "pretraining overlap" in (tmp_path / "o" / "README.md").read_text()
    assert r"A$^\dagger$" in render_latex(board, "brain_age")


# ------------------------------------------------------------------------------ the board's sections
def cross_cohort_case() -> list[ResultRecord]:
    """P and C with in-distribution brain_age probes (MAE 1 and 3, as A and C above) and transfers to
    the held-out site S4: P off by 2.0 everywhere (MAE 2), C by 3.5 (MAE 3.5); P also from S1 alone
    (MAE 2.5); R has a transfer but no probe. ad_diagnosis: P perfect in distribution (AUC 1), its
    transfer inverted (AUC 0)."""
    inverted = lambda i, t: [0.1 if c == t else 0.45 for c in range(3)]  # noqa: E731
    return [age_record("P", ERRORS["A"]), age_record("C", ERRORS["C"]),
            transfer_record("P", "brain_age", age_off_by(2.0)), transfer_record("C", "brain_age", age_off_by(3.5)),
            transfer_record("P", "brain_age", age_off_by(2.5), train_site="S1"),
            transfer_record("R", "brain_age", age_off_by(1.0)),
            class_record("P", "ad_diagnosis", "perfect"), transfer_record("P", "ad_diagnosis", inverted, n=12)]


def test_cross_cohort_records_verify_and_get_a_section_of_their_own(tmp_path):
    results = write_board(tmp_path / "results", cross_cohort_case())
    assert main(["verify", str(results)]) == 0
    board = load_board(results, n_boot=500)
    assert not board.refused and len(board.cross_cohort) == 5
    # never ranked: the brain_age table has the two probes only, Borda / CD see P and C
    assert [(r.entry.encoder, r.entry.protocol) for r in board.table("brain_age").rows] == [
        ("P", "linear_probe"), ("C", "linear_probe")]
    assert {r.encoder for r in board.overall[0].rows} == {"P", "C"}
    rows = {(r.encoder, r.task, r.train): r for r in board.cross_cohort}
    p = rows[("P", "brain_age", "synth-handmade@S1+S2+S3")]
    # MAE lower is better: drop = cross 2.0 - in-distribution 1.0 = +1.0 (worse out of distribution)
    assert p.test == "synth-handmade@S4" and p.split == "external" and p.entry.score == pytest.approx(2.0)
    assert p.in_distribution.score == pytest.approx(1.0) and p.drop == pytest.approx(1.0)
    assert rows[("C", "brain_age", "synth-handmade@S1+S2+S3")].drop == pytest.approx(0.5)     # 3.5 - 3.0
    assert rows[("P", "brain_age", "synth-handmade@S1")].drop == pytest.approx(1.5)           # 2.5 - 1.0
    assert rows[("R", "brain_age", "synth-handmade@S1+S2+S3")].in_distribution is None
    # AUC higher is better: drop = in-distribution 1.0 - cross 0.0 = +1.0
    assert rows[("P", "ad_diagnosis", "synth-handmade@S1+S2+S3")].drop == pytest.approx(1.0)

    render(board, tmp_path / "board", ("markdown", "csv", "html"))
    md = (tmp_path / "board" / "README.md").read_text()
    section = md[md.index("## Cross-cohort (held-out site / cohort)"):md.index("## Encoder cards")]
    assert r"### brain_age v2: synth-handmade\@S1+S2+S3 -> synth-handmade\@S4" in section
    assert r"### brain_age v2: synth-handmade\@S1 -> synth-handmade\@S4" in section
    # best first within a transfer; R has no in-distribution probe
    # every prediction is off by a constant, so every resample scores the same: no variation, and the
    # drop's interval has no width either (both spreads are 0)
    constant = "no variation: every resample scores"
    assert f"| P | 2.000 ({constant} 2.000) | external | 6 | 1.000 ({constant} 1.000) | +1.000 (+1.000 to +1.000) |" \
        in section
    assert f"| C | 3.500 ({constant} 3.500) | external | 6 | 3.000 ({constant} 3.000) | +0.500 (+0.500 to +0.500) |" \
        in section
    assert f"| R | 1.000 ({constant} 1.000) | external | 6 | - | - |" in section
    assert section.index("| R |") < section.index("| P | 2.000") < section.index("| C | 3.500")
    assert f"| P | 0.000 ({constant} 0.000) | external | 12 | 1.000 ({constant} 1.000) | +1.000 (+1.000 to +1.000) |" \
        in section
    csv_rows = list(csv.DictReader((tmp_path / "board" / "results.csv").open()))
    cross = [r for r in csv_rows if r["section"] == "cross_cohort"]
    assert len(cross) == 5 and {r["section"] for r in csv_rows} == {"task", "cross_cohort"}
    row = next(r for r in cross if r["encoder"] == "C")
    assert (row["train_side"], row["test_side"], row["scored_split"], row["rank"]) == (
        "synth-handmade@S1+S2+S3", "synth-handmade@S4", "external", "")
    assert float(row["main_score"]) == pytest.approx(3.5) and float(row["in_distribution_score"]) == 3.0
    assert float(row["drop"]) == pytest.approx(0.5)
    page = (tmp_path / "board" / "index.html").read_text()
    assert '<section id="cross-cohort">' in page and "synth-handmade@S1+S2+S3 &rarr; synth-handmade@S4" in page


@pytest.mark.parametrize("edit, reason", [
    pytest.param(lambda d: d.update(main_score=0.5), "is not the mean over seeds of its external scores",
                 id="main_score"),
    pytest.param(lambda d: d["provenance"]["config"]["test"].update(task="brain_age@v9"),
                 "the scored task brain_age@v9 is not tasks/brain_age.yaml", id="scored_task"),
    pytest.param(lambda d: d["provenance"]["config"]["train"].update(split_sha256="f" * 64),
                 "the training side's split hash ffffffffffff does not match", id="train_split"),
    pytest.param(lambda d: d["predictions"][0].update(participant_id="sub-9999"),
                 "outside the split file's external split", id="subject"),
])
def test_tampered_cross_cohort_records_are_refused(tmp_path, edit, reason):
    results = write_board(tmp_path, [transfer_record("P", "brain_age", age_off_by(2.0))])
    verdict = verify_path(_tamper(next(results.rglob("cross_cohort-*.json")), edit))
    assert not verdict.ok and reason in verdict.reason


def test_encoder_cards_from_the_records(tmp_path):
    card = {"architecture": "ResNet-18 <b>3D</b>", "n_parameters": 11_170_000, "embed_dim": 512,
            "ssl_method": "simclr", "checkpoint_sha256": "ab12" * 16,
            "pretraining_data": {"cohort": COHORT, "subjects": ["sub-0001", "sub-0002", "sub-0003"],
                                 "steps": 500}}
    results = write_board(tmp_path / "r", [age_record("P", ERRORS["A"], card=card), age_record("C", ERRORS["C"]),
                                           transfer_record("R", "brain_age", age_off_by(1.0))])
    board = load_board(results, n_boot=200)
    cards = {c.encoder: c for c in board.cards}
    assert sorted(cards) == ["C", "P", "R"]                      # R is on the board by its transfer only
    assert (cards["P"].n_parameters, cards["P"].embed_dim, cards["P"].pretraining_subjects,
            cards["P"].pretraining_steps, cards["P"].checkpoint_short) == (11_170_000, 512, 3, 500, "ab12ab12ab12")
    render(board, tmp_path / "o", ("markdown", "html"))
    md = (tmp_path / "o" / "README.md").read_text()
    assert ("| P | ResNet-18 &lt;b&gt;3D&lt;/b&gt; | 11.2 M | 512 | cpu-small | simclr | synth-handmade, 3 subjects, "
            "500 steps | `ab12ab12ab12` |") in md
    assert "| C | hand-made | 0 | 1 | cpu-small | none | - | - |" in md
    page = (tmp_path / "o" / "index.html").read_text()
    cards_html = page[page.index('<section id="encoder-cards">'):]
    assert "ResNet-18 &lt;b&gt;3D&lt;/b&gt;" in cards_html and "<b>3D" not in page
    assert '<td class="num" data-sort="11170000">11.2 M</td>' in cards_html and ">ab12ab12ab12</td>" in cards_html


def test_power_of_each_test_split(tmp_path):
    from bench.leaderboard.sections import power_text
    from bench.power import GAPS, smallest_detectable_gap

    results = write_board(tmp_path / "r", [age_record("P", ERRORS["A"]), class_record("P", "ad_diagnosis", "perfect"),
                                           age_record("K", ERRORS["A"], keep_predictions=False)])
    board = load_board(results, n_boot=200, power_sims=20)  # (the board's default is 400; 20 keeps the test quick)
    power = {t.task: t.power for t in board.tables}
    # brain_age: 10 test subjects of one example each, a regression: counts only
    assert (power["brain_age"].n_subjects, power["brain_age"].n_examples, power["brain_age"].gap) == (10, 10, None)
    assert power_text(power["brain_age"]) == \
        "Test split: 10 subjects, 10 examples. (The AUC power line is for classification tasks.)"
    # ad_diagnosis: 12 subjects, labels 0, 1, 2 in turn -> AD (2) vs rest, 4 against 8: no gap up to 0.30 reaches
    # 80 % power on so few subjects; the line names the 3-class macro AUC and the AD-vs-rest proxy it simulates
    ad = power["ad_diagnosis"]
    assert (ad.n_subjects, ad.n_examples, ad.proxy, ad.n_sim) == (12, 12, "AD vs rest", 20) and math.isnan(ad.gap)
    assert ad.power is not None and ad.power < 0.8
    text = power_text(ad)
    assert text.startswith("Test split: 12 subjects, 12 examples. Main score: 3-class macro one-vs-rest AUC "
                           "(CN / MCI / AD); power simulated for the AD-vs-rest AUC. Smallest AUC gap detectable at "
                           "80 % power: "
                           f"none up to 0.30 (power at 0.30: {ad.power:.2f} +/- {ad.mc_se:.2f} Monte-Carlo s.e., "
                           "20 simulations per gap) at alpha = ")
    assert "Wald test on the paired-bootstrap SE (200 replicates over subjects)" in text
    render(board, tmp_path / "o", ("markdown", "html"))
    for page in ("README.md", "index.html"):
        assert "Test split: 12 subjects, 12 examples." in (tmp_path / "o" / page).read_text()
    # a large split (unverified entries: 120 subjects, 2 examples each, half positive) finds a gap, the one
    # bench.power finds on the same labels and subjects at the line's level
    subjects = [f"sub-{i // 2:04d}" for i in range(240)]
    truth = [int(i // 2 % 2 == 0) for i in range(240)]
    big = make_record("Z", "conversion", {"full": {0: [0.5] * 240}}, truth, subjects)
    table = build_board([entry(big)], n_boot=200, power_sims=20).table("conversion")
    want, tried = smallest_detectable_gap(np.asarray(truth), np.asarray(subjects), n_sim=20, n_boot=200,
                                          alpha=table.power.level)
    assert (table.power.gap, table.power.power) == (want, tried[want]) and want in GAPS and want < 0.25
    assert (table.power.n_subjects, table.power.n_examples, table.power.proxy) == (120, 240, "")
    assert "Main score: binary AUC (converts positive). Smallest AUC gap detectable at 80 % power: " \
           f"{want:.2f} (power {tried[want]:.2f} +/- " in power_text(table.power)
    # without kept predictions the counts come from the scores, and there is nothing to simulate on
    lone = build_board([entry(age_record("K", ERRORS["A"], keep_predictions=False))], n_boot=200)
    assert (lone.tables[0].power.n_subjects, lone.tables[0].power.note) == (10, "no record kept its test predictions")


# -------------------------------------------------------------------------------------- the browser
def test_page_in_headless_chromium(tmp_path):
    """Loads with no console errors and no network request, sorting reorders rows, plots are visible,
    the task filter hides other tasks."""
    from bench.leaderboard.browser import chromium_path, open_page

    if chromium_path() is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
    pytest.importorskip("playwright", reason="pip install playwright (in the test extra)")
    results = write_board(tmp_path / "results", borda_case() + [age_record(
        "P", ERRORS["A"], protocol="fractions", preds={f"fraction={p:g}": {0: [70.0 + i + 3 - 2 * p for i in range(10)]}
                                                       for p in (0.01, 0.1, 1)}),
        transfer_record("P", "brain_age", age_off_by(2.0)), transfer_record("Q", "brain_age", age_off_by(1.5))])
    board = load_board(results, n_boot=500)
    render(board, tmp_path / "board", ("html",))
    page_path = tmp_path / "board" / "index.html"
    shutil.rmtree(tmp_path / "board" / "plots")                  # the page must not need them

    errors, requests = [], []
    with open_page() as page:
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(page_path.resolve().as_uri(), wait_until="load")
        table = page.locator("section.task[data-task='brain_age'] table.entries")

        def encoders() -> list[str]:
            return table.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.encoder)")

        assert encoders() == ["P", "Q", "R"]                      # linear probe by rank (fractions: its own table)
        header = table.locator("thead th", has_text="encoder")
        header.click()
        assert encoders() == ["P", "Q", "R"]                      # by name, ascending
        assert header.get_attribute("aria-sort") == "ascending"
        header.click()
        assert encoders() == ["R", "Q", "P"]
        table.locator("thead th", has_text="mae").click()          # numeric: 1.0 (P), 1.05 (Q), 3.0 (R)
        assert encoders()[-1] == "R"

        images = page.locator("img")
        assert images.count() == 2
        for i in range(images.count()):
            img = images.nth(i)
            assert img.is_visible()
            assert img.evaluate("i => i.complete && i.naturalWidth") > 0

        page.select_option("#filter-task", "brain_age")
        assert page.locator("section.task[data-task='brain_age']").is_visible()
        assert not page.locator("section.task[data-task='conversion']").is_visible()
        page.select_option("#filter-task", "")
        page.select_option("#filter-protocol", "fractions")
        assert table.locator("tbody tr:not(.hidden)").count() == 0
        fractions = page.locator("section.task[data-task='brain_age'] table.fractions")
        assert fractions.locator("tbody tr:not(.hidden)").evaluate_all(
            "rows => rows.map(r => r.dataset.protocol + ' ' + r.dataset.encoder)") == ["fractions P"]
        assert not page.locator("section.task[data-task='conversion']").is_visible()
        assert "1 of 9 entries shown" in page.locator("#visible-count").inner_text()
        # the sections beside the ranked tables: transfers sort like any table, cards and power lines show
        transfers = page.locator("#cross-cohort table.cross-cohort")
        assert transfers.is_visible()
        order = lambda: transfers.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.encoder)")  # noqa: E731
        assert order() == ["Q", "P"]                               # MAE 1.5 before 2.0
        transfers.locator("thead th", has_text="encoder").click()
        assert order() == ["P", "Q"]
        assert page.locator("#encoder-cards table.cards tbody tr").count() == 3
        assert "Test split: 10 subjects, 10 examples." in page.locator(
            "section.task[data-task='brain_age'] p.power").inner_text()
    assert errors == []
    assert requests and all(u.startswith(("file:", "data:")) for u in requests), requests


def test_cd_text_escapes_names_for_markdown_only():
    """The HTML page escapes the CD summary as HTML: a markdown escape there would show as `\\@`."""
    from types import SimpleNamespace

    from bench.leaderboard.render_markdown import cd_text

    cd = SimpleNamespace(computed=True, mean_ranks={"simclr3d@init": 1.5, "random": 1.5}, different=[],
                         chi2=0.0, encoders=["simclr3d@init", "random"], n_tasks=3, p_value=1.0, cd=1.1,
                         alpha=0.05, note="", tasks=["a", "b", "c"], left_out={"temporal@init": "same network as x"},
                         tasks_left_out={})
    summary = SimpleNamespace(cd=cd)
    assert "simclr3d\\@init 1.50" in cd_text(summary)
    assert "simclr3d@init 1.50" in cd_text(summary, name=str) and "\\" not in cd_text(summary, name=str)
    assert "Left out: temporal\\@init (same network as x)." in cd_text(summary)


def test_robustness_is_chance_corrected_and_n_a_at_chance(tmp_path):
    """An encoder at chance stays at chance under any artefact, so score / clean is about 1 and would top
    the robustness table. The board shows (score - chance) / (clean - chance) instead: perfect predictions
    (AUC 1) falling to 0.9 and 0.8 at two severities keep (0.8 + 0.6) / 2 = 0.70 of their margin; constant
    predictions (AUC 0.5, CI 0.5-0.5, which includes chance) are "n/a (clean at chance)" and go last."""
    from bench.leaderboard.render_html import render_html
    from bench.leaderboard.render_markdown import render_markdown
    from bench.leaderboard.robustness_rows import robustness_rows

    subjects = split_test_subjects("ad_diagnosis", 12)
    truth = [i % 2 for i in range(12)]

    def robust(encoder, pred, clean, scores, ratio):
        rec = make_record(encoder, "ad_diagnosis", {"clean": {0: pred}}, truth, subjects, protocol="robustness")
        block = {"splits": {"test": {"clean": clean, "robustness_score": ratio, "score": {"motion": scores},
                                      "mean_relative_drop": {"motion": 1 - ratio}}}}
        return rec.model_copy(update={"robustness": block})

    good = robust("good", [0.9 if t else 0.1 for t in truth], 1.0, {"1": 0.9, "3": 0.8}, 0.85)
    flat = robust("flat", [0.5] * 12, 0.5, {"1": 0.5, "3": 0.52}, 1.02)
    rows = robustness_rows([entry(flat), entry(good)])
    assert [(r.encoder, r.clean_at_chance) for r in rows] == [("good", False), ("flat", True)]
    assert rows[0].robustness_score == pytest.approx(0.70) and rows[0].worst_drop == pytest.approx(0.30)
    assert rows[0].recorded_score == 0.85                                 # the record's ratio, untouched
    assert rows[1].robustness_score is None and rows[1].chance == 0.5
    board = build_board([entry(good), entry(flat)], n_boot=200, power_sims=0)
    text = render_markdown(board, tmp_path).read_text()
    assert "| flat | 0.500 (0.500-0.500) | n/a (clean at chance) |" in text
    assert "| good | 1.000 (1.000-1.000) | 0.700 | motion (30.0 %) |" in text
    assert "Chance = the metric's chance level (0.5)" in text
    page = render_html(board, tmp_path).read_text()
    assert "n/a (clean at chance)" in page and "0.700" in page


def test_robustness_chance_for_an_error_is_the_mean_predictor():
    """MAE has no fixed chance level: it is the error of predicting the test labels' mean (the records
    hold no training labels). Truth 70..79 -> mean 74.5, mean |t - 74.5| = 2.5."""
    from bench.leaderboard.robustness_rows import robustness_rows

    rec = age_record("A", [1.0] * 10, protocol="robustness", preds={"clean": {0: [70.0 + i + 1.0 for i in range(10)]}})
    block = {"splits": {"test": {"clean": 1.0, "robustness_score": 0.9, "score": {"blur": {"1": 1.75}}}}}
    row = robustness_rows([entry(rec.model_copy(update={"robustness": block}))])[0]
    assert row.chance == pytest.approx(2.5) and row.chance_source.startswith("mean predictor")
    # (1.75 - 2.5) / (1.0 - 2.5) = 0.5
    assert row.robustness_score == pytest.approx(0.5)
