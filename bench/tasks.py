"""Task specs: strict, versioned YAML files under tasks/, and the examples they build from a Cohort.

A spec says *what* is measured (population, input, label, metrics, split); this module turns it
into examples: for each example, the cohort rows it reads (one per step and input sequence, so
a sequence task's example is a variable-length list of sessions with their months) and its
label. Examples a label definition cannot decide (e.g. too short follow-up) are excluded and
counted by reason, never dropped silently. Changing what a task measures bumps its version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from bench.data.cohort import Cohort
from bench.errors import MribenchError, first_invalid
from bench.safe_yaml import load_yaml
from bench.paths import repo_root, splits_root

LabelType = Literal["diagnosis", "conversion", "diagnosis_change", "time_to_conversion", "age",
                    "survival", "marker", "sequence", "segmentation"]
InputMode = Literal["scan", "session", "sequence_to_index", "whole_sequence"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Population(_Strict):
    """Which subjects / sessions enter the task."""

    population: str | None = None            # 'ad' or 'tumour' (cohort column), None = all
    diagnosis: list[str] | None = None        # keep sessions with these diagnoses (e.g. brain age: CN)


class InputSpec(_Strict):
    """What an example reads: which sequences, and one scan / one session / a sequence of sessions."""

    mode: InputMode
    sequences: list[str]                      # embedded separately, concatenated per step


class LabelSpec(_Strict):
    type: LabelType
    classes: list[str] | None = None          # class names in index order (classification)
    horizon_months: float | None = None       # conversion within this horizon; survival: Uno's C tau
    index_diagnosis: str | None = None        # sessions eligible as the index visit


#: Spec fields that say how the board reads a task, not what it measures: not in the spec's hash.
OUTSIDE_IDENTITY = ("ranking",)


class TaskSpec(_Strict):
    name: str
    version: int
    description: str
    cohort: str                                # cohort family the task is defined on ('synth')
    kind: str                                  # a target kind (bench.kinds); 'sequence_classification' = classification
    population: Population
    input: InputSpec
    label: LabelSpec
    metrics: list[str]
    main_score: str
    higher_is_better: bool
    split: str                                 # split file under splits/; '{cohort}' = cohort name
    headline: str = "linear_probe"             # protocol whose full-label score is main_score
    #: Whether the task ranks encoders across tasks (the board's overall ranking and its test). A
    #: saturated or ceiling-limited task (every encoder perfect, or the oracle itself near chance)
    #: stays as a sanity check with ``ranking: false``. How the board reads a task, not what the
    #: task measures: kept out of :attr:`sha256`, so declaring it changes no record's identity.
    ranking: bool = True

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        from bench.kinds import kind_names

        if v not in kind_names():
            raise ValueError(f"unknown kind {v!r}; known: {', '.join(kind_names())}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "TaskSpec":
        from bench.metrics import METRICS

        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(METRICS)}")
        if self.main_score not in self.metrics:
            raise ValueError(f"main_score '{self.main_score}' is not among metrics {self.metrics}")
        if METRICS[self.main_score].higher_is_better != self.higher_is_better:
            raise ValueError(f"higher_is_better contradicts metric '{self.main_score}'")
        if self.target.has_classes and not self.label.classes:
            raise ValueError("classification tasks need label.classes")
        if self.label.type == "conversion" and not self.label.horizon_months:
            raise ValueError("a conversion label needs horizon_months")
        if self.label.horizon_months is not None and not self.label.horizon_months > 0:
            raise ValueError(f"label.horizon_months must be > 0, got {self.label.horizon_months}")
        if self.kind == "sequence_classification" and not self.is_sequence:
            raise ValueError("kind sequence_classification needs a sequence input mode")
        return self

    @property
    def sha256(self) -> str:
        """Hash of the resolved content (not the file's bytes: comments and key order don't count)."""
        blob = json.dumps(self.model_dump(mode="json", exclude=set(OUTSIDE_IDENTITY)), sort_keys=True,
                          separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def target(self):
        """The task's target kind (:class:`bench.kinds.TargetKind`): labels, head, fine-tune loss."""
        from bench.kinds import target_kind

        return target_kind(self.kind)

    @property
    def is_sequence(self) -> bool:
        return self.input.mode in ("sequence_to_index", "whole_sequence")

    def split_path(self, cohort_name: str) -> Path:
        return splits_root() / self.split.format(cohort=cohort_name)


