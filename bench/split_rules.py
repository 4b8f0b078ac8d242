"""Split rules: the committed, data-free definition of a real release's patient-level split.

Why rules and not files: a real release (ADNI, OASIS-3...) may not be redistributed, so its split
file cannot be committed, and a split stratified over the subjects a group happened to download
puts a shared subject in train for one group and in test for another. A rule
(``splits/<dataset>/<population>.rule.yaml``) assigns each subject from a salted SHA-256 of its
dataset id alone (the ``split_id`` column the importer writes: ADNI's PTID, ``OAS30001``,
``IXI002``, ``BraTS2021_00495``...), so a subject's split, inner fold and place in the fraction
ranking never depend on who else was downloaded, and adding or losing subjects moves nobody.

From the digest ``d = SHA-256(salt + "\\x1f" + split_id)``:

* ``split``: subjects at a held-out site (``external_sites``) are ``external``; the others take
  train / val / test by ``u = d[0:8] / 2^64`` against the cumulative fractions;
* ``fold`` (train): ``d[8:16] mod n_folds``;
* ``order`` (train): the subject of each class with the lowest ``d[16:24]`` leads (so every
  fraction of at least n_classes subjects holds every class, as :func:`bench.splits.make_split`
  promises), then all others by ``d[16:24]``: the relative order of two subjects is fixed, so the
  p-fraction of one download is the p-fraction of another up to the subjects near its boundary.

The hex digest is the subject's *hashed id* (:mod:`bench.fingerprint`). The glioma releases share
a salt and fractions: UCSF-PDGM lists BraTS 2021 ids, and one patient must not be train in one
release and test in the other.

Few-shot draws (:meth:`bench.splits.Split.k_shot` on a split with a fingerprint sidecar) rank the
train subjects of each class by ``SHA-256(salt + "\\x1f" + repeat + "\\x1f" + hashed id)``
(:func:`shot_key`) and take the k smallest; task, k and seed do not enter, so the k = 1 draw of a
repeat is inside its k = 5 draw, and every task with the same classes draws alike.

What is invariant across two downloads A and B of one release under one rule (same ``split_id``
values, whatever their file order or extra scans and files):

* every shared subject's split (``external`` by its site) and inner fold;
* the relative ``order`` of two shared train subjects, neither a class lead in A or in B;
* data fractions, as far as one ranking allows: leaving out the class leads of both, the shared
  train subjects in B's p-fraction are the first ones of A's ranking of the shared subjects, so A's
  and B's p-fractions cut down to their shared subjects are nested (one contains the other);
* a class's k-shot draw of a repeat when both have the same candidates of that class (its train
  subjects with that label), whatever subjects of *other* classes either has; and when B has all of
  A's candidates and more, every shared subject B draws is one A draws too.

What is not: the ``order`` numbers and the fraction size ``ceil(p * n_train)``, hence which shared
subjects near a fraction's boundary are in it; the class leads (each class's lowest key among the
subjects present), which open every fraction; a class's k-shot draw when its candidates differ (an
extra, better-ranked subject displaces one) or its labels do (another label file, an unlabelled
subject); a class with fewer than k candidates (all are used, with a warning); and the split file's
hash and the fingerprint, which read every subject.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.errors import SplitError
from bench.paths import repo_root
from bench.safe_yaml import load_yaml

#: The keys a rule file holds (every one required, no other allowed).
RULE_KEYS = ("rule", "version", "dataset", "population", "id", "salt", "fractions", "n_folds",
             "external_sites", "min_test_subjects")
#: The column of the cohort table that holds each subject's dataset id (written by the importers).
ID_COLUMN = "split_id"
#: A label with more distinct values than this is not used to lead the fraction ranking.
_MAX_CLASSES = 10


@dataclass(frozen=True)
class SplitRule:
    """One rule file, parsed and checked; ``sha256`` is the hash records carry."""

    name: str
    dataset: str
    population: str
    salt: str
    fractions: tuple[float, float, float]
    n_folds: int
    external_sites: tuple[str, ...]
    min_test_subjects: int
    sha256: str
    path: Path

    def digest(self, split_id: str) -> bytes:
        """SHA-256 of the salt and the subject's dataset id: everything its assignment reads."""
        return hashlib.sha256(f"{self.salt}\x1f{split_id}".encode("utf-8")).digest()


