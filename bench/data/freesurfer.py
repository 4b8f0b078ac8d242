"""FreeSurfer / FastSurfer volumes of a real cohort, as the ``volumes`` reference encoder reads them.

On the synthetic cohort the generator writes the structure volumes itself; on ADNI, OASIS-3 or
IXI they come from the segmentation tool, in one of its two usual forms, found under the cohort's
root (the BIDS folder, or the folder of an imported manifest) at ``derivatives/freesurfer/`` (or
``derivatives/fastsurfer/``; a symbolic link to your ``$SUBJECTS_DIR`` will do):

* a SUBJECTS_DIR: one folder per processed session holding ``stats/aseg.stats``;
* the table ``asegstats2table --meas volume`` writes, saved there as ``asegstats.tsv`` (or
  ``.txt`` / ``.csv``): first column ``Measure:volume`` holding the subject names, then one
  column per structure and measure (``Left-Hippocampus``, ..., ``EstimatedTotalIntraCranialVol``).

Session rule: a subject name is ``<participant_id>_<session_id>`` of the cohort
(``sub-OAS30001_ses-d0030``), the name ``recon-all -s`` is given when one session is processed at
a time, or that name followed by the longitudinal suffix ``.long.<base>``
(``sub-OAS30001_ses-d0030.long.sub-OAS30001``), which wins over the cross-sectional run of the same
session (the longitudinal stream is the less noisy one). Names that follow neither form (``fsaverage``,
a longitudinal base template ``sub-OAS30001``) name no session and are skipped.

Quantities, in ml, named as in the synthetic table (``derivatives/synth/volumes.tsv``) so the
encoder treats both alike: hippocampus (left + right), ventricles (lateral, inferior lateral, 3rd
and 4th), grey matter (``TotalGrayVol``), cerebral white matter (``CerebralWhiteMatterVol``), CSF
(eTIV minus ``BrainSegVolNotVent``: all fluid inside the skull, ventricles included) and ICV
(eTIV). ``aparc.stats`` is not read: the row is meant to match the synthetic reference's six
features. A quantity a session lacks is a one-line error naming the file, subject and session.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from bench.errors import MribenchError

#: Folders under a cohort's root where the tool's output is looked for, in this order.
FOLDERS = (Path("derivatives") / "freesurfer", Path("derivatives") / "fastsurfer")
#: Names of an ``asegstats2table`` output inside such a folder.
TABLE_NAMES = ("asegstats.tsv", "asegstats.txt", "asegstats.csv")
#: ``<participant_id>_<session_id>``, optionally with the longitudinal ``.long.<base>`` suffix.
SUBJECT_NAME = re.compile(r"^(sub-[^_.]+)_(ses-[^_.]+)(\.long\..+)?$")
#: What makes each quantity (ml); structures are summed, measures are read by any of their names.
STRUCTURES = {"hippocampus_ml": ("Left-Hippocampus", "Right-Hippocampus"),
              "ventricles_ml": ("Left-Lateral-Ventricle", "Right-Lateral-Ventricle", "Left-Inf-Lat-Vent",
                                "Right-Inf-Lat-Vent", "3rd-Ventricle", "4th-Ventricle")}
MEASURES = {"gm_ml": ("TotalGrayVol", "TotalGray"),
            "wm_ml": ("CerebralWhiteMatterVol", "CerebralWhiteMatter"),
            "not_vent": ("BrainSegVolNotVent", "BrainSegNotVent"),
            "icv_ml": ("EstimatedTotalIntraCranialVol", "eTIV", "IntraCranialVol", "ICV")}
QUANTITIES = ("hippocampus_ml", "ventricles_ml", "gm_ml", "wm_ml", "csf_ml", "icv_ml")

Key = tuple[str, str]


@dataclass(frozen=True)
class SessionVolumes:
    """One session's volumes in mm^3 (structures and measures by name) and the file they came from."""

    source: Path
    values: dict[str, float]

    def quantity(self, key: Key, names: tuple[str, ...], summed: bool) -> float:
        """The sum of ``names`` (structures) or the first of them present (a measure's aliases)."""
        present = [n for n in names if n in self.values]
        if (summed and len(present) < len(names)) or not present:
            lacking = [n for n in names if n not in self.values] if summed else [" / ".join(names)]
            raise MribenchError(f"{self.source}: no {', '.join(lacking)} for participant {key[0]}, session "
                                f"{key[1]}; re-run the segmentation (recon-all / FastSurfer) for that session")
        return sum(self.values[n] for n in present) if summed else self.values[present[0]]

    def in_ml(self, key: Key) -> dict[str, float]:
        """The six quantities of the volumes reference, in ml (see the module docstring)."""
        out = {q: self.quantity(key, names, True) / 1000 for q, names in STRUCTURES.items()}
        measures = {q: self.quantity(key, names, False) / 1000 for q, names in MEASURES.items()}
        out.update(gm_ml=measures["gm_ml"], wm_ml=measures["wm_ml"],
                   csf_ml=measures["icv_ml"] - measures["not_vent"], icv_ml=measures["icv_ml"])
        return {q: out[q] for q in QUANTITIES}