def tasks_dir() -> Path:
    return repo_root() / "tasks"


def load_task_file(path: str | Path) -> TaskSpec:
    """The spec in ``path``, read by :func:`bench.safe_yaml.load_yaml` (no aliases, bounded size and
    integers, so a stranger's spec cannot exhaust memory); a bad one is a one-line error naming it."""
    path = Path(path)
    data = load_yaml(path, "task spec")
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as e:
        raise MribenchError(f"{path}: invalid task spec at {first_invalid(e)}") from None


def task_fits_cohort(spec: TaskSpec, cohort_name: str) -> bool:
    """A task is defined on a cohort family (``synth``, ``adni`` ...); cohorts are named after it
    (``synth-smoke``, ``synth-default``, ``adni``)."""
    return cohort_name == spec.cohort or cohort_name.startswith(f"{spec.cohort}-")


def task_may_run_on(spec: TaskSpec, cohort_name: str) -> bool:
    """Whether ``spec`` may be evaluated on ``cohort_name``: a cohort of the task's family
    (``synth``, ``synth-default``), or of no family any task names (a cohort generated under a
    name of one's own, as ``bench run --cohort DIR`` allows); never another family's (``adni`` for
    a synthetic task)."""
    if task_fits_cohort(spec, cohort_name):
        return True
    return not any(task_fits_cohort(other, cohort_name) for other in list_tasks().values())


def tasks_on_cohort(cohort_name: str | None) -> list[str]:
    """Every task under tasks/ defined on ``cohort_name``'s family (every task when it is None)."""
    return [n for n, spec in list_tasks().items() if cohort_name is None or task_fits_cohort(spec, cohort_name)]


def list_tasks() -> dict[str, TaskSpec]:
    """Every spec under tasks/ by name: ``tasks/conversion.yaml`` is ``conversion``, and a
    real cohort's ``tasks/adni/conversion.yaml`` is ``adni/conversion``.

    A namespaced spec carries its full name, so its result records and leaderboard rows never
    collide with the synthetic task of the same file name. Parsed once per state of the folder
    (each file's path, size and modification time): verifying a board of 373 records asks for
    the specs once per record, and YAML plus validation is most of a record's verification time.
    """
    root = tasks_dir()
    state = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*.yaml")))
    return dict(_parsed_tasks(str(root), state))


@lru_cache(maxsize=8)
def _parsed_tasks(root: str, state: tuple[tuple[str, int, int], ...]) -> tuple[tuple[str, TaskSpec], ...]:
    out = []
    for path_text, _, _ in state:
        path = Path(path_text)
        spec = load_task_file(path)
        rel = path.relative_to(root).with_suffix("")
        key = "/".join(rel.parts)
        if spec.name != key:
            what = "file name" if len(rel.parts) == 1 else "folder/file name"
            raise MribenchError(f"{path}: spec name '{spec.name}' differs from its {what} '{key}'")
        out.append((key, spec))
    return tuple(out)


def check_task_args(names: list[str]) -> list[TaskSpec]:
    """The specs ``bench run --task`` names, checked before any work (opening a cohort can take minutes).

    A name must be a task under tasks/. A YAML path is accepted only when it is the spec registered
    under its own name (same content): jobs, workers and records find a task by name, so a spec
    elsewhere would be replaced by another, or not found, in every job.
    """
    known = list_tasks()
    listing = ", ".join(known)
    specs = []
    for name in names:
        if name in known:
            specs.append(known[name])
            continue
        path = Path(name)
        if path.suffix not in (".yaml", ".yml"):
            raise MribenchError(f"unknown task '{name}'; known: {listing}")
        if not path.is_file():
            raise MribenchError(f"--task {name}: no such file, nor a known task; known: {listing}")
        spec = load_task_file(path)
        registered = known.get(spec.name)
        if registered is None or registered.sha256 != spec.sha256:
            why = "no task of that name" if registered is None else "a different spec of that name"
            raise MribenchError(f"--task {name}: its spec '{spec.name}' is not the one under {tasks_dir()} ({why} "
                                f"there); tasks are looked up by name in every job: put it at "
                                f"{tasks_dir() / (spec.name + '.yaml')} (a new version if it changes what is "
                                f"measured); known: {listing}")
        specs.append(spec)
    return specs


