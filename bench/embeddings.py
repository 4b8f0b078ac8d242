"""Frozen-encoder embeddings, computed once per scan and cached on disk.

The cache key is (encoder key, scan content hash, input space, perturbation), so a linear-probe
grid of fractions x seeds x few-shot draws embeds every scan exactly once, a re-run embeds
nothing, and a changed scan file or a new checkpoint is embedded afresh. The encoder key
(:func:`encoder_key`) binds what really computes the embeddings: the hash of the weights the
encoder holds, the hash of the code that defines it and its configuration; never a hash its card
merely declares, which any file encoder could copy to be served (or to poison) another's cache.

An embedding pass should cost what the encoder's forward passes cost (``bench perf`` measures
both), so the pass

* reads each preprocessed volume once, straight from its store entry, into a reused batch
  buffer (pinned when the encoder is on a GPU), on a background thread that fills the next
  batch, and writes the previous batch's embeddings, while the encoder runs on the current one
  (perturbations are applied on that thread too, or, given as a batch transform, to the whole
  batch on the encoder's device between its transfer and the forward);
* runs the encoder under ``torch.inference_mode`` in the memory layout that is fastest for it
  on a CPU (:func:`harness_forward`), under autocast when the run asks for bf16 / fp16;
* with ``--loader-workers N`` (:class:`bench.devices.Compute`), reads through a torch DataLoader
  with N worker processes instead of the one thread, so decoding keeps up with a GPU.

The device and precision are in the cache key only when they are not CPU fp32, so every entry
written before they existed keeps its key.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from bench.atomic import atomic_write
from bench.data.cohort import Cohort
from bench.data.spaces import get_space
from bench.data.store import VolumeStore, content_sha256, read_entry_into
from bench.devices import Compute, autocast
from bench.encoders.api import Latent, Trainable
from bench.errors import ScanError
from bench.progress import progress_bar
from bench.timing import phase

if TYPE_CHECKING:
    import pandas as pd

#: Volumes per forward pass; ``bench perf`` measures the encoder's raw speed at the same size.
DEFAULT_BATCH_SIZE = 8

#: ``batch_transform(batch, rows) -> batch``: a (B, 1, D, H, W) batch on the encoder's device and its
#: cohort-table rows, in order (see :meth:`EmbeddingCache.embed`).
BatchTransform = Callable[[torch.Tensor, "pd.DataFrame"], torch.Tensor]


def prefers_channels_last(module: nn.Module) -> bool:
    """True for networks built from overlapping 3D convolutions (ResNets, UNet encoders).

    oneDNN's channels-last 3D convolutions are faster on a CPU: per 64^3 volume (batches of
    eight, 2 cores, ``benchmarks/forward_layout.py``) the ``simclr3d`` ResNet-18 took 7-10 %
    less time on an idle machine and up to 30 % less on a busy one, the ``random`` ResNet-10
    10-20 % less, with embeddings equal to 6e-6 (relative 6e-7). A ViT's only convolution is
    its patch embedding (kernel = stride), where the layout made ``mae3d`` 13-20 % slower and
    ``simclr_vit3d`` no faster, so they keep the default layout.
    """
    convs = [m for m in module.modules() if isinstance(m, nn.Conv3d)]
    return any(any(k > s for k, s in zip(m.kernel_size, m.stride)) for m in convs)


def encoder_device(encoder) -> torch.device:
    """Where the encoder's weights live (CPU for encoders without a torch module)."""
    module = encoder.module() if isinstance(encoder, Trainable) else None
    first = next(module.parameters(), None) if module is not None else None
    return first.device if first is not None else torch.device("cpu")


