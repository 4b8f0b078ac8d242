"""Suites: a declared grid of encoders x tasks x protocols, run through the job grid in one command.

A suite is a YAML file under ``suites/`` (``bench suite run NAME``) or anywhere
(``bench suite run path/to/my.yaml``), so a group can declare its own. Its fields:

* ``encoders``: registered names (``NAME@init`` included);
* ``tasks``: names, or ``all`` for every task defined on the cohort's family;
* ``protocols``: registered protocol names;
* ``only`` (optional): per protocol, the ``tasks`` and/or ``encoders`` it is limited to (e.g.
  fine-tuning on the headline tasks only);
* ``options`` (optional): per protocol, the job options its jobs run with: those the protocol
  accepts (:attr:`bench.protocols.Protocol.accepts`; any other key is an error), e.g. for
  ``cross_cohort`` ``train_site`` / ``test_site`` (several sites joined by ``+``), ``test_task``
  and ``test_cohort``, which defaults to the cohort the suite runs on (a held-out-site transfer).
  A protocol that cannot run without options must be given them.

Every combination is asked of its protocol's ``supports(task, encoder)``: those that cannot
apply are skipped with that one-line reason rather than failing the run, as ``bench submit``
does. The rest become ordinary jobs of the Runner (records, locks, failure markers, resume).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from bench.errors import MribenchError, MribenchWarning, first_invalid
from bench.paths import repo_root


class Limit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tasks: list[str] | None = None
    encoders: list[str] | None = None


class Suite(BaseModel):
    """A suite file, validated (unknown fields are errors)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    encoders: list[str]
    tasks: list[str] | Literal["all"] = "all"
    protocols: list[str]
    only: dict[str, Limit] = {}
    options: dict[str, dict[str, str]] = {}


@dataclass
class SuitePlan:
    """What a suite runs on one cohort: (encoder, task, protocol) jobs and the skipped ones with why."""

    jobs: list[tuple[str, str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str, str, str]] = field(default_factory=list)


def suites_root() -> Path:
    return repo_root() / "suites"


def list_suites() -> list[str]:
    return sorted(p.stem for p in suites_root().glob("*.yaml"))


def load_suite(name: str) -> Suite:
    """``suites/<name>.yaml``, or a YAML file's path; a bad file is a one-line error naming it.

    Read by :func:`bench.safe_yaml.load_yaml` (no aliases, bounded size and integers: a suite is
    a file a stranger can hand over); the error names the field, never echoes its value."""
    from bench.safe_yaml import load_yaml

    path = Path(name) if name.endswith((".yaml", ".yml")) else suites_root() / f"{name}.yaml"
    if not path.is_file():
        raise MribenchError(f"no suite '{name}': {path} does not exist; known suites: {', '.join(list_suites())}")
    try:
        suite = Suite.model_validate(load_yaml(path, "suite"))
    except ValidationError as e:
        raise MribenchError(f"{path}: not a valid suite (at {first_invalid(e)})") from None
    suite = _merged(suite, path)
    _check_names(suite, path)
    return suite


def _merged(suite: Suite, path: Path) -> Suite:
    """``suite`` with each encoder, task and protocol once (in first-seen order): a name listed
    twice would run, and plan, the same jobs twice; merged with a warning that says so."""
    update, repeated = {}, []
    for what in ("encoders", "tasks", "protocols"):
        names = getattr(suite, what)
        if names == "all":
            continue
        once = list(dict.fromkeys(names))
        if len(once) < len(names):
            update[what] = once
            repeated += [f"{n} (x{names.count(n)})" for n in once if names.count(n) > 1]
    if repeated:
        import warnings

        more = f" and {len(repeated) - 10} more" if len(repeated) > 10 else ""
        warnings.warn(f"{path}: listed more than once, merged: {', '.join(repeated[:10])}{more}",
                      MribenchWarning, stacklevel=2)
    return suite.model_copy(update=update) if update else suite


