"""What the two glioma releases (BraTS, UCSF-PDGM) share: one pre-operative session per patient
with co-registered sequences and a BraTS-convention tumour label map.

Label maps are converted to the cohort's convention (1 oedema, 2 core) into ``OUT/labels/``;
the originals are never modified. Each sequence row of a subject points at the same map, since
the sequences are co-registered to one another in both releases.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from bench.data.importers.common import ImportReport, convert_tumour_labels

SESSION = "ses-preop"

#: A BraTS 2021 case (``BraTS2021_00495``) and a BraTS 2023 glioma case (``BraTS-GLI-00495-000``: the 2021
#: number and a time point): both name the patient by the 2021 number.
_BRATS21 = re.compile(r"^BraTS2021_(\d{5})$|^BraTS-GLI-(\d{5})-\d{3}$", re.IGNORECASE)


def glioma_split_id(case: str) -> str | None:
    """``BraTS2021_NNNNN`` for a case BraTS 2021 numbers (2021, 2023 glioma, UCSF-PDGM's ``BraTS21 ID``),
    else None.

    Why: UCSF-PDGM patients are also BraTS 2021 cases, so the split rules of both releases hash this
    one id with one salt; a patient cannot then be train in one release and test in the other.
    """
    m = _BRATS21.match(str(case).strip())
    return None if m is None else f"BraTS2021_{m.group(1) or m.group(2)}"


def subject_rows(sub: str, files: dict[str, Path], seg: Path | None, out: Path, report: ImportReport,
                 fields: dict) -> list[dict]:
    """One row per sequence file of a subject, each with the converted label map (or none)."""
    seg_path: str | float = np.nan
    if seg is None:
        report.note("subject(s) without a tumour label map (seg_path left empty)")
    else:
        dst = out / "labels" / f"{sub}_{SESSION}_dseg.nii.gz"
        problem = convert_tumour_labels(seg, dst)
        if problem:
            report.drop("label map", problem, subject=sub, session=SESSION, file=seg)
        else:
            seg_path = str(dst)
    return [{"participant_id": sub, "session_id": SESSION, "sequence": seq, "path": str(f),
             "months_from_baseline": 0.0, "population": "tumour", "seg_path": seg_path, **fields}
            for seq, f in sorted(files.items())]
