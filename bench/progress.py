"""One place that builds progress bars, so every long command looks and behaves the same.

On a terminal it is a rich bar. Piped to a file or a CI log a bar draws nothing until it ends, and
a 14-minute cohort generation looked like a hang; there every task prints a plain line instead
(stage, done/total, elapsed, ETA) at least every :data:`EVERY_S` seconds, from a timer thread, so
a step slower than that still shows the command is alive.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Iterator

#: Seconds between two plain progress lines of an unfinished task (when stderr is not a terminal).
EVERY_S = 10.0


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@dataclass
class _Task:
    description: str
    total: float | None
    started: float
    completed: float = 0.0

    def line(self, now: float) -> str:
        elapsed = now - self.started
        done = f"{self.completed:g}/{self.total:g}" if self.total else f"{self.completed:g}"
        eta = ""
        if self.total and 0 < self.completed < self.total:
            eta = f", ETA {_clock(elapsed * (self.total - self.completed) / self.completed)}"
        return f"[progress] {self.description}: {done}, {_clock(elapsed)} elapsed{eta}"


class PlainProgress:
    """The subset of ``rich.progress.Progress`` mribench uses (``add_task``, ``advance``, ``update``),
    written as plain lines: one when a task starts, one every ``every`` seconds while it runs, and
    its last state when the bar closes."""

    def __init__(self, file: IO[str], every: float = EVERY_S) -> None:
        self.file, self.every = file, every
        self.tasks: list[_Task] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="mribench-progress", daemon=True)

    def __enter__(self) -> "PlainProgress":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for task in self.tasks:  # the last state, with the description a task ended on (a final loss)
            self._say(task)

    def _say(self, task: _Task) -> None:
        print(task.line(time.monotonic()), file=self.file, flush=True)

    def _tick(self) -> None:
        while not self._stop.wait(self.every):
            with self._lock:
                for task in self.tasks:
                    if not (task.total and task.completed >= task.total):
                        self._say(task)

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **_) -> int:
        with self._lock:
            self.tasks.append(_Task(description, total, time.monotonic(), completed))
            self._say(self.tasks[-1])
            return len(self.tasks) - 1

    def update(self, task_id: int, *, advance: float | None = None, completed: float | None = None,
               total: float | None = None, description: str | None = None, **_) -> None:
        with self._lock:
            task = self.tasks[task_id]
            task.description = description if description is not None else task.description
            task.total = total if total is not None else task.total
            task.completed = completed if completed is not None else task.completed + (advance or 0)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)


@contextlib.contextmanager
def progress_bar(enabled: bool = True, every: float = EVERY_S) -> Iterator:
    """A rich progress bar on stderr; plain lines (:class:`PlainProgress`) when stderr is not a
    terminal; disabled (but still usable) when ``enabled`` is false."""
    from rich.console import Console

    console = Console(file=sys.stderr)
    if enabled and not console.is_terminal:
        with PlainProgress(sys.stderr, every) as plain:
            yield plain
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not enabled, transient=False) as bar:
        yield bar
