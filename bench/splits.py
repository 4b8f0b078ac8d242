"""Patient-level splits: generated once from a seed, stored as TSV, verified on every load.

A benchmark number is only comparable with another if both were computed on the same
subjects, so a split is a file (``participant_id, split, fold, order``) identified by its
SHA-256, not something re-derived at run time from a seed and a library version. The file
is made by :func:`make_split`, written with a ``sha256sum``-style sidecar by
:func:`write_split`, and every consumer goes through :func:`load_split`, which refuses a
file that changed on disk, leaks a subject into two splits, or names subjects the cohort
does not have (see DESIGN.md, "Splits").

Columns of a split file:

* ``split``: ``train``, ``val``, ``test`` or ``external`` (the held-out site).
* ``fold``: inner cross-validation fold of a train subject (0..n_folds-1), -1 otherwise;
  probes tune their regularisation on these folds so they never touch ``val``/``test``.
* ``order``: rank of a train subject in a seeded, label-stratified interleaved permutation,
  -1 otherwise; the first ``ceil(p * n_train)`` subjects by ``order`` are the p-fraction
  subset, so the 10 % subset is inside the 20 % subset and every subset keeps class shares.

A split made by a real release's rule (:mod:`bench.split_rules`) has a fingerprint sidecar beside it
(:mod:`bench.fingerprint`); :func:`load_split` notes that in :attr:`Split.rule_made`, and
:meth:`Split.k_shot` then draws by hashed id instead of from a generator over the subjects present.
What that makes invariant across two groups' downloads, and what it cannot, is listed in
:mod:`bench.split_rules`.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from bench.atomic import atomic_write_bytes
from bench.errors import SplitError
from bench.fingerprint import draw_ids, sidecar_of

#: The split names a file may use, in reporting order.
SPLITS: tuple[str, ...] = ("train", "val", "test", "external")
#: The columns of a split file, in file order.
COLUMNS: tuple[str, ...] = ("participant_id", "split", "fold", "order")

_REMEDY = "restore the file or regenerate it with `bench splits make`"
#: Placeholder stratum value for a missing label / age, so such subjects are still split.
_MISSING = "NA"
#: A numeric label with more distinct values than this is stratified by quantile bins;
#: otherwise every subject of a continuous target would be its own stratum.
_MAX_DISCRETE_LEVELS = 10
_N_QUANTILE_BINS = 5


# --------------------------------------------------------------------------- making


def make_split(
    subjects: pd.DataFrame,
    *,
    seed: int,
    label: str | None,
    external_site: str | None,
    val_frac: float = 0.15,
    test_frac: float = 0.2,
    n_folds: int = 5,
    age_bins: Sequence[float] = (0, 65, 75, 200),
) -> pd.DataFrame:
    """Assign every subject to train / val / test / external, with inner folds and order.

    ``subjects`` has one row per participant (``participant_id, site, sex, age`` and the
    ``label`` column if given), e.g. :meth:`bench.data.cohort.Cohort.subjects`; one row per
    subject makes the split patient-level by construction. Subjects of ``external_site``
    all go to ``external``. The others are stratified jointly by (label, site, age bin,
    sex): strata are laid end to end in sorted key order, each shuffled with
    ``np.random.default_rng(seed)``, and the sequence is dealt to train/val/test by a
    largest-deficit rule. Every stretch of that sequence (a stratum, a label, a label and
    site) therefore gets the target fractions to within about one subject, which is what
    keeps 1-2 subject strata and 20-subject cohorts well behaved where per-stratum
    rounding would not. With at least 3 non-external subjects every split with a positive
    fraction is non-empty. A numeric label with many values is stratified by quantile
    bins. The result depends only on the subjects and the seed, not on the row order.

    Returns a frame with columns exactly ``participant_id, split, fold, order``, sorted by
    ``participant_id``.
    """
    _check_parameters(val_frac, test_frac, n_folds, age_bins)
    subj = _validated_subjects(subjects, label, external_site)
    rng = np.random.default_rng(seed)

    labels = _label_keys(subj, label)
    split = pd.Series("train", index=subj.index, dtype=object)
    is_external = subj["site"] == str(external_site)
    if external_site is None:
        is_external[:] = False
    split[is_external] = "external"

    inner = subj.index[~is_external]
    if len(inner):
        strata = _stratum_keys(subj.loc[inner], labels.loc[inner], age_bins)
        split.loc[inner] = _allocate(strata, val_frac, test_frac, rng)

    order = pd.Series(-1, index=subj.index, dtype=np.int64)
    fold = pd.Series(-1, index=subj.index, dtype=np.int64)
    train = split.index[split == "train"]
    if len(train):
        order.loc[train] = _interleaved_order(labels.loc[train], rng)
        fold.loc[train] = _round_robin_folds(labels.loc[train], order.loc[train], n_folds)

    out = pd.DataFrame({
        "participant_id": subj["participant_id"].to_numpy(),
        "split": split.to_numpy(dtype=str),
        "fold": fold.to_numpy(),
        "order": order.to_numpy(),
    })
    return out.sort_values("participant_id", kind="stable").reset_index(drop=True)


def _check_parameters(val_frac: float, test_frac: float, n_folds: int,
                      age_bins: Sequence[float]) -> None:
    """Reject fractions and bins that cannot describe a split, before any work is done."""
    if val_frac < 0 or test_frac < 0 or val_frac + test_frac >= 1:
        raise ValueError(f"val_frac={val_frac} and test_frac={test_frac} must be >= 0 and "
                         "sum to less than 1 (the rest is train)")
    if n_folds < 2:
        raise ValueError(f"n_folds={n_folds}: inner cross-validation needs at least 2 folds")
    edges = list(age_bins)
    if len(edges) < 2 or any(lo >= hi for lo, hi in zip(edges, edges[1:])):
        raise ValueError(f"age_bins={tuple(age_bins)} must be at least two strictly "
                         "increasing edges")


def _validated_subjects(subjects: pd.DataFrame, label: str | None,
                        external_site: str | None) -> pd.DataFrame:
    """The subject table with string ids / sites, after checks that name what is wrong."""
    needed = ["participant_id", "site", "sex", "age"] + ([label] if label is not None else [])
    missing = [c for c in needed if c not in subjects.columns]
    if missing:
        raise SplitError(f"subject table lacks column(s) {missing}; make_split needs {needed} "
                         "(one row per participant, e.g. Cohort.subjects())")
    subj = subjects.copy()
    subj["participant_id"] = subj["participant_id"].astype(str)
    # Sorted so the split depends on the subjects and the seed, not on the row order.
    subj = subj.sort_values("participant_id", kind="stable").reset_index(drop=True)
    subj["site"] = subj["site"].astype(str)
    subj["sex"] = subj["sex"].astype(str)
    dup = subj.loc[subj["participant_id"].duplicated(), "participant_id"]
    if len(dup):
        raise SplitError(f"subject {dup.iloc[0]} appears more than once in the subject table; "
                         "pass one row per participant (Cohort.subjects()), not one per scan")
    bad = subj.loc[subj["participant_id"].str.contains(r"\s", regex=True), "participant_id"]
    if len(bad):
        raise SplitError(f"participant id {bad.iloc[0]!r} contains whitespace; it cannot be "
                         "stored in a tab-separated split file")
    if external_site is not None and str(external_site) not in set(subj["site"]):
        raise SplitError(f"external site {external_site!r} has no subjects; sites present: "
                         f"{sorted(set(subj['site']))}")
    return subj


def _label_keys(subj: pd.DataFrame, label: str | None) -> pd.Series:
    """One class key (a string) per subject: the label, a quantile bin of it, or 'NA'.

    Continuous labels (ages, survival times) are binned into quantiles so that
    stratification and class-balanced ordering still mean something for them.
    """
    if label is None:
        return pd.Series("all", index=subj.index, dtype=object)
    values = subj[label]
    if pd.api.types.is_numeric_dtype(values) and values.nunique() > _MAX_DISCRETE_LEVELS:
        bins = pd.qcut(values, q=_N_QUANTILE_BINS, labels=False, duplicates="drop")
        keys = bins.map(lambda b: f"q{int(b)}" if pd.notna(b) else _MISSING)
    else:
        keys = values.map(lambda v: str(v) if pd.notna(v) else _MISSING)
    return keys.astype(object)


def _stratum_keys(subj: pd.DataFrame, labels: pd.Series,
                  age_bins: Sequence[float]) -> pd.Series:
    """``label|site|age bin|sex`` per subject; sorting these keeps each label contiguous."""
    age = pd.to_numeric(subj["age"], errors="coerce")
    bins = pd.cut(age, bins=list(age_bins), right=False, labels=False)
    age_key = bins.map(lambda b: f"{int(b):02d}" if pd.notna(b) else _MISSING)
    return labels + "|" + subj["site"] + "|" + age_key.astype(str) + "|" + subj["sex"]


def _allocate(strata: pd.Series, val_frac: float, test_frac: float,
              rng: np.random.Generator) -> pd.Series:
    """Deal the stratum-ordered, within-stratum-shuffled subjects to train/val/test.

    At each position the split furthest behind its target count (fraction x position plus
    a seeded phase in [0, 1), so the pattern differs between seeds) takes the subject.
    """
    names = np.array(["train", "val", "test"])
    fracs = np.array([1.0 - val_frac - test_frac, val_frac, test_frac])
    sequence: list = []
    for key in sorted(strata.unique()):
        members = strata.index[strata == key].to_numpy()
        sequence.extend(rng.permutation(members).tolist())

    phase = rng.random(3) * (fracs > 0)
    counts = np.zeros(3)
    assigned = np.empty(len(sequence), dtype=np.int64)
    for i in range(len(sequence)):
        deficit = fracs * (i + 1) + phase - counts
        deficit[fracs == 0] = -np.inf
        s = int(np.argmax(deficit))
        assigned[i] = s
        counts[s] += 1

    if len(sequence) >= 3:
        _fill_empty_splits(assigned, strata.loc[sequence].to_numpy(), fracs)
    return pd.Series(names[assigned], index=sequence).loc[strata.index]


def _fill_empty_splits(assigned: np.ndarray, strata: np.ndarray, fracs: np.ndarray) -> None:
    """Give each empty split with a positive fraction one subject from the largest split.

    The donated subject is the last one of the donor's most populous stratum, which is
    the move that disturbs stratification least. Edits ``assigned`` in place.
    """
    for s in np.flatnonzero(fracs > 0):
        if (assigned == s).any():
            continue
        counts = np.bincount(assigned, minlength=len(fracs))
        donor = int(np.argmax(counts))
        positions = np.flatnonzero(assigned == donor)
        keys, sizes = np.unique(strata[positions], return_counts=True)
        biggest = keys[np.argmax(sizes)]
        assigned[positions[strata[positions] == biggest][-1]] = s


def _interleaved_order(labels: pd.Series, rng: np.random.Generator) -> pd.Series:
    """Rank subjects so that every prefix of the ranking keeps the classes' shares.

    Each class is shuffled; the first ranks take one subject of every class (largest
    class first), so any subset of at least n_classes subjects can train a classifier;
    after that each rank goes to the class furthest behind its share.
    """
    classes = sorted(labels.unique(), key=lambda c: (-(labels == c).sum(), c))
    queues = [list(rng.permutation(labels.index[labels == c].to_numpy())) for c in classes]
    sizes = np.array([len(q) for q in queues], dtype=float)
    share = sizes / sizes.sum()
    taken = np.zeros(len(classes))
    ranked: list = []
    for c, queue in enumerate(queues):
        ranked.append(queue.pop(0))
        taken[c] += 1
    for k in range(len(classes), len(labels)):
        deficit = share * (k + 1) - taken
        deficit[taken >= sizes] = -np.inf
        c = int(np.argmax(deficit))
        ranked.append(queues[c].pop(0))
        taken[c] += 1
    return pd.Series(np.arange(len(ranked), dtype=np.int64), index=ranked).loc[labels.index]


def _round_robin_folds(labels: pd.Series, order: pd.Series, n_folds: int) -> pd.Series:
    """Deal each class (in random ``order``) to folds 0..n_folds-1 in turn.

    The fold counter carries over from one class to the next, so fold sizes differ by at
    most one and each fold holds about 1/n_folds of every class.
    """
    folds = pd.Series(-1, index=labels.index, dtype=np.int64)
    counter = 0
    for c in sorted(labels.unique()):
        members = order[labels == c].sort_values(kind="stable").index
        for pid in members:
            folds.loc[pid] = counter % n_folds
            counter += 1
    return folds


# --------------------------------------------------------------------------- files


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes: the one file hash of mribench (split files, weights,
    scans in the store, imported tables)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def sidecar_path(path: str | os.PathLike) -> Path:
    """``<path>.sha256``: where the expected hash of a split file lives."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def write_split(df: pd.DataFrame, path: str | os.PathLike) -> str:
    """Write a split as TSV plus its ``<path>.sha256`` sidecar; return the hash.

    Formatting is fixed by hand (sorted rows, integers without decimals, ``\\n`` endings)
    so the same split always has the same bytes, hence the same hash, whatever the pandas
    version. A split that would fail :func:`load_split` is refused rather than written.
    """
    path = Path(path)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise SplitError(f"cannot write {path}: split table lacks column(s) {missing}")
    table = df[list(COLUMNS)].copy()
    table["participant_id"] = table["participant_id"].astype(str)
    table["split"] = table["split"].astype(str)
    problems = _table_problems(table, str(path))
    spaced = table.loc[table["participant_id"].str.contains(r"\s", regex=True), "participant_id"]
    problems += [f"participant id {pid!r} contains whitespace" for pid in spaced]
    if problems:
        raise SplitError(f"refusing to write {path}: {problems[0]}")
    table = table.sort_values("participant_id", kind="stable")
    lines = ["\t".join(COLUMNS)]
    lines += [f"{pid}\t{split}\t{int(fold)}\t{int(order)}"
              for pid, split, fold, order in table.itertuples(index=False, name=None)]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    sha = hashlib.sha256(data).hexdigest()

    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, data)
    _atomic_write(sidecar_path(path), f"{sha}  {path.name}\n".encode("utf-8"))
    return sha


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a split."""
    atomic_write_bytes(path, data, mode=0o644)  # as a plain write would leave it: readable by all


# --------------------------------------------------------------------------- loading


@dataclass
class Split:
    """A verified split file: its table, where it came from and its SHA-256.

    ``rule_made``: a fingerprint sidecar lies beside the file (a real release's rule made it), so
    few-shot draws rank by hashed id (:meth:`k_shot`)."""

    table: pd.DataFrame
    path: Path
    sha256: str
    rule_made: bool = False

    def subjects(self, name: str) -> list[str]:
        """Sorted participant ids of one split (``train``, ``val``, ``test``, ``external``)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; use one of {SPLITS}")
        return sorted(self.table.loc[self.table["split"] == name, "participant_id"])

    def fraction(self, p: float) -> list[str]:
        """The nested p-fraction of train subjects: the first max(1, ceil(p*n_train)) by order.

        Sorted by participant id. Because subsets are prefixes of one ranking, a smaller
        fraction is always inside a larger one, and label-efficiency curves are comparable.
        On a rule-made split the ranking is by hashed id, so two downloads' fractions agree on
        their shared subjects up to the boundary and the class leads (:mod:`bench.split_rules`).
        """
        if not 0 < p <= 1:
            raise ValueError(f"fraction p={p} must be in (0, 1]")
        train = self.table[self.table["split"] == "train"]
        if train.empty:
            raise SplitError(f"{self.path} has no train subjects; regenerate it with "
                             "`bench splits make`")
        size = max(1, math.ceil(round(p * len(train), 9)))  # round: 0.1*30 is 3.0000000004
        return sorted(train.loc[train["order"] < size, "participant_id"])

    def k_shot(self, labels: pd.Series, k: int, repeat: int, task: str,
               seed: int = 0) -> list[str]:
        """k train subjects per class, drawn reproducibly for (task, k, repeat, seed).

        ``labels`` maps participant_id (index) to class; unlabelled subjects are ignored.
        A class with fewer than k train subjects contributes all of them, with a warning,
        so a few-shot result never silently uses a different k. The generator is seeded
        from SHA-256 of the tuple, not ``hash()``, which changes between interpreter runs.
        On a rule-made split there is no generator: each class's k subjects with the smallest
        :func:`bench.split_rules.shot_key` of (salt, repeat, hashed id) are drawn, so a draw does
        not depend on which other classes' subjects, files or row order a download has.
        """
        if k < 1:
            raise ValueError(f"k={k}: k-shot needs at least one subject per class")
        labels = _one_label_each(labels)
        train = set(self.subjects("train"))
        pool = labels[labels.index.astype(str).isin(train)]
        pick = self._hash_pick(repeat) if self.rule_made else \
            _rng_pick(np.random.default_rng(stable_seed(task, k, repeat, seed)))
        chosen: list[str] = []
        for cls in sorted(labels.unique(), key=str):
            members = sorted(map(str, pool.index[pool == cls]))
            if len(members) < k:
                warnings.warn(f"{task}: class {cls!r} has {len(members)} train subject(s) in "
                              f"{self.path.name}, fewer than k={k}; using all of them",
                              UserWarning, stacklevel=2)
                chosen.extend(members)
            else:
                chosen.extend(pick(members, k))
        return sorted(chosen)

    @cached_property
    def _draw_ids(self) -> tuple[str, dict[str, str]]:
        """(salt, participant id -> hashed id) from the sidecar, read once per loaded split."""
        return draw_ids(self.path, self.sha256, self.table)

    def _hash_pick(self, repeat: int) -> Callable[[list[str], int], list[str]]:
        """The k members with the smallest shot key of ``repeat``: nothing seeded by who is present."""
        from bench.split_rules import shot_key

        salt, hashed = self._draw_ids

        def pick(members: list[str], k: int) -> list[str]:  # members: train rows, each has a hashed id
            return sorted(members, key=lambda m: (shot_key(salt, repeat, hashed[m]), m))[:k]
        return pick

    def summary(self) -> dict[str, int]:
        """Number of subjects in each split (all four names, zero where empty)."""
        counts = self.table["split"].value_counts()
        return {name: int(counts.get(name, 0)) for name in SPLITS}


def _one_label_each(labels: pd.Series) -> pd.Series:
    """The labels without missing values; several labels for one participant are refused."""
    labels = labels.dropna()
    if labels.index.duplicated().any():
        dup = labels.index[labels.index.duplicated()][0]
        raise ValueError(f"labels has several entries for {dup}; pass one label per "
                         "participant (index participant_id)")
    return labels


def _rng_pick(rng: np.random.Generator) -> Callable[[list[str], int], list[str]]:
    """The synthetic splits' draw: k members by ``rng``, one class after the other (the committed
    few-shot records were drawn so, and must reproduce)."""
    return lambda members, k: rng.choice(members, size=k, replace=False).tolist()


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from the text of ``parts``, identical across runs and machines."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def load_split(path: str | os.PathLike,
               cohort_subjects: Iterable[str] | None = None) -> Split:
    """Read and verify a split file; raise :class:`SplitError` on the first problem.

    Verified: the sidecar hash matches the file, no subject appears twice, split values
    are known, train ``order``/``fold`` are usable, and (if ``cohort_subjects`` is given)
    every subject exists in the cohort.
    """
    problems, table, sha = _inspect(Path(path), cohort_subjects)
    if problems:
        raise SplitError(problems[0])
    assert table is not None
    return Split(table=table, path=Path(path), sha256=sha, rule_made=sidecar_of(path).is_file())