def get_task(name: str) -> TaskSpec:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return load_task_file(path)
    tasks = list_tasks()
    if name not in tasks:
        raise MribenchError(f"unknown task '{name}'; known: {', '.join(tasks)}")
    return tasks[name]


# -- examples ------------------------------------------------------------------------------------
@dataclass
class Examples:
    """A task's examples on one cohort.

    ``table`` has one row per example: example_id, participant_id, session_id (index session),
    split, and the label: ``y`` (class index or value) or ``time``/``event`` (survival).
    ``rows[i]`` is an (L_i, S) int array of cohort-table row indices (L steps, S input
    sequences); ``months[i]`` the (L_i,) months of those steps from the subject's baseline.
    """

    spec: TaskSpec
    table: pd.DataFrame
    rows: list[np.ndarray]
    months: list[np.ndarray]
    excluded: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.table)

    def subset(self, mask: np.ndarray | pd.Series) -> "Examples":
        idx = np.flatnonzero(np.asarray(mask))
        return Examples(self.spec, self.table.iloc[idx].reset_index(drop=True),
                        [self.rows[i] for i in idx], [self.months[i] for i in idx], dict(self.excluded))

    def labels(self) -> np.ndarray:
        return self.spec.target.labels(self.table)

    def scan_rows(self) -> np.ndarray:
        """Every cohort row any example reads (each once)."""
        return np.unique(np.concatenate([r.ravel() for r in self.rows])) if self.rows else np.array([], int)

    def subjects(self, split: str) -> list[str]:
        return sorted(self.table.loc[self.table["split"] == split, "participant_id"].unique())


def _sessions(cohort: Cohort, spec: TaskSpec) -> pd.DataFrame:
    """One row per session that has every input sequence: columns row_<seq> hold table indices."""
    t = cohort.table
    if spec.population.population is not None:
        if "population" not in t.columns:
            raise MribenchError(f"{cohort.name}: task {spec.name} needs a 'population' column")
        t = t[t["population"] == spec.population.population]
    t = t[t["sequence"].isin(spec.input.sequences)]
    wide = t.reset_index().pivot_table(index=["participant_id", "session_id"], columns="sequence",
                                       values="index", aggfunc="first")
    wide = wide.reindex(columns=spec.input.sequences).dropna()
    wide.columns = [f"row_{c}" for c in wide.columns]
    info = t.drop_duplicates(["participant_id", "session_id"]).set_index(["participant_id", "session_id"])
    keep = [c for c in ("months_from_baseline", "age", "diagnosis", "conversion_month", "marker",
                        "survival_months", "event", "site", "followup_months", "seg_path") if c in info.columns]
    out = wide.astype(int).join(info[keep]).reset_index()
    return out.sort_values(["participant_id", "months_from_baseline"]).reset_index(drop=True)


def _conversion_month(sessions: pd.DataFrame) -> float:
    """Exact month if the cohort records it, else the first AD session's month (real data)."""
    if "conversion_month" in sessions.columns and sessions["conversion_month"].notna().any():
        return float(sessions["conversion_month"].dropna().iloc[0])
    ad = sessions.loc[sessions["diagnosis"] == "AD", "months_from_baseline"]
    return float(ad.iloc[0]) if len(ad) else np.nan


def _follow_up_month(sessions: pd.DataFrame) -> float:
    """Last month the subject's diagnosis is known: the last scanned session, or later when the
    cohort records clinical follow-up beyond the last scan (``followup_months``, e.g. ADNI visits
    without MRI), so a stable MCI subject is not excluded for lack of scans alone."""
    last = float(sessions["months_from_baseline"].iloc[-1])
    if "followup_months" in sessions.columns and sessions["followup_months"].notna().any():
        return max(last, float(sessions["followup_months"].dropna().max()))
    return last


