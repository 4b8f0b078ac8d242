"""``bench docs``: check or rewrite the tables of numbers in README.md and docs/ from the committed
records, cards and suite timing lines (:mod:`bench.doctables`)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("docs", help="check (--check) or rewrite (--write) the generated tables in README.md and docs/",
                       description="Every table of numbers in README.md and docs/*.md that the committed files hold "
                                   "sits in a generated block (<!-- generated: NAME (bench docs --write) --> ... "
                                   "<!-- end generated -->). --write renders each block from the committed records "
                                   "(verified, with the leaderboard's intervals and paired tests), encoder cards and "
                                   "suite timing lines; --check exits 1 naming the file, the block and the first line "
                                   "that differs.")
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="exit 1 if a block differs from what the files give")
    action.add_argument("--write", action="store_true", help="rewrite every block in place")
    action.add_argument("--list", action="store_true", help="list the documents' blocks")
    p.add_argument("files", nargs="*", help="markdown files (default: README.md and docs/**/*.md)")
    p.add_argument("--root", default=None, help="the repository whose committed files are read (default: this one)")
    p.set_defaults(func=cmd_docs)


def cmd_docs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bench.doctables.documents import Renderer, blocks_of, check, documents, write
    from bench.doctables.sources import Sources
    from bench.paths import repo_root

    root = Path(args.root) if args.root else repo_root()
    paths = [Path(f) for f in args.files] or documents(root)
    render = Renderer(Sources(root))
    if args.list:
        for path in paths:
            for block in blocks_of(path, root):
                print(f"{path.relative_to(root) if path.is_relative_to(root) else path}: {block.name}")
        return 0
    if args.check:
        problems = check(paths, render)
        for line in problems:
            print(line)
        print(f"{len(problems)} block(s) out of date" if problems else "every generated block agrees with the files")
        return 1 if problems else 0
    for path, n in write(paths, render):
        print(f"rewrote {path.relative_to(root) if path.is_relative_to(root) else path} ({n} block(s))")
    return 0
