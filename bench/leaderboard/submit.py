"""``bench submit``: check a new encoder, run the standard suite, write a bundle for a pull request.

The bundle (``--out DIR``) holds everything a reviewer needs and nothing machine-specific:

* ``card.json``: the encoder's card;
* ``encoder/<file>.py``: a copy of the submitted source file;
* ``checks.json``: the API checks it passed (:mod:`bench.leaderboard.api_checks`);
* ``environment.json``: mribench version and commit, Python and library versions, hardware;
* ``submission.json``: the suite that was run (profile, cohort, tasks x protocols), what was
  skipped and why, and every record with its SHA-256 and verification result;
* ``results/<encoder>/<task>@v<version>/<protocol>.json``: the result records; the pull request
  copies the whole bundle under ``leaderboard/submissions/``, where the board verifies them and
  flags them as submitted;
* ``README.md``: the steps above, for the reviewer.

The standard suite is every task under ``tasks/`` defined on the cohort's family (the synthetic
cohort's nine by default) with the protocols registered as part of it (``suite``: linear probe,
fractions, few-shot and robustness); combinations that cannot apply are skipped with the reason
the protocol's ``supports`` gives rather than failing the run (few-shot needs class labels,
robustness does not score segmentation, a segmentation task needs an encoder with feature maps). Records are written as each job ends and existing ones are kept,
so an interrupted submission resumes with the same command.
"""

from __future__ import annotations

import json
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import MribenchError


def suite_protocols() -> tuple[str, ...]:
    """The protocols of the standard suite, in run (registration) order."""
    from bench.protocols import all_protocols

    return tuple(p.name for p in all_protocols() if p.suite)


@dataclass
class Plan:
    """Which protocols each task gets, and the (task, protocol, reason) left out."""

    jobs: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)


def plan_suite(encoder, tasks: list[str] | None = None, protocols: list[str] | None = None,
               cohort_name: str | None = None) -> Plan:
    """The standard suite (or the given subsets) for ``encoder``: each protocol that supports it.

    Without ``tasks``, every task under ``tasks/`` defined on ``cohort_name``'s family (all tasks
    when no cohort is named); named tasks are taken as given.
    """
    from bench.protocols import get_protocol
    from bench.tasks import get_task, tasks_on_cohort

    if tasks:
        names = list(tasks)
    else:
        names = tasks_on_cohort(cohort_name)
        if not names:
            raise MribenchError(f"no task under tasks/ is defined on cohort {cohort_name}; name tasks with --task")
    plan = Plan()
    for name in names:
        spec = get_task(name)
        chosen = []
        for protocol in protocols or suite_protocols():
            reason = get_protocol(protocol).supports(spec, encoder)
            if reason:
                plan.skipped.append((spec.name, protocol, reason))
            else:
                chosen.append(protocol)
        if chosen:
            plan.jobs[spec.name] = chosen
    if not plan.jobs:
        raise MribenchError("nothing to run: every task / protocol combination was skipped ("
                            + "; ".join(f"{t} {p}: {r}" for t, p, r in plan.skipped[:3]) + ")")
    return plan


def environment() -> dict:
    """Where the records were made (versions, machine); no paths, no user names."""
    from bench import __version__
    from bench.results import git_state, hardware, library_versions

    commit, dirty = git_state()
    return {"mribench_version": __version__, "git_commit": commit, "git_dirty": dirty,
            "python": platform.python_version(), "libraries": library_versions(),
            "hardware": hardware().model_dump(), "platform": platform.platform()}


def _write_json(path: Path, data: object) -> None:
    from bench.atomic import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"), mode=0o644)


def _write_text(path: Path, text: str) -> None:
    from bench.atomic import atomic_write_bytes

    atomic_write_bytes(path, text.encode("utf-8"), mode=0o644)


@dataclass
class SubmitResult:
    out_dir: Path
    encoder: str
    checks: list
    plan: Plan
    records: list[dict]

    @property
    def n_refused(self) -> int:
        return sum(1 for r in self.records if not r["verified"])


