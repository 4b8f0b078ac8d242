"""How close the harness runs to the encoder's own speed: the figures behind ``bench perf``.

A benchmark run should cost about what the encoder's forward passes cost; everything else
(NIfTI decoding, resampling, cache look-ups, heads, bootstrap) is overhead. One call of
:func:`measure` takes, in one process with the harness's own thread settings:

(a) ``forward``: the harness's forward pass (:func:`bench.embeddings.harness_forward`: inference
    mode, the encoder's fastest memory layout) on seeded random tensors already in memory, in
    batches of the harness's size -- the limit;
(b) ``store``: :meth:`EmbeddingCache.embed` of every scan the task reads, from a warm volume
    store into an empty embedding cache -- what a run pays once its volumes are preprocessed;
(c) ``cold``: the same from the raw NIfTI files with an empty store and embedding cache;
(d) ``grid``: the full linear-probe grid (``fractions``: 5 fractions x seeds, and ``few_shot``:
    k = 1, 5, 10 x draws) for the task with a warm embedding cache, feature assembly included;
(e) peak memory (resident set) of each phase and of the process.

The machine may be shared and its load vary (on a busy 2-core machine one pass took anywhere
between 1.5 and 30 s), so (a) and (b) are taken in alternating rounds (a-b, b-a, ...), each
figure is the median of its rounds, and ``embed_ratio`` is the median of the per-round ratios:
each compares two passes taken seconds apart. CPU seconds of this process are recorded beside
every wall-clock figure; they move less with other people's load. The caches live in a temporary folder that is removed
afterwards; the cohort is the user's.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.errors import MribenchError


def grid_protocols(spec, encoder) -> tuple[str, ...]:
    """The linear-probe grid of (d): the protocols registered as probe grids (every fraction, every
    few-shot draw) that apply to ``spec`` and ``encoder`` (few-shot only with classes)."""
    from bench.protocols import all_protocols

    return tuple(p.name for p in all_protocols() if p.probe_grid and p.supports(spec, encoder) is None)

#: Rounds of (d) at most: the grid takes longer than a pass and varies less.
GRID_ROUNDS = 3


@dataclass
class Took:
    """Wall-clock and process CPU seconds of one measured block."""

    wall: float = 0.0
    cpu: float = 0.0


@contextlib.contextmanager
def _clock() -> Iterator[Took]:
    """Time a block in wall-clock and in CPU seconds of this process (all its threads).

    CPU time is the steadier figure on a shared machine: other people's load stretches the wall
    clock of a phase but not the work the phase itself does.
    """
    took = Took()
    wall, cpu = time.perf_counter(), time.process_time()
    yield took
    took.wall, took.cpu = time.perf_counter() - wall, time.process_time() - cpu


@dataclass
class PhasePeak:
    """Peak resident memory of one phase, in MiB (``None`` where the OS cannot reset the peak)."""

    name: str
    mib: float | None


@dataclass
class PerfResult:
    """Every figure of one ``bench perf`` run; :meth:`as_json` is what ``--json`` writes."""

    encoder: str
    task: str
    profile: str
    input_space: str
    n_scans: int
    n_examples: int
    batch_size: int
    repeats: int
    forward: Took                   # (a) median round over n_scans
    store: Took                     # (b) median round: one embedding pass from the warm store
    cold: Took                      # (c) one embedding pass from raw NIfTI, empty caches
    grid: Took                      # (d) median round
    grid_detail: dict[str, float]   # seconds of cached-embedding look-up + features, and of each protocol
    grid_settings: int              # (setting, seed) head fits in the grid
    rounds: list[dict[str, float]] = field(default_factory=list)
    peaks: list[PhasePeak] = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    device: str = "cpu"
    precision: str = "fp32"
    loader_workers: int = 0
    thread: Took | None = None      # (b) read by the one background thread, when (b) used a DataLoader

    @property
    def embed_ratio(self) -> float:
        """(b)/(a) in scans per second, the median over rounds: the share of the encoder's speed
        the harness keeps."""
        return self._median_ratio("forward_seconds", "store_seconds")

    def _median_ratio(self, a: str, b: str) -> float:
        return float(np.median([r[a] / r[b] for r in self.rounds if b in r]))

    @property
    def grid_ratio(self) -> float:
        """(d) over one embedding pass (b): what the heads cost relative to the encoder."""
        return self.grid.wall / self.store.wall

    def as_json(self) -> dict:
        def rate(t: Took) -> float:
            return self.n_scans / t.wall

        return {
            "embed_ratio": self.embed_ratio, "grid_ratio": self.grid_ratio,
            "embed_ratio_cpu": self._median_ratio("forward_cpu_seconds", "store_cpu_seconds"),
            "grid_ratio_cpu": self.grid.cpu / self.store.cpu,
            "encoder": self.encoder, "task": self.task, "profile": self.profile,
            "input_space": self.input_space, "n_scans": self.n_scans, "n_examples": self.n_examples,
            "batch_size": self.batch_size, "repeats": self.repeats,
            "forward_scans_per_s": rate(self.forward), "forward_seconds": self.forward.wall,
            "forward_cpu_seconds": self.forward.cpu,
            "store_scans_per_s": rate(self.store), "embedding_pass_seconds": self.store.wall,
            "embedding_pass_cpu_seconds": self.store.cpu,
            "cold_scans_per_s": rate(self.cold), "cold_seconds": self.cold.wall, "cold_cpu_seconds": self.cold.cpu,
            "cold_ratio": self.forward.wall / self.cold.wall,
            "grid_seconds": self.grid.wall, "grid_cpu_seconds": self.grid.cpu, "grid_detail": self.grid_detail,
            "grid_settings": self.grid_settings,
            "peak_rss_mib": {p.name: p.mib for p in self.peaks}, "rounds": self.rounds, "machine": self.machine,
            "device": self.device, "precision": self.precision, "loader_workers": self.loader_workers,
            **({"thread_scans_per_s": rate(self.thread), "thread_seconds": self.thread.wall,
                # > 1: the DataLoader's workers made the pass faster than the one reader thread
                "loader_speedup": self._median_ratio("thread_seconds", "store_seconds")} if self.thread else {}),
        }


# -- memory -------------------------------------------------------------------------------------
def _status_kib(key: str) -> int | None:
    """A ``/proc/self/status`` figure in KiB (Linux), else None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) so the next phase's peak is its own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def process_peak_mib() -> float:
    """Peak resident memory of this process so far (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if platform.system() == "Darwin" else 1024)


@contextlib.contextmanager
def _phase(name: str, peaks: list[PhasePeak]) -> Iterator[None]:
    resettable = _reset_peak()
    yield
    hwm = _status_kib("VmHWM") if resettable else None
    peaks.append(PhasePeak(name, None if hwm is None else hwm / 1024))


# -- the machine --------------------------------------------------------------------------------
def machine_info() -> dict:
    """What the figures were measured on: CPU, cores, threads, load, library versions."""
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(), "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version(), "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    with contextlib.suppress(OSError):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return info


# -- the phases ---------------------------------------------------------------------------------
def forward_pass(encoder, n_scans: int, batch_size: int, seed: int = 0, compute=None) -> Took:
    """Time of the encoder over ``n_scans`` random volumes already in memory (after one
    warm-up batch), in the batches, memory layout and inference mode of the harness's own
    forward pass (:func:`bench.embeddings.harness_forward`): the speed limit of an embedding pass.
    """
    import torch

    from bench.data.spaces import get_space
    from bench.embeddings import harness_forward

    shape = get_space(encoder.card.input_space).shape
    n_batches = -(-n_scans // batch_size)
    distinct = min(n_batches, 4)  # enough distinct inputs without holding every scan in memory
    pool = torch.randn((distinct * batch_size, 1, *shape), generator=torch.Generator().manual_seed(seed))
    batches = [pool[(i % distinct) * batch_size:][:min(batch_size, n_scans - i * batch_size)]
               for i in range(n_batches)]
    with harness_forward(encoder, compute) as forward:
        forward(batches[0])  # allocator and kernel warm-up
        with _clock() as took:
            for batch in batches:
                forward(batch)  # returns host arrays: a GPU has finished the batch when it returns
    return took


def embedding_pass(encoder, cohort, rows: np.ndarray, store, emb_root: Path, compute=None) -> Took:
    """Time for the harness to embed ``rows`` into an empty embedding cache at ``emb_root``."""
    from bench.embeddings import EmbeddingCache

    shutil.rmtree(emb_root, ignore_errors=True)
    cache = EmbeddingCache(emb_root)
    with _clock() as took:
        out = cache.embed(encoder, cohort, rows, store, progress=False, compute=compute)
    if len(out) != len(rows) or cache.computed != len(rows):
        raise RuntimeError(f"embedding pass returned {len(out)} embeddings and computed {cache.computed} "
                           f"for {len(rows)} scans")
    return took


def grid_pass(ctx_factory: Callable[[], object], protocols: tuple[str, ...]) -> tuple[Took, dict, int]:
    """Time of the warm linear-probe grid: cached-embedding look-up, features, every protocol.

    The process's memo of scan content hashes is cleared first, so the look-up costs what it
    costs a fresh ``bench run`` on a warm cache.
    """
    from bench.data.store import clear_hash_memo
    from bench.protocols.context import assemble_features, run_protocol

    clear_hash_memo()
    detail: dict[str, float] = {}
    settings = 0
    # the protocols' warnings (k larger than a class, one label in a bootstrap sample) are about
    # the scores, which perf throws away; they would bury the table
    with warnings.catch_warnings(), _clock() as took:
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        ctx = ctx_factory()
        emb = ctx.embeddings.embed(ctx.encoder, ctx.cohort, ctx.examples.scan_rows(), ctx.store, progress=False,
                                   compute=ctx.compute)
        if ctx.embeddings.computed:
            raise RuntimeError("the grid's embedding cache was not warm")
        ctx.features = assemble_features(ctx.examples, emb)
        detail["features"] = time.perf_counter() - start
        for name in protocols:
            start = time.perf_counter()
            scores = run_protocol(name, ctx)
            detail[name] = time.perf_counter() - start
            settings += len({(s.setting, s.seed) for s in scores})
    return took, detail, settings


def check_request(task: str, repeats: int, batch_size: int | None = None) -> None:
    """Refuse what cannot be measured before anything is loaded or generated."""
    from bench.tasks import get_task

    if repeats < 1:
        raise MribenchError(f"--repeats must be at least 1, got {repeats}")
    if batch_size is not None and batch_size < 1:
        raise MribenchError(f"--batch-size must be at least 1, got {batch_size}")
    if not get_task(task).target.uses_embeddings:
        raise MribenchError(f"{task} is a segmentation task: its probe trains a decoder on feature maps, "
                            "not a linear head on embeddings; pick another --task")


def perf_workdir() -> Path:
    """Where the measured caches go by default: beside the real ones, under the cache folder.

    An embedding pass writes one small file per scan, and the cost of creating a file depends
    on the file system: on the machine this was developed on, 0.05 ms per file in the home
    folder but 0.85 ms in /tmp, which alone moved ``embed_ratio`` by 0.05. Measuring where
    ``bench run`` keeps its caches gives the overhead a run pays.
    """
    from bench.paths import cache_home

    root = cache_home()
    root.mkdir(parents=True, exist_ok=True)
    return root


def measure(encoder_spec: str = "simclr3d", task: str = "conversion", profile: str = "default", *,
            cohort=None, repeats: int = 5, batch_size: int | None = None, workdir: str | Path | None = None,
            encoder_kwargs: dict | None = None, log: Callable[[str], None] | None = None,
            compute=None) -> PerfResult:
    """Run phase (c), then ``repeats`` alternating rounds of (a) and (b), then up to 3 of (d).

    ``cohort`` defaults to the profile's synthetic cohort (generated on first use, like ``bench
    run``); the volume store and embedding caches are private to this call and removed after it.
    Each timed figure is the median of its rounds (see the module doc). ``compute``: the passes'
    device, precision and loader workers (:class:`bench.devices.Compute`; CPU fp32 by default).
    """
    from bench.data.sources import open_cohort
    from bench.data.store import VolumeStore
    from bench.devices import CPU, place
    from bench.embeddings import DEFAULT_BATCH_SIZE, EmbeddingCache
    from bench.profiles import get_profile
    from bench.protocols.context import Context
    from bench.runner import prepare_task
    from bench.tasks import get_task

    say = log or (lambda _msg: None)
    check_request(task, repeats, batch_size)
    batch_size = batch_size or DEFAULT_BATCH_SIZE
    prof = get_profile(profile)
    spec = get_task(task)
    encoder = _measured_encoder(encoder_spec, encoder_kwargs)
    place(encoder, compute := compute or CPU)
    if cohort is None:
        cohort = open_cohort(None, profile=profile, progress=False)
    examples, split = prepare_task(spec, cohort)
    rows = examples.scan_rows()
    if not len(rows):
        raise MribenchError(f"task {task} has no examples on cohort {cohort.name}")
    protocols = grid_protocols(spec, encoder)
    peaks: list[PhasePeak] = []
    rounds: list[dict[str, float]] = []
    if workdir is None:  # the file system bench run writes its caches to (see perf_workdir)
        workdir = perf_workdir()
    tmp = Path(tempfile.mkdtemp(prefix="mribench-perf-", dir=workdir))
    try:
        cold, fwd, warm, thread = _passes(encoder, cohort, rows, tmp, repeats, batch_size, peaks, rounds, say,
                                          compute)

        def make_ctx() -> Context:
            return Context(examples, split, cohort=cohort, encoder=encoder, profile=prof,
                           store=VolumeStore(tmp / "store"), embeddings=EmbeddingCache(tmp / "emb"), compute=compute)

        grids = _grid_rounds(make_ctx, protocols, min(repeats, GRID_ROUNDS), peaks, rounds, say)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    grid, detail, settings = _median(grids, key=lambda g: g[0].wall)
    peaks = _max_per_phase(peaks)
    known = [p.mib for p in peaks if p.mib is not None]
    peaks.append(PhasePeak("process", max([process_peak_mib(), *known])))
    return PerfResult(
        encoder=encoder.card.name, task=spec.name, profile=prof.name, input_space=encoder.card.input_space,
        n_scans=len(rows), n_examples=len(examples.table), batch_size=batch_size, repeats=repeats,
        forward=_median(fwd, key=lambda t: t.wall), store=_median(warm, key=lambda t: t.wall), cold=cold, grid=grid,
        grid_detail=detail, grid_settings=settings, rounds=rounds, peaks=peaks, machine=machine_info(),
        **_compute_figures(compute, thread))


def _compute_figures(compute, thread: list[Took]) -> dict:
    """PerfResult's device, precision, loader workers and reader-thread time (the median round)."""
    return {"device": compute.device, "precision": compute.precision, "loader_workers": compute.loader_workers,
            "thread": _median(thread, key=lambda t: t.wall) if thread else None}


