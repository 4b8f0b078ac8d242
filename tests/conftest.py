"""Shared fixtures: a tiny synthetic cohort generated once per test session."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import uuid
from pathlib import Path

import pytest

from bench.data.synth.generate import SynthConfig, generate

TINY = SynthConfig(seed=0, n_ad=8, n_tumour=3, resolution=2, n_healthy=3)


_NETGUARD_DIR = Path(__file__).resolve().parent / "netguard"


def _load_netguard():
    """tests/netguard/sitecustomize.py as a module (the same code guards child processes)."""
    spec = importlib.util.spec_from_file_location("mribench_netguard", _NETGUARD_DIR / "sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_netguard = _load_netguard()


@pytest.fixture(autouse=True)
def _no_network(monkeypatch, tmp_path_factory, request):
    """Fail any test whose code, or any Python process it starts, tries to reach an address other
    than loopback (connect, connect_ex, or a UDP datagram).

    In this process ``socket.socket`` is patched directly; child processes (``bench run``
    subprocesses, Dask workers, torchrun ranks) get the same guard from ``tests/netguard`` on
    ``PYTHONPATH`` and append what they refuse to a log that is checked when the test ends.
    """
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
    log = tmp_path_factory.getbasetemp() / "netguard" / f"{name}-{uuid.uuid4().hex[:8]}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("MRIBENCH_NETGUARD_LOG", str(log))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(_NETGUARD_DIR),
                                                                   os.environ.get("PYTHONPATH")])))
    _netguard.install(monkeypatch.setattr)
    yield
    if log.is_file() and log.read_text().strip():
        pytest.fail("non-loopback network access:\n" + log.read_text(), pytrace=False)


@pytest.fixture(autouse=True)
def _private_splits(tmp_path_factory, monkeypatch):
    """Each test reads its own copy of ``splits/``, where records made by hand declare their labels
    (:mod:`fabricated_labels`); the committed split files and label digests are never written."""
    import fabricated_labels

    root = tmp_path_factory.mktemp("repo") / "splits"
    fabricated_labels.copy_splits(root)
    monkeypatch.setenv("MRIBENCH_SPLITS", str(root))
    fabricated_labels.apply_to(root)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's cache: each test session gets its own MRIBENCH_CACHE."""
    monkeypatch.setenv("MRIBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_cohort_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "tiny"
    generate(TINY, out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_splits_root(tiny_cohort_dir, tmp_path_factory) -> Path:
    """Split files of the tiny cohort, laid out like splits/ (``<root>/tiny/ad.tsv``), outside the
    checkout; point ``MRIBENCH_SPLITS`` at it to run the harness on ``--cohort tiny_cohort_dir``."""
    from bench.cli import main

    root = tmp_path_factory.mktemp("splits")
    assert main(["splits", "make", "--cohort", str(tiny_cohort_dir), "--out", str(root / tiny_cohort_dir.name),
                 "--no-progress", "--no-power"]) == 0
    return root


def tree_digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


os.environ.setdefault("OMP_NUM_THREADS", "2")
