"""File locks, so that several `bench` processes (on one machine or on cluster nodes sharing a
folder) never compute or write the same thing at once.

The locks are OS file locks (``flock`` through the ``filelock`` package): the kernel drops them
when the holding process dies, even under SIGKILL, so a killed run never leaves a stale lock
behind and the next run simply takes it. (On a network file system this needs working
``flock``/``fcntl`` locking, which NFSv4 and Lustre provide.)
"""

from __future__ import annotations

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


@contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """Serialise one-off work on the shared cache (e.g. generating a synthetic cohort) across
    processes: the second process waits, then finds the work done."""
    with try_lock(cache_home() / "locks" / f"{name}.lock", wait=True):
        yield
