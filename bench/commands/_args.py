"""Arguments several command families share (not a command: the loader skips ``_`` modules)."""

from __future__ import annotations

import argparse
import json
from typing import Callable, Iterable, Iterator



class _Console:
    """A rich ``Console`` made on first use: importing rich's console costs more than building the
    whole parser, and ``bench --help`` never prints through one."""

    def __init__(self, **options) -> None:
        self._options = options
        self._console = None

    def __getattr__(self, name: str):
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return getattr(self._console, name)


console = _Console(stderr=False)
err_console = _Console(stderr=True)
wrap_console = _Console(soft_wrap=True)  # paths stay whole, so they can be copied


class Later:
    """A help text or description that costs an import to write (the protocols' names load torch):
    made when that help is printed (:class:`BenchParser`), not each time the parser is built, so
    ``bench --help`` and ``bench list`` start without the libraries the work needs."""

    def __init__(self, make: Callable[[], str]) -> None:
        self.make = make

    def __str__(self) -> str:
        return self.make()


class LazyChoices:
    """``choices=`` whose names come from a registry that costs an import: read on the first check
    (give the argument a ``metavar``, or argparse lists them while the parser is built)."""

    def __init__(self, load: Callable[[], Iterable[str]]) -> None:
        self._load = load
        self._names: tuple[str, ...] | None = None

    def _get(self) -> tuple[str, ...]:
        if self._names is None:
            self._names = tuple(self._load())
        return self._names

    def __contains__(self, name: object) -> bool:
        return name in self._get()

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


class BenchParser(argparse.ArgumentParser):
    """The parser of ``bench`` and (argparse makes sub-parsers of the parent's class) of every
    sub-command: a :class:`Later` help or description is written out when help is printed."""

    def format_help(self) -> str:
        if isinstance(self.description, Later):
            self.description = str(self.description)
        for action in self._actions:
            if isinstance(action.help, Later):
                action.help = str(action.help)
        return super().format_help()

#: What ``--encoder path/to/file.py:ClassName`` does, said wherever the flag is: it is code, run.
FILE_ENCODER_NOTE = ("path/to/file.py:ClassName imports that file and runs its code with your permissions: "
                     "give only a file you would run yourself")


def add_cohort_args(p: argparse.ArgumentParser, *,
                    profile_help: str = "run profile (sets the synthetic cohort's size)") -> None:
    """--cohort, --profile, --seed (of the synthetic cohort) and --no-progress, spelled one way."""
    from bench.profiles import PROFILES

    p.add_argument("--cohort", default=None,
                   help="BIDS folder or CSV/TSV manifest; default: the profile's synthetic cohort")
    p.add_argument("--profile", default="default", choices=sorted(PROFILES), help=profile_help)
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic cohort")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--seeds 0`` or ``-1`` is a usage error, not a silent default)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def results_folder(path: str, must_exist: bool = False, writable: bool = True):
    """``--results``: a folder (created later when missing, unless ``must_exist``); a file there is a
    one-line error instead of a traceback from mkdir, and so is one records cannot be written to
    (checked unless ``must_exist``, which reads, or not ``writable``, e.g. a dry run)."""
    from pathlib import Path

    from bench.errors import MribenchError

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise MribenchError(f"--results {path}: a file, not a folder; give the folder of result records "
                            "(it is created when missing)")
    if must_exist and not folder.is_dir():
        raise MribenchError(f"--results {path}: no such results folder")
    if writable and not must_exist:
        _check_writable(folder, path)
    return folder


def _check_writable(folder, given: str) -> None:
    """A folder that records will be written to: it, or the nearest folder above it that exists
    (it is created later), must take a file; otherwise one line now, not an ``OSError``
    traceback after the cohort has been opened. Probed with an unnamed temporary file."""
    import tempfile

    from bench.errors import MribenchError

    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise MribenchError(f"--results {given}: cannot write there ({existing} is a file, not a folder); give a "
                            "folder you can write to")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise MribenchError(f"--results {given}: cannot write there ({e.strerror or e}: {existing}); give a folder "
                            "you can write to") from None