@contextlib.contextmanager
def harness_forward(encoder, compute: Compute | None = None) -> Iterator[Callable[..., np.ndarray]]:
    """Yield ``run(batch, prepare=None) -> (B, E) float32 array``: the forward pass the harness uses.

    Inside the block the encoder's module (if it exposes one and :func:`prefers_channels_last`)
    holds its 5D weights in channels-last layout and batches are converted to match; on exit the
    weights go back to the layout they had, so fine-tuning or saving sees the encoder unchanged.
    ``bench perf`` times this same function on random tensors as the encoder's raw speed.
    ``compute``'s precision sets the autocast of the forward; the embeddings come back in fp32.
    ``prepare(batch) -> batch`` runs once the batch is on the encoder's device, before the forward
    and outside its autocast (a perturbation computed there in fp32 never goes back to the host).
    """
    module = encoder.module() if isinstance(encoder, Trainable) else None
    device = encoder_device(encoder)
    weights = [p for p in module.parameters() if p.dim() == 5] if module is not None else []
    channels_last = (module is not None and device.type == "cpu" and prefers_channels_last(module)
                     and all(p.is_contiguous() for p in weights))
    layout = torch.channels_last_3d
    if channels_last:
        module.to(memory_format=layout)

    def run(batch: torch.Tensor, prepare: Callable[[torch.Tensor], torch.Tensor] | None = None) -> np.ndarray:
        with torch.inference_mode():
            if device.type != "cpu":  # from the pinned batch buffer, without blocking
                batch = batch.to(device, non_blocking=True)
            if prepare is not None:
                batch = prepare(batch)
            if channels_last:
                batch = batch.contiguous(memory_format=layout)
            with autocast(compute, device.type):
                out = encoder.embed(batch)
            return out.float().cpu().numpy()

    try:
        yield run
    finally:
        if channels_last:
            module.to(memory_format=torch.contiguous_format)


def encoder_key(encoder, compute: Compute | None = None) -> str:
    """The cache key of an encoder: SHA-256 of (weights actually loaded, code, card and config).

    A file encoder that copies another's card (checkpoint hash included) has other code, so it
    neither reads nor writes that encoder's entries; an edited ``embed()`` or network is another
    key, so stale embeddings are never served; an unchanged encoder keeps its key from run to run
    (its weights are hashed once per encoder object, its source files once per process).
    A device or precision other than CPU fp32 is part of the key (other arithmetic, other vectors).
    """
    from bench.encoders.api import code_sha256, config_fingerprint, weights_sha256

    parts = ("mribench-embedding-key/1", weights_sha256(encoder), code_sha256(encoder), config_fingerprint(encoder),
             *(compute.key_parts() if compute is not None else ()))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


