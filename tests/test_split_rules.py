"""Split rules of the real releases (bench/split_rules.py) and split fingerprints (bench/fingerprint.py).

The done-when of issue 30 item 1: for each of the five importers, two miniatures that differ by a
few subjects give identical assignments for the subjects they share; two identical imports have
one fingerprint and two different ones two; ``bench splits compare`` counts the difference.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

import miniatures as mini
from bench.cli import main
from bench.data.importers import import_dataset
from bench.data.importers.tumour import glioma_split_id
from bench.errors import SplitError
from bench.fingerprint import fingerprint, read_sidecar, record_fields, sidecar_of
from bench.split_rules import apply_rule, find_rule, load_rule, subject_ids
from bench.splits import load_split

#: dataset -> (miniature builder, population, subjects left out of miniature A, of miniature B)
CASES = {
    "adni": (mini.build_adni, "ad", ["002_S_4000", "011_S_4004"], ["023_S_4002"]),
    "oasis3": (mini.build_oasis3, "ad", ["OAS30002"], ["OAS30005", "OAS30007"]),
    "ixi": (mini.build_ixi, "ad", ["IXI011"], ["IXI016", "IXI017"]),
    "brats": (mini.build_brats, "tumour", ["BraTS20_Training_002"], ["BraTS20_Training_004"]),
    "ucsf-pdgm": (mini.build_ucsf_pdgm, "tumour", ["UCSF-PDGM-0005"], ["UCSF-PDGM-0008"]),
}


@pytest.fixture(autouse=True)
def _private_splits(tmp_path, monkeypatch):
    """Split files of fabricated cohorts go to a temporary folder, never into the checkout."""
    monkeypatch.setenv("MRIBENCH_SPLITS", str(tmp_path / "splits"))


def _drop(root: Path, tokens: list[str]) -> None:
    """Remove every file and folder of the release whose name holds one of ``tokens`` (a subject)."""
    for token in tokens:
        for p in sorted(root.rglob(f"*{token}*"), key=lambda q: len(q.parts)):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()


def _split(tmp: Path, dataset: str, drop: list[str], tag: str) -> tuple[pd.DataFrame, Path]:
    build, population, _, _ = CASES[dataset]
    release = tmp / f"release-{tag}"
    build(release)
    _drop(release, drop)
    res = import_dataset(dataset, release, tmp / f"out-{tag}")
    out = tmp / f"splits-{tag}"
    assert main(["splits", "make", "--cohort", str(res.manifest), "--out", str(out), "--no-power"]) == 0
    table = pd.read_csv(out / f"{population}.tsv", sep="\t").set_index("participant_id")
    return table, out / f"{population}.tsv"


@pytest.mark.slow
@pytest.mark.parametrize("dataset", sorted(CASES))
def test_shared_subjects_keep_their_assignment(dataset, tmp_path, capsys):
    _, _, drop_a, drop_b = CASES[dataset]
    a, path_a = _split(tmp_path, dataset, drop_a, "a")
    b, path_b = _split(tmp_path, dataset, drop_b, "b")
    again, path_again = _split(tmp_path, dataset, drop_a, "again")
    shared = a.index.intersection(b.index)
    assert len(shared) == len(a) - len(drop_b) and len(b) == len(shared) + len(drop_a)
    assert (a.loc[shared, ["split", "fold"]] == b.loc[shared, ["split", "fold"]]).all().all()
    assert a.equals(again)
    fp = {k: read_sidecar(sidecar_of(p))["fingerprint"] for k, p in (("a", path_a), ("b", path_b),
                                                                    ("again", path_again))}
    assert fp["a"] == fp["again"] and fp["a"] != fp["b"]
    capsys.readouterr()
    assert main(["splits", "compare", str(sidecar_of(path_b)), "--split", str(path_a)]) == 1
    n = len(drop_a) + len(drop_b)
    assert f"{n} subject(s) differ: {len(drop_b)} only here, {len(drop_a)} only there, 0 in another split" \
        in capsys.readouterr().out
    assert main(["splits", "compare", fp["again"], "--split", str(path_a)]) == 0
    assert "same subjects in the same splits" in capsys.readouterr().out


def test_assignment_reads_the_id_alone():
    """A subject's split and fold do not move when others are added or lost; the fraction ranking
    of the shared subjects keeps its relative order (leads of each class aside)."""
    rule = find_rule("adni", "ad")
    pids = [f"sub-ADNI{i:03d}S{i:04d}" for i in range(300)]
    subjects = pd.DataFrame({"participant_id": pids, "site": [f"{i % 7:03d}" for i in range(300)],
                             "trajectory": ["CN->CN", "MCI->AD", "MCI->MCI"] * 100})
    ids = pd.Series([f"{i:03d}_S_{i:04d}" for i in range(300)], index=pids)
    full, hashed = apply_rule(rule, subjects, ids, "trajectory")
    part, _ = apply_rule(rule, subjects.iloc[40:250], ids, "trajectory")
    full, part = full.set_index("participant_id"), part.set_index("participant_id")
    assert (full.loc[part.index, ["split", "fold"]] == part[["split", "fold"]]).all().all()
    counts = full["split"].value_counts()
    assert 120 <= counts["train"] <= 180 and 70 <= counts["test"] <= 140 and counts["val"] >= 25
    train = part.index[part["split"] == "train"]
    tail = [p for p in train if part.at[p, "order"] >= 3 and full.at[p, "order"] >= 3]
    assert sorted(tail, key=part["order"].get) == sorted(tail, key=full["order"].get)
    assert sorted(part.loc[train, "order"]) == list(range(len(train)))     # a ranking, as load_split needs
    assert len(hashed) == 300 and fingerprint(hashed) == fingerprint(dict(reversed(list(hashed.items()))))


def test_glioma_releases_split_one_patient_alike():
    """UCSF-PDGM lists BraTS 2021 ids: both rules hash the same id with one salt and fractions."""
    assert glioma_split_id("BraTS-GLI-00495-001") == glioma_split_id("BraTS2021_00495") == "BraTS2021_00495"
    assert glioma_split_id("BraTS20_Training_001") is None
    brats, ucsf = find_rule("brats", "tumour"), find_rule("ucsf-pdgm", "tumour")
    assert brats.salt == ucsf.salt and brats.fractions == ucsf.fractions
    ids = [f"BraTS2021_{n:05d}" for n in range(60)]
    subjects = pd.DataFrame({"participant_id": [f"sub-{n}" for n in range(60)], "site": "x"})
    a, ha = apply_rule(brats, subjects, pd.Series(ids, index=subjects.participant_id))
    b, hb = apply_rule(ucsf, subjects.assign(site="UCSF"), pd.Series(ids, index=subjects.participant_id))
    assert ha == hb and a.equals(b)


def test_rule_files_and_ids_are_checked(tmp_path):
    bad = tmp_path / "ad.rule.yaml"
    bad.write_text(Path(find_rule("adni", "ad").path).read_text().replace("test: 0.35", "test: 0.45"))
    with pytest.raises(SplitError, match=r"ad.rule.yaml: fractions .* sum to 1"):
        load_rule(bad)
    bad.write_text("rule: x\n")
    with pytest.raises(SplitError, match=r"ad.rule.yaml: split rule lacks \['version'"):
        load_rule(bad)
    table = pd.DataFrame({"participant_id": ["sub-1", "sub-1", "sub-2"], "split_id": ["A", "B", "C"]})
    with pytest.raises(SplitError, match="cohort x: subject sub-1 has two different split_id values"):
        subject_ids(table, "cohort x")
    with pytest.raises(SplitError, match="no 'split_id' column"):
        subject_ids(table.drop(columns="split_id"), "cohort x")
    assert find_rule("synth", "ad") is None and find_rule(None, "ad") is None


def test_records_carry_the_fingerprint_of_their_split(tmp_path, capsys):
    """A run on a rule-made split records the rule hash and fingerprint; compare reads them back."""
    from bench.results import load_record

    release = tmp_path / "release"
    mini.build_adni(release)
    res = import_dataset("adni", release, tmp_path / "out")
    assert main(["splits", "make", "--cohort", str(res.manifest), "--no-power"]) == 0
    split = tmp_path / "splits" / "adni" / "ad.tsv"
    side = json.loads(sidecar_of(split).read_text())
    assert side["rule_sha256"] == find_rule("adni", "ad").sha256 and "use agreement" in side["notice"]
    made = load_split(split)      # few-shot draws rank by the hashed id of each row, which the sidecar keeps
    assert made.rule_made and side["salt"] == find_rule("adni", "ad").salt and len(side["rows"]) == len(made.table)
    one_class = pd.Series("x", index=made.table["participant_id"])
    assert len(made.k_shot(one_class, 2, 0, "adni/ad_diagnosis")) == 2
    results = tmp_path / "results"
    assert main(["run", "--encoder", "random", "--task", "adni/ad_diagnosis", "--cohort", str(res.manifest),
                 "--profile", "smoke", "--seeds", "1", "--results", str(results), "--no-progress"]) == 0
    record = results / "random" / "adni-ad_diagnosis@v1" / "linear_probe.json"
    config = load_record(record).provenance.config
    assert config["split_fingerprint"] == side["fingerprint"] and config["split_rule"] == "adni/ad"
    capsys.readouterr()
    assert main(["splits", "compare", str(record)]) == 0
    assert "same subjects in the same splits (24 subjects)" in capsys.readouterr().out
    sha = side["split_sha256"]
    with pytest.raises(SplitError, match="written for another ad.tsv"):
        record_fields(split, "0" * 64)
    assert record_fields(split, sha)["split_rule_sha256"] == side["rule_sha256"]
