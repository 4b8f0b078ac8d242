"""``--device`` / ``--precision`` / ``--loader-workers`` / ``--batch-size`` (bench.devices, issue 33).

On a CPU-only machine: an absent device is one line; CPU fp32 writes nothing new (cache keys, record
config and identity as before, so the committed records stay reused); precision is in a record's
identity and the device in its provenance; fine-tuning, robustness, the segmentation decoder and
pretraining run with the device and precision threaded through (bf16 autocast works on a CPU).
Training in bf16 on a CPU runs with oneDNN off (:func:`right_bf16_kernels`): this torch's oneDNN
gets bf16 conv3d weight gradients wrong on AVX-512 CPUs, and bench refuses to train on them.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.devices import CPU, Compute, compute_from
from bench.errors import MribenchError
from bench.executors import LocalExecutor

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of an absent GPU")


@contextlib.contextmanager
def right_bf16_kernels():
    """torch's own CPU kernels instead of oneDNN's for the block: bf16 conv3d weight gradients right
    on every CPU (slower), so bench's check lets a bf16 network train (:func:`check_can_train`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")  # said on each switch
        with torch.backends.mkldnn.flags(enabled=False):
            yield


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
    """Fine-tuning and the segmentation decoder through the Runner with a fixed micro-batch, robustness
    in bf16, then pretraining with ``device``: the records say where and how they computed, and a bf16
    record is refused (not reused) by an fp32 run. (Training in bf16 is refused on a CPU whose oneDNN
    gets its gradients wrong, and torch's own bf16 kernels take minutes here: the GPU's device check
    fine-tunes in bf16.)"""
    from bench.data.sources import open_cohort
    from bench.profiles import get_profile
    from bench.results import load_record
    from bench.runner import Runner

    monkeypatch.setenv("MRIBENCH_SPLITS", str(tiny_splits_root))
    cohort = open_cohort(tiny_cohort_dir, progress=False)
    profile = replace(get_profile("smoke"), seeds=1, n_boot=20, finetune_epochs=1, segmentation_steps=4)
    micro = Compute(device="cpu", loader_workers=1, batch_size=2)
    bf16 = replace(micro, precision="bf16")

    def runner(compute: Compute) -> Runner:
        return Runner(cohort, profile, tmp_path / "results", progress=False, cache_root=tmp_path / "cache",
                      compute=compute, splits_root=tiny_splits_root)

    results = runner(micro).run("random", ["brain_age"], ["finetune"])
    results += runner(bf16).run("random", ["brain_age"], ["robustness"])
    results += runner(micro).run("random", ["tumour_segmentation"], ["linear_probe"])
    assert [r.status for r in results] == ["done"] * 3, [r.error for r in results]
    for r, precision in zip(results, ("fp32", "bf16", "fp32")):
        record = load_record(r.path)
        assert record.provenance.compute["device"] == "cpu"
        assert record.provenance.config.get("precision", "fp32") == precision
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

    import bench.devices
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
    monkeypatch.setattr(bench.devices, "cpu_bf16_conv3d_grads_hold", lambda: True)  # a CPU with right kernels
    for precision in ("fp32", "bf16"):  # one step: its loss comes before any update, right on every CPU
        method = ssl_recipes()["simclr3d"](config="small", seed=0)
        runs[precision] = pretrain(method, cohort, steps=1, batch_size=4, out_dir=tmp_path / precision,
                                   progress=False, checkpoint_every=1, device="cpu", precision=precision)
    assert all(np.isfinite(r.losses).all() for r in runs.values())
    assert runs["bf16"].losses != runs["fp32"].losses  # autocast really ran
    cards = {p: json.loads(r.card_path.read_text())["pretraining_data"] for p, r in runs.items()}
    assert cards["bf16"]["precision"] == "bf16" and "precision" not in cards["fp32"]
    with pytest.raises(MribenchError, match="--precision fp8"):
        pretrain(ssl_recipes()["simclr3d"](config="small"), cohort, steps=1, out_dir=tmp_path / "x",
                 progress=False, precision="fp8")
    assert not (tmp_path / "x").exists()  # refused before anything is written


