"""Shared fixtures: a tiny synthetic cohort generated once per test session."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest

from bench.data.synth.generate import SynthConfig, generate

TINY = SynthConfig(seed=0, n_ad=8, n_tumour=3, resolution=2)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Fail any test whose code tries to reach an address other than loopback."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and not (host.startswith("127.") or host in ("localhost", "::1")
                                          or self.family == socket.AF_UNIX):
            raise AssertionError(f"test tried to connect to {address}: only loopback is allowed")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's cache: each test session gets its own MRIBENCH_CACHE."""
    monkeypatch.setenv("MRIBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_cohort_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "tiny"
    generate(TINY, out, progress=False)
    return out


def tree_digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


os.environ.setdefault("OMP_NUM_THREADS", "2")