class EmbeddingCache:
    """One small .npy per (encoder, space, perturbation, scan) under ``root``.

    One file per scan, written atomically, rather than one array per encoder: concurrent jobs
    (threads, processes, Dask workers) add scans without coordinating, a crash loses at most
    the batch in flight, and reading the few hundred files a task needs costs well under 1 %
    of the pass that wrote them.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.computed = 0  # scans passed through the encoder by this object (for tests / perf)

    def _path(self, encoder_hash: str, space: str, perturbation: str, scan_hash: str) -> Path:
        return self.root / encoder_hash[:20] / space / perturbation / scan_hash[:2] / f"{scan_hash}.npy"

    def _write(self, todo: list[tuple[int, Path]], vectors: list[np.ndarray]) -> None:
        """Write embeddings to the cache, each file atomically (a crash leaves whole files only),
        then its checksum sidecar (:func:`_read_cached` serves only an entry that matches it)."""
        for (_, path), v in zip(todo, vectors):
            buf = io.BytesIO()
            np.save(buf, v)
            atomic_write(path, lambda f, data=buf.getvalue(): f.write(data))
            _write_checksum(path, buf.getvalue())

    def _keep(self, todo: list[tuple[int, Path]], vectors, out: dict[int, np.ndarray]) -> None:
        """Write freshly computed embeddings to the cache and into ``out``."""
        vectors = [np.array(v, dtype=np.float32) for v in vectors]
        self._write(todo, vectors)
        out.update((r, v) for (r, _), v in zip(todo, vectors))
        self.computed += len(todo)

    @phase("embeddings")
    def embed(self, encoder, cohort: Cohort, rows: np.ndarray, store: VolumeStore, *,
              perturbation: str = "clean", transform=None, batch_size: int = DEFAULT_BATCH_SIZE,
              progress: bool = True, compute: Compute | None = None,
              batch_transform: BatchTransform | None = None) -> dict[int, np.ndarray]:
        """Embeddings of cohort rows ``rows`` (cached ones are read, the rest computed in batches).

        ``transform(volume, row) -> volume`` applies a perturbation before the encoder, on the host,
        in the reader; ``batch_transform(batch, rows) -> batch`` applies one to a whole (B, 1, D, H, W)
        batch once it is on the encoder's device (``rows``: the batch's cohort-table rows, in order),
        so a perturbed batch never goes back to the host. Either's name (and path) must be in
        ``perturbation`` so perturbed and clean embeddings, or those of two paths, never share a key.
        ``compute``: the run's device and precision (keyed when not CPU fp32) and loader workers.
        """
        enc_hash = encoder_key(encoder, compute)
        space = encoder.card.input_space
        table = cohort.table
        out: dict[int, np.ndarray] = {}
        todo: list[tuple[int, Path]] = []
        for r in map(int, rows):
            path = self._path(enc_hash, space, perturbation, content_sha256(table.at[r, "path"]))
            cached = _read_cached(path)
            if cached is None:
                todo.append((r, path))
            else:
                out[r] = cached
        if not todo:
            return out
        with progress_bar(progress) as bar:
            task = bar.add_task(f"embedding with {encoder.card.name} ({perturbation})", total=len(todo))
            if isinstance(encoder, Latent):  # reads latents, not voxels (the oracle)
                self._keep(todo, encoder.embed_rows(table.loc[[r for r, _ in todo]], cohort), out)
                bar.advance(task, len(todo))
                return out
            self._embed_volumes(encoder, cohort, todo, store, transform, batch_size, out,
                                lambda n: bar.advance(task, n), compute, batch_transform)
        return out

    def _embed_volumes(self, encoder, cohort: Cohort, todo: list[tuple[int, Path]], store: VolumeStore,
                       transform, batch_size: int, out: dict[int, np.ndarray], advance,
                       compute: Compute | None = None, batch_transform: BatchTransform | None = None) -> None:
        """The pass itself: the scans are read (and perturbed) ahead of the encoder, by a background
        thread (:func:`threaded_batches`) or a DataLoader's worker processes (:func:`loader_batches`),
        while a background thread writes the previous batch's embeddings, so the encoder never waits
        for the disk. Store entries are preprocessed up front (in parallel) only when missing; a
        damaged entry met while reading is rebuilt by the store. ``batch_transform`` runs on the
        encoder's device, between the batch's transfer and the forward (:func:`device_step`)."""
        space = get_space(encoder.card.input_space)
        paths = [cohort.table.at[r, "path"] for r, _ in todo]
        entries = [store.path_for(p, space) for p in paths]
        missing = [p for p, e in zip(paths, entries) if not e.is_file()]
        if missing:
            store.prefetch(missing, space, progress=False)
        reader = ScanReader(entries, paths, store, space.name, transform, cohort.table.loc[[r for r, _ in todo]])
        chunks = [list(range(s, min(s + batch_size, len(todo)))) for s in range(0, len(todo), batch_size)]
        pin = encoder_device(encoder).type == "cuda"  # pinned batches for an encoder on a GPU
        workers = compute.loader_workers if compute is not None else 0
        batches = iter(loader_batches(reader, chunks, workers, pin) if workers
                       else threaded_batches(reader, chunks, space.shape, pin))
        writes = []
        waiting = "perturbations" if transform is not None else "store"  # the phase of waiting for the reader
        with harness_forward(encoder, compute) as forward, ThreadPoolExecutor(max_workers=1) as background:
            for chunk in chunks:
                with phase(waiting):
                    batch = next(batches)
                emb = forward(batch, device_step(batch_transform, cohort.table, [todo[i][0] for i in chunk]))
                if emb.shape[0] != len(chunk) or not np.isfinite(emb).all():
                    raise RuntimeError(f"encoder {encoder.card.name} returned shape {emb.shape} or non-finite "
                                       f"values for scans {[paths[i] for i in chunk]}")
                done = [todo[i] for i in chunk]
                vectors = [np.array(v, dtype=np.float32) for v in emb]
                writes.append(background.submit(self._write, done, vectors))
                out.update((r, v) for (r, _), v in zip(done, vectors))
                self.computed += len(done)
                advance(len(done))
            for w in writes:
                w.result()  # a failed write is an error, not a silently missing cache entry


def device_step(batch_transform: BatchTransform | None, table: "pd.DataFrame",
                rows: list[int]) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The forward's ``prepare`` for one batch: ``batch_transform`` bound to the batch's cohort-table
    ``rows`` and charged to the ``perturbations`` phase (on a GPU only its launch: the kernels run
    asynchronously and their time shows in the forward's); None without a batch transform."""
    if batch_transform is None:
        return None

    def prepare(batch: torch.Tensor) -> torch.Tensor:
        with phase("perturbations"):
            return batch_transform(batch, table.loc[rows])

    return prepare


