"""The ``bench`` command line: one sub-command per job, each a thin layer over the library.

Errors a user can fix (bad files, leaking splits...) are printed as one line naming what to
fix, with exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings



from bench.commands._args import err_console
from bench.errors import MribenchError
from bench.names import term


#: Command families listed first in ``bench --help`` (modules of bench/commands/), in this order; the
#: others follow by name.
FIRST = ("data", "splits", "run", "pretrain", "perturb", "listing")


def build_parser() -> argparse.ArgumentParser:
    """Every sub-command: one module per command family under ``bench/commands/``, each with its
    ``register(sub)`` (modules whose name starts with ``_`` hold shared helpers)."""
    import importlib
    import pkgutil

    import bench.commands

    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    names = [m.name for m in pkgutil.iter_modules(bench.commands.__path__) if not m.name.startswith("_")]
    for name in sorted(names, key=lambda n: (FIRST.index(n) if n in FIRST else len(FIRST), n)):
        importlib.import_module(f"bench.commands.{name}").register(sub)
    return parser


def _one_line_warnings(previous):
    """A ``warnings.showwarning`` that prints mribench's own warnings (a scan's oblique affine...)
    as one line, and hands every other warning to ``previous``."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        from bench.data.sanity import ScanWarning
        from bench.errors import MribenchWarning

        if issubclass(category, (ScanWarning, MribenchWarning)):
            err_console.print(f"[yellow]warning:[/yellow] {term(message)}", highlight=False, soft_wrap=True)
        else:
            previous(message, category, filename, lineno, file, line)

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
