"""Re-check a result record against the repository before it may enter the leaderboard.

A record is a JSON file anybody can edit, and a pull request can add one, so the leaderboard
trusts nothing in it that it can check. :func:`verify_record` returns every problem it finds
(empty = verified); the first one is the one-line reason a refused record is shown with.

What is checked, in order:

1. **schema**: the file validates as a :class:`~bench.results.ResultRecord` (strict: unknown
   keys are errors), its predictions file (when it keeps its predictions beside it, the default)
   is there and has the SHA-256 the record names (:func:`~bench.results.load_record`), and its
   protocol is one the leaderboard ranks (a registered protocol with ``ranked`` set) or a
   ``transfer`` protocol (``cross_cohort``), :func:`checked_protocols`; a transfer record's split,
   cohort and predictions are its scored side's, so its scored task (``config.test``) is checked
   like the record's own task, its training side's split hash against the repository, and its
   ``external`` predictions against every subject of the split file (the target subjects the head
   never saw);
   Every name in it (encoder, task, protocol, cohort) is a name (:data:`bench.names.NAME`,
   refused otherwise) and its free text has lost its control characters (:mod:`bench.names`);
2. **task**: ``tasks/<task>.yaml`` exists, has the record's version, its resolved-content hash
   equals ``provenance.task_spec_sha256``, and its main score / direction are the record's;
   **names** (:func:`check_names`): the cohort is one the task is defined on, the split file it
   names resolves inside ``splits/``, and a protocol that trains the encoder has a card that
   says it can be fine-tuned;
3. **split**: the split file the task names for the record's cohort exists, matches its hash
   sidecar, its SHA-256 equals ``provenance.split_sha256`` and the record's ``split_file``
   names it; every subject with a prediction is in that file's test / external split;
4. **internal consistency**: ``encoder`` is the card's name, ``headline_setting`` is the
   protocol's, ``main_score`` is the mean over seeds of the headline test score, ``summary``
   is what :func:`~bench.results.summarise` gives for ``scores``, the robustness block is what
   :func:`~bench.protocols.robustness.summarise_robustness` gives, and every score that has per-subject
   predictions is recomputed from them (metric values, subject and example counts);
5. **perturbations** (robustness records): the perturbation seed, perturbations and severities are
   the protocol's, the evaluated scans are the split's test / external subjects (those of the clean
   predictions, when kept), and the perturbation parameters recomputed for those scans
   (:func:`~bench.perturbations.block_parameters`) have the SHA-256 the record names
   (``parameters_sha256``; a record written before kept the ``parameters`` themselves, which are
   checked the same way: they must be exactly what the recomputation gives);
6. **examples and labels** (:mod:`bench.leaderboard.verify_examples`): every (setting, seed, split)
   block of predictions holds exactly the task's test (or external) examples, each once, with the
   labels whose digest the repository keeps beside the split file (:mod:`bench.label_digests`); a
   record of any kind but segmentation must keep its predictions (:func:`recomputable`);
7. **intervals** (:mod:`bench.leaderboard.verify_ci`): every interval is finite, ordered and around
   its score, and the headline ones are recomputed from the predictions with the record's bootstrap
   seed and replicate count. JSON ``NaN`` / ``Infinity`` are refused when the file is read.

What a verified record proves: its numbers follow from these predictions of the task's real test
examples, scored once each with their real labels. What it cannot prove: that the encoder produced
those predictions (perfect predictions written by hand verify like a perfect encoder's); only a
rerun shows that, and the board marks the rows that were not rerun by the project (submissions).
Predictions are stored rounded to 6 decimals, so a recomputed value must lie within the range
that rounding allows (:func:`~bench.leaderboard.rounding.metric_range`), not be equal.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from bench.errors import MribenchError
from bench.leaderboard.rounding import TOLERANCE, metric_range, metric_value
from bench.leaderboard.verify_ci import check_intervals
from bench.leaderboard.verify_examples import check_examples
from bench.leaderboard.verify_fingerprint import fingerprint_problem
from bench.results import ResultRecord, load_record, summarise

#: Tolerance for numbers derived from other numbers of the record (headline, summary, robustness
#: block): the same float operations on the same JSON values, so only summation-order noise.
EXACT = 1e-9


@dataclass
class Verdict:
    """Outcome of :func:`verify_path`: the record (None when it did not even parse) and problems."""

    path: Path
    record: ResultRecord | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.record is not None and not self.problems

    @property
    def reason(self) -> str:
        """One line: why the record is refused ('' when it is not)."""
        if not self.problems:
            return ""
        more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return " ".join(self.problems[0].split()) + more


def verify_path(path: str | Path) -> Verdict:
    """Load and verify one record file; never raises for a bad record, it reports it."""
    path = Path(path)
    try:
        record = load_record(path)
    except MribenchError as e:
        # load_record's message starts with the path; the verdict carries the path already.
        msg = str(e)
        return Verdict(path, None, [msg[len(str(path)) + 2:] if msg.startswith(f"{path}: ") else msg])
    return Verdict(path, record, verify_record(record))


def verify_record(record: ResultRecord) -> list[str]:
    """Every problem of a parsed record against the current repository (empty: verified)."""
    from bench.protocols import get_protocol

    known = checked_protocols()
    if record.protocol not in known:
        return [f"protocol '{record.protocol}' is not checked by the leaderboard (it knows {', '.join(known)})"]
    spec, problems = _check_task(record)
    if spec is None:
        return problems
    transfer = get_protocol(record.protocol).transfer
    scored = spec
    if transfer:  # the split, cohort and predictions are the scored (test) side's
        scored, more = _check_transfer(record)
        if scored is None:
            return problems + more
        problems += more
    name_problems = check_names(record, scored)
    if name_problems:  # a cohort that is not one of the task's names no file the record may open
        return problems + name_problems
    split_problems, split_subjects = _check_split(record, scored)
    problems += split_problems
    problems += _check_consistency(record)
    problems += _kept_predictions(record, scored)
    own_check = get_protocol(record.protocol).check
    if own_check is not None:  # scores that are not the task's metrics of per-example predictions
        return problems + (own_check(record, split_subjects) if record.predictions else [])
    if record.predictions:
        if transfer and split_subjects is not None:  # external: every target subject the head never saw
            split_subjects["external"] = split_subjects["all"]
        params = scored.target.metric_params(scored)
        blocks = prediction_blocks(record)
        if blocks is None:
            return problems + ["a prediction lacks setting / seed / split: the record was edited"]
        prediction_problems = _check_predictions(record, blocks, split_subjects, params)
        problems += prediction_problems
        if prediction_problems:  # the checks below read well-formed rows that give the record's scores
            return problems
        if not split_problems:
            problems += check_examples(blocks, scored, scored.split_path(record.provenance.cohort.name),
                                       get_protocol(record.protocol))
        problems += check_intervals(record, blocks, params)
    if record.robustness is not None:
        problems += _check_perturbations(record, split_subjects)
    return problems


def _kept_predictions(record: ResultRecord, scored) -> list[str]:
    """A record keeps the per-example predictions its scores come from: without them nothing in it
    can be recomputed (remove the predictions file, write any score, recompute the summary, and
    the rest is consistent). Segmentation records are the exception: their predictions are voxel
    maps, and the board marks their rows as not recomputed (:func:`recomputable`)."""
    if record.predictions or not recomputable(scored):
        return []
    return [f"the record keeps no per-example predictions, so its {record.main_score_name} cannot be "
            "recomputed: rerun the job (records keep their predictions unless they are segmentation)"]


def recomputable(spec) -> bool:
    """Whether records of ``spec`` keep per-example predictions that verify recomputes their scores
    from (every kind but segmentation, scored by Dice over voxel maps the record does not hold)."""
    return spec.target.name != "segmentation"


def checked_protocols() -> list[str]:
    """The protocols whose records are verified: those the board ranks, the transfer ones (shown
    in a section of their own) and those with a check of their own (reliability), in leaderboard order."""
    from bench.protocols import by_order

    return [p.name for p in by_order() if p.ranked or p.transfer or p.check is not None]


# ------------------------------------------------------------------------------------------- task


def _check_task(record: ResultRecord):
    from bench.tasks import list_tasks

    # looked up by name among tasks/ only: a record must not make us read a file it names
    spec = list_tasks().get(record.task)
    if spec is None:
        return None, [f"task '{record.task}' is not defined under tasks/ (renamed or removed); "
                      "the record cannot be checked"]
    problems = []
    if spec.version != record.task_version:
        return None, [f"record is {record.task}@v{record.task_version} but tasks/ defines "
                      f"v{spec.version}; rerun the encoder on the current task"]
    if spec.sha256 != record.provenance.task_spec_sha256:
        problems.append(f"task spec hash {record.provenance.task_spec_sha256[:12]} does not match "
                        f"tasks/{record.task}.yaml ({spec.sha256[:12]}): the spec changed without a "
                        "version bump, or the record was edited")
    from bench.protocols import get_protocol

    metric, higher = get_protocol(record.protocol).main_metric(spec)
    if record.main_score_name != metric or record.higher_is_better != higher:
        problems.append(f"main score '{record.main_score_name}' (higher_is_better="
                        f"{record.higher_is_better}) is not the {record.protocol} protocol's '{metric}' "
                        f"({higher}) on this task")
    return spec, problems


# ---------------------------------------------------------------------------------------- transfer


def _side(record: ResultRecord, role: str) -> dict:
    side = record.provenance.config.get(role)
    return side if isinstance(side, dict) else {}


def _check_transfer(record: ResultRecord):
    """The scored task of a transfer record (``config.test``), checked like the record's own task, and
    the training side's split hash against the repository's; (None, problems) when it cannot be read."""
    from bench.splits import file_sha256
    from bench.tasks import list_tasks

    test, train = _side(record, "test"), _side(record, "train")
    name, _, version = str(test.get("task", "")).rpartition("@v")
    spec = list_tasks().get(name)
    if spec is None or not version.isdigit():
        return None, [f"the scored task '{test.get('task')}' of this transfer is not defined under tasks/; "
                      "the record cannot be checked"]
    if spec.version != int(version) or spec.sha256 != test.get("task_spec_sha256"):
        return None, [f"the scored task {test.get('task')} is not tasks/{name}.yaml as it is now (version or "
                      "hash differ); rerun the transfer"]
    problems = []
    if test.get("cohort") != record.provenance.cohort.name or test.get("split_sha256") != record.provenance.split_sha256:
        problems.append("the transfer's test side is not the record's cohort and split: the record was edited")
    train_spec = list_tasks().get(record.task)
    side_problem = _cohort_problem(train_spec, train.get("cohort")) if train_spec is not None else None
    if side_problem:  # checked before its split file is opened: the name must not steer the path
        return spec, problems + [f"training side: {side_problem}"]
    path = train_spec.split_path(str(train.get("cohort"))) if train_spec is not None else None
    if path is not None and path.is_file() and file_sha256(path) != train.get("split_sha256"):
        problems.append(f"the training side's split hash {str(train.get('split_sha256'))[:12]} does not match "
                        f"{path.parent.name}/{path.name}: the head was trained on another split")
    return spec, problems


# ------------------------------------------------------------------------------------------ names


def check_names(record: ResultRecord, scored) -> list[str]:
    """The record's cohort (the scored side's, for a transfer) is a cohort its task is defined on and
    names a split file under ``splits/``, and its protocol is one the encoder's card supports.

    The schema already holds every name to :data:`bench.names.NAME`; this is the second wall: the
    split path is resolved and must sit under the splits folder, whatever the name pattern allows."""
    problem = _cohort_problem(scored, record.provenance.cohort.name)
    return [problem] if problem else _card_protocol_problem(record)


def _cohort_problem(spec, cohort: object) -> str | None:
    """Why ``cohort`` may not be ``spec``'s cohort: not a name, not of the task's family, or its split
    file would lie outside ``splits/``; None when it may."""
    from bench.names import name_problem
    from bench.paths import splits_root
    from bench.tasks import task_may_run_on

    problem = name_problem("cohort", cohort)
    if problem:
        return problem
    if not task_may_run_on(spec, str(cohort)):
        return f"cohort {cohort!r} is not one task {spec.name} is defined on ({spec.cohort} or {spec.cohort}-*)"
    root = splits_root().resolve()
    if not spec.split_path(str(cohort)).resolve().is_relative_to(root):
        return f"cohort {cohort!r} names a split file outside {root.name}/; the record cannot be checked"
    return None


def _card_protocol_problem(record: ResultRecord) -> list[str]:
    """A protocol that trains the encoder needs a card that says it can be fine-tuned."""
    from bench.protocols import PROTOCOLS

    protocol = PROTOCOLS.get(record.protocol)
    says = record.provenance.encoder_card.get("supports_finetune")
    if protocol is not None and protocol.trains_network and says is not True:
        return [f"encoder {record.encoder!r} is not fine-tuned (its card says supports_finetune {says}), "
                f"yet this is a {record.protocol} record"]
    return []


# ------------------------------------------------------------------------------------------ split


def _check_split(record: ResultRecord, spec) -> tuple[list[str], dict[str, set[str]] | None]:
    """Problems with the record's split, and the split's subjects per split name (None: unknown)."""
    from bench.splits import file_sha256, load_split

    prov = record.provenance
    path = spec.split_path(prov.cohort.name)
    shown = f"{path.parent.name}/{path.name}"
    if not path.is_file():
        return [f"split file {shown} for cohort {prov.cohort.name} is not in the repository; "
                "the record cannot be checked"], None
    mismatch = fingerprint_problem(record, path)  # a rule-made split: why, before the hash says that
    if mismatch:
        return [mismatch], None
    actual = file_sha256(path)
    if actual != prov.split_sha256:
        return [f"split hash {prov.split_sha256[:12]} does not match {shown} ({actual[:12]}): the "
                "record was made on another split, or edited"], None
    if not Path(path).as_posix().endswith(Path(prov.split_file).as_posix()):
        return [f"split_file '{prov.split_file}' is not the task's split {shown}"], None
    try:
        split = load_split(path)
    except MribenchError as e:
        return [f"split file {shown} is not usable: {e}"], None
    subjects = {name: set(split.subjects(name)) for name in ("test", "external")}
    return [], subjects | {"all": set(split.table["participant_id"].astype(str))}


# ---------------------------------------------------------------------------------- consistency


def close(a: float | None, b: float | None, tol: float = EXACT) -> bool:
    """Whether a recorded number is the recomputed one (both undefined counts as equal); the reliability
    and site checks use it too."""
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=tol, abs_tol=tol)


def _check_consistency(record: ResultRecord) -> list[str]:
    from bench.protocols import get_protocol

    problems = []
    if record.provenance.encoder_card.get("name") != record.encoder:
        problems.append(f"encoder '{record.encoder}' differs from its card's name "
                        f"'{record.provenance.encoder_card.get('name')}'")
    protocol = get_protocol(record.protocol)
    if record.headline_setting != protocol.headline:
        problems.append(f"headline_setting '{record.headline_setting}' is not the {record.protocol} "
                        f"protocol's '{protocol.headline}'")
    rows = protocol.headline_rows(record.scores)
    values = [s.metrics.get(record.main_score_name) for s in rows]
    values = [v for v in values if v is not None]
    expected = float(np.mean(values)) if values else None
    if not close(record.main_score, expected):
        problems.append(f"main_score {record.main_score} is not the mean over seeds of its "
                        f"{protocol.headline_split(record.scores)} scores ({expected}): the record was edited")
    problems += _check_summary(record)
    if record.robustness is not None:
        problems += _check_robustness(record)
    return problems


def _check_summary(record: ResultRecord) -> list[str]:
    expected = summarise(record.scores)
    if set(expected) != set(record.summary):
        return ["summary does not cover the same settings as scores: the record was edited"]
    for key, metrics in expected.items():
        for name, stats in metrics.items():
            have = record.summary[key].get(name, {})
            if not (close(have.get("mean"), stats["mean"]) and close(have.get("std"), stats["std"])):
                return [f"summary {key} {name} ({have.get('mean')}) is not the mean of its scores "
                        f"({stats['mean']}): the record was edited"]
    return []


def _check_robustness(record: ResultRecord) -> list[str]:
    from bench.perturbations import block_perturbations
    from bench.protocols.robustness import summarise_robustness

    rob = record.robustness
    try:
        severities = block_perturbations(rob)[2]
    except MribenchError as e:
        return [f"{e}: the record was edited"]
    expected = summarise_robustness(record.scores, record.main_score_name, record.higher_is_better,
                                    severities=severities)
    for split, block in expected["splits"].items():
        have = rob.get("splits", {}).get(split, {})
        pairs = [("clean", block["clean"], have.get("clean")),
                 ("robustness_score", block["robustness_score"], have.get("robustness_score"))]
        pairs += [(f"{p}@{sev}", v, have.get("score", {}).get(p, {}).get(sev))
                  for p, by_sev in block["score"].items() for sev, v in by_sev.items()]
        for what, want, got in pairs:
            if not close(got, want):
                return [f"robustness {split} {what} ({got}) is not what its scores give ({want}): "
                        "the record was edited"]
    if not close(rob.get("robustness_score"), expected["robustness_score"]):
        return ["robustness_score is not what its scores give: the record was edited"]
    return []


def _check_perturbations(record: ResultRecord, split_subjects: dict[str, set[str]] | None) -> list[str]:
    """The robustness block's perturbations are the protocol's, on the split's scans, and recompute
    to the parameters' SHA-256 it names."""
    from bench import perturbations as P
    from bench.protocols import robustness as R

    rob = record.robustness or {}
    try:
        seed, names, severities = P.block_perturbations(rob)
        scans = P.block_scans(rob)
    except MribenchError as e:
        return [f"{e}: the record was edited"]
    profile_severities = sorted(R.recorded_severities(record.provenance.config.get("profile_settings")))
    if (seed, sorted(names), sorted(severities)) != (R.PERTURBATION_SEED, sorted(R.PERTURBATIONS),
                                                     profile_severities):
        return [f"robustness was computed with perturbation seed {seed}, perturbations {', '.join(sorted(names))} "
                f"and severities {sorted(severities)}, not the protocol's at its profile (seed "
                f"{R.PERTURBATION_SEED}, {', '.join(sorted(R.PERTURBATIONS))}, {profile_severities}): "
                "rerun the encoder"]
    stored = P.block_digest(rob)
    if stored is None:
        return ["robustness block names no parameters_sha256: the record was edited"]
    actual = P.parameters_digest(P.draw_all(scans, seed, names, severities))
    if actual != stored:
        return [f"robustness perturbation parameters (SHA-256 {stored[:12]}) are not what perturbation seed "
                f"{seed} gives for its {len(scans)} evaluated scans ({actual[:12]}): the scores were computed "
                "on other perturbations, or the record was edited"]
    return _check_scan_subjects(record, {sub for sub, _, _ in scans}, split_subjects)