# -- --device auto is resolved where the job runs (issue 33) --------------------------------------------
def _cuda_seen(monkeypatch, n: int) -> None:
    """Make ``--device`` resolve against ``n`` CUDA devices, as on a launcher or a worker that has them
    (torch itself is left alone: the random encoder's fork_rng would touch the devices)."""
    import bench.devices

    monkeypatch.setattr(bench.devices, "cuda_count", lambda: n)


class _WorkerWithoutCuda(LocalExecutor):
    """An executor that runs each job as a Dask worker does (not in the launcher's process state:
    no workspace, no reraise), on a machine whose torch sees no CUDA device; the rest of its
    lifecycle (cancel, close, context) is the local executor's."""

    name, in_process = "dask", False

    def __init__(self):
        self.asked: list[str] = []
        self.outcomes: list = []

    def map(self, fn, jobs, kwargs, *, shared, local):
        for job in jobs:
            self.asked.append(shared["settings"].compute.device)
            with pytest.MonkeyPatch.context() as worker:
                _cuda_seen(worker, 0)
                self.outcomes.append(fn(job, **kwargs, **shared))
            yield job, self.outcomes[-1]

    def describe(self) -> str:
        return "dask (a worker without CUDA)"


def test_a_dask_job_resolves_device_on_its_worker_not_on_the_launcher(tiny_cohort_dir, tiny_splits_root, tmp_path,
                                                                      monkeypatch):
    """A launcher that sees two GPUs sends ``auto`` as asked; the worker, which has none, resolves it
    to the CPU (the record says so). ``cuda:1``, there on the launcher, fails the job on the worker
    with the one-line error the local executor gives up front."""
    import bench.commands.run as run_command
    from bench.cli import main
    from bench.results import load_record

    monkeypatch.setenv("MRIBENCH_SPLITS", str(tiny_splits_root))
    _cuda_seen(monkeypatch, 2)  # the launcher
    base = ["run", "--encoder", "random", "--task", "brain_age", "--cohort", str(tiny_cohort_dir), "--profile",
            "smoke", "--seeds", "1", "--no-progress", "--executor", "dask"]
    for device, code in (("auto", 0), ("cuda:1", 1)):
        worker = _WorkerWithoutCuda()
        monkeypatch.setattr(run_command, "executor_from", lambda args, w=worker: w)
        assert main([*base, "--device", device, "--results", str(tmp_path / device.replace(":", ""))]) == code
        assert worker.asked == [device]  # the job carried the text, unresolved
        (result,) = worker.outcomes
        if code == 0:
            assert result.status == "done" and load_record(result.path).provenance.compute["device"] == "cpu"
        else:
            assert result.error.startswith("MribenchError: --device cuda:1: no such CUDA device here; present: cpu")


def test_the_local_executor_resolves_device_where_the_command_starts(monkeypatch):
    """Local runs resolve as before, up front (an absent device refused before the cohort); runs sent
    to Dask keep the text, checked for spelling and fp16-on-cpu only; a resolved device stays itself
    when the job resolves it again in the same process."""
    from argparse import Namespace

    from bench.commands._args import compute_for_executor
    from bench.runner import RunSettings, on_this_machine

    def args(device: str, executor: str = "local", precision: str = "fp32", scheduler: str | None = None):
        return Namespace(device=device, precision=precision, loader_workers=0, micro_batch=None,
                         executor=executor, scheduler=scheduler, cluster=None)

    _cuda_seen(monkeypatch, 1)
    assert compute_for_executor(args("auto")) == Compute(device="cuda:0")
    assert compute_for_executor(args("auto", "dask")).device == "auto"
    assert compute_for_executor(args(" CUDA:1", scheduler="tcp://127.0.0.1:1")).device == "cuda:1"  # implies dask
    settings = RunSettings(profile=None, results_dir=Path("r"), cache_root=Path("c"), compute=Compute("cuda:0", "bf16"))
    assert on_this_machine(settings) == settings
    _cuda_seen(monkeypatch, 0)
    assert compute_for_executor(args("auto")) == CPU
    with pytest.raises(MribenchError, match=r"^--device cuda: no such CUDA device here; present: cpu"):
        compute_for_executor(args("cuda"))
    assert compute_for_executor(args("cuda", "dask")) == Compute(device="cuda")
    with pytest.raises(MribenchError, match="not a device"):
        compute_for_executor(args("gpu0", "dask"))
    with pytest.raises(MribenchError, match="--precision fp16 needs a CUDA device"):
        compute_for_executor(args("cpu", "dask", "fp16"))
    assert compute_for_executor(args("auto", "dask", "fp16")).device == "auto"  # a GPU worker may resolve it


