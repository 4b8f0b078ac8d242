"""The CPU kernels the committed numeric fixtures were taken with, pinned before numpy or torch loads.

``tests/data/smoke_suite.json.gz`` and ``tests/data/reference_grid.json.gz`` hold numbers compared
to 1e-9. A fine-tuned network's weights and an ill-conditioned Cox fit on the smoke cohort move
with the kernels OpenBLAS, oneDNN and ATen pick for the CPU: on an AVX-512 machine a smoke-suite
C-index came out 0.870 instead of the fixture's 0.739, and fine-tuned predictions moved in the
third decimal. Pinned to AVX2 (OpenBLAS's Haswell kernels, oneDNN and ATen at AVX2) the fixtures
reproduce on AVX2-only and AVX-512 CPUs alike. Defaults only: an explicit value in the environment
wins. Child processes (``bench`` subprocesses, Dask workers, torchrun ranks) inherit them.
"""

from __future__ import annotations

import os
import platform

AVX2_KERNELS = {"OPENBLAS_CORETYPE": "Haswell", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def pin_avx2_kernels() -> None:
    """Set :data:`AVX2_KERNELS` as defaults on x86-64 (elsewhere the names mean nothing). Must run
    before numpy and torch are imported: OpenBLAS reads its core type when the library loads."""
    if platform.machine().lower() in ("x86_64", "amd64"):
        for name, value in AVX2_KERNELS.items():
            os.environ.setdefault(name, value)
