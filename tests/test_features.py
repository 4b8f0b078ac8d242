"""The ``features`` encoder (precomputed per-scan features) and the ``volumes`` baseline.

Bad tables stop with one line naming the file and the line / row; a hand-written table runs
end to end from the CLI into a record that verifies; ``volumes`` embeds a hand-written
volumes.tsv as ICV fractions plus ICV.
"""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.encoders import get_encoder
from bench.encoders import features as F
from bench.errors import MribenchError

GOOD = ("participant_id\tsession_id\tsequence\ta\tb\n"
        "sub-1\tses-1\tT1w\t1.5\t2\n"
        "sub-1\tses-2\tT1w\t3\t4e2\n")


def rows(*keys: tuple[str, str, str]) -> pd.DataFrame:
    return pd.DataFrame(keys, columns=["participant_id", "session_id", "sequence"])


def one_line_error(path, match: str) -> str:
    with pytest.raises(MribenchError) as info:
        F.read_features(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    assert match in message, message
    return message


# ------------------------------------------------------------------------------------ bad tables

BAD_TEXT = {
    "no key column": ("t.tsv", "subject\tsession_id\ta\nsub-1\tses-1\t1\n", "no 'participant_id' column"),
    "wrong separator": ("t.tsv", "participant_id,session_id,a\nsub-1,ses-1,1\n", "one column only"),
    "empty file": ("t.tsv", "\n\n", "empty file"),
    "header only": ("t.tsv", "participant_id\tsession_id\ta\n", "no rows"),
    "keys only": ("t.tsv", "participant_id\tsession_id\nsub-1\tses-1\n", "no feature columns"),
    "duplicate scan": ("t.tsv", GOOD + "sub-1\tses-1\tT1w\t5\t6\n",
                       "line 4 repeats the key of line 2 (participant sub-1, session ses-1, sequence T1w)"),
    "duplicate session": ("t.csv", "participant_id,session_id,a\nsub-1,ses-1,1\n\nsub-1,ses-1,2\n",
                          "line 4 repeats the key of line 2 (participant sub-1, session ses-1); the table needs "
                          "one row per session"),
    "non-numeric column": ("t.tsv", "participant_id\tsession_id\ta\tsite\nsub-1\tses-1\t1\t3\nsub-2\tses-1\t2\tS1\n",
                           "column 'site' is not numeric: line 3 has 'S1'"),
    "NaN": ("t.tsv", "participant_id\tsession_id\ta\tb\nsub-1\tses-1\t1\tNaN\n", "line 2, column 'b' is NaN"),
    "empty cell": ("t.csv", "participant_id,session_id,a,b\nsub-1,ses-1,1,2\nsub-2,ses-1,,2\n",
                   "line 3, column 'a' is empty"),
    "n/a cell": ("t.tsv", "participant_id\tsession_id\ta\nsub-1\tses-1\tn/a\n", "line 2, column 'a' is empty ('n/a')"),
    "inf": ("t.tsv", "participant_id\tsession_id\ta\nsub-1\tses-1\t-inf\n", "line 2, column 'a' is infinite"),
    "float32 overflow": ("t.tsv", "participant_id\tsession_id\ta\nsub-1\tses-1\t1e39\n", "beyond float32"),
    "empty key": ("t.tsv", "participant_id\tsession_id\ta\nsub-1\tses-1\t1\nsub-2\t \t1\n", "line 3 has no session_id"),
    "ragged line": ("t.tsv", "participant_id\tsession_id\ta\nsub-1\tses-1\t1\t7\n", "line 2 has 4 fields"),
    "unnamed column": ("t.csv", ",participant_id,session_id,a\n0,sub-1,ses-1,1\n", "column 1 has no name"),
    "repeated column": ("t.tsv", "participant_id\tsession_id\ta\ta\nsub-1\tses-1\t1\t2\n",
                        "column 'a' appears more than once"),
}


@pytest.mark.parametrize("case", sorted(BAD_TEXT))
def test_bad_text_tables_are_one_line_errors(case, tmp_path):
    name, text, match = BAD_TEXT[case]
    path = tmp_path / name
    path.write_text(text)
    one_line_error(path, match)


def test_unknown_format_missing_file_and_parquet_without_an_engine(tmp_path, monkeypatch):
    one_line_error(tmp_path / "t.xlsx", "unsupported features format '.xlsx'")
    one_line_error(tmp_path / "absent.tsv", "features file not found")
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    monkeypatch.setattr(F, "_has_parquet_engine", lambda: False)
    one_line_error(tmp_path / "t.parquet", "pip install pyarrow")


def test_bad_npz_tables(tmp_path):
    ids = np.array(["sub-1", "sub-2"])
    ses = np.array(["ses-1", "ses-1"])
    cases = {
        "missing array": (dict(participant_id=ids, session_id=ses), "no 'features' array"),
        "extra array": (dict(participant_id=ids, session_id=ses, features=np.ones((2, 3)), age=np.ones(2)),
                        "unexpected array(s) age"),
        "object ids": (dict(participant_id=ids.astype(object), session_id=ses, features=np.ones((2, 3))),
                       "object arrays"),
        "lengths": (dict(participant_id=ids[:1], session_id=ses[:1], features=np.ones((2, 3))),
                    "participant_id has shape (1,) but features has 2 rows"),
        "1-D features": (dict(participant_id=ids, session_id=ses, features=np.ones(2)), "features has shape (2,)"),
        "numeric ids": (dict(participant_id=np.arange(2), session_id=ses, features=np.ones((2, 3))),
                        "participant_id is int64, not strings"),
        "NaN": (dict(participant_id=ids, session_id=ses, features=np.array([[1, 2, 3], [4, np.nan, 6]])),
                "row 1, column 'features[:, 1]' is NaN"),
        "duplicate": (dict(participant_id=np.array(["sub-1", "sub-1"]), session_id=ses, features=np.ones((2, 3))),
                      "row 1 repeats the key of row 0"),
    }
    for case, (arrays, match) in cases.items():
        path = tmp_path / f"{case.replace(' ', '_')}.npz"
        np.savez(path, **arrays)
        one_line_error(path, match)


def test_a_scan_the_table_lacks_is_named(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text(GOOD)
    table = F.read_features(path)
    with pytest.raises(MribenchError) as info:
        table.lookup(rows(("sub-1", "ses-1", "T1w"), ("sub-1", "ses-1", "FLAIR"), ("sub-7", "ses-1", "T1w")))
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "no row for participant sub-1, session ses-1, sequence FLAIR (and 1 more of the 3 scans" in message


def test_names_of_features_runs(tmp_path):
    path = tmp_path / "my table.tsv"
    path.write_text(GOOD)
    assert get_encoder("features", features=path).card.name == "features-my-table"
    for name, match in (("random", "a registered encoder has that name"), ("Oracle", "a registered encoder"),
                        ("features", "a registered encoder"), ("a/b", "use letters, digits")):
        with pytest.raises(MribenchError, match=match):
            get_encoder("features", features=path, name=name)
    with pytest.raises(MribenchError, match="--features PATH"):
        get_encoder("features")


# ------------------------------------------------------------------------------------ good tables


def test_features_encoder_card_identity_and_lookup(tmp_path):
    path = tmp_path / "fs.csv"
    path.write_bytes("\ufeffparticipant_id,session_id,hippocampus,icv\r\n"
                     "sub-1,ses-1,3.9,1500\r\n\r\nsub-2 , ses-1,4.1,1400.5\r\n".encode())
    encoder = get_encoder("features", features=path, name="freesurfer")
    card = encoder.card
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (card.name, card.architecture, card.embed_dim, card.n_parameters, card.ssl_method) == (
        "freesurfer", "precomputed features", 2, 0, "none")
    assert card.checkpoint_sha256 == sha and encoder.checkpoint_hash() == sha
    # no sequence column: a session's row is every sequence's; keys are stripped; only cast to float32
    out = encoder.embed_rows(rows(("sub-2", "ses-1", "T1w"), ("sub-1", "ses-1", "FLAIR"), ("sub-1", "ses-1", "T1w")),
                             cohort=None)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([[4.1, 1400.5], [3.9, 1500], [3.9, 1500]], np.float32))
    with pytest.raises(MribenchError, match="reads precomputed features by scan key, not voxels"):
        encoder.embed(None)


def test_npz_table(tmp_path):
    path = tmp_path / "emb.npz"
    values = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    np.savez(path, participant_id=np.array(["sub-1", "sub-1", "sub-2"]), session_id=np.array(["ses-1"] * 3),
             sequence=np.array([b"T1w", b"FLAIR", b"T1w"]), features=values)
    table = F.read_features(path)
    assert table.by_sequence and table.columns == tuple(f"features[:, {j}]" for j in range(4))
    got = table.lookup(rows(("sub-2", "ses-1", "T1w"), ("sub-1", "ses-1", "FLAIR")))
    np.testing.assert_array_equal(got, values[[2, 1]].astype(np.float32))


# ------------------------------------------------------------------------------------ the CLI


def test_cli_options_are_checked_before_the_cohort(tmp_path, capsys):
    table = tmp_path / "t.tsv"
    table.write_text(GOOD)
    base = ["run", "--task", "brain_age", "--profile", "smoke", "--results", str(tmp_path / "r"), "--no-progress"]
    for argv, match in (
            (["--encoder", "features"], "give the table with --features PATH"),
            (["--encoder", "random", "--features", str(table)], "--features is the table of --encoder features"),
            (["--encoder", "features", "--encoder", "random", "--features", str(table)], "alone"),
            (["--encoder", "random", "--name", "x"], "--name names the records of a features table"),
            (["--encoder", "features", "--features", str(table), "--weights", "w.pt"], "--weights does not apply"),
            (["--encoder", "features", "--features", str(tmp_path / "none.tsv")], "features file not found")):
        assert main(base + argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and match in err, err


@pytest.mark.slow
def test_features_run_from_the_cli_writes_a_record_that_verifies(tmp_path, monkeypatch, capsys):
    from bench.data.sources import open_cohort

    cohort = open_cohort(None, profile="smoke", progress=False)  # generated once into the session's cache
    # split files of its own (what is tested is the encoder, not the committed splits)
    monkeypatch.setenv("MRIBENCH_SPLITS", str(tmp_path / "splits"))
    assert main(["splits", "make", "--profile", "smoke", "--out", str(tmp_path / "splits" / cohort.name),
                 "--no-progress"]) == 0
    # a hand-written table: one row per session (no sequence column), age plus a little noise, and noise
    sessions = cohort.table.drop_duplicates(["participant_id", "session_id"])
    rng = np.random.default_rng(0)
    lines = ["participant_id\tsession_id\tage_estimate\tnoise"]
    lines += [f"{r.participant_id}\t{r.session_id}\t{r.age + rng.normal(0, 0.5):.3f}\t{rng.normal():.3f}"
              for r in sessions.itertuples()]
    table = tmp_path / "my_volumes.tsv"
    table.write_text("\n".join(lines) + "\n")
    results = tmp_path / "results"
    argv = ["run", "--encoder", "features", "--features", str(table), "--task", "brain_age", "--profile", "smoke",
            "--seeds", "1", "--results", str(results), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    (path,) = (results / "features-my_volumes").glob("brain_age@v*/linear_probe.json")
    record = json.loads(path.read_text())
    card = record["provenance"]["encoder_card"]
    assert record["encoder"] == "features-my_volumes" and card["embed_dim"] == 2
    assert card["checkpoint_sha256"] == hashlib.sha256(table.read_bytes()).hexdigest()
    assert record["main_score"] < 3.0  # the features reach the head: MAE near the 0.5 y noise, not the age spread
    capsys.readouterr()
    assert main(["verify", str(results)]) == 0
    assert "1 of 1 record(s) verified" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ volumes


VOLUMES = ("participant_id\tsession_id\tsequence\thippocampus_ml\tventricles_ml\tgm_ml\twm_ml\tcsf_ml\ticv_ml\n"
           "sub-0001\tses-M00\tT1w\t7.50\t25.00\t600.00\t450.00\t300.00\t1500.00\n"
           "sub-0001\tses-M12\tT1w\t7.20\t27.00\t590.00\t448.00\t310.00\t1500.00\n"
           "sub-0002\tses-M00\tT1w\t6.00\t40.00\t520.00\t400.00\t280.00\t1250.00\n")


def test_volumes_baseline_embeds_icv_fractions_and_icv(tmp_path):
    encoder = get_encoder("volumes")
    assert encoder.card.embed_dim == 6 and encoder.card.name == "volumes"
    cohort = SimpleNamespace(name="hand", root=tmp_path)
    with pytest.raises(MribenchError, match="--encoder features --features your_freesurfer_table.tsv") as info:
        encoder.embed_rows(rows(("sub-0001", "ses-M00", "T1w")), cohort)
    assert "\n" not in str(info.value) and "derivatives/synth/volumes.tsv" in str(info.value)
    (tmp_path / "derivatives" / "synth").mkdir(parents=True)
    (tmp_path / "derivatives" / "synth" / "volumes.tsv").write_text(VOLUMES)
    out = encoder.embed_rows(rows(("sub-0002", "ses-M00", "T1w"), ("sub-0001", "ses-M12", "T1w")), cohort)
    assert out.dtype == np.float32
    expected = np.array([[6 / 1250, 40 / 1250, 520 / 1250, 400 / 1250, 280 / 1250, 1250],
                         [7.2 / 1500, 27 / 1500, 590 / 1500, 448 / 1500, 310 / 1500, 1500]], np.float32)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    # the features reader's checks apply: a scan without a row is named
    with pytest.raises(MribenchError, match="no row for participant sub-0003, session ses-M00, sequence T1w"):
        encoder.embed_rows(rows(("sub-0003", "ses-M00", "T1w")), cohort)