# -- bench pretrain --precision and --resume -------------------------------------------------------------
def _used_scaler() -> torch.amp.GradScaler:
    """An fp16 scaler (on the CPU, as torch 2 allows) that has backed off once and then grown for
    two steps: a state a fresh scaler does not have."""
    net = torch.nn.Linear(3, 1)
    optimiser = torch.optim.SGD(net.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0, growth_interval=7)
    for factor in (float("inf"), 1.0, 1.0):
        optimiser.zero_grad()
        scaler.scale(net(torch.ones(1, 3)).sum() * factor).backward()
        scaler.step(optimiser)
        scaler.update()
    return scaler


def test_an_fp16_checkpoint_keeps_its_gradient_scaler_and_others_only_their_precision(tmp_path):
    """``last.pt`` of an fp16 run holds the scaler's state (loadable with weights_only=True) and a
    resume starts from it, not from a fresh 2**16; fp32 / bf16 checkpoints hold no scaler."""
    import json

    from bench.distributed import DistInfo
    from bench.pretrain import _checkpoint, read_pretrain_state, resumed_scaler

    net = torch.nn.Linear(3, 1)
    optimiser = torch.optim.SGD(net.parameters(), lr=0.1)
    rng = np.random.default_rng(0)
    scaler = _used_scaler()
    assert scaler.state_dict()["scale"] == 512.0 and scaler.state_dict()["_growth_tracker"] == 2
    for precision, used in (("fp16", scaler), ("bf16", torch.amp.GradScaler("cpu", enabled=False))):
        last = tmp_path / precision / "last.pt"
        last.parent.mkdir()
        _checkpoint(last, 3, net, optimiser, rng, rng, [1.0, 2.0, 3.0], DistInfo(), scaler=used, precision=precision)
        meta = json.loads(torch.load(last, map_location="cpu", weights_only=True)["meta"])
        state = read_pretrain_state(last)
        assert meta["precision"] == state["precision"] == precision
        resumed = resumed_scaler(Compute(device="cpu", precision=precision), state)
        if precision == "fp16":
            assert meta["grad_scaler"] == state["grad_scaler"] == scaler.state_dict()
            assert resumed.state_dict() == scaler.state_dict() and resumed.get_scale() == 512.0
        else:
            assert "grad_scaler" not in meta and "grad_scaler" not in state and not resumed.is_enabled()


