"""Where a run computes and in what precision: ``--device``, ``--precision``, ``--loader-workers``,
``--batch-size``, read once by every command that computes.

Why one home: the device and precision change numbers in different ways. The precision changes a
record's numbers by more than their noise can hide (a bf16 forward is another result), so it is part
of a record's identity; the device only moves the same arithmetic (a CUDA fp32 result is the CPU's
result within float error), so it is provenance only, and ``--device auto`` on a GPU machine still
reuses the committed CPU records. A value left at its default (cpu, fp32, the encoder's own
micro-batch) writes nothing new, so records and embedding-cache keys written before these options
existed keep their identity and their keys. Torch is imported inside functions: ``bench --help``
reads this module's option definitions without loading it.
"""

from __future__ import annotations

import contextlib
import functools
import re
import warnings
from dataclasses import dataclass
from typing import Any, Iterator

from bench.errors import MribenchError

#: The precisions ``--precision`` takes; the first is the default (and what a missing value means).
PRECISIONS = ("fp32", "bf16", "fp16")
DEFAULT_DEVICE = "cpu"
DEFAULT_PRECISION = "fp32"


@dataclass(frozen=True)
class Compute:
    """A device (``cpu``, ``cuda:0``...; on its way to Dask workers, the ``--device`` text as asked, which
    each worker resolves) and precision, the DataLoader's worker processes and the micro-batch override;
    picklable (it travels to Dask workers in the run settings)."""

    device: str = DEFAULT_DEVICE
    precision: str = DEFAULT_PRECISION
    loader_workers: int = 0
    batch_size: int | None = None     # None: the encoder's / kind's own micro-batch

    @property
    def is_default(self) -> bool:
        """Whether the numbers are today's CPU fp32 numbers (nothing to add to keys or identity)."""
        return self.device == DEFAULT_DEVICE and self.precision == DEFAULT_PRECISION

    def torch_device(self):
        import torch

        return torch.device(self.device)

    def key_parts(self) -> tuple[str, ...]:
        """What an embedding-cache key adds: the non-default device and precision, nothing otherwise
        (so every cache entry written before these options keeps its key)."""
        return () if self.is_default else (f"device={self.device}", f"precision={self.precision}")


CPU = Compute()


def device_request(text: str) -> str:
    """The ``--device`` text normalised (``auto``, ``cpu``, ``cuda``, ``cuda:N``), its spelling checked
    and nothing resolved: what a job sent to other machines carries, since only the machine that runs
    it knows which devices are there."""
    text = (text or "auto").strip().lower()
    if text not in ("auto", "cpu") and re.fullmatch(r"cuda(?::\d+)?", text) is None:
        raise MribenchError(f"--device {text}: not a device; use auto, cpu, cuda or cuda:N")
    return text


def resolve_device(text: str) -> str:
    """``auto`` -> ``cuda:0`` when CUDA is present, else ``cpu``; ``cuda`` -> ``cuda:0``; ``cuda:N`` checked.
    A device that is absent is a one-line error naming it and what is present."""
    text = device_request(text)
    n_cuda = cuda_count()
    if text == "auto":
        return "cuda:0" if n_cuda else "cpu"
    if text == "cpu":
        return "cpu"
    index = int(text.partition(":")[2] or 0)
    if index >= n_cuda:
        raise MribenchError(f"--device {text}: no such CUDA device here; present: {present_devices()}")
    return f"cuda:{index}"


