"""Where the jobs of a grid run: in this process one after another (``local``), or on Dask workers.

``dask`` covers three set-ups with one code path, all through Dask distributed (nothing home-made):
a ``LocalCluster`` of worker processes on this machine, an existing scheduler (``--scheduler
ADDR``), or a SLURM / PBS allocation through dask-jobqueue (``--cluster slurm|pbs``), which is what
imaging labs run on. The Dask parts are an optional extra (``pip install .[cluster]``) and are
imported only when asked for. On a machine with GPUs the local cluster has one single-threaded
worker per visible GPU, each pinned to its card through ``CUDA_VISIBLE_DEVICES`` (dask-cuda's
``LocalCUDACluster`` where installed), so a suite spreads over a node's GPUs.

Jobs write their own records (atomically, under their lock) to the results folder, so that folder
must be shared by the workers (as a cluster's home or scratch file system is). Jobs carry resource
annotations: ``CPU=1`` each, and ``GPU=1`` for jobs that train a network (fine-tuning, segmentation
decoders) when the workers have GPUs, so Dask places them on GPU workers and never runs more of
them on a worker than it has GPUs.

Network discipline: every server we start binds to an explicit address (127.0.0.1 for a local
cluster; the interface the user names for a batch cluster), because with none Dask looks up
"its own" IP by routing a UDP socket towards a public address; no dashboard is started.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, Iterable, Iterator

from bench.errors import MribenchError
from bench.jobs import Job

#: A job's outcome as an executor reports it: what the job returned, or the exception that stopped it
#: before it could report anything itself (a worker that died, a module a worker cannot import).
Outcome = tuple[Job, Any]


class LocalExecutor:
    """Jobs one after another in this process: today's behaviour, nothing to set up."""

    name = "local"
    in_process = True

    def map(self, fn: Callable, jobs: Iterable[Job], kwargs: dict, *, shared: dict, local: dict
            ) -> Iterator[Outcome]:
        """``fn(job, **kwargs, **shared, **local)`` for each job, in order. Exceptions propagate:
        in-process, the caller decides (``reraise``) whether a failing job stops the grid."""
        for job in jobs:
            yield job, fn(job, **kwargs, **shared, **local)

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return "local (this process)"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DaskExecutor:
    """Jobs as Dask tasks on a distributed cluster; results are yielded as jobs finish.

    ``resources``: the worker resources this cluster is known to offer (``{"CPU", "GPU"}``), or
    None to ask the scheduler what its workers declare (an existing scheduler).
    """

    name = "dask"
    in_process = False

    def __init__(self, client, *, cluster=None, resources: set[str] | None = None, what: str = ""):
        self.client = client
        self.cluster = cluster
        self._resources = resources
        self._futures: list = []
        self._what = what

    def offered_resources(self) -> set[str]:
        if self._resources is not None:
            return self._resources
        workers = self.client.scheduler_info().get("workers", {})
        return {name for w in workers.values() for name in (w.get("resources") or {})}

    def resources_for(self, job: Job, offered: set[str]) -> dict[str, float] | None:
        """A job's resource annotation, restricted to resources some worker offers (a task asking
        for a resource no worker has would wait forever)."""
        want = {"CPU": 1.0}
        if job.trains_network:
            want["GPU"] = 1.0
        want = {k: v for k, v in want.items() if k in offered}
        return want or None

    def map(self, fn: Callable, jobs: Iterable[Job], kwargs: dict, *, shared: dict, local: dict
            ) -> Iterator[Outcome]:
        """Submit every job at once; ``shared`` objects (the cohort table...) are shipped to the
        workers once instead of with every task; ``local`` ones mean nothing elsewhere and are dropped."""
        from distributed import as_completed

        jobs = list(jobs)
        if not jobs:
            return
        self.client.wait_for_workers(1)  # a batch queue may take a while to start the first one
        offered = self.offered_resources()
        scattered = {k: self.client.scatter(v, broadcast=True, hash=False) for k, v in shared.items()}
        run = uuid.uuid4().hex[:8]
        by_future = {}
        rank: dict[tuple, int] = {}
        for job in jobs:
            # the first job of each (encoder, task) goes first: jobs of one task share its embeddings,
            # so starting different tasks side by side keeps workers from waiting on each other
            group = (job.encoder, job.encoder_kwargs, job.task, job.task_version)
            rank[group] = rank.get(group, -1) + 1
            fut = self.client.submit(fn, job, **kwargs, **scattered, key=f"mribench-{job.key}-{run}", pure=False,
                                     resources=self.resources_for(job, offered), priority=-rank[group])
            by_future[fut] = job
        self._futures = list(by_future)
        for fut in as_completed(self._futures):
            try:
                yield by_future[fut], fut.result()
            except Exception as e:  # the job could not report (worker died, import error...)
                yield by_future[fut], e

    def cancel(self) -> None:
        if self._futures:
            self.client.cancel(self._futures)

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def describe(self) -> str:
        workers = self.client.scheduler_info().get("workers", {})
        return f"dask ({self._what}{', ' if self._what else ''}{len(workers)} worker(s) at {self.client.scheduler.address})"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------------------- set-up


