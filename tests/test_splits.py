"""Splits: patient-level, stratified, reproducible, nested, and verified when loaded.

These guard the properties a benchmark result silently depends on: a subject leaking into
two splits, or a split file edited after results were computed, would make numbers
incomparable without any error.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.data.cohort import Cohort
from bench.errors import SplitError
from bench.splits import (
    COLUMNS,
    Split,
    check_split,
    file_sha256,
    load_split,
    make_split,
    sidecar_path,
    stable_seed,
    write_split,
)


def fake_subjects(n: int, seed: int = 0, sites: tuple[str, ...] = ("A", "B", "C")) -> pd.DataFrame:
    """A participant table like Cohort.subjects(): unbalanced diagnoses over a few sites."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "participant_id": [f"sub-{i:04d}" for i in range(n)],
        "site": rng.choice(list(sites), n),
        "sex": rng.choice(["F", "M"], n),
        "age": rng.uniform(55, 90, n),
        "diagnosis_bl": rng.choice(["CN", "MCI", "AD"], n, p=[0.5, 0.3, 0.2]),
    })


def split_of(n: int = 300, seed: int = 0, **kwargs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(subjects, split table) for a fake cohort."""
    subjects = fake_subjects(n, seed=seed)
    kwargs.setdefault("label", "diagnosis_bl")
    kwargs.setdefault("external_site", None)
    return subjects, make_split(subjects, seed=seed, **kwargs)


def written(tmp_path: Path, n: int = 300, seed: int = 0, **kwargs) -> tuple[Path, pd.DataFrame]:
    """Path of a freshly written split file and its subjects."""
    subjects, table = split_of(n, seed, **kwargs)
    path = tmp_path / "splits" / "task.tsv"
    write_split(table, path)
    return path, subjects


def rewrite_with_sidecar(path: Path, text: str) -> None:
    """Replace a split file and refresh its sidecar, so only the content checks can fire."""
    path.write_text(text)
    sidecar_path(path).write_text(f"{file_sha256(path)}  {path.name}\n")


# --------------------------------------------------------------------------- make_split


def test_output_columns_sorted_and_patient_level() -> None:
    subjects, table = split_of()
    assert list(table.columns) == list(COLUMNS)
    assert table["participant_id"].is_unique
    assert list(table["participant_id"]) == sorted(subjects["participant_id"])
    assert set(table["split"]) == {"train", "val", "test"}


def test_external_site_subjects_are_external_and_only_them() -> None:
    subjects, table = split_of(external_site="C")
    merged = table.merge(subjects, on="participant_id")
    assert (merged.loc[merged["site"] == "C", "split"] == "external").all()
    assert (merged.loc[merged["site"] != "C", "split"] != "external").all()
    assert set(merged["split"]) == {"train", "val", "test", "external"}


def test_unknown_external_site_is_an_error() -> None:
    with pytest.raises(SplitError, match="Z"):
        make_split(fake_subjects(30), seed=0, label=None, external_site="Z")


def test_same_seed_same_split_other_seed_different() -> None:
    subjects = fake_subjects(200)
    a = make_split(subjects, seed=3, label="diagnosis_bl", external_site="B")
    b = make_split(subjects.sample(frac=1, random_state=1), seed=3, label="diagnosis_bl",
                   external_site="B")
    c = make_split(subjects, seed=4, label="diagnosis_bl", external_site="B")
    pd.testing.assert_frame_equal(a, b)
    assert not a["split"].equals(c["split"])
    assert not a["order"].equals(c["order"])


def test_stratification_keeps_label_shares_and_fractions() -> None:
    subjects, table = split_of(300, seed=7)
    merged = table.merge(subjects, on="participant_id")
    overall = merged["diagnosis_bl"].value_counts(normalize=True)
    for name, group in merged.groupby("split"):
        share = group["diagnosis_bl"].value_counts(normalize=True)
        for cls, expected in overall.items():
            assert abs(share.get(cls, 0.0) - expected) <= 0.10, (name, cls)
    counts = table["split"].value_counts()
    assert abs(counts["val"] - 0.15 * 300) <= 2
    assert abs(counts["test"] - 0.2 * 300) <= 2


@pytest.mark.parametrize("n", [3, 5, 12, 20])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tiny_cohorts_have_every_split(n: int, seed: int) -> None:
    _, table = split_of(n, seed=seed)
    assert set(table["split"]) == {"train", "val", "test"}
    train = table[table["split"] == "train"]
    assert sorted(train["order"]) == list(range(len(train)))


def test_tiny_cohort_with_external_site_and_no_label() -> None:
    subjects = fake_subjects(12, sites=("A", "B"))
    table = make_split(subjects, seed=0, label=None, external_site="B")
    inner = table[table["split"] != "external"]
    if len(inner) >= 3:
        assert set(inner["split"]) == {"train", "val", "test"}


def test_folds_and_order_only_for_train() -> None:
    subjects, table = split_of(300)
    train = table[table["split"] == "train"]
    other = table[table["split"] != "train"]
    assert set(train["fold"]) == set(range(5))
    assert (other[["fold", "order"]] == -1).all().all()
    assert sorted(train["order"]) == list(range(len(train)))
    sizes = train["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 1
    per_class = train.merge(subjects, on="participant_id").groupby("diagnosis_bl")["fold"]
    for _, folds in per_class:
        counts = folds.value_counts().reindex(range(5), fill_value=0)
        assert counts.max() - counts.min() <= 1


def test_continuous_label_is_stratified_by_quantiles() -> None:
    subjects = fake_subjects(100)
    subjects["score"] = np.random.default_rng(0).normal(size=100)
    table = make_split(subjects, seed=0, label="score", external_site=None)
    assert set(table["split"]) == {"train", "val", "test"}


def test_works_on_cohort_subjects() -> None:
    rows = []
    for i in range(12):
        for month in (0, 12):
            rows.append({"participant_id": f"sub-{i:02d}", "session_id": f"ses-M{month:02d}",
                         "sequence": "T1w", "path": f"/x/sub-{i:02d}_{month}.nii.gz",
                         "months_from_baseline": month, "age": 60 + i + month / 12,
                         "sex": "FM"[i % 2], "site": "AB"[i % 2],
                         "diagnosis": ["CN", "MCI", "AD"][i % 3]})
    cohort = Cohort(pd.DataFrame(rows), name="toy")
    table = make_split(cohort.subjects(), seed=0, label="diagnosis_bl", external_site=None)
    assert len(table) == 12 and table["participant_id"].is_unique


# --------------------------------------------------------------------------- Split API


def loaded(tmp_path: Path, **kwargs) -> tuple[Split, pd.DataFrame]:
    path, subjects = written(tmp_path, **kwargs)
    return load_split(path, subjects["participant_id"]), subjects


def test_fractions_are_nested_sized_and_class_balanced(tmp_path: Path) -> None:
    split, subjects = loaded(tmp_path)
    train = split.subjects("train")
    previous: set[str] = set()
    for p in (0.01, 0.1, 0.2, 0.5, 1.0):
        subset = split.fraction(p)
        assert len(subset) == max(1, math.ceil(round(p * len(train), 9)))
        assert previous <= set(subset) <= set(train)
        previous = set(subset)
    assert split.fraction(1.0) == train
    labels = subjects.set_index("participant_id")["diagnosis_bl"]
    smallest = split.fraction(0.015)  # ceil(0.015 * 195) = 3 subjects: one of each class
    assert len(smallest) == 3 and labels[smallest].nunique() == 3
    share_all = labels[train].value_counts(normalize=True)
    share_20 = labels[split.fraction(0.2)].value_counts(normalize=True)
    assert (share_20 - share_all).abs().max() < 0.05
    with pytest.raises(ValueError):
        split.fraction(0.0)


def test_k_shot_is_per_class_deterministic_and_from_train(tmp_path: Path) -> None:
    split, subjects = loaded(tmp_path)
    labels = subjects.set_index("participant_id")["diagnosis_bl"]
    draw = split.k_shot(labels, k=5, repeat=0, task="ad_dx")
    assert labels[draw].value_counts().to_dict() == {"CN": 5, "MCI": 5, "AD": 5}
    assert set(draw) <= set(split.subjects("train"))
    assert draw == split.k_shot(labels, k=5, repeat=0, task="ad_dx")
    assert draw != split.k_shot(labels, k=5, repeat=1, task="ad_dx")
    assert draw != split.k_shot(labels, k=5, repeat=0, task="other")


def test_k_shot_warns_when_a_class_is_short(tmp_path: Path) -> None:
    split, subjects = loaded(tmp_path)
    labels = subjects.set_index("participant_id")["diagnosis_bl"].copy()
    rare = split.subjects("train")[:2]
    labels[:] = "common"
    labels[rare] = "rare"
    with pytest.warns(UserWarning, match="rare"):
        draw = split.k_shot(labels, k=5, repeat=0, task="t")
    assert set(rare) <= set(draw) and len(draw) == 7


def test_stable_seed_is_not_python_hash() -> None:
    assert stable_seed("t", 5, 0, 0) == stable_seed("t", 5, 0, 0)
    assert stable_seed("t", 5, 0, 0) != stable_seed("t", 5, 1, 0)


def test_summary_counts(tmp_path: Path) -> None:
    split, _ = loaded(tmp_path, external_site="A")
    summary = split.summary()
    assert list(summary) == ["train", "val", "test", "external"]
    assert sum(summary.values()) == 300
    assert summary["external"] == len(split.subjects("external")) > 0


# --------------------------------------------------------------------------- files


def test_write_then_load_round_trips_with_sidecar(tmp_path: Path) -> None:
    subjects, table = split_of(50)
    path = tmp_path / "s.tsv"
    sha = write_split(table, path)
    assert sidecar_path(path).read_text() == f"{sha}  s.tsv\n"
    assert file_sha256(path) == sha
    raw = path.read_bytes()
    assert b"\r" not in raw and raw.startswith(b"participant_id\tsplit\tfold\torder\n")
    assert write_split(table.sample(frac=1, random_state=0), tmp_path / "t.tsv") == sha
    split = load_split(path, subjects["participant_id"])
    assert split.sha256 == sha
    pd.testing.assert_frame_equal(split.table, table)
    assert check_split(path, subjects["participant_id"]) == []


def test_edited_file_fails_hash_check(tmp_path: Path) -> None:
    path, subjects = written(tmp_path)
    lines = path.read_text().splitlines()
    victim = next(i for i, line in enumerate(lines) if "\tval\t" in line)
    lines[victim] = lines[victim].replace("\tval\t", "\ttest\t")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SplitError, match="task.tsv") as info:
        load_split(path, subjects["participant_id"])
    assert "bench splits make" in str(info.value)
    assert file_sha256(path) in str(info.value)


def test_missing_sidecar_fails(tmp_path: Path) -> None:
    path, _ = written(tmp_path)
    sidecar_path(path).unlink()
    with pytest.raises(SplitError, match="sidecar"):
        load_split(path)


def test_duplicated_subject_is_named_with_both_splits(tmp_path: Path) -> None:
    path, _ = written(tmp_path)
    text = path.read_text()
    row = next(line for line in text.splitlines() if "\ttest\t" in line)
    pid = row.split("\t")[0]
    rewrite_with_sidecar(path, text + f"{pid}\tval\t-1\t-1\n")
    with pytest.raises(SplitError, match=pid) as info:
        load_split(path)
    assert "test" in str(info.value) and "val" in str(info.value)


def test_subject_not_in_cohort_is_named(tmp_path: Path) -> None:
    path, subjects = written(tmp_path)
    cohort = subjects["participant_id"].tolist()
    gone = cohort.pop(17)
    with pytest.raises(SplitError, match=gone) as info:
        load_split(path, cohort)
    assert "task.tsv" in str(info.value)


def test_check_split_reports_every_problem(tmp_path: Path) -> None:
    path, subjects = written(tmp_path, n=40)
    lines = path.read_text().splitlines()
    pid = lines[1].split("\t")[0]
    lines.append(f"{pid}\tholdout\t-1\t-1")
    path.write_text("\n".join(lines) + "\n")  # no sidecar refresh: hash fails too
    problems = check_split(path, subjects["participant_id"].iloc[1:])
    text = "\n".join(problems)
    assert "changed on disk" in text
    assert f"subject {pid} appears 2 times" in text
    assert "holdout" in text
    assert "not in the cohort" in text


def test_write_refuses_a_leaking_table(tmp_path: Path) -> None:
    _, table = split_of(20)
    leaking = pd.concat([table, table.iloc[[0]].assign(split="test")])
    with pytest.raises(SplitError, match=table["participant_id"].iloc[0]):
        write_split(leaking, tmp_path / "bad.tsv")
    assert not (tmp_path / "bad.tsv").exists()


def test_load_does_not_warn(tmp_path: Path) -> None:
    path, subjects = written(tmp_path, n=30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_split(path, subjects["participant_id"]).fraction(0.5)