def test_a_resume_in_another_precision_is_refused_before_any_work(tiny_cohort_dir, tiny_splits_root, tmp_path,
                                                                  capsys, monkeypatch):
    """A bf16 run resumed with --precision fp32 is one line naming both precisions and the checkpoint,
    which is left as it was; the same precision resumes. A checkpoint without a precision is fp32's."""
    from bench.cli import main
    from bench.data.sources import open_cohort
    from bench.pretrain import check_resume_precision, pretrain, read_pretrain_state, ssl_recipes

    monkeypatch.setenv("MRIBENCH_SPLITS", str(tiny_splits_root))
    out, cohort = tmp_path / "bf16", open_cohort(tiny_cohort_dir, progress=False)
    with right_bf16_kernels():  # slow in bf16 (11 s a step of 8 volumes here): 2 volumes a step
        pretrain(ssl_recipes()["simclr3d"](config="small", seed=0), cohort, steps=1, batch_size=2, out_dir=out,
                 progress=False, checkpoint_every=1, device="cpu", precision="bf16")
    before = (out / "last.pt").read_bytes()
    resume = ["pretrain", "--encoder", "simclr3d", "--steps", "2", "--batch-size", "2", "--device", "cpu", "--resume",
              "--out", str(out), "--cohort", str(tiny_cohort_dir), "--no-progress", "--precision"]
    assert main([*resume, "fp32"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--precision fp32" in err and "--precision bf16" in err, err
    assert str(out / "last.pt") in " ".join(err.split()) and (out / "last.pt").read_bytes() == before
    with right_bf16_kernels():
        assert main([*resume, "bf16"]) == 0 and read_pretrain_state(out / "last.pt")["step"] == 2
    with pytest.raises(MribenchError, match=r"written with --precision fp32"):
        check_resume_precision({"step": 1}, "bf16", out / "old.pt")
    check_resume_precision({"step": 1}, "fp32", out / "old.pt")


# -- bf16 training on a CPU only where its conv3d weight gradients hold ---------------------------------
def test_the_bf16_gradient_check_holds_with_torchs_own_kernels():
    """The check computes a real gradient: torch's own CPU kernels pass it on any CPU (oneDNN's
    verdict depends on the CPU: wrong on AVX-512 with torch 2.13, right on AVX2)."""
    from bench.devices import cpu_bf16_conv3d_grads_hold

    with right_bf16_kernels():
        assert cpu_bf16_conv3d_grads_hold() is True


def test_the_bf16_gradient_benchmark_covers_its_grid_and_says_where_it_ran(tmp_path):
    """benchmarks/bf16_conv3d_gradients.py: every map and channel count with both kernels, strict
    JSON, the CPU named; torch's own kernels are right everywhere (oneDNN's depend on the CPU)."""
    import json

    from benchmarks import bf16_conv3d_gradients as bench_bf16

    out = tmp_path / "b.json"
    assert bench_bf16.main(["--json", str(out)]) == 0
    report = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in strict JSON"))
    grid = len(bench_bf16.MAP_SHAPES) * len(bench_bf16.CHANNELS)
    assert [r["kernels"] for r in report["rows"]] == ["oneDNN"] * grid + ["torch"] * grid
    own = [r for r in report["rows"] if r["kernels"] == "torch"]
    assert not any(r["weight_gradient_wrong"] for r in own)
    assert all(r[k] < bench_bf16.WRONG_ABOVE for r in own for k in ("output", "input_gradient", "weight_gradient"))
    assert report["torch"] == torch.__version__ and "model" in report["cpu"]


def test_bf16_training_is_refused_where_the_gradients_are_wrong(tiny_cohort_dir, tiny_splits_root, tmp_path,
                                                               capsys, monkeypatch):
    """Where the check fails, ``bench pretrain --precision bf16`` on the CPU is one line naming the
    reason before anything is written, a fine-tuning job fails with it before reading a scan, a job
    that trains nothing (robustness) still runs in bf16, and fp32 or a CUDA device is never checked."""
    import bench.devices
    from bench.cli import main
    from bench.data.sources import open_cohort
    from bench.devices import check_can_train
    from bench.profiles import get_profile
    from bench.runner import Runner

    monkeypatch.setattr(bench.devices, "cpu_bf16_conv3d_grads_hold", lambda: False)
    monkeypatch.setenv("MRIBENCH_SPLITS", str(tiny_splits_root))
    code = main(["pretrain", "--encoder", "simclr3d", "--precision", "bf16", "--device", "cpu", "--no-progress",
                 "--out", str(tmp_path / "pre"), "--cohort", str(tiny_cohort_dir)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "--precision bf16 cannot train a network on a CPU" in err and "fp32" in err, err
    assert not (tmp_path / "pre").exists()

    profile = replace(get_profile("smoke"), seeds=1, n_boot=20, finetune_epochs=1)
    runner = Runner(open_cohort(tiny_cohort_dir, progress=False), profile, tmp_path / "results", progress=False,
                    cache_root=tmp_path / "cache", compute=Compute(device="cpu", precision="bf16"),
                    splits_root=tiny_splits_root, keep_going=True)
    tuned, robust = runner.run("random", ["brain_age"], ["finetune", "robustness"])
    assert tuned.status == "failed: MribenchError" and "weight gradients are wrong" in tuned.error, tuned.error
    assert robust.status == "done", robust.error
    for fine in (CPU, Compute(device="cpu", precision="fp32"), Compute(device="cuda:0", precision="bf16")):
        check_can_train(fine)