def _require_distributed():
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise MribenchError("--executor dask needs Dask distributed: pip install 'mribench[cluster]' "
                            "(or pip install 'dask[distributed]' dask-jobqueue)") from None


def local_cluster(workers: int = 2, host: str = "127.0.0.1"):
    """A Dask LocalCluster of single-threaded worker processes bound to ``host`` (loopback by
    default), without a dashboard: nothing listens on, or probes, any other address."""
    _require_distributed()
    from distributed import LocalCluster

    if workers < 1:
        raise MribenchError(f"--workers must be at least 1 (got {workers})")
    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host=host, protocol="tcp",
                        dashboard_address=None, resources={"CPU": 1})


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them (indices or UUIDs), else
    ``0 .. n-1`` for the devices torch counts; none without torch or CUDA.

    Why the names rather than a count: a worker is pinned by setting its ``CUDA_VISIBLE_DEVICES`` to
    one of them, and on a node whose scheduler already restricted this process to some GPUs the
    only valid names are the ones it was given."""
    import os

    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:  # "" or "-1": CUDA hidden on purpose
        names = [name.strip() for name in listed.split(",") if name.strip()]
        return [] if not names or names[0].startswith("-") else names
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def gpu_worker_options(gpu: str, host: str = "127.0.0.1") -> dict[str, Any]:
    """One GPU worker's options: a single thread, its GPU pinned through ``CUDA_VISIBLE_DEVICES``
    (the worker's ``cuda:0`` is that GPU, so a job resolved to ``cuda:0`` here runs on the worker's
    own card), and resources ``CPU=1``, ``GPU=1`` so no two jobs that train share a card."""
    return {"nthreads": 1, "host": host, "protocol": "tcp", "env": {"CUDA_VISIBLE_DEVICES": gpu},
            "resources": {"CPU": 1, "GPU": 1}}


def local_gpu_cluster(gpus: list[str], host: str = "127.0.0.1"):
    """One single-threaded worker per GPU on this machine: dask-cuda's ``LocalCUDACluster`` where it
    is installed (it pins each worker the same way and knows the node's topology), else a Dask
    ``SpecCluster`` of nannies built from :func:`gpu_worker_options`. Bound to ``host``, no dashboard."""
    _require_distributed()
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        LocalCUDACluster = None
    if LocalCUDACluster is not None:
        return LocalCUDACluster(CUDA_VISIBLE_DEVICES=",".join(gpus), n_workers=len(gpus), threads_per_worker=1,
                                host=host, protocol="tcp", dashboard_address=None, resources={"CPU": 1, "GPU": 1})
    from distributed import Nanny, Scheduler, SpecCluster

    workers = {f"gpu-{gpu}": {"cls": Nanny, "options": gpu_worker_options(gpu, host)} for gpu in gpus}
    scheduler = {"cls": Scheduler, "options": {"host": host, "protocol": "tcp", "dashboard": False,
                                               "dashboard_address": None}}
    return SpecCluster(workers=workers, scheduler=scheduler, name="mribench-gpus")


def jobqueue_cluster(kind: str, *, cores: int | None = None, memory: str | None = None, gpus: int = 0,
                     walltime: str | None = None, queue: str | None = None, account: str | None = None,
                     interface: str | None = None, job_extra: list[str] | None = None):
    """A dask-jobqueue SLURM or PBS cluster (no jobs submitted yet: call ``scale``).

    Values left None come from the user's dask-jobqueue configuration (``jobqueue.slurm.*`` in
    ``~/.config/dask/jobqueue.yaml``), and ``cores`` / ``memory`` fall back to 4 and 16GB. Each
    batch job runs one worker with ``cores`` threads that offers resources ``CPU=cores`` and
    ``GPU=gpus`` (requested as ``--gres=gpu:N`` on SLURM, ``ngpus=N`` on PBS).

    The scheduler runs in this process and must listen where compute nodes can reach it, so the
    network interface is required (``interface``, or ``jobqueue.<kind>.interface`` or
    ``scheduler-options`` in the configuration) rather than guessed by probing a public address.
    """
    _require_distributed()
    try:
        import dask
        import dask_jobqueue
    except ImportError:
        raise MribenchError("--cluster needs dask-jobqueue: pip install 'mribench[cluster]'") from None
    classes = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}
    if kind not in classes:
        raise MribenchError(f"--cluster {kind}: choose from {', '.join(classes)}")
    conf = f"jobqueue.{kind}"
    scheduler_options = dict(dask.config.get(f"{conf}.scheduler-options", None) or {})
    interface = interface or dask.config.get(f"{conf}.interface", None)
    if not interface and not ({"host", "interface"} & set(scheduler_options)):
        raise MribenchError(f"--cluster {kind}: name the network interface compute nodes reach this machine "
                            f"by, e.g. --interface ib0 (or set {conf}.interface in your dask configuration)")
    cores = int(cores or dask.config.get(f"{conf}.cores", None) or 4)
    memory = memory or dask.config.get(f"{conf}.memory", None) or "16GB"
    if gpus < 0:
        raise MribenchError(f"--gpus-per-worker must be >= 0 (got {gpus})")
    extra = list(job_extra or [])
    kwargs: dict[str, Any] = {}
    if gpus and kind == "slurm":
        extra.append(f"--gres=gpu:{gpus}")
    elif gpus and kind == "pbs":
        from dask.utils import parse_bytes
        from dask_jobqueue.pbs import pbs_format_bytes_ceil

        kwargs["resource_spec"] = f"select=1:ncpus={cores}:ngpus={gpus}:mem={pbs_format_bytes_ceil(parse_bytes(memory))}"
    resources = f"CPU={cores}" + (f",GPU={gpus}" if gpus else "")
    for name, value in (("walltime", walltime), ("queue", queue), ("account", account)):
        if value is not None:
            kwargs[name] = value
    if extra:
        kwargs["job_extra_directives"] = list(dask.config.get(f"{conf}.job-extra-directives", None) or []) + extra
    return classes[kind](cores=cores, memory=memory, processes=1, interface=interface,
                         scheduler_options={"dashboard_address": None, **scheduler_options},
                         worker_extra_args=["--resources", resources], **kwargs)


def runs_elsewhere(kind: str = "local", scheduler: str | None = None, cluster: str | None = None) -> bool:
    """Whether the ``bench run`` flags send jobs to Dask workers (``--scheduler`` or ``--cluster``
    imply ``dask``): their ``--device`` is then resolved by each worker, not by this process."""
    return not (kind == "local" and not (scheduler or cluster))


def make_executor(kind: str = "local", *, scheduler: str | None = None, cluster: str | None = None,
                  workers: int = 2, device: str | None = None, **cluster_options) -> LocalExecutor | DaskExecutor:
    """The executor the ``bench run`` flags describe. ``--scheduler`` or ``--cluster`` imply ``dask``.

    A local Dask cluster on a machine with GPUs (and a ``device`` other than ``cpu``) has one worker
    per visible GPU instead of ``workers`` CPU workers, so a suite spreads over the node's cards."""
    if scheduler and cluster:
        raise MribenchError("give either --scheduler (an existing Dask scheduler) or --cluster, not both")
    if not runs_elsewhere(kind, scheduler, cluster):
        return LocalExecutor()
    if kind not in ("local", "dask"):
        raise MribenchError(f"--executor {kind}: choose local or dask")
    _require_distributed()
    from distributed import Client

    if scheduler:
        return DaskExecutor(Client(scheduler), what="existing scheduler")
    if cluster:
        gpus = int(cluster_options.get("gpus") or 0)
        jq = jobqueue_cluster(cluster, **cluster_options)
        jq.scale(jobs=workers)
        return DaskExecutor(Client(jq), cluster=jq, resources={"CPU", "GPU"} if gpus else {"CPU"},
                            what=f"{cluster} cluster")
    gpus = visible_gpus() if (device or "auto").strip().lower() != "cpu" else []
    if gpus:
        gc = local_gpu_cluster(gpus)
        return DaskExecutor(Client(gc), cluster=gc, resources={"CPU", "GPU"},
                            what=f"local cluster, one worker per GPU ({', '.join(gpus)})")
    lc = local_cluster(workers)
    return DaskExecutor(Client(lc), cluster=lc, resources={"CPU"}, what="local cluster")