def _check_scan_subjects(record: ResultRecord, subjects: set[str],
                         split_subjects: dict[str, set[str]] | None) -> list[str]:
    """The evaluated scans' subjects are the split's test / external ones, and (when the clean
    predictions are kept) exactly the subjects those predictions are of."""
    if split_subjects is not None:
        outside = sorted(subjects - split_subjects.get("test", set()) - split_subjects.get("external", set()))
        if outside:
            return [f"robustness scans name {len(outside)} subject(s) outside the split file's test and "
                    f"external splits, e.g. {outside[0]}"]
    if record.predictions:
        predicted = {str(p.get("participant_id")) for p in record.predictions if p.get("setting") == "clean"}
        if predicted and predicted != subjects:
            return [f"robustness scans are of {len(subjects)} subject(s) but the clean predictions of "
                    f"{len(predicted)} ({len(predicted ^ subjects)} differ): the record was edited"]
    return []


# ------------------------------------------------------------------------------------ predictions


def _stack(values: Iterable[Any]) -> np.ndarray:
    return np.asarray(list(values), dtype=float)


#: A record's predictions by the (setting, seed, split) score they belong to.
Blocks = dict[tuple[str, int, str], list[dict]]


def prediction_blocks(record: ResultRecord) -> Blocks | None:
    """The record's predictions grouped by (setting, seed, split), read once for every check that
    needs them (scores, examples and labels, intervals); None when a row lacks one of the three."""
    groups: Blocks = defaultdict(list)
    for p in record.predictions or []:
        try:
            groups[(str(p["setting"]), int(p["seed"]), str(p["split"]))].append(p)
        except (KeyError, TypeError, ValueError):
            return None
    return groups