def check_split(path: str | os.PathLike,
                cohort_subjects: Iterable[str] | None = None) -> list[str]:
    """Every problem of a split file, one message each; empty when the file is sound.

    ``bench splits check`` prints them all, so one run shows everything to fix.
    """
    return _inspect(Path(path), cohort_subjects)[0]


def _inspect(path: Path, cohort_subjects: Iterable[str] | None
             ) -> tuple[list[str], pd.DataFrame | None, str]:
    """(problems, parsed table or None, current hash) of a split file."""
    if not path.is_file():
        return [f"split file {path} not found; regenerate it with `bench splits make`"], None, ""
    problems: list[str] = []
    actual = file_sha256(path)
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        problems.append(f"{path} has no hash sidecar {sidecar.name} (expected SHA-256 unknown, "
                        f"actual {actual}); {_REMEDY}")
    else:
        fields = sidecar.read_text(encoding="utf-8").split()
        expected = fields[0] if fields else "<empty sidecar>"
        if expected != actual:
            problems.append(f"{path} changed on disk: expected SHA-256 {expected} (from "
                            f"{sidecar.name}), actual {actual}; {_REMEDY}")

    try:
        raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        return problems + [f"{path} is not a readable TSV ({exc}); {_REMEDY}"], None, actual
    missing = [c for c in COLUMNS if c not in raw.columns]
    if missing:
        return problems + [f"{path} lacks column(s) {missing}; a split file has columns "
                           f"{list(COLUMNS)}; {_REMEDY}"], None, actual

    table = raw[list(COLUMNS)].copy()
    for col in ("fold", "order"):
        num = pd.to_numeric(table[col], errors="coerce")
        bad = table.loc[num.isna() | (num != num.round()), ["participant_id", col]]
        for pid, value in bad.itertuples(index=False, name=None):
            problems.append(f"{path}: subject {pid} has non-integer {col} {value!r}; {_REMEDY}")
        table[col] = num.fillna(-1).astype(np.int64)
    problems += _table_problems(table, str(path))

    if cohort_subjects is not None:
        known = {str(s) for s in cohort_subjects}
        for pid in table.loc[~table["participant_id"].isin(known), "participant_id"]:
            problems.append(f"{path}: subject {pid} is not in the cohort; the split was made "
                            "for another cohort (or the subject was removed): regenerate it "
                            "with `bench splits make`")
    table = table.sort_values("participant_id", kind="stable").reset_index(drop=True)
    return problems, table, actual