def _require_column(cohort: Cohort, column: str, spec: TaskSpec) -> None:
    """A label column the task reads must exist; missing *values* are excluded and counted."""
    if column not in cohort.table.columns:
        raise MribenchError(f"{cohort.name}: task {spec.name} needs a '{column}' column, which the cohort "
                            "lacks; add it to participants.tsv / sessions.tsv (or the manifest)")


class _Collector:
    """Examples as they are built: one record, cohort rows and months per example, and the
    excluded ones counted by reason."""

    def __init__(self, spec: TaskSpec):
        self.row_cols = [f"row_{s}" for s in spec.input.sequences]
        self.records: list[dict] = []
        self.rows: list[np.ndarray] = []
        self.months: list[np.ndarray] = []
        self.excluded: dict[str, int] = {}

    def add(self, sub: str, steps: pd.DataFrame, **label) -> None:
        last = steps.iloc[-1]
        self.records.append({"example_id": f"{sub}_{last.session_id}", "participant_id": sub,
                             "session_id": last.session_id, "n_steps": len(steps), **label})
        self.rows.append(steps[self.row_cols].to_numpy(int))
        self.months.append(steps["months_from_baseline"].to_numpy(float))

    def skip(self, reason: str) -> None:
        self.excluded[reason] = self.excluded.get(reason, 0) + 1


def _scan_examples(spec: TaskSpec, sessions: pd.DataFrame, out: _Collector) -> None:
    """Input mode ``scan``: each scan of each listed sequence is its own example."""
    for seq in spec.input.sequences:
        col = f"row_{seq}"
        for r in sessions.itertuples(index=False):
            y = spec.label.classes.index(seq) if spec.label.type == "sequence" else None
            out.records.append({"example_id": f"{r.participant_id}_{r.session_id}_{seq}",
                                "participant_id": r.participant_id, "session_id": r.session_id,
                                "n_steps": 1, "y": y})
            out.rows.append(np.array([[getattr(r, col)]]))
            out.months.append(np.array([r.months_from_baseline]))


#: Input mode ``session``: the label of one session (a dict), or why it has none (a str). A missing
#: label (real cohorts have them) excludes the example, counted by reason.
SESSION_LABELS = {
    "diagnosis": lambda lab, r: ("no diagnosis at the session" if pd.isna(r.diagnosis)
                                 else {"y": lab.classes.index(r.diagnosis)}),
    "age": lambda lab, r: "no age at the session" if pd.isna(r.age) else {"y": float(r.age)},
    "marker": lambda lab, r: "no marker status" if pd.isna(r.marker) else {"y": int(r.marker)},
    "survival": lambda lab, r: ("no survival time or event" if pd.isna(r.survival_months) or pd.isna(r.event)
                                else {"time": float(r.survival_months), "event": int(r.event)}),
    "segmentation": lambda lab, r: "no tumour label map" if "seg_path" in r.index and pd.isna(r.seg_path) else {},
}


def _session_examples(spec: TaskSpec, sub: str, ses: pd.DataFrame, out: _Collector) -> None:
    label_of = SESSION_LABELS.get(spec.label.type)
    for i in range(len(ses)):
        if label_of is None:
            raise MribenchError(f"label {spec.label.type} does not fit input mode 'session'")
        one = ses.iloc[[i]]
        label = label_of(spec.label, one.iloc[0])
        if isinstance(label, str):
            out.skip(label)
        else:
            out.add(sub, one, **label)


def _conversion(lab: LabelSpec, sub: str, ses: pd.DataFrame, out: _Collector) -> None:
    """One example per visit at the index diagnosis: converted within the horizon (1), or followed
    beyond it without converting (0); shorter follow-up is excluded."""
    conv = _conversion_month(ses)
    last_month = _follow_up_month(ses)
    for i in np.flatnonzero((ses["diagnosis"] == (lab.index_diagnosis or "MCI")).to_numpy()):
        index_month = ses["months_from_baseline"].iloc[i]
        if not np.isnan(conv) and conv <= index_month + lab.horizon_months:
            out.add(sub, ses.iloc[: i + 1], y=1)
        elif last_month >= index_month + lab.horizon_months:
            out.add(sub, ses.iloc[: i + 1], y=0)
        else:
            out.skip("follow-up shorter than the horizon without conversion")