def _grid_rounds(make_ctx: Callable, protocols: tuple[str, ...], n: int, peaks: list, rounds: list,
                 say: Callable[[str], None]) -> list:
    """``n`` rounds of (d), each timed and added to ``rounds``."""
    grids = []
    for r in range(n):
        say(f"(d) linear-probe grid ({' + '.join(protocols)}), warm embedding cache, round {r + 1}")
        with _phase("grid", peaks):
            grids.append(grid_pass(make_ctx, protocols))
        rounds.append({"grid_seconds": grids[-1][0].wall, "grid_cpu_seconds": grids[-1][0].cpu})
    return grids


def _measured_encoder(encoder_spec: str, encoder_kwargs: dict | None):
    """The encoder to measure: one with a frozen forward pass over volumes."""
    from bench.encoders import get_encoder
    from bench.encoders.api import capabilities

    encoder = get_encoder(encoder_spec, **(encoder_kwargs or {}))
    caps = capabilities(encoder)
    if caps.latent or caps.finetune_only:
        raise MribenchError(f"encoder {encoder.card.name} has no frozen forward pass over volumes to measure")
    return encoder


def _passes(encoder, cohort, rows, tmp: Path, repeats: int, batch_size: int, peaks: list, rounds: list,
            say: Callable[[str], None], compute) -> tuple[Took, list[Took], list[Took], list[Took]]:
    """Phase (c) once, then ``repeats`` alternating rounds of (a) and (b) (a-b, b-a, a-b...: a drift
    in load favours neither): the cold pass, and the forward and store passes of every round. With
    loader workers, each round also times (b) with the one reader thread (the last list; else empty)."""
    from dataclasses import replace

    from bench.data.store import VolumeStore

    say(f"(c) embedding {len(rows)} scans from raw NIfTI, empty caches")
    with _phase("cold", peaks):
        cold = embedding_pass(encoder, cohort, rows, VolumeStore(tmp / "store"), tmp / "emb-cold", compute)
    fwd, warm, thread = [], [], []

    def phase_a() -> None:
        with _phase("forward", peaks):
            fwd.append(forward_pass(encoder, len(rows), batch_size, compute=compute))

    def phase_b() -> None:
        with _phase("store", peaks):
            warm.append(embedding_pass(encoder, cohort, rows, VolumeStore(tmp / "store"), tmp / "emb", compute))
        if compute.loader_workers:  # the same pass read by the one thread: the DataLoader's effect
            thread.append(embedding_pass(encoder, cohort, rows, VolumeStore(tmp / "store"), tmp / "emb",
                                         replace(compute, loader_workers=0)))

    for r in range(repeats):
        say(f"round {r + 1}/{repeats}: (a) encoder forward, (b) embedding from the store")
        for run in ((phase_a, phase_b) if r % 2 == 0 else (phase_b, phase_a)):
            run()
        rounds.append({"forward_seconds": fwd[-1].wall, "forward_cpu_seconds": fwd[-1].cpu,
                       "store_seconds": warm[-1].wall, "store_cpu_seconds": warm[-1].cpu,
                       **({"thread_seconds": thread[-1].wall} if thread else {})})
    return cold, fwd, warm, thread


def _median(items: list, key: Callable):
    """The middle item by ``key`` (the lower middle of an even count): a real round, not a mean."""
    return sorted(items, key=key)[(len(items) - 1) // 2]


def _max_per_phase(peaks: list[PhasePeak]) -> list[PhasePeak]:
    """One peak per phase name (the largest of its rounds), in first-seen order."""
    out: dict[str, float | None] = {}
    for p in peaks:
        prev = out.get(p.name)
        out[p.name] = p.mib if prev is None else (prev if p.mib is None else max(prev, p.mib))
    return [PhasePeak(k, v) for k, v in out.items()]