def _check_names(suite: Suite, path: Path) -> None:
    from bench.protocols import PROTOCOLS
    from bench.tasks import list_tasks

    unknown = [p for p in [*suite.protocols, *suite.only, *suite.options] if p not in PROTOCOLS]
    unknown += [t for t in (suite.tasks if suite.tasks != "all" else []) if t not in list_tasks()]
    unknown += [t for limit in suite.only.values() for t in limit.tasks or [] if t not in list_tasks()]
    unknown += [o["test_task"] for o in suite.options.values() if o.get("test_task", "") not in ("", *list_tasks())]
    if unknown:
        raise MribenchError(f"{path}: unknown protocol(s) or task(s): {', '.join(sorted(set(unknown)))}")
    _check_options(suite, path)


def _check_options(suite: Suite, path: Path) -> None:
    """Each protocol's options are ones it accepts; a protocol that needs options has them."""
    from bench.protocols import PROTOCOLS

    for name, given in suite.options.items():
        accepts = PROTOCOLS[name].accepts
        bad = sorted(set(given) - set(accepts))
        if bad:
            takes = f"it takes {', '.join(accepts)}" if accepts else "it takes none"
            raise MribenchError(f"{path}: unknown option(s) {', '.join(bad)} of protocol {name}; {takes}")
    for name in suite.protocols:
        if PROTOCOLS[name].options and name not in suite.options:
            raise MribenchError(f"{path}: protocol {name} runs with options ({', '.join(PROTOCOLS[name].accepts)}); "
                                f"give them under options: {name}:")


def job_options(suite: Suite, cohort_name: str) -> dict[str, dict[str, str]]:
    """Per protocol, the options its jobs run with on ``cohort_name``: the suite's, with the scored
    cohort (``test_cohort``) defaulting to this one where the protocol takes it."""
    from bench.protocols import get_protocol

    out = {}
    for name, given in suite.options.items():
        opts = dict(given)
        if "test_cohort" in get_protocol(name).accepts:
            opts.setdefault("test_cohort", cohort_name)
        out[name] = opts
    return out


def restrict(suite: Suite, encoders: list[str] | None = None, tasks: list[str] | None = None,
             protocols: list[str] | None = None) -> Suite:
    """The part of ``suite`` named by the lists (None: all of it), for re-running a slice, e.g.
    one encoder after new pretraining. A name the suite does not declare is an error."""
    picked = {}
    for what, names, declared in (("encoder", encoders, suite.encoders), ("protocol", protocols, suite.protocols),
                                  ("task", tasks, None if suite.tasks == "all" else suite.tasks)):
        if names is None:
            continue
        missing = [n for n in names if declared is not None and n not in declared]
        if missing:
            raise MribenchError(f"suite {suite.name} has no {what} {', '.join(missing)}; it declares "
                                f"{', '.join(declared)}")
        picked[what] = names
    restricted = suite.model_copy(update={"encoders": [e for e in suite.encoders if e in picked.get("encoder", suite.encoders)],
                                          "protocols": [p for p in suite.protocols
                                                        if p in picked.get("protocol", suite.protocols)]})
    if "task" in picked:
        restricted = restricted.model_copy(update={"tasks": list(picked["task"])})
        _check_names(restricted, Path(f"suite {suite.name}"))
    return restricted


def _tasks(suite: Suite, cohort_name: str) -> list[str]:
    from bench.tasks import tasks_on_cohort

    return tasks_on_cohort(cohort_name) if suite.tasks == "all" else list(suite.tasks)


def plan(suite: Suite, cohort_name: str, get_encoder=None) -> SuitePlan:
    """Expand ``suite`` on a cohort: each combination its ``only`` limits allow, asked of its
    protocol's ``supports``. ``get_encoder`` (name -> encoder) defaults to the registry's."""
    from bench.encoders import get_encoder as registered
    from bench.protocols import get_protocol
    from bench.tasks import get_task

    get_encoder = get_encoder or registered
    out = SuitePlan()
    tasks = _tasks(suite, cohort_name)
    _check_size(suite, len(tasks))
    for name in suite.encoders:
        encoder = get_encoder(name)
        for task in tasks:
            spec = get_task(task)
            for protocol in suite.protocols:
                limit = suite.only.get(protocol, Limit())
                if (limit.tasks is not None and task not in limit.tasks) or \
                        (limit.encoders is not None and name not in limit.encoders):
                    continue
                reason = get_protocol(protocol).supports(spec, encoder)
                if reason:
                    out.skipped.append((name, task, protocol, reason))
                else:
                    out.jobs.append((name, task, protocol))
    return out


