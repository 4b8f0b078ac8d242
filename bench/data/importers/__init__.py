"""Importers of real releases (ADNI, OASIS-3, IXI, BraTS, UCSF-PDGM) into the cohort schema.

Each module reads one release in its published layout and returns cohort rows; this package
writes them as a manifest that :func:`bench.data.sources.open_cohort` reads
(``bench run --cohort OUT/adni.tsv``), with the counts of what was dropped and why printed and
saved beside it. The manifest points at the release's own files (nothing is copied) except
tumour label maps, which are converted to the cohort's label convention under ``OUT/labels/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from bench.data.importers.common import ImportFailed, ImportReport, ImportResult, write_import


def _importers() -> dict[str, Callable[..., list[dict]]]:
    from bench.data.importers.adni import import_adni
    from bench.data.importers.brats import import_brats
    from bench.data.importers.ixi import import_ixi
    from bench.data.importers.oasis3 import import_oasis3
    from bench.data.importers.ucsf_pdgm import import_ucsf_pdgm

    return {"adni": import_adni, "oasis3": import_oasis3, "ixi": import_ixi, "brats": import_brats,
            "ucsf-pdgm": import_ucsf_pdgm}


#: Dataset keys ``bench data import --dataset`` accepts; each is also the default cohort name,
#: hence the folder of its split files (splits/<name>/) and of its tasks (tasks/<name>/).
DATASETS: tuple[str, ...] = ("adni", "oasis3", "ixi", "brats", "ucsf-pdgm")


def import_dataset(dataset: str, root: str | Path, out: str | Path, *, clinical: str | Path | None = None,
                   name: str | None = None, window_days: float | None = None) -> ImportResult:
    """Import ``dataset`` from ``root`` into ``out/<name>.tsv`` (+ report); return the result.

    ``window_days`` is how far a scan may lie from the clinical visit it is matched to (ADNI,
    OASIS-3; default 90 and 180 days).
    """
    if dataset not in DATASETS:
        raise ImportFailed(f"unknown dataset '{dataset}'; choose from {', '.join(DATASETS)}")
    root = Path(root).resolve()
    if not root.is_dir():
        raise ImportFailed(f"{root}: not a folder; --root is the folder the release was unpacked into")
    out = Path(out).resolve()
    report = ImportReport(dataset)
    options = {"out": out}
    if window_days is not None:
        options["window_days"] = float(window_days)
    rows = _importers()[dataset](root, None if clinical is None else str(clinical), report, **options)
    return write_import(rows, report, out, name or dataset)


__all__ = ["DATASETS", "ImportFailed", "ImportReport", "ImportResult", "import_dataset"]