def cuda_count() -> int:
    """How many CUDA devices this process sees (0 without CUDA): what ``--device`` is resolved against,
    in the process that runs the job."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def present_devices() -> str:
    """The devices torch sees, e.g. ``cpu`` or ``cpu, cuda:0 (NVIDIA H100)``."""
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    return ", ".join(names)


def compute_from(device: str = "auto", precision: str = DEFAULT_PRECISION, loader_workers: int = 0,
                 batch_size: int | None = None, *, resolve: bool = True) -> Compute:
    """A checked :class:`Compute` (one-line errors for an absent device or an unknown precision).

    ``resolve=False`` keeps the device as asked (:func:`device_request`) for jobs that run on other
    machines (Dask workers), each of which resolves it with :func:`resolve_here`: ``auto`` on a
    launcher without a GPU must still mean the GPU of a worker that has one, and the other way round."""
    if precision not in PRECISIONS:
        raise MribenchError(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")
    if loader_workers < 0:
        raise MribenchError(f"--loader-workers must be 0 or more (got {loader_workers})")
    if batch_size is not None and batch_size < 1:
        raise MribenchError(f"--batch-size must be at least 1 (got {batch_size})")
    device = resolve_device(device) if resolve else device_request(device)
    if precision == "fp16" and device == "cpu":
        raise MribenchError("--precision fp16 needs a CUDA device (fp16 autocast on a CPU is not supported); "
                            "use bf16 there")
    return Compute(device, precision, loader_workers, batch_size)


def resolve_here(compute: Compute) -> Compute:
    """``compute`` with its device resolved on this machine, where a job runs (see :func:`compute_from`);
    a device resolved already (``cpu``, ``cuda:N``) is only checked, so an in-process job computes
    with exactly what the command resolved. An absent device is the same one-line error as up front."""
    return compute_from(compute.device, compute.precision, compute.loader_workers, compute.batch_size)


def add_compute_args(p, *, batch_size: bool = True) -> None:
    """``--device``, ``--precision``, ``--loader-workers`` (and ``--batch-size``), spelled one way."""
    g = p.add_argument_group("hardware")
    g.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N",
                   help="where encoders run (auto: the first CUDA device if present, else the CPU); in provenance only")
    g.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                   help="autocast precision of the encoder's forward (heads and metrics stay fp32); part of a "
                        "record's identity")
    g.add_argument("--loader-workers", type=int, default=0, metavar="N",
                   help="DataLoader worker processes reading the volume store (default 0: one background thread)")
    if batch_size:
        g.add_argument("--batch-size", type=int, default=None, dest="micro_batch",
                       help="micro-batch of fine-tuning and decoder training (default: the encoder's own); part of "
                            "the identity of the records of jobs that train a network")


def compute_from_args(args, *, resolve: bool = True) -> Compute:
    """The hardware options of a command as a :class:`Compute` (``resolve``: see :func:`compute_from`)."""
    return compute_from(args.device, args.precision, args.loader_workers, getattr(args, "micro_batch", None),
                        resolve=resolve)


# ------------------------------------------------------------------------------------- the work itself
def place(encoder, compute: Compute) -> None:
    """Move the encoder's module to the run's device, once (a module already there is left alone)."""
    from bench.encoders.api import Trainable

    module = encoder.module() if isinstance(encoder, Trainable) else None
    if module is None:
        return
    first = next(module.parameters(), None)
    if first is not None and first.device != compute.torch_device():
        module.to(compute.torch_device())


def autocast(compute: Compute | None, device_type: str | None = None):
    """The encoder forward's autocast: nothing for fp32, else torch's autocast to bf16 / fp16."""
    if compute is None or compute.precision == DEFAULT_PRECISION:
        return contextlib.nullcontext()
    import torch

    dtype = torch.bfloat16 if compute.precision == "bf16" else torch.float16
    return torch.autocast(device_type=device_type or compute.torch_device().type, dtype=dtype)


def check_can_train(compute: Compute | None) -> None:
    """Refuse to train a network in bf16 on a CPU whose torch gets bf16 conv3d weight gradients wrong.

    Why: on AVX-512 CPUs, torch 2.13's oneDNN kernels return garbage (relative errors from about 1 to
    1e36, at times NaN) for the weight gradient of a bf16 3x3x3 convolution over a feature map 2
    voxels across, which a ResNet's last stage reaches on small volumes; the forward and the input's
    gradient stay right, and AVX2 kernels are right. A run would train on it silently, or stop at a NaN loss.
    Inference (embeddings) in bf16 is unaffected. The check computes one such gradient on this machine
    (:func:`cpu_bf16_conv3d_grads_hold`), so a CPU or a torch with right kernels trains in bf16.
    """
    if compute is None or compute.precision != "bf16" or compute.torch_device().type != "cpu":
        return
    if not cpu_bf16_conv3d_grads_hold():
        import torch

        raise MribenchError(f"--precision bf16 cannot train a network on a CPU with torch {torch.__version__}: "
                            "its bf16 conv3d weight gradients are wrong on 2-voxel feature maps (checked against "
                            "fp32 just now); train in fp32 on a CPU, or in bf16 on a CUDA device")


def cpu_bf16_conv3d_grads_hold() -> bool:
    """Whether this process's torch computes a bf16 conv3d weight gradient on the CPU right, with its
    kernels as now chosen: oneDNN's (on AVX-512 CPUs, wrong with torch 2.13) unless it is switched off."""
    import torch

    return _bf16_weight_grad_holds(bool(torch.backends.mkldnn.enabled))