#: Most encoder x task x protocol combinations one suite may declare on a cohort: the default suite
#: declares 15 x 9 x 6 = 810 on the synthetic cohort; past this a typo (or a hostile file) would
#: spend minutes planning before a job runs.
MAX_COMBINATIONS = 5000


def _check_size(suite: Suite, n_tasks: int) -> None:
    """Refuse a suite of more than :data:`MAX_COMBINATIONS` combinations, with the count, before
    any encoder is built."""
    n = len(suite.encoders) * n_tasks * len(suite.protocols)
    if n > MAX_COMBINATIONS:
        raise MribenchError(f"suite {suite.name}: {len(suite.encoders)} encoders x {n_tasks} tasks x "
                            f"{len(suite.protocols)} protocols = {n} combinations, more than the "
                            f"{MAX_COMBINATIONS} a suite may declare; split it into several suites")


def suite_jobs(runner, planned: SuitePlan, options: dict[str, dict[str, str]] | None = None) -> list:
    """The Runner's jobs for a plan: per encoder, the grid of its planned tasks and protocols (a
    protocol with ``options``, from :func:`job_options`, in a grid of its own with them), kept to
    the planned combinations; in plan order."""
    options = options or {}
    wanted = {job: i for i, job in enumerate(planned.jobs)}
    grids: dict[tuple[str, str | None], tuple[dict, dict]] = {}  # (encoder, optioned protocol) -> tasks, protocols
    for encoder, task, protocol in planned.jobs:
        tasks, protocols = grids.setdefault((encoder, protocol if protocol in options else None), ({}, {}))
        tasks[task], protocols[protocol] = None, None
    jobs = [job for (encoder, own), (tasks, protocols) in grids.items()
            for job in runner.jobs([encoder], list(tasks), list(protocols), options=options.get(own))
            if (encoder, job.task, job.protocol) in wanted]
    return sorted(jobs, key=lambda job: wanted[(job.encoder, job.task, job.protocol)])


#: The job grid in ``bench suite run``'s own clock (:mod:`bench.timing`): with jobs in this process
#: it holds the runner's own work between them (their phases are already in the clock); with
#: jobs on Dask workers it is the wait for them, replaced by the phases the jobs report.
GRID = "job grid"


def timing_report(totals: dict[str, list[float]], results: list, in_process: bool) -> dict:
    """The suite's time by phase (:func:`bench.timing.summary`) and its jobs run vs reused.

    ``totals``: the suite command's clock; ``results``: the Runner's job results. Jobs whose record
    existed are counted as reused, and only their record check is in the table. With the jobs in
    this process, the phases add up to the command's elapsed time; with the jobs on workers, the
    job phases are worker-seconds summed over jobs (they overlap in time), plus this process's
    time outside the grid, and ``elapsed_s`` says how long the command took."""
    from bench.runner import SKIPPED
    from bench.timing import OTHER, add, summary

    grid = totals.get(GRID, [0.0, 0.0])
    phases = {name: list(v) for name, v in totals.items() if name != GRID}
    if in_process:
        add(phases, {OTHER: grid})
    else:
        for r in results:
            add(phases, r.phases)
    table = summary(phases)
    reused = sum(r.status == SKIPPED for r in results)
    return {
        "measured": "this process" if in_process else
                    "job phases: worker-seconds summed over the jobs (on Dask workers); cohort and other: this process",
        "jobs": {"planned": len(results), "run": len(results) - reused, "reused": reused,
                 "failed": sum(r.failed for r in results)},
        "wall_s": sum(p["wall_s"] for p in table.values()), "cpu_s": sum(p["cpu_s"] for p in table.values()),
        "elapsed_s": sum(w for w, _ in totals.values()),
        "dominant": max(table, key=lambda name: table[name]["wall_s"]),
        "phases": table,
    }
