"""The job grid on Dask: a LocalCluster on loopback gives the records the local executor gives;
dask-jobqueue job scripts carry the resources asked for; resource annotations per job."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import MribenchError
from bench.executors import DaskExecutor, jobqueue_cluster, local_cluster, make_executor
from bench.jobs import Job
from scale_helpers import assert_same_numbers, numbers

GRID = ["--encoder", "random", "--encoder", "oracle", "--task", "sequence_classification", "--task", "tumour_marker",
        "--protocol", "linear_probe", "--protocol", "fractions"]
N_JOBS = 2 * 2 * 2


def run_args(cohort: Path, results: Path, *extra: str) -> list[str]:
    return ["run", *GRID, "--cohort", str(cohort), "--profile", "smoke", "--seeds", "1", "--results", str(results),
            "--no-progress", *extra]


@pytest.fixture
def tiny_env(tiny_splits_root, monkeypatch):
    monkeypatch.setenv("MRIBENCH_SPLITS", str(tiny_splits_root))


@pytest.mark.slow
def test_dask_local_cluster_gives_the_records_of_the_local_executor(tiny_cohort_dir, tiny_env, tmp_path, monkeypatch,
                                                                     capsys):
    import os

    start = time.perf_counter()
    assert main(run_args(tiny_cohort_dir, tmp_path / "local")) == 0
    local_s = time.perf_counter() - start
    # the Dask run gets its own embedding cache (the workers embed afresh); the volume store is shared
    shared = Path(os.environ["MRIBENCH_CACHE"])
    (tmp_path / "dask-cache").mkdir()
    (tmp_path / "dask-cache" / "store").symlink_to(shared / "store", target_is_directory=True)
    monkeypatch.setenv("MRIBENCH_CACHE", str(tmp_path / "dask-cache"))
    start = time.perf_counter()
    with local_cluster(2) as cluster:
        addresses = [cluster.scheduler_address, *cluster.scheduler_info["workers"]]
        assert len(addresses) == 3 and all(a.startswith("tcp://127.0.0.1:") for a in addresses), addresses
        args = run_args(tiny_cohort_dir, tmp_path / "dask", "--scheduler", cluster.scheduler_address)
        assert main(args) == 0
        dask_s = time.perf_counter() - start
        written = {p: p.stat().st_mtime_ns for p in (tmp_path / "dask").rglob("*.json")}
        assert main(args) == 0  # a rerun finds every record and rewrites none
        assert {p: p.stat().st_mtime_ns for p in (tmp_path / "dask").rglob("*.json")} == written
    out = " ".join(capsys.readouterr().out.split())
    assert "dask (existing scheduler, 2 worker(s) at tcp://127.0.0.1:" in out
    assert list((tmp_path / "dask-cache" / "embeddings").rglob("*.npy"))  # computed by the workers

    local, dask = numbers(tmp_path / "local"), numbers(tmp_path / "dask")
    assert len(local) == N_JOBS
    assert_same_numbers(dask, local)
    assert any(r["main_score"] is not None for r in local.values())
    print(f"\n[executors] {N_JOBS} jobs: local {local_s:.1f} s, dask LocalCluster (2 workers, incl. start) {dask_s:.1f} s")


def test_executor_dask_starts_a_cluster_that_listens_on_loopback_only():
    import psutil

    with make_executor("dask", workers=1, device="cpu") as executor:  # CPU workers, on a GPU machine too
        assert executor.name == "dask" and not executor.in_process
        assert "local cluster, 1 worker(s) at tcp://127.0.0.1:" in executor.describe()
        assert executor.offered_resources() == {"CPU"}
        me = psutil.Process()
        listening = [c.laddr for proc in (me, *me.children(recursive=True))
                     for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        # scheduler, its HTTP endpoint, nanny, worker and the worker's HTTP endpoint: all on loopback
        assert len(listening) >= 4 and {a.ip for a in listening} == {"127.0.0.1"}, listening


def test_slurm_job_script_carries_the_resources():
    cluster = jobqueue_cluster("slurm", cores=4, memory="8GB", gpus=1, walltime="02:00:00", queue="gpu",
                               account="neuro", interface="lo")
    try:
        script = cluster.job_script()
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    finally:
        cluster.close()
    lines = script.splitlines()
    for directive in ("#SBATCH --cpus-per-task=4", "#SBATCH --mem=8G", "#SBATCH -t 02:00:00", "#SBATCH -p gpu",
                      "#SBATCH -A neuro", "#SBATCH --gres=gpu:1"):
        assert directive in lines, (directive, script)
    command = lines[-1]
    assert "--nthreads 4" in command and "--resources CPU=4,GPU=1" in command
    assert "--interface lo" in command and cluster.scheduler_address in command


def test_pbs_job_script_asks_for_gpus_in_the_select_statement():
    cluster = jobqueue_cluster("pbs", cores=8, memory="32GB", gpus=2, interface="lo")
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    # 32 GB = 29.8 GiB, rounded up in the GiB unit PBS calls GB
    assert "#PBS -l select=1:ncpus=8:ngpus=2:mem=30GB" in script.splitlines()
    assert "--resources CPU=8,GPU=2" in script


def test_a_batch_cluster_needs_an_interface_and_executors_reject_ambiguity():
    with pytest.raises(MribenchError, match="name the network interface.*--interface ib0"):
        jobqueue_cluster("slurm", cores=2, memory="4GB")
    with pytest.raises(MribenchError, match="either --scheduler .* or --cluster"):
        make_executor("dask", scheduler="tcp://127.0.0.1:1", cluster="slurm")
    assert make_executor("local").name == "local"


def test_jobs_ask_for_a_gpu_only_when_they_train_and_a_worker_offers_one():
    probe = Job("random", "random", "brain_age", 1, "linear_probe")
    tune = Job("random", "random", "brain_age", 1, "finetune", trains_network=True)
    ex = DaskExecutor(client=None, resources={"CPU", "GPU"})
    assert ex.resources_for(probe, {"CPU", "GPU"}) == {"CPU": 1.0}
    assert ex.resources_for(tune, {"CPU", "GPU"}) == {"CPU": 1.0, "GPU": 1.0}
    assert ex.resources_for(tune, {"CPU"}) == {"CPU": 1.0}
    assert ex.resources_for(tune, set()) is None  # workers declaring nothing: no annotation, no deadlock


def test_grid_is_one_job_per_record_and_knows_its_files(tmp_path):
    from bench.jobs import expand_grid
    from bench.tasks import get_task

    jobs = expand_grid([("random", "random", {}), ("f.py:Enc", "my enc", {"weights": "w.pt"})],
                       [get_task("brain_age"), get_task("tumour_segmentation"), get_task("brain_age")],
                       ["linear_probe", "finetune", "linear_probe"])
    assert [j.key for j in jobs[:4]] == ["random/brain_age@v2/linear_probe", "random/brain_age@v2/finetune",
                                        "random/tumour_segmentation@v2/linear_probe",
                                        "random/tumour_segmentation@v2/finetune"]
    assert len(jobs) == 8 and len({j.key for j in jobs}) == 8
    assert [j.trains_network for j in jobs[:4]] == [False, True, True, True]
    mine = jobs[4]
    assert mine.encoder_kwargs == (("weights", "w.pt"),) and mine.key == "my-enc/brain_age@v2/linear_probe"
    assert mine.record_path(tmp_path) == tmp_path / "my-enc" / "brain_age@v2" / "linear_probe.json"
    assert mine.lock_path(tmp_path) == tmp_path / ".jobs" / "my-enc" / "brain_age@v2" / "linear_probe.lock"
    assert mine.failure_path(tmp_path).name == "linear_probe.failed"
    import pickle

    assert pickle.loads(pickle.dumps(mine)) == mine  # shipped to Dask workers as is


# ----------------------------------------------------------------------------- one worker per GPU
def test_visible_gpus_are_the_names_cuda_visible_devices_gives_else_the_torch_count(monkeypatch):
    import torch

    from bench.executors import visible_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 3")
    assert visible_gpus() == ["2", "3"]  # a node's scheduler gave this job cards 2 and 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-5f1c")
    assert visible_gpus() == ["GPU-5f1c"]
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert visible_gpus() == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert visible_gpus() == ["0", "1", "2", "3"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert visible_gpus() == []


def test_each_gpu_worker_is_pinned_to_its_own_card():
    from bench.executors import gpu_worker_options

    options = [gpu_worker_options(gpu) for gpu in ("0", "1")]
    assert [o["env"] for o in options] == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    assert all(o["nthreads"] == 1 and o["resources"] == {"CPU": 1, "GPU": 1} and o["host"] == "127.0.0.1"
               for o in options)


def test_dask_cuda_is_used_where_installed(monkeypatch):
    pytest.importorskip("distributed")
    import types

    from bench.executors import local_gpu_cluster

    made = {}
    fake = types.ModuleType("dask_cuda")
    fake.LocalCUDACluster = lambda **kw: made.update(kw) or "cuda cluster"
    monkeypatch.setitem(sys.modules, "dask_cuda", fake)
    assert local_gpu_cluster(["0", "1"]) == "cuda cluster"
    assert made["CUDA_VISIBLE_DEVICES"] == "0,1" and made["n_workers"] == 2 and made["threads_per_worker"] == 1
    assert made["host"] == "127.0.0.1" and made["dashboard_address"] is None
    assert made["resources"] == {"CPU": 1, "GPU": 1}


@pytest.mark.slow
def test_a_local_cluster_on_a_gpu_node_has_one_pinned_worker_per_gpu(monkeypatch):
    pytest.importorskip("distributed")
    import os

    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # the plain Dask path, even where dask-cuda is installed
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")    # two cards, as far as the executor can tell
    with make_executor("dask") as executor:
        assert executor.offered_resources() == {"CPU", "GPU"}
        assert "one worker per GPU (0, 1)" in executor.describe()
        executor.client.wait_for_workers(2)
        pinned = executor.client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        assert sorted(pinned.values()) == ["0", "1"]
        workers = executor.client.scheduler_info()["workers"].values()
        assert [w["resources"] for w in workers] == [{"CPU": 1, "GPU": 1}] * 2
        assert all(w["host"] == "127.0.0.1" for w in workers)
    with make_executor("dask", workers=1, device="cpu") as executor:  # --device cpu: CPU workers as before
        assert executor.offered_resources() == {"CPU"}