class ScanReader(torch.utils.data.Dataset):
    """Scan ``i`` of a pass as its preprocessed (and perturbed) volume: read into a given slot
    (:func:`threaded_batches`' reused buffers) or as a new (1, D, H, W) tensor (a DataLoader's
    workers). A damaged store entry is rebuilt. Holds plain data, so worker processes get a copy."""

    def __init__(self, entries: list[Path], paths: list[str], store: VolumeStore, space: str, transform, rows):
        self.entries, self.paths, self.store, self.space = entries, paths, store, space
        self.transform, self.rows = transform, rows

    def __len__(self) -> int:
        return len(self.entries)

    def read(self, i: int, slot: np.ndarray) -> None:
        try:
            read_entry_into(self.entries[i], slot)
        except (ValueError, OSError, EOFError, ScanError):  # damaged since: rebuild it
            read_entry_into(self.store.ensure(self.paths[i], get_space(self.space)), slot)
        if self.transform is not None:
            slot[...] = self.transform(slot.copy(), self.rows.iloc[i])

    def __getitem__(self, i: int) -> torch.Tensor:
        slot = np.empty(get_space(self.space).shape, dtype=np.float32)
        self.read(i, slot)
        return torch.from_numpy(slot)[None]


def threaded_batches(reader: ScanReader, chunks: list[list[int]], shape: tuple[int, ...],
                     pin: bool) -> Iterator[torch.Tensor]:
    """Batches read by one background thread into two reused buffers: batch n+1 is read while the
    caller runs the encoder on batch n (which must be done with it before asking for n+2)."""
    buffers = [torch.empty((len(chunks[0]), 1, *shape), pin_memory=pin) for _ in range(2)]

    def load(chunk: list[int], buffer: torch.Tensor) -> torch.Tensor:
        batch = buffer[:len(chunk)]
        view = batch.numpy()
        for slot, i in enumerate(chunk):
            reader.read(i, view[slot, 0])
        return batch

    with ThreadPoolExecutor(max_workers=1) as background:
        pending = background.submit(load, chunks[0], buffers[0])
        for n in range(len(chunks)):
            batch = pending.result()
            if n + 1 < len(chunks):
                pending = background.submit(load, chunks[n + 1], buffers[(n + 1) % 2])
            yield batch


def loader_batches(reader: ScanReader, chunks: list[list[int]], workers: int, pin: bool) -> Iterator[torch.Tensor]:
    """The same batches, in the same order, read by a DataLoader's ``workers`` processes (decoding
    and perturbing in parallel, two batches ahead each), in pinned memory for a GPU."""
    from torch.utils.data import DataLoader

    yield from DataLoader(reader, batch_sampler=chunks, num_workers=workers, pin_memory=pin, prefetch_factor=2)


#: Beside each cache entry ``<scan>.npy``: ``<scan>.npy.sha256``, the SHA-256 of the entry's bytes.
#: A sidecar (not a new key or file format) so that every existing entry keeps its path.
CHECKSUM_SUFFIX = ".sha256"


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def _write_checksum(path: Path, data: bytes) -> None:
    """Record the SHA-256 of the entry ``path`` holds (``data``), so an entry changed since (zeroed
    but still a valid .npy, say) is recomputed instead of served."""
    atomic_write(_checksum_path(path), lambda f: f.write(hashlib.sha256(data).hexdigest().encode("ascii")),
                 mode=0o644)


def _read_cached(path: Path) -> np.ndarray | None:
    """A cached embedding, or None (then it is recomputed) when it is missing, unreadable, holds a
    non-finite value, or its bytes differ from its checksum sidecar.

    An entry without a sidecar (written before checksums, or by a writer that died between the two
    files) is trusted once it loads and is finite and not all zeros, and its sidecar is written
    then, so warm caches stay warm; an all-zero one is recomputed (what a zeroed file reads as).
    A NaN here is the cache's fault, not the encoder's: it is recomputed before anyone is blamed."""
    try:
        data = path.read_bytes()
        vector = np.load(io.BytesIO(data))
    except (ValueError, OSError, EOFError):  # missing, or damaged by something other than us: redo it
        return None
    try:
        expected = _checksum_path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        expected = None
    if expected is not None and expected != hashlib.sha256(data).hexdigest():
        return None
    if not np.issubdtype(vector.dtype, np.floating) or not np.isfinite(vector).all():
        return None
    if expected is None:
        if not vector.any():
            return None
        with contextlib.suppress(OSError):  # a read-only cache is still read
            _write_checksum(path, data)
    return vector
