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
from bench.registry import Registry

#: The importers by dataset key (``bench data import --dataset``); each key is also the default
#: cohort name, hence the folder of its split files (splits/<name>/) and of its tasks (tasks/<name>/).
#: Imported on first use; packages may add theirs through the ``mribench.importers`` entry-point group.
IMPORTERS: Registry[Callable[..., list[dict]]] = Registry("dataset importer", group="mribench.importers")
IMPORTERS.register("adni", "bench.data.importers.adni:import_adni")
IMPORTERS.register("oasis3", "bench.data.importers.oasis3:import_oasis3")
IMPORTERS.register("ixi", "bench.data.importers.ixi:import_ixi")
IMPORTERS.register("brats", "bench.data.importers.brats:import_brats")
IMPORTERS.register("ucsf-pdgm", "bench.data.importers.ucsf_pdgm:import_ucsf_pdgm")
DATASETS: tuple[str, ...] = tuple(IMPORTERS)


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
    rows = IMPORTERS[dataset](root, None if clinical is None else str(clinical), report, **options)
    return write_import(rows, report, out, name or dataset)


__all__ = ["DATASETS", "IMPORTERS", "ImportFailed", "ImportReport", "ImportResult", "import_dataset"]
