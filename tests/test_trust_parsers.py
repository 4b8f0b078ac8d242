"""Trust, parsers (issue 32, items 4-5): task and suite YAML, predictions files and the embedding
cache are read within bounds a small hostile file cannot exceed, and each refusal is one line
naming the file; a file encoder is said to run its code; an unwritable results folder is one line."""

from __future__ import annotations

import gzip
import os
import resource
import time
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.errors import MribenchError

MB = 1024 * 1024


@contextmanager
def bounded(seconds: float, megabytes: int):
    """Fail unless the block runs within ``seconds`` and allocates (Python heap peak, and growth of
    the process's peak resident size) under ``megabytes``."""
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    assert elapsed < seconds, f"took {elapsed:.2f} s"
    assert peak < megabytes * MB and grown < megabytes * MB, f"peak {peak / MB:.0f} MB, RSS +{grown / MB:.0f} MB"


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return " ".join(err.split())


# -- YAML: task and suite files --------------------------------------------------------------------
def billion_laughs(levels: int = 9) -> str:
    """A ~1 KB suite whose last key expands to 10**levels names."""
    lines = ["name: laughs", "encoders: &l0 [random, random, random, random, random, random, random, random, "
             "random, random]"]
    lines += [f"x{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join([*lines, f"protocols: *l{levels - 1}", ""])


def test_a_billion_laughs_suite_is_refused_fast_in_one_line(tmp_path, capsys):
    from bench.suite import load_suite

    path = tmp_path / "laughs.yaml"
    path.write_text(billion_laughs())
    assert path.stat().st_size < 1500
    with bounded(seconds=1.0, megabytes=200), pytest.raises(MribenchError) as e:
        load_suite(str(path))
    assert str(e.value).startswith(f"{path}: not a valid suite (line 3, column")
    assert "aliases are not allowed" in str(e.value) and len(str(e.value)) < 200  # nothing expanded echoed
    assert main(["suite", "run", str(path), "--profile", "smoke", "--dry-run"]) == 2
    assert "aliases are not allowed" in one_line(capsys)


def test_a_task_file_with_an_alias_is_refused(tmp_path):
    from bench.tasks import load_task_file

    text = (Path(__file__).parents[1] / "tasks" / "brain_age.yaml").read_text()
    path = tmp_path / "aliased.yaml"
    path.write_text("anchors: &x [1, 2]\n" + text + "\nextra: *x\n")
    with pytest.raises(MribenchError, match=r"aliased\.yaml: not a valid task spec \(line \d+, column \d+: alias"):
        load_task_file(path)


@pytest.mark.parametrize("digits", [20, 5000])
def test_an_integer_out_of_range_is_one_line(tmp_path, digits, capsys):
    from bench.tasks import load_task_file

    path = tmp_path / "huge.yaml"
    path.write_text("name: x\nencoders: [random]\nprotocols: [linear_probe]\nseeds: " + "9" * digits + "\n")
    assert main(["suite", "run", str(path), "--profile", "smoke", "--dry-run"]) == 2
    err = one_line(capsys)
    assert f"huge.yaml: not a valid suite (line 4, column 8: integer of {digits} digits out of range" in err
    task = (Path(__file__).parents[1] / "tasks" / "brain_age.yaml").read_text()
    path.write_text(task.replace("version: 2", "version: " + "9" * digits))
    with pytest.raises(MribenchError, match=r"huge\.yaml: not a valid task spec \(line \d+, column \d+: integer"):
        load_task_file(path)


def test_an_oversized_yaml_file_is_refused_unread(tmp_path):
    from bench.safe_yaml import MAX_YAML_BYTES
    from bench.suite import load_suite

    path = tmp_path / "big.yaml"
    path.write_text("name: big\n" + "# padding\n" * (MAX_YAML_BYTES // 10 + 1))
    with pytest.raises(MribenchError, match=rf"big\.yaml: not a valid suite \(\d+ bytes, more than the "
                                            rf"{MAX_YAML_BYTES}"):
        load_suite(str(path))


def test_committed_task_specs_parse_as_before():
    """The bounded loader builds what ``yaml.safe_load`` builds: spec hashes (record identity) hold."""
    import yaml

    from bench.safe_yaml import load_yaml

    root = Path(__file__).parents[1]
    files = sorted([*(root / "tasks").rglob("*.yaml"), *(root / "suites").glob("*.yaml")])
    assert files
    for path in files:
        assert load_yaml(path, "file") == yaml.safe_load(path.read_text()), path


def test_a_suite_repeating_an_encoder_is_merged_with_a_note(tmp_path):
    from bench.errors import MribenchWarning
    from bench.suite import MAX_COMBINATIONS, Suite, load_suite, plan

    path = tmp_path / "many.yaml"
    path.write_text("name: many\nencoders: [" + ", ".join(["random"] * 300) + "]\nprotocols: [linear_probe]\n"
                    "tasks: [brain_age, brain_age]\n")
    with pytest.warns(MribenchWarning, match=r"many\.yaml: listed more than once, merged: random \(x300\), "
                                             r"brain_age \(x2\)"):
        suite = load_suite(str(path))
    built = []
    planned = plan(suite, "synth-smoke", get_encoder=lambda name: built.append(name) or _registered(name))
    assert built == ["random"] and planned.jobs == [("random", "brain_age", "linear_probe")]
    wide = Suite(name="wide", encoders=[f"e{i}" for i in range(MAX_COMBINATIONS)], protocols=["a", "b"],
                 tasks=["brain_age"])
    with pytest.raises(MribenchError, match=rf"5000 encoders x 1 tasks x 2 protocols = 10000 combinations, more "
                                            rf"than the {MAX_COMBINATIONS}"):
        plan(wide, "synth-smoke", get_encoder=lambda name: pytest.fail("built an encoder before the count"))


def _registered(name: str):
    from bench.encoders import get_encoder

    return get_encoder(name)


# -- predictions files ---------------------------------------------------------------------------------
def gzip_bomb(megabytes: int = 64) -> bytes:
    """~65 KB that inflates to ``megabytes`` MB of one JSON string."""
    z = gzip.compress(b'{"format": "' + b"0" * (megabytes * MB) + b'"}', compresslevel=9, mtime=0)
    assert len(z) < megabytes * MB / 900
    return z


def test_a_gzip_bomb_is_refused_before_it_inflates():
    from bench.prediction_files import PredictionsFileError, gunzip_bounded

    bomb = gzip_bomb()
    with bounded(seconds=2.0, megabytes=300), pytest.raises(PredictionsFileError, match="decompresses to more than"):
        gunzip_bounded(bomb)


def test_a_gzip_bomb_beside_a_record_is_one_line(tmp_path):
    import hashlib

    from bench.prediction_files import FORMAT
    from bench.results import PredictionsFile, read_predictions_file

    path = tmp_path / "few_shot.predictions.json.gz"
    path.write_bytes(gzip_bomb())
    pinned = PredictionsFile(file=path.name, format=FORMAT, sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                             rows=10)
    with bounded(seconds=2.0, megabytes=300), pytest.raises(MribenchError) as e:
        read_predictions_file(path, pinned, "few_shot.json")
    assert str(e.value).startswith(f"{path}: not a readable predictions file (decompresses to more than")


def test_a_run_past_the_examples_is_refused_before_it_expands():
    from bench.prediction_files import FORMAT, PredictionsFileError, decode

    doc = {"format": FORMAT, "rows": 1, "example_id": ["a"], "participant_id": ["p"],
           "blocks": [{"setting": "s", "seed": 0, "split": "test", "rows": [0, 10**12], "y_true": ["x"],
                       "y_pred": {"micro": [1]}}]}
    with bounded(seconds=1.0, megabytes=50), pytest.raises(PredictionsFileError, match="does not list"):
        decode(doc)


def test_every_committed_predictions_file_is_within_the_limits():
    from bench.prediction_files import gunzip_bounded

    files = sorted((Path(__file__).parents[1] / "leaderboard" / "results").rglob("*.predictions.json.gz"))
    assert files
    for path in files:
        blob = path.read_bytes()
        assert gunzip_bounded(blob) == gzip.decompress(blob), path


# -- the embedding cache -------------------------------------------------------------------------------
class MeanEncoder:
    """A cheap deterministic encoder: each volume's mean and max."""

    def __init__(self):
        from bench.encoders import EncoderCard

        self.card = EncoderCard(name="mean", architecture="mean", n_parameters=0, embed_dim=2,
                                input_space="cpu-small", ssl_method="none")

    def checkpoint_hash(self) -> str:
        return "0" * 64

    def embed(self, volumes):
        flat = volumes.flatten(1)
        return torch.stack([flat.mean(1), flat.amax(1)], dim=1)


@pytest.fixture
def cached(tiny_cohort_dir, tmp_path):
    """A cache filled by a cheap deterministic encoder, its entries and the first embeddings."""
    from bench.data.bids import read_bids
    from bench.data.store import VolumeStore
    from bench.embeddings import EmbeddingCache

    cohort, rows = read_bids(tiny_cohort_dir), np.arange(4)
    store, cache, encoder = VolumeStore(tmp_path / "store"), EmbeddingCache(tmp_path / "emb"), MeanEncoder()
    first = cache.embed(encoder, cohort, rows, store, progress=False)
    entries = sorted((tmp_path / "emb").rglob("*.npy"))
    assert len(entries) == len(rows) and all(Path(f"{e}.sha256").is_file() for e in entries)
    return cohort, rows, store, encoder, entries, first


def overwrite_data(entry: Path, values: np.ndarray) -> None:
    """Rewrite the entry's numbers in place: still a valid .npy of the same shape and dtype."""
    data = entry.read_bytes()
    body = values.astype(np.float32).tobytes()
    entry.write_bytes(data[:len(data) - len(body)] + body)


@pytest.mark.parametrize("bad", ["zeros", "nan"])
def test_a_damaged_but_valid_cache_entry_is_recomputed(cached, tmp_path, bad):
    from bench.embeddings import EmbeddingCache

    cohort, rows, store, encoder, entries, first = cached
    for e in entries[:2]:
        overwrite_data(e, np.zeros(2) if bad == "zeros" else np.full(2, np.nan))
    again = EmbeddingCache(tmp_path / "emb")
    second = again.embed(encoder, cohort, rows, store, progress=False)
    assert again.computed == 2  # the two altered entries, not the encoder's fault, not served
    for r in rows:
        np.testing.assert_array_equal(second[r], first[r])


def test_a_legacy_entry_without_a_checksum_is_trusted_then_sealed(cached, tmp_path):
    from bench.embeddings import EmbeddingCache

    cohort, rows, store, encoder, entries, first = cached
    for e in entries:
        Path(f"{e}.sha256").unlink()
    overwrite_data(entries[0], np.zeros(2))  # a legacy entry of zeros: what a zeroed file reads as
    again = EmbeddingCache(tmp_path / "emb")
    second = again.embed(encoder, cohort, rows, store, progress=False)
    assert again.computed == 1 and all(Path(f"{e}.sha256").is_file() for e in entries)
    for r in rows:
        np.testing.assert_array_equal(second[r], first[r])


# -- the command line ----------------------------------------------------------------------------------
def test_an_unwritable_results_folder_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["run", "--encoder", "random", "--task", "brain_age", "--profile", "smoke",
                 "--results", str(blocker / "results")]) == 2
    assert f"--results {blocker / 'results'}: cannot write there ({blocker} is a file" in one_line(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o500 folder; the file-in-the-way case above "
                                              "covers the same check")
def test_a_read_only_results_folder_is_one_line(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    assert main(["run", "--encoder", "random", "--task", "brain_age", "--profile", "smoke",
                 "--results", str(folder / "results")]) == 2
    assert "cannot write there (Permission denied" in one_line(capsys)


@pytest.mark.parametrize("command", [["run"], ["perf"], ["cross-cohort"], ["submit"]])
def test_help_says_a_file_encoder_runs_its_code(command, capsys):
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    assert "imports that file and runs its code" in " ".join(capsys.readouterr().out.split())


def test_the_readme_says_a_file_encoder_runs_its_code():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Security and trust", 1)[1].split("\n## ", 1)[0]
    assert "imports that file and runs it" in " ".join(section.split())
