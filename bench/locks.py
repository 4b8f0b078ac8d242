"""File locks, so that several `bench` processes (on one machine or on cluster nodes sharing a
folder) never compute or write the same thing at once.

The locks are OS file locks (``flock`` through the ``filelock`` package): the kernel drops them
when the holding process dies, even under SIGKILL, so a killed run never leaves a stale lock
behind and the next run simply takes it. (On a network file system this needs working
``flock``/``fcntl`` locking, which NFSv4 and Lustre provide.)
"""

from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from bench.paths import cache_home


def lock_file(path: str | Path) -> FileLock:
    """A lock on ``path`` (created with its folder if needed). The file's content is meaningless."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))


@contextmanager
def try_lock(path: str | Path, *, wait: bool) -> Iterator[bool]:
    """Hold the lock at ``path`` for the ``with`` block; yield whether it was acquired.

    ``wait=False`` makes one attempt, so a caller can do other work first and come back to a job
    another process holds; ``wait=True`` blocks until the holder releases the lock (or dies).
    """
    lock = lock_file(path)
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def is_locked(path: str | Path) -> bool:
    """True while another process holds the lock at ``path`` (a held lock means work in progress)."""
    if not Path(path).exists():
        return False
    with try_lock(path, wait=False) as acquired:
        return not acquired


#: The cache locks this thread holds (see :func:`cache_lock`).
_HELD = threading.local()


def _held() -> set[str]:
    if not hasattr(_HELD, "names"):
        _HELD.names = set()
    return _HELD.names


def _acquire(lock: FileLock, notice: str) -> None:
    """Take ``lock``, waiting as long as it takes; when another process holds it, say so first
    (``notice``, as a one-line note) so that the wait is not taken for a hang."""
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if notice:
            warnings.warn(notice, stacklevel=1)
        lock.acquire(timeout=-1)


@contextmanager
def cache_lock(name: str, *, notice: str = "") -> Iterator[None]:
    """Serialise one-off work on the shared cache (e.g. generating a synthetic cohort) across
    processes: the second process waits, then finds the work done. ``notice`` is shown when it
    has to wait.

    Re-entrant in one thread: a command that holds a cohort's lock around opening the cohort reaches
    the generator's own :func:`~bench.data.sources.ensure_synth`, which takes the same lock. Two
    ``flock`` calls on one file by one process exclude each other, so without this the command
    would wait on itself forever.
    """
    held = _held()
    if name in held:
        yield
        return
    lock = lock_file(cache_home() / "locks" / f"{name}.lock")
    _acquire(lock, notice)
    held.add(name)
    try:
        yield
    finally:
        held.discard(name)
        lock.release()
