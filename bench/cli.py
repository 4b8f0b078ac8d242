"""The ``bench`` command line: one sub-command per job, each a thin layer over the library.

Errors a user can fix (bad files, leaking splits...) are printed as one line naming what to
fix, with exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import warnings
from pathlib import Path

from bench.commands._args import BenchParser, err_console
from bench.errors import MribenchError
from bench.names import term


#: Command families listed first in ``bench --help`` (modules of bench/commands/), in this order; the
#: others follow by name.
FIRST = ("data", "splits", "run", "pretrain", "perturb", "listing")
#: The package folder: warnings raised under it are mribench's own, shown as one-line notes.
_PACKAGE = Path(__file__).resolve().parent


def build_parser() -> argparse.ArgumentParser:
    """Every sub-command: one module per command family under ``bench/commands/``, each with its
    ``register(sub)`` (modules whose name starts with ``_`` hold shared helpers)."""
    import importlib
    import pkgutil

    import bench.commands

    parser = BenchParser(prog="bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    names = [m.name for m in pkgutil.iter_modules(bench.commands.__path__) if not m.name.startswith("_")]
    for name in sorted(names, key=lambda n: (FIRST.index(n) if n in FIRST else len(FIRST), n)):
        importlib.import_module(f"bench.commands.{name}").register(sub)
    return parser


#: ``np.int64(2)``, ``np.float64(0.5)``: how numpy 2 scalars print inside a message; a user reads ``2``.
_NUMPY_REPR = re.compile(r"\bnp\.(?:u?int|float|bool_?|str_)\w*\(([^()]*)\)")


def note_text(message) -> str:
    """A warning's text as a note: one line, numpy scalars as plain numbers."""
    return " ".join(_NUMPY_REPR.sub(r"\1", str(message)).split())


def _ours(filename: str) -> bool:
    """Whether a warning was raised in mribench's own code (not a library's)."""
    try:
        return Path(filename).resolve().is_relative_to(_PACKAGE)
    except (OSError, ValueError):
        return False


def _one_line_warnings(previous):
    """A ``warnings.showwarning`` that prints mribench's own warnings (a scan's oblique affine, a
    class with fewer train subjects than k...) as one line each, once per run, with no source line
    under it and no numpy reprs in it, and hands every other warning to ``previous``."""
    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        from bench.data.sanity import ScanWarning
        from bench.errors import MribenchWarning

        if issubclass(category, (ScanWarning, MribenchWarning)):
            label = "[yellow]warning:[/yellow]"
        elif issubclass(category, UserWarning) and _ours(filename):
            label = "note:"
        else:
            previous(message, category, filename, lineno, file, line)
            return
        text = note_text(message)
        if text not in seen:
            seen.add(text)
            err_console.print(f"{label} {term(text)}", highlight=False, soft_wrap=True)

    return show


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # what the user typed, for provenance (records, cards): main(argv) from a test or script too
    args.command_line = " ".join(["bench", *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    try:
        with warnings.catch_warnings():  # restores the default display when main() returns
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            return int(args.func(args) or 0)
    except MribenchError as e:
        # the message may quote a file's text: shown as text (``[/]`` is not markup, ESC not a command)
        err_console.print(f"[red]error:[/red] {term(str(e))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted: finished work is kept; run the same command to continue")
        return 130



if __name__ == "__main__":
    sys.exit(main())