def cohort_from(args: argparse.Namespace):
    from bench.data.sources import open_cohort

    return open_cohort(args.cohort, profile=args.profile, seed=args.seed,
                       progress=not args.no_progress)


def print_listing(args: argparse.Namespace, title: str, columns: list[str], rows: list[list], note: str = "") -> None:
    """A listing: a table on a terminal; whole values, tab-separated, when stdout is not a terminal
    (a table there is cut to 80 columns and names become ``ad_dia…``); a JSON list with ``--json``."""
    if getattr(args, "json", False):  # commands whose listing is not their main output have no --json
        print(json.dumps([dict(zip(columns, row)) for row in rows], indent=2))
        return
    cells = [["-" if v is None else f"{v:,}" if isinstance(v, int) and v >= 10_000 else str(v) for v in row]
             for row in rows]
    if not console.is_terminal:
        print("\n".join("\t".join(row) for row in [columns, *cells]))
        return
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, overflow="fold")  # wrap, never cut, a name that does not fit
    for row in cells:
        table.add_row(*row)
    console.print(table, highlight=False)
    if note:
        console.print(note, highlight=False)



def add_executor_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scale out (pip install 'mribench[cluster]')")
    g.add_argument("--executor", choices=("local", "dask"), default="local",
                   help="local: jobs one by one in this process (default); dask: jobs on Dask workers")
    g.add_argument("--scheduler", default=None, metavar="ADDR",
                   help="address of a running Dask scheduler (e.g. tcp://10.0.0.5:8786); implies --executor dask")
    g.add_argument("--cluster", choices=("slurm", "pbs"), default=None,
                   help="start Dask workers as SLURM/PBS jobs (dask-jobqueue); implies --executor dask")
    g.add_argument("--workers", type=int, default=2,
                   help="dask: worker processes of the local cluster, or batch jobs of --cluster (default 2)")
    g.add_argument("--worker-cores", type=int, default=None, help="--cluster: cores per batch job (default 4)")
    g.add_argument("--worker-memory", default=None, help="--cluster: memory per batch job (default 16GB)")
    g.add_argument("--gpus-per-worker", type=int, default=0,
                   help="--cluster: GPUs per batch job; jobs that train a network are then placed on them")
    g.add_argument("--walltime", default=None, help="--cluster: wall time per batch job (e.g. 04:00:00)")
    g.add_argument("--queue", default=None, help="--cluster: partition / queue")
    g.add_argument("--account", default=None, help="--cluster: account to charge")
    g.add_argument("--interface", default=None,
                   help="--cluster: network interface compute nodes reach this machine by (e.g. ib0)")


def compute_for_executor(args: argparse.Namespace):
    """The run's :class:`~bench.devices.Compute`: resolved here for the local executor (an absent device
    is one line before the cohort is opened); for Dask, the ``--device`` text as asked, which each
    worker resolves for the jobs it runs (:func:`bench.runner.run_job`), since this machine's devices
    say nothing of theirs."""
    from bench.devices import compute_from_args
    from bench.executors import runs_elsewhere

    return compute_from_args(args, resolve=not runs_elsewhere(args.executor, args.scheduler, args.cluster))


def executor_from(args: argparse.Namespace):
    """The executor the scale-out options name (local by default)."""
    from bench.executors import make_executor

    return make_executor(args.executor, scheduler=args.scheduler, cluster=args.cluster, workers=args.workers,
                         device=getattr(args, "device", None),
                         **({"cores": args.worker_cores, "memory": args.worker_memory, "gpus": args.gpus_per_worker,
                             "walltime": args.walltime, "queue": args.queue, "account": args.account,
                             "interface": args.interface} if args.cluster else {}))
