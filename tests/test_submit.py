"""``bench submit``: each API defect stops with one line before any compute; a good encoder gets a
bundle whose records verify and render on the leaderboard."""

from __future__ import annotations

import csv
import json
import shutil
import textwrap
from pathlib import Path

import pytest

from bench.cli import main
from bench.encoders.api import Encoder, EncoderCard
from bench.leaderboard.submit import plan_suite, suite_protocols

ENCODERS = '''
import torch
from bench.encoders import Encoder, EncoderCard


def card(name="octants", **kw):
    fields = dict(name=name, architecture="mean and std of the 8 octants", n_parameters=0, embed_dim=16,
                  input_space="cpu-small", ssl_method="none (handcrafted)", reference="tests/test_submit.py",
                  pretraining_data={"cohort": None, "subjects": []})
    fields.update(kw)
    return EncoderCard(**fields)


def octants(volumes):
    b = volumes.shape[0]
    parts = [p for half in volumes.chunk(2, dim=2) for quarter in half.chunk(2, dim=3) for p in quarter.chunk(2, dim=4)]
    flat = [p.reshape(b, -1) for p in parts]
    return torch.cat([torch.stack([f.mean(1) for f in flat], 1), torch.stack([f.std(1) for f in flat], 1)], 1)


class Good(Encoder):
    def __init__(self):
        self.card = card()

    def embed(self, volumes):
        return octants(volumes)


class NaNOutput(Good):
    def embed(self, volumes):
        out = octants(volumes)
        out[:, 3] = float("nan")
        return out


class Dropout(Good):
    """Dropout left in training mode: a different embedding on every call."""
    def __init__(self):
        super().__init__()
        self.drop = torch.nn.Dropout(0.5)

    def embed(self, volumes):
        return self.drop(octants(volumes))


class BatchNormTrain(Good):
    """Batch-norm in training mode: deterministic, but a scan's embedding depends on its batch."""
    def __init__(self):
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(16)

    def embed(self, volumes):
        return self.norm(octants(volumes))


class BatchCentred(Good):
    """Subtracts the batch mean: a scan's embedding depends on which other scans share its batch."""
    def embed(self, volumes):
        out = octants(volumes)
        return out - out.mean(0, keepdim=True)


class WrongShape(Good):
    def embed(self, volumes):
        return octants(volumes)[:, :15]


class Float64(Good):
    def embed(self, volumes):
        return octants(volumes).double()


class Crashes(Good):
    def embed(self, volumes):
        return volumes.view(volumes.shape[0], 7, -1).mean(-1)


class NoReference(Good):
    def __init__(self):
        self.card = card(reference="")


class TakenName(Good):
    def __init__(self):
        self.card = card(name="random")
'''


@pytest.fixture
def encoder_file(tmp_path) -> Path:
    path = tmp_path / "my_encoders.py"
    path.write_text(textwrap.dedent(ENCODERS))
    return path


CHECK_FAILURES = {  # encoder class -> the one line `bench submit` must stop with
    "NaNOutput": "API check 'finite' failed: embed returned 2 NaN/inf value(s) out of 32",
    "Dropout": "API check 'deterministic' failed: two calls on the same batch differ",
    "BatchNormTrain": "API check 'batch independent' failed: embed raised ValueError on a (1, 1, 64, 64, 64)",
    "BatchCentred": "API check 'batch independent' failed: a scan embedded alone differs from the same scan",
    "WrongShape": "API check 'output' failed: embed returned shape (2, 15) for a batch of 2; expected (2, 16)",
    "Float64": "API check 'output' failed: embed returned dtype torch.float64; expected torch.float32",
    "Crashes": "API check 'output' failed: embed raised RuntimeError on a (2, 1, 64, 64, 64) batch",
    "NoReference": "API check 'card' failed: 'reference' is empty",
    # refused when the file encoder is loaded, before the API checks (bench.encoders.api.reserved_names)
    "TakenName": "the card name 'random' is reserved for the registered encoder of that name",
}


