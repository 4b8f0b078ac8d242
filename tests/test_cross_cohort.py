"""The cross-cohort protocol: a head fitted on ADNI scored on OASIS-3, and on another ADNI site.

Both miniatures are fabricated (tests/miniatures.py); a four-number encoder named by file
(tests/brain_stats_encoder.py) keeps the test fast, since what is checked is who trains, who is
scored and what the record says.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

import miniatures as mini
from bench.cli import main
from bench.protocols.cross_cohort import Side, check_compatible, run_cross_cohort
from bench.data.importers import import_dataset
from bench.errors import MribenchError
from bench.profiles import get_profile
from bench.results import load_record
from bench.splits import file_sha256
from bench.tasks import get_task

pytestmark = pytest.mark.slow

ENCODER = f"{Path(__file__).with_name('brain_stats_encoder.py')}:BrainStats"


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    """Imported ADNI and OASIS-3 miniatures with their split files in a private splits folder."""
    root = tmp_path_factory.mktemp("cross")
    splits = root / "splits"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MRIBENCH_SPLITS", str(splits))
        out = {}
        for name, build in (("adni", mini.build_adni), ("oasis3", mini.build_oasis3)):
            build(root / name)
            out[name] = import_dataset(name, root / name, root / "out").cohort
            assert main(["splits", "make", "--cohort", str(root / "out" / f"{name}.tsv")]) == 0
    return out, splits, root


@pytest.fixture(autouse=True)
def _splits(cohorts, monkeypatch):
    monkeypatch.setenv("MRIBENCH_SPLITS", str(cohorts[1]))


@pytest.fixture(scope="module")
def profile():
    return replace(get_profile("smoke"), seeds=1, n_boot=50)


def test_only_tasks_with_the_same_label_can_be_paired():
    check_compatible(get_task("adni/ad_diagnosis"), get_task("oasis3/ad_diagnosis"))
    with pytest.raises(MribenchError, match="do not measure the same thing"):
        check_compatible(get_task("adni/conversion"), get_task("oasis3/ad_diagnosis"))
    with pytest.raises(MribenchError, match="segmentation transfer is not supported"):
        check_compatible(get_task("brats/tumour_segmentation"), get_task("brats/tumour_segmentation"))


def test_adni_to_oasis3_is_recorded_with_both_cohorts(cohorts, profile, tmp_path):
    (c, splits, _) = cohorts
    train, test = Side(c["adni"], "adni/ad_diagnosis"), Side(c["oasis3"], "oasis3/ad_diagnosis")
    result = run_cross_cohort(ENCODER, train, test, profile, tmp_path, progress=False)
    assert result.status == "done"
    assert result.path == tmp_path / "brain_stats" / "adni-ad_diagnosis@v1" / "cross_cohort-adni-to-oasis3.json"
    rec = load_record(result.path)
    cfg = rec.provenance.config
    assert rec.protocol == "cross_cohort" and rec.task == "adni/ad_diagnosis"
    assert rec.provenance.cohort.name == "oasis3"
    assert rec.provenance.split_sha256 == file_sha256(splits / "oasis3" / "ad.tsv")
    assert cfg["train"]["cohort"] == "adni" and cfg["train"]["split_sha256"] == file_sha256(splits / "adni" / "ad.tsv")
    assert cfg["test"]["task"] == "oasis3/ad_diagnosis@v1" and cfg["test"]["cohort"] == "oasis3"
    split = pd.read_csv(splits / "adni" / "ad.tsv", sep="\t").set_index("participant_id")["split"]
    assert cfg["train"]["n_subjects"] == {"train": int((split == "train").sum()), "val": int((split == "val").sum())}
    # OASIS-3: 12 subjects, subject 11 has no diagnosis (vascular dementia) -> 11 scored as external
    assert cfg["test"]["n_subjects"]["all"] == 11
    assert cfg["excluded_examples"]["test"] == {"no diagnosis at the session": 4}
    by_split = {s.split: s for s in rec.scores}
    assert set(by_split) == {"test", "external"} and by_split["external"].n_subjects == 11
    assert by_split["test"].params["n_train_subjects"] == cfg["train"]["n_subjects"]["train"]
    assert {p["participant_id"][:7] for p in rec.predictions} == {"sub-OAS"}
    again = run_cross_cohort(ENCODER, train, test, profile, tmp_path, progress=False)
    assert again.status == "reused"


def test_site_transfer_within_adni_from_the_command_line(cohorts, tmp_path, capsys):
    (c, _, root) = cohorts
    manifest = str(root / "out" / "adni.tsv")
    assert main(["cross-cohort", "--encoder", ENCODER, "--task", "adni/ad_diagnosis", "--train-cohort", manifest,
                 "--train-site", "002", "--test-site", "011", "--profile", "smoke", "--seeds", "1",
                 "--results", str(tmp_path), "--no-progress"]) == 0
    assert "trained on adni@002, tested on adni@011" in capsys.readouterr().out
    rec = load_record(tmp_path / "brain_stats" / "adni-ad_diagnosis@v1" / "cross_cohort-adni-002-to-adni-011.json")
    sites = c["adni"].table.drop_duplicates("participant_id").set_index("participant_id")["site"]
    scored = {p["participant_id"] for p in rec.predictions}
    assert scored and set(sites[sorted(scored)]) == {"011"}
    assert rec.provenance.config["train"]["site"] == "002" and rec.provenance.config["test"]["site"] == "011"
    assert main(["cross-cohort", "--encoder", ENCODER, "--task", "adni/ad_diagnosis", "--train-cohort", manifest,
                 "--profile", "smoke", "--results", str(tmp_path), "--no-progress"]) == 2
    assert "needs --train-site and --test-site" in capsys.readouterr().err