def _table_problems(table: pd.DataFrame, where: str) -> list[str]:
    """Leaks and inconsistencies of a split table (shared by writing and loading)."""
    problems: list[str] = []
    counts = table["participant_id"].value_counts()
    for pid in sorted(counts.index[counts > 1]):
        splits = table.loc[table["participant_id"] == pid, "split"].tolist()
        problems.append(f"{where}: subject {pid} appears {len(splits)} times, in splits "
                        f"{' and '.join(splits)}; a subject must be in exactly one split: "
                        f"{_REMEDY}")
    for pid, value in table.loc[~table["split"].isin(SPLITS), ["participant_id", "split"]] \
            .itertuples(index=False, name=None):
        problems.append(f"{where}: subject {pid} has split {value!r}; use one of {SPLITS}")

    train = table["split"] == "train"
    order = pd.to_numeric(table.loc[train, "order"], errors="coerce")
    if sorted(order.tolist()) != list(range(int(train.sum()))):
        problems.append(f"{where}: train 'order' is not a ranking 0..{int(train.sum()) - 1}, so "
                        f"data fractions are undefined; {_REMEDY}")
    bad_fold = table.loc[train & (pd.to_numeric(table["fold"], errors="coerce") < 0),
                         "participant_id"]
    if len(bad_fold):
        problems.append(f"{where}: train subject {bad_fold.iloc[0]} has no inner-CV fold "
                        f"(fold < 0); {_REMEDY}")
    return problems
