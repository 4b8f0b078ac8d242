"""``bench leaderboard``, ``bench submit`` and ``bench verify``: from result records to the board.

* ``bench leaderboard`` verifies every record under ``--results`` and renders the board into
  ``--out`` (README.md, index.html, results.csv, plots/), or prints one task as LaTeX.
* ``bench submit`` checks a new encoder against the API, runs the standard suite and writes a
  bundle a pull request can add under ``leaderboard/results/``.
* ``bench verify`` re-checks records (schema, task and split hashes, scores against their
  predictions) and prints one line per record.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

FORMAT_CHOICES = ("all", "markdown", "html", "csv", "latex")


def register(sub) -> None:
    from bench.commands._args import FILE_ENCODER_NOTE, Later, add_cohort_args
    from bench.devices import add_compute_args

    p = sub.add_parser("leaderboard", help="render the leaderboard from verified result records",
                       description="Verify every record under --results, rank each task (ties by a paired "
                                   "bootstrap over test subjects), aggregate across tasks and write README.md, "
                                   "index.html, results.csv and plots/ into --out; or print one task as LaTeX.")
    p.add_argument("--results", action="append", default=None,
                   help="folder of result records (repeatable; default leaderboard/results)")
    p.add_argument("--submissions", default="leaderboard/submissions",
                   help="folder of `bench submit` bundles ranked beside the results and flagged as submitted "
                        "(default leaderboard/submissions, when it exists)")
    p.add_argument("--out", default="leaderboard", help="output folder (markdown, html, csv, plots)")
    p.add_argument("--format", default="all", choices=FORMAT_CHOICES,
                   help="all (default: markdown + html + csv), one of them, or latex (prints --task's table, or "
                        "without --task the encoder x task matrix of the first --protocol)")
    p.add_argument("--task", default=None, help="task of the LaTeX table")
    p.add_argument("--protocol", action="append", default=None, help="LaTeX: only these protocols (repeatable)")
    p.add_argument("--cohort-name", default=None, help="LaTeX: the cohort, when the task has records on several")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates of the tie test (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tie test's bootstrap draws")
    p.add_argument("--note", default="", help="a line of text shown under the title (markdown and html)")
    p.add_argument("--power-sims", type=int, default=None,
                   help="simulated replicates per AUC gap of each classification task's power line "
                        "(default 400: Monte-Carlo error of the power <= 0.02; 0: counts only)")
    p.add_argument("--screenshot", action="store_true",
                   help="also photograph index.html in headless Chromium into screenshot.png (needs chromium "
                        "and pip install playwright)")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("submit", help="check a new encoder, run the standard suite, write a bundle for a PR",
                       description=Later(lambda: "API checks first (card, input space, output shape and dtype, "
                                         "no NaN, determinism, batch independence; the first failure stops with one "
                                         f"line), then every task x {', '.join(_suite())}, then the bundle."))
    p.add_argument("--encoder", required=True, help=FILE_ENCODER_NOTE)
    p.add_argument("--weights", default=None, help="checkpoint passed to the encoder as weights=...")
    p.add_argument("--out", required=True, help="bundle folder")
    p.add_argument("--task", action="append", default=None, help="only these tasks (repeatable; default: all)")
    p.add_argument("--protocol", action="append", default=None,
                   help=Later(lambda: f"only these protocols (repeatable; default: {' '.join(_suite())})"))
    add_cohort_args(p)
    add_compute_args(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("verify", help="re-check result records against the repository",
                       description="Schema, task-spec hash vs tasks/*.yaml, split hash vs splits/, and every score "
                                   "recomputed from the record's predictions. Exit status 1 if any record fails.")
    p.add_argument("records", nargs="+", help="record files, or folders searched for *.json")
    p.set_defaults(func=cmd_verify)


def _suite() -> tuple[str, ...]:
    """The standard suite's protocols (loading them imports torch: only when ``submit --help`` is printed)."""
    from bench.leaderboard.submit import suite_protocols

    return suite_protocols()


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from bench.errors import MribenchError
    from bench.leaderboard import FORMATS, load_board, render
    from bench.names import term

    from bench.leaderboard.sections import POWER_SIMS

    if args.n_boot < 100:
        raise MribenchError(f"--n-boot {args.n_boot} is too few for a p-value at 0.05; use at least 100")
    if args.power_sims is not None and args.power_sims < 0:
        raise MribenchError(f"--power-sims {args.power_sims} must be 0 (no simulation) or more")
    out, err = _console(), _console(stderr=True)
    board = load_board(args.results or ["leaderboard/results"], submissions=args.submissions, n_boot=args.n_boot,
                       seed=args.seed, power_sims=POWER_SIMS if args.power_sims is None else args.power_sims)
    board.note = args.note
    for r in board.refused:
        err.print(f"[yellow]refused[/yellow] {term(r.source)}: {term(r.reason)}")
    if args.format == "latex":
        from bench.leaderboard.render_latex import render_latex, render_latex_matrix

        if args.task:
            sys.stdout.write(render_latex(board, args.task, cohort=args.cohort_name, protocols=args.protocol))
        else:  # the encoder x task matrix, under the first --protocol (default: the linear probe)
            sys.stdout.write(render_latex_matrix(board, protocol=(args.protocol or ["linear_probe"])[0],
                                                 cohort=args.cohort_name))
        return 0
    formats = FORMATS if args.format == "all" else (args.format,)
    written = render(board, args.out, formats, screenshot=args.screenshot)
    for summary in board.overall:
        ranking = ", ".join(f"{term(r.encoder)} (mean rank {'-' if r.mean_rank is None else f'{r.mean_rank:.2f}'}"
                            f" over {r.n_tasks}/{len(summary.tasks)} tasks)" for r in summary.rows)
        out.print(f"{term(summary.cohort)}: {ranking}")
    n_plots = sum(1 for p in written if p.parent.name == "plots")
    files = [p.name for p in written if p.parent.name != "plots"]
    cross = f" ({len(board.cross_cohort)} cross-cohort)" if board.cross_cohort else ""
    out.print(f"{len(board.entries) + len(board.cross_cohort)} verified record(s){cross}, {len(board.refused)} "
              "refused; wrote "
              f"{', '.join(files)}" + (f" and {n_plots} plot file(s)" if n_plots else "") + f" in {term(args.out)}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from bench.devices import compute_from_args
    from bench.leaderboard.submit import submit
    from bench.names import term as escape  # record text: markup escaped, control characters stripped

    out = _console()
    command = " ".join(shlex.quote(a) for a in ["bench", *sys.argv[1:]])
    result = submit(args.encoder, args.out, weights=args.weights, profile=args.profile, tasks=args.task,
                    protocols=args.protocol, cohort=args.cohort, cohort_seed=args.seed,
                    progress=not args.no_progress, command=command, compute=compute_from_args(args))
    for c in result.checks:
        out.print(f"check {c.name}: ok ({escape(c.detail)})")
    for t, p, reason in result.plan.skipped:
        out.print(f"skipped {escape(t)} / {escape(p)}: {escape(reason)}")
    for r in result.records:
        score = "-" if r["main_score"] is None else f"{r['main_score']:.3f}"
        state = "verified" if r["verified"] else f"NOT verified: {escape(r['refused_because'])}"
        out.print(f"{escape(r['task'])} / {escape(r['protocol'])}: {score} ({state})")
    out.print(f"bundle for {escape(result.encoder)} in {escape(args.out)}: {len(result.records)} record(s); "
              "see its README.md")
    return 1 if result.n_refused else 0


def cmd_verify(args: argparse.Namespace) -> int:
    from bench.errors import MribenchError
    from bench.leaderboard.verify import verify_path
    from bench.names import term as escape  # record text: markup escaped, control characters stripped

    out = _console()
    paths: list[Path] = []
    for item in map(Path, args.records):
        if item.is_dir():
            paths += sorted(p for p in item.rglob("*.json") if p.is_file())
        elif item.is_file():
            paths.append(item)
        else:
            raise MribenchError(f"{item}: no such record file or folder")
    if not paths:
        raise MribenchError(f"no *.json records under {', '.join(args.records)}")
    bad = 0
    for path in paths:
        verdict = verify_path(path)
        if verdict.ok:
            r = verdict.record
            out.print(f"ok {escape(str(path))}: {escape(r.encoder)} {escape(r.task)}@v{r.task_version} "
                      f"{escape(r.protocol)}")
        else:
            bad += 1
            out.print(f"[red]REFUSED[/red] {escape(str(path))}: {escape(verdict.reason)}")
    out.print(f"{len(paths) - bad} of {len(paths)} record(s) verified")
    return 1 if bad else 0