@pytest.mark.parametrize("cls, message", list(CHECK_FAILURES.items()), ids=list(CHECK_FAILURES))
def test_each_defect_stops_with_one_line_before_any_compute(encoder_file, tmp_path, capsys, monkeypatch, cls,
                                                            message):
    def no_compute(*args, **kwargs):
        raise AssertionError("a cohort was opened although an API check failed")

    monkeypatch.setattr("bench.data.sources.open_cohort", no_compute)
    out = tmp_path / "bundle"
    code = main(["submit", "--encoder", f"{encoder_file}:{cls}", "--out", str(out), "--profile", "smoke",
                 "--task", "brain_age", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in " ".join(err.split()), err
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_weights_must_match_the_card(encoder_file, tmp_path, capsys, monkeypatch):
    source = encoder_file.read_text() + textwrap.dedent('''
        class WithWeights(Good):
            def __init__(self, weights=None):
                self.card = card(checkpoint_sha256="0" * 64)
        ''')
    encoder_file.write_text(source)
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"not really weights")
    assert main(["submit", "--encoder", f"{encoder_file}:WithWeights", "--weights", str(weights), "--out",
                 str(tmp_path / "b"), "--profile", "smoke", "--task", "brain_age"]) == 2
    assert "checkpoint_sha256 is 000000000000 but w.pt has" in capsys.readouterr().err


def test_the_suite_skips_what_cannot_apply():
    card = EncoderCard(name="x", architecture="a", n_parameters=0, embed_dim=4, input_space="cpu-small",
                       ssl_method="none", reference="r")
    plan = plan_suite(type("Bare", (Encoder,), {"card": card})(), cohort_name="synth-default")
    assert all("/" not in task for task in plan.jobs)               # no real-cohort task (adni/...)
    assert plan.jobs["ad_diagnosis"] == list(suite_protocols())
    assert plan.jobs["brain_age"] == ["linear_probe", "fractions", "robustness"]
    assert "tumour_segmentation" not in plan.jobs
    skipped = {(t, p): r for t, p, r in plan.skipped}
    assert skipped[("brain_age", "few_shot")] == "few-shot needs class labels; brain_age is regression"
    assert "feature maps" in skipped[("tumour_segmentation", "linear_probe")]


def test_nothing_to_run_is_an_error(encoder_file, tmp_path, capsys):
    assert main(["submit", "--encoder", f"{encoder_file}:Good", "--out", str(tmp_path / "b"), "--profile", "smoke",
                 "--task", "brain_age", "--protocol", "few_shot"]) == 2
    assert "nothing to run" in capsys.readouterr().err


@pytest.mark.slow
def test_submission_bundle_verifies_and_reaches_the_leaderboard(encoder_file, tmp_path, capsys):
    """End to end on the smoke cohort: submit -> bundle -> bench verify -> bench leaderboard (two encoders).

    brain_age only: its scans are the ones the harness tests already put in the session's volume
    store, so this adds little to the suite; the three-task board is covered by test_leaderboard.py.
    """
    bundle = tmp_path / "bundle"
    code = main(["submit", "--encoder", f"{encoder_file}:Good", "--out", str(bundle), "--profile", "smoke",
                 "--task", "brain_age", "--protocol", "linear_probe", "--protocol", "fractions", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "check deterministic: ok" in printed and "bundle for octants" in printed
    for name in ("card.json", "checks.json", "environment.json", "submission.json", "README.md",
                 "encoder/my_encoders.py"):
        assert (bundle / name).is_file(), name
    manifest = json.loads((bundle / "submission.json").read_text())
    assert manifest["suite"] == {"brain_age": ["linear_probe", "fractions"]}
    assert len(manifest["records"]) == 2 and all(r["verified"] for r in manifest["records"])
    assert json.loads((bundle / "card.json").read_text())["name"] == "octants"
    assert [c["check"] for c in json.loads((bundle / "checks.json").read_text())] == [
        "card", "input space", "output", "finite", "deterministic", "batch independent"]

    results = tmp_path / "results"
    shutil.copytree(bundle / "results", results)
    assert main(["run", "--encoder", "intensity", "--task", "brain_age", "--profile", "smoke",
                 "--results", str(results), "--no-progress"]) == 0
    assert main(["verify", str(results)]) == 0
    assert "3 of 3 record(s) verified" in capsys.readouterr().out

    out = tmp_path / "board"
    assert main(["leaderboard", "--results", str(results), "--out", str(out), "--n-boot", "500"]) == 0
    for name in ("README.md", "index.html", "results.csv", "plots/label_efficiency-brain_age.png",
                 "plots/label_efficiency-brain_age.svg"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted((r["encoder"], r["protocol"]) for r in rows) == [
        ("intensity", "linear_probe"), ("octants", "fractions"), ("octants", "linear_probe")]
    for row in rows:
        raw = json.loads((results / row["record"]).read_text())
        assert float(row["main_score"]) == pytest.approx(raw["main_score"])
        assert row["split_sha256"] == raw["provenance"]["split_sha256"]
        assert int(row["n_test_subjects"]) == next(s["n_subjects"] for s in raw["scores"]
                                                   if s["setting"] == "full" or s["setting"] == "fraction=1")
    readme = (out / "README.md").read_text()
    assert "needs at least 2 tasks" in readme and "octants" in (out / "index.html").read_text()

    # the bundle dropped into a submissions folder: verified, ranked beside the references, flagged
    references, submissions = tmp_path / "references", tmp_path / "submissions"
    shutil.copytree(results / "intensity", references / "intensity")
    shutil.copytree(bundle, submissions / "octants-v1")
    board = tmp_path / "board2"
    assert main(["leaderboard", "--results", str(references), "--submissions", str(submissions), "--out", str(board),
                 "--n-boot", "500"]) == 0
    rows = {(r["encoder"], r["protocol"]): r for r in csv.DictReader((board / "results.csv").open())}
    assert rows[("octants", "linear_probe")]["submitted"] == "octants-v1"
    assert rows[("intensity", "linear_probe")]["submitted"] == ""
    assert rows[("octants", "linear_probe")]["rank"] in ("1", "2")  # ranked with the reference
    assert rows[("octants", "linear_probe")]["record"].startswith("octants-v1/results/octants/")
    assert "submitted (octants-v1)" in (board / "README.md").read_text()
    assert ">submitted</span>" in (board / "index.html").read_text()
    # a submission cannot replace a reference's record: the same key from a bundle is refused
    shutil.copytree(results / "intensity", submissions / "copycat" / "results" / "intensity")
    assert main(["leaderboard", "--results", str(references), "--submissions", str(submissions), "--out",
                 str(board), "--n-boot", "500"]) == 0
    assert "refused copycat/" in " ".join(capsys.readouterr().err.split())
