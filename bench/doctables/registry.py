"""The named generators: one function per kind of block, ``Sources -> markdown``.

Entries are ``module:function`` strings resolved on first use, so listing or checking a document
imports only the generators its blocks name. A block's name in a document is a key here; adding
a table is one function and one line.
"""

from __future__ import annotations

import importlib
from typing import Callable

from bench.errors import MribenchError

GENERATORS: dict[str, str] = {
    "quickstart-conversion": "bench.doctables.ssl:quickstart",
    "checkpoints": "bench.doctables.pretraining:checkpoints_table",
    "linear-probe-v2": "bench.doctables.ssl:linear_probe_table",
    "ssl-vs-init": "bench.doctables.ssl:ssl_vs_init_verdict",
    "finetune-vs-init": "bench.doctables.ssl:finetune_table",
    "reference-encoders": "bench.doctables.reference:reference_encoders",
    "suite-cost-passes": "bench.doctables.cost:passes_table",
    "suite-cost-phases": "bench.doctables.cost:phases_table",
    "records-wall-time": "bench.doctables.cost:records_wall_table",
    "pretraining-runs": "bench.doctables.pretraining:runs_table",
    "cohort-generation": "bench.doctables.generation:generation_line",
    "reliability-reference": "bench.doctables.reliability:reliability_table",
}


def generator(name: str) -> Callable:
    """The generator function of block ``name``; an unknown name is one line listing the known."""
    if name not in GENERATORS:
        raise MribenchError(f"no generator named '{name}'; known: {', '.join(sorted(GENERATORS))}")
    module, _, function = GENERATORS[name].partition(":")
    return getattr(importlib.import_module(module), function)
