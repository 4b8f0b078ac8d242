"""Run the generator's per-subject work on several cores: forked worker processes where they can be.

Why processes rather than threads: a subject's rendering is a few dozen torch, numpy, scipy and zlib
calls, each of which releases the GIL, but the Python between them and the shared allocator do not:
on 120 default-profile subjects, two render threads on two cores took 20.8 s and 39.7 CPU-s, two
processes 17.9 s and 35.1 CPU-s (one run each, back to back; ``benchmarks/cohort_generation.py``
measures the whole cohort).

Why fork: a worker needs the renderer (the anatomy, its samplers and tables: tens of MB of tensors)
and the drawn subjects. Forked, it inherits them as they are in the parent, so nothing is pickled
per task but a subject index and the rows it returns, and no worker rebuilds the anatomy. Fork is
used on Linux only (macOS's system libraries are not fork-safe) and not from a daemonic process;
elsewhere, and for one worker, the work runs on threads as before. The bytes written do not depend
on which (``tests/test_synth_parallel.py``).
"""

from __future__ import annotations

import multiprocessing
import sys
from contextlib import contextmanager
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence

import torch

#: What every task's function receives first: set in the parent just before its workers are forked,
#: so each worker holds the parent's objects without their being pickled (threads read it too).
_INHERITED: tuple[Any, ...] = ()


def _call(fn: Callable[..., Any], item: Any) -> Any:
    return fn(*_INHERITED, item)


def _one_thread() -> None:
    """A worker computes on one thread: the parallelism is the workers (and a forked child must not
    enter an OpenMP region its parent's threads were part of)."""
    torch.set_num_threads(1)


def forks() -> bool:
    """Whether the workers are forked processes here (else threads): on Linux, and not from a daemonic
    process (a Dask worker's, by default), which may not have children."""
    return (sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
            and not multiprocessing.current_process().daemon)


def _executor(workers: int) -> Executor:
    if workers > 1 and forks():
        return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                                   initializer=_one_thread)
    return ThreadPoolExecutor(max_workers=max(workers, 1))


@contextmanager
def run_each(fn: Callable[..., Any], shared: tuple[Any, ...], items: Sequence[Any],
             workers: int) -> Iterator[Iterator[tuple[Any, Any]]]:
    """Start ``fn(*shared, item)`` for every item on entering; give an iterator of ``(item, result)`` in
    the order of ``items``; on leaving, wait for the workers (cancelling the tasks not yet started
    when leaving on an error or an interrupt, instead of running them to the end).

    ``fn`` must be a module-level function (a process worker finds it by name). Every task is
    submitted on entering, so entered before a progress bar, the workers are forked before the bar's
    thread starts."""
    global _INHERITED
    _INHERITED = shared
    pool = _executor(workers)
    cancel = True
    try:
        futures: list[Future] = [pool.submit(_call, fn, item) for item in items]
        yield ((item, future.result()) for item, future in zip(items, futures))
        cancel = False
    finally:
        pool.shutdown(wait=True, cancel_futures=cancel)
        _INHERITED = ()
