"""Data-parallel training through torch.distributed: the torchrun launcher and the few collectives
`bench pretrain` needs.

``bench pretrain --nproc N`` re-runs itself under ``python -m torch.distributed.run`` (torchrun)
with N processes on this machine; each process sees torchrun's ``RANK`` / ``WORLD_SIZE`` /
``LOCAL_RANK`` and joins the process group: gloo on CPU, NCCL when CUDA is there. On several
nodes, start ``torchrun ... -m bench.cli pretrain ...`` yourself with your rendezvous settings;
``pretrain()`` only reads the environment torchrun sets.

The single-node launcher binds everything to loopback: a c10d rendezvous on 127.0.0.1 with a
port the OS picks, ``--local-addr 127.0.0.1`` (otherwise torchrun advertises the host's fully
qualified name to the workers), and gloo on the loopback interface (otherwise gloo binds to
whatever the host name resolves to).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job: rank 0 of 1 when not launched by torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised_here: bool = False   # this code called init_process_group, so it also tears it down

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def env_rank() -> int:
    """This process's rank from torchrun's environment (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0


def setup() -> DistInfo:
    """Join the process group torchrun described (gloo on CPU, NCCL on GPU); a no-op otherwise."""
    import torch.distributed as dist

    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) < 2:
        return DistInfo()
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    created = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
        created = True
    return DistInfo(rank, world, local, device, created)


def teardown(info: DistInfo) -> None:
    import torch.distributed as dist

    if info.initialised_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def all_gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    """Every rank's ``obj``, by rank (e.g. each rank's random-generator states for a checkpoint)."""
    if not info.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(info: DistInfo, value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar over ranks (the loss each rank computed on its shard)."""
    if not info.enabled:
        return value
    import torch.distributed as dist

    t = value.detach().clone().to(info.device).reshape(1)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / info.world_size).reshape(())


def loopback_interface() -> str:
    """The name of the loopback interface (``lo`` on Linux, ``lo0`` on macOS)."""
    for _, name in socket.if_nameindex():
        if name.startswith("lo"):
            return name
    return "lo"


def launch_command(nproc: int, module_args: list[str]) -> list[str]:
    """``python -m torch.distributed.run`` for ``nproc`` processes on this machine, loopback only,
    each running ``python -m bench.cli <module_args>``."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0", "--rdzv-id", uuid.uuid4().hex,
            "--local-addr", "127.0.0.1", "--max-restarts", "0", "-m", "bench.cli", *module_args]


def launch(nproc: int, module_args: list[str]) -> int:
    """Run ``bench <module_args>`` in ``nproc`` processes under torchrun; return its exit status.

    Each process gets an equal share of the CPU threads (unless ``OMP_NUM_THREADS`` is set), so N
    processes on a small machine do not oversubscribe it.
    """
    env = dict(os.environ)
    env.setdefault("GLOO_SOCKET_IFNAME", loopback_interface())
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.run(launch_command(nproc, module_args), env=env).returncode