def session_of(name: str) -> tuple[Key, bool] | None:
    """((participant, session), whether longitudinal) of a FreeSurfer subject name, or None."""
    m = SUBJECT_NAME.match(name)
    return ((m.group(1), m.group(2)), m.group(3) is not None) if m else None


def _number(path: Path, text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise MribenchError(f"{path}: {what} is {text.strip()[:40]!r}, not a number") from None


def parse_aseg_stats(path: Path) -> dict[str, float]:
    """Every ``# Measure`` (by both its names) and every structure's ``Volume_mm3`` of an aseg.stats.

    The table's columns are found from the ``# ColHeaders`` line rather than assumed, because
    FreeSurfer and FastSurfer versions differ in what they write around ``Volume_mm3``.
    """
    values: dict[str, float] = {}
    columns: list[str] | None = None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("# Measure"):
            fields = [f.strip() for f in line[len("# Measure"):].split(",")]
            if len(fields) >= 4:
                for name in fields[:2]:
                    values[name] = _number(path, fields[3], f"measure {fields[0]}")
        elif line.startswith("# ColHeaders"):
            columns = line.split()[2:]
        elif line.strip() and not line.startswith("#"):
            if columns is None or not {"StructName", "Volume_mm3"} <= set(columns):
                raise MribenchError(f"{path}: a table row before a '# ColHeaders ... Volume_mm3 StructName' line; "
                                    "not an aseg.stats file")
            row = dict(zip(columns, line.split()))
            values[row["StructName"]] = _number(path, row["Volume_mm3"], f"Volume_mm3 of {row['StructName']}")
    return values


def read_subjects_dir(folder: Path) -> dict[Key, SessionVolumes]:
    """The sessions of a SUBJECTS_DIR by the session rule; a longitudinal run wins over a cross-sectional one."""
    found: dict[Key, tuple[bool, SessionVolumes]] = {}
    for stats in sorted(folder.glob("*/stats/aseg.stats")):
        named = session_of(stats.parent.parent.name)
        if named is None:
            continue
        key, longitudinal = named
        if key in found and found[key][0] and longitudinal:
            raise MribenchError(f"{stats}: a second longitudinal run of participant {key[0]}, session {key[1]} "
                                f"(the other is {found[key][1].source}); keep one")
        if key not in found or longitudinal:
            found[key] = (longitudinal, SessionVolumes(stats, parse_aseg_stats(stats)))
    return {k: v for k, (_, v) in found.items()}


def read_asegstats_table(path: Path) -> dict[Key, SessionVolumes]:
    """An ``asegstats2table`` output (tab, comma or space separated) by the session rule."""
    text = path.read_text(encoding="utf-8-sig")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise MribenchError(f"{path}: empty file; expected asegstats2table output")
    sep = "\t" if "\t" in lines[0] else ("," if "," in lines[0] else None)
    rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=sep)) if sep else [ln.split() for ln in lines]
    header = [h.strip() for h in rows[0]]
    if not header[0].startswith("Measure:"):
        raise MribenchError(f"{path}: first column is {header[0]!r}, not 'Measure:volume'; expected asegstats2table "
                            "output")
    out: dict[Key, SessionVolumes] = {}
    for n, fields in enumerate(rows[1:], start=2):
        named = session_of(fields[0].strip())
        if named is None:
            continue
        if len(fields) != len(header):
            raise MribenchError(f"{path}: line {n} has {len(fields)} fields but the header has {len(header)}")
        values = {h: _number(path, v, f"line {n}, column {h}") for h, v in zip(header[1:], fields[1:])
                  if v.strip() != ""}
        key, longitudinal = named
        if key not in out or longitudinal:
            out[key] = SessionVolumes(path, values)
    return out


def find_freesurfer(root: Path) -> Path | None:
    """The SUBJECTS_DIR or asegstats2table file under a cohort root, or None (see the module docstring)."""
    for folder in FOLDERS:
        base = Path(root) / folder
        if not base.is_dir():
            continue
        if any(base.glob("*/stats/aseg.stats")):
            return base
        for name in TABLE_NAMES:
            if (base / name).is_file():
                return base / name
    return None


def read_freesurfer(path: Path) -> dict[Key, SessionVolumes]:
    """The sessions of a SUBJECTS_DIR or an asegstats2table file; none named by the rule is an error."""
    sessions = read_subjects_dir(path) if path.is_dir() else read_asegstats_table(path)
    if not sessions:
        raise MribenchError(f"{path}: no subject named <participant_id>_<session_id> (e.g. sub-01_ses-M00, or "
                            "sub-01_ses-M00.long.sub-01); name FreeSurfer subjects after the cohort's sessions")
    return sessions
