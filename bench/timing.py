"""Where a run's time goes: wall-clock and process CPU seconds per phase, exclusive of nested phases.

``with phase("embeddings"):`` (or ``@phase("heads")`` on a function) charges the time of the block
to that phase of the clock running on this thread, if one runs (:func:`measure`); with none it
does nothing but look up a thread-local. Time inside a nested phase counts for the inner phase
only, and time outside every phase counts as ``other``, so a clock's phases add up to its total
without double counting. The phases the harness marks (:data:`PHASES`):

* ``cohort``: opening (or generating) the cohort (``bench suite run``);
* ``store``: preprocessing and reading volumes (:class:`~bench.data.store.VolumeStore`), the scan
  sanity gate, and an embedding pass's wait for its reader thread;
* ``embeddings``: encoder forward passes of the frozen protocols (:meth:`EmbeddingCache.embed`,
  cache look-ups included; a segmentation probe's frozen feature maps);
* ``perturbations``: an embedding pass's wait for its reader thread while it perturbs scans
  (robustness);
* ``heads``: probe heads fitted and predicting (and a frozen segmentation decoder);
* ``bootstraps``: metrics with their bootstrap CIs over subjects, and paired bootstraps;
* ``fine-tuning``: training (and predicting with) a network end to end (finetune,
  finetune_fractions, segmentation under fine-tuning);
* ``other``: everything else (task preparation, record identity checks, records written...).

A clock belongs to the thread that started it: phases entered on other threads (an embedding
pass's reader thread, the store's prefetch pool) are not recorded, and the work they do while
the clock's thread is inside a phase is part of that phase's wall time, since it overlaps it.
CPU seconds are the whole process's (:func:`time.process_time`: every thread, torch's included)
during the phase, so overlapped helper-thread work is charged to the phase it overlaps too, and
two clocks on two threads of one process (a Dask worker with several threads) both see it.

A clock started inside another on the same thread (a job's clock inside ``bench suite run``'s)
pauses the outer one and adds its phases to it when it stops: the outer total stays exact.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

#: The phases the harness marks, in the order tables list them (``other`` last).
PHASES = ("cohort", "store", "embeddings", "perturbations", "heads", "bootstraps", "fine-tuning", "other")
OTHER = "other"

_LOCAL = threading.local()


class PhaseClock:
    """Exclusive wall-clock and CPU seconds per phase, for the one thread that runs it.

    ``wall`` and ``cpu`` are the clocks read (injectable, for tests); totals are ``{phase: [wall,
    cpu]}``. Not locked: only the thread that started the clock changes it (see :func:`phase`).
    """

    def __init__(self, wall: Callable[[], float] = time.perf_counter,
                 cpu: Callable[[], float] = time.process_time):
        self._wall, self._cpu = wall, cpu
        self.totals: dict[str, list[float]] = {}
        self._stack = [OTHER]
        self._mark: tuple[float, float] | None = None

    def read(self) -> tuple[float, float]:
        return self._wall(), self._cpu()

    def start(self, at: tuple[float, float] | None = None) -> None:
        self._mark = at or self.read()

    def _charge(self, now: tuple[float, float]) -> None:
        """Charge the time since the last mark to the innermost open phase; mark ``now``."""
        wall, cpu = self.totals.setdefault(self._stack[-1], [0.0, 0.0])
        self.totals[self._stack[-1]] = [wall + now[0] - self._mark[0], cpu + now[1] - self._mark[1]]
        self._mark = now

    def enter(self, name: str) -> None:
        self._charge(self.read())
        self._stack.append(name)

    def leave(self) -> None:
        self._charge(self.read())
        if len(self._stack) > 1:
            self._stack.pop()

    def stop(self) -> tuple[float, float]:
        """Close the clock (open phases are charged up to now); returns the reading it stopped at."""
        now = self.read()
        self._charge(now)
        return now

    def pause(self) -> tuple[float, float]:
        """Stop charging (a nested clock takes over); returns the reading it paused at."""
        return self.stop()

    def resume(self, totals: dict[str, list[float]], at: tuple[float, float]) -> None:
        """Add a nested clock's totals and go on from ``at``, the reading the nested clock stopped at."""
        add(self.totals, totals)
        self._mark = at


def add(into: dict[str, list[float]], totals: dict[str, list[float]]) -> dict[str, list[float]]:
    """Add per-phase ``[wall, cpu]`` totals into ``into`` (returned)."""
    for name, (wall, cpu) in totals.items():
        w, c = into.get(name, (0.0, 0.0))
        into[name] = [w + wall, c + cpu]
    return into


def summary(totals: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Every phase of :data:`PHASES` (zero where none was seen; others the harness does not mark
    before ``other``) with its wall and CPU seconds and its share of the total wall time."""
    names = [p for p in PHASES if p != OTHER] + sorted(set(totals) - set(PHASES)) + [OTHER]
    total = sum(wall for wall, _ in totals.values())
    out = {}
    for name in names:
        wall, cpu = totals.get(name, (0.0, 0.0))
        out[name] = {"wall_s": wall, "cpu_s": cpu, "share": wall / total if total > 0 else 0.0}
    return out


def active() -> PhaseClock | None:
    """The clock running on this thread, if any."""
    return getattr(_LOCAL, "clock", None)


@contextlib.contextmanager
def measure(clock: PhaseClock | None = None) -> Iterator[PhaseClock]:
    """Run ``clock`` (a new one by default) on this thread for the block; yields it.

    A clock already running on this thread is paused meanwhile and gets this one's totals
    when the block ends, so its own total stays exact."""
    clock = clock or PhaseClock()
    outer = active()
    clock.start(outer.pause() if outer is not None else None)
    _LOCAL.clock = clock
    try:
        yield clock
    finally:
        at = clock.stop()
        _LOCAL.clock = outer
        if outer is not None:
            outer.resume(clock.totals, at)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Charge the block (or the decorated function) to phase ``name`` of this thread's clock;
    nothing when no clock runs on this thread."""
    clock = getattr(_LOCAL, "clock", None)
    if clock is None:
        yield
        return
    clock.enter(name)
    try:
        yield
    finally:
        clock.leave()