def shot_key(salt: str, repeat: int, hashed_id: str) -> bytes:
    """The few-shot rank of a subject in draw ``repeat``: read from its hashed id alone, so whether it
    is drawn depends on the other candidates of its class only through this ranking."""
    return hashlib.sha256(f"{salt}\x1f{int(repeat)}\x1f{hashed_id}".encode("utf-8")).digest()


def hashed_ids(rule: SplitRule, ids: pd.Series) -> dict[str, str]:
    """participant_id -> hashed id (hex digest) of each subject of ``ids`` (:func:`subject_ids`)."""
    return {str(pid): rule.digest(str(sid)).hex() for pid, sid in ids.items()}


def rules_root() -> Path:
    """The committed rules: always the checkout's ``splits/`` (``MRIBENCH_SPLITS`` moves split
    files, which are local for real data, not the rules every group shares)."""
    return repo_root() / "splits"


def rule_path(dataset: str, population: str) -> Path:
    return rules_root() / dataset / f"{population}.rule.yaml"


def find_rule(dataset: str | None, population: str) -> SplitRule | None:
    """The committed rule of a dataset's population, or None (the synthetic cohort has none)."""
    if not dataset:
        return None
    path = rule_path(dataset, population)
    return load_rule(path) if path.is_file() else None


def cohort_dataset(table: pd.DataFrame) -> str | None:
    """The release a cohort was imported from (its ``dataset`` column), if it names exactly one."""
    if "dataset" not in table.columns:
        return None
    names = table["dataset"].dropna().astype(str).unique()
    return str(names[0]) if len(names) == 1 else None


def load_rule(path: str | Path) -> SplitRule:
    """Parse a rule file; a missing key, an unknown key or a bad value is one line naming the file."""
    path = Path(path)
    raw = load_yaml(path, "split rule")
    if not isinstance(raw, dict):
        raise SplitError(f"{path}: a split rule is a mapping with keys {', '.join(RULE_KEYS)}")
    missing = [k for k in RULE_KEYS if k not in raw]
    extra = sorted(set(raw) - set(RULE_KEYS))
    if missing or extra:
        raise SplitError(f"{path}: split rule " + (f"lacks {missing}" if missing else f"has unknown key(s) {extra}"))
    fr = raw["fractions"]
    if not isinstance(fr, dict) or sorted(fr) != ["test", "train", "val"]:
        raise SplitError(f"{path}: fractions must be a mapping of train, val and test")
    fractions = (float(fr["train"]), float(fr["val"]), float(fr["test"]))
    if min(fractions) < 0 or not math.isclose(sum(fractions), 1.0, abs_tol=1e-9) or fractions[0] <= 0:
        raise SplitError(f"{path}: fractions {fr} must be >= 0, train > 0, and sum to 1")
    if not isinstance(raw["n_folds"], int) or raw["n_folds"] < 2:
        raise SplitError(f"{path}: n_folds={raw['n_folds']!r}: inner cross-validation needs an integer >= 2")
    if not str(raw["salt"]).strip():
        raise SplitError(f"{path}: the salt is empty")
    # hashed over the parsed content, so a comment or a reformatting does not change it
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    return SplitRule(name=str(raw["rule"]), dataset=str(raw["dataset"]), population=str(raw["population"]),
                     salt=str(raw["salt"]), fractions=fractions, n_folds=raw["n_folds"],
                     external_sites=tuple(str(s) for s in raw["external_sites"] or ()),
                     min_test_subjects=int(raw["min_test_subjects"]),
                     sha256=hashlib.sha256(canonical.encode("utf-8")).hexdigest(), path=path)


# --------------------------------------------------------------------------------- applying