def _check_predictions(record: ResultRecord, groups: Blocks, split_subjects: dict[str, set[str]] | None,
                       params: dict[str, dict] | None = None) -> list[str]:
    """Recompute every score that has predictions from them (with the task's metric arguments,
    e.g. Uno's tau, as the harness did); check their subjects are the split's."""
    from bench.metrics import METRICS

    if split_subjects is not None:
        for (_, _, split), rows in groups.items():
            outside = sorted({str(r.get("participant_id")) for r in rows} - split_subjects.get(split, set()))
            if outside:
                return [f"predictions on {split} name {len(outside)} subject(s) outside the split file's "
                        f"{split} split, e.g. {outside[0]}"]
    by_key = {(s.setting, s.seed, s.split): s for s in record.scores}
    for key, rows in sorted(groups.items()):
        score = by_key.get(key)
        if score is None:
            return [f"predictions for {key[0]} / seed {key[1]} / {key[2]} have no score entry"]
        if len({r["example_id"] for r in rows}) != len(rows):
            return [f"predictions for {key[0]} / seed {key[1]} / {key[2]} repeat an example"]
        n_subjects = len({r["participant_id"] for r in rows})
        if (n_subjects, len(rows)) != (score.n_subjects, score.n_examples):
            return [f"{key[0]} / seed {key[1]} / {key[2]}: {score.n_subjects} subjects / "
                    f"{score.n_examples} examples recorded but the predictions have {n_subjects} / "
                    f"{len(rows)}: the record was edited"]
        try:
            y_true = np.asarray([r["y_true"] for r in rows], dtype=float)
            y_pred = _stack(r["y_pred"] for r in rows)
        except (KeyError, TypeError, ValueError):
            return [f"predictions for {key[0]} / seed {key[1]} / {key[2]} are malformed"]
        for name, value in score.metrics.items():
            if name not in METRICS or name in ("dice", "hd95"):
                continue  # segmentation predictions are summaries, not the voxels the metric needs
            kwargs = (params or {}).get(name)
            if close(value, metric_value(name, y_true, y_pred, kwargs), TOLERANCE):
                continue
            low, high = metric_range(name, y_true, y_pred, kwargs)
            if value is None and low is None:
                continue
            if value is None or low is None or not (low - TOLERANCE <= value <= high + TOLERANCE):
                got = "undefined" if low is None else (f"{low:.6g}" if close(low, high) else
                                                       f"{low:.6g} to {high:.6g}")
                return [f"{name} {value} at {key[0]} / seed {key[1]} / {key[2]} is not what its "
                        f"predictions give ({got}): the record was edited"]
    return []