@functools.cache
def _bf16_weight_grad_holds(onednn: bool, tolerance: float = 0.05) -> bool:
    """One bf16 conv3d weight gradient against fp32's, within ``tolerance`` of the largest fp32 value:
    16 channels, a 2x2x2 map, the smallest case measured wrong with torch 2.13 (bf16 rounding alone
    stays under 0.01; benchmarks/bf16_conv3d_gradients.py). ``onednn`` only keys the cache: it is the
    state computed in. A NaN error fails."""
    return bf16_conv3d_errors()["weight_gradient"] < tolerance


def bf16_conv3d_errors(map_shape: tuple[int, int, int] = (2, 2, 2), channels: int = 16, batch: int = 2,
                       seed: int = 0) -> dict[str, float]:
    """How far a bf16 3x3x3 convolution (padding 1) on the CPU is from fp32's, with the kernels now
    chosen: the largest difference of its output, input gradient and weight gradient, each relative
    to the largest fp32 value (inf or NaN when bf16 gave those)."""
    import torch

    draw = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, *map_shape, generator=draw)
    weight = torch.randn(channels, channels, 3, 3, 3, generator=draw)
    upstream = torch.randn(batch, channels, *map_shape, generator=draw)
    results = []
    for dtype in (torch.float32, torch.bfloat16):
        xd, w = x.to(dtype).requires_grad_(), weight.to(dtype).requires_grad_()
        out = torch.nn.functional.conv3d(xd, w, padding=1)
        grads = torch.autograd.grad(out, (xd, w), upstream.to(dtype))
        results.append([t.detach().float() for t in (out, *grads)])
    return {name: float((low - ref).abs().max() / ref.abs().max())
            for name, ref, low in zip(("output", "input_gradient", "weight_gradient"), *results)}


def grad_scaler(compute: Compute | None):
    """A gradient scaler, active for fp16 only (bf16 has fp32's range and needs none)."""
    import torch

    on = compute is not None and compute.precision == "fp16"
    return torch.amp.GradScaler(compute.torch_device().type if on else "cpu", enabled=on)


def step(loss, optimiser, scaler) -> None:
    """One optimiser step through the scaler (a plain backward and step when it is disabled)."""
    optimiser.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(optimiser)
    scaler.update()


@contextlib.contextmanager
def deterministic(compute: Compute | None) -> Iterator[dict[str, Any]]:
    """Deterministic settings for a job that trains a network, and what held.

    Yields a dict filled in on exit: the cuDNN flags, whether ``torch.use_deterministic_algorithms``
    was on, and ``bit_reproducible``: False when an operation without a deterministic implementation
    ran (torch warns, in warn-only mode, instead of failing the job). A CPU run is bit-reproducible
    with the same threads; on CUDA the algorithms are asked to be deterministic. Previous settings
    are restored on exit.
    """
    import os

    import torch

    compute = compute or CPU
    info: dict[str, Any] = {}
    on_cuda = compute.torch_device().type == "cuda"
    before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
              torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    if on_cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for determinism
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        torch.use_deterministic_algorithms(True, warn_only=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield info
        finally:
            nondeterministic = sorted({str(w.message).split(".")[0] for w in caught
                                       if "does not have a deterministic implementation" in str(w.message)})
            info.update({"cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
                         "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
                         "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
                         "bit_reproducible": not nondeterministic})
            if nondeterministic:
                info["nondeterministic_ops"] = nondeterministic[:5]
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[0], before[1]
            torch.use_deterministic_algorithms(before[2], warn_only=before[3])
    for w in caught:  # other warnings go on as they would have
        if "does not have a deterministic implementation" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