def subject_ids(table: pd.DataFrame, where: str) -> pd.Series:
    """participant_id -> dataset id (``split_id``), one per subject; one-line errors name the subject."""
    if ID_COLUMN not in table.columns:
        raise SplitError(f"{where}: the cohort has no '{ID_COLUMN}' column (imported before split rules); "
                         "import it again with `bench data import`")
    ids = table[["participant_id", ID_COLUMN]].astype(str).replace({"nan": "", "n/a": ""}).drop_duplicates()
    empty = ids.loc[ids[ID_COLUMN].str.strip() == "", "participant_id"]
    if len(empty):
        raise SplitError(f"{where}: subject {empty.iloc[0]} has no {ID_COLUMN}; import the cohort again")
    twice = ids.loc[ids["participant_id"].duplicated(), "participant_id"]
    if len(twice):
        raise SplitError(f"{where}: subject {twice.iloc[0]} has two different {ID_COLUMN} values")
    shared = ids.loc[ids[ID_COLUMN].duplicated(), ID_COLUMN]
    if len(shared):
        raise SplitError(f"{where}: {ID_COLUMN} {shared.iloc[0]} names two subjects; one patient is one subject")
    return ids.set_index("participant_id")[ID_COLUMN].sort_index()


def apply_rule(rule: SplitRule, subjects: pd.DataFrame, ids: pd.Series,
               label: str | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """(split table with ``participant_id, split, fold, order``, hashed id -> split) of ``subjects``.

    ``subjects`` is one row per participant (``participant_id``, ``site`` and ``label`` if given,
    e.g. ``Cohort.subjects()``), ``ids`` maps each to its dataset id (:func:`subject_ids`).
    Nothing here draws from a generator seeded by the set of subjects: see the module docstring.
    """
    pids = subjects["participant_id"].astype(str).tolist()
    missing = [p for p in pids if p not in ids.index]
    if missing:
        raise SplitError(f"{rule.path.name}: subject {missing[0]} has no {ID_COLUMN}")
    digests = {p: rule.digest(ids[p]) for p in pids}
    sites = dict(zip(pids, subjects["site"].astype(str)))
    split = {p: _split_of(rule, digests[p], sites[p]) for p in pids}
    train = [p for p in pids if split[p] == "train"]
    classes = _classes(subjects, label)
    order = _order(train, digests, classes)
    table = pd.DataFrame({
        "participant_id": pids, "split": [split[p] for p in pids],
        "fold": [_fold(rule, digests[p]) if split[p] == "train" else -1 for p in pids],
        "order": [order.get(p, -1) for p in pids]})
    hashed = {digests[p].hex(): split[p] for p in pids}
    return table.sort_values("participant_id", kind="stable").reset_index(drop=True), hashed


def _unit(digest: bytes, start: int) -> int:
    return int.from_bytes(digest[start:start + 8], "big")


def _split_of(rule: SplitRule, digest: bytes, site: str) -> str:
    if site in rule.external_sites:
        return "external"
    u = _unit(digest, 0) / 2.0 ** 64
    train, val, _ = rule.fractions
    return "train" if u < train else "val" if u < train + val else "test"


def _fold(rule: SplitRule, digest: bytes) -> int:
    return _unit(digest, 8) % rule.n_folds


def _classes(subjects: pd.DataFrame, label: str | None) -> dict[str, str]:
    """participant_id -> class key; one class when there is no usable discrete label."""
    pids = subjects["participant_id"].astype(str)
    if label is None or label not in subjects.columns or subjects[label].nunique() > _MAX_CLASSES:
        return dict.fromkeys(pids, "all")
    keys = subjects[label].map(lambda v: str(v) if pd.notna(v) else "NA")
    return dict(zip(pids, keys))


def _order(train: list[str], digests: dict[str, bytes], classes: dict[str, str]) -> dict[str, int]:
    """Rank of each train subject: each class's lowest key first (by key), then the rest by key."""
    key = {p: (_unit(digests[p], 16), p) for p in train}
    leads: dict[str, str] = {}
    for p in sorted(train, key=key.__getitem__):
        leads.setdefault(classes[p], p)
    first = sorted(leads.values(), key=key.__getitem__)
    rest = sorted(set(train) - set(first), key=key.__getitem__)
    return {p: i for i, p in enumerate(first + rest)}
