"""The volume store: each scan resampled once per input space, then memory-mapped.

Training an encoder reads every scan many times; decompressing and resampling a NIfTI each
time would dominate a CPU run. The store keys each preprocessed array by the *content* of
the source file (not its path), the space and the preprocessing version, so renaming a
tree keeps the cache while editing a scan, changing a space or bumping
:data:`STORE_VERSION` never serves a stale array.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from bench.atomic import atomic_write
from bench.data import spaces
from bench.data.spaces import KINDS, InputSpace, get_space
from bench.data.volumes import load_label
from bench.errors import ScanError
from bench.splits import file_sha256
from bench.progress import progress_bar
from bench.timing import phase

#: Bump whenever loading or resampling changes what a cached array contains.
STORE_VERSION = 1

#: Content hashes already computed in this process, keyed by (abs path, size, mtime_ns).
_HASH_MEMO: dict[tuple[str, int, int], str] = {}
_HASH_MEMO_LOCK = threading.Lock()


def clear_hash_memo() -> None:
    """Forget the memoised content hashes (``bench perf`` times a fresh run's look-ups)."""
    with _HASH_MEMO_LOCK:
        _HASH_MEMO.clear()


def content_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, memoised per (path, size, mtime_ns) for this process.

    A rewritten file changes size or mtime and is hashed again. (A rewrite that keeps both
    identical to the nanosecond is not detected; no normal tool does that.)
    """
    path = os.path.abspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ScanError(f"{path}: file not found; check the path in the cohort table or "
                        "manifest (or re-run the download / generation step)") from None
    memo_key = (path, st.st_size, st.st_mtime_ns)
    with _HASH_MEMO_LOCK:
        cached = _HASH_MEMO.get(memo_key)
    if cached is not None:
        return cached
    digest = file_sha256(path)
    with _HASH_MEMO_LOCK:
        _HASH_MEMO[memo_key] = digest
    return digest


def cache_key(content_hash: str, space: InputSpace, kind: str) -> str:
    """The store key: source content, the space's full definition, kind and STORE_VERSION.

    The whole space definition is hashed, not just its name, so redefining a space under
    the same name (a new centre, say) cannot serve arrays from the old grid.
    """
    parts = (content_hash, repr(space), kind, f"v{STORE_VERSION}")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


class VolumeStore:
    """A directory of preprocessed volumes, ``root/<space>/<key[:2]>/<key>.npy``.

    ``hits`` counts requests served from disk, ``misses`` the resamplings performed.
    Safe to use from several threads and processes: entries are written atomically.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    def path_for(self, path: str | os.PathLike, space: InputSpace | str,
                 kind: str = "image") -> Path:
        """Where the preprocessed array of ``path`` in ``space`` lives (existing or not)."""
        space = _as_space(space)
        _check_kind(kind)
        key = cache_key(content_sha256(path), space, kind)
        return self.root / space.name / key[:2] / f"{key}.npy"

    @phase("store")
    def get(self, path: str | os.PathLike, space: InputSpace | str,
            kind: str = "image") -> np.ndarray:
        """The scan resampled into ``space``, as a read-only memory-mapped array.

        A hit opens the entry once (the map that validates it is the one returned).
        """
        space = _as_space(space)
        array = _open_entry(self.path_for(path, space, kind))
        if array is not None:
            self._count(hit=True)
            return array
        return np.load(self.ensure(path, space, kind), mmap_mode="r")

    @phase("store")
    def ensure(self, path: str | os.PathLike, space: InputSpace | str, kind: str = "image") -> Path:
        """Make sure the entry for ``path`` exists (resampling it if needed); return its path."""
        space = _as_space(space)
        entry = self.path_for(path, space, kind)
        if _is_valid_entry(entry):
            self._count(hit=True)
            return entry
        array = _preprocess(Path(path), space, kind)
        _atomic_save(entry, array)
        self._count(hit=False)
        return entry

    @phase("store")
    def prefetch(self, paths: Iterable[str | os.PathLike], space: InputSpace | str,
                 kind: str = "image", workers: int = 2, progress: bool = True) -> list[Path]:
        """Fill the cache for many scans in parallel; return their entry paths, in input order.

        Threads suffice: gzip decompression, hashing and torch's grid_sample release the
        GIL. The first failure (a ScanError naming the file) cancels pending work and is
        re-raised.
        """
        space = _as_space(space)
        paths = list(paths)
        entries: list[Path | None] = [None] * len(paths)
        with progress_bar(progress) as bar, \
                ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            task = bar.add_task(f"preprocessing for {space.name}", total=len(paths))
            futures = {pool.submit(self.ensure, p, space, kind): i for i, p in enumerate(paths)}
            try:
                for future in as_completed(futures):
                    entries[futures[future]] = future.result()
                    bar.advance(task)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return entries  # type: ignore[return-value]

    def _count(self, hit: bool) -> None:
        """Update the counters under a lock, since prefetch calls ensure from many threads."""
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1


def _as_space(space: InputSpace | str) -> InputSpace:
    """Accept a space or its registered name."""
    return space if isinstance(space, InputSpace) else get_space(space)


def _check_kind(kind: str) -> None:
    """Refuse a kind the store would key but resampling would not understand."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _preprocess(path: Path, space: InputSpace, kind: str) -> np.ndarray:
    """Load and resample one scan; looked up on the module so tests can count calls.

    Images pass the scan sanity gate (:mod:`bench.data.sanity`) first, so a scan that would reach
    the encoder as zeros (empty, tiny, out of the field of view...) fails here, naming the file.
    """
    from bench.data.sanity import load_gated_scan

    volume, affine = load_label(path) if kind == "label" else load_gated_scan(path)
    return spaces.resample_to_space(volume, affine, space, kind=kind)


def _open_entry(entry: Path) -> np.ndarray | None:
    """The entry memory-mapped, or None when it is missing or its .npy header is unreadable.

    Atomic writes rule out half-written entries; this also survives one damaged by
    something else (a disk error, a manual edit, a file cut short) by treating it as a miss.
    """
    try:
        return np.load(entry, mmap_mode="r")
    except (ValueError, OSError, EOFError):  # FileNotFoundError is an OSError
        return None


def _is_valid_entry(entry: Path) -> bool:
    """True when an entry exists and its .npy header is readable (see :func:`_open_entry`)."""
    return _open_entry(entry) is not None


def read_entry_into(entry: str | os.PathLike, out: np.ndarray) -> None:
    """Read a store entry's voxels straight into ``out`` (e.g. one slot of a batch buffer).

    One ``readinto`` from the file into the caller's memory, instead of mapping the file and
    copying it twice (into a temporary array, then into the batch). An entry whose dtype, shape
    or order differs from ``out`` is converted through :func:`numpy.load` instead.
    """
    fmt = np.lib.format
    with open(entry, "rb") as f:
        version = fmt.read_magic(f)
        reader = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        shape, fortran, dtype = reader(f) if reader is not None else (None, None, None)
        if (reader is not None and tuple(shape) == out.shape and dtype == out.dtype and not fortran
                and out.flags.c_contiguous):
            raw = out.reshape(-1).view(np.uint8)
            if f.readinto(raw) != raw.size:
                raise ScanError(f"{entry}: store entry is shorter than its header says; delete it to rebuild")
            return
    out[...] = np.load(entry, mmap_mode="r")


def _atomic_save(entry: Path, array: np.ndarray) -> None:
    """Write ``array`` as .npy beside ``entry``, fsync, then rename it (see :mod:`bench.atomic`)."""
    atomic_write(entry, lambda f: np.save(f, np.ascontiguousarray(array), allow_pickle=False), fsync=True)
