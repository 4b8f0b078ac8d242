"""``--device`` / ``--precision`` / ``--loader-workers`` / ``--batch-size`` (bench.devices, issue 33).

On a CPU-only machine: an absent device is one line; CPU fp32 writes nothing new (cache keys, record
config and identity as before, so the committed records stay reused); precision is in a record's
identity and the device in its provenance; fine-tuning, robustness, the segmentation decoder and
pretraining run with the device and precision threaded through (bf16 autocast works on a CPU).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.devices import CPU, Compute, compute_from
from bench.errors import MribenchError

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of an absent GPU")


@needs_no_cuda
def test_an_absent_device_is_one_line(capsys, tmp_path):
    from bench.cli import main

    code = main(["run", "--encoder", "random", "--task", "conversion", "--device", "cuda",
                 "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "--device cuda" in err and "present: cpu" in err


def test_auto_is_the_cpu_here_and_options_are_checked():
    if not torch.cuda.is_available():
        assert compute_from("auto") == CPU and CPU.is_default and CPU.key_parts() == ()
    with pytest.raises(MribenchError, match="not a device"):
        compute_from("gpu0")
    with pytest.raises(MribenchError, match="--precision"):
        compute_from("cpu", "int8")
    with pytest.raises(MribenchError, match="--batch-size"):
        compute_from("cpu", batch_size=0)


def test_identity_and_config_carry_precision_and_batch_only_when_not_default():
    from bench.runner import compute_config, compute_identity

    assert compute_config(CPU, True) == {} and compute_config(Compute(device="cuda:0"), True) == {}
    bf16 = Compute(precision="bf16", batch_size=2)
    assert compute_config(bf16, True) == {"precision": "bf16", "batch_size": 2}
    assert compute_config(bf16, False) == {"precision": "bf16"}  # a frozen encoder's numbers ignore it
    assert compute_identity(CPU, True) == {"precision": "fp32", "batch size": None}


def test_committed_records_read_as_cpu_fp32():
    """A record written before these options has no precision: its identity says fp32, default batch."""
    from bench.paths import repo_root
    from bench.results import load_record, record_identity

    path = repo_root() / "leaderboard" / "results" / "simclr3d" / "conversion@v1" / "linear_probe.json"
    if not path.is_file():
        pytest.skip("no committed record here")
    record = load_record(path)
    identity = record_identity(record)
    assert identity["precision"] == "fp32" and identity["batch size"] is None
    assert record.provenance.compute is None


def test_embedding_key_and_loader_workers(tiny_cohort_dir, tmp_path):
    """CPU fp32 keeps the key embeddings had before; another precision is another key; a DataLoader
    with worker processes gives the very vectors of the one reader thread."""
    from bench.data.sources import open_cohort
    from bench.data.store import VolumeStore
    from bench.embeddings import EmbeddingCache, encoder_key
    from bench.encoders import get_encoder

    encoder = get_encoder("random")
    assert encoder_key(encoder) == encoder_key(encoder, CPU) != encoder_key(encoder, Compute(precision="bf16"))
    cohort = open_cohort(tiny_cohort_dir, progress=False)
    rows = np.arange(min(10, len(cohort)))
    store = VolumeStore(tmp_path / "store")
    thread = EmbeddingCache(tmp_path / "a").embed(encoder, cohort, rows, store, progress=False, batch_size=4)
    loader = EmbeddingCache(tmp_path / "b").embed(encoder, cohort, rows, store, progress=False, batch_size=4,
                                                  compute=replace(CPU, loader_workers=2))
    assert all(np.array_equal(thread[r], loader[r]) for r in map(int, rows))
    bf16 = EmbeddingCache(tmp_path / "c").embed(encoder, cohort, rows, store, progress=False, batch_size=4,
                                                compute=Compute(precision="bf16"))
    assert not all(np.array_equal(thread[r], bf16[r]) for r in map(int, rows))  # autocast really ran


def test_networks_run_with_the_device_and_precision_threaded_through(tiny_cohort_dir, tiny_splits_root,
                                                                     tmp_path, monkeypatch):
    """Fine-tuning, robustness and the segmentation decoder through the Runner in bf16 with a fixed
    micro-batch, then pretraining with ``device``: the records say where and how they computed, and a
    bf16 record is refused (not reused) by an fp32 run."""
    from bench.data.sources import open_cohort
    from bench.profiles import get_profile
    from bench.results import load_record
    from bench.runner import Runner

    monkeypatch.setenv("MRIBENCH_SPLITS", str(tiny_splits_root))
    cohort = open_cohort(tiny_cohort_dir, progress=False)
    profile = replace(get_profile("smoke"), seeds=1, n_boot=20, finetune_epochs=1, segmentation_steps=4)
    bf16 = Compute(device="cpu", precision="bf16", loader_workers=1, batch_size=2)
    runner = Runner(cohort, profile, tmp_path / "results", progress=False, cache_root=tmp_path / "cache",
                    compute=bf16, splits_root=tiny_splits_root)
    results = runner.run("random", ["brain_age"], ["finetune", "robustness"])
    results += runner.run("random", ["tumour_segmentation"], ["linear_probe"])
    assert [r.status for r in results] == ["done"] * 3, [r.error for r in results]
    for r in results:
        record = load_record(r.path)
        assert record.provenance.compute["device"] == "cpu" and record.provenance.config["precision"] == "bf16"
    tuned = load_record(results[0].path).provenance
    assert tuned.config["batch_size"] == 2 and tuned.compute["micro_batch"] == 2
    assert tuned.compute["bit_reproducible"] is True and "cudnn_deterministic" in tuned.compute
    assert "batch_size" not in load_record(results[1].path).provenance.config  # robustness trains no network
    fp32 = Runner(cohort, profile, tmp_path / "results", progress=False, cache_root=tmp_path / "cache",
                  splits_root=tiny_splits_root)
    with pytest.raises(MribenchError, match="precision bf16 -> fp32"):
        fp32.run("random", ["brain_age"], ["robustness"])

    from bench.pretrain import pretrain, ssl_recipes

    method = ssl_recipes()["simclr3d"](config="small", seed=0)
    done = pretrain(method, cohort, steps=2, batch_size=4, out_dir=tmp_path / "pre", progress=False,
                    checkpoint_every=2, device="cpu")
    assert done.steps == 2 and np.isfinite(done.losses).all()


def test_pretrain_takes_precision_like_run(tiny_cohort_dir, tiny_splits_root, tmp_path, capsys, monkeypatch):
    """``bench pretrain --precision``: fp16 on a CPU is one line before any work; bf16 autocasts the
    loss's forward (other losses than fp32's, still finite) and says so in the card; fp32 writes
    the card it always wrote (no precision key)."""
    import json

    from bench.cli import main
    from bench.data.sources import open_cohort
    from bench.pretrain import pretrain, ssl_recipes

    monkeypatch.setenv("MRIBENCH_SPLITS", str(tiny_splits_root))
    code = main(["pretrain", "--encoder", "simclr3d", "--precision", "fp16", "--device", "cpu",
                 "--out", str(tmp_path / "fp16"), "--cohort", str(tiny_cohort_dir)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--precision fp16" in err, err
    assert not (tmp_path / "fp16").exists()
    cohort = open_cohort(tiny_cohort_dir, progress=False)
    runs = {}
    for precision in ("fp32", "bf16"):
        method = ssl_recipes()["simclr3d"](config="small", seed=0)
        runs[precision] = pretrain(method, cohort, steps=2, batch_size=4, out_dir=tmp_path / precision,
                                   progress=False, checkpoint_every=2, device="cpu", precision=precision)
    assert all(np.isfinite(r.losses).all() for r in runs.values())
    assert runs["bf16"].losses != runs["fp32"].losses  # autocast really ran
    cards = {p: json.loads(r.card_path.read_text())["pretraining_data"] for p, r in runs.items()}
    assert cards["bf16"]["precision"] == "bf16" and "precision" not in cards["fp32"]
    with pytest.raises(MribenchError, match="--precision fp8"):
        pretrain(ssl_recipes()["simclr3d"](config="small"), cohort, steps=1, out_dir=tmp_path / "x",
                 progress=False, precision="fp8")
    assert not (tmp_path / "x").exists()  # refused before anything is written