def _diagnosis_change(lab: LabelSpec, sub: str, ses: pd.DataFrame, out: _Collector) -> None:
    """The whole sequence; 1 when the first and last known diagnoses differ."""
    if len(ses) < 2:
        out.skip("single session")
        return
    known = ses["diagnosis"].dropna()
    if len(known) < 2:
        out.skip("fewer than two sessions with a diagnosis")
        return
    out.add(sub, ses, y=int(known.iloc[0] != known.iloc[-1]))


def _time_to_conversion(lab: LabelSpec, sub: str, ses: pd.DataFrame, out: _Collector) -> None:
    """From the first visit at the index diagnosis: months to conversion, or censored at follow-up."""
    idx = np.flatnonzero((ses["diagnosis"] == (lab.index_diagnosis or "MCI")).to_numpy())
    if not len(idx):
        out.skip("never at the index diagnosis")
        return
    i = idx[0]
    index_month = ses["months_from_baseline"].iloc[i]
    conv = _conversion_month(ses)
    if not np.isnan(conv) and conv > index_month:
        out.add(sub, ses.iloc[: i + 1], time=conv - index_month, event=1)
        return
    follow = _follow_up_month(ses) - index_month
    if follow <= 0:
        out.skip("no follow-up after the index visit")
        return
    out.add(sub, ses.iloc[: i + 1], time=follow, event=0)


#: Sequence input modes: the examples of one subject's sessions, by label type.
SEQUENCE_LABELS = {"conversion": _conversion, "diagnosis_change": _diagnosis_change,
                   "time_to_conversion": _time_to_conversion}

#: Columns a label type reads (a missing column is an error; missing values are excluded).
LABEL_COLUMNS = {"age": ["age"], "marker": ["marker"], "survival": ["survival_months", "event"]}


def build_examples(spec: TaskSpec, cohort: Cohort) -> Examples:
    """Turn the spec into examples on ``cohort`` (split column filled in by :func:`attach_split`)."""
    sessions = _sessions(cohort, spec)
    lab = spec.label
    if lab.type in ("diagnosis", "conversion", "diagnosis_change", "time_to_conversion") or spec.population.diagnosis:
        _require_column(cohort, "diagnosis", spec)
    for col in LABEL_COLUMNS.get(lab.type, []):
        _require_column(cohort, col, spec)
    if spec.population.diagnosis and spec.input.mode in ("scan", "session"):
        sessions = sessions[sessions["diagnosis"].isin(spec.population.diagnosis)]
    out = _Collector(spec)
    if spec.input.mode == "scan":
        _scan_examples(spec, sessions, out)
    else:
        for sub, ses in sessions.groupby("participant_id", sort=True):
            ses = ses.reset_index(drop=True)
            if spec.input.mode == "session":
                _session_examples(spec, sub, ses, out)
            elif lab.type in SEQUENCE_LABELS:
                SEQUENCE_LABELS[lab.type](lab, sub, ses, out)
            else:
                raise MribenchError(f"label {lab.type} does not fit input mode '{spec.input.mode}'")
    table = pd.DataFrame(out.records)
    if table.empty:
        raise MribenchError(f"task {spec.name}: no examples on cohort {cohort.name}")
    return Examples(spec, table, out.rows, out.months, out.excluded)


def attach_split(examples: Examples, split_table: pd.DataFrame, source: str) -> Examples:
    """Give each example its subject's split; a subject missing from the split file is an error."""
    lookup = split_table.set_index("participant_id")["split"]
    missing = sorted(set(examples.table["participant_id"]) - set(lookup.index))
    if missing:
        raise MribenchError(f"{source}: {len(missing)} subject(s) of task {examples.spec.name} are not in "
                            f"the split file, e.g. {missing[0]}; regenerate it with `bench splits make`")
    examples.table["split"] = examples.table["participant_id"].map(lookup).to_numpy()
    return examples