def submit(encoder_spec: str, out_dir: str | Path, *, weights: str | None = None, profile: str = "default",
           tasks: list[str] | None = None, protocols: list[str] | None = None, cohort: str | None = None,
           cohort_seed: int = 0, progress: bool = True, command: str = "bench submit",
           compute=None) -> SubmitResult:
    """Check ``encoder_spec`` (``file.py:Class``), run the suite into ``out_dir``, write the bundle.

    Every API check runs before the cohort is opened or any record written; a failure raises
    :class:`~bench.leaderboard.api_checks.ApiCheckFailed` (one line) and leaves ``out_dir`` untouched.
    ``compute`` (:class:`bench.devices.Compute`): where and in what precision the suite runs (CPU fp32 by default).
    """
    from bench.leaderboard.api_checks import run_api_checks
    from bench.profiles import get_profile
    from bench.protocols import check_protocols
    from bench.runner import Runner

    if ".py:" not in encoder_spec:
        raise MribenchError(f"--encoder must be path/to/file.py:ClassName (got '{encoder_spec}'); registered "
                            "encoders are already on the board")
    if protocols:
        check_protocols(protocols)
    run_profile = get_profile(profile)
    if weights is not None and not Path(weights).is_file():
        raise MribenchError(f"{weights}: weights file not found")
    kwargs = {"weights": weights} if weights else {}
    encoder = _construct(encoder_spec, kwargs)
    checks = run_api_checks(encoder, weights)
    # the synthetic cohort's family is known without generating it; another cohort is read first
    plan = plan_suite(encoder, tasks, protocols, cohort_name="synth") if cohort is None else None

    # -- compute starts here ---------------------------------------------------------------------
    from bench.data.sources import open_cohort

    out_dir = Path(out_dir)
    results_dir = out_dir / "results"
    the_cohort = open_cohort(cohort, profile=profile, seed=cohort_seed, progress=progress)
    if plan is None:
        plan = plan_suite(encoder, tasks, protocols, cohort_name=the_cohort.name)
    runner = Runner(the_cohort, run_profile, results_dir, progress=progress,
                    **({"compute": compute} if compute is not None else {}))
    jobs = []
    for task, task_protocols in plan.jobs.items():
        jobs += runner.run(encoder_spec, [task], task_protocols, encoder_kwargs=kwargs)
    records = _write_bundle(out_dir, Path(encoder_spec.rpartition(":")[0]), encoder, checks, jobs)
    _write_json(out_dir / "submission.json", {
        "encoder": encoder.card.name, "source": f"encoder/{Path(encoder_spec.rpartition(':')[0]).name}",
        "weights_sha256": encoder.card.checkpoint_sha256, "profile": profile, "cohort": the_cohort.name,
        "suite": plan.jobs, "skipped": [{"task": t, "protocol": p, "reason": r} for t, p, r in plan.skipped],
        "records": records, "command": command,
    })
    _write_text(out_dir / "README.md", _bundle_readme(encoder.card.name, profile, the_cohort.name, plan, records))
    return SubmitResult(out_dir, encoder.card.name, checks, plan, records)


def _construct(encoder_spec: str, kwargs: dict):
    """The submitted encoder; an exception of its constructor is one line."""
    from bench.encoders import get_encoder

    try:
        return get_encoder(encoder_spec, **kwargs)
    except MribenchError:
        raise
    except Exception as e:  # the submitter's constructor: report it in one line
        raise MribenchError(f"{encoder_spec}: constructing the encoder raised {e.__class__.__name__}: "
                            f"{' '.join(str(e).split())[:200]}") from None


def _write_bundle(out_dir: Path, source: Path, encoder, checks: list, jobs: list) -> list[dict]:
    """The bundle's source copy, card, checks and environment; every record of the encoder in it
    (so a submission completed over several calls lists all of them), each verified."""
    from bench.leaderboard.verify import verify_path
    from bench.results import safe_name
    from bench.splits import file_sha256

    (out_dir / "encoder").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, out_dir / "encoder" / source.name)
    _write_json(out_dir / "card.json", encoder.card.model_dump(mode="json"))
    _write_json(out_dir / "checks.json", [{"check": c.name, "passed": True, "detail": c.detail} for c in checks])
    _write_json(out_dir / "environment.json", environment())
    status = {job.path.resolve(): job.status for job in jobs}
    records = []
    for path in sorted((out_dir / "results" / safe_name(encoder.card.name)).rglob("*.json")):
        verdict = verify_path(path)
        records.append({"task": verdict.record.task if verdict.record else None,
                        "protocol": verdict.record.protocol if verdict.record else None,
                        "status": status.get(path.resolve(), "from an earlier call"),
                        "path": path.relative_to(out_dir).as_posix(), "sha256": file_sha256(path),
                        "main_score": verdict.record.main_score if verdict.record else None,
                        "verified": verdict.ok, "refused_because": verdict.reason})
    return records


def _bundle_readme(name: str, profile: str, cohort: str, plan: Plan, records: list[dict]) -> str:
    lines = [f"# Submission: {name}", "",
             f"Standard suite on cohort `{cohort}` ({profile} profile): "
             + "; ".join(f"{t}: {', '.join(p)}" for t, p in plan.jobs.items()) + ".", "",
             "To put it on the leaderboard, copy this whole bundle folder into `leaderboard/submissions/` of a "
             "mribench checkout and open a pull request; `bench leaderboard` verifies its records and flags "
             "them `submitted (<bundle>)`:", "", "```bash",
             "cp -r <this bundle> <mribench checkout>/leaderboard/submissions/",
             "bench leaderboard", "```", "",
             "| task | protocol | main score | verified |", "|---|---|---:|---|"]
    for r in records:
        score = "-" if r["main_score"] is None else f"{r['main_score']:.3f}"
        lines.append(f"| {r['task']} | {r['protocol']} | {score} | "
                     f"{'yes' if r['verified'] else 'no: ' + r['refused_because']} |")
    if plan.skipped:
        lines += ["", "Skipped:", ""] + [f"- {t} / {p}: {r}" for t, p, r in plan.skipped]
    return "\n".join(lines) + "\n"
