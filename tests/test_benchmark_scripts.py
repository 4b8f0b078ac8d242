"""The scripts under benchmarks/ that produce the README's SSL tables: pretraining curves and
pretrained-vs-init / fine-tuned-vs-supervised comparisons, on hand-made inputs."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from bench.paths import repo_root
from tests.test_leaderboard import age_record, write_board

sys.path.insert(0, str(repo_root()))
from benchmarks import pretraining_curves, ssl_vs_init  # noqa: E402


def test_curve_windows_by_hand():
    losses = np.array([4.0, 3.0, 2.0, 1.0])
    assert pretraining_curves.window_means(losses, 2) == (3.5, 1.5)
    assert pretraining_curves.window_means(losses, 10) == (2.5, 2.5)  # shorter run: the whole of it
    np.testing.assert_allclose(pretraining_curves.moving_mean(losses, 2), [4.0, 3.5, 2.5, 1.5])


def test_curve_figure_and_table(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "loss.tsv").write_text("step\tloss\n" + "".join(f"{i}\t{5 - i / 100}\n" for i in range(1, 101)))
    (run / "encoder.json").write_text(json.dumps({"name": "toy", "ssl_method": "toy", "pretraining_data": {
        "batch_size": 8, "volumes_per_s": 3.0}}))
    assert pretraining_curves.main([str(run), "--out", str(tmp_path / "figs"), "--window", "10"]) == 0
    assert (tmp_path / "figs" / "toy.png").stat().st_size > 1000
    # first 10 steps: 5 - (1..10)/100 -> 4.945; last 10: 5 - (91..100)/100 -> 4.045
    assert "| toy | 100 | 4.945 | 4.045 |" in capsys.readouterr().out


def fractions_record(name: str, error_at):
    """brain_age fractions record: every prediction off by error_at(p) years at fraction p."""
    return age_record(name, [0.0] * 10, protocol="fractions", preds={
        f"fraction={p:g}": {0: [70.0 + i + error_at(p) for i in range(10)]} for p in (0.01, 0.1, 0.2, 0.5, 1)})


def test_tables_reheadline_each_fraction_and_compare_with_the_init(tmp_path):
    results = write_board(tmp_path / "results", [
        fractions_record("toy", lambda p: 1.0 if p == 1 else 4.0),       # pretrained: MAE 1 at 100 %, 4 at 10 %
        fractions_record("toy@init", lambda p: 3.0)])                    # its init: MAE 3 everywhere
    found = ssl_vs_init.collect([results], ["fraction=0.1", "fraction=1"], "test")
    row = found[("brain_age v2", "fraction=1")]
    assert row["toy"].score == pytest.approx(1.0) and row["toy@init"].score == pytest.approx(3.0)
    assert found[("brain_age v2", "fraction=0.1")]["toy"].score == pytest.approx(4.0)
    text = ssl_vs_init.tables([results], ["fraction=0.1", "fraction=1"], "test")
    (line,) = [l for l in text.splitlines() if l.startswith("| toy |") and " p " in l]
    cells = [c.strip() for c in line.strip("|").split("|")][1:]
    # at 10 % the pretrained encoder is worse (-), at 100 % better on every subject: p below the
    # board's printed floor, marked *
    assert cells[0].startswith("- ") and cells[1] == "+ p < 0.001 *"


@pytest.mark.slow
def test_val_scores_fit_on_train_and_score_the_validation_split(capsys):
    """The recipe-choice script scores val (never test): oracle beats volumes on the smoke cohort,
    and its numbers are the probe's own on the val rows."""
    from benchmarks import val_scores

    assert val_scores.parse_encoder("mae3d=w.pt:readout=grid") == ("mae3d", {"weights": "w.pt", "readout": "grid"})
    assert val_scores.main(["--profile", "smoke", "--encoder", "oracle", "--encoder", "volumes",
                            "--task", "ad_diagnosis", "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    assert "validation split of synth-smoke" in out
    rows = {line.split("|")[1].strip(): float(line.split("|")[2].split()[0]) for line in out.splitlines()
            if line.startswith("| oracle") or line.startswith("| volumes")}
    assert rows["oracle"] > rows["volumes"] > 0.5


def test_fine_tuned_ssl_is_compared_with_its_own_init_fine_tuned(tmp_path):
    """The seeds' claim with the architecture held fixed: NAME fine-tuned vs NAME@init fine-tuned."""
    def tuned(name, error_at):
        return age_record(name, [0.0] * 10, protocol="finetune_fractions", card={"supports_finetune": True}, preds={
            f"fraction={p:g}": {0: [70.0 + i + error_at(p) for i in range(10)]} for p in (0.01, 0.1, 0.2, 1)})

    results = write_board(tmp_path / "results", [tuned("toy", lambda p: 1.0), tuned("toy@init", lambda p: 2.0)])
    text = ssl_vs_init.tables([results], ["fraction=0.1", "fraction=1"], "test")
    assert "same network fine-tuned from its init" in text and "supervised from scratch" not in text
    (line,) = [l for l in text.splitlines() if l.startswith("| toy (fine-tuned) |") and " p " in l]
    assert [c.strip() for c in line.strip("|").split("|")][1:] == ["+ p < 0.001 *", "+ p < 0.001 *"]


@pytest.mark.slow
def test_suite_cost_counts_the_suite_plan_on_the_cohort():
    """The counts the cost projection multiplies: every distinct scan of an encoder's probe jobs,
    robustness's one scan per evaluated subject x perturbations x severities, fine-tuning's scans."""
    from dataclasses import replace

    from benchmarks import suite_cost

    from bench.data.sources import open_cohort
    from bench.perturbations import PERTURBATIONS
    from bench.profiles import get_profile
    from bench.runner import prepare_task
    from bench.tasks import get_task

    cohort = open_cohort(None, profile="smoke", progress=False)
    profile = replace(get_profile("smoke"), robustness_severities=(1, 5), robustness_splits=("test",))
    counts = suite_cost.suite_counts("default", cohort, profile)
    ad, _ = prepare_task(get_task("ad_diagnosis"), cohort)
    age, _ = prepare_task(get_task("brain_age"), cohort)
    first_test = lambda ex: {int(ex.rows[i].ravel()[0]) for i in np.flatnonzero(  # noqa: E731
        (ex.table["split"] == "test").to_numpy() & ~ex.table["participant_id"].duplicated().to_numpy())}
    assert counts["robust"]["random"] == len(first_test(ad) | first_test(age)) * len(PERTURBATIONS) * 2
    assert counts["robust"]["oracle"] == 0 and counts["embed"]["supervised"] == 0
    assert counts["embed"]["random"] >= len(set(ad.scan_rows()) | set(age.scan_rows()))
    n_train = int(sum(ad.rows[i].size for i in np.flatnonzero((ad.table["split"] == "train").to_numpy())))
    assert counts["finetune"][("supervised", "ad_diagnosis")][0] == n_train
    assert set(counts["finetune"]) >= {("supervised", "brain_age"), ("simclr3d", "conversion")}
